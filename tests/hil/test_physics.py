"""Cell-module physics: parameter files, equivalent circuit, thermal chain, ageing and the module."""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hil.physics import NO_SPREAD, CellModule, CellParams, load
from hil.physics.ageing import AgeingState, fast_forward
from hil.physics.ecm import FARADAY_C_PER_MOL, GAS_CONSTANT_J_PER_MOLK, KELVIN, R0, Ecm
from hil.physics.params import AgeingParams, SocTable, Table, from_dict

EXAMPLE = Path(__file__).resolve().parents[2] / "models" / "cells" / "panasonic_ncr18650pf_25C.json"  # fitted


@pytest.fixture(scope="module")
def example() -> CellParams:
    return load(EXAMPLE)


def flat(value: float, temp_C: tuple[float, ...] = (25.0,)) -> Table:
    return Table(np.array([0.0, 1.0]), np.array(temp_C), np.full((len(temp_C), 2), value))


def no_ageing(p: CellParams) -> CellParams:
    return replace(p, ageing=AgeingParams(0.0, 0.0, 0.0, 0.0, 0.0, 25.0))


def constant_cell(p: CellParams, **changes: Any) -> CellParams:
    """The example cell with SoC- and temperature-independent parameters, no ageing, no self-discharge."""
    base = replace(no_ageing(p), r0_ohm=flat(0.02), r1_ohm=flat(0.015), c1_F=flat(400.0), r2_ohm=flat(0.03),
                   c2_F=flat(2000.0), resistance_activation_J_per_mol=0.0,
                   hysteresis_V=SocTable(np.array([0.0, 1.0]), np.zeros(2)),
                   entropic_V_per_K=SocTable(np.array([0.0, 1.0]), np.zeros(2)), self_discharge_A=0.0,
                   exchange_current_A=None, exchange_activation_J_per_mol=None)
    return replace(base, **changes)


def test_example_ocv_increases_with_soc(example: CellParams) -> None:
    assert np.all(np.diff(example.ocv_V.values, axis=1) > 0)
    ecm = Ecm(example, 201)
    ecm.soc = np.linspace(0.0, 1.0, 201)
    for temp_C in (-10.0, 25.0, 45.0):
        ocv_V = ecm.evaluate(np.full(201, temp_C))[0]
        assert np.all(np.diff(ocv_V) > 0), temp_C
        assert example.lower_cutoff_V < ocv_V[0] and ocv_V[-1] < example.upper_cutoff_V


def test_every_example_value_is_cited(example: CellParams) -> None:
    doc = json.loads(EXAMPLE.read_text())
    for key in doc:
        if key not in ("name", "chemistry", "sources", "Thermal", "Ageing"):
            assert key in example.sources
    for group in ("Thermal", "Ageing"):
        for key in doc[group]:
            assert f"{group}.{key}" in example.sources


def run_profile(module: CellModule, rng: np.random.Generator, steps: int) -> tuple[float, float]:
    """Random piecewise-constant current; returns (∫I⁺ dt, ∫I⁻ dt) in A·s."""
    charge_As = discharge_As = 0.0
    for _ in range(steps):
        current_A = float(rng.uniform(-4.0, 4.0))
        dt_s = float(rng.choice([0.1, 0.5, 1.0, 2.5]))
        module.step(current_A, dt_s)
        if current_A > 0:
            charge_As += current_A * dt_s
        else:
            discharge_As += current_A * dt_s
    return charge_As, discharge_As


def test_charge_balance_is_exact_with_unit_coulombic_efficiency(example: CellParams) -> None:
    p = replace(no_ageing(example), coulombic_efficiency=1.0, self_discharge_A=0.0)
    module = CellModule(p, 4, seed=2, initial_soc=0.5)
    soc0 = module.soc
    charge_As, discharge_As = run_profile(module, np.random.default_rng(7), 3000)
    stored_As = (module.soc - soc0) * module.capacity_Ah * 3600.0
    assert stored_As == pytest.approx(np.full(4, charge_As + discharge_As), rel=1e-9)


