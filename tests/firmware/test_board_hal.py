"""The board HAL under MicroPython: BQ76952 decode over a fake I2C bus, the front-end's sensor
channels over a fake UART, retries, link errors, and no allocation per read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.mpy import run_mpy

FAKES = Path(__file__).resolve().parents[1] / "fakes"

PRELUDE = f"""
import sys, json, time, micropython
sys.path.insert(0, {str(FAKES)!r})
from bq76952_fake import FakeBq76952Bus
from frontend_fake import FakeFrontEnd, FakePoller
from drivers.board_hal import BoardHal, LinkError
from engine.sample import Sample

def rig(n, **kw):
    bus = FakeBq76952Bus()
    fe = FakeFrontEnd(n, t_ms=123456)
    for i in range(1, 17):
        bus.set_cell_mV(i, 3000 + 10 * i)
    for c in range(n):
        fe.set_cell(c, 100000 + c, 20000 + c, 5000 + c, 1550000 + c)
    kw.setdefault("timeout_ms", 20)
    hal = BoardHal(bus, fe, n, poller=FakePoller(fe), **kw)
    return bus, fe, hal, Sample(n)

def out(**kw):
    print(json.dumps(kw))
"""


def mpy(body: str) -> dict:
    stdout = run_mpy(PRELUDE + body)
    return json.loads(stdout.strip().splitlines()[-1])


def test_voltages_temperatures_current_and_sensor_channels_decode() -> None:
    r = mpy("""
bus, fe, hal, s = rig(16)
bus.set_current_userA(2500)
bus.set_temp_dK("TS1", 2982)   # 298.2 K = 25.0 degC
bus.set_temp_dK("TS3", 2632)   # 263.2 K = -10.0 degC
bus.set_cell_mV(7, -5)        # signed: a slightly negative input
bus.log = []
before = time.ticks_ms()
hal.read(s)
after = time.ticks_ms()
out(cells=list(s.cells), current=s.current_mA, t=time.ticks_diff(s.t_ms, before),
    span=time.ticks_diff(after, before), log=bus.log, map=list(hal.thermistor_of_cell))
""")
    cells = [r["cells"][c * 6:(c + 1) * 6] for c in range(16)]
    for c, (v, t, p, f, a, w) in enumerate(cells):
        assert v == (-5 if c == 6 else 3000 + 10 * (c + 1))
        assert t == (250 if c < 8 else -100)
        # Front-end columns taken, its voltage/temperature columns (-1, -2) ignored.
        assert (p, f, a, w) == (100000 + c, 20000 + c, 5000 + c, 1550000 + c)
    assert r["current"] == 2500  # BQ76952 charge current is positive, as the project's convention
    assert 0 <= r["t"] <= r["span"]  # board ticks, not the front-end's t_ms (123456)
    # Two I2C transactions: cells..CC2 current as one 40-byte block, then TS1..TS3 as one span.
    assert r["log"] == [[0x14, 40], [0x70, 6]]
    assert r["map"] == ["TS1"] * 8 + ["TS3"] * 8


@pytest.mark.parametrize(("unit_uA", "raw", "mA"), [
    (1000, -1234, -1234),  # discharge: negative
    (1000, 32767, 32767),
    (1000, -32768, -32768),
    (10000, -150, -1500),
    (100000, 300, 30000),
    (100, 15, 2),  # 1.5 mA rounds half away from zero
    (100, -15, -2),
    (100, 14, 1),
    (100, -14, -1),
])
def test_current_sign_and_user_amps(unit_uA: int, raw: int, mA: int) -> None:
    r = mpy(f"""
bus, fe, hal, s = rig(2, current_unit_uA={unit_uA})
bus.set_current_userA({raw})
hal.read(s)
out(current=s.current_mA)
""")
    assert r["current"] == mA


def test_thermistor_tables_and_cell_inputs() -> None:
    r = mpy("""
res = {}
bus, fe, hal, s = rig(5, thermistors="TS1, ts2,TS3")
bus.set_temp_dK("TS1", 2732); bus.set_temp_dK("TS2", 3032); bus.set_temp_dK("TS3", 2733)
hal.read(s)
res["groups"] = [list(hal.thermistor_of_cell), [s.cell(c, 1) for c in range(5)]]
bus, fe, hal, s = rig(3, thermistors=["INT", "DDSG", "TS2"])
bus.set_temp_dK("INT", 3000); bus.set_temp_dK("DDSG", 2800); bus.set_temp_dK("TS2", 2900)
bus.log = []
hal.read(s)
res["per_cell"] = [[s.cell(c, 1) for c in range(3)], bus.log[1]]
bus, fe, hal, s = rig(10, vc_inputs="1,2,3,4,5,6,7,8,9,16")
hal.read(s)
res["inputs"] = [s.cell(c, 0) for c in range(10)]
errors = []
for kw in ({"thermistors": "TS4"}, {"thermistors": "TS1,TS1,TS1"}, {"vc_inputs": "1,1"},
           {"vc_inputs": "1,17"}, {"current_unit_uA": 500}):
    try:
        rig(2, **kw)
        errors.append(None)
    except ValueError:
        errors.append("ValueError")
