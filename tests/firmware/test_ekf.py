"""The board's SoC EKF (firmware/engine/ekf.py) and its cell-model lookup under MicroPython, against a float64 numpy
reference of the same equations (tests/firmware/ekf_reference.py), on a stream made from the rig's simulated module."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hil.physics.params import load as load_cell
from hil.profiles import Table, udds_like
from hil.simulated import SimulatedModule
from host.estimate import cellmodel, reference
from soxcommon.stream import SampleWriter
from tests.firmware.ekf_reference import ABSENT, RefEkf, RefModel
from tests.mpy import REPO, run_mpy

MODEL = REPO / "models" / "board" / "panasonic_ncr18650pf_25C.json"
CONFIG = REPO / "models" / "board" / "estimator.json"
N_CELLS = 3
DRIVE_S = 900
SMALL_INT = 2**30  # a 32-bit board's small integers: wire and fixed-point values stay inside ±2**30

# Runs the board filter over a stream; prints per record the soc and P00 of every cell, then x, P and gated counts.
BOARD = """
import sys, json
from engine import cellmodel
from engine.ekf import SocEkf
from soxcommon.stream import SampleReader
stream, model, config, typecode, soc0, every = sys.argv[1:7]
cfg = json.load(open(config))
f = open(stream, "rb")
r = SampleReader(f)
n = r.n_cells
ekf = SocEkf(cellmodel.load(model), n, cfg, typecode)
for c, s in enumerate(soc0.split(",")):
    ekf.reset(c, float(s))
prev = None
k = 0
while r.read():
    dt = 0.0 if prev is None else (r.t_ms - prev) * 0.001
    prev = r.t_ms
    ekf.step(dt, r.current_mA, r.volts_mV, r.temps_dC)
    row = [[ekf.x[4 * c], ekf.P[10 * c]] for c in range(n)]
    if k % int(every) == 0:
        row.append([list(ekf.P[10 * c:10 * c + 10]) for c in range(n)])
    print(json.dumps(row))
    k += 1
print(json.dumps({"x": list(ekf.x), "P": list(ekf.P), "gated": [ekf.gated(c) for c in range(n)],
                  "soc": [ekf.soc(c) for c in range(n)], "sigma": [ekf.sigma(c) for c in range(n)],
                  "bias": [ekf.bias_A(c) for c in range(n)]}))
