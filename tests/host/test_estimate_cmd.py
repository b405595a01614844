"""`soxbms estimate` on a real run: rig (simulated Panasonic NCR18650PF cells, a US06-like drive, sensor errors on)
-> the firmware estimating under MicroPython (code from .mpy; the EKF alone for this cell) -> Mosquitto -> host ->
SQLite, two boots of the board; then the stored board SoC against the float64 host reference, the command's
errors, and `export` and `status` with the stored estimates."""

from __future__ import annotations

import csv
import functools
import io
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hil.harness import Fleet
from hil.scenario import load_scenario
from hil.scenario_run import build_module
from host.cli import main
from host.export import ESTIMATE_HEADER, HEADER
from host.records import DataRecord
from host.store import open_store
from soxcommon import wire

ROOT = Path(__file__).resolve().parents[2]
MODEL = str(ROOT / "models/board/panasonic_ncr18650pf_25C.json")
DEVICE = "board-01"
CELLS = 4
BOOTS = ((1, 0.7, 200), (2, 0.5, 100))  # boot id, the cells' initial SoC, samples
HEAP_KB = 256  # as tests/hil/test_e2e_sox.py: room for the estimators beside the link
COLUMN = {name: i for i, name in enumerate(HEADER + ESTIMATE_HEADER)}
BOUND_PCT = 0.05  # board (float32, 0.01 % units on the wire) vs host (float64) EKF, same starts
# After a mid-run start (a gap, a window) the host's RC voltages, hysteresis state and current bias start from 0 under
# load, which the board's do not, and the SoC offset this leaves decays slowly where the OCV is flat, the more so the
# less the filter trusts the voltage: measured 0.21 % with r_V = (20 mV)², 0.35 % with (40 mV)², 0.65-0.71 % with the
# shipped (80 mV)². Not issue 5's board-vs-host condition (the same start); 1 % bounds it.
MID_RUN_BOUND_PCT = 1.0


