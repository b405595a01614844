"""Multi-sensor SoC ablation (issue 5, "Multi-sensor use"): what contact pressure, FBG can strain and ultrasonic time of
flight add to the board's voltage EKF (firmware/engine/multisensor.py), one channel removed at a time.

Per sensor seed (one module of cells and sensors: the cells' spread and the sensors' drawn coefficients):
1. Commissioning, as an end-of-line tester does it: from full (rested 300 s) a 1C discharge to 2.5 V at 25 degC
   ambient, then the same cells recharged, soaked and discharged again at 0 degC; the same sensors throughout. Per
   cell and measurement a least-squares fit y = a + b*soc + c*dT against the tester's coulomb-counted SoC (known full
   start, capacity from the same discharge: the rig's true SoC), outliers beyond 6 robust sigmas dropped and refitted;
   r_fit = the fit's residual variance. Two temperatures, because c (K^-1 terms: gas/thermal overpressure, ToF
   temperature coefficient, can expansion) is not identified by one temperature.
2. The drives, on the same cells and sensors after commissioning, one after the other (the sensors' clock and drift
   go on): a US06 drive at 25 degC (the recorded cycle, entered at a seed-dependent phase) and a UDDS-like drive at
   0 degC (seeded), each from SoC 0.7 after a rest at its ambient, with bench soc's 30 % wrong starts both ways
   (hil.soc_score.wrong_start).
Tuning on seeds A only: per measurement, the factor k by which r_fit understates the error the channel makes on a
drive (drift, lags, a fit outside its range): e = y - (a + b*soc_true + c*dT) on A's drives, k = median over A's cells
of var(e)*tau/r_fit, tau the integrated autocorrelation time of e in samples (1 + 2*sum of the autocorrelation up to
its first negative lag, at most MAX_LAG): correlated errors carry fewer independent samples than the 1 Hz updates
assume. The board then uses r = k*r_fit per cell. The gate (one for all measurements, in sigmas of the innovation):
the GATE_PASS quantile of A's spike-free |e|/sqrt(k*r_fit), rounded up to a half, at least GATE_MIN; the gate run is
the EKF's (GATE_RUN). Not tuned: s, the sigma of each channel's drift rate (drift_sigma: the ranges file's drift
bounds as a data sheet states them), and memory = MAX_LAG; the board's R = r + memory*(s*age_h)^2 (multisensor.py),
age_h from the middle of commissioning to each sample on the sensors' clock.
Evaluation on seeds B, disjoint from A (other cells, other sensor draws, other drive seeds and US06 phases): each B
cell is commissioned by the same procedure, then every configuration runs on the board (streamrun under MicroPython,
.mpy build, 160 KB heap) over the same stream from the same wrong start. Figures per cell (hil.soc_score: RMSE and max
error after convergence, convergence time; a cell that never converges counts the run's length), their mean over B's
cells x seeds with a 95 % bootstrap interval (cells x seeds resampled as one pool), and per removed channel the paired
difference (all minus X) - (all) with its interval. "aged": the first B seeds' US06 drive again with the sensors'
clock AGED_DAYS after commissioning (the calibration unchanged), voltage only against all channels."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil import profiles
from hil.firmware_build import cached_build
from hil.harness import micropython_binary
from hil.physics.module import CellModule
from hil.physics.params import CellParams, load
from hil.scenario import ROOT
from hil.sensors.models import ABSENT as RIG_ABSENT
from hil.sensors.models import FbgCoeffs, SensorSuite, separate
from hil.simulated import SimulatedModule
from hil.soc_score import FloatArray, score, wrong_start
from host.estimate.streamfile import read_estimates
from soxcommon.frame import ABSENT
from soxcommon.stream import ALL_CHANNELS, EXTRA_CHANNELS, SampleWriter

CELL_FILE = ROOT / "models" / "cells" / "panasonic_ncr18650pf_25C.json"
BOARD_MODEL = ROOT / "models" / "board" / "panasonic_ncr18650pf_25C.json"
CONFIG = ROOT / "models" / "board" / "estimator.json"
FORMAT = "soxbms-multisensor/1"  # engine/multisensor.py's
MEASUREMENTS = ("pressure", "strain", "tof")  # engine/multisensor.py's order
GATE_PASS = 0.999  # the gate (sigmas of the innovation) passes this fraction of A's spike-free errors ...
GATE_MIN = 3.0  # ... and is at least this; the rig's spikes are far beyond (models/board/README.md)
GATE_RUN = 3  # as the EKF's voltage gate
HEAP_KB = 160
BOARD_TIMEOUT_S = 600
INITIAL_SOC = 0.7
REST_S = 300.0
SOAK_S = 120.0  # the pack rests at the drive's ambient before it starts (>= 8 NTC time constants), not scored
MAX_LAG = 600
OUTLIER_SIGMAS = 6.0
BOOTSTRAP = 2000
REQUIRED = {"voltage_only": (), "all": MEASUREMENTS, "all_minus_pressure": ("strain", "tof"),
            "all_minus_strain": ("pressure", "tof"), "all_minus_tof": ("pressure", "strain")}
ALONE = {f"{m}_alone": (m,) for m in MEASUREMENTS}
AGED_DAYS = (1.0, 7.0)
AGED_CONFIGS = {"voltage_only": (), "all": MEASUREMENTS}


@dataclass(frozen=True)
class DriveSpec:
    name: str
    ambient_C: float
    profile: str  # "us06" or "udds_like"


DRIVES = (DriveSpec("us06_25C_ecm", 25.0, "us06"), DriveSpec("udds_0C_ecm", 0.0, "udds_like"))


@dataclass(frozen=True)
class Plan:
    seeds_a: tuple[int, ...]  # tuning
    seeds_b: tuple[int, ...]  # evaluation, disjoint from seeds_a
    cells: int
    seconds: float
    configs: dict[str, tuple[str, ...]]
    aged_seeds: int  # the first seeds_b that also drive with an aged calibration (AGED_DAYS)
    aged_seconds: float


FULL = Plan(seeds_a=(101, 102), seeds_b=(201, 202, 203, 204), cells=4, seconds=1800.0, configs=REQUIRED | ALONE,
            aged_seeds=2, aged_seconds=900.0)
QUICK = Plan(seeds_a=(101,), seeds_b=(201,), cells=4, seconds=300.0, configs=REQUIRED, aged_seeds=1,
             aged_seconds=300.0)


@dataclass
class Capture:
    """A run of the module: the stream's records (with every extra channel), the truth, and the measurements the
    board forms (y per measurement, the dT it uses; NaN where absent), as (samples, cells)."""

    t_s: FloatArray
    true_soc: FloatArray
    records: list[tuple[int, int, list[int], list[int], list[int]]] = field(default_factory=list)
    y: dict[str, FloatArray] = field(default_factory=dict)
    dT: dict[str, FloatArray] = field(default_factory=dict)
    sensor_t0_s: float = 0.0  # the sensors' clock (their drift's time) at the first record


def _wire(values: np.ndarray) -> list[int]:
    return [ABSENT if v == RIG_ABSENT else int(v) for v in values]


def _float(values: np.ndarray) -> FloatArray:
    return np.where(values == RIG_ABSENT, np.nan, values).astype(float)


def run_module(module: SimulatedModule, seconds: float | None, skip_s: float = 0.0) -> Capture:
    """Step the module at 1 Hz until `seconds` (None: until its load is done), the first record at t = 0; the
    samples before skip_s are left out (t counted from there)."""
    rows = []
    t_s: list[float] = []
    sensor_t_s: list[float] = []
    soc: list[FloatArray] = []
    k = 0
    while True:
        module.step(1.0 if k else 0.0)
        readings = module.sensors.last
        assert readings is not None
        truth = module.truth[-1]
        t_s.append(truth.t_s)
        sensor_t_s.append(module.sensors.t_s)
        soc.append(truth.soc)
        rows.append(readings)
        k += 1
        if (seconds is not None and k > seconds) or (seconds is None and module.load_done):
            break
    first = round(skip_s)
    rows = rows[first:]
    cap = Capture(t_s=np.array(t_s[first:]) - t_s[first], true_soc=np.array(soc[first:]),
                  sensor_t0_s=sensor_t_s[first])
    for r, t in zip(rows, cap.t_s, strict=True):
        extra: list[int] = []
        for name in EXTRA_CHANNELS:
            extra += _wire(getattr(r, name))
        cap.records.append((round(t * 1000), ABSENT if r.current_mA is None else r.current_mA,
                            _wire(r.voltage_mV), _wire(r.temp_dC), extra))
    _measurements(cap, rows, module.sensors.fbg_calibration())
    return cap


def _measurements(cap: Capture, rows: list[Any], sheet: FbgCoeffs) -> None:
    """y and dT per measurement as engine/multisensor.py forms them (float64 here)."""
    temp_dC = np.array([_float(r.temp_dC) for r in rows])
    # The board holds each cell's last valid temperature (25 degC before the first).
    last = np.maximum.accumulate(np.where(np.isfinite(temp_dC), np.arange(len(rows))[:, np.newaxis], -1), axis=0)
    temp_dC = np.where(last >= 0, np.take_along_axis(temp_dC, np.maximum(last, 0), axis=0), 250.0)
    ntc_dT = (temp_dC - 250.0) * 0.1
    cap.y["pressure"] = np.array([_float(r.pressure_Pa) for r in rows])
    cap.y["tof"] = np.array([_float(r.tof_ns) for r in rows])
    cap.dT["pressure"] = cap.dT["tof"] = ntc_dT
    grating_dT, strain = separate(np.array([_float(r.fbg_pm) for r in rows]),
                                  np.array([_float(r.fbg_ref_pm) for r in rows]), sheet)
    cap.y["strain"], cap.dT["strain"] = strain, grating_dT


# --- modules -----------------------------------------------------------------------------------------------------

def _cells(params: CellParams, n: int, seed: int, ambient_C: float, soc: float) -> CellModule:
    return CellModule(params, n, seed=seed, ambient_C=ambient_C, initial_soc=soc)


def commission(params: CellParams, n: int, seed: int) -> tuple[Capture, SensorSuite]:
    """The end-of-line cycles (1C discharges from full at 25 and 0 degC) on the cells and sensors of `seed`; the
    sensors afterwards (they go on into the drives)."""
    load_ = [profiles.ConstantCurrent(0.0, REST_S), profiles.ConstantCurrent(-1.0, stop_V=2.5)]
    warm = SimulatedModule(params, n, list(load_), seed=seed, cells=_cells(params, n, seed, 25.0, 1.0))
    first = run_module(warm, None)
    cold_cells = _cells(params, n, seed, 0.0, 1.0)
    cold = SimulatedModule(params, n, list(load_), seed=seed, cells=cold_cells)
    cold.sensors = warm.sensors  # the same sensors, their clock and state going on
    second = run_module(cold, None)
    both = Capture(t_s=np.concatenate([first.t_s, second.t_s + first.t_s[-1] + 1.0]),
                   true_soc=np.concatenate([first.true_soc, second.true_soc]))
    for m in MEASUREMENTS:
        both.y[m] = np.concatenate([first.y[m], second.y[m]])
        both.dT[m] = np.concatenate([first.dT[m], second.dT[m]])
    return both, cold.sensors


def drive(params: CellParams, n: int, seed: int, spec: DriveSpec, sensors: SensorSuite, seconds: float) -> Capture:
    if spec.profile == "us06":
        table = np.roll(profiles.us06(), -(seed * 97) % profiles.US06_PERIOD_S)
    else:
        table = profiles.udds_like(seed)
    module = SimulatedModule(params, n, [profiles.ConstantCurrent(0.0, SOAK_S), profiles.Table(table)], seed=seed,
                             cells=_cells(params, n, seed, spec.ambient_C, INITIAL_SOC))
    module.sensors = sensors  # the same sensors, their clock, drift and state going on
    return run_module(module, SOAK_S + seconds, SOAK_S)


# --- calibration -------------------------------------------------------------------------------------------------

def fit_channel(y: FloatArray, soc: FloatArray, dT: FloatArray) -> list[float]:
    """[a, b, c, r_fit] of y = a + b*soc + c*dT by least squares over the finite samples, refitted once without the
    samples beyond OUTLIER_SIGMAS robust sigmas (spikes); r_fit is the residual variance (3 parameters)."""
    ok = np.isfinite(y) & np.isfinite(dT)
    keep = ok
    for _ in range(2):
        X = np.column_stack([np.ones(int(keep.sum())), soc[keep], dT[keep]])
        coef = np.linalg.lstsq(X, y[keep], rcond=None)[0]
        residual = y - (coef[0] + coef[1] * soc + coef[2] * dT)
        sigma = 1.4826 * float(np.median(np.abs(residual[keep])))
        keep = ok & (np.abs(np.nan_to_num(residual, nan=np.inf)) <= OUTLIER_SIGMAS * max(sigma, 1e-12))
    r_fit = float(np.sum(residual[keep] ** 2) / max(int(keep.sum()) - 3, 1))
    return [float(coef[0]), float(coef[1]), float(coef[2]), r_fit]


def commissioning_fit(cap: Capture) -> dict[str, list[list[float]]]:
    """Per measurement, per cell [a, b, c, r_fit]."""
    n = cap.true_soc.shape[1]
    return {m: [fit_channel(cap.y[m][:, c], cap.true_soc[:, c], cap.dT[m][:, c]) for c in range(n)]
            for m in MEASUREMENTS}


def drift_sigma(ranges: dict[str, Any], fits: dict[str, list[list[float]]], sheet: FbgCoeffs) -> dict[str, FloatArray]:
    """Per measurement and cell the sigma of its drift rate (unit/h): the sensors' drift bounds (the ranges file, as a
    data sheet gives them) as uniform draws (sigma = bound/sqrt 3), through the mapping: the NTC's drift enters
    pressure and ToF by c; both gratings' drifts enter the strain by the separation and the strain's c."""

    def bound(section: str, key: str) -> float:
        entry = ranges[section][key]
        return max(abs(entry["min"]), abs(entry["max"]))

    ntc_K = bound("temperature", "drift_K_per_h")
    c = {m: np.array([f[2] for f in fits[m]]) for m in MEASUREMENTS}
    fbg, ref = bound("fbg", "drift_pm_per_h"), bound("fbg_ref", "drift_pm_per_h")
    ke, kT, kT_ref = sheet.strain_sens_pm_per_ue, sheet.temp_sens_pm_per_K, sheet.ref_temp_sens_pm_per_K
    return {"pressure": np.hypot(bound("pressure", "drift_Pa_per_h"), c["pressure"] * ntc_K) / np.sqrt(3.0),
            "tof": np.hypot(bound("tof", "drift_ns_per_h"), c["tof"] * ntc_K) / np.sqrt(3.0),
            "strain": np.hypot(fbg / ke, (kT / ke + c["strain"]) * ref / kT_ref) / np.sqrt(3.0)}


def calibration_file(fits: dict[str, list[list[float]]], sheet: FbgCoeffs, r_factor: dict[str, float],
                     drift: dict[str, FloatArray], gate: float, about: dict[str, Any]) -> dict[str, Any]:
    """The board's calibration (engine/multisensor.py): r = r_factor[m] * r_fit, s = drift[m] per cell."""
    n = len(fits[MEASUREMENTS[0]])
    cells = []
    for c in range(n):
        entry: dict[str, list[float]] = {}
        for m in MEASUREMENTS:
            a, b, cT, r_fit = fits[m][c]
            entry[m] = [a, b, cT, r_factor[m] * r_fit, float(drift[m][c])]
        entry["grating"] = [float(sheet.lambda0_pm[c]), float(sheet.ref_lambda0_pm[c]),
                            float(sheet.temp_sens_pm_per_K[c]), float(sheet.ref_temp_sens_pm_per_K[c]),
                            float(sheet.strain_sens_pm_per_ue[c])]
        cells.append(entry)
    return {"format": FORMAT, "gate": gate, "gate_run": GATE_RUN, "memory": MAX_LAG, "cells": cells, "about": about}


