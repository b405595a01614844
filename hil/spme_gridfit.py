"""The two-RC model fitted to PyBaMM's SPMe over a temperature grid (hil.spme_fit: the same tests and fitter at
one temperature).

Over a temperature grid (fit_grid), for a parameter set whose SPMe has temperature-dependent kinetics, diffusion and
OCV (ORegan2022), per grid temperature the same tests and fitter, so each row of the (SoC, T) tables is what that
temperature's tests give:
- OCV from that temperature's C/20 test, the cell HELD at the temperature (a thermostat on the lumped model's
  ambient), on that test's own SoC scale: the rig's true SoC at an ambient is defined on the C/20 capacity at that
  ambient (hil.physics.pybamm_cells), and the rows carry the SPMe's entropic shift without a model of it. The file's
  one capacity is the 25 degC C/20 capacity (the schema has no capacity per temperature); ECM and board count on it.
- R0 and I0 from the steps of that temperature's HPPC pulses (cell held), the asinh scale 2RT/F at that temperature;
  a pulse stops at the cut-offs, as a cycler's voltage limits stop it, and a cut pulse is left out (cold: the 6C
  pulses, the regen pulses near full), as is one whose exit step outgrows its entry step (_steps_at).
- R1, C1, R2, C2 from training drives (udds_like) started at every grid temperature from rest at SoC 1, 0.7 and 0.4,
  the cell heating freely as on the rig (held at 0 degC, the SPMe's voltage collapses under udds_like's 2C peaks at
  SoC ~0.75; free, it warms by ~20 K within the drive), fitted jointly (fit_rc_grid): R1 and R2 per SoC knot at 25 degC
  times an Arrhenius factor per branch, tabulated on the rows, one tau1 and tau2.
- Hysteresis band, thermal values: the 25 degC row's. dOCV/dT per SoC: the least-squares slope of the OCV rows.
  Activation energies (beyond the grid): ln R0 and ln I0 (mean over SoC) against 1/T over the rows.
- The tables are cut to the SoC points a board can load (BOARD_TABLE_POINTS, board_soc_grid).
Validation: free-running drives (the cell heats as on the rig) at 0 and 25 degC ambient, US06 and UDDS-like ones
never used for training (other seeds), replayed through the rig's ECM (hil.physics.ecm: bilinear in SoC and T, the
logged SPMe temperature in).

    python -m hil.spme_fit --parameters ORegan2022 --temps 0,5,10,15,25,40 \
        --out models/cells/oregan2022_spme_fit.json
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import lsq_linear, minimize  # type: ignore[import-untyped]

from hil import cellfit
from hil.cycler import CyclerLog
from hil.physics.ecm import OCV, Ecm
from hil.physics.params import from_dict
from hil.physics.pybamm_cells import engine, pybamm
from hil.spme_fit import (
    CHEMISTRY,
    CITATIONS,
    NAME,
    PULSE_C_RATE,
    PULSE_C_RATES,
    REFERENCE_C,
    TRAIN_FIRST_SEED,
    VALIDATION_FIRST_SEED,
    Conditions,
    _breakdown,
    _package_version,
    _thermal,
    _write,
    c20_log,
    drive_log,
    hppc_log,
    training_log,
    training_seeds,
    udds_log,
)

# Temperature grid fit (fit_grid).
GRID_FIT_VERSION = "1"

VALIDATION_AMBIENTS_C = (0.0, 25.0)

VALIDATION_PART_SOC = 0.7  # a further UDDS-like validation drive starts at rest here, as the cold bench scenario

# Training drives of a grid row start at rest at these SoCs: a drive warms its cell within minutes, so a drive from
# full alone has cold data only near full.
GRID_TRAIN_STARTS_SOC = (1.0, 0.7, 0.4)

# The grid drive fit's slow pair is kept within two minutes. Free, it takes ~10 min (568 s) for 1 % less training
# RMSE (17.8 vs 18.0 mV), but a branch that slow holds a voltage offset for many minutes, and the board's EKF lets its
# branch states take up an OCV (SoC) error: the host EKF of the shipped configuration, started 30 % off on the
# validation drives (never the bench's), was 1.1-5.7 % RMSE after 20 min with tau2 568 s, 0.6-2.9 % with tau2
# <= 240 s, 0.4-1.9 % with <= 120 s and 0.5-1.8 % with <= 60 s (18.4 mV training RMSE).
GRID_TAU2_BOUNDS_S = (cellfit.TAU2_BOUNDS_S[0], 120.0)

GRID_TAU1_STARTS_S = (1.0, 5.0, 15.0)  # starts of the time-constant search

GRID_TAU2_STARTS_S = (30.0, 60.0, 120.0)

GRID_EA_STARTS_J_PER_MOL = (20e3, 50e3)

GRID_EA_BOUNDS_J_PER_MOL = (0.0, 120e3)

GRID_EA_SCALE_J_PER_MOL = 1e4  # the energies' unit in the search, so that one tolerance suits all its variables

# SoC x temperature breakpoints per table of a grid fit: the board loads its model with json.load, and beside a
# 16-cell EKF under -X heapsize=160k (engine/streamrun.py) 121 x 2 and 30 x 7 (SoC x T) tables loaded, 40 x 7 and
# 121 x 3 did not (measured with hil.soc_eval.run_board). The SoC grid is cut to fit (board_soc_grid).
BOARD_TABLE_POINTS = 216

GRID_KNOT_MIN_SAMPLES = 60.0  # samples (s) of drive data a drive-fit knot needs (weights summed) to be fitted

GRID_SMOOTH_A = 100.0  # weight of the drive fit's smoothness rows (fit_rc_grid), a current

STEP_ASYMMETRY = 0.1  # a pulse whose exit step differs more from its entry step is left out of a row's step fit


def grid_name(parameter_set: str) -> str:
    return f"{parameter_set.lower()}_spme_fit"


@dataclass(frozen=True)
class GridRow:
    """One temperature of the grid fit: its logs (fit_row), the hil.cellfit fit of its C/20 and HPPC logs, per pulse
    set (SoC, R0, I0, step-fit RMSE in mV, pulses used) refitted with 2RT/F at temp_C (_steps_at)."""

    temp_C: float
    logs: dict[str, CyclerLog]
    cell: cellfit.CellFit
    steps: tuple[tuple[float, float, float, float, int], ...]

    def on_grid(self, column: int) -> np.ndarray:
        """Column 1 (R0) or 2 (I0) of the steps on hil.cellfit.SOC_GRID, end values held."""
        steps = self.steps  # by rising SoC, as hil.cellfit.fit_steps lists them
        return np.interp(cellfit.SOC_GRID, [s[0] for s in steps], [s[column] for s in steps])


def _steps_at(cell: cellfit.CellFit, pulse: CyclerLog, pulse_current_A: float,
              temp_C: float) -> tuple[tuple[float, float, float, float, int], ...]:
    """Per pulse set of cell.steps (SoC, R0, I0, RMSE in mV, pulses used): R0 and I0 refitted with the asinh scale
    2RT/F at temp_C (hil.cellfit.fit_steps takes 25 degC) to the steps of the pulses whose exit step mirrors their
    entry step within STEP_ASYMMETRY. A larger exit step means the pulse has drained the electrolyte or the particle
    surface (cold, 6C: entry 0.54 V, exit 0.82 V at 0 degC), so its step is no longer the instantaneous R0*I + eta."""
    b_V = cellfit.thermal_voltage_V(temp_C)
    v = pulse.voltage_V
    out = []  # the sets hil.cellfit.fit_steps fitted, in its order
    for fit, (_, pulses) in zip(cell.steps, cellfit.reference_sets(pulse, pulse_current_A), strict=True):
        entry_V = np.array([v[first] - v[first - 1] for first, _ in pulses])
        exit_V = np.array([v[end - 1] - v[end] for _, end in pulses])  # reversed: signed like the current
        keep = np.abs(exit_V - entry_V) <= STEP_ASYMMETRY * np.abs(entry_V)
        currents, steps_V = np.array(fit.currents_A)[keep], 0.5 * (entry_V + exit_V)[keep]
        if cellfit._levels(currents) < cellfit.MIN_RATES:
            raise ValueError(f"the pulse set at SoC {fit.soc:.3f} ({temp_C:g} degC) keeps fewer than "
                             f"{cellfit.MIN_RATES} current levels")
        r0, i0 = cellfit.fit_step(currents, steps_V, temp_C)
        residual_V = r0 * currents + b_V * np.arcsinh(currents / (2.0 * i0)) - steps_V
        out.append((fit.soc, r0, i0, float(np.sqrt(np.mean(residual_V ** 2)) * 1e3), int(np.count_nonzero(keep))))
    return tuple(out)


def fit_row(parameter_set: str, temp_C: float) -> GridRow:
    """The C/20 and HPPC logs of a cell held at temp_C, the training logs of cells starting at temp_C from rest at
    GRID_TRAIN_STARTS_SOC and heating freely, and the fit of the first two."""
    held = Conditions(parameter_set, temp_C, held=True, pulses_stop_at_cutoffs=True)
    free = Conditions(parameter_set, temp_C)
    logs = {"c20": c20_log(held), "pulse": hppc_log(held),
            **{_training_key(soc): training_log(free, soc) for soc in GRID_TRAIN_STARTS_SOC}}
    pulse_A = PULSE_C_RATE * engine("spme", parameter_set).nominal_capacity_Ah
    cell = cellfit.fit(logs["c20"], logs["pulse"], grid_name(parameter_set), pulse_current_A=pulse_A)
    return GridRow(temp_C, logs, cell, _steps_at(cell, logs["pulse"], pulse_A, temp_C))


def _training_key(initial_soc: float) -> str:
    return "training" if initial_soc == 1.0 else f"training from SoC {initial_soc:g}"


def _training(row: GridRow) -> list[tuple[str, CyclerLog]]:
    return [(key, log) for key, log in row.logs.items() if key.startswith("training")]


def _table(temps_C: list[float], rows: list[np.ndarray]) -> dict[str, Any]:
    """A (SoC, T) table on hil.cellfit.SOC_GRID, one row per temperature."""
    return {"SoC": cellfit._rounded(cellfit.SOC_GRID), "Temperature [degC]": temps_C,
            "values": [cellfit._rounded(np.asarray(row)) for row in rows]}


def _activation(rows: list[GridRow]) -> tuple[float, float]:
    """Activation energies (J/mol) of R0 and I0: slopes of ln R0 and ln I0 (means over SoC) against 1/T over the rows,
    ln R = c + Ea/(R*T), ln I0 = c - Ea/(R*T); floored at 0 as the loader requires."""
    inverse_K = np.array([1.0 / (row.temp_C + cellfit.KELVIN) for row in rows])
    ln_r0, ln_i0 = (np.array([np.mean(np.log(row.on_grid(column))) for row in rows]) for column in (1, 2))
    gas = cellfit.GAS_CONSTANT_J_per_molK
    return (max(gas * float(np.polyfit(inverse_K, ln_r0, 1)[0]), 0.0),
            max(-gas * float(np.polyfit(inverse_K, ln_i0, 1)[0]), 0.0))


def fit_grid(parameter_set: str, temps_C: list[float], progress: Callable[[str], None] | None = None,
             ) -> tuple[dict[str, Any], list[GridRow], GridDriveFit]:
    """The two-RC model over a temperature grid (see the module docstring): the parameter file, the rows and the
    joint fit of the RC pairs to the rows' training drives."""
    if REFERENCE_C not in temps_C or sorted(set(temps_C)) != list(temps_C):
        raise ValueError(f"the grid must be ascending, without repeats, and include {REFERENCE_C:g} degC: {temps_C}")
    rows = []
    for temp_C in temps_C:
        rows.append(fit_row(parameter_set, temp_C))
        if progress:
            progress(f"{temp_C:g} degC: C/20, HPPC and training logs simulated, C/20 and HPPC fitted")
    pulse_fitted = _grid_params(parameter_set, rows)
    soc = board_soc_grid(np.array(pulse_fitted["OCV [V]"]["values"]), BOARD_TABLE_POINTS // len(rows))
    pulse_fitted = on_soc_grid(pulse_fitted, soc)
    drive = fit_rc_grid(pulse_fitted, [log for row in rows for _, log in _training(row)])
    if progress:
        progress(f"RC pairs fitted to the training drives ({drive.evaluations} evaluations)")
    return on_soc_grid(_with_drive_fit(parameter_set, pulse_fitted, drive, rows), soc), rows, drive


def board_soc_grid(ocv_rows: np.ndarray, points: int) -> np.ndarray:
    """The subset of hil.cellfit.SOC_GRID a grid fit is tabulated on (BOARD_TABLE_POINTS): DRIVE_KNOTS_SOC (R1, R2
    are linear between them) and then, one at a time, the point where linear interpolation of the OCV rows (on
    SOC_GRID) over the subset misses most, in SoC: |OCV error| / (dOCV/dSoC), the worst row."""
    grid = cellfit.SOC_GRID
    slope = np.abs(np.gradient(ocv_rows, grid, axis=1))
    chosen = set(np.searchsorted(grid, cellfit.DRIVE_KNOTS_SOC).tolist())
    while len(chosen) < points:
        taken = sorted(chosen)
        miss = np.array([np.interp(grid, grid[taken], row[taken]) for row in ocv_rows]) - ocv_rows
        chosen.add(int(np.argmax(np.max(np.abs(miss) / slope, axis=0))))
    return np.asarray(grid[sorted(chosen)])


def on_soc_grid(params: dict[str, Any], soc: np.ndarray) -> dict[str, Any]:
    """Every table of a parameter file resampled onto the SoC grid soc (linear, as the ECM interpolates)."""
    def resampled(table: dict[str, Any]) -> dict[str, Any]:
        values = np.array(table["values"])
        rows = values if values.ndim == 2 else values[np.newaxis]
        out = [cellfit._rounded(np.interp(soc, table["SoC"], row)) for row in rows]
        return {**table, "SoC": cellfit._rounded(soc), "values": out if values.ndim == 2 else out[0]}

    return {key: resampled(value) if isinstance(value, dict) and "SoC" in value else value
            for key, value in params.items()}


def _grid_params(parameter_set: str, rows: list[GridRow]) -> dict[str, Any]:
    """The grid's parameter file with each row's pulse-fitted RC pairs (the drive fit replaces them)."""
    temps = [row.temp_C for row in rows]
    reference = rows[temps.index(REFERENCE_C)].cell.params
    ocv = np.array([row.cell.ocv.ocv_V for row in rows])
    # dOCV/dT at fixed SoC: least-squares slope over the rows, per SoC.
    entropic = np.polyfit(np.array(temps), ocv, 1)[0]
    ea_r0, ea_i0 = _activation(rows)
    simulated = _simulated(parameter_set, temps)
    capacities = ", ".join(f"{row.temp_C:g} degC {row.cell.ocv.capacity_Ah:.4f} Ah" for row in rows)
    rates = ", ".join(f"{c:g}C" for c in (PULSE_C_RATE, *PULSE_C_RATES))
    activation_source = (f"{simulated}: slope of ln R0 and of ln I0 (means over SoC) against 1/T over the grid rows "
                         f"(hil.spme_fit._activation); applied only beyond the grid, to R0, R1, R2 and to I0.")
    sources = {
        **reference["sources"],
        "Nominal capacity [A.h]": (f"{simulated}: charge of the C/20 discharge from full to 2.5 V at "
                                   f"{REFERENCE_C:g} degC. C/20 capacity per temperature: {capacities}; the file has "
                                   "one capacity (schema), so the rig's ECM and the board count charge on this one."),
        "Lower voltage cut-off [V]": f"PyBaMM {parameter_set} 'Lower voltage cut-off [V]'.",
        "Upper voltage cut-off [V]": "LG M50 data-sheet charge voltage (hil.physics.pybamm_cells.UPPER_CUTOFF_V).",
        "OCV [V]": (f"{simulated}: per temperature, the mean of that temperature's C/20 discharge and charge branches "
                    "(hil.cellfit.fit_ocv) on that test's own SoC scale (its C/20 capacity), which is how the rig "
                    "defines the true SoC of a PyBaMM cell at an ambient."),
        "OCV hysteresis [V]": (f"{simulated}: the {REFERENCE_C:g} degC row's C/20 half gap minus I*(R0+R1+R2) + "
                               "(2RT/F)*asinh(I/(2*I0)) with its pulse-fitted R1, R2, floored at 0: resistive residue "
                               "(the SPMe has no hysteresis); one band for every temperature."),
        "R0 [Ohm]": (f"{simulated}: per temperature, voltage steps 0.1 s into and after 10 s pulses at {rates} "
                     "discharge (negative: regen) at SoC 1.0-0.1, R0 and I0 fitted jointly with 2RT/F at that "
                     "temperature (hil.cellfit.fit_step), the cell held at it; a pulse stops at the cut-offs and a "
                     "cut pulse is left out (cold: 6C, regen near full), as is a pulse whose exit step differs from "
                     f"its entry step by more than {STEP_ASYMMETRY:.0%} (electrolyte or particle surface drained: "
                     "cold, 6C; hil.spme_fit._steps_at)."),
        "Resistance activation energy [J/mol]": activation_source,
        "Exchange current activation energy [J/mol]": activation_source,
        "Entropic change [V/K]": (f"{simulated}: least-squares slope of the OCV rows against temperature at each SoC "
                                  "(the SPMe's OCP entropic terms, with the shift of the C/20 SoC scale)."),
    }
    sources["Exchange current [A]"] = sources["R0 [Ohm]"]
    rc = [cellfit.pulse_rc_tables(row.cell.pulses) for row in rows]
    pulse_rc = (f"{simulated}: per temperature, the relaxations after its 1C HPPC pulses "
                "(hil.cellfit.pulse_rc_tables); the start of the drive fit, which replaces them.")
    sources.update({key: pulse_rc for key in rc[0]})
    thermal = {**reference["Thermal"]}
    for key, (value, source) in _thermal(parameter_set).items():
        thermal[key] = cellfit._rounded(value)
        sources[f"Thermal.{key}"] = source
    return {
        **reference,
        "name": grid_name(parameter_set),
        "chemistry": CHEMISTRY,
        "sources": sources,
        "OCV [V]": _table(temps, list(ocv)),
        "R0 [Ohm]": _table(temps, [row.on_grid(1) for row in rows]),
        "Exchange current [A]": _table(temps, [row.on_grid(2) for row in rows]),
        **{key: _table(temps, [tables[key]["values"][0] for tables in rc]) for key in rc[0]},
        "Resistance activation energy [J/mol]": cellfit._rounded(ea_r0),
        "Exchange current activation energy [J/mol]": cellfit._rounded(ea_i0),
        "Entropic change [V/K]": {"SoC": cellfit._rounded(cellfit.SOC_GRID), "values": cellfit._rounded(entropic)},
        "Thermal": thermal,
    }


def _simulated(parameter_set: str, temps_C: list[float]) -> str:
    return (f"Simulated, not measured: PyBaMM {pybamm.__version__} SPMe (lumped thermal) with the {parameter_set} "
            f"set ({CITATIONS[parameter_set]}), one nominal cell per grid temperature "
            f"({', '.join(f'{t:g}' for t in temps_C)} degC) (hil.spme_fit.fit_grid)")


@dataclass(frozen=True)
class GridDriveFit:
    """The RC pairs fitted jointly to training drives over the temperature grid (fit_rc_grid)."""

    tau1_s: float
    tau2_s: float
    ea1_J_per_mol: float
    ea2_J_per_mol: float
    r1_ohm: list[float]  # at DRIVE_KNOTS_SOC and REFERENCE_C
    r2_ohm: list[float]
    rmse_before_mV: list[float]  # per drive, with the RC pairs of the file the fit started from
    rmse_mV: list[float]  # per drive
    evaluations: int  # of the linear fit in the search

    def tables(self, temps_C: list[float]) -> dict[str, Any]:
        """R1, C1, R2, C2 on hil.cellfit.SOC_GRID at temps_C: R(SoC, T) = R(SoC, T_ref)*exp(Ea/R*(1/T - 1/T_ref)),
        C = tau/R."""
        out = {}
        for n, (tau_s, ea, r_ohm) in enumerate(((self.tau1_s, self.ea1_J_per_mol, self.r1_ohm),
                                                 (self.tau2_s, self.ea2_J_per_mol, self.r2_ohm)), start=1):
            r = [np.interp(cellfit.SOC_GRID, cellfit.DRIVE_KNOTS_SOC, r_ohm) * _arrhenius(ea, t) for t in temps_C]
            out[f"R{n} [Ohm]"] = _table(temps_C, r)
            out[f"C{n} [F]"] = _table(temps_C, [tau_s / row for row in r])
        return out


def _arrhenius(ea_J_per_mol: float, temp_C: float | np.ndarray) -> Any:
    """exp(Ea/R*(1/T - 1/T_ref)), T_ref = REFERENCE_C: a resistance at temp_C over its value at REFERENCE_C."""
    return np.exp(ea_J_per_mol / cellfit.GAS_CONSTANT_J_per_molK
                  * (1.0 / (np.asarray(temp_C) + cellfit.KELVIN) - 1.0 / (REFERENCE_C + cellfit.KELVIN)))


def fit_rc_grid(params: dict[str, Any], logs: list[CyclerLog]) -> GridDriveFit:
    """R1 and R2 at the SoC knots (REFERENCE_C), their activation energies and one tau1 and tau2, by least squares on
    the voltage of training drives replayed through the rig's ECM (replay_ecm) with the file's OCV, hysteresis, R0
    and I0. R_j(SoC, T) = R_j(SoC, T_ref)*exp(Ea_j/R*(1/T - 1/T_ref)) on the grid rows, linear in T between them as the
    ECM interpolates (beyond the grid: the edge row times the Arrhenius factor of the file's energy): the drives warm
    their cells out of the cold within minutes, so a free value per (row, knot) has no data at cold and low SoC, an
    energy per branch has. As in hil.cellfit.fit_drive, for fixed time constants and energies an RC branch is a linear
    filter of R(SoC, T)*I, linear in the knot values, which come from bounded linear least squares; the time
    constants and energies are searched (the best of a grid of starts, then Nelder-Mead). With C = tau/R the ECM's
    time constants are tau on the rows; between rows R*C, both interpolated, departs from tau by about the square
    of the relative R step between the rows."""
    temps = np.array(params["R0 [Ohm]"]["Temperature [degC]"])
    knots = np.array(cellfit.DRIVE_KNOTS_SOC)
    ea_over_R = params["Resistance activation energy [J/mol]"] / cellfit.GAS_CONSTANT_J_per_molK
    tiny = [cellfit.DRIVE_R_FLOOR_OHM * 1e-4] * knots.size
    static = {**params, **GridDriveFit(1.0, 1.0, 0.0, 0.0, tiny, tiny, [], [], 0).tables(list(temps))}  # no RC
    on_socs, currents, on_temps, targets, dts = [], [], [], [], []
    for log in logs:
        soc, static_V = replay_ecm(static, log)
        # Step k's branch input: the parameters at the step's start (row k - 1's state) times the step's current.
        soc0, temp0_C = (np.concatenate(([x[0]], x[:-1])) for x in (soc, np.asarray(log.temp_C)))
        on_socs.append(np.stack([np.interp(soc0, knots, row) for row in np.eye(knots.size)], axis=1))
        currents.append(log.current_A[:, None])
        edge_C = np.clip(temp0_C, temps[0], temps[-1])
        beyond = np.exp(ea_over_R * (1.0 / (temp0_C + cellfit.KELVIN) - 1.0 / (edge_C + cellfit.KELVIN)))
        on_temps.append(np.stack([np.interp(edge_C, temps, row) for row in np.eye(temps.size)], axis=1)
                        * beyond[:, None])
        targets.append(log.voltage_V - static_V)
        dts.append(np.diff(log.time_s, prepend=log.time_s[0]))
    target_V = np.concatenate(targets)
    # A knot the drives hardly reach (below the SoC where they stop) takes the value of the nearest one they do.
    samples = np.sum(np.vstack(on_socs), axis=0)
    reached = np.flatnonzero(samples >= GRID_KNOT_MIN_SAMPLES)
    # tied[j, k] = 1 where knot k takes the value of reached knot j.
    tied = np.eye(reached.size)[:, np.argmin(np.abs(knots[:, None] - knots[reached][None, :]), axis=1)]
    units = [on_soc @ tied.T * current_A for on_soc, current_A in zip(on_socs, currents, strict=True)]

    # Smoothness: each step between neighbouring knots of a branch costs (GRID_SMOOTH_A * step)^2, as a voltage
    # residual would. Without it the two branches trade resistance knot by knot where the drives say little (near
    # full, cold): R2 went 29, 0.01, 29 mOhm at SoC 0.9, 0.95, 1; the voltage under load then falls and rises with
    # SoC, and a filter's dV/dSoC points the wrong way there.
    steps = GRID_SMOOTH_A * np.diff(np.eye(reached.size), axis=0)
    penalty = np.block([[steps, np.zeros_like(steps)], [np.zeros_like(steps), steps]])
    zeros = np.zeros(len(penalty))

    def knot_fit(x: np.ndarray) -> Any:
        """x: ln tau1, ln tau2, and Ea1, Ea2 in units of GRID_EA_SCALE_J_PER_MOL."""
        columns = []
        for unit, on_temp, dt in zip(units, on_temps, dts, strict=True):
            factors = [on_temp @ _arrhenius(ea * GRID_EA_SCALE_J_PER_MOL, temps) for ea in x[2:]]
            columns.append(np.hstack([cellfit._rc_V(unit * factor[:, None], float(np.exp(log_tau)), dt)
                                      for log_tau, factor in zip(x[:2], factors, strict=True)]))
        return lsq_linear(np.vstack([*columns, penalty]), np.concatenate([target_V, zeros]),
                          bounds=(cellfit.DRIVE_R_FLOOR_OHM, cellfit.R_BOUNDS_OHM[1]))

    ea_bounds = np.array(GRID_EA_BOUNDS_J_PER_MOL) / GRID_EA_SCALE_J_PER_MOL
    bounds = [np.log(cellfit.TAU1_BOUNDS_S), np.log(GRID_TAU2_BOUNDS_S), ea_bounds, ea_bounds]
    starts = [np.array([np.log(t1), np.log(t2), ea / GRID_EA_SCALE_J_PER_MOL, ea / GRID_EA_SCALE_J_PER_MOL])
              for t1 in GRID_TAU1_STARTS_S for t2 in GRID_TAU2_STARTS_S for ea in GRID_EA_STARTS_J_PER_MOL]
    start = min(starts, key=lambda x: knot_fit(x).cost)
    search = minimize(lambda x: knot_fit(x).cost, start, method="Nelder-Mead", bounds=bounds,
                      options={"xatol": cellfit.DRIVE_LOG_TAU_TOLERANCE, "fatol": 1e-6})
    best = knot_fit(search.x)
    split = np.cumsum([len(log) for log in logs])[:-1]
    return GridDriveFit(tau1_s=float(np.exp(search.x[0])), tau2_s=float(np.exp(search.x[1])),
                        ea1_J_per_mol=float(search.x[2] * GRID_EA_SCALE_J_PER_MOL),
                        ea2_J_per_mol=float(search.x[3] * GRID_EA_SCALE_J_PER_MOL),
                        r1_ohm=(best.x[:reached.size] @ tied).tolist(), r2_ohm=(best.x[reached.size:] @ tied).tolist(),
                        rmse_before_mV=[_rmse_mV(replay_ecm(params, log)[1] - log.voltage_V) for log in logs],
                        rmse_mV=[_rmse_mV(part) for part in np.split(best.fun[:target_V.size], split)],
                        evaluations=len(starts) + int(search.nfev) + 1)


def _rmse_mV(err_V: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err_V ** 2)) * 1e3)