@pytest.fixture(scope="module")
def fleet_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One board's store: a US06-like drive of 4 cells in two boots (a restarted board finds its flash: the boot id
    goes on), the second one on a fresh module at another SoC."""
    state = tmp_path_factory.mktemp("fleet")
    db = ""
    for _, initial_soc, samples in BOOTS:
        scenario = load_scenario(ROOT / "scenarios/soc/us06_25C_ecm.toml", cells=CELLS)
        scenario.initial_soc = initial_soc
        fleet = Fleet(state, boards=1, cells=CELLS, samples=samples, pace_ms=0, heap_kb=HEAP_KB,
                      module_factory=functools.partial(build_module, scenario, truth="ecm"),
                      sox_cell="panasonic_ncr18650pf_25C")
        try:
            fleet.start()
            fleet.wait_boards(240)
        finally:
            fleet.stop()
        assert "fused with the NN" not in fleet.board_procs[0].log_path.read_text(), "an EKF-only board"
        db = fleet.db
    return db


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def stored_rows(db: str) -> list[tuple[Any, ...]]:
    store = open_store(db)
    try:
        return sorted(store.samples(DEVICE, estimates=True), key=lambda r: (r[0], r[1], r[COLUMN["cell"]]))
    finally:
        store.close()


def estimate(capsys: pytest.CaptureFixture[str], tmp_path: Path, db: str, *extra: str,
             device: str = DEVICE) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """`soxbms estimate` with --json and --csv: the summary and the per-sample rows."""
    out_json, out_csv = tmp_path / "cmp.json", tmp_path / "cmp.csv"
    code, out, err = run(capsys, "--db", db, "estimate", device, "--model", MODEL, "--json", str(out_json),
                         "--csv", str(out_csv), *extra)
    assert code == 0, err
    result = json.loads(out_json.read_text())
    assert f"worst: max {result['worst']['soc_diff_max_pct']:.4f} %" in out
    return result, list(csv.DictReader(io.StringIO(out_csv.read_text())))


def differences(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([float(r["host_soc_pct"]) - float(r["board_soc_pct"]) for r in rows if r["diff_pct"]])


def test_host_ekf_follows_the_board_from_its_starts(fleet_db: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    result, rows = estimate(capsys, tmp_path, fleet_db)
    total = sum(n for _, _, n in BOOTS)
    assert result["board_estimator"] == "ekf" and result["filter"] == "ekf"
    assert result["boots"] == [b for b, _, _ in BOOTS] and result["samples"] == total
    assert result["segments"] == len(BOOTS) and result["mid_run_starts"] == 0
    assert [c["compared"] for c in result["cells"]] == [total] * CELLS
    assert result["sos_levels"]["ok"] + result["sos_levels"]["warn"] == total
    assert all(c["board_soh_last"] is not None and c["host_soh"] is None for c in result["cells"])
    # The CSV holds every comparison; the summary is its worst.
    diffs = differences(rows)
    assert len(diffs) == total * CELLS
    assert result["worst"]["soc_diff_max_pct"] == pytest.approx(float(np.max(np.abs(diffs))), abs=2e-4)
    worst = result["worst"]
    print(f"host vs board EKF: max {worst['soc_diff_max_pct']} %, RMS {worst['soc_diff_rms_pct']} %")
    assert result["worst"]["soc_diff_max_pct"] <= BOUND_PCT
    # Each boot is its own start: the second boot's cells start near 50 % after the first ended near 70 %.
    board = {(int(r["boot"]), int(r["seq"]), int(r["cell"])): float(r["board_soc_pct"]) for r in rows}
    assert all(abs(board[(2, 0, c)] - board[(1, 199, c)]) > 10 for c in range(CELLS))


def test_a_wrong_start_or_another_filter_shows(fleet_db: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """--soc0 moves the host's start away from the board's, --filter ukf runs another filter: both show up as
    differences far above the same-start figure."""
    wrong, _ = estimate(capsys, tmp_path, fleet_db, "--soc0", "0.3")
    assert wrong["worst"]["soc_diff_max_pct"] > 10 * BOUND_PCT
    ukf, _ = estimate(capsys, tmp_path, fleet_db, "--filter", "ukf")
    assert ukf["filter"] == "ukf" and any("compares two filters" in note for note in ukf["notes"])
    assert ukf["worst"]["soc_diff_max_pct"] > BOUND_PCT


def test_a_gap_restarts_the_host_from_the_board(fleet_db: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Ten records of boot 1 missing from a copy of the store: the host starts again after them from the board's
    SoC and sigma and still follows it."""
    db = tmp_path / "gap.sqlite"
    shutil.copy(fleet_db, db)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("DELETE FROM sample WHERE device = ? AND boot = 1 AND seq BETWEEN 100 AND 109", (DEVICE,))
    result, rows = estimate(capsys, tmp_path, str(db))
    total = sum(n for _, _, n in BOOTS) - 10
    assert result["segments"] == len(BOOTS) + 1 and result["mid_run_starts"] == CELLS
    assert [c["compared"] for c in result["cells"]] == [total] * CELLS
    print(f"after a gap: max {result['worst']['soc_diff_max_pct']} %")
    assert result["worst"]["soc_diff_max_pct"] <= MID_RUN_BOUND_PCT
    before_gap = [r for r in rows if r["boot"] == "1" and int(r["seq"]) < 100]
    assert np.max(np.abs(differences(before_gap))) <= BOUND_PCT


