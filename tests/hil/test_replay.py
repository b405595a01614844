"""`soxbms hil replay`: cycler logs fed to the firmware through the whole chain (rig, MicroPython board, Mosquitto,
host). The expected values are worked out here from the log rows themselves, not from hil.replay's helpers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hil import cellfit
from hil.bench_soc import REAL_CELL, replay_log
from hil.cycler import CyclerFormatError, read_log
from hil.replay import LogOptions, ReplayModule, load_log, replay, soc_by_coulomb_counting, soc_from_column, timeline
from hil.soc_eval import ESTIMATORS, evaluate_log
from host import boardmodel
from host.cli import main
from host.store import open_store
from soxcommon import wire
from tests.shared_data import data_file

MAPPING = LogOptions(columns={"time": "t [s]", "voltage": "U [mV]", "current": "I [mA]", "temperature": "T [degC]"},
                     scales={"voltage": 1e-3, "current": 1e-3})
HOLD_S = 3.0


def cycler_rows() -> list[tuple[float, float, float, float | None]]:
    """(t_s, voltage_mV, current_mA, temp_C or None for a blank cell): rest, a 2 A discharge sampled irregularly with
    duplicated timestamps, an 11 s logging gap, a 1.5 A CC charge to 4.2 V and the CV taper down to 50 mA."""
    rows: list[tuple[float, float, float, float | None]] = [(0.0, 4100.3, 0.0, 25.0)]
    for i, t in enumerate((0.4, 1.0, 1.0, 1.7, 2.9, 3.0, 4.6, 5.0, 5.0, 6.2, 7.0, 8.3, 9.0)):
        rows.append((t, 4050.3 - 7.17 * i, -2000.0 - i, 25.0 + 0.1 * i if i != 5 else None))
    t = 20.0  # the gap: nothing logged from 9.0 s to 20.0 s
    while t < 31.0:
        rows.append((round(t, 1), 3900.7 + 9.3 * (t - 20.0), 1500.0, 26.0))
        t += 1.3
    t0 = t
    while t < 62.0:  # CV at 4.2 V: current falls as exp(-(t - t0) / 8 s), logged every 0.7 s
        rows.append((round(t, 1), 4200.2, round(1500.0 * math.exp(-(t - t0) / 8.0), 3), 26.3))
        t += 0.7
    assert rows[-1][2] < 50.0
    return rows


def write_log(path: Path, rows: list[tuple[float, float, float, float | None]], current_sign: int = 1) -> Path:
    lines = ["t [s],U [mV],I [mA],T [degC]"]
    lines += [f"{t},{v},{current_sign * i},{'' if temp is None else temp}" for t, v, i, temp in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def held_row(rows: list[tuple[float, float, float, float | None]], t_s: float) -> int:
    """The last row logged at or before t_s."""
    return max(k for k, row in enumerate(rows) if row[0] <= t_s + 1e-9)


def stored(score: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The board's samples of boot 1 as the host stored them, in sequence order (one cell a sample)."""
    store = open_store(score["db"])
    try:
        return sorted((r for r in store.samples("board-01") if r[0] == 1), key=lambda r: r[1])
    finally:
        store.close()


