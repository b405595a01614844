"""The extra SoC measurements (firmware/engine/multisensor.py) under MicroPython: a channel with a known mapping pulls a
wrong SoC to the truth, a spike is gated, an absent reading changes nothing, and a calibration made on the host
(hil/bench_ablation.py) comes back on the board as the same mapping; the sample stream's extra channels (SXS2) under
both interpreters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hil.bench_ablation import calibration_file, fit_channel
from hil.sensors.models import FbgCoeffs
from soxcommon.frame import ABSENT
from soxcommon.stream import ALL_CHANNELS, EXTRA_CHANNELS, SampleReader, SampleWriter
from tests.mpy import REPO, run_host, run_mpy

MODEL = REPO / "models" / "board" / "panasonic_ncr18650pf_25C.json"
CONFIG = REPO / "models" / "board" / "estimator.json"
# Per cell [a, b, c, r, s]: pressure Pa, strain ue, tof ns against soc and dT (K from 25 degC); s the drift rate's
# sigma per hour.
PRESSURE = [101000.0, 20000.0, 340.0, 100.0**2, 6.0]
STRAIN = [5.0, 300.0, 14.0, 1.0**2, 0.13]
TOF = [4200.0, -60.0, 2.5, 3.0**2, 0.3]
MEMORY = 600
GRATING = [1550000.0, 1549800.0, 10.0, 10.5, 1.2]  # lambda0, ref lambda0 (pm), kT, kT_ref (pm/K), ke (pm/ue)


def _calibration(path: Path, n_cells: int = 2) -> None:
    cell = {"pressure": PRESSURE, "strain": STRAIN, "tof": TOF, "grating": GRATING}
    path.write_text(json.dumps({"format": "soxbms-multisensor/1", "gate": 5.0, "gate_run": 3, "memory": MEMORY,
                                "cells": [cell] * n_cells}))


# Cell 0 starts at soc0 (0.3 off a truth of 0.6); each sample predicts 1 s at rest with no voltage reading, then
# the extra measurements with readings made from the truth by the known mappings at 35 degC (dT = 10 K).
DRIVE = """
import json, sys
from engine import cellmodel
from engine.ekf import SocEkf
from engine.multisensor import MultiSensor, load, MEASUREMENTS
from soxcommon.frame import ABSENT
from soxcommon.stream import EXTRA_CHANNELS

TRUTH = 0.6
DT_K = 10.0
cal = load(sys.argv[3])
with open(sys.argv[2]) as f:
    cfg = json.load(f)
ekf = SocEkf(cellmodel.load(sys.argv[1]), 2, cfg)
ms = MultiSensor(ekf, cal, ENABLED, AGE_H)
n = 2
extra = [ABSENT] * (len(EXTRA_CHANNELS) * n)

def readings(soc, spike):
    c = cal["cells"][0]
    g = c["grating"]
    strain = c["strain"][0] + c["strain"][1] * soc + c["strain"][2] * DT_K
    extra[0 * n] = round(c["pressure"][0] + c["pressure"][1] * soc + c["pressure"][2] * DT_K) + spike
    extra[1 * n] = round(c["tof"][0] + c["tof"][1] * soc + c["tof"][2] * DT_K)
    extra[2 * n] = round(g[0] + g[2] * DT_K + g[4] * strain)
    extra[3 * n] = round(g[1] + g[3] * DT_K)

ekf.reset(0, SOC0)
ekf.reset(1, SOC0)
out = []
for k in range(SAMPLES):
    ekf.set_current(0)
    ms.advance(1.0)
    ekf.step_cell(0, 1.0, ABSENT, 350)
    ekf.step_cell(1, 1.0, ABSENT, 350)
    if k in ABSENT_AT:
        for i in range(len(extra)):
            extra[i] = ABSENT
    else:
        readings(TRUTH, SPIKE if k == SPIKE_AT else 0)
    before = ekf.x[0]
    ms.step_cell(0, extra)
    out.append([ekf.x[0], before, ekf.P[0], list(ekf.x[:4]), list(ekf.P[:10])])
print(json.dumps({"steps": out, "used": list(ms.n_used), "gated": list(ms.n_gated),
                  "cell1": [list(ekf.x[4:8]), list(ekf.P[10:20])], "age_h": ms.age_h,
                  "variance": [ms.variance(m, 0) for m in range(3)]}))
