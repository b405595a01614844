"""Fit our two-RC cell model to PyBaMM's SPMe and measure the fitted model's voltage error on a US06-like drive.

One nominal Chen2020 cell (LG M50, 5 Ah; Chen et al. 2020 J. Electrochem. Soc. 167 080534) at 25 degC runs through the
tests hil.cellfit expects from a cycler, and the logs go through the same fitter as the measured cells:
- C/20 test: rest at full, C/20 discharge to the lower cut-off, rest, C/20 charge to the upper cut-off;
- HPPC: at SoC 1.0, 0.9 .. 0.1 a 10 s 1C discharge pulse logged at 10 Hz (like the Panasonic logs cellfit was
  written for) and a 20 min relaxation (the RC pairs are fitted to it), then 10 s pulses at the other rates of
  PULSE_C_RATES (discharge 0.5C-6C and a 2C regen pulse, spanning US06's -5C..+2C) each with a SHORT_RELAX_S rest
  (cellfit fits R0 and the exchange current I0 to the voltage steps of all of them), then a C/2 discharge to the next
  level and a 20 min rest. The level discharge is at C/2 and lasts minutes, so that cellfit counts it as no pulse.
Those relaxations cannot see the positive particle's solid diffusion (R^2/D ~ 7000 s in Chen2020): with the
pulse-fitted RC pairs the model reads 20-35 mV high after long discharge at low SoC. So the RC pairs are refitted
(hil.cellfit.fit_drive: R1, R2 per SoC knot and one tau1, tau2) to the voltage of a TRAINING drive, seeded synthetic
city cycles (hil.profiles.udds_like, seeds 1, 2, ...) from full to the lower cut-off; R0, I0 and the OCV stay as
fitted above. Then a US06 drive (hil.profiles.us06 C-rates times the cell's nominal 5 Ah, repeated from full until the
lower cut-off) runs through SPMe (lumped thermal, 25 degC ambient) and the fitted model replays it
(hil.cellfit.validate: the logged current and temperature in, coulomb-counted SoC); the RMSE of the voltage difference
is the figure, broken down by SoC and current band in the model card. The US06 drive is never used for fitting. It
warms the cell to ~41 degC, where the SPMe's exchange currents are twice those at 25 degC (Chen2020's Arrhenius
kinetics), so the activation energies of R0 and I0 are fitted too: from the steps of short pulses at all rates at
SoC 0.5 from rest at 25 and at 40 degC (ACTIVATION_TEMPS_C).

    python -m hil.spme_fit --out models/cells/chen2020_spme_fit.json

The multi-temperature fit (fit_grid) is hil.spme_gridfit; this module's command runs it with --temps.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from hil import cellfit
from hil.cycler import CyclerLog
from hil.physics.module import NO_SPREAD
from hil.physics.pybamm_cells import PybammCells, engine, pybamm
from hil.profiles import udds_like, us06

NAME = "chen2020_spme_fit"
FIT_VERSION = "1"
AMBIENT_C = 25.0
PULSE_C_RATE = 1.0  # the pulse whose relaxation gives the RC pairs
PULSE_C_RATES = (0.5, 2.0, 4.0, 6.0, -2.0)  # further pulses for the step fit, discharge > 0 here, -2C regen
PULSE_S = 10.0
RELAX_S = 1200.0
SHORT_RELAX_S = 120.0  # after the further pulses: only their steps are used
LEVEL_C_RATE = 0.5
LEVELS_SOC = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
FAST_DT_S = 0.1  # log step during pulses and the first FAST_LOG_S of a relaxation
FAST_LOG_S = 5.0
SLOW_DT_S = 1.0
C20_DT_S = 60.0
C20_REST_S = 3600.0
DRIVE_STOP_V = 2.5
ACTIVATION_TEMPS_C = (25.0, 40.0)
ACTIVATION_SOC = 0.5
ACTIVATION_PULSE_S = 1.0
TRAIN_FIRST_SEED = 1  # training drive: hil.profiles.udds_like(seed) for seed = 1, 2, ... until the cut-off
# The SoC bands and current bands (A, > 0 charges) of the validation breakdown in the model card.
SOC_BANDS = (0.0, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CURRENT_BANDS_A = ((-np.inf, -15.0), (-15.0, -8.0), (-8.0, -3.0), (-3.0, 3.0), (3.0, np.inf))
REFERENCE_C = 25.0  # the row that gives the capacity, hysteresis band and thermal values
# UDDS-like validation drives: udds_like(102), (103), ...; training uses 1, 2, ... Not 101: its first acceleration
# (2.4C for a minute) collapses a 0 degC ORegan2022 SPMe cell from full below 2.5 V after 82 s, which ends the drive.
VALIDATION_FIRST_SEED = 102
# Thermostat holding a cell at its grid temperature: ambient = target - gain*(T_cell - target), the gain capped at
# half the value where the explicit loop would overshoot (gain < e/(1 - e), e = exp(-dt/tau) of the lumped cell).
HOLD_GAIN = 100.0
CHEMISTRY = "NMC811/graphite-SiOx"
CITATIONS = {"Chen2020": "Chen et al. 2020 J. Electrochem. Soc. 167 080534",
             "ORegan2022": "O'Regan et al. 2022 Electrochim. Acta 425 140700"}


@dataclass(frozen=True)
class Conditions:
    """What one simulated test runs on: the PyBaMM parameter set, the ambient temperature, whether the cell is held
    at it (thermostat on the lumped model's ambient) or heats freely as on the rig, and whether HPPC pulses stop at
    the cut-offs (a cycler's voltage limits) or run their full length whatever the voltage."""

    parameter_set: str = "Chen2020"
    ambient_C: float = AMBIENT_C
    held: bool = False
    pulses_stop_at_cutoffs: bool = False

    @property
    def label(self) -> str:
        held = ", cell held at it" if self.held else ""
        return f"PyBaMM {pybamm.__version__} SPMe {self.parameter_set} {self.ambient_C:g} degC{held}"


CHEN2020 = Conditions()


class _Recorder:
    """Steps one SPMe cell and logs it like a cycler: each row is the state at the end of a step, with that step's
    current (positive = charge), the running Ah counter and the SPMe's true SoC (hil.physics.pybamm_cells)."""

    def __init__(self, conditions: Conditions = CHEN2020, initial_soc: float = 1.0) -> None:
        self.conditions = conditions
        self.cell = PybammCells(1, model="spme", parameter_set=conditions.parameter_set,
                                ambient_C=conditions.ambient_C, initial_soc=initial_soc, spread=NO_SPREAD)
        self.rows: list[tuple[float, float, float, float, float, float]] = [
            (0.0, float(self.cell.terminal_V[0]), 0.0, float(self.cell.temp_C[0]), 0.0, float(self.cell.soc[0]))]
        if conditions.held:
            # The lumped cell's thermal time constant m*cp/(h*A), for the thermostat's gain.
            thermal = {key: value for key, (value, _) in _thermal(conditions.parameter_set).items()}
            self.thermal_tau_s = (thermal["Mass [kg]"] * thermal["Specific heat capacity [J/(kg.K)]"]
                                  / (thermal["Heat transfer coefficient [W/(m2.K)]"] * thermal["Surface area [m2]"]))

    @property
    def voltage_V(self) -> float:
        return self.rows[-1][1]

    def _hold(self, step_s: float) -> None:
        decay = math.exp(-step_s / self.thermal_tau_s)
        gain = min(HOLD_GAIN, 0.5 * decay / (1.0 - decay))
        target_C = self.conditions.ambient_C
        self.cell.ambient_C = target_C - gain * (self.rows[-1][3] - target_C)

    def run(self, current_A: float, duration_s: float, dt_s: float, stop_V: float | None = None) -> None:
        """Hold current_A for duration_s in steps of dt_s (the last one shorter), or until the voltage passes stop_V."""
        t_end = self.rows[-1][0] + duration_s
        while self.rows[-1][0] < t_end - 1e-9:
            t_s, _, _, _, ah, _ = self.rows[-1]
            step_s = min(dt_s, t_end - t_s)
            if self.conditions.held:
                self._hold(step_s)
            self.cell.step(current_A, step_s)
            self.rows.append((t_s + step_s, float(self.cell.terminal_V[0]), current_A, float(self.cell.temp_C[0]),
                              ah + current_A * step_s / 3600.0, float(self.cell.soc[0])))
            if stop_V is not None and (self.voltage_V - stop_V) * np.sign(current_A) >= 0:
                return

    def pulse(self, current_A: float, duration_s: float, dt_s: float) -> None:
        """An HPPC pulse, stopped at the cut-off it runs towards when the conditions say so."""
        limit_V = None
        if self.conditions.pulses_stop_at_cutoffs:
            limit_V = self.cell.eng.upper_cutoff_V if current_A > 0 else self.cell.eng.lower_cutoff_V
        self.run(current_A, duration_s, dt_s, stop_V=limit_V)

    def log(self, what: str) -> CyclerLog:
        t, v, i, temp, ah, soc = (np.array(column) for column in zip(*self.rows, strict=True))
        return CyclerLog(time_s=t, voltage_V=v, current_A=i, temp_C=temp, ah=ah, soc=soc,
                         source={"path": f"{self.conditions.label}: {what}"})


def c20_log(conditions: Conditions = CHEN2020) -> CyclerLog:
    rec = _Recorder(conditions)
    eng = rec.cell.eng
    c20_A = eng.nominal_capacity_Ah / 20.0
    rec.run(0.0, 60.0, 60.0)
    rec.run(-c20_A, 30 * 3600, C20_DT_S, stop_V=eng.lower_cutoff_V)
    rec.run(0.0, C20_REST_S, C20_DT_S)
    rec.run(c20_A, 30 * 3600, C20_DT_S, stop_V=eng.upper_cutoff_V)
    return rec.log("C/20 discharge and charge")


def hppc_log(conditions: Conditions = CHEN2020) -> CyclerLog:
    rec = _Recorder(conditions)
    capacity_Ah = rec.cell.eng.nominal_capacity_Ah
    rec.run(0.0, 60.0, SLOW_DT_S)
    for k, _ in enumerate(LEVELS_SOC):
        for c_rate, relax_s in ((PULSE_C_RATE, RELAX_S), *((c, SHORT_RELAX_S) for c in PULSE_C_RATES)):
            rec.pulse(-c_rate * capacity_Ah, PULSE_S, FAST_DT_S)
            rec.run(0.0, FAST_LOG_S, FAST_DT_S)
            rec.run(0.0, relax_s - FAST_LOG_S, SLOW_DT_S)
        if k < len(LEVELS_SOC) - 1:
            # To the next level, counting the pulses' charge: 0.1 SoC of nominal capacity per level.
            pulses_Ah = (PULSE_C_RATE + sum(PULSE_C_RATES)) * capacity_Ah * PULSE_S / 3600
            level_s = (0.1 * capacity_Ah - pulses_Ah) / (LEVEL_C_RATE * capacity_Ah)
            rec.run(-LEVEL_C_RATE * capacity_Ah, level_s * 3600, 10.0)
            rec.run(0.0, RELAX_S, 10.0)
    rates = ", ".join(f"{-c:g}C" for c in (PULSE_C_RATE, *PULSE_C_RATES))
    cut = ", each stopped at the cut-offs" if conditions.pulses_stop_at_cutoffs else ""
    return rec.log(f"HPPC, 10 s pulses at {rates} (> 0 charges){cut} at SoC 1.0-0.1")


def _drive(cycles: Iterable[np.ndarray], what: str, conditions: Conditions, duration_s: float | None = None,
           initial_soc: float = 1.0) -> CyclerLog:
    """1 Hz C-rate cycles, one after the other, times the nominal capacity from rest at initial_soc (1: full) until
    DRIVE_STOP_V (or for duration_s); the log's source counts the cycles begun."""
    rec = _Recorder(conditions, initial_soc)
    capacity_Ah = rec.cell.eng.nominal_capacity_Ah
    rec.run(0.0, 10.0, SLOW_DT_S)
    end_s = math.inf if duration_s is None else duration_s
    begun = 0
    for begun, c_rates in enumerate(cycles, start=1):
        for c_rate in c_rates:
            rec.run(float(c_rate * capacity_Ah), 1.0, 1.0)
            if rec.voltage_V <= DRIVE_STOP_V or rec.rows[-1][0] >= end_s:
                return _counted(rec.log(what), begun)
    return _counted(rec.log(what), begun)  # finite cycles ran out before the cut-off


def _counted(log: CyclerLog, cycles: int) -> CyclerLog:
    log.source["cycles"] = str(cycles)
    return log


def drive_log(conditions: Conditions = CHEN2020) -> CyclerLog:
    """Validation: US06 C-rates (1 Hz) times the nominal capacity, repeated from full until the lower cut-off."""
    capacity = f"{engine('spme', conditions.parameter_set).nominal_capacity_Ah:g} Ah"
    return _drive(itertools.repeat(us06()), f"US06 C-rates x {capacity} from full to 2.5 V", conditions)


def udds_log(conditions: Conditions = CHEN2020, first_seed: int = TRAIN_FIRST_SEED, duration_s: float | None = None,
             initial_soc: float = 1.0) -> CyclerLog:
    """Seeded synthetic city cycles (hil.profiles.udds_like(seed), seed = first_seed, first_seed + 1, ...;
    -2.5C..+1C, idle stops) times the nominal capacity from rest at initial_soc (1: full) until the lower cut-off
    (or for duration_s)."""
    capacity = f"{engine('spme', conditions.parameter_set).nominal_capacity_Ah:g} Ah"
    until = "to 2.5 V" if duration_s is None else f"for {duration_s:g} s"
    start = "full" if initial_soc == 1.0 else f"rest at SoC {initial_soc:g}"
    return _drive((udds_like(seed) for seed in itertools.count(first_seed)),
                  f"udds_like(seed) C-rates x {capacity}, seeds {first_seed}, {first_seed + 1}, ... from {start} "
                  f"{until}", conditions, duration_s, initial_soc)


def training_log(conditions: Conditions = CHEN2020, initial_soc: float = 1.0) -> CyclerLog:
    """Training drive for the RC pairs: udds_log from seed TRAIN_FIRST_SEED, a different load from the US06
    validation and other seeds than the UDDS-like validation (VALIDATION_FIRST_SEED)."""
    return udds_log(conditions, TRAIN_FIRST_SEED, initial_soc=initial_soc)


def training_seeds(log: CyclerLog) -> list[int]:
    """The udds_like seeds a training log ran (udds_log counts the cycles it began)."""
    return list(range(TRAIN_FIRST_SEED, TRAIN_FIRST_SEED + int(log.source["cycles"])))


def activation_energies() -> tuple[float, float, list[tuple[float, float, float]]]:
    """Arrhenius activation energies (J/mol) of R0 and I0, and (temperature, R0, I0) per ACTIVATION_TEMPS_C: at each
    temperature, pulses at every HPPC rate from rest at ACTIVATION_SOC, R0 and I0 fitted to their entry steps
    (hil.cellfit.fit_step), then Ea = R*ln(ratio)/(1/T1 - 1/T2) between the two temperatures."""
    fits = []
    for temp_C in ACTIVATION_TEMPS_C:
        rec = _Recorder(Conditions(ambient_C=temp_C), initial_soc=ACTIVATION_SOC)
        capacity_Ah = rec.cell.eng.nominal_capacity_Ah
        currents, steps = [], []
        for c_rate in (PULSE_C_RATE, *PULSE_C_RATES):
            rec.run(0.0, 60.0, SLOW_DT_S)
            before_V = rec.voltage_V
            rec.run(-c_rate * capacity_Ah, FAST_DT_S, FAST_DT_S)
            currents.append(-c_rate * capacity_Ah)
            steps.append(rec.voltage_V - before_V)
            rec.run(-c_rate * capacity_Ah, ACTIVATION_PULSE_S - FAST_DT_S, FAST_DT_S)
        fits.append((temp_C, *cellfit.fit_step(np.array(currents), np.array(steps), temp_C)))
    (t1, r1, i1), (t2, r2, i2) = fits
    inverse_K = 1.0 / (t1 + cellfit.KELVIN) - 1.0 / (t2 + cellfit.KELVIN)
    gas = cellfit.GAS_CONSTANT_J_per_molK
    return gas * np.log(r1 / r2) / inverse_K, gas * np.log(i2 / i1) / inverse_K, fits


def _thermal(parameter_set: str = "Chen2020") -> dict[str, tuple[float, str]]:
    """The lumped thermal values of the SPMe's own parameter set, so the ECM heats like the truth it was fitted to;
    temperature-dependent values (ORegan2022's heat capacities) at REFERENCE_C."""
    pv = engine("spme", parameter_set).parameter_values

    def value(name: str) -> float:
        at = {"Temperature [K]": pybamm.Scalar(REFERENCE_C + cellfit.KELVIN)}
        return float(pv.evaluate(pybamm.FunctionParameter(name, at)))

    layers = ("Negative current collector", "Negative electrode", "Separator", "Positive electrode",
              "Positive current collector")
    thickness_m = np.array([value(f"{layer} thickness [m]") for layer in layers])
    density = np.array([value(f"{layer} density [kg.m-3]") for layer in layers])
    cp = np.array([value(f"{layer} specific heat capacity [J.kg-1.K-1]") for layer in layers])
    volume_m3 = value("Cell volume [m3]")
    mass_kg = volume_m3 * float(np.sum(density * thickness_m) / np.sum(thickness_m))
    varying = any(callable(pv[f"{layer} specific heat capacity [J.kg-1.K-1]"]) for layer in layers)
    source = (f"{parameter_set} set as shipped with PyBaMM ({CITATIONS[parameter_set]}; thermal values PyBaMM's"
              f"{f', heat capacities at {REFERENCE_C:g} degC' if varying else ''}): cell volume times the "
              "thickness-weighted layer ")
    return {
        "Mass [kg]": (mass_kg, source + "densities."),
        "Specific heat capacity [J/(kg.K)]": (float(np.sum(density * cp * thickness_m) / np.sum(density * thickness_m)),
                                              source + "heat capacities over the mass."),
        "Heat transfer coefficient [W/(m2.K)]": (value("Total heat transfer coefficient [W.m-2.K-1]"),
                                                 f"PyBaMM {parameter_set} 'Total heat transfer coefficient'."),
        "Surface area [m2]": (value("Cell cooling surface area [m2]"), f"PyBaMM {parameter_set} 'Cell cooling surface "
                                                                        "area'."),
    }

def fit_spme(c20: CyclerLog, pulse: CyclerLog, train: CyclerLog) -> tuple[cellfit.CellFit, cellfit.DriveFit]:
    """OCV, R0 and I0 from the C/20 and HPPC logs as for a measured cell, activation energies from the 25/40 degC
    pulses, then the RC pairs refitted to the training drive (hil.cellfit.fit_drive): the 20 min relaxations after
    10 s pulses cannot see the positive particle's diffusion (R^2/D ~ 7000 s), a drive that empties the cell can."""
    cell = cellfit.fit(c20, pulse, NAME, pulse_current_A=PULSE_C_RATE * engine("spme", "Chen2020").nominal_capacity_Ah)
    rates = (PULSE_C_RATE, *PULSE_C_RATES)
    params = cell.params
    params["chemistry"] = CHEMISTRY
    simulated = (f"Simulated, not measured: PyBaMM {pybamm.__version__} SPMe (lumped thermal) with the Chen2020 set, "
                 f"one nominal cell at {AMBIENT_C:g} degC (hil.spme_fit)")
    sources = params["sources"]
    sources["Nominal capacity [A.h]"] = f"{simulated}: charge of the C/20 discharge from full to 2.5 V."
    sources["OCV [V]"] = f"{simulated}: mean of the C/20 discharge and charge branches (hil.cellfit.fit_ocv)."
    sources["OCV hysteresis [V]"] = (f"{simulated}: C/20 half gap minus I*(R0+R1+R2) + (2RT/F)*asinh(I/(2*I0)), "
                                     "floored at 0; the SPMe has no "
                                     "hysteresis, so this is what the RC pairs leave of the resistive gap.")
    sources["R0 [Ohm]"] = sources["Exchange current [A]"] = (
        f"{simulated}: voltage steps 0.1 s into and after the 10 s pulses at {', '.join(f'{c:g}C' for c in rates)} "
        "discharge (negative: regen) at each SoC level, R0 and I0 fitted jointly (hil.cellfit.fit_steps).")
    ea_r0, ea_i0, fits = activation_energies()
    at = "; ".join(f"{t:g} degC: R0 {r * 1e3:.2f} mOhm, I0 {i:.3f} A" for t, r, i in fits)
    activation = (f"{simulated}: from the entry steps of {ACTIVATION_PULSE_S:g} s pulses at the HPPC rates from rest "
                  f"at SoC {ACTIVATION_SOC:g} at {' and '.join(f'{t:g}' for t in ACTIVATION_TEMPS_C)} degC ambient "
                  f"({at}; hil.cellfit.fit_step), Ea = R*ln(ratio)/(1/T1 - 1/T2) (hil.spme_fit.activation_energies).")
    # Floored at 0 as the loader requires; the SPMe's R1/R2 (diffusion) hardly depend on T in Chen2020 either.
    params["Resistance activation energy [J/mol]"] = cellfit._rounded(max(ea_r0, 0.0))
    sources["Resistance activation energy [J/mol]"] = activation + " Fitted on R0, applied to R0, R1 and R2."
    params["Exchange current activation energy [J/mol]"] = cellfit._rounded(ea_i0)
    sources["Exchange current activation energy [J/mol]"] = activation
    drive = cellfit.fit_drive(params, train, follow_temperature=True)
    params.update(cellfit.drive_rc_tables(drive))
    rc = (f"{simulated}: fitted to the voltage of the training drive ({train.source['path']}, {len(train)} s, never "
          f"the US06 validation) replayed with the cell temperature, OCV, hysteresis, R0 and I0 as fitted above "
          f"(hil.cellfit.fit_drive): R1 and R2 piecewise linear on the SoC knots {list(cellfit.DRIVE_KNOTS_SOC)} "
          f"by bounded linear least squares (R >= {cellfit.DRIVE_R_FLOOR_OHM:g} Ohm), one tau1 "
          f"({drive.tau1_s:.3g} s) and one tau2 ({drive.tau2_s:.3g} s) by Nelder-Mead; C = tau/R. Training drive "
          f"RMSE {drive.rmse_mV:.2f} mV (with the pulse-fitted RC pairs {drive.rmse_before_mV:.2f} mV).")
    sources.update({k: rc for k in ("R1 [Ohm]", "C1 [F]", "R2 [Ohm]", "C2 [F]")})
    sources["OCV hysteresis [V]"] += (" Computed with the pulse-fitted R1, R2 (20 min relaxations) before the drive "
                                      "fit replaced them.")
    for key, (value, source) in _thermal().items():
        params["Thermal"][key] = cellfit._rounded(value)
        sources[f"Thermal.{key}"] = source
    return cell, drive


def _breakdown(soc: np.ndarray, err_mV: np.ndarray, current_A: np.ndarray) -> dict[str, Any]:
    """RMSE and mean of the voltage error per SoC band and per current band."""
    def band(mask: np.ndarray) -> dict[str, float]:
        return {"RMSE [mV]": round(float(np.sqrt(np.mean(err_mV[mask] ** 2))), 2),
                "mean [mV]": round(float(np.mean(err_mV[mask])), 2), "samples": int(np.count_nonzero(mask))}

    return {"by SoC": {f"{lo:g}-{hi:g}": band((soc >= lo) & ((soc < hi) | (hi == 1.0)))
                       for lo, hi in itertools.pairwise(SOC_BANDS) if np.any((soc >= lo) & (soc <= hi))},
            "by current [A], > 0 charges": {f"{lo:g}..{hi:g}": band((current_A >= lo) & (current_A < hi))
                                             for lo, hi in CURRENT_BANDS_A
                                             if np.any((current_A >= lo) & (current_A < hi))}}


def compare(params: dict[str, Any], drive: CyclerLog) -> dict[str, Any]:
    """The fitted model replayed on the SPMe drive (hil.cellfit.validate) at the SPMe's temperature."""
    result = cellfit.validate(params, drive, follow_temperature=True)  # activation energies fitted here
    result["file"] = drive.source["path"]
    result.pop("sha256")
    result["duration [s]"] = round(drive.duration_s, 1)
    if drive.temp_C is not None:
        result["SPMe temperature max [degC]"] = round(float(np.max(drive.temp_C)), 2)
    soc, model_V = cellfit.replay_V(params, drive, follow_temperature=True)
    result.update(_breakdown(soc, (model_V - drive.voltage_V) * 1e3, drive.current_A))
    return result


def _package_version() -> str:
    try:
        return metadata.version("soxbms")
    except metadata.PackageNotFoundError:
        return "unknown"


def _data(logs: dict[str, CyclerLog]) -> dict[str, Any]:
    return {role: {"source": log.source["path"], "rows": len(log), "duration [s]": round(log.duration_s, 1)}
            for role, log in logs.items()}


def model_card(cell: cellfit.CellFit, drive: cellfit.DriveFit, logs: dict[str, CyclerLog],
               validation: dict[str, Any], pulse_only: dict[str, Any]) -> dict[str, Any]:
    card = cellfit.model_card(cell, logs, validation)
    card.pop("created")  # the file is regenerated bit for bit by the command below; a date would break that
    card.update({
        "drive fit": {"training": logs["training"].source["path"], "knots [SoC]": list(cellfit.DRIVE_KNOTS_SOC),
                      "R1 [Ohm]": cellfit._rounded(drive.r1_ohm), "R2 [Ohm]": cellfit._rounded(drive.r2_ohm),
                      "tau1 [s]": round(drive.tau1_s, 3), "tau2 [s]": round(drive.tau2_s, 2),
                      "training RMSE [mV]": round(drive.rmse_mV, 2),
                      "training RMSE with the pulse-fitted RC pairs [mV]": round(drive.rmse_before_mV, 2),
                      "time-constant evaluations": drive.evaluations},
        "validation with the pulse-fitted RC pairs": pulse_only,
        "fitter": f"hil.spme_fit {FIT_VERSION} (hil.cellfit {cellfit.FIT_VERSION})",
        "package version": _package_version(),
        "command": "python -m hil.spme_fit --out models/cells/chen2020_spme_fit.json",
        "data": _data(logs),
        "dataset": f"Simulated with PyBaMM {pybamm.__version__}: SPMe, lumped thermal, Chen2020 (Chen et al. 2020 "
                   "J. Electrochem. Soc. 167 080534), default mesh, CVODES via CasADi (hil.physics.pybamm_cells).",
        "limitations": [
            "25 degC tables; the replay follows the SPMe's temperature (up to ~41 degC) through the fitted activation "
            "energies only, the OCV stays at 25 degC.",
            "The SPMe has no hysteresis and no double layer; the fitted hysteresis band is resistive residue.",
            "One lumped asinh element for both electrodes' Butler-Volmer kinetics: the step fit leaves ~2-3 mV RMS.",
            "Two RC pairs with one tau each stand in for solid diffusion (positive particle R^2/D ~ 7000 s): the "
            "drive fit puts tau2 near a minute with R2 per SoC, which follows the drive's diffusion overpotential "
            "but not its slowest part; the error is largest at the steep ends of the OCV (below SoC 0.1, down to the "
            "2.5 V cut-off) and in regen pulses (> 3 A: the model reads high, see the validation breakdown).",
            "The RC pairs are fitted to one training drive (udds_like, -2.5C..+1C); US06 reaches -5C..+2C, beyond "
            "the training currents. A drive at twice udds_like's currents cannot be used: sustained 5C collapses "
            "the SPMe's voltage within minutes.",
            "The hysteresis band is computed with the pulse-fitted R1, R2; OCV(SoC 1) is 10 mV below the SPMe's "
            "rested 4.2 V (hil.cellfit.fit_ocv takes the mean of that rested voltage and the C/20 discharge there); "
            "raising it changes the US06 RMSE by < 0.1 mV after the drive fit.",
            "Activation energies, ageing, entropic change, coulombic efficiency and hysteresis rate are hil.cellfit's "
            "literature values for an NCA 18650, not fitted to this cell.",
        ],
    })
    return card


def _write(out: Path, params: dict[str, Any], card: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(params, indent=2) + "\n")
    out.with_name(out.name.removesuffix(".json") + ".meta.json").write_text(json.dumps(card, indent=2) + "\n")


def run(out: Path | None = None) -> dict[str, Any]:
    """Simulate, fit, compare; write the parameter file and its card when out is given. Returns the card."""
    logs = {"c20": c20_log(), "pulse": hppc_log(), "training": training_log()}
    cell, drive = fit_spme(logs["c20"], logs["pulse"], logs["training"])
    logs["validation"] = drive_log()
    pulse_only = compare({**cell.params, **cellfit.pulse_rc_tables(cell.pulses)}, logs["validation"])
    card = model_card(cell, drive, logs, compare(cell.params, logs["validation"]), pulse_only)
    if out is not None:
        _write(out, cell.params, card)
    return card


def _temperatures(text: str) -> list[float]:
    return [float(t) for t in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.spme_fit", description="Fit the two-RC model to PyBaMM "
                                     "SPMe (Chen2020 at 25 degC, or a parameter set over a temperature grid), its RC "
                                     "pairs to a training drive, and report its voltage RMSE on validation drives.")
    parser.add_argument("--out", type=Path, help="parameter file to write (its card goes next to it as .meta.json)")
    parser.add_argument("--parameters", default="Chen2020", choices=tuple(CITATIONS),
                        help="PyBaMM parameter set (default Chen2020)")
    parser.add_argument("--temps", type=_temperatures, help="comma-separated grid temperatures in degC, ascending, "
                        f"with {REFERENCE_C:g}: fit every (SoC, T) table over them (e.g. -5,0,5,10,15,25,40)")
    args = parser.parse_args(argv)
    if args.temps is None:
        if args.parameters != "Chen2020":
            parser.error("--temps is needed for a parameter set other than Chen2020")
        card = run(args.out)
        print(f"capacity {card['ocv']['capacity [A.h]']} Ah, {len(card['pulses'])} pulses, US06 voltage RMSE "
              f"{card['validation']['voltage RMSE [mV]']} mV")
        return 0
    started = time.monotonic()

    def progress(what: str) -> None:
        print(f"  {time.monotonic() - started:6.0f} s  {what}", file=sys.stderr, flush=True)

    from hil.spme_gridfit import run_grid  # it builds on this module

    card = run_grid(args.parameters, args.temps, args.out, progress)
    rmse = "; ".join(f"{ambient} {drive} {figures['voltage RMSE [mV]']} mV"
                     for ambient, drives in card["validation"].items() for drive, figures in drives.items())
    print(f"{card['name']}: grid {card['grid [degC]']} degC, voltage RMSE {rmse}; {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
