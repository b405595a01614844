"""The quantized SoC EKF (firmware/engine/qekf.py) under MicroPython: parity with the float board EKF
(engine/ekf.py, float64 storage: the reference's equations) on the simulated drive of test_ekf and on drives through
the steep parts of the tables (where the Jacobians' SoC slopes of R and I0 are large), convergence from wrong starts,
a positive covariance, no heap allocation per cell-step, and every per-step intermediate inside ±2**30 (checked by
running an instrumented copy of the module)."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from hil.physics.params import load as load_cell
from hil.profiles import ConstantCurrent, Segment, Table, udds_like
from hil.simulated import SimulatedModule
from tests.firmware.ekf_reference import ABSENT
from tests.firmware.test_ekf import CONFIG, MODEL, N_CELLS, simulate, write_stream
from tests.mpy import FIRMWARE, run_mpy

QEKF = FIRMWARE / "engine" / "qekf.py"


class Steep(NamedTuple):
    """A drive through the steep parts of a board model's tables."""

    cell: str  # cell parameter file (models/cells) = board model (models/board)
    load: Callable[[], list[Segment]]
    initial_soc: float
    seconds: int
    starts: tuple[float, ...]  # parity run: filter starts relative to the truth
    range_starts: tuple[float, ...]  # range run: absolute starts (cell 2 without voltage for its first 30 s)
    i0_term_V_per_soc: float  # range run: the least largest |B·z/sqrt(1 + z²)·(dI0/dsoc)/I0| it must reach