"""


def _drive(tmp_path: Path, enabled: tuple[str, ...], soc0: float = 0.3, samples: int = 30, spike: int = 0,
           spike_at: int = -1, absent_at: tuple[int, ...] = (), age_h: float = 0.0) -> dict:
    cal = tmp_path / "cal.json"
    _calibration(cal)
    code = (DRIVE.replace("ENABLED", repr(enabled)).replace("SOC0", repr(soc0)).replace("SAMPLES", str(samples))
            .replace("SPIKE_AT", str(spike_at)).replace("SPIKE", str(spike)).replace("ABSENT_AT", repr(absent_at))
            .replace("AGE_H", repr(age_h)))
    out: dict = json.loads(run_mpy(code, heap_kb=1024, args=[MODEL, CONFIG, cal]).strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("measurement", ["pressure", "strain", "tof"])
def test_a_known_mapping_pulls_a_wrong_soc_to_the_truth(measurement: str, tmp_path: Path) -> None:
    out = _drive(tmp_path, (measurement,))
    socs = [s[0] for s in out["steps"]]
    assert abs(socs[-1] - 0.6) < 0.01, socs[-5:]
    assert abs(socs[0] - 0.6) < 0.05  # from P0's wide prior the first update nearly reaches it
    p00 = [s[2] for s in out["steps"]]
    assert p00[-1] < 0.01 * 0.0833 and all(p > 0 for p in p00)
    m = ["pressure", "strain", "tof"].index(measurement)
    assert out["used"][2 * m] == 30 and sum(out["used"]) == 30 and sum(out["gated"]) == 0
    # Cell 1 was not stepped by the measurements: its soc is where its reset put it.
    assert abs(out["cell1"][0][0] - 0.3) < 1e-6


def test_an_aged_calibration_fades(tmp_path: Path) -> None:
    """R = r + memory·(s·age_h)²: a week after commissioning the pressure channel barely moves a wrong SoC."""
    fresh = _drive(tmp_path, ("pressure",), samples=3)
    old = _drive(tmp_path, ("pressure",), samples=3, age_h=168.0)
    assert abs(old["age_h"] - (168.0 + 3 / 3600)) < 1e-9
    r, s = PRESSURE[3], PRESSURE[4]
    assert abs(old["variance"][0] - (r + MEMORY * (s * old["age_h"]) ** 2)) < 1e-3 * old["variance"][0]
    assert abs(fresh["variance"][0] - (r + MEMORY * (s * 3 / 3600) ** 2)) < 1e-3 * r
    assert abs(fresh["steps"][0][0] - 0.6) < 0.01
    # K0·b = b²·P00 / (b²·P00 + R): R ≈ 6.1e8 Pa² against b²·P00 ≈ 3.3e7, about 5 % of the way (fresh: all of it).
    assert 0.005 < old["steps"][0][0] - 0.3 < 0.03


def test_a_spike_is_gated(tmp_path: Path) -> None:
    out = _drive(tmp_path, ("pressure",), soc0=0.6, samples=20, spike=50000, spike_at=15)
    spiked = out["steps"][15]
    assert spiked[0] == spiked[1]  # nothing applied
    assert out["gated"][0] == 1 and out["used"][0] == 19
    assert abs(out["steps"][-1][0] - 0.6) < 0.005


def test_an_absent_reading_or_a_disabled_measurement_does_nothing(tmp_path: Path) -> None:
    absent = _drive(tmp_path, ("pressure", "strain", "tof"), samples=6, absent_at=(2, 3))
    for k in (2, 3):
        step = absent["steps"][k]
        assert step[0] == step[1]
    # With no measurement enabled cell 0 (readings given) ends exactly as cell 1 (no readings), x and P alike.
    none = _drive(tmp_path, (), samples=6)
    assert all(s[0] == s[1] for s in none["steps"]) and sum(none["used"]) == 0
    assert none["steps"][-1][3] == none["cell1"][0] and none["steps"][-1][4] == none["cell1"][1]


def test_a_host_calibration_comes_back_on_the_board(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    soc = rng.uniform(0, 1, 4000)
    dT = rng.uniform(-25, 10, 4000)
    y = 101000 + 20000 * soc + 340 * dT + rng.normal(0, 50, soc.size)
    y[::500] += 40000  # spikes the robust refit leaves out
    a, b, c, r = fit_channel(y, soc, dT)
    assert abs(b - 20000) < 50 and abs(c - 340) < 2 and abs(r - 50**2) < 0.1 * 50**2
    fits = {"pressure": [[a, b, c, r]], "strain": [[1.0, 300.0, 14.0, 1.0]], "tof": [[4200.0, -60.0, 2.5, 9.0]]}
    sheet = FbgCoeffs(*(np.array([v]) for v in GRATING))
    drift = {"pressure": np.array([6.0]), "strain": np.array([0.13]), "tof": np.array([0.3])}
    cal = calibration_file(fits, sheet, {"pressure": 4.0, "strain": 1.0, "tof": 1.0}, drift, 5.0, {"test": True})
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal))
    assert cal["cells"][0]["pressure"][3] == 4.0 * r
    code = f"""