"""


def write_stream(path: Path, records: list[tuple[int, int, list[int], list[int]]]) -> None:
    with open(path, "wb") as f:
        writer = SampleWriter(f, len(records[0][2]))
        for rec in records:
            writer.write(*rec)


def simulate(seed: int = 5) -> tuple[list[tuple[int, int, list[int], list[int]]], np.ndarray]:
    """A 1 Hz urban drive from 0.8 SoC: stream records (wire units, None -> ABSENT) and the true SoC [step, cell]."""
    params = load_cell(REPO / "models" / "cells" / "panasonic_ncr18650pf_25C.json")
    module = SimulatedModule(params, N_CELLS, [Table(udds_like(seed, DRIVE_S))], seed=seed, initial_soc=0.8)
    records = []
    for k in range(DRIVE_S):
        module.step(1.0)
        current_mA, rows = module.reading()
        volts = [ABSENT if r[0] is None else r[0] for r in rows]
        temps = [ABSENT if r[1] is None else r[1] for r in rows]
        records.append((1000 * (k + 1), ABSENT if current_mA is None else current_mA, volts, temps))
    # Absent readings on purpose: a voltage gap on cell 1, a current dropout, a temperature gap on cell 2.
    for k in range(300, 340):
        records[k][2][1] = ABSENT
    records[410] = (records[410][0], ABSENT, records[410][2], records[410][3])
    for k in range(500, 520):
        records[k][3][2] = ABSENT
    for t_ms, current_mA, volts, temps in records:
        assert all(-SMALL_INT <= v < SMALL_INT for v in (t_ms, current_mA, *volts, *temps))
    return records, np.array([row.soc for row in module.truth])


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, np.ndarray]:
    records, truth = simulate()
    path = tmp_path_factory.mktemp("ekf") / "drive.sxs"
    write_stream(path, records)
    return path, records, truth


def run_board(stream: Path, soc0: list[float], typecode: str = "f", every: int = 10,
              model: Path = MODEL) -> tuple[list, dict]:
    out = run_mpy(BOARD, args=[stream, model, CONFIG, typecode, ",".join(map(repr, soc0)), every]).splitlines()
    return [json.loads(line) for line in out[:-1]], json.loads(out[-1])


def run_reference(records: list, soc0: list[float], model: Path = MODEL) -> tuple[list[RefEkf], np.ndarray]:
    cfg = json.loads(CONFIG.read_text())
    ref_model = RefModel(json.loads(model.read_text()))
    filters = [RefEkf(ref_model, cfg, s) for s in soc0]
    prev = None
    trace = []
    for t_ms, current_mA, volts, temps in records:
        dt = 0.0 if prev is None else (t_ms - prev) * 1e-3
        prev = t_ms
        for c, f in enumerate(filters):
            f.step(dt, current_mA, volts[c], temps[c])
        trace.append([[f.x[0], f.P[0, 0]] for f in filters])
    return filters, np.array(trace)


def test_board_matches_float64_reference(drive: tuple[Path, list, np.ndarray]) -> None:
    """Same equations, float64 storage on the board: agreement to rounding, including the absent readings."""
    path, records, truth = drive
    soc0 = [0.5, 0.95, 0.7]
    rows, final = run_board(path, soc0, "d")
    filters, ref = run_reference(records, soc0)
    board = np.array([[cell for cell in row[:N_CELLS]] for row in rows])
    assert np.max(np.abs(board[:, :, 0] - ref[:, :, 0])) < 1e-9
    assert np.max(np.abs(board[:, :, 1] - ref[:, :, 1]) / ref[:, :, 1]) < 1e-7
    x = np.array(final["x"]).reshape(N_CELLS, 4)
    for c, f in enumerate(filters):
        np.testing.assert_allclose(x[c], f.x, rtol=1e-7, atol=1e-10)
        upper = f.P[np.triu_indices(4)]
        np.testing.assert_allclose(final["P"][10 * c:10 * c + 10], upper, rtol=1e-6, atol=1e-15)
        assert final["gated"][c] == f.gated
        assert final["sigma"][c] == pytest.approx(np.sqrt(f.P[0, 0]), rel=1e-9)
        assert final["bias"][c] == pytest.approx(f.x[3], abs=1e-10)


def test_float32_board_tracks_float64_and_keeps_P_positive(drive: tuple[Path, list, np.ndarray]) -> None:
    """The board's own storage (array('f'), a 32-bit board's float): parity within float32 effects, P symmetric
    (stored as its upper triangle) and positive definite over the whole run, 30 % wrong starts converge."""
    path, records, truth = drive
    soc0 = [float(np.clip(truth[0, c] + d, 0, 1)) for c, d in enumerate((-0.3, 0.2, -0.3))]
    rows, final = run_board(path, soc0, "f", every=5)
    _, ref = run_reference(records, soc0)
    board = np.array([[cell for cell in row[:N_CELLS]] for row in rows])
    assert np.max(np.abs(board[:, :, 0] - ref[:, :, 0])) < 1e-5
    min_eig = np.inf
    for row in rows[::5]:
        for upper in row[N_CELLS]:
            P = np.zeros((4, 4))
            P[np.triu_indices(4)] = upper
            P = P + np.triu(P, 1).T
            min_eig = min(min_eig, float(np.linalg.eigvalsh(P).min()))
    assert min_eig > 0
    assert np.all(np.abs(np.array(soc0) - truth[0]) > 0.19)  # starts 30 %, 20 % (clipped at 1), 30 % off ...
    # ... within 2 % (issue 5's convergence band) from 5 minutes of driving on; the errors there are the filter's
    # own σ (0.5-1 %), which starts that differ in the first update do not share.
    assert np.all(np.abs(board[300:, :, 0] - truth[300:]) < 0.02)
    assert final["gated"] == [0, 0, 0]


def test_single_spike_is_gated_and_changes_nothing(drive: tuple[Path, list, np.ndarray], tmp_path: Path) -> None:
    path, records, truth = drive
    spiked = [(t, i, list(v), list(tc)) for t, i, v, tc in records]
    k = 600
    spiked[k][2][0] += 500
    spike_path = tmp_path / "spike.sxs"
    write_stream(spike_path, spiked)
    soc0 = [0.8, 0.8, 0.8]
    clean, clean_final = run_board(path, soc0, every=10**6)
    hit, hit_final = run_board(spike_path, soc0, every=10**6)
    assert hit_final["gated"][0] == clean_final["gated"][0] + 1
    assert hit_final["gated"][1:] == clean_final["gated"][1:]
    # The spiked sample was a predict-only step; the next samples carry on as without it (P00 grows by q_soc·dt).
    assert hit[k][0][1] > clean[k][0][1]
    assert abs(hit[k][0][0] - clean[k][0][0]) < 1e-4
    assert abs(hit[-1][0][0] - clean[-1][0][0]) < 1e-4


def test_absent_voltage_predicts_only(drive: tuple[Path, list, np.ndarray]) -> None:
    """Cell 1 has no voltage for 40 samples: its covariance grows and its SoC follows the current alone."""
    path, records, truth = drive
    rows, _ = run_board(path, [0.8] * N_CELLS, every=10**6)
    p00 = [rows[k][1][1] for k in range(299, 340)]
    assert all(b > a for a, b in zip(p00, p00[1:], strict=False))
    assert rows[340][1][1] < rows[339][1][1]  # the first voltage back shrinks it


def two_temperature_model(tmp_path: Path) -> Path:
    """The Panasonic board model with a second temperature (40 °C: resistances x0.6, I0 x1.5, C x1.1, OCV −3 mV)."""
    doc = json.loads(MODEL.read_text())
    doc["temp_C"] = [25.0, 40.0]
    for key, scale in (("r0_ohm", 0.6), ("r1_ohm", 0.6), ("r2_ohm", 0.6), ("i0_A", 1.5), ("c1_F", 1.1),
                       ("c2_F", 1.1)):
        doc[key] = [doc[key][0], [v * scale for v in doc[key][0]]]
    doc["ocv_V"] = [doc["ocv_V"][0], [v - 0.003 for v in doc["ocv_V"][0]]]
    path = tmp_path / "two_temps.json"
    path.write_text(json.dumps(doc))
    return path


LOOKUP = """
import sys, json
from engine import cellmodel
model = cellmodel.load(sys.argv[1])
lk = cellmodel.Lookup(model, 1)
for soc, temp_dC in POINTS:
    lk.params(0, soc, temp_dC)
    lk.ocv_at(0, soc)
    print(json.dumps([lk.r0, lk.r1, lk.c1, lk.r2, lk.c2, lk.i0, lk.m, lk.dm, lk.ocv, lk.docv, lk.b_V]))
