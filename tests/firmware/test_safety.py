"""State of safety (firmware/engine/safety.py) under MicroPython and CPython: a single spike never trips, a
sustained fault trips after exactly its debounce, hysteresis and release time, escalation, absent readings,
dT/dt against a ramp and the rig's sensor noise, rig faults caught and a fault-free run without false trips,
no allocation per sample, and the limits file (models/board/safety.json)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hil.faults import KINDS, Fault
from hil.physics.params import load
from hil.profiles import ConstantCurrent, ConstantCurrentConstantVoltage, Segment, Table, us06
from hil.sensors.models import ABSENT as RIG_ABSENT
from hil.simulated import SimulatedModule
from tests.mpy import FIRMWARE, REPO, run_host, run_mpy

sys.path.insert(0, str(FIRMWARE))
from engine import safety

LIMITS_FILE = REPO / "models" / "board" / "safety.json"
LIMITS = json.loads(LIMITS_FILE.read_text())
CHECKS = LIMITS["checks"]
CELL = load(REPO / "models" / "cells" / "panasonic_ncr18650pf_25C.json")
ABSENT = -(1 << 30)  # frame.ABSENT
FIELDS = 6  # frame.CELL_FIELDS
CHECK_IDS = {name: i for i, name in enumerate(CHECKS)}  # the file lists them in check-id order (asserted below)
LOW = {"cell_voltage_low_mV", "temp_low_dC", "charge_temp_low_dC"}

# Each snippet gets the limits file as argv[1], the test's data as JSON in the file argv[2] (DATA; the unix port
# dies on an argument of 256 characters or more) and feeds the monitor through feed(); runs under both interpreters.
PRELUDE = """
import sys, json
from array import array
from engine.safety import *
from soxcommon.wire import reason_parts
from engine.sample import Sample
from soxcommon.frame import ABSENT, CELL_FIELDS
LIMITS = load_limits(sys.argv[1])
DATA = json.load(open(sys.argv[2]))
NORMAL = {"v": 3700, "T": 250, "p": 110000, "i": -1000, "gas": 420}
def feed(m, s, gas_buf, t_ms, **kw):
    # every cell gets the normal reading, or kw[name] (a value, or a list per cell)
    s.t_ms = t_ms
    s.current_mA = kw.get("i", NORMAL["i"])
    for c in range(s.n_cells):
        for name, k in (("v", 0), ("T", 1), ("p", 2)):
            x = kw.get(name, NORMAL[name])
            s.cells[c * CELL_FIELDS + k] = x[c] if isinstance(x, list) else x
        x = kw.get("gas", NORMAL["gas"])
        gas_buf[c] = x[c] if isinstance(x, list) else x
    m.update(s, gas_buf)
def setup(n=1, period=1000):
    return SafetyMonitor(n, period, LIMITS), Sample(n), array("i", [0] * n)
"""

Runner = Callable[..., Any]


@pytest.fixture(params=["micropython", "cpython"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Runner:
    """Run a snippet (PRELUDE + body, which prints one JSON line last) under one interpreter, with `data` as DATA."""
    runner = run_mpy if request.param == "micropython" else run_host

    def go(body: str, data: Any = None) -> Any:
        path = tmp_path / "data.json"
        path.write_text(json.dumps(data))
        out = runner(PRELUDE + body, args=[LIMITS_FILE, path])
        return json.loads(out.strip().splitlines()[-1])

    return go


def beyond(name: str, level: str = "critical", margin: int = 1) -> int:
    """A value past `level`'s threshold of check `name` by `margin`."""
    return CHECKS[name][level] - margin if name in LOW else CHECKS[name][level] + margin


# Per check: the feed() keyword that drives it, the cell reading that puts it past critical, and extra keywords.
def drive(name: str) -> dict[str, int]:
    value = beyond(name)
    return {
        "cell_voltage_high_mV": {"v": value},
        "cell_voltage_low_mV": {"v": value},
        "temp_high_dC": {"T": value},
        "temp_low_dC": {"T": value},
        "charge_temp_high_dC": {"T": value, "i": 1000},
        "charge_temp_low_dC": {"T": value, "i": 1000},
        "pressure_rise_Pa": {"p": 110000 + value},
        "gas_ppm": {"gas": value},
        "charge_current_mA": {"i": value},
        "discharge_current_mA": {"i": -value},
    }[name]


