"""PyBaMM truth for the rig: a series string of SPMe cells (or one DFN cell), a drop-in for CellModule.

One current flows through every cell; current > 0 CHARGES (PyBaMM's "Current function [A]" is positive for
discharge, so it gets -current_A). Each cell is its own simulation with its own inputs; all cells advance in ONE
call of a CasADi integrator mapped over the cells (`Function.map`), built once per (model, parameter set) from the
model PyBaMM discretises on its default mesh. The integrator runs over a unit interval with the step length as a
parameter (dy/ds = dt * f(y)), so any dt works without rebuilding it. This skips PyBaMM's per-step Solution objects:
PyBaMM's `Simulation.step` with IDAKLU costs ~2.5 ms per cell and 1 s step here, this ~0.3 ms (see the report of
issue 4 for the measured figures).

Models: "spme" (single particle model with electrolyte, lumped thermal), "dfn" (Doyle-Fuller-Newman, one cell only:
it is a DAE and ~10x the cost). Parameter sets: "Chen2020" (LG M50 5 Ah, Chen et al. 2020 J. Electrochem. Soc. 167
080534; its exchange currents follow an Arrhenius law, about doubling from 25 to 40 degC) and "ORegan2022" (the
same cell with temperature-dependent diffusivities, conductivities and rate constants, O'Regan et al. 2022
Electrochim. Acta 425 140700) for cold runs.

Cell-to-cell spread (CellSpread, drawn like CellModule does):
- capacity: "Electrode width [m]" times the capacity factor. The model is 1D through the thickness, so the width
  scales the area, hence capacity and (inversely) the cell's resistance, as a bigger cell of the same build would.
- resistance: "Contact resistance [Ohm]" (PyBaMM's "contact resistance" option, a series resistor that also heats
  the cell) = TAB_RESISTANCE_OHM + (resistance factor - 1) * the nominal cell's DC resistance, floored at zero.
- initial SoC: each cell starts from PyBaMM's initial state at its own drawn SoC. Self-discharge: not modelled.

True SoC (defined once): 1 - (charge removed since full) / (capacity the same simulator measures with a C/20
discharge at the same temperature). Full = PyBaMM's initial state at SoC 1 (stoichiometries of a cell rested at the
upper cut-off). A cell started below full has had (lithium that left its negative electrode) * F removed.

Voltage cut-off: PyBaMM would stop the simulation at its cut-off events. The rig must go on (a full cell takes
regenerative braking above the upper cut-off, a load may pull an empty cell below the lower one), so a cell whose
voltage is outside [lower, upper] cut-off is only flagged (`at_cutoff`; `cutoff_events` counts cell-steps) and goes
on. A cell whose step fails (as it does past full depletion) or ends more than HOLD_MARGIN_V outside the window is
HELD: its state stays at the start of the step, no charge is counted for it, its voltage is reported clamped to
the window widened by HOLD_MARGIN_V, and `held` flags it (`held_events` counts). The hold ends with the first
step that succeeds again, e.g. when the current reverses."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from hil.physics import PYBAMM_PARAMETER_SETS
from hil.physics.module import MAX_CELLS, CellSpread, PerCell

# No network here and no consent asked: PyBaMM reads this before it sets up its telemetry client.
os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
import casadi  # noqa: E402
import pybamm  # noqa: E402

pybamm.telemetry.disable()

KELVIN = 273.15
FARADAY_C_per_mol = 96485.33212
MODELS = ("spme", "dfn")
DEFAULT_SPREAD = CellSpread()
# The LG M50's data-sheet window. ORegan2022 ships 4.4 V as the upper cut-off and as the OCV at 100 % SoC (the range
# of its OCP fits); the cell is charged to 4.2 V, and "full" must mean the same state in both sets.
UPPER_CUTOFF_V = 4.2
# Tab welds and busbar share per cell, a few mOhm in a welded module; it lets the resistance spread go both ways.
TAB_RESISTANCE_OHM = 0.002
# DC resistance of the nominal Chen2020 cell for the spread: (OCV - V) / I after 10 s at 1C from SoC 0.5, 25 degC,
# simulated here (~0.024 Ohm); the figure only scales the spread's draw.
NOMINAL_DC_RESISTANCE_OHM = 0.024
# The nominal cell's voltage step 0.1 s into a 1C discharge at SoC 0.5, 25 degC, over the current (simulated here:
# 25.7 mOhm; 17.1 mOhm at 4C, as Butler-Volmer kinetics are not linear). Only the charger's CV limit reads it.
NOMINAL_R0_OHM = 0.0257
C20_STEPS_S = (600.0, 30.0, 1.0)  # the C/20 capacity run's step lengths, coarse to fine
HOLD_MARGIN_V = 0.3  # beyond the cut-offs by more than this, a step is not taken (see the module docstring)
INTEGRATOR_TOL = 1e-7  # CVODES/IDAS relative and absolute tolerance (states are scaled by PyBaMM)

# Model inputs, in this order in the parameter vector (the step length is appended).
INPUTS = ("Current function [A]", "Ambient temperature [K]", "Initial temperature [K]", "Contact resistance [Ohm]",
          "Electrode width [m]", "Initial concentration in negative electrode [mol.m-3]",
          "Initial concentration in positive electrode [mol.m-3]")
CURRENT, AMBIENT, INITIAL_T, CONTACT, WIDTH, CN0, CP0 = range(len(INPUTS))
OUTPUTS = ("Voltage [V]", "Volume-averaged cell temperature [C]", "Total lithium in negative electrode [mol]",
           "Bulk open-circuit voltage [V]")
V_OUT, T_OUT, LI_NEG_OUT, OCV_OUT = range(len(OUTPUTS))


@dataclass(frozen=True, eq=False)
class _Engine:
    """The compiled model of one (model, parameter set): integrator, outputs, initial state, nominal inputs."""

    model: str
    parameter_set: str
    parameter_values: Any  # pybamm.ParameterValues, with INPUTS as inputs
    n_differential: int
    n_algebraic: int
    integrator: Any  # casadi.Function: x0, z0, p=[inputs, dt] -> xf, zf over dt
    outputs: Any  # casadi.Function: (y, p) -> OUTPUTS
    initial_state: Any  # casadi.Function: p -> y0 (algebraic part a guess)
    lower_cutoff_V: float
    upper_cutoff_V: float
    nominal_capacity_Ah: float
    width_m: float

    def maps(self, n: int) -> tuple[Any, Any]:
        return _mapped(self, n)


@functools.cache
def _mapped(engine: _Engine, n: int) -> tuple[Any, Any]:
    return engine.integrator.map(n), engine.outputs.map(n)


def _parameter_values(parameter_set: str) -> Any:
    if parameter_set not in PYBAMM_PARAMETER_SETS:
        raise ValueError(f"parameter_set must be one of {PYBAMM_PARAMETER_SETS}, got {parameter_set!r}")
    values = pybamm.ParameterValues(parameter_set)
    values["Upper voltage cut-off [V]"] = values["Open-circuit voltage at 100% SOC [V]"] = UPPER_CUTOFF_V
    return values


@functools.cache
def engine(model: str, parameter_set: str) -> _Engine:
    """Discretise the model once per process (~1 s) and turn it into CasADi functions."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    options = {"thermal": "lumped", "contact resistance": "true"}
    pybamm_model = (pybamm.lithium_ion.SPMe if model == "spme" else pybamm.lithium_ion.DFN)(options=options)
    values = _parameter_values(parameter_set)
    nominal = {name: values[name] for name in INPUTS if name != "Current function [A]"}
    for name in INPUTS:
        values[name] = "[input]"
    sim = pybamm.Simulation(pybamm_model, parameter_values=values)
    sim.build(inputs={"Current function [A]": 0.0, **nominal})
    built = sim.built_model
    n_x, n_z = built.concatenated_rhs.shape[0], built.concatenated_algebraic.shape[0]
    t = casadi.MX.sym("t")
    x, z = casadi.MX.sym("x", n_x), casadi.MX.sym("z", n_z)
    p, dt = casadi.MX.sym("p", len(INPUTS)), casadi.MX.sym("dt")
    y = casadi.vertcat(x, z)
    inputs = {name: p[k] for k, name in enumerate(INPUTS)}

    def expr(symbol: Any) -> Any:
        # The model is autonomous in t once the current is an input; t = 0 keeps the functions free of it.
        return casadi.substitute(symbol.to_casadi(t, y, inputs=inputs), t, 0)

    dae = {"x": x, "p": casadi.vertcat(p, dt), "ode": dt * expr(built.concatenated_rhs)}
    if n_z:
        dae.update(z=z, alg=expr(built.concatenated_algebraic))
    tol = {"abstol": INTEGRATOR_TOL, "reltol": INTEGRATOR_TOL}
    integrator = casadi.integrator("step", "idas" if n_z else "cvodes", dae, 0.0, 1.0, tol)
    outputs = casadi.Function("outputs", [y, p], [casadi.vertcat(*(expr(built.get_processed_variable(name))
                                                                    for name in OUTPUTS))])
    y0 = built.concatenated_initial_conditions.to_casadi(t, y, inputs=inputs)
    initial_state = casadi.Function("initial_state", [p], [casadi.substitute(y0, t, 0)])
    return _Engine(model=model, parameter_set=parameter_set, parameter_values=_parameter_values(parameter_set),
                   n_differential=n_x, n_algebraic=n_z, integrator=integrator, outputs=outputs,
                   initial_state=initial_state, lower_cutoff_V=float(values["Lower voltage cut-off [V]"]),
                   upper_cutoff_V=UPPER_CUTOFF_V, nominal_capacity_Ah=float(values["Nominal cell capacity [A.h]"]),
                   width_m=float(nominal["Electrode width [m]"]))


