"""`soxbms bench soc`: SoC estimators scored against the rig's truth, under issue 5's conditions (hil.soc_score).

Per scenario (scenarios/soc/*.toml): the simulated module runs on its own (no rig, no broker: the readings the
board would get, sensor errors drawn per cell, and the truth), the readings go to a sample stream file
(soxcommon.stream), and every estimator runs over the same stream with the same wrong start:
- board EKF: firmware/engine/streamrun.py under MicroPython (-X heapsize=160k, code from the .mpy build),
- host EKF: the float64 filterpy reference (host.estimate.reference), which also gives the board-vs-host gap,
- coulomb counting: the reported current from the same start, with the model file's capacity,
- board NN and board fused: the same runner in modes "nn" and "fused" (engine/fusion.py; the NN of
  models/nn/soc_mlp.board.json, fused only on the cell type it was trained for, configuration "nn_cell").
The SoC bounds are on the shipped estimator ("shipped_estimator": board_fused when the configuration has "fusion").
The board runs the one shipped configuration, models/board/estimator.json, with the board model made from the
scenario's cell file (models/board/<cell>.json); nothing is tuned per scenario."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hil.firmware_build import cached_build
from hil.harness import environment_versions, micropython_binary
from hil.physics.ecm import R0
from hil.physics.module import CellModule
from hil.physics.params import load
from hil.replay import LogOptions, ReplayModule, load_log, sample_times_ms, soc_by_coulomb_counting, timeline
from hil.scenario import ROOT, Scenario, load_scenario
from hil.scenario_run import build_module
from hil.soc_score import FloatArray, coulomb_count, score, wrong_start
from host.estimate import cellmodel
from host.estimate import reference as reference_ekf
from host.estimate.streamfile import read_estimates
from soxcommon.frame import ABSENT
from soxcommon.stream import SampleWriter

SCENARIOS = ROOT / "scenarios" / "soc"
BOARD_MODELS = ROOT / "models" / "board"
SHIPPED_CONFIG = BOARD_MODELS / "estimator.json"
NN_MODEL = ROOT / "models" / "nn" / "soc_mlp.board.json"
REAL_US06 = ROOT.parent / "shared" / "data" / "panasonic-18650pf" / "us06_25degC.mat"  # ../shared/data/README.md
REAL_CELL = ROOT / "models" / "cells" / "panasonic_ncr18650pf_25C.json"
HEAP_KB = 160
SOH_SCORED_BELOW = 0.99  # scenarios whose truth starts below this SoH score the SoH tracker


@dataclass(frozen=True)
class Plan:
    scenarios: tuple[str, ...]
    cells: int | None  # None: the scenario's
    seconds: float | None  # None: the scenario's duration, and the whole recording


FULL = Plan(scenarios=("us06_25C_ecm", "udds_25C_ecm", "hppc_25C_ecm", "cccv_25C_ecm", "us06_0C_ecm", "udds_0C_ecm",
                       "us06_25C_spme", "udds_0C_spme", "us06_25C_dfn", "us06_aged_ecm"), cells=None, seconds=None)
QUICK = Plan(scenarios=("us06_25C_ecm", "udds_0C_ecm"), cells=4, seconds=300.0)


@dataclass
class Recording:
    """What the board would read, sample by sample, and the truth beside it."""

    t_s: FloatArray  # from the start; the first record is the state at t = 0
    current_A: FloatArray  # as the current sensor reported it (NaN where absent)
    true_soc: FloatArray  # (samples, cells)
    true_soh: FloatArray  # (cells,) at the start: present capacity over fresh
    records: list[reference_ekf.Record]
    true_capacity_Ah: FloatArray | None = None  # (cells,) at the end (simulated truth only)
    true_r0_ohm: FloatArray | None = None  # (cells,) at the end, at the cells' final SoC and temperature


def record(scenario: Scenario, truth: str) -> Recording:
    module = build_module(scenario, 0, truth)
    period_s = scenario.period_ms / 1000
    records: list[reference_ekf.Record] = []
    for k in range(scenario.samples + 1):
        module.step(period_s if k else 0.0)  # the first record: the readings of the start state
        current_mA, rows = module.reading()
        records.append((round(module.truth[-1].t_s * 1000), ABSENT if current_mA is None else current_mA,
                        [ABSENT if row[0] is None else row[0] for row in rows],
                        [ABSENT if row[1] is None else row[1] for row in rows]))
    current = np.array([np.nan if r[1] == ABSENT else r[1] / 1000 for r in records])
    rec = Recording(t_s=np.array([r.t_s for r in module.truth]), current_A=current,
                    true_soc=np.array([r.soc for r in module.truth]), true_soh=module.truth[0].soh, records=records)
    cells = module.cells
    if isinstance(cells, CellModule):  # the ECM truth (the PyBaMM truth does not age)
        rec.true_capacity_Ah = cells.capacity_Ah
        rec.true_r0_ohm = cells.ecm.evaluate(cells.thermal.temp_C)[R0]
    return rec


def write_stream(path: Path, records: list[reference_ekf.Record], n_cells: int) -> None:
    with open(path, "wb") as f:
        writer = SampleWriter(f, n_cells)
        for t_ms, current_mA, volts, temps in records:
            writer.write(t_ms, current_mA, volts, temps)


def run_board(stream: Path, model: Path, out: Path, soc0: FloatArray, mode: str = "ekf",
              config: Path = SHIPPED_CONFIG) -> dict[str, Any]:
    """The board's estimator (mode: ekf, nn or fused, engine/streamrun.py) over a stream file under MicroPython;
    its summary line (step times, bytes per step)."""
    build = cached_build()
    code = (f"import sys\nsys.path.append({str(build)!r})\nfrom engine import streamrun\n"
            f"streamrun.run({str(stream)!r}, {str(model)!r}, {str(config)!r}, {str(out)!r}, "
            f"{[float(s) for s in soc0]!r}, {mode!r}, {str(NN_MODEL)!r})\n")
    proc = subprocess.run([micropython_binary(), "-X", f"heapsize={HEAP_KB}k", "-c", code], capture_output=True,
                          text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"board estimator failed: {proc.stderr.strip() or proc.stdout.strip()}")
    summary: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary


def board_model_for(scenario: Scenario) -> Path:
    path = BOARD_MODELS / f"{scenario.params.name}.json"
    if not path.exists():
        raise ValueError(f"no board model {path} for the cell file of {scenario.name}: "
                         f"python -m host.boardmodel models/cells/{scenario.params.name}.json {path}")
    return path


def run_scenario(path: Path, work: Path, cells: int | None, seconds: float | None) -> dict[str, Any]:
    scenario = load_scenario(path, cells)
    if seconds is not None:
        scenario.duration_s = min(scenario.duration_s, seconds)
    started = time.monotonic()
    rec = record(scenario, scenario.truth)
    row = score_recording(scenario.name, rec, board_model_for(scenario), work)
    if "soh" in row:
        row["soh"]["ageing"] = scenario.aged
    row.update({"truth": scenario.truth, "ambient_C": scenario.ambient_C,
                "wall_s": round(time.monotonic() - started, 1)})
    return row


def record_log(path: Path, cell: Path, limit_s: float | None, period_ms: int = 1000) -> Recording:
    """A cycler log as the board would read it (hil.replay's sampling: the last row at or before each sample time),
    with its reference SoC, coulomb-counted from full at the start with the cell file's capacity."""
    logs = timeline([path], [load_log(path, LogOptions())], period_ms, None)
    reference = soc_by_coulomb_counting(logs, load(cell).nominal_capacity_Ah, f"capacity of {cell.name}", 0.0,
                                        "current")
    module = ReplayModule(logs, reference)
    for k, _ in enumerate(sample_times_ms(logs, period_ms, limit_s)):
        module.step(period_ms / 1000 if k else 0.0)
    sent = module.sent
    records: list[reference_ekf.Record] = [
        (s.t_ms, ABSENT if s.current_mA is None else s.current_mA, [ABSENT if s.voltage_mV is None else s.voltage_mV],
         [ABSENT if s.temp_dC is None else s.temp_dC]) for s in sent]
    return Recording(t_s=np.array([s.t_ms / 1000 for s in sent]),
                     current_A=np.array([np.nan if s.current_mA is None else s.current_mA / 1000 for s in sent]),
                     true_soc=np.array([[np.nan if s.ref_soc is None else s.ref_soc] for s in sent]),
                     true_soh=np.ones(1), records=records)


def score_recording(name: str, rec: Recording, model_path: Path, work: Path) -> dict[str, Any]:
    """Every estimator over one recording, from the same wrong start."""
    n = rec.true_soc.shape[1]
    soc0 = wrong_start(rec.true_soc[0])
    model = cellmodel.load(model_path)
    stream, out = work / f"{name}.sxs", work / f"{name}.sxe"
    write_stream(stream, rec.records, n)
    board_summary = run_board(stream, model_path, out, soc0)
    board = read_estimates(out).soc
    nn_summary = run_board(stream, model_path, work / f"{name}.nn.sxe", soc0, "nn")
    fused_summary = run_board(stream, model_path, work / f"{name}.fused.sxe", soc0, "fused")
    host = reference_ekf.run_ekf(model, json.loads(SHIPPED_CONFIG.read_text()), rec.records, list(soc0))
    coulomb = coulomb_count(rec.t_s, rec.current_A, soc0, model.capacity_Ah, model.coulombic_efficiency)
    scored = {estimator: score(rec.t_s, estimate, rec.true_soc)
              for estimator, estimate in (("board_ekf", board), ("host_ekf", host.soc), ("coulomb", coulomb),
                                          ("board_nn", read_estimates(work / f"{name}.nn.sxe").soc),
                                          ("board_fused", read_estimates(work / f"{name}.fused.sxe").soc))}
    scores = {estimator: result.as_dict() for estimator, result in scored.items()}
    # Board vs host once both have converged: from a 30 % wrong start the first updates amplify any difference
    # (float32 state, a SoC on a table breakpoint taking the other segment's slope) until both filters have settled.
    gap = []
    for c, (b_cell, h_cell) in enumerate(zip(scored["board_ekf"].cells, scored["host_ekf"].cells, strict=True)):
        after_s = max(b_cell.convergence_s or 0.0, h_cell.convergence_s or 0.0)
        gap.append(float(np.max(np.abs(board[rec.t_s >= after_s, c] - host.soc[rec.t_s >= after_s, c]))))
    return {
        "scenario": name, "cells": n, "board_model": model_path.name, "samples": len(rec.records),
        "simulated_s": float(rec.t_s[-1]),
        "true_soc_start": round(float(np.mean(rec.true_soc[0])), 4),
        "true_soc_end": round(float(np.mean(rec.true_soc[-1])), 4),
        "true_soh_mean": round(float(np.mean(rec.true_soh)), 4),
        "start_soc": [round(float(v), 4) for v in soc0],
        "estimators": scores,
        "board_vs_host_pct_max": round(max(gap) * 100, 3),
        "board_vs_host_pct_max_whole_run": round(float(np.max(np.abs(board - host.soc))) * 100, 3),
        "ekf_step_us_micropython": board_summary["ekf_step_us_median"],
        "ekf_step_us_micropython_p99": board_summary["ekf_step_us_p99"],
        "ekf_bytes_per_step": board_summary["bytes_per_step"],
        "ekf_step_us_filterpy": round(host.step_us_median, 1), "ekf_step_us_filterpy_p99": round(host.step_us_p99, 1),
        "gated_board": board_summary["gated"],
        "best_board_estimator": _best(scores, ("board_ekf", "board_nn", "board_fused")),
        # False: the NN is not for this cell type (configuration "nn_cell"), board_fused is the EKF alone.
        "fused_uses_nn": "nn_step_us_median" in fused_summary,
        "nn_step_us_micropython": nn_summary["nn_step_us_median"],
        "nn_step_us_micropython_p99": nn_summary["nn_step_us_p99"],
        "nn_bytes_per_step": nn_summary["nn_bytes_per_step"],
        # board_fused's cell-step on top of the EKF's: NN inference and its measurement update (None: EKF alone)
        "fused_extra_us_micropython": fused_summary.get("nn_step_us_median"),
        "gated_nn_fused": fused_summary.get("nn_gated"),
        **({"soh": soh_score(rec, board_summary, model)} if rec.true_capacity_Ah is not None
           and float(np.mean(rec.true_soh)) < SOH_SCORED_BELOW else {}),
    }


def _best(scores: dict[str, dict[str, float | None]], estimators: tuple[str, ...]) -> str:
    """The estimator with the lowest RMSE among those that converged (within 2 %), else the lowest RMSE."""
    return min(estimators, key=lambda e: (scores[e]["convergence_s"] is None, scores[e]["rmse_pct"] or 0.0))


def soh_score(rec: Recording, board: dict[str, Any], model: cellmodel.BoardModel) -> dict[str, Any]:
    """The board's SoH tracker (engine/soh.py) at the end of the run against the truth at the end: capacity error
    per cell over the true capacity, whether the truth lies within the estimate's ±2σ, and the same for R0."""
    assert rec.true_capacity_Ah is not None and rec.true_r0_ohm is not None
    cap, cap_sigma = np.array(board["soh_capacity_Ah"]), np.array(board["soh_capacity_sigma_Ah"])
    r0, r0_sigma = np.array(board["soh_r0_ohm"]), np.array(board["soh_r0_sigma_ohm"])
    cap_err = (cap - rec.true_capacity_Ah) / rec.true_capacity_Ah * 100
    r0_err = (r0 - rec.true_r0_ohm) / rec.true_r0_ohm * 100
    return {
        "read_at_s": float(rec.t_s[-1]), "prior_capacity_Ah": model.capacity_Ah,
        "prior_capacity_sigma_Ah": board["soh_capacity_prior_sigma_Ah"],
        "true_fade_pct_mean": round(float(np.mean(1 - rec.true_capacity_Ah / model.capacity_Ah)) * 100, 2),
        "capacity_pairs": board["soh_capacity_pairs"],
        "capacity_err_pct": [round(float(e), 3) for e in cap_err],
        "capacity_err_pct_max": round(float(np.max(np.abs(cap_err))), 3),
        "capacity_sigma_pct_mean": round(float(np.mean(cap_sigma / rec.true_capacity_Ah)) * 100, 3),
        "capacity_within_2sigma": float(np.mean(np.abs(cap - rec.true_capacity_Ah) <= 2 * cap_sigma)),
        "r0_true_ohm_mean": round(float(np.mean(rec.true_r0_ohm)), 5),
        "r0_err_pct": [round(float(e), 2) for e in r0_err],
        "r0_err_pct_max": round(float(np.max(np.abs(r0_err))), 2),
        "r0_within_2sigma": float(np.mean(np.abs(r0 - rec.true_r0_ohm) <= 2 * r0_sigma)),
    }



def _worst(rows: list[dict[str, Any]], estimator: str, key: str) -> float | None:
    values = [r["estimators"][estimator][key] for r in rows]
    return None if not values or any(v is None for v in values) else max(values)


def run(out: Path | None, quick: bool, state: Path) -> dict[str, Any]:
    started = time.monotonic()
    state.mkdir(parents=True, exist_ok=True)
    plan = QUICK if quick else FULL
    rows = []
    for k, name in enumerate(plan.scenarios):
        print(f"  bench soc: {name} ({k + 1}/{len(plan.scenarios)})", file=sys.stderr, flush=True)
        rows.append(run_scenario(SCENARIOS / f"{name}.toml", state, plan.cells, plan.seconds))
    real: dict[str, Any] | None = None
    if REAL_US06.exists():
        print("  bench soc: the real NCR18650PF US06 recording", file=sys.stderr, flush=True)
        started_real = time.monotonic()
        real = score_recording("real_us06_25C", record_log(REAL_US06, REAL_CELL, plan.seconds), BOARD_MODELS /
                               f"{REAL_CELL.stem}.json", state)
        real.update({"truth": "recording (reference SoC coulomb-counted from full with the fitted capacity)",
                     "ambient_C": 25.0, "wall_s": round(time.monotonic() - started_real, 1)})
    scored_real = [real] if real is not None else []
    # The SoC bounds are over fresh cells: the aged run is scored apart (the board assumes the model file's capacity).
    warm = [r for r in rows if r["ambient_C"] >= 20 and r["true_soh_mean"] > 0.99]
    cold = [r for r in rows if r["ambient_C"] < 5]
    config = json.loads(SHIPPED_CONFIG.read_text())
    shipped = "board_fused" if "fusion" in config else "board_ekf"  # the bounds are on the shipped estimator
    result: dict[str, Any] = {
        "quick": quick, "configuration": config, "shipped_estimator": shipped,
        "soc_rmse_pct_max": _worst(warm, shipped, "rmse_pct"),
        "soc_maxerr_pct_max": _worst(warm, shipped, "max_error_pct"),
        "soc_rmse_pct_cold_max": _worst(cold, shipped, "rmse_pct"),
        "coulomb_rmse_pct_max": _worst(warm, "coulomb", "rmse_pct"),
        "convergence_s_max": _worst(rows + scored_real, shipped, "convergence_s"),
        "board_vs_host_pct_max": max(r["board_vs_host_pct_max"] for r in rows + scored_real),
        "ekf_step_us_micropython": float(np.median([r["ekf_step_us_micropython"] for r in rows])),
        "ekf_step_us_micropython_p99": max(r["ekf_step_us_micropython_p99"] for r in rows),
        "ekf_step_us_filterpy": float(np.median([r["ekf_step_us_filterpy"] for r in rows])),
        "nn_step_us_micropython": float(np.median([r["nn_step_us_micropython"] for r in rows])),
        "nn_step_us_micropython_p99": max(r["nn_step_us_micropython_p99"] for r in rows),
        "best_board_estimator": {r["scenario"]: r["best_board_estimator"] for r in rows + scored_real},
        "real_us06_rmse_pct": None if real is None else real["estimators"][shipped]["rmse_pct"],
        # SoH: the aged run(s), the board's tracker at the end of the run (each row's "soh" states fade, ageing, prior).
        "soh_capacity_err_pct": max((r["soh"]["capacity_err_pct_max"] for r in rows if "soh" in r), default=None),
        "soh_capacity_within_2sigma": min((r["soh"]["capacity_within_2sigma"] for r in rows if "soh" in r),
                                          default=None),
        "soh_r0_err_pct": max((r["soh"]["r0_err_pct_max"] for r in rows if "soh" in r), default=None),
        "real_us06": real if real is not None else f"{REAL_US06} not found",
        "scenarios": rows,
        "versions": environment_versions(),
        "wall_s": round(time.monotonic() - started, 1),
    }
    result["bounds"] = {
        "soc_rmse_pct_max <= 1.0": _at_most(result["soc_rmse_pct_max"], 1.0),
        "soc_maxerr_pct_max <= 3": _at_most(result["soc_maxerr_pct_max"], 3.0),
        "soc_rmse_pct_cold_max <= 2": _at_most(result["soc_rmse_pct_cold_max"], 2.0),
        "real_us06_rmse_pct <= 1.5": _at_most(result["real_us06_rmse_pct"], 1.5),
        "soh_capacity_err_pct <= 2": _at_most(result["soh_capacity_err_pct"], 2.0),
        # None: some cell never came within 2 %, which fails the bound.
        "convergence_s_max <= 600": bool(_at_most(result["convergence_s_max"], 600.0)),
        "board_vs_host_pct_max <= 0.5": _at_most(result["board_vs_host_pct_max"], 0.5),
        "ekf_step_us_micropython <= 0.5 x filterpy": result["ekf_step_us_micropython"]
        <= 0.5 * result["ekf_step_us_filterpy"],
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    return result


def _at_most(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound
