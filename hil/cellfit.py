"""Fits a two-RC equivalent-circuit cell model to cycler logs and writes its parameter file and model card.

OCV(SoC) and the hysteresis half-width come from a C/20 discharge/charge test, R0 and two RC pairs per SoC level
from the relaxations after HPPC pulses. When a pulse set has pulses at MIN_RATES or more current levels, R0 and the
exchange current I0 of the charge-transfer element (hil.physics.ecm) are fitted jointly to the voltage steps of all
its pulses, dV = R0*I + (2RT/F)*asinh(I/(2*I0)); otherwise R0 is the step over the current of the pulses at the
fitted current and the file has no I0 (linear model). What these tests cannot measure (thermal, ageing, entropic,
activation energies, coulombic efficiency, hysteresis rate) is filled in from literature, each with its source. The
fitted model is replayed on a drive-cycle log to report its voltage error.

    python -m hil.cellfit C20.mat PULSE.mat --validate US06.mat --name NAME --out models/cells/NAME.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import least_squares, lsq_linear, minimize  # type: ignore[import-untyped]

from hil.cycler import CyclerFormatError, CyclerLog, coulomb_soc, cumulative_charge_Ah, read_log

FloatArray = npt.NDArray[np.float64]

FIT_VERSION = "2"
TEMPERATURE_C = 25.0
GAS_CONSTANT_J_per_molK = 8.314462618
FARADAY_C_per_mol = 96485.33212
KELVIN = 273.15
# SoC grid of every table: 0.5 % steps where the OCV is steep (both ends), 1 % in between.
SOC_GRID: FloatArray = np.round(np.concatenate((np.arange(0.0, 0.1, 0.005), np.arange(0.1, 0.9, 0.01),
                                                np.arange(0.9, 1.0 + 1e-9, 0.005))), 6).astype(np.float64)
REST_CURRENT_A = 0.01  # below this the cell counts as resting
OCV_MIN_STEP_V = 1e-4  # the monotone fix makes OCV rise by at least this per grid step
END_GAP_WINDOW_SOC = 0.05  # the branch gap near the charge branch's end, taken over this much SoC
PULSE_CURRENT_TOLERANCE = 0.1  # a pulse matches the requested current within 10 %
MIN_PULSE_S = 5.0  # shorter pulses were cut by the voltage limit and are skipped
MAX_PULSE_S = 60.0  # a longer run (the discharge to the next SoC level) separates pulse sets
BRANCH_MIN_RISE = 0.5  # each C/20 branch (OCV ± H) rises with SoC at least this fraction of the OCV's own rise
MIN_RATES = 3  # current levels in a pulse set needed to fit I0 besides R0 (two unknowns, one spare)
I0_BOUNDS_A = (1e-3, 1e4)  # I0 at the upper bound: the kinetics look linear over the pulse currents
I0_STARTS_A = (0.3, 3.0, 30.0)
LOG_GAP_S = 60.0  # a time step longer than this ends a relaxation (unlogged steps in the HPPC file)
# Fast pair (charge transfer, double layer) and slow pair (diffusion). Disjoint bounds keep tau1 < tau2. On these
# 10 s pulses the best fits put tau1 at the 0.3 s floor (3 samples at 10 Hz) and tau2 at 30-50 s: a pair of hundreds
# of seconds moves the relaxation by only I*R2*Tp/tau2 ~ 1-3 mV, near the logger's 0.64 mV voltage step.
TAU1_BOUNDS_S = (0.3, 20.0)
TAU2_BOUNDS_S = (20.0, 3000.0)
R_BOUNDS_OHM = (0.0, 0.5)
TAU1_STARTS_S = (1.0, 5.0)
TAU2_STARTS_S = (100.0, 500.0)
# Drive fit (fit_drive): R1 and R2 piecewise linear on these SoC knots (denser at the steep ends of the OCV), one
# tau1 and one tau2 for all SoC.
DRIVE_KNOTS_SOC = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
DRIVE_R_FLOOR_OHM = 1e-5  # the loader needs R > 0 in an RC branch
DRIVE_LOG_TAU_TOLERANCE = 0.02  # Nelder-Mead stops when ln(tau) moves less: 2 %

DATASET = ("Kollmeyer, P. (2018) Panasonic 18650PF Li-ion Battery Data, Mendeley Data V1, "
           "doi:10.17632/wykht8y7tg.1 (CC BY 4.0)")

# 18650 can, 18.3 mm x 65.2 mm (typical Panasonic 18650 outline): side plus both ends.
_DIAMETER_M, _HEIGHT_M = 0.0183, 0.0652
SURFACE_AREA_M2 = float(np.pi * _DIAMETER_M * _HEIGHT_M + 2 * np.pi * (_DIAMETER_M / 2) ** 2)

# Values these tests cannot measure: (value, source).
LITERATURE: dict[str, tuple[Any, str]] = {
    "Thermal.Mass [kg]": (0.047, "Not weighed here. Panasonic NCA 18650 cells weigh 45-48 g (Batemo measured "
                          "45.6 g for the NCR18650B and 47.0 g for the NCR18650BD); 47 g taken."),
    "Thermal.Specific heat capacity [J/(kg.K)]": (830.0, "Generic whole-cell value for NCA cells, 825-848 J/(kg.K) "
                                                   "over 0-100 % SoC, as summarised by batterydesign.net 'Specific "
                                                   "Heat Capacity of Lithium Ion Cells'; not measured on this cell."),
    "Thermal.Heat transfer coefficient [W/(m2.K)]": (23.0, "Derived once from the US06 file's final 300 s rest: the "
                                                     "can cools from 32.8 to 29.0 degC towards its 25.6 degC start, "
                                                     "exponential fit tau ~ 390 s, so h = m*cp/(tau*A) ~ 23 W/(m2.K) "
                                                     "with the mass, cp and area here. Describes that thermal chamber, "
                                                     "not a pack; the model card re-derives it on each validation."),
    "Thermal.Surface area [m2]": (SURFACE_AREA_M2, "Geometric: cylinder 18.3 mm x 65.2 mm, side plus both ends."),
    "Thermal.Neighbour conductance [W/K]": (0.01, "Order of magnitude from geometry, not measured: a 0.15 x 7 mm "
                                            "nickel strip 20 mm long conducts ~0.005 W/K, a 1 mm air gap over "
                                            "~65 x 5 mm of facing can ~0.01 W/K. Potting or gap pads raise it 10x."),
    "Resistance activation energy [J/mol]": (25000.0, "Order of magnitude only: lumped DC resistance of graphite "
                                             "cells follows Arrhenius behaviour dominated by charge transfer (Jow, "
                                             "Zhang, Xu, Allen, J. Electrochem. Soc., on Li-ion charge-transfer "
                                             "resistance at low temperature). Refit from the dataset's 10, 0, -10 "
                                             "and -20 degC files."),
    "Coulombic efficiency": (0.999, "Healthy graphite Li-ion cells after formation: 0.999-0.9999 per cycle (high-"
                             "precision coulometry, e.g. BioLogic application note 53). Not measurable from this C/20 "
                             "run, whose charge stops at 4.2 V without a CV phase."),
    "Hysteresis rate [1/(A.s)]": (3e-3, "Order of magnitude after Plett's one-state hysteresis model (J. Power Sources "
                                  "134 (2004) 262-276): dh/dt = rate*|I|*(sign(I)*H - h); the state is taken to cross "
                                  "the band within ~3 % of capacity, 1/(0.03 * 3.0 Ah * 3600 s/h) ~ 3e-3 1/(A.s)."),
    "Ageing.Calendar fade [1/sqrt(s)]": (6e-6, "Order of magnitude after Keil et al., J. Electrochem. Soc. 163 (2016) "
                                         "A1872 (calendar ageing of NCA, NMC and LFP 18650 cells): a few % capacity "
                                         "in ~10 months at 25 degC; 3 % after 300 days = 0.03/sqrt(2.6e7 s)."),
    "Ageing.Cycle fade [1/A.h]": (7e-5, "Order of magnitude: 20 % capacity after ~500 full cycles of a 2.9 Ah cell, "
                                  "counting charge plus discharge throughput, 0.2/(500*2*2.9 Ah). This dataset's cell "
                                  "lost ~18 % in ~110 cycles including cold cycling (upstream description), faster."),
    "Ageing.Calendar resistance growth [1/sqrt(s)]": (1e-5, "Order of magnitude, assumed ~1.5x the calendar capacity "
                                                      "fade rate, as commonly seen for SEI growth; not measured."),
    "Ageing.Cycle resistance growth [1/A.h]": (1.5e-4, "Order of magnitude, assumed ~2x the cycle capacity fade "
                                               "rate; not measured."),
    "Ageing.Arrhenius activation energy [J/mol]": (50000.0, "Order of magnitude for SEI-growth-dominated calendar "
                                                   "ageing of graphite cells (tens of kJ/mol, ~2x rate per +10 K); "
                                                   "Keil et al. 2016 show the strong temperature acceleration."),
    "Ageing.Reference temperature [degC]": (25.0, "Temperature the ageing rates above refer to."),
    # NCA/graphite dU/dT: negative at low SoC, near zero above mid SoC, magnitude a few tenths of a mV/K.
    "Entropic change [V/K]": ({"SoC": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
                               "values": [-4e-4, -3e-4, -2e-4, -1.5e-4, -1e-4, -5e-5, -2e-5, 0.0, 2e-5, 3e-5, 3e-5]},
                              "Shape and order of magnitude only, not measured: NCA/graphite cells show dU/dT of a "
                              "few tenths of a mV/K, most negative at low SoC (Viswanathan et al., J. Power Sources "
                              "195 (2010) 3720; entropy profiles of Panasonic NCR 18650 cells: Serik et al., Heliyon "
                              "10 (2024) e37654). Replace with a measured profile for thermal work."),
}


@dataclass(frozen=True)
class OcvFit:
    soc: FloatArray  # SOC_GRID
    ocv_V: FloatArray
    half_gap_V: FloatArray  # (charge branch - discharge branch) / 2, held beyond the charge branch's reach
    capacity_Ah: float  # the C/20 discharge from full to the lower cut-off
    current_A: float  # C/20 current magnitude
    charge_reach_soc: float
    monotone_fix_max_mV: float


@dataclass(frozen=True)
class PulseFit:
    soc: float  # at the pulse's end, from the tester's Ah counter and the C/20 capacity
    current_A: float  # pulse magnitude (discharge)
    duration_s: float
    rest_before_V: float
    r0_ohm: float
    r1_ohm: float
    tau1_s: float
    r2_ohm: float
    tau2_s: float
    rmse_mV: float  # of the relaxation fit


@dataclass(frozen=True)
class StepFit:
    """The instantaneous response of one pulse set: the voltage step at each pulse's start and end over its current."""

    soc: float  # of the set's pulse at the fitted current (PulseFit.soc)
    currents_A: list[float]  # signed, > 0 charges
    steps_V: list[float]  # mean of the entry step and the reversed exit step, signed like the current
    r0_ohm: float
    i0_A: float | None  # None: fewer than MIN_RATES current levels, R0 fitted with I0 interpolated from other sets
    rmse_mV: float  # of the step fit