def _with_drive_fit(parameter_set: str, params: dict[str, Any], drive: GridDriveFit,
                    rows: list[GridRow]) -> dict[str, Any]:
    """The file with the jointly fitted RC pairs in place of the pulse-fitted ones."""
    temps = [row.temp_C for row in rows]
    drives = [(row.temp_C, key, log) for row in rows for key, log in _training(row)]
    per_drive = "; ".join(f"{temp_C:g} degC {key}, seeds {training_seeds(log)}: {after:.2f} mV ({before:.2f} mV with "
                          "the pulse-fitted pairs)" for (temp_C, key, log), after, before
                          in zip(drives, drive.rmse_mV, drive.rmse_before_mV, strict=True))
    starts = ", ".join(f"{soc:g}" for soc in GRID_TRAIN_STARTS_SOC)
    rc_source = (f"{_simulated(parameter_set, temps)}: fitted jointly to the voltage of training drives at every grid "
                 f"temperature (udds_like seeds from {TRAIN_FIRST_SEED} to 2.5 V, from rest at SoC {starts} at that "
                 "ambient, the cell heating freely; never a validation drive), replayed through the rig's ECM with "
                 "this "
                 "file's OCV, hysteresis, R0, I0 and capacity (hil.spme_fit.fit_rc_grid): R1 and R2 at "
                 f"{REFERENCE_C:g} degC on the SoC knots {list(cellfit.DRIVE_KNOTS_SOC)} by bounded linear least "
                 f"squares (R >= {cellfit.DRIVE_R_FLOOR_OHM:g} Ohm), scaled to the rows by exp(Ea/R*(1/T - "
                 f"1/T_ref)) with Ea1 {drive.ea1_J_per_mol:.4g} and Ea2 {drive.ea2_J_per_mol:.4g} J/mol; one tau1 "
                 f"({drive.tau1_s:.3g} s) and one tau2 ({drive.tau2_s:.3g} s); the four by Nelder-Mead; C = tau/R. "
                 f"Training RMSE per drive: {per_drive}.")
    sources = {**params["sources"], **{key: rc_source for key in ("R1 [Ohm]", "C1 [F]", "R2 [Ohm]", "C2 [F]")}}
    return {**params, "sources": sources, **drive.tables(temps)}