@functools.cache
def _initial_concentrations(parameter_set: str, soc: float) -> tuple[float, float]:
    """Negative and positive particle concentrations of a rested cell at PyBaMM's SoC `soc` (its eSOH solve)."""
    values = _parameter_values(parameter_set)
    values.set_initial_state(soc)
    return (float(values["Initial concentration in negative electrode [mol.m-3]"]),
            float(values["Initial concentration in positive electrode [mol.m-3]"]))


class _Solver:
    """Steps a set of cells, each a column of the state matrices, in one mapped integrator call; holds failing cells."""

    def __init__(self, eng: _Engine, inputs: np.ndarray) -> None:
        self.eng = eng
        self.n = inputs.shape[1]
        self.integrate, self.evaluate = eng.maps(self.n)
        self.inputs = inputs  # (len(INPUTS), n)
        y0 = np.column_stack([np.asarray(eng.initial_state(inputs[:, k])).ravel() for k in range(self.n)])
        self.x = y0[:eng.n_differential]
        self.z = y0[eng.n_differential:]
        if eng.n_algebraic:
            # A zero-length step makes IDAS solve for consistent algebraic states.
            self.x, self.z, _ = self._integrate(1e-9)

    def _integrate(self, dt_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The states after dt_s and, per cell, whether the step succeeded."""
        p = np.vstack((self.inputs, np.full((1, self.n), dt_s)))
        try:
            out = self.integrate(x0=self.x, z0=self.z, p=p)
            return np.asarray(out["xf"]), np.asarray(out["zf"]).reshape(self.z.shape), np.ones(self.n, dtype=bool)
        except RuntimeError:
            pass
        # One cell failed the shared call: step them one by one and keep the others' results.
        x, z, ok = self.x.copy(), self.z.copy(), np.zeros(self.n, dtype=bool)
        for k in range(self.n):
            try:
                out = self.eng.integrator(x0=self.x[:, k], z0=self.z[:, k], p=p[:, k])
            except RuntimeError:
                continue
            x[:, k], z[:, k], ok[k] = np.asarray(out["xf"]).ravel(), np.asarray(out["zf"]).ravel(), True
        return x, z, ok

    def outputs(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return np.asarray(self.evaluate(np.vstack((x, z)), self.inputs)).reshape(len(OUTPUTS), self.n)

    def step(self, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Advance; returns the outputs at the end and which cells moved (the others are held, see the docstring)."""
        x, z, ok = self._integrate(dt_s)
        out = self.outputs(x, z)
        voltage_V = out[V_OUT]
        ok &= np.all(np.isfinite(out), axis=0)
        ok &= (voltage_V >= self.eng.lower_cutoff_V - HOLD_MARGIN_V) & (voltage_V <= self.eng.upper_cutoff_V
                                                                         + HOLD_MARGIN_V)
        if not ok.all():
            x[:, ~ok], z[:, ~ok] = self.x[:, ~ok], self.z[:, ~ok]
            out = self.outputs(x, z)
        self.x, self.z = x, z
        return out, ok


@functools.cache
def c20_capacity_Ah(model: str, parameter_set: str, ambient_K: float, contact_ohm: float, width_m: float) -> float:
    """Charge of a C/20 discharge from full to the lower cut-off at ambient_K, C = the set's nominal capacity times
    the width factor (the same current density in every cell). Steps of C20_STEPS_S, each pass ending where a step
    would cross the cut-off; the crossing is put mid-way into the last 1 s step (error < 0.5 s * C/20)."""
    eng = engine(model, parameter_set)
    current_A = eng.nominal_capacity_Ah / 20.0 * width_m / eng.width_m
    cn0, cp0 = _initial_concentrations(parameter_set, 1.0)
    inputs = np.array([[current_A, ambient_K, ambient_K, contact_ohm, width_m, cn0, cp0]]).T
    solver = _Solver(eng, inputs)
    t_s = 0.0
    for dt_s in C20_STEPS_S:
        while True:
            x, z = solver.x, solver.z
            out, ok = solver.step(dt_s)
            if not ok[0] or out[V_OUT, 0] < eng.lower_cutoff_V:
                solver.x, solver.z = x, z  # back to the start of the step that crossed, for the finer pass
                break
            t_s += dt_s
            if t_s > 40 * 3600:
                raise RuntimeError("the C/20 discharge did not reach the lower cut-off in 40 h")
    return current_A * (t_s + 0.5 * C20_STEPS_S[-1]) / 3600.0


class PybammCells:
    """n_cells PyBaMM cells in series, read like hil.physics.module.CellModule (see the module docstring)."""

    def __init__(self, n_cells: int, model: str = "spme", parameter_set: str = "Chen2020", seed: int = 1,
                 ambient_C: float = 25.0, initial_soc: float = 1.0, spread: CellSpread = DEFAULT_SPREAD) -> None:
        if model == "dfn" and n_cells != 1:
            raise ValueError(f"the DFN truth runs a single cell (n_cells=1), got n_cells={n_cells}; use 'spme'")
        if not 1 <= n_cells <= MAX_CELLS:
            raise ValueError(f"n_cells must be 1..{MAX_CELLS}, got {n_cells}")
        self.n_cells = n_cells
        self.model = model
        self.parameter_set = parameter_set
        self.eng = engine(model, parameter_set)
        # The same draws, in the same order, as CellModule (capacity, resistance, self-discharge, SoC).
        rng = np.random.default_rng(seed)
        self.capacity_spread = np.clip(1.0 + spread.capacity_rel * rng.standard_normal(n_cells), 0.5, 1.5)
        self.resistance_spread = np.clip(1.0 + spread.resistance_rel * rng.standard_normal(n_cells), 0.5, 1.5)
        rng.standard_normal(n_cells)  # self-discharge: not modelled, drawn to keep the SoC draw aligned
        socs = np.clip(initial_soc + spread.initial_soc * rng.standard_normal(n_cells), 0.0, 1.0)
        ambient_K = ambient_C + KELVIN
        inputs = np.empty((len(INPUTS), n_cells))
        inputs[CURRENT] = 0.0
        inputs[AMBIENT] = inputs[INITIAL_T] = ambient_K
        inputs[CONTACT] = np.maximum(TAB_RESISTANCE_OHM + (self.resistance_spread - 1.0) * NOMINAL_DC_RESISTANCE_OHM,
                                     0.0)
        inputs[WIDTH] = self.eng.width_m * self.capacity_spread
        self._c20_Ah = np.array([c20_capacity_Ah(model, parameter_set, ambient_K, float(inputs[CONTACT, k]),
                                                 float(inputs[WIDTH, k])) for k in range(n_cells)])
        # Charge removed since full: the lithium that left the negative electrode since SoC 1 (PyBaMM's eSOH).
        full = inputs.copy()
        full[CN0], full[CP0] = _initial_concentrations(parameter_set, 1.0)
        self._li_full_mol = np.array([float(np.asarray(self.eng.outputs(self.eng.initial_state(full[:, k]),
                                                                        full[:, k])).ravel()[LI_NEG_OUT])
                                      for k in range(n_cells)])
        self._solver = self._rested(inputs, socs)
        # Fault inputs (hil.faults) that only the ECM truth takes (they put heat into a cell): always None here.
        self.short_conductance_S: np.ndarray | None = None
        self.extra_heat_W: np.ndarray | None = None
        self.at_cutoff = np.zeros(n_cells, dtype=bool)
        self.cutoff_events = 0
        self.held = np.zeros(n_cells, dtype=bool)
        self.held_events = 0
        self.current_A = 0.0
        self.t_s = 0.0
        self._bleed_As = np.zeros(n_cells)

    def _rested(self, inputs: np.ndarray, socs: np.ndarray) -> _Solver:
        """A solver for cells rested at `socs`; sets the read-outs and the charge removed since full."""
        inputs[CN0], inputs[CP0] = np.array([_initial_concentrations(self.parameter_set, float(s)) for s in socs]).T
        solver = _Solver(self.eng, inputs)
        self._out = solver.outputs(solver.x, solver.z)
        self._removed_Ah = (self._li_full_mol - self._out[LI_NEG_OUT]) * FARADAY_C_per_mol / 3600.0
        return solver

    def set_state(self, soc: PerCell | None = None) -> None:
        """Restart every cell rested at the given SoC (PyBaMM's SoC scale; e.g. an imbalance fault at the start)."""
        if soc is not None:
            socs = np.clip(np.broadcast_to(np.asarray(soc, dtype=float), (self.n_cells,)), 0.0, 1.0)
            self._solver = self._rested(self._solver.inputs, socs)

    def drain(self, current_A: np.ndarray, dt_s: float) -> None:
        """A balancing bleed (current_A > 0 drains each cell): taken through the cell's electrochemistry during the
        next step, as extra discharge current averaged over that step (the rig drains just before each step)."""
        self._bleed_As = self._bleed_As + np.asarray(current_A, dtype=float) * dt_s

    @property
    def r0_ohm(self) -> np.ndarray:
        """Approximate ohmic resistance per cell: NOMINAL_R0_OHM scaled by the area, plus the contact resistance."""
        return NOMINAL_R0_OHM * self.eng.width_m / self._solver.inputs[WIDTH] + self._solver.inputs[CONTACT]

    def step(self, current_A: float, dt_s: float) -> None:
        """Advance every cell by dt_s with current_A (A, > 0 charges) held constant over the step."""
        # PyBaMM: positive discharges. A bleed drained since the last step flows through the cell, averaged over it.
        cell_A = current_A - self._bleed_As / dt_s
        self._bleed_As = np.zeros(self.n_cells)
        self._solver.inputs[CURRENT] = -cell_A
        out, ok = self._solver.step(dt_s)
        self._removed_Ah[ok] -= cell_A[ok] * dt_s / 3600.0
        self.held = ~ok
        self.held_events += int(np.count_nonzero(~ok))
        voltage_V = out[V_OUT]
        self.at_cutoff = (voltage_V < self.eng.lower_cutoff_V) | (voltage_V > self.eng.upper_cutoff_V)
        self.cutoff_events += int(np.count_nonzero(self.at_cutoff))
        self._out = out
        self.current_A = current_A
        self.t_s += dt_s

    @property
    def terminal_V(self) -> np.ndarray:
        """Voltage at the present state with the last current; clamped for held cells (see the module docstring)."""
        voltage_V = self._out[V_OUT]
        if not self.held.any():
            return voltage_V.copy()
        return np.where(self.held, np.clip(voltage_V, self.eng.lower_cutoff_V - HOLD_MARGIN_V,
                                           self.eng.upper_cutoff_V + HOLD_MARGIN_V), voltage_V)

    @property
    def ocv_V(self) -> np.ndarray:
        """OCV at the particles' average concentrations (PyBaMM's bulk OCV)."""
        return self._out[OCV_OUT].copy()

    @property
    def soc(self) -> np.ndarray:
        return 1.0 - self._removed_Ah / self._c20_Ah

    @property
    def temp_C(self) -> np.ndarray:
        return self._out[T_OUT].copy()

    @property
    def capacity_Ah(self) -> np.ndarray:
        """C/20 capacity at the ambient temperature the cells were built for (no ageing in this truth)."""
        return self._c20_Ah.copy()

    @property
    def fresh_capacity_Ah(self) -> np.ndarray:
        return self._c20_Ah.copy()

    @property
    def ambient_C(self) -> float:
        return float(self._solver.inputs[AMBIENT, 0]) - KELVIN

    @ambient_C.setter
    def ambient_C(self, value: float) -> None:
        """A new ambient for the thermal model; the SoC scale keeps the C/20 capacity at the starting ambient."""
        self._solver.inputs[AMBIENT] = float(value) + KELVIN