def test_coulombic_efficiency_applies_to_charge_only(example: CellParams) -> None:
    p = replace(no_ageing(example), coulombic_efficiency=0.98, self_discharge_A=0.0)
    module = CellModule(p, 3, seed=2, initial_soc=0.5)
    soc0 = module.soc
    charge_As, discharge_As = run_profile(module, np.random.default_rng(8), 3000)
    stored_As = (module.soc - soc0) * module.capacity_Ah * 3600.0
    assert stored_As == pytest.approx(np.full(3, 0.98 * charge_As + discharge_As), rel=1e-9)


def test_rc_branches_follow_the_analytic_step_response(example: CellParams) -> None:
    p = constant_cell(example)
    module = CellModule(p, 2, spread=NO_SPREAD)
    current_A = -2.0
    t_s = 0.0
    for dt_s in (0.3, 1.0, 7.0, 10.0, 25.0, 60.0, 200.0):
        module.step(current_A, dt_s)
        t_s += dt_s
        for branch, (r_ohm, c_F) in enumerate(((0.015, 400.0), (0.03, 2000.0))):
            expected_V = r_ohm * current_A * (1.0 - math.exp(-t_s / (r_ohm * c_F)))
            assert module.ecm.v_rc_V[branch] == pytest.approx(np.full(2, expected_V), rel=1e-12)
        overpotential_V = module.terminal_V - module.ocv_V
        assert overpotential_V == pytest.approx(module.ecm.v_rc_V.sum(axis=0) + 0.02 * current_A, rel=1e-12)


def test_without_exchange_current_the_model_is_unchanged(example: CellParams) -> None:
    """No charge-transfer element: bit for bit the linear model's numbers, recorded before the element was added."""
    soc, temps = np.array([0.0, 0.5, 1.0]), np.array([0.0, 25.0])

    def table(lo: float, hi: float) -> Table:
        return Table(soc, temps, np.array([[lo * 1.5, hi * 1.4, lo * 1.6], [lo, hi, lo * 1.1]]))

    cell = replace(example, ocv_V=Table(soc, temps, np.array([[3.0, 3.7, 4.15], [3.01, 3.71, 4.16]])),
                   r0_ohm=table(0.02, 0.018), r1_ohm=table(0.01, 0.012), c1_F=table(300.0, 400.0),
                   r2_ohm=table(0.02, 0.025), c2_F=table(3000.0, 4000.0),
                   hysteresis_V=SocTable(soc, np.array([0.02, 0.01, 0.015])),
                   entropic_V_per_K=SocTable(soc, np.array([-2e-4, 0.0, 1e-4])), exchange_current_A=None)
    module = CellModule(cell, 4, seed=3, initial_soc=0.6)
    for current_A in np.random.default_rng(7).uniform(-8.0, 6.0, 2000):
        module.step(float(current_A), 0.5)
    assert module.terminal_V.tolist() == [3.5595700489431783, 3.553560581059233, 3.558641016313797, 3.556823569305964]
    assert module.temp_C.tolist() == [28.093280059796363, 28.100970522191997, 27.950900205602018, 28.1019219735897]
    assert module.heat_W.tolist() == [1.0941250097333408, 1.103941591296953, 1.0403451041704816, 1.1027520576563508]