import json, sys
from engine import cellmodel
from engine.ekf import SocEkf
from engine.multisensor import MultiSensor, load
ekf = SocEkf(cellmodel.load({str(MODEL)!r}), 1, json.load(open({str(CONFIG)!r})))
ms = MultiSensor(ekf, load(sys.argv[1]), ("pressure",))
print(json.dumps([ms.predict(0, 0, s, t) for s, t in ((0.0, 0.0), (0.5, -20.0), (1.0, 10.0))]
                 + list(ms.coef[:5]) + list(ms.grating)))
"""
    board = json.loads(run_mpy(code, heap_kb=1024, args=[path]).strip().splitlines()[-1])
    host = [a + b * s + c * t for s, t in ((0.0, 0.0), (0.5, -20.0), (1.0, 10.0))]
    np.testing.assert_allclose(board[:3], host, rtol=1e-6)  # float32 coefficients
    np.testing.assert_allclose(board[3:8], [a, b, c, 4.0 * r, 6.0], rtol=1e-6)
    np.testing.assert_allclose(board[8:], GRATING, rtol=1e-7)


def test_a_bad_calibration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    _calibration(path)
    code = f"""
import json
from engine import cellmodel
from engine.ekf import SocEkf
from engine.multisensor import MultiSensor, load
ekf = SocEkf(cellmodel.load({str(MODEL)!r}), 2, json.load(open({str(CONFIG)!r})))
cal = load({str(path)!r})
for bad in ("cells", "format", "name"):
    c = dict(cal)
    if bad == "cells":
        c["cells"] = cal["cells"] * 2
    if bad == "format":
        c["format"] = "other/1"
    try:
        MultiSensor(ekf, c, ("humidity",) if bad == "name" else ())
        print("accepted", bad)
    except ValueError as e:
        print("refused", bad, e)
"""
    lines = run_mpy(code, heap_kb=1024).strip().splitlines()
    assert [line.split()[:2] for line in lines] == [["refused", "cells"], ["refused", "format"], ["refused", "name"]]


STREAM_RECORDS = [(0, -1500, [3700, ABSENT], [251, 249], [120000, ABSENT, 4100, 4101, 1550300, 1550301, 1549900,
                                                          ABSENT]),
                  (1000, ABSENT, [3690, 3695], [ABSENT, 250], [ABSENT, 120500, 4090, ABSENT, 1550290, 1550311,
                                                                1549901, 1549899])]
WRITE = """
import sys
from soxcommon.frame import ABSENT
from soxcommon.stream import SampleWriter
with open(sys.argv[1], "wb") as f:
    w = SampleWriter(f, 2, int(sys.argv[2]))
    for rec in RECORDS:
        w.write(*rec)
"""
READ = """
import sys, json
from soxcommon.stream import SampleReader
with open(sys.argv[1], "rb") as f:
    r = SampleReader(f)
    while r.read():
        print(json.dumps([r.channels, r.t_ms, r.current_mA, list(r.volts_mV), list(r.temps_dC), list(r.extra)]))
"""


@pytest.mark.parametrize("channels", [ALL_CHANNELS, 0b0101])
def test_stream_extra_channels_round_trip_both_interpreters(channels: int, tmp_path: Path) -> None:
    path = tmp_path / "s.sxs"
    run_mpy(WRITE.replace("RECORDS", repr(STREAM_RECORDS)), args=[path, channels])
    assert path.read_bytes()[:8] == b"SXS2\x02" + bytes([channels, 0, 0])
    want = []
    for t, i, v, tc, extra in STREAM_RECORDS:
        kept = [x if (channels >> (k // 2)) & 1 else ABSENT for k, x in enumerate(extra)]
        want.append([channels, t, i, v, tc, kept])
    for run in (run_mpy, run_host):
        assert [json.loads(line) for line in run(READ, args=[path]).splitlines()] == want
    with open(path, "rb") as f:
        reader = SampleReader(f)
        assert reader.read() and list(reader.extra) == want[0][5]
    assert len(EXTRA_CHANNELS) == 4


def test_stream_versions_old_and_unknown(tmp_path: Path) -> None:
    old = tmp_path / "old.sxs"
    with open(old, "wb") as f:
        SampleWriter(f, 1).write(0, 5, [3700], [250])
    assert old.read_bytes()[:8] == b"SXS1\x01\x00\x00\x00"
    with open(old, "rb") as f:
        reader = SampleReader(f)
        assert reader.channels == 0 and reader.read() and list(reader.extra) == [ABSENT] * 4
    future = tmp_path / "future.sxs"
    future.write_bytes(b"SXS3\x01\x01\x00\x00")
    with open(future, "rb") as f, pytest.raises(ValueError, match="SXS3.*not supported"):
        SampleReader(f)