@dataclass(frozen=True)
class DriveFit:
    """The RC pairs fitted to a drive's voltage (fit_drive)."""

    tau1_s: float
    tau2_s: float
    r1_ohm: list[float]  # at DRIVE_KNOTS_SOC
    r2_ohm: list[float]
    rmse_before_mV: float  # the drive replayed with the RC pairs the drive fit started from
    rmse_mV: float
    evaluations: int  # of the linear knot fit in the time-constant search


@dataclass(frozen=True)
class CellFit:
    params: dict[str, Any]
    ocv: OcvFit
    pulses: list[PulseFit]
    steps: list[StepFit]  # empty for the linear fit (no set with MIN_RATES current levels)


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(first, last + 1) row of each stretch where mask holds."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _longest(runs: list[tuple[int, int]], what: str) -> tuple[int, int]:
    if not runs:
        raise ValueError(f"no {what} found")
    return max(runs, key=lambda r: r[1] - r[0])


def fit_ocv(c20: CyclerLog) -> OcvFit:
    """OCV(SoC) from a slow (C/20) discharge followed by a slow charge, the discharge starting from rest at full.

    SoC is the discharge's own charge count: 1 at the start of the discharge (full), 0 where it stops at the lower
    cut-off, so capacity = the charge that discharge moved. The charge branch starts at SoC 0.
    At a low constant current the terminal voltage sits below the OCV on discharge and above it on charge by the same
    amount, I*R_dc + H (resistive drop plus hysteresis half-width), so the mean of the two branches is the OCV and
    half their gap is I*R_dc + H. The charge branch stops short of full (no CV phase). Above its reach the OCV is the
    discharge branch plus half a gap interpolated linearly in SoC from the gap measured over the last
    END_GAP_WINDOW_SOC of the overlap to the gap at SoC 1, where the rested voltage before the discharge (after a
    CC-CV charge: the charge branch at rest) stands in for the charge branch. Holding the end-of-overlap gap instead
    would put OCV(1) ~70 mV above that rested voltage, which a cell resting after a charge cannot be."""
    grid = SOC_GRID
    q_Ah = cumulative_charge_Ah(c20)
    dis0, dis1 = _longest(_runs(c20.current_A < -REST_CURRENT_A), "C/20 discharge")
    if dis0 == 0:
        raise ValueError("the C/20 log must start at rest (full) before its discharge")
    ch0, ch1 = _longest([r for r in _runs(c20.current_A > REST_CURRENT_A) if r[0] > dis1], "C/20 charge after it")
    # Integrate from the last rest row before each run to the first rest row after it (the half steps at the edges).
    stop = min(dis1, len(c20) - 1)
    capacity_Ah = float(q_Ah[dis0 - 1] - q_Ah[stop])
    soc_dis = 1.0 - (q_Ah[dis0 - 1] - q_Ah[dis0:dis1]) / capacity_Ah
    soc_ch = (q_Ah[ch0:ch1] - q_Ah[ch0 - 1]) / capacity_Ah
    v_dis = np.interp(grid, soc_dis[::-1], c20.voltage_V[dis0:dis1][::-1])
    v_ch = np.interp(grid, soc_ch, c20.voltage_V[ch0:ch1])
    reach = float(soc_ch[-1])
    overlap = grid <= reach
    gap = v_ch - v_dis
    end_gap_V = float(np.median(gap[overlap & (grid >= reach - END_GAP_WINDOW_SOC)]))
    full_gap_V = float(c20.voltage_V[dis0 - 1] - c20.voltage_V[dis0])
    half_gap = np.where(overlap, gap, np.interp(grid, [reach, 1.0], [end_gap_V, full_gap_V])) / 2
    raw = v_dis + half_gap
    ocv = raw.copy()
    for k in range(1, len(ocv)):
        ocv[k] = max(ocv[k], ocv[k - 1] + OCV_MIN_STEP_V)
    return OcvFit(soc=SOC_GRID, ocv_V=ocv, half_gap_V=half_gap, capacity_Ah=capacity_Ah,
                  current_A=float(np.median(-c20.current_A[dis0:dis1])), charge_reach_soc=reach,
                  monotone_fix_max_mV=float(np.max(np.abs(ocv - raw)) * 1e3))