def test_charge_transfer_drop_per_amp_falls_as_asinh_predicts(example: CellParams) -> None:
    i0_A, ea_J_per_mol = 1.5, 30000.0
    p = constant_cell(example, exchange_current_A=flat(i0_A), exchange_activation_J_per_mol=ea_J_per_mol)
    drops = []
    for ambient_C in (25.0, 45.0):
        for current_A in (-30.0, -10.0, -2.5, -0.5, 0.5, 5.0):
            module = CellModule(p, 2, spread=NO_SPREAD, ambient_C=ambient_C)
            module.step(current_A, 1e-3)
            # I0 follows its own Arrhenius law, 2RT/F the cell temperature (the read-out's, a little above ambient).
            temp_K = module.temp_C[0] + KELVIN
            i0_T = i0_A * math.exp(-ea_J_per_mol / GAS_CONSTANT_J_PER_MOLK * (1 / temp_K - 1 / (25 + KELVIN)))
            b_V = 2 * GAS_CONSTANT_J_PER_MOLK * temp_K / FARADAY_C_PER_MOL
            drop_V = module.terminal_V - module.ocv_V - module.ecm.v_rc_V.sum(axis=0)
            assert drop_V == pytest.approx(np.full(2, 0.02 * current_A + b_V * math.asinh(current_A / (2 * i0_T))),
                                           rel=1e-9)
            if ambient_C == 25.0 and current_A < 0:
                drops.append(drop_V[0] / current_A)
    # Per amp: falls with the current, from the small-signal R0 + RT/(F*I0) towards R0.
    assert drops == sorted(drops) and drops[-1] < 0.02 + b_V / 2 / i0_A and drops[0] > 0.02


def test_heat_includes_the_charge_transfer_overpotential(example: CellParams) -> None:
    p = constant_cell(example, exchange_current_A=flat(1.5))
    module = CellModule(p, 1, spread=NO_SPREAD)
    current_A = -20.0
    values = module.ecm.evaluate(module.temp_C)  # the step's parameters (start-of-step SoC and temperature)
    module.step(current_A, 1.0)
    assert module.heat_W == pytest.approx(current_A * module.ecm.overpotential_V(current_A, values), rel=1e-12)
    linear_W = current_A * (module.ecm.v_rc_V.sum(axis=0) + 0.02 * current_A)
    assert module.heat_W[0] > linear_W[0] + 0.5  # asinh(20/3)*51 mV*20 A ~ 2.7 W more


def test_thermal_steady_state_matches_the_analytic_rise(example: CellParams) -> None:
    p = constant_cell(example)
    module = CellModule(p, 1, spread=NO_SPREAD, ambient_C=20.0, initial_soc=0.5)
    current_A = 3.0
    for _ in range(4000):  # 40 000 s at the largest step, many thermal time constants
        module.step(current_A, 10.0)
    heat_W = current_A**2 * (0.02 + 0.015 + 0.03)
    assert module.heat_W[0] == pytest.approx(heat_W, rel=1e-9)
    expected_C = 20.0 + heat_W / p.thermal.cooling_W_per_K
    assert abs(module.temp_C[0] - expected_C) < 0.05


def test_heat_flows_from_a_hot_cell_to_its_neighbour(example: CellParams) -> None:
    insulated = replace(example.thermal, h_W_per_m2K=0.0)
    module = CellModule(constant_cell(example, thermal=insulated), 2, spread=NO_SPREAD, ambient_C=25.0)
    module.set_state(temp_C=[45.0, 25.0])
    previous = module.temp_C
    for _ in range(20):
        module.step(0.0, 10.0)
        now = module.temp_C
        assert now[0] < previous[0] and now[1] > previous[1]
        assert now.sum() == pytest.approx(70.0, rel=1e-12)  # no cooling: the heat only moves
        previous = now
    module.step(0.0, 1e5)
    assert module.temp_C == pytest.approx([35.0, 35.0], abs=1e-9)


def test_spread_is_reproducible_from_the_seed(example: CellParams) -> None:
    def trace(seed: int) -> np.ndarray:
        # The fitted file has no self-discharge (the recordings cannot show it): give it some, to see its spread.
        module = CellModule(replace(example, self_discharge_A=3e-5), 8, seed=seed, initial_soc=0.6)
        first = np.concatenate([module.capacity_Ah, module.r0_ohm, module.soc, module.ecm.self_discharge_A])
        for k in range(200):
            module.step(2.0 if k % 50 < 25 else -3.0, 1.0)
        return np.concatenate([first, module.terminal_V, module.temp_C])

    assert np.array_equal(trace(11), trace(11))
    a, b = trace(11), trace(12)
    assert not np.any(a[:32] == b[:32])