STEP_CHECKS = [n for n in CHECKS if n != "temp_rate_dC_per_min"]  # driven by one reading (dT/dt: own tests)


# --- debounce ------------------------------------------------------------------------------------


def test_a_single_sample_spike_never_trips(run: Runner) -> None:
    """Every check gets one sample far past critical between normal ones, at sample periods shorter and longer
    than its debounce: nothing ever leaves ok (temperature spikes also hit dT/dt)."""
    r = run("""
trace = {}
for name, kw in DATA:
    for period in (100, 1000, 60000):
        m, s, gas = setup(2, period)
        levels = []
        for k in range(40):
            feed(m, s, gas, k * period, **(kw if k == 30 else {}))
            levels.append(m.level)
        trace["%s/%d" % (name, period)] = max(levels)
print(json.dumps(trace))
""", [[n, drive(n)] for n in STEP_CHECKS])
    assert len(r) == 3 * len(STEP_CHECKS) and set(r.values()) == {0}


@pytest.mark.parametrize("period_ms", [1000, 300])
def test_a_sustained_fault_trips_after_exactly_the_debounce(run: Runner, period_ms: int) -> None:
    """From its first sample, a fault past critical trips every check straight to critical at the first sample
    whose time is debounce_ms or more after it, in the cell it is in."""
    r = run("""
period = DATA["period"]
trips = {}
for name, kw in DATA["checks"]:
    m, s, gas = setup(3, period)
    cell_kw = {}
    for key, value in kw.items():
        cell_kw[key] = value if key == "i" else [NORMAL[key], value, NORMAL[key]]  # in cell 1 only
    trip = None
    for k in range(400):
        feed(m, s, gas, 1000000 + k * period, **(cell_kw if k >= 50 else {}))
        if m.level and trip is None:
            out = array("i", [0] * (N_CHECKS * 3))
            n = m.findings(out)
            trip = [k, m.level, [list(reason_parts(c)) for c in out[:n]]]
    trips[name] = trip
print(json.dumps(trips))
""", {"checks": [[n, drive(n)] for n in STEP_CHECKS], "period": period_ms})
    for name in STEP_CHECKS:
        debounce = CHECKS[name]["debounce_ms"]
        cell = 0 if name.endswith("current_mA") else 1
        index, level, found = r[name]
        assert (index, level) == (50 + math.ceil(debounce / period_ms), 3), name
        assert [CHECK_IDS[name], cell, 3] in found and {f[1] for f in found} == {cell}, name
        if name.startswith("charge_temp"):  # 55 degC / -0.1 degC are past the any-time warn thresholds too
            assert len(found) <= 2
        else:
            assert len(found) == 1


def test_levels_escalate_warn_alarm_critical_each_after_its_debounce(run: Runner) -> None:
    """A voltage ramp of 1 mV/s: each level is raised debounce_ms after the ramp first passes its threshold."""
    r = run("""
m, s, gas = setup()
first = [None, None, None, None]
for k in range(200):
    feed(m, s, gas, k * 1000, v=4200 + k)
    if first[m.level] is None:
        first[m.level] = k
print(json.dumps(first))
""")
    c = CHECKS["cell_voltage_high_mV"]
    seconds = c["debounce_ms"] // 1000
    assert r == [0] + [c[level] - 4200 + 1 + seconds for level in ("warn", "alarm", "critical")]


# --- hysteresis and release ------------------------------------------------------------------------


def test_hysteresis_needs_the_margin_and_the_release_time(run: Runner) -> None:
    c = CHECKS["cell_voltage_high_mV"]
    warn, hyst, release_s = c["warn"], c["hysteresis"], c["release_ms"] // 1000
    plan = ([warn + 5] * 10  # warn raised
            + [warn - 1] * 100  # just below the threshold, inside the margin: held
            + [warn - hyst] * (release_s - 2) + [warn - hyst + 1]  # back in the margin before the release time
            + [warn - hyst] * (release_s + 5))  # clears after exactly the release time
    r = run("""
m, s, gas = setup()
levels = []
for k, v in enumerate(DATA):
    feed(m, s, gas, k * 1000, v=v)
    levels.append(m.level)
print(json.dumps(levels))
""", plan)
    clear_from = 10 + 100 + release_s - 1  # first sample of the final stretch inside the margin
    assert r[:clear_from + release_s] == [0, 0] + [1] * (clear_from + release_s - 2)
    assert r[clear_from + release_s:] == [0] * 5


