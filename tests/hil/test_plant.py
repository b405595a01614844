"""The rig's outputs: contactor with precharge, current and voltage limits, bleed resistors, actuator."""

from __future__ import annotations

import math

import numpy as np

from hil.plant import Plant, PlantParams
from soxcommon import frame

PACK_V = 58.0
R_PACK_OHM = 0.3


def test_open_contactor_carries_no_current_and_the_link_decays() -> None:
    plant = Plant(16, bus_V=PACK_V)
    assert plant.command(frame.C_CONTACTOR, frame.CONTACTOR_OPEN, 0, 0, 0.0, PACK_V) == frame.S_OK
    assert plant.pack_current_A(-30.0, PACK_V, R_PACK_OHM, 1.0) == 0.0
    tau_s = PlantParams().bleeder_ohm * PlantParams().dc_link_F
    assert math.isclose(plant.bus_V, PACK_V * math.exp(-1.0 / tau_s))
    assert plant.flags(0.0) & frame.F_CONTACTOR_MASK == frame.CONTACTOR_OPEN


def test_precharge_charges_the_link_then_closing_is_clean() -> None:
    p = PlantParams()
    plant = Plant(16, contactor=frame.CONTACTOR_OPEN)
    plant.command(frame.C_CONTACTOR, frame.CONTACTOR_PRECHARGE, 0, 0, 0.0, PACK_V)
    dt_s = 0.01
    current_A = plant.pack_current_A(-30.0, PACK_V, R_PACK_OHM, dt_s)  # the load is not connected yet
    charged_V = PACK_V * (1 - math.exp(-dt_s / (p.precharge_ohm * p.dc_link_F)))
    assert math.isclose(plant.bus_V, charged_V)
    assert math.isclose(current_A, -p.dc_link_F * charged_V / dt_s)  # the capacitor's charge, from the pack
    for _ in range(100):
        plant.pack_current_A(-30.0, PACK_V, R_PACK_OHM, dt_s)
    plant.command(frame.C_CONTACTOR, frame.CONTACTOR_CLOSED, 0, 0, 1.0, PACK_V)
    assert plant.events == []
    assert plant.pack_current_A(-30.0, PACK_V, R_PACK_OHM, 1.0) == -30.0


def test_closing_without_precharge_and_breaking_under_load_are_recorded() -> None:
    plant = Plant(16, contactor=frame.CONTACTOR_OPEN)
    plant.command(frame.C_CONTACTOR, frame.CONTACTOR_CLOSED, 0, 0, 5.0, PACK_V)
    assert [(e.kind, e.t_s, e.value) for e in plant.events] == [("hot_close", 5.0, PACK_V)]
    plant.pack_current_A(-150.0, PACK_V, R_PACK_OHM, 1.0)
    plant.command(frame.C_CONTACTOR, frame.CONTACTOR_OPEN, 0, 0, 6.0, PACK_V)
    assert [(e.kind, e.value) for e in plant.events[1:]] == [("break_under_load", 150.0)]


def test_current_limits_clip_the_demand_and_are_flagged() -> None:
    plant = Plant(16)
    assert plant.command(frame.C_CHARGER, 70000, 2000, 10000, 0.0, PACK_V) == frame.S_OK
    assert plant.pack_current_A(-25.0, PACK_V, R_PACK_OHM, 1.0) == -10.0
    assert plant.flags(0.0) & frame.F_CURRENT_LIMITED
    assert plant.pack_current_A(5.0, PACK_V, R_PACK_OHM, 1.0) == 2.0
    assert plant.pack_current_A(-4.0, PACK_V, R_PACK_OHM, 1.0) == -4.0
    assert not plant.flags(0.0) & frame.F_CURRENT_LIMITED


def test_charger_holds_the_voltage_limit() -> None:
    plant = Plant(16)
    plant.command(frame.C_CHARGER, 67200, 10000, 10000, 0.0, PACK_V)
    rest_V = 66.9
    current_A = plant.pack_current_A(5.0, rest_V, R_PACK_OHM, 1.0)  # last step carried no current
    assert math.isclose(current_A, (67.2 - rest_V) / R_PACK_OHM)
    assert plant.flags(0.0) & frame.F_CV
    # At the limit (rest voltage + drop = limit) the charger gives nothing more.
    assert plant.pack_current_A(5.0, 67.2 + current_A * R_PACK_OHM, R_PACK_OHM, 1.0) == 0.0


def test_bleed_resistors_drain_the_selected_cells() -> None:
    plant = Plant(4)
    assert plant.command(frame.C_BALANCE, 0b0101, 0, 0, 0.0, PACK_V) == frame.S_OK
    cell_V = np.array([4.1, 4.0, 3.9, 3.8])
    np.testing.assert_allclose(plant.bleed_A(cell_V), [4.1 / 39.0, 0.0, 3.9 / 39.0, 0.0])
    assert plant.command(frame.C_BALANCE, 0b10000, 0, 0, 0.0, PACK_V) == frame.S_BAD_ARGS  # no cell 4
    assert plant.bleed_mask == 0b0101


def test_actuator_doses_once_at_a_time() -> None:
    plant = Plant(4)
    assert plant.command(frame.C_ACTUATOR, 2, 1500, 0, 10.0, PACK_V) == frame.S_OK
    assert plant.flags(11.0) & frame.F_DOSING
    assert plant.command(frame.C_ACTUATOR, 1, 100, 0, 11.0, PACK_V) == frame.S_REFUSED
    assert not plant.flags(11.5) & frame.F_DOSING
    assert plant.command(frame.C_ACTUATOR, 1, 100, 0, 11.5, PACK_V) == frame.S_OK
    assert plant.command(frame.C_ACTUATOR, 4, 100, 0, 20.0, PACK_V) == frame.S_BAD_ARGS
    assert [(e.kind, e.cell, e.value) for e in plant.events] == [("dose", 2, 1.5), ("dose", 1, 0.1)]


def test_bad_commands_are_refused_by_name() -> None:
    plant = Plant(4)
    assert plant.command(99, 0, 0, 0, 0.0, PACK_V) == frame.S_UNSUPPORTED
    assert plant.command(frame.C_CONTACTOR, 7, 0, 0, 0.0, PACK_V) == frame.S_BAD_ARGS
    assert plant.command(frame.C_CHARGER, 0, 1000, 1000, 0.0, PACK_V) == frame.S_BAD_ARGS
    assert plant.contactor == frame.CONTACTOR_CLOSED
