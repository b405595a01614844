"""The quantized SoC EKF (firmware/engine/qekf.py) under MicroPython: parity with the float board EKF
(engine/ekf.py, float64 storage: the reference's equations) on the simulated drive of test_ekf, convergence from
wrong starts, a positive covariance, no heap allocation per cell-step, and every per-step intermediate inside
±2**30 (checked by running an instrumented copy of the module)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from tests.firmware.test_ekf import CONFIG, MODEL, N_CELLS, simulate, write_stream
from tests.mpy import FIRMWARE, run_mpy

QEKF = FIRMWARE / "engine" / "qekf.py"
P_FORMATS = (32, 34, 34, 36, 36, 36, 38, 36, 38, 40)  # f of [p00 p01 p02 p03 p11 p12 p13 p22 p23 p33]
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


def test_quantized_tracks_float_converges_and_allocates_nothing(drive: tuple[Path, np.ndarray]) -> None:
    path, truth = drive
    soc0 = [float(np.clip(truth[0, c] + d, 0, 1)) for c, d in enumerate((-0.3, 0.2, -0.3))]
    out = run_mpy(BOTH, args=[path, MODEL, CONFIG, ",".join(map(repr, soc0))], timeout=60).splitlines()
    trace = np.array([json.loads(line) for line in out[:-1]])
    final = json.loads(out[-1])
    diff = np.abs(trace[:, :, 1] - trace[:, :, 0])
    assert np.max(diff) < 2e-4  # the same filter to its fixed-point rounding, from the first sample on
    assert np.all(np.abs(trace[300:, :, 1] - truth[300:]) < 0.01)  # 30 % off at the start, within 1 % after 5 min
    assert final["gated"][0] == final["gated"][1]
    assert final["bad_minor"] == 0  # P's diagonal and every 2x2 principal minor positive at every step
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
    assert final["bytes"][1] == 0  # no heap allocation per quantized cell-step (the float one allocates ~9 KB)
    assert final["bytes"][0] > 1000
    print("us per cell-step float, quantized:", final["us"], "bytes:", final["bytes"])


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


RANGE = """
import sys, json
sys.path.insert(0, sys.argv[5])
from engine import cellmodel
import qekf_checked as qm
from soxcommon.stream import SampleReader
stream, model, config, soc0 = sys.argv[1:5]
r = SampleReader(open(stream, "rb"))
q = qm.QSocEkf(cellmodel.load(model), r.n_cells, json.load(open(config)))
for c, s in enumerate(soc0.split(",")):
    q.reset(c, float(s))
prev = None
while r.read():
    dt = 0.0 if prev is None else (r.t_ms - prev) * 0.001
    prev = r.t_ms
    q.step(dt, r.current_mA, r.volts_mV, r.temps_dC)
print(json.dumps({"checked": qm.n_checked, "soc": [q.soc(c) for c in range(r.n_cells)]}))
"""


def test_every_intermediate_stays_inside_30_bits(drive: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """An instrumented copy of qekf.py raises on any integer result outside ±2**30 (a big int on a 32-bit board),
    over the whole drive from wrong starts, one of them at the steep empty end of the OCV curve."""
    path, truth = drive
    (tmp_path / "qekf_checked.py").write_text(checked_source())
    soc0 = [0.0, 1.0, float(truth[0, 2] - 0.3)]
    out = json.loads(run_mpy(RANGE, args=[path, MODEL, CONFIG, ",".join(map(repr, soc0)), tmp_path], timeout=60))
    assert out["checked"] > 1_000_000
    assert abs(out["soc"][2] - truth[-1, 2]) < 0.01  # (the starts at 0 and 1 are there for the ranges)


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


def test_config_out_of_format_is_refused() -> None:
    cfg = json.loads(CONFIG.read_text())
    cfg["p0_soc"] = 0.2  # beyond p00's f32 operand range (0.125)
    out = run_mpy(f"""
import json
from engine import cellmodel
from engine.qekf import QSocEkf
try:
    QSocEkf(cellmodel.load({str(MODEL)!r}), 1, json.loads({json.dumps(json.dumps(cfg))}))
except ValueError as e:
    print(e)
""")
    assert "p0_soc" in out