def autocorrelation_time(e: FloatArray) -> float:
    """1 + 2*sum of the autocorrelation of e (gaps filled with its mean) up to its first negative lag, <= MAX_LAG."""
    x = np.nan_to_num(e - np.nanmean(e))
    var = float(np.dot(x, x))
    if var == 0.0:
        return 1.0
    spectrum = np.fft.rfft(x, 2 * x.size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[: min(MAX_LAG, x.size - 1) + 1] / var
    negative = np.flatnonzero(acf[1:] < 0)
    stop = int(negative[0]) + 1 if negative.size else acf.size
    return float(1.0 + 2.0 * np.sum(acf[1:stop]))


def drive_errors(cap: Capture, fits: dict[str, list[list[float]]]) -> dict[str, list[tuple[FloatArray, float]]]:
    """Per measurement and cell: (e, r_fit), e the drive's error against the mapping at the true SoC (NaN where
    absent or a spike beyond OUTLIER_SIGMAS robust sigmas)."""
    out: dict[str, list[tuple[FloatArray, float]]] = {m: [] for m in MEASUREMENTS}
    for m in MEASUREMENTS:
        for c, (a, b, cT, r_fit) in enumerate(fits[m]):
            e = cap.y[m][:, c] - (a + b * cap.true_soc[:, c] + cT * cap.dT[m][:, c])
            sigma = 1.4826 * float(np.nanmedian(np.abs(e - np.nanmedian(e))))
            out[m].append((np.where(np.abs(e - np.nanmedian(e)) <= OUTLIER_SIGMAS * max(sigma, 1e-12), e, np.nan),
                           r_fit))
    return out


# --- the board ---------------------------------------------------------------------------------------------------

def write_stream(path: Path, cap: Capture) -> None:
    n = cap.true_soc.shape[1]
    with open(path, "wb") as f:
        writer = SampleWriter(f, n, ALL_CHANNELS)
        for t_ms, current_mA, volts, temps, extra in cap.records:
            writer.write(t_ms, current_mA, volts, temps, extra)


def run_board(stream: Path, out: Path, soc0: FloatArray, calibration: Path, measurements: tuple[str, ...],
              age_h: float) -> dict[str, Any]:
    """The board's EKF with the given extra measurements (engine/streamrun.py, --multisensor) under MicroPython."""
    code = (f"import sys\nsys.path.append({str(cached_build())!r})\nfrom engine import streamrun\n"
            f"streamrun.run({str(stream)!r}, {str(BOARD_MODEL)!r}, {str(CONFIG)!r}, {str(out)!r}, "
            f"{[float(s) for s in soc0]!r}, 'ekf', None, None, None, {str(calibration)!r}, {measurements!r}, "
            f"{age_h!r})\n")
    proc = subprocess.run([micropython_binary(), "-X", f"heapsize={HEAP_KB}k", "-c", code], capture_output=True,
                          text=True, timeout=BOARD_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"board estimator failed: {proc.stderr.strip() or proc.stdout.strip()}")
    summary: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary


# --- statistics --------------------------------------------------------------------------------------------------

def _interval(values: FloatArray, rng: np.random.Generator) -> dict[str, Any]:
    """Mean of the per-cell figures with a 95 % percentile bootstrap interval, and the worst cell."""
    means = values[rng.integers(0, values.size, (BOOTSTRAP, values.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": round(float(values.mean()), 3), "ci95": [round(float(lo), 3), round(float(hi), 3)],
            "max": round(float(values.max()), 3)}


def _figures(cells: list[Any], run_s: float) -> dict[str, FloatArray]:
    return {"rmse_pct": np.array([c.rmse_pct for c in cells]),
            "max_error_pct": np.array([c.max_error_pct for c in cells]),
            "convergence_s": np.array([run_s if c.convergence_s is None else c.convergence_s for c in cells])}


def summarise(per_config: dict[str, list[Any]], run_s: float, seed: int) -> dict[str, Any]:
    """Per configuration the figures' means, intervals and worst cells; per removed channel the paired difference
    (all minus X) - (all) with its interval (> 0: removing X makes it worse)."""
    rng = np.random.default_rng(seed)
    figures = {name: _figures(cells, run_s) for name, cells in per_config.items()}
    out: dict[str, Any] = {"configs": {}, "removal_effect": {}}
    for name, figs in figures.items():
        row = {key: _interval(values, rng) for key, values in figs.items()}
        row["convergence_s"]["never"] = sum(c.convergence_s is None for c in per_config[name])
        out["configs"][name] = row
    for m in MEASUREMENTS:
        key = f"all_minus_{m}"
        if key in figures and "all" in figures:
            out["removal_effect"][m] = {f: _interval(figures[key][f] - figures["all"][f], rng)
                                        for f in figures["all"]}
    return out


# --- the bench ---------------------------------------------------------------------------------------------------

def tune(params: CellParams, plan: Plan) -> dict[str, Any]:
    """r factors and the gate from seeds A (commissioning fits and drives of A only)."""
    errors: dict[str, list[tuple[FloatArray, float]]] = {m: [] for m in MEASUREMENTS}
    for seed in plan.seeds_a:
        cap, sensors = commission(params, plan.cells, seed)
        fits = commissioning_fit(cap)
        for spec in DRIVES:
            for m, values in drive_errors(drive(params, plan.cells, seed, spec, sensors, plan.seconds), fits).items():
                errors[m] += values
    ratios = {m: [float(np.nanmean(e**2)) * autocorrelation_time(e) / r_fit for e, r_fit in v]
              for m, v in errors.items()}
    r_factor = {m: round(float(np.median(v)), 3) for m, v in ratios.items()}
    # |e|/sqrt(r) of every A sample once the filter sits at the truth (S -> r): the gate passes GATE_PASS of them.
    z = np.concatenate([np.abs(e[np.isfinite(e)]) / np.sqrt(r_factor[m] * r_fit)
                        for m, v in errors.items() for e, r_fit in v])
    gate = max(GATE_MIN, float(np.ceil(2.0 * np.quantile(z, GATE_PASS))) / 2.0)
    return {"r_factor": r_factor,
            "r_factor_range": {m: [round(float(np.min(v)), 3), round(float(np.max(v)), 3)] for m, v in ratios.items()},
            "gate": gate, "gate_quantile_z": round(float(np.quantile(z, GATE_PASS)), 3), "gate_run": GATE_RUN,
            "seeds": list(plan.seeds_a)}


def _evaluate(work: Path, label: str, cap: Capture, calibration: Path, age_h: float,
              configs: dict[str, tuple[str, ...]], per: dict[str, list[Any]]) -> dict[str, Any]:
    """Every configuration on the board over one drive from its wrong starts; each cell's figures go to per[config].
    Returns the summary of the run with all measurements (None when not among the configurations)."""
    stream = work / f"{label}.sxs"
    write_stream(stream, cap)
    soc0 = wrong_start(cap.true_soc[0])
    all_summary = None
    for name, measurements in configs.items():
        out = work / f"{label}_{name}.sxe"
        summary = run_board(stream, out, soc0, calibration, measurements, age_h)
        per[name] += score(cap.t_s, read_estimates(out).soc, cap.true_soc).cells
        if name == "all":
            all_summary = summary
    assert all_summary is not None
    return all_summary


def run(work: Path, quick: bool) -> dict[str, Any]:
    started = time.monotonic()
    plan = QUICK if quick else FULL
    if set(plan.seeds_a) & set(plan.seeds_b):
        raise ValueError("tuning and evaluation seeds must be disjoint")
    work.mkdir(parents=True, exist_ok=True)
    params = load(CELL_FILE)
    tuning = tune(params, plan)
    tuned_s = time.monotonic() - started
    per: dict[str, dict[str, list[Any]]] = {d.name: {c: [] for c in plan.configs} for d in DRIVES}
    aged: dict[float, dict[str, list[Any]]] = {days: {c: [] for c in AGED_CONFIGS} for days in AGED_DAYS}
    costs: dict[str, list[float]] = {"ms_step_us_median": [], "ms_bytes_per_step": []}
    gated: dict[str, dict[str, int]] = {d.name: dict.fromkeys(MEASUREMENTS, 0) for d in DRIVES}
    calibrations = []
    for k, seed in enumerate(plan.seeds_b):
        cap, sensors = commission(params, plan.cells, seed)
        fitted_at_s = sensors.t_s / 2  # the sensors' clock at the middle of commissioning (it started at 0)
        fits = commissioning_fit(cap)
        about = {"seed": seed, "commissioning": "1C from full to 2.5 V at 25 and at 0 degC (hil/bench_ablation.py)",
                 "r": "r_factor (tuned on seeds A) x the fit's residual variance", "r_factor": tuning["r_factor"],
                 "s": "drift-rate sigma from the ranges file's drift bounds"}
        calibration = work / f"multisensor_seed{seed}.json"
        calibration.write_text(json.dumps(calibration_file(fits, sensors.fbg_calibration(), tuning["r_factor"],
                                                           drift_sigma(sensors.ranges, fits,
                                                                       sensors.fbg_calibration()),
                                                           tuning["gate"], about), indent=1))
        calibrations.append(str(calibration))
        for spec in DRIVES:
            drive_cap = drive(params, plan.cells, seed, spec, sensors, plan.seconds)
            summary = _evaluate(work, f"{spec.name}_seed{seed}", drive_cap, calibration,
                                (drive_cap.sensor_t0_s - fitted_at_s) / 3600, plan.configs, per[spec.name])
            costs["ms_step_us_median"].append(summary["ms_step_us_median"])
            costs["ms_bytes_per_step"].append(summary["ms_bytes_per_step"])
            for m in MEASUREMENTS:
                gated[spec.name][m] += summary["ms_gated"][m]
        for days in AGED_DAYS if k < plan.aged_seeds else ():
            sensors.t_s = fitted_at_s + days * 86400.0  # the sensors' drift goes on, the calibration stays
            drive_cap = drive(params, plan.cells, seed, DRIVES[0], sensors, plan.aged_seconds)
            _evaluate(work, f"{DRIVES[0].name}_seed{seed}_aged{days:g}d", drive_cap, calibration,
                      (drive_cap.sensor_t0_s - fitted_at_s) / 3600, AGED_CONFIGS, aged[days])
    result: dict[str, Any] = {
        "quick": quick, "cell": CELL_FILE.name, "board_model": BOARD_MODEL.name,
        "seeds_tuning": list(plan.seeds_a), "seeds_eval": list(plan.seeds_b), "cells_per_seed": plan.cells,
        "seconds": plan.seconds, "configs": {k: list(v) for k, v in plan.configs.items()}, "tuning": tuning,
        "scenarios": {name: {**summarise(configs, plan.seconds, k), "gated_all": gated[name]}
                      for k, (name, configs) in enumerate(per.items())},
        # The calibration aged: the same cells' US06 drive days after commissioning (the rig's drift is linear).
        "aged": {"scenario": DRIVES[0].name, "seeds": list(plan.seeds_b[:plan.aged_seeds]),
                 "seconds": plan.aged_seconds,
                 "days": {f"{days:g}": summarise(configs, plan.aged_seconds, 10 + k)["configs"]
                          for k, (days, configs) in enumerate(aged.items())}},
        "ms_step_us_median": float(np.median(costs["ms_step_us_median"])),
        "ms_bytes_per_step": float(np.median(costs["ms_bytes_per_step"])),
        "calibration_files": calibrations, "tuning_wall_s": round(tuned_s, 1),
        "wall_s": round(time.monotonic() - started, 1)}
    return result


def table(result: dict[str, Any]) -> str:
    """The ablation as text: per scenario and configuration the means and intervals."""
    lines = [f"multisensor ablation: eval seeds {result['seeds_eval']} x {result['cells_per_seed']} cells, "
             f"tuned on seeds {result['seeds_tuning']} (r factors {result['tuning']['r_factor']}, "
             f"gate {result['tuning']['gate']})"]
    for name, row in result["scenarios"].items():
        lines.append(f"{name}: {'config':<20} {'RMSE % [95 % CI]':>24} {'max err % [95 % CI]':>26} "
                     f"{'converged s [95 % CI]':>26}")
        for config, figs in row["configs"].items():
            cells = [f"{figs[k]['mean']:.3g} [{figs[k]['ci95'][0]:.3g}, {figs[k]['ci95'][1]:.3g}]"
                     for k in ("rmse_pct", "max_error_pct", "convergence_s")]
            lines.append(f"{'':<{len(name) + 1}} {config:<20} {cells[0]:>24} {cells[1]:>26} {cells[2]:>26}")
    aged = result["aged"]
    for days, configs in aged["days"].items():
        rmse = ", ".join(f"{c} {f['rmse_pct']['mean']:.3g} [{f['rmse_pct']['ci95'][0]:.3g}, "
                         f"{f['rmse_pct']['ci95'][1]:.3g}] (max {f['rmse_pct']['max']:.3g})"
                         for c, f in configs.items())
        lines.append(f"{aged['scenario']} with the calibration {days} d old: RMSE % {rmse}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    result = run(Path(argv[argv.index("--state") + 1]) if "--state" in argv else Path("run") / "bench-ablation",
                 quick)
    print(json.dumps(result, indent=1))
    print(table(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
