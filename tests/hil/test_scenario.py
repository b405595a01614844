"""`soxbms hil run`: scenario files, and a short scenario through the whole chain with the
simulated module (ECM physics + sensors) as truth."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hil.scenario import load_scenario
from hil.scenario_run import run_scenario
from host.cli import main

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_shipped_scenarios_load() -> None:
    for path in sorted((ROOT / "scenarios").glob("*.toml")):
        scenario = load_scenario(path)
        assert scenario.segments() and scenario.samples > 0, path


@pytest.mark.parametrize("text, message", [
    ('cell = "models/cells/panasonic_ncr18650pf_25C.json"\n[[load]]\nprofile = "warp"\n', "'warp' is not one of"),
    ('cell = "models/cells/panasonic_ncr18650pf_25C.json"\n[[load]]\nprofile = "cc"\n', "needs 'c_rate'"),
    ('[[load]]\nprofile = "us06"\n', "missing 'cell'"),
    ('cell = "nowhere.json"\n[[load]]\nprofile = "us06"\n', "nowhere.json not found"),
    ('cell = "models/cells/panasonic_ncr18650pf_25C.json"\ncolour = 1\n[[load]]\nprofile = "us06"\n',
     "unknown keys ['colour']"),
    ("cells = [", "cannot read scenario"),
])
def test_scenario_errors_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_scenario(write(tmp_path, text))


def test_short_drive_through_the_whole_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = write(tmp_path, """
name = "short"
cells = 3
cell = "models/cells/panasonic_ncr18650pf_25C.json"
duration_s = 120
[[load]]
profile = "cc"
c_rate = -2.0
""")
    assert main(["--state", str(tmp_path), "hil", "run", str(scenario)]) == 0
    score = json.loads(capsys.readouterr().out)
    assert (score["sent"], score["stored"], score["lost"], score["duplicates"]) == (120, 120, 0, 0)
    # 2C for 120 s takes 2 x 120 / 3600 = 6.7 % of the charge (the cell holds 3.0 Ah against 2.9 nominal).
    assert 0.055 < score["true_soc_start"] - score["true_soc_end"] < 0.075
    assert score["voltage_reading_rms_error_mV"] < 20 and score["temp_reading_rms_error_K"] < 1.5
    assert Path(score["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((Path(score["outputs"]) / "samples.csv").read_text().splitlines()))
    assert len(rows) == 120 * 3
    last = rows[-1]
    assert float(last["true_current_A"]) == pytest.approx(-2.0 * 2.9974, rel=1e-3)
    assert abs(int(last["board_current_mA"]) / 1000 - float(last["true_current_A"])) < 0.1


def test_run_scenario_cells_override(tmp_path: Path) -> None:
    score = run_scenario(ROOT / "scenarios" / "us06_short.toml", tmp_path, cells=2)
    assert score["cells"] == 2 and score["lost"] == 0 and score["samples"] == 600