def test_a_window_starts_mid_run(fleet_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = stored_rows(fleet_db)
    c = COLUMN
    synced = [r for r in rows if r[c["time_relative"]] == 0 and r[c["boot"]] == 1]
    t_from = synced[len(synced) // 2][c["t_s"]]
    iso = (np.datetime64(t_from + wire.EPOCH_2000_UNIX_S, "s")).astype(str)
    inside = {(r[0], r[1]) for r in rows if r[c["time_relative"]] == 0 and r[c["t_s"]] >= t_from}
    result, _ = estimate(capsys, tmp_path, fleet_db, "--from", iso)
    assert result["samples"] == len(inside)
    assert result["mid_run_starts"] == CELLS * sum(1 for b in {b for b, _ in inside} if (b, 0) not in inside) > 0
    print(f"window from {iso}: max {result['worst']['soc_diff_max_pct']} %")
    assert result["worst"]["soc_diff_max_pct"] <= MID_RUN_BOUND_PCT


def test_export_and_status_carry_the_estimates(fleet_db: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "export.csv"
    code, _, err = run(capsys, "--db", fleet_db, "export", DEVICE, "-o", str(out_file))
    assert code == 0, err
    exported = list(csv.DictReader(io.StringIO(out_file.read_text())))
    rows = stored_rows(fleet_db)
    assert len(exported) == len(rows)
    for name in ESTIMATE_HEADER:
        assert [e[name] for e in exported] == ["" if r[COLUMN[name]] is None else str(r[COLUMN[name]])
                                               for r in rows]
    assert all(e["soc_bp"] for e in exported)
    last_boot, last_seq = max((r[0], r[1]) for r in rows)
    last = [r for r in rows if (r[0], r[1]) == (last_boot, last_seq)]
    soc_pct = sum(r[COLUMN["soc_bp"]] for r in last) / len(last) / 100
    code, out, _ = run(capsys, "--db", fleet_db, "status")
    line = next(x for x in out.splitlines() if x.startswith(DEVICE))
    assert code == 0 and f" {soc_pct:.2f} {wire.SOS_LEVELS[last[0][COLUMN['sos_level']]]} " in line


# --- errors, on small stores written directly ---------------------------------------------------------------------


def record(seq: int, n_cells: int, soc_bp: int | None, boot: int = 1, soh_bp: int = 10000) -> DataRecord:
    cells = ((3700, 250, None, None, None, None),) * n_cells
    estimates = None if soc_bp is None else ((soc_bp, 300, soh_bp),) * n_cells
    return DataRecord("bms-01", boot, seq, 0, 0, 1000 + seq, 0, 0, -1000, cells, 1.0, estimates,
                      None if soc_bp is None else 0, None if soc_bp is None else ())


def small_store(tmp_path: Path, records: list[DataRecord]) -> str:
    db = str(tmp_path / "small.sqlite")
    store = open_store(db)
    store.add_device("bms-01", "x")
    store.write_batch(records)
    store.close()
    return db


@pytest.mark.parametrize(("records", "argv", "code", "message"), [
    ([], ("other",), 1, "unknown device other (registered: bms-01)"),
    ([], (), 1, "no samples of bms-01 stored"),
    ([record(s, 3, 6000) for s in range(5)], ("--from", "2030-01-01"), 1, "no samples of bms-01 stored in that window"),
    ([record(s, 3, None) for s in range(5)], (), 1, "carry no board estimates (a board without estimation)"),
    ([record(s, 3, 6000) for s in range(5)], ("--soc0", "0.5,0.6"), 1, "--soc0 gives 2 start values for 3 cells"),
    ([record(s, 3, 6000) for s in range(5)], ("--soc0", "50"), 1, "SoC fractions in 0..1"),
    ([record(0, 3, 6000), record(0, 2, 6000, boot=2)], (), 1, "samples of 3 and of 2 cells"),
    ([record(s, 3, 6000) for s in range(5)], ("--model", "models/board/estimator.json"), 2, "'format' must be"),
    ([record(s, 3, 6000) for s in range(5)], ("--model", "no-such.json"), 2, "No such file"),
])
def test_errors_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], records: list[DataRecord],
                          argv: tuple[str, ...], code: int, message: str) -> None:
    db = small_store(tmp_path, records)
    device = argv[0] if argv and not argv[0].startswith("-") else "bms-01"
    options = argv[1:] if device != "bms-01" else argv
    model = () if "--model" in options else ("--model", MODEL)
    got, out, err = run(capsys, "--db", db, "estimate", device, *model, *options)
    assert (got, out) == (code, "") and message in err


def test_the_model_must_be_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = small_store(tmp_path, [record(s, 3, 6000) for s in range(5)])
    code, _, err = run(capsys, "--db", db, "estimate", "bms-01")
    assert code == 2 and "does not report its cell model" in err and "--model" in err


def test_a_cell_is_compared_from_its_first_board_estimate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cell whose voltage came late: the board estimated it from its 4th sample on, the host starts it there.
    The board's SoH below 1 is reported as a capacity the host's filter lacks."""
    late = [record(s, 2, 6000, soh_bp=9800) for s in range(8)]
    for s in range(3):
        est = late[s].estimates
        assert est is not None
        late[s] = late[s]._replace(estimates=(est[0], (None, None, None)))
    db = small_store(tmp_path, late)
    result, rows = estimate(capsys, tmp_path, db, device="bms-01")
    assert [c["compared"] for c in result["cells"]] == [8, 5]
    assert [r["host_soc_pct"] == "" for r in rows if r["cell"] == "1"] == [True] * 3 + [False] * 5
    assert [(c["board_soh_first"], c["board_soh_last"]) for c in result["cells"]] == [(0.98, 0.98), (0.98, 0.98)]
    assert any("the board's SoH left 1 on cell(s) 0, 1" in note for note in result["notes"])