def _relaxation(tr_s: FloatArray, x: FloatArray, current_A: float, pulse_s: float) -> FloatArray:
    """Voltage at tr_s after a discharge pulse of current_A lasting pulse_s, both RC pairs starting at rest: each
    was charged to I*R*(1 - exp(-Tp/tau)) and now decays, V -> v_inf."""
    v_inf, r1, r2, log_tau1, log_tau2 = x
    tau1, tau2 = np.exp(log_tau1), np.exp(log_tau2)
    return v_inf - current_A * (r1 * -np.expm1(-pulse_s / tau1) * np.exp(-tr_s / tau1)
                                + r2 * -np.expm1(-pulse_s / tau2) * np.exp(-tr_s / tau2))


def fit_pulse(log: CyclerLog, first: int, end: int, relax_end: int, soc: float) -> PulseFit:
    """R0 from the voltage steps where the pulse [first, end) starts and stops; R1, tau1, R2, tau2 by least squares
    on the relaxation [end, relax_end)."""
    t, v = log.time_s, log.voltage_V
    current_A = float(-np.mean(log.current_A[first:end]))
    pulse_s = float(t[end] - t[first])
    # The first sample on each side of a step is ~0.1 s after it: these R0 include that much of the fast pair.
    r0 = 0.5 * ((v[first - 1] - v[first]) + (v[end] - v[end - 1])) / current_A
    tr, vr = t[end:relax_end] - t[end], v[end:relax_end]
    lower = [vr[-1] - 0.1, R_BOUNDS_OHM[0], R_BOUNDS_OHM[0], np.log(TAU1_BOUNDS_S[0]), np.log(TAU2_BOUNDS_S[0])]
    upper = [vr[-1] + 0.2, R_BOUNDS_OHM[1], R_BOUNDS_OHM[1], np.log(TAU1_BOUNDS_S[1]), np.log(TAU2_BOUNDS_S[1])]
    # Two exponentials make a non-convex fit: start from a small grid of time constants, keep the best.
    starts = [np.clip([vr[-1], 0.01, 0.01, np.log(t1), np.log(t2)], lower, upper)
              for t1 in TAU1_STARTS_S for t2 in TAU2_STARTS_S]
    fit = min((least_squares(lambda x: _relaxation(tr, x, current_A, pulse_s) - vr, x0, bounds=(lower, upper),
                             x_scale="jac") for x0 in starts), key=lambda f: f.cost)
    _, r1, r2, log_tau1, log_tau2 = fit.x
    return PulseFit(soc=soc, current_A=current_A, duration_s=pulse_s, rest_before_V=float(v[first - 1]),
                    r0_ohm=float(r0), r1_ohm=float(r1), tau1_s=float(np.exp(log_tau1)), r2_ohm=float(r2),
                    tau2_s=float(np.exp(log_tau2)), rmse_mV=float(np.sqrt(np.mean(fit.fun ** 2)) * 1e3))


def _pulse_sets(log: CyclerLog) -> list[list[tuple[int, int]]]:
    """Full-length pulses of either sign (MIN_PULSE_S..MAX_PULSE_S long, not at the log's edges), grouped into the sets
    between log gaps and longer runs (the level discharges)."""
    gaps = np.flatnonzero(np.diff(log.time_s) > LOG_GAP_S) + 1
    runs = _runs(np.abs(log.current_A) > REST_CURRENT_A)
    length_s = [float(log.time_s[end - 1] - log.time_s[first]) for first, end in runs]
    bounds = np.sort(np.concatenate([gaps, [first for (first, _), d in zip(runs, length_s, strict=True)
                                            if d > MAX_PULSE_S]]))
    sets: dict[int, list[tuple[int, int]]] = {}
    for (first, end), d in zip(runs, length_s, strict=True):
        if MIN_PULSE_S <= d <= MAX_PULSE_S and first > 0 and end < len(log):
            sets.setdefault(int(bounds.searchsorted(first, "right")), []).append((first, end))
    return list(sets.values())


def _is_reference(log: CyclerLog, first: int, end: int, pulse_current_A: float) -> bool:
    current_A = -float(np.mean(log.current_A[first:end]))
    return abs(current_A - pulse_current_A) <= PULSE_CURRENT_TOLERANCE * pulse_current_A