def test_cc_discharge_stays_inside_the_cutoffs(example: CellParams) -> None:
    module = CellModule(example, 16, seed=4, initial_soc=1.0)
    module.set_state(soc=module.soc, hysteresis=1.0)  # rested after a charge
    voltages = [module.terminal_V]
    while voltages[-1].min() > example.lower_cutoff_V:
        module.step(-example.nominal_capacity_Ah, 1.0)
        voltages.append(module.terminal_V)
    trace = np.array(voltages)
    assert trace.max() <= example.upper_cutoff_V
    assert trace[:-1].min() > example.lower_cutoff_V
    assert trace[-1].min() > example.lower_cutoff_V - 0.02  # one step past the cut-off
    assert 0.9 < module.t_s / 3600.0 < 1.0  # close to the rated capacity at 1C
    for _ in range(1800):
        module.step(0.0, 1.0)
    assert np.all((module.terminal_V > example.lower_cutoff_V) & (module.terminal_V < example.upper_cutoff_V))


def test_tables_are_bilinear_with_arrhenius_and_entropic_extrapolation(example: CellParams) -> None:
    r0 = Table(np.array([0.0, 1.0]), np.array([0.0, 40.0]), np.array([[0.04, 0.02], [0.02, 0.01]]))
    ocv = Table(np.array([0.0, 1.0]), np.array([10.0, 30.0]), np.array([[3.0, 4.0], [3.1, 4.1]]))
    dudt = SocTable(np.array([0.0, 1.0]), np.array([1e-3, 1e-3]))
    p = replace(example, r0_ohm=r0, ocv_V=ocv, entropic_V_per_K=dudt)
    ecm = Ecm(p, 4)
    ecm.soc = np.array([0.5, 0.25, 0.5, 0.5])
    values = ecm.evaluate(np.array([20.0, 0.0, 60.0, 0.0]))
    assert values[R0][0] == pytest.approx((0.03 + 0.015) / 2)
    assert values[R0][1] == pytest.approx(0.035)
    ea_over_R = p.resistance_activation_J_per_mol / GAS_CONSTANT_J_PER_MOLK
    arrhenius = math.exp(ea_over_R * (1 / (60.0 + KELVIN) - 1 / (40.0 + KELVIN)))
    assert values[R0][2] == pytest.approx(0.015 * arrhenius)
    assert values[0][0] == pytest.approx(3.55)
    assert values[0][3] == pytest.approx(3.5 - 10.0 * 1e-3)  # 10 K below the OCV grid
    ecm.resistance_factor = np.full(4, 1.5)
    assert ecm.evaluate(np.array([20.0, 0.0, 60.0, 0.0]))[R0][0] == pytest.approx(1.5 * 0.0225)


def test_aged_state_scales_capacity_and_resistance(example: CellParams) -> None:
    module = CellModule(example, 4, seed=3)
    fresh_Ah, fresh_r0 = module.capacity_Ah, module.r0_ohm
    module.set_state(capacity_factor=0.8, resistance_factor=[1.0, 1.2, 1.5, 2.0])
    assert module.capacity_Ah == pytest.approx(0.8 * fresh_Ah)
    assert module.r0_ohm == pytest.approx(fresh_r0 * [1.0, 1.2, 1.5, 2.0])


def test_fast_forward_matches_step_by_step_ageing(example: CellParams) -> None:
    # Isothermal cells so that both paths age at the same temperature.
    p = replace(example, thermal=replace(example.thermal, h_W_per_m2K=1e5))
    dod, c_rate, rest_s, cycles = 0.8, 1.0, 1800.0, 3
    stepped = CellModule(p, 4, seed=9, ambient_C=35.0, initial_soc=0.9)
    forwarded = copy.deepcopy(stepped)
    current_A = c_rate * p.nominal_capacity_Ah
    half_s = dod * float(stepped.capacity_Ah.min()) * 3600.0 / current_A
    for _ in range(cycles):
        for sign in (-1.0, 1.0):
            whole, part = divmod(half_s, 1.0)
            for _ in range(int(whole)):
                stepped.step(sign * current_A, 1.0)
            stepped.step(sign * current_A, part)
        for _ in range(int(rest_s)):
            stepped.step(0.0, 1.0)
    stepped._age()
    forwarded.fast_forward(cycles, dod, c_rate, temp_C=35.0, cycle_duration_s=2 * half_s + rest_s)
    fade_step, fade_fast = 1 - stepped.ageing.capacity_factor, 1 - forwarded.ageing.capacity_factor
    growth_step, growth_fast = stepped.ageing.resistance_factor - 1, forwarded.ageing.resistance_factor - 1
    assert fade_fast == pytest.approx(fade_step, rel=0.02)
    assert growth_fast == pytest.approx(growth_step, rel=0.02)
    assert stepped.t_s == pytest.approx(forwarded.t_s)