def test_a_level_drops_to_the_highest_level_the_value_still_holds(run: Runner) -> None:
    """Critical, then a value between the alarm and critical thresholds: after the release time the level is
    alarm, not ok; once the value is normal it drops to ok after one more release time."""
    c = CHECKS["cell_voltage_high_mV"]
    release_s = c["release_ms"] // 1000
    r = run("""
plan = DATA
m, s, gas = setup()
levels = []
for k, v in enumerate(plan):
    feed(m, s, gas, k * 1000, v=v)
    levels.append(m.level)
print(json.dumps(levels))
""", [c["critical"] + 10] * 10 + [c["alarm"] + 5] * (release_s + 5) + [4000] * (release_s + 5))
    assert r[9] == 3 and r[10 + release_s - 1] == 3 and r[10 + release_s] == 2
    assert r[10 + release_s + 4] == 2 and r[-1] == 0 and r.count(1) == 0


# --- absent readings ---------------------------------------------------------------------------------


def test_absent_readings_neither_trip_nor_clear(run: Runner) -> None:
    """Absent readings from the start: ok. A finding stays through a long dropout (far longer than the release
    time), and the debounce clock stands still over absent samples: a sensor present every other sample trips
    once its present readings add up to the debounce."""
    c = CHECKS["cell_voltage_high_mV"]
    r = run("""
crit = DATA
m, s, gas = setup()
held = []
for k in range(100):
    feed(m, s, gas, k * 1000, v=ABSENT, T=ABSENT, p=ABSENT, i=ABSENT, gas=ABSENT)
    held.append(m.level)
for k in range(100, 110):
    feed(m, s, gas, k * 1000, v=crit)
for k in range(110, 400):
    feed(m, s, gas, k * 1000, v=ABSENT)
    held.append(m.level - 3)
m2, s2, gas2 = setup()
flaky = None
for k in range(100):
    feed(m2, s2, gas2, k * 1000, v=crit if k % 2 == 0 else ABSENT)
    if m2.level and flaky is None:
        flaky = k
print(json.dumps({"held": max(held) - min(held), "flaky": flaky}))
""", c["critical"] + 1)
    # Present at k = 0, 2, 4...: each present reading counts the 1 s since the sample before it.
    assert r == {"held": 0, "flaky": 2 * c["debounce_ms"] // 1000}


def test_charge_temperature_checks_only_while_charging(run: Runner) -> None:
    """4 degC: an alarm while charging (pack current above charge_detect_mA), none while discharging, and none
    while the current is absent; the finding releases once charging stops."""
    release_s = CHECKS["charge_temp_low_dC"]["release_ms"] // 1000
    r = run("""
m, s, gas = setup()
levels = []
for k in range(300):
    i = -2000 if k < 60 else (ABSENT if k < 100 else (2000 if k < 200 else 0))
    feed(m, s, gas, k * 1000, T=40, i=i)
    levels.append(m.level_of(T_CHARGE_LOW))
print(json.dumps(levels))
""")
    assert set(r[:103]) == {0} and r[110:200] == [2] * 90
    assert r[200 + release_s - 1] == 2 and r[200 + release_s:] == [0] * (100 - release_s)


# --- dT/dt ------------------------------------------------------------------------------------------


def ntc(seconds: int, seed: int, ramp_from_s: int | None = None, ramp_K_per_min: float = 0.0) -> list[int]:
    """Readings (dC) of an NTC at 25 degC with the rig's worst noise (0.08 K rms, 0.1 K steps, a 5 s lag) and
    spikes of 30 K at the rig's highest rate, optionally warming at ramp_K_per_min from ramp_from_s on."""
    rng = np.random.default_rng(seed)
    t = np.arange(seconds, dtype=float)
    start_s = seconds if ramp_from_s is None else ramp_from_s
    true_C = 25.0 + np.clip(t - start_s, 0, None) * ramp_K_per_min / 60
    lagged = np.empty(seconds)
    x = true_C[0]
    for k in range(seconds):  # NTC lag, tau 5 s
        x += (true_C[k] - x) * (1 - math.exp(-1 / 5.0))
        lagged[k] = x
    reading = lagged + rng.normal(0, 0.08, seconds)
    spikes = rng.random(seconds) < 1e-4
    spikes[seconds // 3] = True  # at least one
    reading[spikes] += 30 * rng.choice([-1, 1], int(spikes.sum()))
    return [int(v) for v in np.round(reading * 10)]


def test_dtdt_trips_on_a_ramp_and_not_on_the_rig_temperature_noise(run: Runner) -> None:
    c = CHECKS["temp_rate_dC_per_min"]
    noise = ntc(7200, seed=1)  # two hours
    ramp = ntc(600, seed=2, ramp_from_s=100, ramp_K_per_min=30)  # past critical (200 dC/min)
    r = run("""
series = DATA
out = {}
for key, temps in series.items():
    m, s, gas = setup()
    first = [None, None, None, None]
    peak = 0
    for k in range(len(temps)):
        feed(m, s, gas, k * 1000, T=temps[k], i=0)
        rate = m.level_of(T_RATE)
        if first[rate] is None:
            first[rate] = k
        peak = max(peak, m.level)
    out[key] = [first, peak]
print(json.dumps(out))
""", {"noise": noise, "ramp": ramp})
    assert r["noise"] == [[0, None, None, None], 0]
    first, peak = r["ramp"]
    # 30 K/min: the 30 s window's rate reaches a threshold x after x / 300 * 30 s (plus the 5 s lag), then the
    # debounce; each level within a few seconds of that.
    window_s = LIMITS["temp_rate_window_ms"] / 1000
    for level, key in ((1, "warn"), (2, "alarm"), (3, "critical")):
        expected = 100 + c[key] / 300 * window_s + c["debounce_ms"] / 1000
        assert expected <= first[level] <= expected + 8, (key, first)
    assert peak == 3


# --- rig scenarios -------------------------------------------------------------------------------------


def fault(kind: str, at_s: float, cell: int | None = None, **value: float) -> Fault:
    return Fault(0, kind, at_s, math.inf, cell, None, {**KINDS[kind][1], **value})


def record(path: Path, module: SimulatedModule, seconds: int) -> np.ndarray:
    """Step the module at 1 Hz and write each sample as int32 [t_ms, current_mA, cells x 6, gas x cells];
    returns them as rows."""
    rows = []
    for k in range(1, seconds + 1):
        module.step(1.0)
        r = module._readings
        assert r is not None
        cells = np.array([[RIG_ABSENT if v is None else v for v in row] for row in r.wire_rows()])
        gas = np.where(r.present["gas_ppm"], r.gas_ppm, RIG_ABSENT)
        rows.append(np.concatenate([[k * 1000, RIG_ABSENT if r.current_mA is None else r.current_mA],
                                    cells.ravel(), gas]))
    data = np.array(rows)
    data[data == RIG_ABSENT] = ABSENT
    assert np.all(np.abs(data) <= 1 << 30)
    data.astype("<i4").tofile(path)
    return data


REPLAY = """
path, n = DATA
m, s, gas = setup(n)
rec = array("i", [0] * (2 + (CELL_FIELDS + 1) * n))
out = array("i", [0] * (N_CHECKS * n))
changes = []
last = []
samples = 0
with open(path, "rb") as f:
    while f.readinto(rec) == len(rec) * 4:
        samples += 1
        s.t_ms = rec[0]
        s.current_mA = rec[1]
        for k in range(CELL_FIELDS * n):
            s.cells[k] = rec[2 + k]
        for c in range(n):
            gas[c] = rec[2 + CELL_FIELDS * n + c]
        m.update(s, gas)
        codes = list(out[:m.findings(out)])
        if codes != last:
            changes.append([s.t_ms // 1000, [list(reason_parts(c)) for c in codes]])
            last = codes
print(json.dumps({"samples": samples, "changes": changes}))
"""


def test_fault_free_two_hours_of_driving_and_charging_stay_ok(run: Runner, tmp_path: Path) -> None:
    """US06 drive from SoC 0.9 down to 3.0 V (65 min), 10 min rest, 1C CC-CV charge: two simulated hours of 4 cells
    with the rig's noise, dropouts and spikes; zero findings."""
    path = tmp_path / "clean.bin"
    load_: list[Segment] = [Table(us06(), stop_V=3.0), ConstantCurrent(0.0, 600),
                            ConstantCurrentConstantVoltage(1.0, 4.2)]
    module = SimulatedModule(CELL, 4, load_, seed=3, initial_soc=0.9)
    data = record(path, module, 7200)
    volts, temps = (data[:, 2 + k:2 + FIELDS * 4:FIELDS] for k in (0, 1))
    assert volts[volts != ABSENT].min() < 3050 and volts.max() > 4180  # down to 3.0 V and charged back to 4.2 V
    # The run has what a safety check must ride through: dropouts and a temperature spike of more than 5 K.
    assert np.count_nonzero(data == ABSENT) > 10
    present = (temps[1:] != ABSENT) & (temps[:-1] != ABSENT)
    assert np.abs(np.diff(temps, axis=0))[present].max() > 50
    r = run(REPLAY, [str(path), 4])
    assert r == {"samples": 7200, "changes": []}


def test_an_overcharge_is_caught_by_the_voltage_check(run: Runner, tmp_path: Path) -> None:
    path = tmp_path / "overcharge.bin"
    module = SimulatedModule(CELL, 4, [ConstantCurrent(0.0)], seed=3, initial_soc=0.95,
                             faults=[fault("overcharge", at_s=60, c_rate=1.0)])
    record(path, module, 900)
    r = run(REPLAY, [str(path), 4])
    first_s, first = r["changes"][0]
    assert first_s > 60 and {check for check, _, _ in first} == {CHECK_IDS["cell_voltage_high_mV"]}
    worst = {tuple(f[:2]): f[2] for _, found in r["changes"] for f in found}
    assert max(worst.values()) == 3  # critical before the end


def test_gas_and_pressure_rise_in_one_cell_is_caught_in_that_cell(run: Runner, tmp_path: Path) -> None:
    """Gas generated in cell 1 from 60 s on (with 1 W of side-reaction heat): the pressure check goes critical
    in cell 1 before the vent opens (about 1 MPa), then the vented gas reaches the gas sensor; no other cell."""
    path = tmp_path / "gas.bin"
    module = SimulatedModule(CELL, 4, [ConstantCurrent(-0.5)], seed=3, initial_soc=0.9,
                             faults=[fault("gas_pressure_rise", at_s=60, cell=1, rate_umol_per_s=2.0, heat_W=1.0)])
    record(path, module, 900)
    r = run(REPLAY, [str(path), 4])
    first_s, first = r["changes"][0]
    assert first_s > 60 and first == [[CHECK_IDS["pressure_rise_Pa"], 1, 1]]
    first_at: dict[tuple[int, int], int] = {}
    for t_s, found in r["changes"]:
        for check, cell, level in found:
            assert cell == 1
            first_at.setdefault((check, level), t_s)
    vent_s = 60 + 1e6 / 4.1e3  # about 4.1 kPa/s of gas in the can up to the 1 MPa vent
    assert first_at[(CHECK_IDS["pressure_rise_Pa"], 3)] < vent_s
    assert first_at[(CHECK_IDS["gas_ppm"], 3)] > vent_s


# --- allocation ----------------------------------------------------------------------------------------


def test_update_allocates_nothing_with_the_heap_locked() -> None:
    """16 cells, every check busy (faults, absent readings, gas): update() and findings() run under a locked heap
    (any allocation raises MemoryError), and without the lock the heap in use does not grow."""
    r = run_mpy(PRELUDE + """
import gc, micropython
n = 16
m, s, gas = setup(n, 100)
out = array("i", [0] * (N_CHECKS * n))
def sample(k):
    s.t_ms = k * 100
    s.current_mA = ABSENT if k % 13 == 0 else (k % 7) * 4000 - 14000
    for c in range(n):
        b = c * CELL_FIELDS
        s.cells[b] = ABSENT if (k + c) % 17 == 0 else 3000 + (k * 7 + c * 100) % 1500
        s.cells[b + 1] = ABSENT if (k + c) % 19 == 0 else -300 + (k * 3 + c * 50) % 1100
        s.cells[b + 2] = 110000 + (k % 50) * 10000
        gas[c] = ABSENT if k % 23 == 0 else 400 + (k * 37) % 20000
    m.update(s, gas)
    return m.findings(out)
for k in range(400):  # warm-up: the pressure baseline learnt, levels up and down
    sample(k)
found = 0
micropython.heap_lock()
try:
    for k in range(400, 2400):
        found += sample(k)
    try:
        [1, 2, 3]
        lock_works = False
    except MemoryError:
        lock_works = True
finally:
    micropython.heap_unlock()
gc.collect()
before = gc.mem_alloc()
for k in range(2400, 4400):  # unlocked: the heap in use does not grow either
    found += sample(k)
grew = gc.mem_alloc() - before
print(json.dumps({"lock_works": lock_works, "grew": grew, "found": found > 0}))
""", args=[LIMITS_FILE, LIMITS_FILE])
    assert json.loads(r.strip().splitlines()[-1]) == {"lock_works": True, "grew": 0, "found": True}


# --- limits file ---------------------------------------------------------------------------------------


def test_the_limits_file_is_complete_and_cited() -> None:
    assert list(CHECKS) == list(safety.CHECK_NAMES)
    parsed = safety.parse_limits(LIMITS)
    assert parsed["checks"]["cell_voltage_high_mV"]["warn"] == 4220
    for name, entry in CHECKS.items():
        assert entry["source"] and set(entry["source"]) <= set(LIMITS["sources"]), name


def edited(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    raw = json.loads(json.dumps(LIMITS))
    node = raw
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return raw


@pytest.mark.parametrize(("path", "value", "message"), [
    (("checks", "gas_ppm"), KeyError, "safety.checks.gas_ppm: missing"),
    (("checks", "smoke_ppm"), {}, "unknown check 'smoke_ppm'"),
    (("checks", "temp_high_dC", "alarm"), 500, "safety.checks.temp_high_dC: warn (550) must be below alarm (500)"),
    (("checks", "cell_voltage_low_mV", "critical"), 2600,
     "safety.checks.cell_voltage_low_mV: alarm (2500) must be above critical (2600)"),
    (("checks", "gas_ppm", "debounce_ms"), 0, "'debounce_ms' = 0 is out of range 1.."),
    (("checks", "gas_ppm", "hysteresis"), -1, "'hysteresis' = -1 is out of range"),
    (("checks", "gas_ppm", "warn"), 2000.5, "'warn' must be an integer"),
    (("checks", "gas_ppm", "warn"), True, "'warn' must be an integer"),
    (("checks", "gas_ppm", "release_ms"), KeyError, "missing required key 'release_ms'"),
    (("checks", "gas_ppm", "units"), "ppm", "unknown key 'units'"),
    (("temp_rate_window_ms",), KeyError, "missing required key 'temp_rate_window_ms'"),
    (("pressure_baseline_samples",), 65, "'pressure_baseline_samples' = 65 is out of range 0..64"),
    (("limits",), {}, "unknown key 'limits'"),
])
def test_a_bad_limits_file_is_refused_with_a_clear_error(path: tuple[str, ...], value: Any, message: str) -> None:
    with pytest.raises(safety.LimitsError) as err:
        safety.parse_limits(edited(path, value))
    assert message in str(err.value)


def test_absolute_pressure_mode_and_the_window_bound(run: Runner) -> None:
    """pressure_baseline_samples 0: thresholds on absolute pressure from the first sample; a dT/dt window of
    more than 600 samples is refused."""
    r = run("""
LIMITS["pressure_baseline_samples"] = 0
m, s, gas = setup()
levels = []
for k in range(10):
    feed(m, s, gas, k * 1000, p=500000)
    levels.append(m.level_of(P_RISE))
try:
    SafetyMonitor(1, 10, LIMITS)
    refused = ""
except LimitsError as e:
    refused = str(e)
print(json.dumps({"levels": levels, "refused": refused}))
""")
    assert r["levels"] == [0, 0, 0, 3, 3, 3, 3, 3, 3, 3]  # 500 kPa absolute: past critical (400 kPa) after 3 s
    assert "3000 samples, at most 600" in r["refused"]