def fit_pulses(log: CyclerLog, capacity_Ah: float, pulse_current_A: float = 2.9) -> list[PulseFit]:
    """Every full-length discharge pulse of about pulse_current_A, placed on the SoC axis by the tester's Ah counter
    (the HPPC file leaves out the discharges between pulse sets, so integrating current would lose them)."""
    if log.ah is None:
        raise ValueError("the pulse log needs the tester's Ah column to place pulse sets on the SoC axis")
    gaps = np.flatnonzero(np.diff(log.time_s) > LOG_GAP_S) + 1
    starts = [first for first, _ in _runs(np.abs(log.current_A) > REST_CURRENT_A)]
    fits = []
    for first, end in (pulse for pulses in _pulse_sets(log) for pulse in pulses):
        if not _is_reference(log, first, end, pulse_current_A):
            continue
        relax_end = min([len(log), *(g for g in gaps.tolist() if g > end), *(s for s in starts if s > end)])
        soc = 1.0 + (log.ah[end] - log.ah[0]) / capacity_Ah
        fits.append(fit_pulse(log, first, end, relax_end, float(soc)))
    if not fits:
        raise ValueError(f"no full-length {pulse_current_A} A discharge pulses found in the pulse log")
    return sorted(fits, key=lambda f: f.soc)


def thermal_voltage_V(temp_C: float | FloatArray) -> float | FloatArray:
    """2RT/F, the scale of the symmetric Butler-Volmer overpotential (2RT/F)*asinh(I/(2*I0))."""
    return 2.0 * GAS_CONSTANT_J_per_molK * (np.asarray(temp_C) + KELVIN) / FARADAY_C_per_mol


def fit_step(currents_A: FloatArray, steps_V: FloatArray, temp_C: float = TEMPERATURE_C) -> tuple[float, float]:
    """(R0, I0) by least squares on steps_V = R0*I + (2RT/F)*asinh(I/(2*I0)) over signed pulse currents."""
    b_V = thermal_voltage_V(temp_C)
    linear = float(np.dot(currents_A, steps_V) / np.dot(currents_A, currents_A))
    lower, upper = [R_BOUNDS_OHM[0], np.log(I0_BOUNDS_A[0])], [R_BOUNDS_OHM[1], np.log(I0_BOUNDS_A[1])]

    def residual(x: FloatArray) -> FloatArray:
        return np.asarray(x[0] * currents_A + b_V * np.arcsinh(currents_A / (2.0 * np.exp(x[1]))) - steps_V)

    # The asinh makes the fit non-convex in I0: a few starts spanning the currents, the best kept.
    fit = min((least_squares(residual, np.clip([0.5 * linear, np.log(i0)], lower, upper), bounds=(lower, upper),
                             x_scale="jac") for i0 in I0_STARTS_A), key=lambda f: f.cost)
    return float(fit.x[0]), float(np.exp(fit.x[1]))


def _levels(currents_A: FloatArray) -> int:
    """Distinct current levels: magnitudes and signs more than PULSE_CURRENT_TOLERANCE apart."""
    ordered = np.sort(currents_A)
    return 1 + int(np.count_nonzero(np.diff(ordered) > PULSE_CURRENT_TOLERANCE * np.abs(ordered[1:])))


def reference_sets(log: CyclerLog, pulse_current_A: float) -> list[tuple[int, list[tuple[int, int]]]]:
    """The pulse sets holding a pulse at the reference current, by rising SoC (an HPPC test lists them from full
    down): (end of the set's first reference pulse, the set)."""
    ah = log.ah
    assert ah is not None
    sets = []
    for pulse_set in _pulse_sets(log):
        ends = [end for first, end in pulse_set if _is_reference(log, first, end, pulse_current_A)]
        if ends:
            sets.append((ends[0], pulse_set))
    return sorted(sets, key=lambda counted: float(ah[counted[0]]))


def fit_steps(log: CyclerLog, pulses: list[PulseFit], capacity_Ah: float, pulse_current_A: float) -> list[StepFit]:
    """R0 and I0 per pulse set from the voltage steps of all its pulses, when some set has MIN_RATES current levels;
    sets with fewer get R0 alone, with I0 interpolated in SoC from the others. [] when no set qualifies. By rising
    SoC, as the tables interpolate them."""
    assert log.ah is not None  # fit_pulses has checked
    v, i = log.voltage_V, log.current_A
    by_soc = {p.soc: p for p in pulses}
    sets = []
    for reference_end, pulse_set in reference_sets(log, pulse_current_A):
        soc = float(1.0 + (log.ah[reference_end] - log.ah[0]) / capacity_Ah)  # as in fit_pulses
        currents = np.array([float(np.mean(i[a:b])) for a, b in pulse_set])
        steps = np.array([0.5 * ((v[a] - v[a - 1]) - (v[b] - v[b - 1])) for a, b in pulse_set])
        sets.append((by_soc[soc], currents, steps))
    if not any(_levels(currents) >= MIN_RATES for _, currents, _ in sets):
        return []
    fitted = {p.soc: fit_step(currents, steps) for p, currents, steps in sets if _levels(currents) >= MIN_RATES}
    known = sorted(fitted)
    b_V = thermal_voltage_V(TEMPERATURE_C)
    fits = []
    for p, currents, steps in sets:
        i0: float | None
        if p.soc in fitted:
            r0, i0 = fitted[p.soc]
            model = r0 * currents + b_V * np.arcsinh(currents / (2.0 * i0))
        else:
            # R0 by linear least squares with the exchange current of the neighbouring sets.
            kinetic = b_V * np.arcsinh(currents / (2.0 * np.interp(p.soc, known, [fitted[s][1] for s in known])))
            r0, i0 = float(np.dot(currents, steps - kinetic) / np.dot(currents, currents)), None
            model = r0 * currents + kinetic
        fits.append(StepFit(soc=p.soc, currents_A=currents.tolist(), steps_V=steps.tolist(), r0_ohm=r0, i0_A=i0,
                            rmse_mV=float(np.sqrt(np.mean((model - steps) ** 2)) * 1e3)))
    return fits


def _table(values: FloatArray) -> dict[str, Any]:
    return {"SoC": _rounded(SOC_GRID), "Temperature [degC]": [TEMPERATURE_C], "values": [_rounded(values)]}


def _rounded(x: Any, digits: int = 6) -> Any:
    """Six significant digits: the parameter file stays readable and stable across BLAS builds."""
    if isinstance(x, np.ndarray):
        return [_rounded(float(v), digits) for v in x]
    if isinstance(x, list):
        return [_rounded(v, digits) for v in x]
    return float(f"{x:.{digits}g}")