def test_fast_forward_rejects_a_cycle_longer_than_its_duration(example: CellParams) -> None:
    state = AgeingState.fresh(2)
    with pytest.raises(ValueError, match="does not fit"):
        fast_forward(state, example.ageing, cycles=1, dod=1.0, c_rate=1.0, temp_C=25.0, cycle_duration_s=3600.0,
                     nominal_Ah=2.9, fresh_capacity_Ah=np.full(2, 2.9), soc_top=np.full(2, 1.0))


def test_module_rejects_bad_sizes(example: CellParams) -> None:
    for n in (0, 33):
        with pytest.raises(ValueError, match="n_cells"):
            CellModule(example, n)


def broken(change: Any) -> dict[str, Any]:
    doc = json.loads(EXAMPLE.read_text())
    change(doc)
    return doc


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("R0 [Ohm]"), r"missing key 'R0 \[Ohm\]'"),
    (lambda d: d["Thermal"].pop("Mass [kg]"), r"missing key 'Thermal\.Mass \[kg\]'"),
    (lambda d: d["R1 [Ohm]"].update(SoC=[0.0, 0.3, 0.1, 0.5, 0.7, 0.9, 1.0]),
     r"'R1 \[Ohm\]'\.SoC must be strictly ascending"),
    (lambda d: d["OCV [V]"].update({"Temperature [degC]": [25.0, 10.0]}),
     r"'OCV \[V\]'\.Temperature \[degC\] must be strictly ascending"),
    (lambda d: d["R2 [Ohm]"]["values"][0].__setitem__(3, -0.01), r"'R2 \[Ohm\]' has negative values"),
    (lambda d: d["OCV [V]"]["values"][0].__setitem__(5, 3.0), r"'OCV \[V\]' must be strictly increasing in SoC"),
    (lambda d: d["C1 [F]"]["values"][0].pop(), r"'C1 \[F\]': values has shape \(1, \d+\), expected \(1, \d+\)"),
    (lambda d: d["OCV hysteresis [V]"]["values"].pop(), r"'OCV hysteresis \[V\]': values has shape"),
    (lambda d: d.update({"Coulombic efficiency": 1.2}), r"'Coulombic efficiency' must be in \(0, 1\]"),
    (lambda d: d["sources"].pop("R0 [Ohm]"), r"'sources' has no citation for 'R0 \[Ohm\]'"),
    (lambda d: d.update({"Exchange current [A]": {**d["R0 [Ohm]"], "values": [[-1.0] * len(d["R0 [Ohm]"]["SoC"])]}}),
     r"'Exchange current \[A\]' must be positive"),
])
def test_load_names_the_offending_key(tmp_path: Path, change: Any, message: str) -> None:
    path = tmp_path / "cell.json"
    path.write_text(json.dumps(broken(change)))
    with pytest.raises(ValueError, match=message):
        load(path)
    with pytest.raises(ValueError, match=message):
        from_dict(broken(change))


def test_speed_of_a_16_cell_string(example: CellParams) -> None:
    module = CellModule(example, 16, seed=1, initial_soc=0.7)
    steps = 5000
    start = time.perf_counter()
    for k in range(steps):
        module.step(-2.0 if k % 600 < 300 else 1.5, 1.0)
    rate = steps / (time.perf_counter() - start)
    print(f"\nCellModule, 16 cells, dt = 1 s: {rate:,.0f} steps/s")
    assert rate >= 2000
