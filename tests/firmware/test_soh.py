"""The board's SoH tracker (firmware/engine/soh.py) beside the SoC EKF: capacity from OCV rests on a synthetic
discharge, the resistance factor on synthetic current steps (CPython, the common subset), per-step allocation under
MicroPython, and the aged benchmark scenario against the prior."""

from __future__ import annotations

import json

from tests.mpy import REPO, run_host, run_mpy

MODEL = REPO / "models" / "board" / "panasonic_ncr18650pf_25C.json"
CONFIG = REPO / "models" / "board" / "estimator.json"

# A synthetic cell on the board model itself (the contract's equations, hysteresis included) with the
# capacity Q_TRUE, resistances x K_TRUE (R0, R1, R2, and I0 / K_TRUE). Rest 1000 s, discharge at 1C with 1 s
# pulses of +-2 A every 10 s down to soc 0.2, rest 1000 s. Prints the tracker's figures as JSON.
SYNTH = """
import sys, json, math
from engine import cellmodel
from engine.ekf import SocEkf
from engine.soh import SohTracker
model = cellmodel.load(sys.argv[1])
cfg = json.load(open(sys.argv[2]))
Q_TRUE = float(sys.argv[3])
K_TRUE = float(sys.argv[4])
ekf = SocEkf(model, 1, cfg, "d")
ekf.reset(0, 0.9)
soh = SohTracker(ekf, "d")
lk = cellmodel.Lookup(model, 1)
soc, v1, v2, h = 0.9, 0.0, 0.0, 0.0
def asinh(z):
    return math.log(z + math.sqrt(z * z + 1.0))
def phase(n, base_A, pulses):
    global soc, v1, v2, h
    for k in range(n):
        cur = base_A + (2.0 if pulses and k % 10 == 5 else 0.0)
        lk.params(0, soc, 250)
        r1, r2 = lk.r1 * K_TRUE, lk.r2 * K_TRUE
        e1 = math.exp(-1.0 / (r1 * lk.c1))
        e2 = math.exp(-1.0 / (r2 * lk.c2))
        soc += (model.efficiency * cur if cur > 0 else cur) / (Q_TRUE * 3600.0)
        v1 = v1 * e1 + r1 * cur * (1 - e1)
        v2 = v2 * e2 + r2 * cur * (1 - e2)
        if cur:
            sign = 1.0 if cur > 0 else -1.0
            h = sign + (h - sign) * math.exp(-model.hyst_rate_per_As * abs(cur))
        lk.ocv_at(0, soc)
        v = lk.ocv + lk.m * h + v1 + v2 + lk.r0 * K_TRUE * cur + lk.b_V * asinh(cur * K_TRUE / (2.0 * lk.i0))
        ekf.set_current(round(cur * 1000))
        soh.set_current(1.0)
        ekf.step_cell(0, 1.0, round(v * 1000), 250)
        if soh.step_cell(0, 1.0, round(v * 1000)):
            ekf.set_capacity_Ah(0, soh.capacity_Ah(0))
phase(1000, 0.0, False)
phase(int(0.7 * Q_TRUE * 3600 / 3.0), -3.0, True)
phase(1000, 0.0, False)
lk.params(0, soc, 250)
print(json.dumps({"q": soh.capacity_Ah(0), "q_sigma": soh.capacity_sigma_Ah(0), "pairs": soh.n_pairs[0],
                  "k": soh.resistance_scale(0), "r0": soh.r0_ohm(0), "r0_sigma": soh.r0_sigma(0),
                  "r0_true": lk.r0 * K_TRUE, "ekf_q": ekf.capacity_As[0] / 3600.0}))
"""


def _synthetic(q_true: float, k_true: float) -> dict[str, float]:
    return json.loads(run_host(SYNTH, args=[MODEL, CONFIG, q_true, k_true]).strip().splitlines()[-1])


def test_capacity_recovered_within_2_sigma_and_fed_back() -> None:
    q_true = 2.4  # a 20 % fade from the model's 3.0 Ah
    out = _synthetic(q_true, 1.4)
    assert out["pairs"] == 1
    assert abs(out["q"] - q_true) <= 2 * out["q_sigma"]
    assert out["q_sigma"] < 0.03 * q_true  # far tighter than the prior's 10 %
    assert abs(out["ekf_q"] - out["q"]) < 1e-3  # fed back to the EKF


def test_r0_recovered_on_synthetic_steps() -> None:
    out = _synthetic(2.4, 1.0)
    assert abs(out["r0"] - out["r0_true"]) <= 2 * out["r0_sigma"]
    # 40 % growth: a known error of a few % (the EKF's RC states are fitted with the model's resistances; measured
    # 2.1 % high, 3 % low before the EKF's Jacobian had the tables' SoC slopes), at the edge of the stated 2σ;
    # bounded here so that it does not grow unnoticed. Since the NCR18650PF refit (R0 rises 0.014 -> 0.030 Ω between
    # SoC 0.12 and 0.17, next to this run's end at 0.2, so r0 = k·R0(soc) also carries the SoC's error there): k 3.6 %
    # high, r0 4.7 % low, 2.4σ.
    out = _synthetic(2.4, 1.4)
    assert abs(out["k"] - 1.4) < 0.05 * 1.4
    assert abs(out["r0"] - out["r0_true"]) < 0.05 * out["r0_true"]


# Bytes allocated per cell-step of the tracker alone (gc held off), over the first 300 s of the same synthetic drive
# run by the board's classes: only float results, no lists or tuples (a float is one 16-byte block on the unix
# port; the R0 step and the rest's OCV reading are the rare, larger steps).
ALLOC = """
import gc, sys, json
from engine import cellmodel
from engine.ekf import SocEkf
from engine.soh import SohTracker
model = cellmodel.load(sys.argv[1])
ekf = SocEkf(model, 1, json.load(open(sys.argv[2])))
ekf.reset(0, 0.9)
soh = SohTracker(ekf)
worst = 0
total = 0
for k in range(300):
    cur = -3000 + (2000 if k % 10 == 5 else 0)
    v = 3950 - k // 10 + (13 if k % 10 == 5 else 0)
    ekf.set_current(cur)
    soh.set_current(1.0)
    ekf.step_cell(0, 1.0, v, 250)
    gc.collect()
    gc.disable()
    m0 = gc.mem_alloc()
    soh.step_cell(0, 1.0, v)
    used = gc.mem_alloc() - m0
    gc.enable()
    total += used
    if k % 10 != 5 and k % 10 != 6:
        worst = max(worst, used)
print(json.dumps({"plain_max": worst, "mean": total / 300}))
"""


def test_micropython_step_allocates_floats_only() -> None:
    out = json.loads(run_mpy(ALLOC, args=[MODEL, CONFIG]).strip().splitlines()[-1])
    assert out["plain_max"] <= 32 * 16  # a cell-step without a current step: a handful of float results
    assert out["mean"] < 2048