def _on_grid(fits: list[PulseFit], attr: str) -> FloatArray:
    # np.interp holds the end values beyond the outermost pulse sets.
    return np.interp(SOC_GRID, [f.soc for f in fits], [getattr(f, attr) for f in fits])


def pulse_rc_tables(pulses: list[PulseFit]) -> dict[str, Any]:
    """The R1, C1, R2, C2 tables of the relaxation fits on SOC_GRID (C = tau/R)."""
    r1, r2 = (_on_grid(pulses, a) for a in ("r1_ohm", "r2_ohm"))
    tau1, tau2 = _on_grid(pulses, "tau1_s"), _on_grid(pulses, "tau2_s")
    return {"R1 [Ohm]": _table(r1), "C1 [F]": _table(tau1 / r1), "R2 [Ohm]": _table(r2), "C2 [F]": _table(tau2 / r2)}


def branch_limited(ocv_V: FloatArray, hysteresis_V: FloatArray) -> FloatArray:
    """The largest band H' <= H whose branches OCV ± H' both rise with SoC by at least BRANCH_MIN_RISE of the OCV's
    rise: |H'_j - H'_k| <= (1 - BRANCH_MIN_RISE)·|OCV_j - OCV_k|, i.e. H'_k = min_j (H_j + L·|OCV_k - OCV_j|), the
    lower Lipschitz envelope of H in OCV (L = 1 - BRANCH_MIN_RISE). A branch that falls with SoC makes a rested
    voltage mean two SoCs, which no estimator can resolve; the measured band is an upper bound anyway (it includes
    relaxation slower than the RC pairs), so it is only ever lowered. Where the OCV is strictly increasing (the OCV
    fit makes it so) the branches are then strictly increasing too."""
    distance_V = np.abs(ocv_V[:, np.newaxis] - ocv_V[np.newaxis, :])
    return np.asarray(np.min(hysteresis_V[np.newaxis, :] + (1.0 - BRANCH_MIN_RISE) * distance_V, axis=1))


def fit(c20: CyclerLog, pulse: CyclerLog, name: str, pulse_current_A: float = 2.9) -> CellFit:
    ocv = fit_ocv(c20)
    pulses = fit_pulses(pulse, ocv.capacity_Ah, pulse_current_A)
    steps = fit_steps(pulse, pulses, ocv.capacity_Ah, pulse_current_A)
    r1, r2 = (_on_grid(pulses, a) for a in ("r1_ohm", "r2_ohm"))
    # At C/20 for ~20 h both RC pairs are fully charged, so the resistive part of the half gap is I*(R0+R1+R2) (plus
    # the charge-transfer overpotential), not I*R0 alone; what remains is the hysteresis half-width H, so the model
    # reproduces both C/20 branches.
    if steps:
        with_i0 = [f for f in steps if f.i0_A is not None]
        r0 = np.interp(SOC_GRID, [f.soc for f in steps], [f.r0_ohm for f in steps])
        i0 = np.interp(SOC_GRID, [f.soc for f in with_i0], [f.i0_A for f in with_i0 if f.i0_A is not None])
        kinetic_V = thermal_voltage_V(TEMPERATURE_C) * np.arcsinh(ocv.current_A / (2.0 * i0))
    else:
        r0, kinetic_V = _on_grid(pulses, "r0_ohm"), np.zeros_like(SOC_GRID)
    hysteresis = branch_limited(ocv.ocv_V, np.maximum(ocv.half_gap_V - ocv.current_A * (r0 + r1 + r2) - kinetic_V, 0.0))
    lit = {k: v for k, (v, _) in LITERATURE.items()}
    params: dict[str, Any] = {
        "name": name,
        "chemistry": "NCA",
        "sources": _sources(ocv, pulses, steps, pulse_current_A),
        "Nominal capacity [A.h]": _rounded(ocv.capacity_Ah),
        "Lower voltage cut-off [V]": 2.5,
        "Upper voltage cut-off [V]": 4.2,
        "OCV [V]": _table(ocv.ocv_V),
        "OCV hysteresis [V]": {"SoC": _rounded(SOC_GRID), "values": _rounded(hysteresis)},
        "Hysteresis rate [1/(A.s)]": lit["Hysteresis rate [1/(A.s)]"],
        "R0 [Ohm]": _table(r0),
        **({"Exchange current [A]": _table(i0)} if steps else {}),
        **pulse_rc_tables(pulses),
        "Resistance activation energy [J/mol]": lit["Resistance activation energy [J/mol]"],
        "Entropic change [V/K]": lit["Entropic change [V/K]"],
        "Coulombic efficiency": lit["Coulombic efficiency"],
        "Thermal": {k.split(".", 1)[1]: _rounded(v) for k, v in lit.items() if k.startswith("Thermal.")},
        "Ageing": {k.split(".", 1)[1]: v for k, v in lit.items() if k.startswith("Ageing.")},
    }
    return CellFit(params=params, ocv=ocv, pulses=pulses, steps=steps)


def fit_cell(c20_log: CyclerLog, pulse_log: CyclerLog, name: str) -> dict[str, Any]:
    """The parameter file (see the module docstring) fitted to a C/20 log and an HPPC pulse log."""
    return fit(c20_log, pulse_log, name).params


