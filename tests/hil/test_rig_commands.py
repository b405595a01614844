"""Commands from the board to the rig's outputs over the framed protocol on a raw pty: the board's HAL
under MicroPython sets the contactor, bleed resistors, charger limits and the actuator port, and the
simulated module's truth shows what they did."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from hil.link import PtyLink
from hil.module import MinimalModule
from hil.physics.params import load
from hil.profiles import ConstantCurrent
from hil.rig import Rig, RigModule
from hil.scenario import ROOT
from hil.simulated import SimulatedModule
from soxcommon import frame
from tests.hil.test_rig import read_some
from tests.mpy import run_mpy

CELL = ROOT / "models" / "cells" / "panasonic_ncr18650pf_25C.json"
N_CELLS = 4


@contextmanager
def rig_on_pty(module: RigModule) -> Iterator[tuple[Rig, PtyLink]]:
    link = PtyLink()
    rig = Rig(link, module, period_ms=1000)
    rig.start()
    try:
        yield rig, link
    finally:
        rig.stop()
        link.close()


def discharging_module() -> SimulatedModule:
    return SimulatedModule(load(CELL), N_CELLS, [ConstantCurrent(-1.0, 3600)], seed=3, initial_soc=0.8)


def board(port: str, body: str) -> list[list[int]]:
    """Run `body` under MicroPython with `hal` (HilHal on the pty) and `s` (a Sample); its `out(...)`
    lines come back as lists of ints."""
    code = f"""
import json
from drivers.hil_hal import HilHal
from engine.sample import Sample
from soxcommon import frame
hal = HilHal({port!r}, {N_CELLS}, timeout_ms=500, retries=3)
s = Sample({N_CELLS})
def out(*values):
    print(json.dumps(list(values)))
""" + body
    return [json.loads(line) for line in run_mpy(code, timeout=60).splitlines()]


def test_contactor_opens_and_current_stops() -> None:
    module = discharging_module()
    with rig_on_pty(module) as (rig, link):
        lines = board(link.slave_path, """
hal.read(s)
out(s.flags, s.current_mA)
out(hal.command(frame.C_CONTACTOR, frame.CONTACTOR_OPEN))
for _ in range(3):
    hal.read(s)
out(s.flags, s.current_mA)
""")
    (flags_closed, current_closed_mA), [status], (flags_open, _) = lines
    assert flags_closed & frame.F_CONTACTOR_MASK == frame.CONTACTOR_CLOSED
    assert abs(current_closed_mA + 2997) < 100  # 1C discharge of a 2.997 Ah cell, through the sensor
    assert status == frame.S_OK and flags_open & frame.F_CONTACTOR_MASK == frame.CONTACTOR_OPEN
    assert module.truth[0].current_A < -2.9
    assert [row.current_A for row in module.truth[1:]] == [0.0, 0.0, 0.0]
    assert rig.counters.commands == 1 and rig.counters.samples == 4


def test_bleed_resistor_drains_only_its_cell_and_limits_hold() -> None:
    module = discharging_module()
    with rig_on_pty(module) as (_, link):
        lines = board(link.slave_path, """
hal.read(s)
out(hal.command(frame.C_CONTACTOR, frame.CONTACTOR_OPEN), hal.command(frame.C_BALANCE, 0b0010))
for _ in range(600):
    hal.read(s)
out(hal.command(frame.C_BALANCE, 0), hal.command(frame.C_CONTACTOR, frame.CONTACTOR_CLOSED),
    hal.command(frame.C_CHARGER, 20000, 1000, 1500))
hal.read(s)
hal.read(s)
out(s.flags)
""")
    assert lines[0] == [frame.S_OK, frame.S_OK] and lines[1] == [frame.S_OK] * 3
    first, last = module.truth[1], module.truth[600]  # the 600 bleeding steps
    drained = first.soc - last.soc
    capacity_As = module.cells.capacity_Ah * 3600
    expected = 599 * first.voltage_V[1] / module.plant.params.bleed_ohm / capacity_As[1]
    assert abs(drained[1] - expected) < 0.05 * expected
    assert np.all(np.abs(drained[[0, 2, 3]]) < 0.02 * expected)  # self-discharge only
    assert module.truth[-1].current_A == -1.5  # the 1C demand held at the 1.5 A discharge limit
    assert lines[2][0] & frame.F_CURRENT_LIMITED


def test_actuator_refuses_while_dosing_and_bad_commands_are_named() -> None:
    module = discharging_module()
    with rig_on_pty(module) as (_, link):
        lines = board(link.slave_path, """
hal.read(s)
out(hal.command(frame.C_ACTUATOR, 2, 3000), hal.command(frame.C_ACTUATOR, 1, 100),
    hal.command(frame.C_ACTUATOR, 9, 100), hal.command(99))
hal.read(s)
out(s.flags)
for _ in range(3):
    hal.read(s)
out(s.flags, hal.command(frame.C_ACTUATOR, 1, 100))
""")
    assert lines[0] == [frame.S_OK, frame.S_REFUSED, frame.S_BAD_ARGS, frame.S_UNSUPPORTED]
    assert lines[1][0] & frame.F_DOSING
    assert not lines[2][0] & frame.F_DOSING and lines[2][1] == frame.S_OK
    assert [(e.kind, e.cell, e.value) for e in module.plant.events] == [("dose", 2, 3.0), ("dose", 1, 0.1)]


def test_a_repeated_command_is_acked_from_the_cache_not_applied_twice() -> None:
    module = discharging_module()
    with rig_on_pty(module) as (rig, link):
        port = os.open(link.slave_path, os.O_RDWR | os.O_NOCTTY)
        try:
            tx = frame.Codec(frame.COMMAND_PAYLOAD_BYTES)
            request = bytes(tx.buf[:frame.encode_command(tx, 41, frame.C_ACTUATOR, 0, 500)])
            acks = []
            for _ in range(2):  # the board lost the first ack and asks again with the same number
                os.write(port, request)
                rx = frame.Codec(frame.ACK_PAYLOAD_BYTES)
                assert any(rx.feed(b) for _ in range(5) for b in read_some(port)), "no ack"
                acks.append((rx.type, rx.seq, rx.buf[frame.HEADER_BYTES], rx.buf[frame.HEADER_BYTES + 1]))
        finally:
            os.close(port)
    assert acks == [(frame.T_COMMAND_ACK, 41, frame.C_ACTUATOR, frame.S_OK)] * 2
    assert len(module.plant.events) == 1 and rig.counters.repeats == 1


def test_a_module_without_outputs_answers_unsupported() -> None:
    with rig_on_pty(MinimalModule(N_CELLS)) as (_, link):
        lines = board(link.slave_path, """
out(hal.command(frame.C_CONTACTOR, frame.CONTACTOR_OPEN))
hal.read(s)
out(s.flags)
""")
    assert lines == [[frame.S_UNSUPPORTED], [0]]