# Stress models (tests/firmware/steep/README.md: earlier fits with tables no fit should produce).
STEEP_MODELS = Path(__file__).resolve().parent / "steep"
# Panasonic NCR18650PF charged at 2C from SoC 0.01: R1 falls 0.12 -> 0.018 Ω between SoC 0.075 and 0.2 and I0 steps
# 1962 -> 1.9 A between 0.12 and 0.13 (the range run starts a cell 2e-6 below that step, where the SoC slope of
# B·asinh(I/2I0) is thousands of V/soc, and one at 0.09, steep R1, with P00 still p0_soc). LG M50 (chen2020 fit)
# charged at 1C from SoC 0.01, then driven (urban) back towards empty: R1 0.05 -> 0.016 Ω and R2 0.10 -> 0.02 Ω
# over SoC 0..0.05 (R1 spans 1e-5..0.05 Ω over the whole range).
STEEP = {
    "panasonic_charge": Steep("panasonic_ncr18650pf_25C", lambda: [ConstantCurrent(2.0, 500)], 0.01, 500,
                              (0, 0.1, 0.05), (0.0, 0.129998, 0.09), 256.0),
    "chen2020_drive": Steep("chen2020_spme_fit", lambda: [ConstantCurrent(1.0, 400), Table(udds_like(3, 600))], 0.01,
                            1000, (0, 0.1, 0.05), (0.0, 0.2, 0.02), 1.0),
}
VOLTAGE_GAP_S = 30
P_FORMATS = (32, 32, 32, 36, 32, 32, 36, 32, 36, 40)  # f of [p00 p01 p02 p03 p11 p12 p13 p22 p23 p33]
UPPER = ((0, 0), (0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (3, 3))

# Both filters over the stream, cell-step by cell-step with the collector held off: per record the soc of each
# cell (float, quantized) and the quantized P's diagonal and 2x2 minors' minimum sign check; at the end µs and heap
# bytes per cell-step (records after the first two: dt changes there, and the per-dt constants are made in float).
BOTH = """
import sys, json, gc, time
from engine import cellmodel
from engine.ekf import SocEkf
from engine.qekf import QSocEkf
from soxcommon.stream import SampleReader
stream, model, config, soc0 = sys.argv[1:5]
cfg = json.load(open(config))
m = cellmodel.load(model)
r = SampleReader(open(stream, "rb"))
n = r.n_cells
fl = SocEkf(m, n, cfg, "d")
q = QSocEkf(m, n, cfg)
for c, s in enumerate(soc0.split(",")):
    fl.reset(c, float(s))
    q.reset(c, float(s))
prev = None
k = 0
us = [0, 0]
nbytes = [0, 0]
steps = 0
bad_minor = 0
while r.read():
    dt = 0.0 if prev is None else (r.t_ms - prev) * 0.001
    prev = r.t_ms
    fl.set_current(r.current_mA)
    q.set_current(r.current_mA)
    for c in range(n):
        for e, ekf in enumerate((fl, q)):
            gc.collect()
            gc.disable()
            m0 = gc.mem_alloc()
            t0 = time.ticks_us()
            ekf.step_cell(c, dt, r.volts_mV[c], r.temps_dC[c])
            t1 = time.ticks_us()
            used = gc.mem_alloc() - m0
            gc.enable()
            if k >= 2:
                us[e] += time.ticks_diff(t1, t0)
                nbytes[e] += used
        if k >= 2:
            steps += 1
        P = q.P
        j = 10 * c
        # P_ii > 0 and P_ii·P_jj − P_ij² > 0 (in f(2e_i) · f(2e_j) units: exact integer products on this port)
        d = (P[j], P[j + 4], P[j + 7], P[j + 9])
        for a, b, p in ((0, 1, P[j + 1]), (0, 2, P[j + 2]), (0, 3, P[j + 3]), (1, 2, P[j + 5]),
                        (1, 3, P[j + 6]), (2, 3, P[j + 8])):
            if d[a] <= 0 or d[a] * d[b] <= p * p:
                bad_minor += 1
    print(json.dumps([[fl.x[4 * c], q.x[4 * c] / 16777216] for c in range(n)]))
    k += 1
print(json.dumps({"us": [u / steps for u in us], "bytes": [b / steps for b in nbytes], "bad_minor": bad_minor,
                  "gated": [[fl.gated(c) for c in range(n)], [q.gated(c) for c in range(n)]],
                  "P": list(q.P), "Pf": list(fl.P), "soc": [q.soc(c) for c in range(n)],
                  "sigma": [q.sigma(c) for c in range(n)], "bias": [q.bias_A(c) for c in range(n)]}))
"""


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    records, truth = simulate()
    path = tmp_path_factory.mktemp("qekf") / "drive.sxs"
    write_stream(path, records)
    return path, truth


def steep_records(name: str) -> tuple[list[tuple[int, int, list[int], list[int]]], np.ndarray]:
    """A STEEP drive at 1 Hz: stream records (None -> ABSENT) and the true SoC [step, cell]."""
    drive = STEEP[name]
    module = SimulatedModule(load_cell(STEEP_MODELS / "cells" / f"{drive.cell}.json"), N_CELLS, drive.load(),
                             seed=5, initial_soc=drive.initial_soc)
    records = []
    for k in range(drive.seconds):
        module.step(1.0)
        current_mA, rows = module.reading()
        volts = [ABSENT if r[0] is None else r[0] for r in rows]
        temps = [ABSENT if r[1] is None else r[1] for r in rows]
        records.append((1000 * (k + 1), ABSENT if current_mA is None else current_mA, volts, temps))
    return records, np.array([row.soc for row in module.truth])


@pytest.fixture(scope="module", params=sorted(STEEP))
def steep(request: pytest.FixtureRequest) -> tuple[str, list, np.ndarray]:
    records, truth = steep_records(request.param)
    return request.param, records, truth


def board_model(name: str) -> Path:
    return STEEP_MODELS / "board" / f"{STEEP[name].cell}.json"


def plain_config(directory: Path) -> Path:
    """The shipped configuration with the plain (one-linearisation) update: the fixed-point filter has no iterated
    one, and the float filter it is compared with must run the same equations."""
    path = directory / "estimator_plain.json"
    path.write_text(json.dumps({**json.loads(CONFIG.read_text()), "iterations": 1}))
    return path


def run_both(path: Path, model: Path, soc0: list[float]) -> tuple[np.ndarray, dict]:
    """BOTH over a stream: the trace [record, cell, (float soc, quantized soc)] and the final record."""
    config = plain_config(path.parent)
    out = run_mpy(BOTH, args=[path, model, config, ",".join(map(repr, soc0))], timeout=120).splitlines()
    return np.array([json.loads(line) for line in out[:-1]]), json.loads(out[-1])


def assert_same_filter(trace: np.ndarray, final: dict) -> None:
    diff = np.abs(trace[:, :, 1] - trace[:, :, 0])
    assert np.max(diff) < 2e-4  # the same filter to its fixed-point rounding, from the first sample on
    assert final["gated"][0] == final["gated"][1]
    assert final["bad_minor"] == 0  # P's diagonal and every 2x2 principal minor positive at every step
    assert final["bytes"][1] == 0  # no heap allocation per quantized cell-step (the float one allocates ~9 KB)
    assert final["bytes"][0] > 1000


def test_quantized_tracks_float_converges_and_allocates_nothing(drive: tuple[Path, np.ndarray]) -> None:
    path, truth = drive
    soc0 = [float(np.clip(truth[0, c] + d, 0, 1)) for c, d in enumerate((-0.3, 0.2, -0.3))]
    trace, final = run_both(path, MODEL, soc0)
    assert_same_filter(trace, final)
    assert np.all(np.abs(trace[300:, :, 1] - truth[300:]) < 0.01)  # 30 % off at the start, within 1 % after 5 min
    for c in range(N_CELLS):
        P = np.zeros((4, 4))
        Pf = np.zeros((4, 4))
        for k, (a, b) in enumerate(UPPER):
            P[a, b] = P[b, a] = final["P"][10 * c + k] * 2.0 ** -P_FORMATS[k]
            Pf[a, b] = Pf[b, a] = final["Pf"][10 * c + k]
        assert np.linalg.eigvalsh(P).min() > 0
        np.testing.assert_allclose(np.diag(P), np.diag(Pf), rtol=0.02)
        assert final["sigma"][c] == pytest.approx(np.sqrt(Pf[0, 0]), rel=0.01)
        assert final["soc"][c] == pytest.approx(trace[-1, c, 0], abs=2e-4)
    print("us per cell-step float, quantized:", final["us"], "bytes:", final["bytes"])


def test_quantized_tracks_float_where_the_slopes_are_steep(steep: tuple[str, list, np.ndarray],
                                                            tmp_path: Path) -> None:
    name, records, truth = steep
    path = tmp_path / "steep.sxs"
    write_stream(path, records)
    soc0 = [float(np.clip(truth[0, c] + d, 0, 1)) for c, d in enumerate(STEEP[name].starts)]
    trace, final = run_both(path, board_model(name), soc0)
    assert_same_filter(trace, final)
    print(name, "max |soc difference|:", np.max(np.abs(trace[:, :, 1] - trace[:, :, 0]), axis=0))


class _Checked(ast.NodeTransformer):
    """Wraps every arithmetic result (binary, unary, augmented assignment) in __chk__(...)."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        return ast.Call(ast.Name("__chk__", ast.Load()), [node], [])

    visit_UnaryOp = visit_BinOp

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        load = ast.parse(ast.unparse(node.target), mode="eval").body
        value = ast.Call(ast.Name("__chk__", ast.Load()), [ast.BinOp(load, node.op, node.value)], [])
        return ast.Assign([node.target], value)


# Functions run per cell-step (load-time and read-out code computes in float and is left as it is).
STEP_FUNCTIONS = {"_mul", "_div", "_exp_neg", "_temperature", "_seek", "_at", "params", "ocv_at", "set_current",
                  "step_cell", "_decay"}


def checked_source() -> str:
    tree = ast.parse(QEKF.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in STEP_FUNCTIONS:
            node.body = [_Checked().visit(stmt) for stmt in node.body]
    ast.fix_missing_locations(tree)
    prelude = """
LIMIT = 1 << 30
n_checked = 0
def __chk__(v):
    global n_checked
    if type(v) is int:
        n_checked += 1
        if not -LIMIT <= v < LIMIT:
            raise OverflowError("intermediate %d outside +-2**30" % v)
    return v
"""
    return prelude + ast.unparse(tree)


# The instrumented copy over a stream. Wrappers around _mulsat and _branch_slope count what the Jacobians' slope
# terms did: the largest |F[k][0]| (f20 V/soc), the largest |I·dR/dsoc| and |B·z/sqrt(1 + z²)·w| (f20 V/soc, the
# _mulsat calls with s = 20 and 16; 256 V/soc is saturation), and how often m_k was held by the P00 bound.
RANGE = """
import sys, json
sys.path.insert(0, sys.argv[5])
from engine import cellmodel
import qekf_checked as qm
from soxcommon.stream import SampleReader
stream, model, config, soc0 = sys.argv[1:5]
mulsat = qm._mulsat
branch_slope = qm._branch_slope
seen = {"d": 0, "slope20": 0, "slope16": 0, "held": 0, "steps": 0}
def counted_mulsat(a, b, s):
    v = mulsat(a, b, s)
    if s in (16, 20):
        key = "slope%d" % s
        seen[key] = max(seen[key], abs(v))
    return v
def counted_branch_slope(cur, dr, e, p00):
    d = branch_slope(cur, dr, e, p00)
    if d and d != qm._mul(mulsat(cur, dr, 20), qm.ONE_F28 - e, 28):
        seen["held"] += 1
    seen["d"] = max(seen["d"], abs(d))
    return d
qm._mulsat = counted_mulsat
qm._branch_slope = counted_branch_slope
r = SampleReader(open(stream, "rb"))
q = qm.QSocEkf(cellmodel.load(model), r.n_cells, json.load(open(config)))
for c, s in enumerate(soc0.split(",")):
    q.reset(c, float(s))
prev = None
while r.read():
    dt = 0.0 if prev is None else (r.t_ms - prev) * 0.001
    prev = r.t_ms
    q.step(dt, r.current_mA, r.volts_mV, r.temps_dC)
    seen["steps"] += r.n_cells
seen["checked"] = qm.n_checked
seen["soc"] = [q.soc(c) for c in range(r.n_cells)]
print(json.dumps(seen))
"""
F20 = 2.0**20


def run_checked(path: Path, model: Path, soc0: list[float], tmp_path: Path) -> dict:
    (tmp_path / "qekf_checked.py").write_text(checked_source())
    config = plain_config(tmp_path)
    out = json.loads(run_mpy(RANGE, args=[path, model, config, ",".join(map(repr, soc0)), tmp_path], timeout=120))
    assert out["checked"] > 300 * out["steps"]  # every cell-step went through its few hundred checked operations
    return out


def test_every_intermediate_stays_inside_30_bits(drive: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """An instrumented copy of qekf.py raises on any integer result outside ±2**30 (a big int on a 32-bit board),
    over the whole drive from wrong starts, one of them at the steep empty end of the OCV curve."""
    path, truth = drive
    out = run_checked(path, MODEL, [0.0, 1.0, float(truth[0, 2] - 0.3)], tmp_path)
    assert abs(out["soc"][2] - truth[-1, 2]) < 0.01  # (the starts at 0 and 1 are there for the ranges)


def test_every_intermediate_stays_inside_30_bits_where_the_slopes_are_steep(steep: tuple[str, list, np.ndarray],
                                                                             tmp_path: Path) -> None:
    """The same over the steep drives, from starts at the empty end (beyond the grid once the filter moves), at the
    edge of the steepest I0 segment and, without voltage for the first 30 s (P00 stays p0_soc), at a steep R1: the
    slope terms reach their limits (saturation, the P00 bound on m_k) and stay inside ±2**30."""
    name, records, _ = steep
    gap = [(t, i, [ABSENT if c == 2 and k < VOLTAGE_GAP_S else v for c, v in enumerate(volts)], temps)
           for k, (t, i, volts, temps) in enumerate(records)]
    path = tmp_path / "steep.sxs"
    write_stream(path, gap)
    out = run_checked(path, board_model(name), list(STEEP[name].range_starts), tmp_path)
    print(name, {k: v / F20 if k in ("d", "slope20", "slope16") else v for k, v in out.items()})
    assert out["held"] > 0  # m_k held to |m_k|·sqrt(P00) <= 1/4 V while P00 was p0_soc
    assert out["d"] > 0.5 * F20  # F[k][0] beyond 0.5 V/soc
    assert out["slope16"] >= STEEP[name].i0_term_V_per_soc * F20  # Panasonic's: saturated at 256 V/soc


def test_the_range_check_catches_an_overflow(tmp_path: Path) -> None:
    (tmp_path / "qekf_checked.py").write_text(checked_source())
    out = run_mpy(f"""
import sys
sys.path.insert(0, {str(tmp_path)!r})
import qekf_checked as qm
print(qm._mul(123456789, 234567, 40), qm._mul(3 << 27, 3 << 27, 30))
try:
    qm._mul(3 << 27, 3 << 27, 20)
except OverflowError:
    print("caught")
""")
    first, second, caught = out.split()[0], out.split()[1], out.split()[2]
    assert int(first) == round(123456789 * 234567 / 2**40)
    assert int(second) == 9 << 24
    assert caught == "caught"


@pytest.mark.parametrize(("change", "message"), [
    ({"p0_soc": 0.2}, "p0_soc"),  # beyond p00's f32 operand range (0.125)
    ({"iterations": 3}, "no iterated update (iterations 3)"),
])
def test_config_the_fixed_point_filter_cannot_run_is_refused(change: dict, message: str) -> None:
    cfg = {**json.loads(CONFIG.read_text()), "iterations": 1, **change}
    out = run_mpy(f"""
import json
from engine import cellmodel
from engine.qekf import QSocEkf
try:
    QSocEkf(cellmodel.load({str(MODEL)!r}), 1, json.loads({json.dumps(json.dumps(cfg))}))
except ValueError as e:
    print(e)
""")
    assert message in out