def _sources(ocv: OcvFit, pulses: list[PulseFit], steps: list[StepFit], pulse_current_A: float) -> dict[str, str]:
    socs = f"{len(pulses)} pulse sets at SoC {min(p.soc for p in pulses):.2f}-{max(p.soc for p in pulses):.2f}"
    rc = (f"Fitted: scipy least_squares on the 20-min relaxation after each {pulse_current_A:g} A, 10 s HPPC pulse "
          f"({socs}, placed with the tester's Ah counter over the C/20 capacity), V = Vinf - I*sum(Rk*(1-exp(-Tp/"
          f"tauk))*exp(-t/tauk)), tau1 in {TAU1_BOUNDS_S} s, tau2 in {TAU2_BOUNDS_S} s; C = tau/R; interpolated "
          f"linearly in SoC, end values held. HPPC run of 2017-03-11. Data: {DATASET}.")
    sources = {
        "Nominal capacity [A.h]": (f"Measured: charge of the C/20 ({ocv.current_A:.3f} A) discharge from full "
                                   f"(CC-CV 4.2 V) to 2.5 V, {ocv.capacity_Ah:.4f} Ah (datasheet nominal 2.9 Ah). "
                                   f"That run (2017-05-08) is ~7 weeks after the HPPC and US06 runs, so the cell had "
                                   f"aged a little more. Data: {DATASET}."),
        "Lower voltage cut-off [V]": "Test window of the dataset (upstream description).",
        "Upper voltage cut-off [V]": "Test window of the dataset (upstream description).",
        "OCV [V]": (f"Measured: mean of the C/20 discharge and charge branches on the discharge's own SoC scale; "
                    f"above SoC {ocv.charge_reach_soc:.3f} (the charge branch's reach, no CV phase) the discharge "
                    f"branch plus half a branch gap interpolated from the last {END_GAP_WINDOW_SOC:g} SoC of the "
                    f"overlap to the gap at SoC 1, where the rested voltage before the discharge (after CC-CV) stands "
                    f"in for the charge branch; made strictly increasing (largest change "
                    f"{ocv.monotone_fix_max_mV:.2f} mV). Data: {DATASET}."),
        "OCV hysteresis [V]": ("Measured: half the C/20 branch gap minus the steady resistive drop "
                               f"I*(R0+R1+R2) at {ocv.current_A:.3f} A, floored at 0; held beyond the charge branch's "
                               "reach. Includes any relaxation slower than the RC pairs, so it is an upper bound. "
                               f"Then lowered where needed so that both branches OCV ± H rise with SoC by at least "
                               f"{BRANCH_MIN_RISE:g} of the OCV's rise (a falling branch makes a rested voltage "
                               "ambiguous)."),
        "R0 [Ohm]": (f"Measured: mean of the voltage steps at the start and end of each {pulse_current_A:g} A HPPC "
                     f"pulse over the current (first samples ~0.1 s after the step); same pulses as R1. "
                     f"Data: {DATASET}."),
        "R1 [Ohm]": rc, "C1 [F]": rc, "R2 [Ohm]": rc, "C2 [F]": rc,
    }
    if steps:
        levels = sorted({round(c, 2) for f in steps for c in f.currents_A})
        sources["R0 [Ohm]"] = sources["Exchange current [A]"] = (
            f"Fitted: scipy least_squares per pulse set on the voltage steps of its pulses at {len(levels)} current "
            f"levels ({', '.join(f'{c:g}' for c in levels)} A; mean of the steps at start and end, first samples ~0.1 "
            f"s after them), step = R0*I + (2RT/F)*asinh(I/(2*I0)) at {TEMPERATURE_C:g} degC (symmetric Butler-Volmer, "
            f"Newman & Thomas-Alyea, Electrochemical Systems, 3rd ed., ch. 8); sets with fewer than {MIN_RATES} levels "
            f"get R0 alone with I0 interpolated from the others; interpolated linearly in SoC, end values held. "
            f"Data: {DATASET}.")
        sources["OCV hysteresis [V]"] = sources["OCV hysteresis [V]"].replace(
            "I*(R0+R1+R2)", "I*(R0+R1+R2) + (2RT/F)*asinh(I/(2*I0))")
    sources.update({k: s for k, (_, s) in LITERATURE.items()})
    return sources


@dataclass(frozen=True)
class _Replay:
    """A log replayed through the model up to the RC pairs: everything but v1 + v2."""

    soc: FloatArray  # coulomb-counted from 1
    dt_s: FloatArray
    current_A: FloatArray  # mean over each step, > 0 charges
    factor: FloatArray  # Arrhenius factor of R0, R1, R2 at the cell temperature
    static_V: FloatArray  # OCV + h + R0*I + eta


def _table_at(params: dict[str, Any], key: str, soc: FloatArray) -> FloatArray:
    return np.asarray(np.interp(soc, params[key]["SoC"], params[key]["values"][0]))


def _replay(params: dict[str, Any], log: CyclerLog, follow_temperature: bool) -> _Replay:
    """The 2-RC model with one-state hysteresis (current positive = charge) on a log that starts at rest after a full
    charge: SoC coulomb-counted from 1 on the file's capacity, hysteresis state on the charge branch (+H), at the
    logged cell temperature (follow_temperature) or isothermal at the table temperature. Off the single-temperature
    tables resistances scale by exp(Ea/R*(1/T - 1/T_table)) and I0 by exp(-Ea_I0/R*(1/T - 1/T_table)) as in
    hil.physics.ecm; the OCV stays at the table temperature (the entropic slope is a literature guess here). Per step
    dt with the mean current I: h <- target + (h - target)*exp(-rate*|I|*dt), target = sign(I)*H(SoC); static part
    OCV + h + R0*I + eta with the charge-transfer overpotential eta = (2RT/F)*asinh(I/(2*I0)) when the file has an
    exchange current."""
    soc = np.clip(coulomb_soc(log, params["Nominal capacity [A.h]"], soc0=1.0), 0.0, 1.0)
    time_s, current_A = log.time_s, log.current_A
    table_C = params["R0 [Ohm]"]["Temperature [degC]"][0]
    temp_C = log.temp_C if follow_temperature and log.temp_C is not None else np.full_like(time_s, table_C)
    inverse_K = 1.0 / (temp_C + KELVIN) - 1.0 / (table_C + KELVIN)
    ea_J_per_mol = params["Resistance activation energy [J/mol]"]
    factor = np.exp(ea_J_per_mol / GAS_CONSTANT_J_per_molK * inverse_K)
    kinetic_V = np.zeros_like(current_A)
    if "Exchange current [A]" in params:
        ea_i0 = params.get("Exchange current activation energy [J/mol]", ea_J_per_mol)
        i0 = _table_at(params, "Exchange current [A]", soc) * np.exp(-ea_i0 / GAS_CONSTANT_J_per_molK * inverse_K)
        kinetic_V = thermal_voltage_V(temp_C) * np.arcsinh(current_A / (2.0 * i0))
    band = np.interp(soc, params["OCV hysteresis [V]"]["SoC"], params["OCV hysteresis [V]"]["values"])
    rate = params["Hysteresis rate [1/(A.s)]"]
    dt = np.diff(time_s, prepend=time_s[0])
    i_mean = 0.5 * (current_A + np.concatenate(([current_A[0]], current_A[:-1])))
    h = np.empty_like(time_s)
    h_V = float(np.interp(1.0, params["OCV hysteresis [V]"]["SoC"], params["OCV hysteresis [V]"]["values"]))
    for k in range(len(time_s)):
        if i_mean[k] != 0.0:
            target = np.sign(i_mean[k]) * band[k]
            h_V = target + (h_V - target) * np.exp(-rate * abs(i_mean[k]) * dt[k])
        h[k] = h_V
    static_V = _table_at(params, "OCV [V]", soc) + h + _table_at(params, "R0 [Ohm]", soc) * factor * current_A
    return _Replay(soc=soc, dt_s=dt, current_A=i_mean, factor=factor, static_V=static_V + kinetic_V)