def replay_ecm(params: dict[str, Any], log: CyclerLog, soc0: float | None = None,
               h0: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(SoC, terminal voltage) of the rig's ECM (hil.physics.ecm: tables bilinear in SoC and T, Arrhenius and dOCV/dT
    beyond the grid) driven by the log's current at the log's cell temperature, as the rig steps it: the parameters
    at the start of each step advance the state, the read-out is at the end-of-step state and temperature. Starts at
    soc0 (default: the log's first SoC, else 1) with hysteresis state h0 (default: +1, the charge branch, from full,
    else 0: the SPMe has no hysteresis)."""
    if soc0 is None:
        soc0 = 1.0 if log.soc is None else float(log.soc[0])
    ecm = Ecm(from_dict(params), 1)
    ecm.soc = np.array([soc0])
    ecm.h = np.array([(1.0 if soc0 >= 1.0 else 0.0) if h0 is None else h0])
    temp_C = log.temp_C if log.temp_C is not None else np.full(len(log), REFERENCE_C)
    soc, voltage_V = np.empty(len(log)), np.empty(len(log))
    for k in range(len(log)):
        current_A = float(log.current_A[k])
        if k:
            ecm.advance(current_A, float(log.time_s[k] - log.time_s[k - 1]), ecm.evaluate(temp_C[k - 1:k]))
        values = ecm.evaluate(temp_C[k:k + 1])
        soc[k] = ecm.soc[0]
        voltage_V[k] = values[OCV][0] + ecm.overpotential_V(current_A, values)[0]
    return soc, voltage_V


def _range(log: CyclerLog) -> list[float] | None:
    return None if log.temp_C is None else [round(float(np.min(log.temp_C)), 2), round(float(np.max(log.temp_C)), 2)]


def compare_ecm(params: dict[str, Any], log: CyclerLog) -> dict[str, Any]:
    """The rig's ECM on a drive (replay_ecm) against the SPMe's voltage: RMSE, extremes and breakdown."""
    soc, model_V = replay_ecm(params, log)
    err_mV = (model_V - log.voltage_V) * 1e3
    return {"file": log.source["path"], "duration [s]": round(log.duration_s, 1),
            "final SoC (ECM)": round(float(soc[-1]), 4),
            "SPMe temperature [degC]": _range(log),
            "voltage RMSE [mV]": round(float(np.sqrt(np.mean(err_mV ** 2))), 2),
            "max abs voltage error [mV]": round(float(np.max(np.abs(err_mV))), 1),
            "mean voltage error [mV]": round(float(np.mean(err_mV)), 2),
            **_breakdown(soc, err_mV, log.current_A)}


def validation_logs(parameter_set: str) -> dict[str, dict[str, CyclerLog]]:
    """Per validation ambient, a US06 and a UDDS-like drive (seeds from VALIDATION_FIRST_SEED) from full to 2.5 V
    and a UDDS-like one from rest at VALIDATION_PART_SOC, the cell heating freely as on the rig."""
    out = {}
    for ambient_C in VALIDATION_AMBIENTS_C:
        conditions = Conditions(parameter_set, ambient_C)
        out[f"{ambient_C:g} degC"] = {
            "US06": drive_log(conditions), "UDDS-like": udds_log(conditions, VALIDATION_FIRST_SEED),
            f"UDDS-like from SoC {VALIDATION_PART_SOC:g}": udds_log(conditions, VALIDATION_FIRST_SEED,
                                                                    initial_soc=VALIDATION_PART_SOC)}
    return out


def grid_card(parameter_set: str, params: dict[str, Any], rows: list[GridRow], drive: GridDriveFit,
              validation: dict[str, dict[str, CyclerLog]], others: dict[str, dict[str, Any]],
              command: str) -> dict[str, Any]:
    """Provenance and quality of a grid fit: per row its tests and fits, the joint RC fit, the validation per ambient
    and drive, and the same drives through the other cell files given (others: name -> parameter file)."""
    reference = next(row for row in rows if row.temp_C == REFERENCE_C)
    after, before = iter(drive.rmse_mV), iter(drive.rmse_before_mV)  # per training drive, in the rows' order
    held = {row.temp_C: max(float(np.max(np.abs(np.asarray(row.logs[role].temp_C) - row.temp_C)))
                            for role in ("c20", "pulse")) for row in rows}
    card: dict[str, Any] = {
        "name": params["name"],
        "fitter": f"hil.spme_fit grid {GRID_FIT_VERSION} (hil.cellfit {cellfit.FIT_VERSION})",
        "package version": _package_version(),
        "command": command,
        "dataset": f"Simulated with PyBaMM {pybamm.__version__}: SPMe, lumped thermal, {parameter_set} "
                   f"({CITATIONS[parameter_set]}), default mesh, CVODES via CasADi (hil.physics.pybamm_cells).",
        "grid [degC]": [row.temp_C for row in rows],
        "capacity": {
            "C/20 by temperature [A.h]": {f"{row.temp_C:g}": round(row.cell.ocv.capacity_Ah, 4) for row in rows},
            "file (the 25 degC row) [A.h]": params["Nominal capacity [A.h]"],
            "0 degC vs 25 degC [%]": next((round((row.cell.ocv.capacity_Ah / reference.cell.ocv.capacity_Ah - 1) * 100,
                                                 3) for row in rows if row.temp_C == 0.0), None),
        },
        "activation energies [J/mol]": {"R0": params["Resistance activation energy [J/mol]"],
                                        "I0": params["Exchange current activation energy [J/mol]"]},
        "rows": [{
            "temperature [degC]": row.temp_C,
            "C/20 and HPPC: cell temperature off the grid temperature, max [K]": round(held[row.temp_C], 3),
            "C/20 capacity [A.h]": round(row.cell.ocv.capacity_Ah, 4),
            "OCV range [V]": [round(float(row.cell.ocv.ocv_V[0]), 4), round(float(row.cell.ocv.ocv_V[-1]), 4)],
            "pulse sets": len(row.steps),
            "pulses in the step fits (of those within the cut-offs)": [sum(s[4] for s in row.steps),
                                                                      sum(len(f.currents_A) for f in row.cell.steps)],
            "R0 [mOhm] at SoC 0.1 / 0.5 / 0.9": [round(float(np.interp(s, cellfit.SOC_GRID, row.on_grid(1))) * 1e3, 2)
                                                 for s in (0.1, 0.5, 0.9)],
            "I0 [A] at SoC 0.1 / 0.5 / 0.9": [round(float(np.interp(s, cellfit.SOC_GRID, row.on_grid(2))), 3)
                                              for s in (0.1, 0.5, 0.9)],
            "step fit RMSE max [mV]": round(max(s[3] for s in row.steps), 2),
            "training": [{"source": log.source["path"], "seeds": training_seeds(log),
                          "duration [s]": round(log.duration_s, 1), "cell temperature [degC]": _range(log),
                          "RMSE [mV]": round(next(after), 2),
                          "RMSE with the pulse-fitted RC pairs [mV]": round(next(before), 2)}
                         for _, log in _training(row)],
        } for row in rows],
        "drive fit": {"knots [SoC]": list(cellfit.DRIVE_KNOTS_SOC),
                      f"R1 at {REFERENCE_C:g} degC [mOhm]": cellfit._rounded(np.array(drive.r1_ohm) * 1e3, 4),
                      f"R2 at {REFERENCE_C:g} degC [mOhm]": cellfit._rounded(np.array(drive.r2_ohm) * 1e3, 4),
                      "Ea1 [J/mol]": round(drive.ea1_J_per_mol), "Ea2 [J/mol]": round(drive.ea2_J_per_mol),
                      "tau1 [s]": round(drive.tau1_s, 3), "tau2 [s]": round(drive.tau2_s, 2),
                      "evaluations": drive.evaluations},
        "table SoC points (board_soc_grid)": len(params["OCV [V]"]["SoC"]),
        "validation": {ambient: {kind: compare_ecm(params, log) for kind, log in logs.items()}
                       for ambient, logs in validation.items()},
        "validation seeds (UDDS-like)": f"udds_like({VALIDATION_FIRST_SEED}), ({VALIDATION_FIRST_SEED + 1}), ...",
        "other cell files on the same drives [voltage RMSE mV]": {
            name: {ambient: {kind: compare_ecm(other, log)["voltage RMSE [mV]"] for kind, log in logs.items()}
                   for ambient, logs in validation.items()} for name, other in others.items()},
        "limitations": [
            "OCV, R0 and I0 rows are fitted with the cell held at the row's temperature, the RC pairs jointly on "
            "drives that warm the cell (0 degC ambient: to ~20 degC) as R(SoC, 25 degC) times one Arrhenius factor "
            "per branch. Between rows the ECM interpolates linearly in T, while the SPMe's kinetics and diffusion are "
            "Arrhenius; one tau1 and one tau2 for every temperature, tau2 kept within 120 s (see GRID_TAU2_BOUNDS_S: "
            "a slower branch lets the board's EKF park a SoC error in its branch state).",
            "The OCV rows are on each temperature's C/20 SoC scale, the file has one capacity (25 degC): a cell at "
            "0 degC counts charge on a capacity 0.6 % larger than its own C/20 capacity there.",
            "One hysteresis band (the 25 degC row's resistive residue) for all temperatures; the SPMe has none.",
            "Cold rows have fewer pulses in their step fits: pulses beyond the cut-offs are cut and left out, and "
            "pulses whose exit step outgrows the entry step (drained electrolyte: 6C at 0 degC).",
            "The tables have as many SoC points as a board can load beside a 16-cell EKF (BOARD_TABLE_POINTS): the "
            "OCV between them is linear, chosen where that misses least in SoC.",
            "Two RC pairs stand in for solid and electrolyte diffusion; at 0 degC the SPMe's voltage collapses under "
            "a minute at 2.4C from full (electrolyte depletion, udds_like seed 101), which no two-RC model follows.",
            "Ageing, coulombic efficiency, hysteresis rate and the neighbour conductance are hil.cellfit's literature "
            "values for an NCA 18650, not fitted to this cell.",
        ],
    }
    return card


def run_grid(parameter_set: str, temps_C: list[float], out: Path | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fit over the grid, validate, write the file and its card when out is given. Returns the card."""
    params, rows, drive = fit_grid(parameter_set, temps_C, progress)
    validation = validation_logs(parameter_set)
    if progress:
        progress("validation drives simulated")
    others = {NAME: json.loads((Path(__file__).resolve().parent.parent / "models" / "cells"
                                / f"{NAME}.json").read_text())}
    command = (f"python -m hil.spme_fit --parameters {parameter_set} --temps {','.join(f'{t:g}' for t in temps_C)} "
               f"--out models/cells/{grid_name(parameter_set)}.json")
    card = grid_card(parameter_set, params, rows, drive, validation, others, command)
    if out is not None:
        _write(out, params, card)
    return card

