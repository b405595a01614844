"""`soxbms hil run` (and `soxbms run`) with the board's estimators: on by default, with the board model of the
scenario's cell; samples.csv carries the board's SoC, sigma, SoH and SoS level beside the truth, score.json the SoC
figures (hil.soc_score's rule, start from OCV) and the SoS levels; off (estimate=False, `--no-estimate`): neither."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hil.scenario_run import ESTIMATE_CSV_COLUMNS, run_scenario, run_summary
from host.cli import main

ROOT = Path(__file__).resolve().parents[2]
CELL = ROOT / "models" / "cells" / "panasonic_ncr18650pf_25C.json"
PNG = b"\x89PNG\r\n\x1a\n"


def write(tmp_path: Path, name: str, body: str, cell: Path = CELL) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\ncell = "{cell}"\n{body}')
    return path


def samples(score: dict[str, Any]) -> list[dict[str, str]]:
    return list(csv.DictReader((Path(score["outputs"]) / "samples.csv").read_text().splitlines()))


def test_short_us06_is_estimated_and_scored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the CLI, as `make run` does: 5 minutes of US06 from 80 % on 4 cells, the board starting each cell
    from its OCV. The figures in score.json are those of the CSV's columns, and plausible."""
    path = write(tmp_path, "us06-est", 'cells = 4\nduration_s = 300\ninitial_soc = 0.8\n[[load]]\nprofile = "us06"\n')
    assert main(["--state", str(tmp_path), "hil", "run", str(path)]) == 0
    score = json.loads(capsys.readouterr().out)
    assert (score["sent"], score["stored"], score["lost"]) == (300, 300, 0)
    assert score["board_estimation"]["on"] is True
    assert score["board_estimation"]["board_said"] == "estimation on: cell model panasonic_ncr18650pf_25C"
    assert score["board_estimation"]["board_model"] == str(ROOT / "models" / "board" / CELL.name)
    soc = score["board_soc"]
    assert soc["start"] == "ocv" and soc["scored_samples"] == 300 and len(soc["cells"]) == 4
    assert soc["rmse_pct"] < 10 and soc["whole_run"]["rmse_pct"] < 10 and soc["whole_run"]["max_error_pct"] < 15
    assert soc["rmse_pct"] == max(c["rmse_pct"] for c in soc["cells"])
    assert soc["coulomb_same_start"]["rmse_pct"] >= 0
    assert sum(score["board_sos"]["level_samples"].values()) == 300

    rows = samples(score)
    assert set(ESTIMATE_CSV_COLUMNS) <= set(rows[0]) and len(rows) == 300 * 4
    by_cell = {c: [r for r in rows if int(r["cell"]) == c] for c in range(4)}
    for cell, mine in by_cell.items():
        board = np.array([float(r["board_soc"]) for r in mine])
        truth = np.array([float(r["true_soc"]) for r in mine])
        assert abs(board[0] - truth[0]) < 0.05, "the OCV start of a rested cell is near its truth"
        assert board[0] - board[-1] > 0.03 and truth[0] - truth[-1] > 0.03, "the drive took charge; the board saw it"
        whole_rms_pct = float(np.sqrt(np.mean((board - truth) ** 2))) * 100
        assert whole_rms_pct <= soc["whole_run"]["rmse_pct"] + 0.01, cell  # the CSV's true_soc has 6 decimals
        assert all(0 < float(r["board_soc_sigma"]) <= 0.3 and 0.8 <= float(r["board_soh"]) <= 1.2 for r in mine)
    worst = max(float(np.max(np.abs([float(r["board_soc"]) - float(r["true_soc"]) for r in mine]))) * 100
                for mine in by_cell.values())
    assert worst == pytest.approx(soc["whole_run"]["max_error_pct"], abs=0.01)
    levels = [int(r["board_sos_level"]) for r in rows if r["cell"] == "0"]
    assert [levels.count(k) for k in range(4)] == list(score["board_sos"]["level_samples"].values())
    assert Path(score["plot"]).read_bytes()[:8] == PNG
    summary = run_summary(score)
    assert f"worst of 4 cells: RMSE {soc['rmse_pct']:.2f} %" in summary and len(summary.splitlines()) == 3


def test_no_estimate_leaves_the_estimates_out(tmp_path: Path) -> None:
    path = write(tmp_path, "plain", 'cells = 2\nduration_s = 30\n[[load]]\nprofile = "cc"\nc_rate = -1.0\n')
    score = run_scenario(path, tmp_path, estimate=False)
    assert score["stored"] == 30 and score["lost"] == 0
    assert score["board_estimation"]["on"] is False
    assert "board_soc" not in score and "board_sos" not in score
    log = (tmp_path / "hil" / "plain" / "run" / "board-01" / "board.log").read_text().splitlines()
    assert not [line for line in log if line.startswith("estimation ")], "no sox section: the board never tried"
    assert '"estimation": false' in log[-1]
    rows = samples(score)
    assert len(rows) == 60 and not set(ESTIMATE_CSV_COLUMNS) & set(rows[0])
    assert Path(score["plot"]).read_bytes()[:8] == PNG
    assert "no board estimates: not asked (--no-estimate)" in run_summary(score)


def test_state_of_safety_reacts_to_an_overcharge(tmp_path: Path) -> None:
    """A charger fault at 20 s pushes the rested cells above their upper cut-off: the score names the check, and
    the fault's entry when the board's SoS left ok and how high it went; nothing before the fault."""
    path = write(tmp_path, "overcharge", 'cells = 4\nduration_s = 150\ninitial_soc = 0.95\n'
                 '[[load]]\nprofile = "rest"\nduration_s = 150\n'
                 '[[fault]]\nkind = "overcharge"\nat_s = 20\nduration_s = 120\nc_rate = 1.0\n')
    score = run_scenario(path, tmp_path)
    sos = score["board_sos"]
    reaction = sos["faults"][0]
    assert reaction["kind"] == "overcharge" and reaction["onset_s"] == 20.0
    assert 20.0 <= reaction["sos_first_s"] <= 140.0 and reaction["sos_max_level"] in ("alarm", "critical")
    assert sos["findings"]["cell_voltage_high_mV"]["first_s"] >= 20.0
    assert sos["level_samples"]["ok"] >= 19 and sos["level_samples"]["alarm"] + sos["level_samples"]["critical"] > 0
    rows = samples(score)
    assert {r["board_sos_level"] for r in rows if float(r["t_s"]) < 20} == {"0"}


def test_a_cell_without_a_shipped_board_model_gets_one_made(tmp_path: Path) -> None:
    cell = tmp_path / "unshipped_cell.json"
    cell.write_text(json.dumps({**json.loads(CELL.read_text()), "name": "unshipped_cell"}))
    path = write(tmp_path, "unshipped", 'cells = 2\nduration_s = 30\n[[load]]\nprofile = "cc"\nc_rate = -1.0\n',
                 cell=cell)
    score = run_scenario(path, tmp_path)
    estimation = score["board_estimation"]
    assert estimation["board_said"] == "estimation on: cell model unshipped_cell"
    assert estimation["board_model"] == str(tmp_path / "hil" / "unshipped" / "board-model" / "unshipped_cell.json")
    assert estimation["board_model_from"].startswith("made by host.boardmodel")
    assert score["board_soc"]["scored_samples"] == 30
