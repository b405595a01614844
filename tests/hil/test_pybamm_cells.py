"""The PyBaMM truth (hil.physics.pybamm_cells) on short profiles: SoC bookkeeping, sign, window, heating, spread,
DFN, and agreement with PyBaMM's own solver."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("pybamm", reason="PyBaMM is not installed (pip install .[truth])")

from hil.physics.module import NO_SPREAD, CellSpread  # noqa: E402
from hil.physics.pybamm_cells import TAB_RESISTANCE_OHM, PybammCells, pybamm  # noqa: E402


def test_short_discharge_and_charge_move_soc_by_charge_over_c20_capacity() -> None:
    cells = PybammCells(3, seed=4, initial_soc=0.8)
    soc0, temp0 = cells.soc, cells.temp_C
    for _ in range(120):
        cells.step(-10.0, 1.0)  # 2C discharge
    expected = soc0 - 10.0 * 120 / 3600 / cells.capacity_Ah
    np.testing.assert_allclose(cells.soc, expected, atol=1e-9)
    assert np.all(cells.temp_C > temp0 + 0.5)  # lumped thermal: Joule and reaction heat
    v = cells.terminal_V
    assert np.all((v > 2.5) & (v < 4.2)) and not cells.at_cutoff.any() and not cells.held.any()
    soc_mid = cells.soc
    for _ in range(60):
        cells.step(5.0, 1.0)  # charging raises SoC and the voltage
    np.testing.assert_allclose(cells.soc, soc_mid + 5.0 * 60 / 3600 / cells.capacity_Ah, atol=1e-9)
    assert np.all(cells.terminal_V > v)
    assert cells.t_s == 180.0 and cells.current_A == 5.0


def test_c20_capacity_is_near_nominal_and_starts_full() -> None:
    cells = PybammCells(1, spread=NO_SPREAD, initial_soc=1.0)
    assert cells.soc[0] == pytest.approx(1.0, abs=1e-9)
    # Chen et al. 2020 report ~5 Ah for the LG M50; the C/20 charge of this set to 2.5 V is a little more.
    assert 4.9 < cells.capacity_Ah[0] < 5.3
    assert cells.terminal_V[0] == pytest.approx(4.2, abs=0.02)


def test_agrees_with_pybamm_own_solver_on_a_drive() -> None:
    rng = np.random.default_rng(0)
    current_A = rng.uniform(-15.0, 5.0, 60)  # our sign: > 0 charges
    cells = PybammCells(1, spread=NO_SPREAD, initial_soc=0.7)
    ours = []
    for i_A in current_A:
        cells.step(float(i_A), 1.0)
        ours.append(cells.terminal_V[0])
    values = pybamm.ParameterValues("Chen2020")
    values["Open-circuit voltage at 100% SOC [V]"] = 4.2
    values.set_initial_state(0.7)
    values["Contact resistance [Ohm]"] = TAB_RESISTANCE_OHM
    edges_s = np.arange(len(current_A) + 1.0)
    values["Current function [A]"] = pybamm.Interpolant(np.repeat(edges_s, 2)[1:-1], -np.repeat(current_A, 2),
                                                        pybamm.t, interpolator="linear")
    model = pybamm.lithium_ion.SPMe(options={"thermal": "lumped", "contact resistance": "true"})
    solver = pybamm.IDAKLUSolver(rtol=1e-8, atol=1e-8)  # tighter than ours, so the difference is ours
    solution = pybamm.Simulation(model, parameter_values=values, solver=solver).solve(
        t_eval=[0, len(current_A)], t_interp=edges_s[1:] - 1e-6)  # just before each step ends
    reference = solution["Voltage [V]"].entries[1:len(current_A) + 1]
    assert np.max(np.abs(np.array(ours) - reference)) < 1e-5  # V


def test_spread_differs_per_cell_and_is_reproducible() -> None:
    a = PybammCells(4, seed=7, spread=CellSpread(capacity_rel=0.01, initial_soc=0.0))
    b = PybammCells(4, seed=7, spread=CellSpread(capacity_rel=0.01, initial_soc=0.0))
    c = PybammCells(4, seed=8, spread=CellSpread(capacity_rel=0.01, initial_soc=0.0))
    assert len(set(np.round(a.capacity_Ah, 6))) == 4
    np.testing.assert_array_equal(a.capacity_Ah, b.capacity_Ah)
    assert not np.allclose(a.capacity_Ah, c.capacity_Ah)
    # The resistance spread shows as different voltage drops under the same current.
    for cells in (a, b):
        cells.step(-10.0, 1.0)
    np.testing.assert_array_equal(a.terminal_V, b.terminal_V)
    assert np.ptp(a.terminal_V) > 1e-4


def test_cutoff_flags_and_holds_instead_of_crashing() -> None:
    cells = PybammCells(1, spread=NO_SPREAD, initial_soc=0.02)
    for _ in range(60):
        cells.step(-25.0, 1.0)  # 5C from nearly empty: through the lower cut-off
    assert cells.cutoff_events > 0 and cells.held_events > 0
    assert cells.held[0] and np.isfinite(cells.terminal_V[0])
    soc_held = cells.soc[0]
    cells.step(5.0, 1.0)  # charging brings it back
    assert not cells.held[0] and cells.soc[0] > soc_held


def test_dfn_single_cell_runs_and_rejects_more_cells() -> None:
    with pytest.raises(ValueError, match="single cell"):
        PybammCells(2, model="dfn")
    cells = PybammCells(1, model="dfn", spread=NO_SPREAD, initial_soc=0.5)
    v0, soc0 = cells.terminal_V[0], cells.soc[0]
    assert 0.45 < soc0 < 0.5  # PyBaMM's SoC 0.5 spans its eSOH capacity, a little more than the C/20 one
    for _ in range(10):
        cells.step(-5.0, 1.0)
    assert 2.5 < cells.terminal_V[0] < v0
    assert cells.soc[0] == pytest.approx(soc0 - 5.0 * 10 / 3600 / cells.capacity_Ah[0], abs=1e-9)


def test_oregan2022_is_temperature_dependent() -> None:
    warm = PybammCells(1, parameter_set="ORegan2022", ambient_C=25.0, spread=NO_SPREAD, initial_soc=0.5)
    cold = PybammCells(1, parameter_set="ORegan2022", ambient_C=-10.0, spread=NO_SPREAD, initial_soc=0.5)
    assert cold.temp_C[0] == pytest.approx(-10.0)
    for cells in (warm, cold):
        cells.step(-5.0, 1.0)
    assert cold.terminal_V[0] < warm.terminal_V[0] - 0.05  # slower kinetics and transport in the cold
    assert cold.capacity_Ah[0] < warm.capacity_Ah[0]


def test_faults_on_the_pybamm_truth() -> None:
    """Sensor faults and an imbalance act on PyBaMM cells as on the ECM; faults that heat a cell are refused."""
    from hil.faults import Fault
    from hil.physics.params import load
    from hil.profiles import ConstantCurrent
    from hil.scenario import ROOT
    from hil.simulated import SimulatedModule

    params = load(ROOT / "models" / "cells" / "panasonic_ncr18650pf_25C.json")

    def module(faults: list[Fault]) -> SimulatedModule:
        cells = PybammCells(2, seed=5, initial_soc=0.8, spread=NO_SPREAD)
        return SimulatedModule(params, 2, [ConstantCurrent(-1.0, 60)], seed=5, faults=faults, cells=cells)

    stuck = Fault(0, "sensor_stuck", 5.0, 10.0, cell=1, channel="voltage_mV")
    imbalance = Fault(1, "imbalance", 0.0, math.inf, cell=0, value={"soc_offset": -0.1})
    faulty = module([stuck, imbalance])
    readings = []
    for _ in range(20):
        faulty.step(1.0)
        readings.append(faulty.reading()[1][1][0])
    assert faulty.truth[0].soc[0] == pytest.approx(faulty.truth[0].soc[1] - 0.1, abs=0.01)
    assert len(set(readings[4:14])) == 1 and len(set(readings[14:])) > 1  # held from 5 s to 15 s, then free
    assert readings[4] == readings[3]  # the reading of the sample before onset
    with pytest.raises(ValueError, match=r"fault 0 \(internal_short\) puts heat into a cell"):
        module([Fault(0, "internal_short", 0.0, math.inf, cell=0, value={"short_ohm": 10.0})])