"""


def test_lookup_matches_reference_in_and_beyond_the_grids(tmp_path: Path) -> None:
    model = two_temperature_model(tmp_path)
    ref = RefModel(json.loads(model.read_text()))
    points = [(s, t) for s in (-0.05, 0.0, 0.0025, 0.31, 0.5, 0.997, 1.0, 1.2) for t in (-100, 250, 318, 400, 550)]
    out = run_mpy(LOOKUP.replace("POINTS", json.dumps(points)), args=[model])
    board = [json.loads(line) for line in out.splitlines()]
    for (soc, temp_dC), got in zip(points, board, strict=True):
        T = temp_dC * 0.1
        want = [ref.table(k, soc, T) for k in ("r0_ohm", "r1_ohm", "c1_F", "r2_ohm", "c2_F", "i0_A")]
        want += [ref.hyst(soc), ref.slope("hyst_V", soc, T), ref.table("ocv_V", soc, T), ref.slope("ocv_V", soc, T),
                 2 * 8.314462618 * (T + 273.15) / 96485.33212]
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-9, err_msg=f"soc {soc}, T {T}")


def test_a_lasting_innovation_is_gated_only_gate_run_times() -> None:
    """A voltage reading that stays 0.5 V off (not a spike: e.g. the filter's own error after a wrong start) is
    rejected gate_run times in a row, then corrected towards; once the filter has caught up, a lone spike is gated
    again."""
    cfg = json.loads(CONFIG.read_text())
    out = run_mpy(f"""
import json
from engine import cellmodel
from engine.ekf import SocEkf
ekf = SocEkf(cellmodel.load({str(MODEL)!r}), 1, json.loads({json.dumps(json.dumps(cfg))}))
ekf.reset(0, 0.5)
temps = [250]
for _ in range(50):
    ekf.step(1.0, 0, [3650], temps)
settled = ekf.soc(0)
gated = []
for _ in range(10):
    ekf.step(1.0, 0, [4150], temps)
    gated.append(ekf.gated(0))
after = ekf.soc(0)
for _ in range(60):
    ekf.step(1.0, 0, [4150], temps)
ekf.step(1.0, 0, [9000], temps)
print(json.dumps([settled, after, gated, ekf.gated(0)]))
""")
    settled, after, gated, total = json.loads(out)
    run = cfg["gate_run"]
    assert gated == [min(k + 1, run) for k in range(10)]  # gated the first gate_run times, then updates
    assert after > settled + 0.05  # pulled towards the higher voltage's SoC
    assert total == run + 1  # the lone spike after it is gated again


def test_iterated_update_brings_wrong_starts_closer_in_one_sample() -> None:
    """From starts 30 % low, 20 % high and 30 % low, one linearisation across that much of the OCV misjudges the
    step; the shipped iterated update (relinearised until soc settles) ends the first sample nearer the truth."""
    records, truth = simulate()
    soc0 = [float(np.clip(truth[0, c] + d, 0, 1)) for c, d in enumerate((-0.3, 0.2, -0.3))]
    model = RefModel(json.loads(MODEL.read_text()))
    shipped = json.loads(CONFIG.read_text())
    assert shipped["iterations"] > 1
    t_ms, current_mA, volts, temps = records[0]
    first_error = {}
    for n in (1, shipped["iterations"]):
        filters = [RefEkf(model, {**shipped, "iterations": n}, s) for s in soc0]
        for c, f in enumerate(filters):
            f.step(0.0, current_mA, volts[c], temps[c])
        first_error[n] = max(abs(f.x[0] - truth[0, c]) for c, f in enumerate(filters))
    assert first_error[shipped["iterations"]] < first_error[1] - 0.01


def test_iterated_update_on_an_ocv_grid_point_is_the_same_in_float32(tmp_path: Path) -> None:
    """A rested NCR18650PF at 4.181 V started on the grid point 0.7 (a 30 % wrong start; float32 0.7 lies just
    below it, on the other segment): the MAP lies on the OCV's grid point 0.91, where the iterates of a plain
    iterated update cycle and stopped at different points of the cycle in float32 and float64 (2 % apart). The
    board lands on the grid point in both storages, as the test reference and the filterpy host reference do."""
    stream = tmp_path / "rested.sxs"
    write_stream(stream, [(0, 0, [4181], [250])])
    _, f32 = run_board(stream, [0.7], "f")
    _, f64 = run_board(stream, [0.7], "d")
    filters, _ = run_reference([(0, 0, [4181], [250])], [0.7])
    assert json.loads(CONFIG.read_text())["iterations"] >= 8  # enough to close the bracket from 30 % off
    assert filters[0].x[0] == pytest.approx(0.91, abs=1e-6)
    assert f32["x"][0] == pytest.approx(0.91, abs=1e-6) and f64["x"][0] == pytest.approx(0.91, abs=1e-6)
    host = reference.EkfCell(cellmodel.load(MODEL), json.loads(CONFIG.read_text()), 0.7)  # filterpy's
    host.step(0.0, 0.0, 4.181, 25.0)
    assert host.x[0] == pytest.approx(0.91, abs=1e-6)