try:
    rig(17)
except ValueError:
    errors.append("ValueError")
res["errors"] = errors
out(**res)
""")
    assert r["groups"] == [["TS1", "TS1", "TS2", "TS2", "TS3"], [0, 0, 300, 300, 1]]
    assert r["per_cell"] == [[268, 68, 168], [0x68, 0x7C - 0x68]]
    assert r["inputs"] == [3000 + 10 * i for i in range(1, 10)] + [3160]
    assert r["errors"] == ["ValueError"] * 6


def test_corrupt_reply_and_nack_are_retried_with_the_same_request() -> None:
    r = mpy("""
bus, fe, hal, s = rig(4)
fe.corrupt = 1
hal.read(s)
a = [hal.link.crc_errors, hal.link.timeouts, hal.link.nacks, fe.requests, fe.repeats, s.cell(3, 5)]
fe.nacks = 1
hal.read(s)
b = [hal.link.crc_errors, hal.link.timeouts, hal.link.nacks, fe.requests, fe.repeats, s.cell(3, 5)]
out(a=a, b=b)
""")
    assert r["a"] == [1, 1, 0, 2, 1, 1550003]  # CRC error -> timeout -> same request again
    assert r["b"] == [1, 1, 1, 4, 2, 1550003]  # NACK -> same request again at once


def test_link_error_after_silence_and_errors_leave_the_sample_alone() -> None:
    r = mpy("""
bus, fe, hal, s = rig(2, retries=3)
s.current_mA = 42
res = {"settings": [hal.link.timeout_ms, hal.link.retries]}
fe.silent = True
t0 = time.ticks_ms()
try:
    hal.read(s)
    res["silent"] = None
except LinkError as e:
    res["silent"] = [isinstance(e, OSError), hal.link.timeouts, fe.requests, fe.repeats]
res["waited"] = time.ticks_diff(time.ticks_ms(), t0)
fe.silent = False
fe.reported_cells = 3
try:
    hal.read(s)
except LinkError:
    res["cells"] = "LinkError"
fe.reported_cells = 2
bus.present = False
try:
    hal.read(s)
except OSError as e:
    res["i2c"] = [type(e).__name__, e.errno]
res["untouched"] = [s.current_mA, list(s.cells)]
bus.present = True
hal.read(s)
hal.close()
res["after"] = [s.current_mA, s.cell(1, 0), fe.closed]
out(**res)
""")
    assert r["settings"] == [20, 3]
    assert r["silent"] == [True, 3, 3, 2]
    assert r["waited"] >= 3 * 20
    assert r["cells"] == "LinkError"
    assert r["i2c"] == ["OSError", 19]  # ENODEV
    assert r["untouched"] == [42, [0] * 12]
    assert r["after"] == [0, 3020, True]


def test_read_allocates_nothing_after_warm_up() -> None:
    r = mpy("""
bus, fe, hal, s = rig(16, current_unit_uA=100)
bus.set_current_userA(-31000)
hal.read(s)  # warm-up: the codec's CRC views are made on first use

def reads(n):
    for i in range(n):
        fe.t_ms = i
        bus.set_current_userA(-i)
        hal.read(s)
    fe.corrupt = 1  # the retry path too
    hal.read(s)

def control():
    return bytearray(16)  # negative control: the lock must catch an allocation

res = {"reads": None, "control": None}
micropython.heap_lock()
try:
    reads(20)
    res["reads"] = "ok"
except MemoryError:
    res["reads"] = "MemoryError"
try:
    control()
    res["control"] = "allocated"
except MemoryError:
    res["control"] = "MemoryError"
micropython.heap_unlock()
res["state"] = [s.current_mA, hal.link.crc_errors, hal.link.timeouts, fe.requests]
out(**res)
""")
    assert r["control"] == "MemoryError"
    assert r["reads"] == "ok"
    assert r["state"] == [-2, 1, 1, 23]  # last raw -19 x 0.1 mA = -1.9 mA -> -2