def _rc_V(drive_V: FloatArray, tau_s: FloatArray | float, dt_s: FloatArray) -> FloatArray:
    """An RC branch from rest, exact per step for the step's mean current: v <- v*e + R*I*(1 - e), e = exp(-dt/tau).
    drive_V is R*I per step; with columns (n steps, m) it runs m branches of the same tau at once."""
    decay = np.broadcast_to(np.exp(-dt_s / tau_s), dt_s.shape)
    out = np.empty_like(drive_V)
    v_V = np.zeros_like(drive_V[0])
    for k in range(len(dt_s)):
        v_V = v_V * decay[k] + drive_V[k] * (1.0 - decay[k])
        out[k] = v_V
    return out


def replay_V(params: dict[str, Any], log: CyclerLog, follow_temperature: bool = False) -> tuple[FloatArray, FloatArray]:
    """(SoC, model terminal voltage) of the log replayed as in _replay, V = OCV + h + R0*I + eta + v1 + v2."""
    rep = _replay(params, log, follow_temperature)
    r1, r2 = (_table_at(params, k, rep.soc) for k in ("R1 [Ohm]", "R2 [Ohm]"))
    tau1, tau2 = r1 * _table_at(params, "C1 [F]", rep.soc), r2 * _table_at(params, "C2 [F]", rep.soc)
    rc_V = (_rc_V(r1 * rep.factor * rep.current_A, tau1, rep.dt_s)
            + _rc_V(r2 * rep.factor * rep.current_A, tau2, rep.dt_s))
    return rep.soc, rep.static_V + rc_V


def fit_drive(params: dict[str, Any], log: CyclerLog, follow_temperature: bool = False) -> DriveFit:
    """R1 and R2 piecewise linear on DRIVE_KNOTS_SOC and one tau1 and tau2, by least squares on the voltage of a
    training drive replayed as in validate; OCV, hysteresis, R0 and I0 stay as given. For fixed time constants an RC
    branch is a linear filter of R(SoC(t))*I(t), and R(SoC) is linear in its knot values, so the knot resistances
    come from bounded linear least squares (scipy lsq_linear) and only tau1, tau2 need a nonlinear search
    (Nelder-Mead on their logarithms within TAU1_BOUNDS_S and TAU2_BOUNDS_S, from the medians of the given
    tables)."""
    rep = _replay(params, log, follow_temperature)
    knots = np.array(DRIVE_KNOTS_SOC)
    # Column j: R = 1 Ohm at knot j, 0 at the others, times the Arrhenius factor and the current.
    unit_V = np.stack([np.interp(rep.soc, knots, row) for row in np.eye(knots.size)], axis=1)
    unit_V *= (rep.factor * rep.current_A)[:, np.newaxis]
    target_V = log.voltage_V - rep.static_V

    def knot_fit(log_tau: FloatArray) -> Any:
        design = np.hstack([_rc_V(unit_V, float(np.exp(x)), rep.dt_s) for x in log_tau])
        return lsq_linear(design, target_V, bounds=(DRIVE_R_FLOOR_OHM, R_BOUNDS_OHM[1]))

    def median_tau(r: str, c: str) -> float:
        return float(np.median(np.array(params[r]["values"][0]) * np.array(params[c]["values"][0])))

    bounds = [np.log(TAU1_BOUNDS_S), np.log(TAU2_BOUNDS_S)]
    start = np.clip(np.log([median_tau("R1 [Ohm]", "C1 [F]"), median_tau("R2 [Ohm]", "C2 [F]")]), *np.array(bounds).T)
    search = minimize(lambda x: knot_fit(x).cost, start, method="Nelder-Mead", bounds=bounds,
                      options={"xatol": DRIVE_LOG_TAU_TOLERANCE, "fatol": 1e-6})
    best = knot_fit(search.x)
    _, before_V = replay_V(params, log, follow_temperature)
    return DriveFit(tau1_s=float(np.exp(search.x[0])), tau2_s=float(np.exp(search.x[1])),
                    r1_ohm=best.x[:knots.size].tolist(), r2_ohm=best.x[knots.size:].tolist(),
                    rmse_before_mV=float(np.sqrt(np.mean((before_V - log.voltage_V) ** 2)) * 1e3),
                    rmse_mV=float(np.sqrt(np.mean(best.fun ** 2)) * 1e3), evaluations=int(search.nfev))


def drive_rc_tables(drive: DriveFit) -> dict[str, Any]:
    """The R1, C1, R2, C2 tables of a drive fit on SOC_GRID (C = tau/R)."""
    r1, r2 = (np.interp(SOC_GRID, DRIVE_KNOTS_SOC, r) for r in (drive.r1_ohm, drive.r2_ohm))
    return {"R1 [Ohm]": _table(r1), "C1 [F]": _table(drive.tau1_s / r1),
            "R2 [Ohm]": _table(r2), "C2 [F]": _table(drive.tau2_s / r2)}


def validate(params: dict[str, Any], log: CyclerLog, follow_temperature: bool = False) -> dict[str, Any]:
    """Replay a drive-cycle log that starts at rest after a full CC-CV charge (SoC 1 on the C/20 scale, hysteresis
    state on the charge branch, +H): current in, coulomb-counted SoC, model voltage against the measured one.
    follow_temperature: feed the logged cell temperature through the activation energies (worth it only when those
    are fitted; with this file's literature 25 kJ/mol the Panasonic US06 replay gets worse, 53 -> 61 mV), else
    isothermal at the table temperature."""
    soc_grid = params["OCV [V]"]["SoC"]
    soc, v_model = replay_V(params, log, follow_temperature)
    err_mV = (v_model - log.voltage_V) * 1e3
    loaded = np.flatnonzero(np.abs(log.current_A) > REST_CURRENT_A)
    drive = slice(0, int(loaded[-1]) + 1) if loaded.size else slice(None)
    result: dict[str, Any] = {
        "file": log.source.get("path", ""),
        "sha256": log.source.get("sha256", ""),
        # Cross-check of the full state: where the OCV alone equals the first (rested) voltage.
        "SoC of the first voltage on the OCV": round(float(np.interp(log.voltage_V[0], params["OCV [V]"]["values"][0],
                                                                      soc_grid)), 4),
        "final SoC": round(float(soc[-1]), 4),
        "voltage RMSE [mV]": round(float(np.sqrt(np.mean(err_mV ** 2))), 2),
        "voltage RMSE until the last load [mV]": round(float(np.sqrt(np.mean(err_mV[drive] ** 2))), 2),
        "max abs voltage error [mV]": round(float(np.max(np.abs(err_mV))), 1),
        "mean voltage error [mV]": round(float(np.mean(err_mV)), 2),
    }
    cooling = _cooling_h(params, log, int(loaded[-1]) + 1 if loaded.size else len(log))
    if cooling is not None:
        result["heat transfer coefficient from the final rest [W/(m2.K)]"] = cooling
    return result