def test_synthetic_log_end_to_end(tmp_path: Path) -> None:
    rows = cycler_rows()
    log_path = write_log(tmp_path / "tester.csv", rows)
    score = replay([log_path], tmp_path, MAPPING, capacity_Ah=0.05, max_hold_s=HOLD_S)
    assert (score["sent"], score["stored"], score["lost"], score["duplicates"]) == (62, 62, 0, 0)
    assert score["quarantined"] == 0
    board = stored(score)
    assert [r[1] for r in board] == list(range(62))
    gap_samples = 0
    for k, r in enumerate(board):
        current_mA, voltage_mV, temp_dC = r[5], r[7], r[8]
        t_s, v_mV, i_mA, temp_C = rows[held_row(rows, float(k))]
        if k - t_s > HOLD_S:  # in the logging gap: absent, not the stale row
            gap_samples += 1
            assert (current_mA, voltage_mV, temp_dC) == (None, None, None), k
        else:
            assert (current_mA, voltage_mV) == (round(i_mA), round(v_mV)), k
            assert temp_dC == (None if temp_C is None else round(temp_C * 10)), k
        assert r[9:] == (None,) * (len(wire.CELL_QUANTITIES) - 2), k  # pressure, ToF, amplitude, FBG: NULL, never 0
    assert gap_samples == 7  # 13 s .. 19 s: more than 3 s after the row at 9.0 s
    assert any(r[8] is None and r[7] is not None for r in board)  # a blank temperature cell arrives absent
    # The CV taper arrives as recorded: every second a lower current, each the logged row's value.
    taper = [r[5] for r in board[32:]]
    assert all(a > b for a, b in zip(taper, taper[1:], strict=False)) and taper[-1] < 50
    figures = score["files"][0]
    assert figures["duplicate_timestamps_dropped"] == 2
    assert (figures["gaps_over_hold"], figures["samples_in_gaps"], figures["max_hold_s"]) == (1, 7, HOLD_S)
    assert figures["samples"] == 62 and figures["rows"] == len(rows)
    assert score["reading_error"]["voltage_max_mV"] <= 0.5 and score["reading_error"]["current_max_mA"] <= 0.5
    assert score["reference_soc"]["method"] == "coulomb counting" and score["reference_soc"]["capacity_Ah"] == 0.05
    out = Path(score["outputs"])
    assert json.loads((out / "score.json").read_text()) == score
    assert Path(score["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    samples = list(csv.DictReader((out / "samples.csv").open()))
    assert len(samples) == 62 and samples[12]["board_pressure_Pa"] == "" and samples[15]["in_gap"] == "1"
    assert [int(s["board_voltage_mV"]) for s in samples[:3]] == [r[7] for r in board[:3]]
    assert not any(key.startswith(("est", "board_soc")) for key in samples[0])  # estimates: estimates.csv
    assert "estimation" not in score and not (out / "estimates.csv").exists()  # only with --estimate


def test_coulomb_counted_soc_by_hand(tmp_path: Path) -> None:
    # 3.6 A discharge for 20 s = 0.02 Ah out of 0.1 Ah, a duplicated timestamp in the middle; then a second log
    # charging 1.8 A for 10 s = 0.005 Ah. Full at 10 s: SoC 1.1 at the start, 0.9 at 20 s, 0.95 at the end.
    first = tmp_path / "a.csv"
    first.write_text("Test Time / s,Voltage / V,Current / A\n0,3.9,-3.6\n10,3.8,-3.6\n10,3.8,-3.6\n20,3.7,-3.6\n")
    second = tmp_path / "b.csv"
    second.write_text("Test Time / s,Voltage / V,Current / A\n0,3.7,1.8\n4,3.75,1.8\n10,3.8,1.8\n")
    logs = timeline([first, second], [load_log(first, LogOptions()), load_log(second, LogOptions())], 1000)
    reference = soc_by_coulomb_counting(logs, 0.1, "test", full_at_s=10.0)
    assert (reference.full_at_file, reference.full_at_row) == (0, 2)  # the last row at 10 s
    assert reference.soc[0] == pytest.approx([1.1, 1.0, 1.0, 0.9], abs=1e-12)
    assert reference.soc[1] == pytest.approx([0.9, 0.92, 0.95], abs=1e-12)
    assert logs[1].offset_ms == 21000  # the second log starts on the sample after the first one's last row
    module = ReplayModule(logs, reference)
    for _ in range(26):
        module.step(1.0)
    assert module.sent[20].file == 0 and module.sent[21].file == 1
    # Log b's rows at 0, 4 and 10 s: 3 s in, its first row is still held; 4 s in, the second.
    assert module.sent[24].ref_soc == pytest.approx(0.9) and module.sent[25].ref_soc == pytest.approx(0.92)
    with pytest.raises(ValueError, match="not inside a log"):
        soc_by_coulomb_counting(logs, 0.1, "test", full_at_s=40.0)


def test_soc_from_the_testers_ah_counter(tmp_path: Path) -> None:
    # The 0.5 Ah discharge between 10 s and 1000 s was not logged (as in the HPPC file): only the Ah column holds it.
    # The second log's counter starts again at 0. Capacity 2 Ah: SoC 1 - 0.51 / 2 = 0.745 after the first log,
    # then 0.745 + 0.1 / 2 = 0.795.
    header = "Test Time / s,Voltage / V,Current / A,Net Capacity / Ah\n"
    first = tmp_path / "a.csv"
    first.write_text(header + "0,4.1,0,0\n10,4.1,0,-0.01\n1000,3.9,0,-0.51\n")
    second = tmp_path / "b.csv"
    second.write_text(header + "0,3.9,0,0\n10,3.95,0,0.1\n")
    logs = timeline([first, second], [load_log(first, LogOptions()), load_log(second, LogOptions())], 1000)
    by_ah = soc_by_coulomb_counting(logs, 2.0, "test", counted="ah")
    assert by_ah.soc[0] == pytest.approx([1.0, 0.995, 0.745]) and by_ah.soc[1] == pytest.approx([0.745, 0.795])
    assert "Ah column" in by_ah.describe()["equation"]
    assert soc_by_coulomb_counting(logs, 2.0, "test").soc[1] == pytest.approx([1.0, 1.0])  # the current misses it
    no_ah = tmp_path / "c.csv"
    no_ah.write_text("Test Time / s,Voltage / V,Current / A\n0,4.1,0\n1,4.1,0\n")
    with pytest.raises(ValueError, match="no Ah column to count from"):
        soc_by_coulomb_counting(timeline([no_ah], [load_log(no_ah, LogOptions())], 1000), 2.0, "test", counted="ah")


def test_reference_soc_from_a_logged_column(tmp_path: Path) -> None:
    log_path = tmp_path / "bdf.csv"
    log_path.write_text("Test Time / s,Voltage / V,Current / A,SOC [%]\n0,4.1,-1,99.5\n0.6,4.0,-1,99.0\n"
                        "1.2,3.9,-1,98.5\n2.0,3.8,,98.0\n")
    logs = timeline([log_path], [load_log(log_path, LogOptions(columns={"soc": "SOC [%]"}, scales={"soc": 0.01}))],
                    1000)
    module = ReplayModule(logs, soc_from_column(logs, "SOC [%]"))
    for _ in range(3):
        module.step(1.0)
    assert [s.ref_soc for s in module.sent] == pytest.approx([0.995, 0.99, 0.98])
    assert module.sent[2].current_mA is None and module.sent[2].voltage_mV == 3800  # a blank current: absent
    with pytest.raises(ValueError, match="no current at row 4: coulomb counting needs"):
        soc_by_coulomb_counting(logs, 1.0, "test")
    bdf_temperature = tmp_path / "t.csv"
    bdf_temperature.write_text("Test Time / s,Voltage / V,Current / A,Temperature / degC\n0,4.1,-1,25\n1,4.0,-1,25\n")
    assert load_log(bdf_temperature, LogOptions()).temp_C is not None
    assert load_log(bdf_temperature, LogOptions(columns={"temperature": None})).temp_C is None  # left out on request


def test_mat_time_unit_and_scales() -> None:
    us06 = data_file("us06_25degC.mat")
    plain = read_log(us06)
    scaled = load_log(us06, LogOptions(columns={"ah": None}, scales={"current": 2.0}, time_unit="min"))
    assert scaled.time_s[100] == pytest.approx(60 * plain.time_s[100])
    assert scaled.current_A[100] == pytest.approx(2 * plain.current_A[100]) and scaled.ah is None
    assert scaled.voltage_V.tolist() == plain.voltage_V.tolist()
    with pytest.raises(CyclerFormatError, match="time field is numeric"):
        load_log(us06, LogOptions(time_unit="%H:%M:%S"))
    with pytest.raises(CyclerFormatError, match="current field 'I' not in struct 'meas'"):
        load_log(us06, LogOptions(columns={"current": "I"}))


def test_current_sign_option(tmp_path: Path) -> None:
    rows = cycler_rows()[:6]
    ours = load_log(write_log(tmp_path / "ours.csv", rows), MAPPING)
    flipped = load_log(write_log(tmp_path / "theirs.csv", rows, current_sign=-1),
                       LogOptions(MAPPING.columns, MAPPING.scales, current_sign=-1))
    assert flipped.current_A.tolist() == ours.current_A.tolist()
    assert ours.current_A[2] == pytest.approx(-2.001)  # discharge is negative in our convention
    logs = timeline([tmp_path / "theirs.csv"], [flipped], 1000)
    module = ReplayModule(logs, soc_by_coulomb_counting(logs, 1.0, "test"))
    module.step(1.0)
    module.step(1.0)
    current_mA, cells = module.reading()
    assert current_mA == -2002 and cells == [[round(4050.3 - 7.17 * 2), 252, None, None, None, None]]


def test_missing_column_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_path = write_log(tmp_path / "tester.csv", cycler_rows())
    with pytest.raises(CyclerFormatError) as e:
        load_log(log_path, LogOptions(columns={**MAPPING.columns, "current": "Current / A"}))
    assert "current column 'Current / A' not found" in str(e.value)
    assert "['t [s]', 'U [mV]', 'I [mA]', 'T [degC]']" in str(e.value)  # the columns that exist
    code = main(["--state", str(tmp_path), "hil", "replay", str(log_path), "--capacity-Ah", "3",
                 "--columns", "time=t [s],voltage=U [mV]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: {log_path}: current column 'Current / A' not found; columns are "
                                 "['t [s]', 'U [mV]', 'I [mA]', 'T [degC]']"]


@pytest.mark.parametrize("argv, message", [
    (["nowhere.csv", "--capacity-Ah", "3"], "nowhere.csv: no such file"),
    (["LOG.xlsx", "--capacity-Ah", "3"], "unknown log format '.xlsx'"),
    (["LOG.csv"], "needs a capacity (--capacity-Ah or --cell)"),
    (["LOG.csv", "--capacity-Ah", "3", "--columns", "volts=U"], "unknown column role(s) ['volts']"),
    (["LOG.csv", "--capacity-Ah", "3", "--scale", "voltage=milli"], "--scale: voltage='milli' is not a number"),
    (["LOG.csv", "--capacity-Ah", "3", "--cell", "nowhere.json"], "nowhere.json: no such cell parameter file"),
    (["LOG.csv", "--capacity-Ah", "3", "--estimate"], "--estimate needs --cell: the estimators' board model"),
    (["LOG.csv", "--capacity-Ah", "3", "--soc0", "0.5"], "--soc0 is the estimators' start: it goes with --estimate"),
    (["LOG.csv", "--cell", str(REAL_CELL), "--estimate", "--full-at-s", "0", "--soc0", "0.4,1.3"],
     "--soc0: start SoC fractions in 0..1, got [0.4, 1.3]"),
    (["LOG.csv", "--cell", str(REAL_CELL), "--estimate", "--full-at-s", "0", "--soc0", "0.4,high"],
     "--soc0: 'high' is not a number"),
])
def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                 message: str) -> None:
    log = tmp_path / "LOG.csv"
    log.write_text("Test Time / s,Voltage / V,Current / A\n0,3.7,0\n1,3.6,0\n")
    (tmp_path / "LOG.xlsx").write_text("")
    argv = [str(tmp_path / a) if a.startswith(("LOG", "nowhere")) else a for a in argv]
    assert main(["--state", str(tmp_path), "hil", "replay", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_two_logs_in_order_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Two tests of one cell, logged with discharge counted positive, in minutes, voltage in mV, current in A.
    first = tmp_path / "cycle1.csv"
    first.write_text("min;mV;A\n" + "".join(f"{k / 120};{3900 + k};{2.0}\n" for k in range(11)))  # 0..5 s
    second = tmp_path / "cycle2.csv"
    second.write_text("min;mV;A\n" + "".join(f"{k / 120};{3600 + k};{-1.0}\n" for k in range(9)))  # 0..4 s
    argv = ["--state", str(tmp_path), "hil", "replay", str(first), str(second), "--capacity-Ah", "2.5",
            "--current-sign", "-1", "--time-unit", "min", "--columns", "time=min,voltage=mV,current=A",
            "--scale", "voltage=0.001", "--delimiter", ";"]
    code = main(argv)
    score = json.loads(capsys.readouterr().out)
    assert code == 0 and (score["sent"], score["stored"], score["lost"]) == (11, 11, 0)
    assert [f["samples"] for f in score["files"]] == [6, 5]
    assert [f["offset_s"] for f in score["files"]] == [0.0, 6.0]
    assert [f["path"] for f in score["files"]] == [str(first), str(second)]
    board = stored(score)
    # Log 1 at 0..5 s holds its rows 0, 2, .., 10; log 2 starts at 6 s with its rows 0, 2, .., 8.
    assert [r[7] for r in board] == [3900 + 2 * k for k in range(6)] + [3600 + 2 * k for k in range(5)]
    assert [r[5] for r in board] == [-2000] * 6 + [1000] * 5  # sign flipped to ours: charge positive
    samples = list(csv.DictReader((Path(score["outputs"]) / "samples.csv").open()))
    assert [s["file"] for s in samples] == ["0"] * 6 + ["1"] * 5
    assert score["reference_soc"]["end"] == pytest.approx(1 - 2.0 * 5 / 3600 / 2.5 + 1.0 * 4 / 3600 / 2.5)
    assert Path(score["outputs"]).name == "replay-cycle1+1"
    # Run again into the same state folder: a fresh board (boot 1) and store, not the first run's rows.
    first.write_text("min;mV;A\n" + "".join(f"{k / 120};{3800 + k};{2.0}\n" for k in range(11)))
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["sent"], again["stored"], again["lost"]) == (11, 11, 0)
    assert [r[7] for r in stored(again)][:6] == [3800 + 2 * k for k in range(6)]


def test_cell_fit_then_replay_of_us06(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cell = tmp_path / "cells" / "ncr18650pf.json"
    assert cellfit.main([str(data_file("c20_ocv_25degC.mat")), str(data_file("hppc_5pulse_25degC.mat")),
                         "--name", "ncr18650pf", "--out", str(cell)]) == 0
    assert "wrote" in capsys.readouterr().out
    us06 = data_file("us06_25degC.mat")
    code = main(["--state", str(tmp_path), "hil", "replay", str(us06), "--cell", str(cell), "--limit-s", "300"])
    score = json.loads(capsys.readouterr().out)
    assert code == 0 and (score["sent"], score["stored"], score["lost"]) == (300, 300, 0)
    assert score["cell"]["name"] == "ncr18650pf"
    assert score["reference_soc"]["capacity_Ah"] == pytest.approx(2.9974, abs=0.0005)  # the fitted C/20 capacity
    log = read_log(us06)
    board = stored(score)
    rows = [int(np.searchsorted(log.time_s, k + 1e-9, side="right")) - 1 for k in range(300)]
    assert [r[7] for r in board] == [round(float(log.voltage_V[j]) * 1000) for j in rows]
    assert [r[5] for r in board] == [round(float(log.current_A[j]) * 1000) for j in rows]
    assert log.temp_C is not None
    assert [r[8] for r in board] == [round(float(log.temp_C[j]) * 10) for j in rows]
    assert min(r[5] for r in board) < -10_000 and max(r[5] for r in board) > 2_000  # US06 pulses and regen
    # Reference SoC at 299 s by our own trapezoid over the rows up to the held one.
    j = rows[-1]
    charge_Ah = float(np.sum(0.5 * (log.current_A[1:j + 1] + log.current_A[:j]) * np.diff(log.time_s[:j + 1]))) / 3600
    assert score["reference_soc"]["end"] == pytest.approx(1 + charge_Ah / 2.9974, abs=1e-6)
    assert score["files"][0]["sha256"] == "c12a57f8fa2bfcb7fcd30f243781390e1567acb369da647e6bdc08885deb0ac4"


def test_estimation_is_refused_without_a_reference_soc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "drive.csv"
    log.write_text("Test Time / s,Voltage / V,Current / A,SOC\n0,3.7,-1,0.5\n1,3.69,-1,\n2,3.68,-1,0.49\n")
    base = ["--state", str(tmp_path), "hil", "replay", str(log), "--cell", str(REAL_CELL), "--estimate"]
    # Coulomb counting from a full point nobody stated: the log's start is not assumed full.
    assert main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --estimate needs a reference SoC to score against: a logged SoC column (--soc-column) or "
                   "the replay time at which the cell was full (--full-at-s; 0 when the log starts full)"]
    # A SoC column with a blank row: no reference there.
    assert main([*base, "--soc-column", "SOC"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {log}: the reference SoC column has blank rows: the estimators cannot be scored there"]
    assert not (tmp_path / "hil").exists()  # refused before anything ran


def _board_model_bytes(cell: Path, out: Path) -> bytes:
    boardmodel.main([str(cell), str(out)])
    return out.read_bytes()


def test_estimation_of_the_real_us06_matches_bench_soc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The first 25 s of the real US06 recording: the replay's figures are bench soc's for the same slice (one
    evaluation, hil.soc_eval), over the readings the board stored."""
    us06 = data_file("us06_25degC.mat")
    code = main(["--state", str(tmp_path), "hil", "replay", str(us06), "--cell", str(REAL_CELL), "--full-at-s", "0",
                 "--estimate", "--limit-s", "25"])
    captured = capsys.readouterr()
    score = json.loads(captured.out)
    assert code == 0 and (score["sent"], score["stored"], score["lost"]) == (25, 25, 0)
    estimation = score["estimation"]
    bench_work = tmp_path / "bench"
    bench_work.mkdir()
    # The board model the replay made from the cell file (byte for byte what `python -m host.boardmodel` writes).
    board_model = Path(estimation["board_model"])
    assert board_model.parent == Path(score["outputs"]) / "estimate"
    assert board_model.read_bytes() == _board_model_bytes(REAL_CELL, tmp_path / "model.json")
    bench = evaluate_log("real_us06_25C", replay_log(us06, REAL_CELL, 25.0), board_model, bench_work).row
    for key in ("estimators", "start_soc", "samples", "true_soc_start", "true_soc_end", "board_vs_host_pct_max",
                "board_vs_host_pct_max_whole_run", "gated_board", "best_board_estimator", "fused_uses_nn"):
        assert estimation[key] == bench[key], key
    # The log starts full: 30 % above is impossible, so the one start is 30 % below.
    assert estimation["start_soc"] == [0.7] and estimation["true_soc_start"] == 1.0
    assert estimation["shipped_estimator"] == "board_ekf"
    figures = estimation["estimators"]
    assert list(figures) == ["board_ekf", "host_ekf", "coulomb", "board_nn", "board_fused"]
    for estimator in ESTIMATORS:
        assert set(figures[estimator]) == {"rmse_pct", "max_error_pct", "convergence_s"}
        assert 0 <= figures[estimator]["rmse_pct"] <= figures[estimator]["max_error_pct"] <= 31
        assert estimation["per_start"][0][estimator] == figures[estimator]  # one start: its figures are the worst
    # Coulomb counting keeps its 30 % start error; the board EKF corrects it from the voltage.
    assert figures["coulomb"]["convergence_s"] is None and 29 < figures["coulomb"]["max_error_pct"] < 31
    assert figures["board_ekf"]["rmse_pct"] < figures["coulomb"]["rmse_pct"] / 2
    assert estimation["board_vs_host_pct_max"] >= 0 and estimation["ekf_step_us_micropython"] > 0
    # The table on stderr: one line per estimator, the shipped one marked.
    lines = captured.err.splitlines()
    for estimator in ESTIMATORS:
        line = next(x for x in lines if x.startswith(f"{estimator} "))
        assert f"{figures[estimator]['rmse_pct']:.3f}" in line
    assert any(x.startswith("board_ekf") and x.endswith("(shipped)") for x in lines)
    assert any(x.startswith("board EKF vs host EKF after both converged:") for x in lines)
    # estimates.csv: per sample the reference and every estimator's SoC; score.json holds the same figures.
    rows = list(csv.DictReader(Path(estimation["estimates_csv"]).read_text().splitlines()))
    assert len(rows) == 25 and float(rows[0]["ref_soc"]) == 1.0 and float(rows[0]["coulomb_from_0.70"]) == 0.7
    assert json.loads((Path(score["outputs"]) / "score.json").read_text())["estimation"] == estimation