def _cooling_h(params: dict[str, Any], log: CyclerLog, rest_from: int) -> float | None:
    """h = m*cp/(tau*A) from the can's exponential cooling towards the starting temperature in the final rest."""
    if log.temp_C is None or len(log) - rest_from < 10:
        return None
    ambient_C = float(log.temp_C[0])
    excess = log.temp_C[rest_from:] - ambient_C
    if np.min(excess) <= 0.5:
        return None
    slope = np.polyfit(log.time_s[rest_from:], np.log(excess), 1)[0]  # -1/tau
    thermal = params["Thermal"]
    return round(float(-slope * thermal["Mass [kg]"] * thermal["Specific heat capacity [J/(kg.K)]"]
                       / thermal["Surface area [m2]"]), 1)


def model_card(cell: CellFit, logs: dict[str, CyclerLog], validation: dict[str, Any] | None) -> dict[str, Any]:
    """Provenance and quality of a fit: input files with SHA-256, fit errors, drive-cycle error, date, versions."""
    def ocv_at(soc: float) -> float:
        return float(np.interp(soc, cell.ocv.soc, cell.ocv.ocv_V))

    def at_bound(value: float, bounds: tuple[float, float]) -> bool:
        return bool(min(abs(np.log(value / b)) for b in bounds) < 0.01)

    try:
        package_version = metadata.version("soxbms")
    except metadata.PackageNotFoundError:
        package_version = "unknown"
    return {
        "name": cell.params["name"],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "fitter": f"hil.cellfit {FIT_VERSION}",
        "package version": package_version,
        "data": {role: {"file": Path(log.source.get("path", "")).name, "sha256": log.source.get("sha256", ""),
                        "start": log.source.get("start", ""), "rows": len(log)} for role, log in logs.items()},
        "dataset": DATASET,
        "ocv": {"capacity [A.h]": round(cell.ocv.capacity_Ah, 4), "C/20 current [A]": round(cell.ocv.current_A, 4),
                "charge branch reach [SoC]": round(cell.ocv.charge_reach_soc, 4),
                "monotone fix, largest change [mV]": round(cell.ocv.monotone_fix_max_mV, 3),
                "range [V]": [round(float(cell.ocv.ocv_V[0]), 4), round(float(cell.ocv.ocv_V[-1]), 4)]},
        "pulses": [{**{k: round(v, 6) for k, v in asdict(p).items()},
                    # Cross-check of the SoC placement: rest voltage before the pulse vs the fitted OCV there.
                    "rest minus OCV [mV]": round((p.rest_before_V - ocv_at(p.soc)) * 1e3, 1)} for p in cell.pulses],
        "steps": [{"soc": round(f.soc, 6), "currents [A]": _rounded(f.currents_A), "steps [V]": _rounded(f.steps_V),
                   "r0_ohm": round(f.r0_ohm, 6), "i0_A": None if f.i0_A is None else round(f.i0_A, 4),
                   "rmse_mV": round(f.rmse_mV, 3)} for f in cell.steps],
        "pulse fit RMSE [mV]": {"min": round(min(p.rmse_mV for p in cell.pulses), 3),
                                "max": round(max(p.rmse_mV for p in cell.pulses), 3)},
        "pulses with a time constant at a bound": {
            "tau1": sum(at_bound(p.tau1_s, TAU1_BOUNDS_S) for p in cell.pulses),
            "tau2": sum(at_bound(p.tau2_s, TAU2_BOUNDS_S) for p in cell.pulses), "of": len(cell.pulses)},
        "validation": validation,
        "limitations": [
            "Isothermal 25 degC tables; temperature dependence only through the literature activation energy.",
            "C/20 run ~7 weeks after the HPPC/US06 runs: capacity and SoC placement of the pulses carry that offset.",
            "Hysteresis band = C/20 half gap minus I*(R0+R1+R2): slow relaxation beyond tau2 is counted as hysteresis.",
            "Thermal, ageing, entropic, activation-energy, coulombic-efficiency and hysteresis-rate values are "
            "literature orders of magnitude (see sources), not fitted.",
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soxbms cell fit", description="Fit a two-RC cell model to a C/20 "
                                     "log and an HPPC log; write its parameter file and model card.")
    parser.add_argument("c20", type=Path, help="C/20 discharge/charge log (.mat or .csv)")
    parser.add_argument("pulse", type=Path, help="HPPC pulse log with the tester's Ah column")
    parser.add_argument("--validate", type=Path, help="drive-cycle log starting at rest after a full charge")
    parser.add_argument("--name", required=True, help="parameter set name")
    parser.add_argument("--out", type=Path, required=True, help="parameter file; the model card goes next to it "
                                                                "as NAME.meta.json")
    parser.add_argument("--pulse-current", type=float, default=2.9, help="pulse current to fit, A (default 2.9)")
    args = parser.parse_args(argv)
    try:
        print(f"reading {args.c20} and {args.pulse}", flush=True)
        logs = {"c20": read_log(args.c20), "pulse": read_log(args.pulse)}
        print("fitting OCV, hysteresis and RC pairs", flush=True)
        cell = fit(logs["c20"], logs["pulse"], args.name, args.pulse_current)
        print(f"  capacity {cell.ocv.capacity_Ah:.4f} Ah, {len(cell.pulses)} pulses, fit RMSE "
              f"{min(p.rmse_mV for p in cell.pulses):.2f}-{max(p.rmse_mV for p in cell.pulses):.2f} mV", flush=True)
        validation = None
        if args.validate:
            print(f"validating on {args.validate}", flush=True)
            logs["validation"] = read_log(args.validate)
            validation = validate(cell.params, logs["validation"])
            print(f"  voltage RMSE {validation['voltage RMSE [mV]']} mV", flush=True)
    except (OSError, CyclerFormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    params_text = json.dumps(cell.params, indent=2) + "\n"
    card_text = json.dumps(model_card(cell, logs, validation), indent=2) + "\n"
    meta_path = args.out.with_name(args.out.name.removesuffix(".json") + ".meta.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(params_text)
    meta_path.write_text(card_text)
    print(f"wrote {args.out} and {meta_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
