"""Every SoC estimator over one recording, scored against its truth under issue 5's conditions (hil.soc_score): the
one evaluation behind `soxbms bench soc` (its scenarios and the real US06 recording) and `soxbms hil replay --estimate`.

The recording's samples go to a sample stream file (soxcommon.stream), and every estimator runs over the same stream
from the same wrong start:
- board EKF: firmware/engine/streamrun.py under MicroPython (-X heapsize=160k, code from the .mpy build),
- board NN and board fused: the same runner in modes "nn" and "fused" (engine/fusion.py; the NN of
  models/nn/soc_mlp.board.json, fused only on the cell type it was trained for, configuration "nn_cell"); when the
  shipped configuration does not fuse ("fusion": "none"), board fused runs it with BEST_FUSION, the fusion variant
  hil.fusion_select ranked best, so that the candidate not shipped is still measured,
- host EKF: the float64 filterpy reference (host.estimate.reference), which also gives the board-vs-host gap; it
  replays the capacities the board's SoH tracker gave the board's EKF (the board's "capacity_updates"), so that the
  gap compares the two filters on the same inputs,
- coulomb counting: the reported current from the same start, with the model file's capacity.
The board runs the one shipped configuration, models/board/estimator.json; nothing is tuned per recording.

A recorded log has one cell: it is estimated from 30 % below and 30 % above its reference SoC at the first sample
(starts_both_ways), the cell repeated once per start, so both starts run in one pass of each estimator."""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hil.chain import ProgressBar
from hil.firmware_build import cached_build
from hil.harness import micropython_binary
from hil.scenario import ROOT
from hil.soc_score import FloatArray, Score, coulomb_count, score, wrong_start
from host.estimate import cellmodel
from host.estimate import reference as reference_ekf
from host.estimate.streamfile import read_estimates
from soxcommon.frame import ABSENT
from soxcommon.stream import HEADER_BYTES, SampleWriter, out_record_bytes

if TYPE_CHECKING:
    from hil.replay import SentSample

BOARD_MODELS = ROOT / "models" / "board"
SHIPPED_CONFIG = BOARD_MODELS / "estimator.json"
NN_MODEL = ROOT / "models" / "nn" / "soc_mlp.board.json"
HEAP_KB = 160
BOARD_TIMEOUT_S = 1800
POLL_S = 0.25  # how often a board run's progress is read off its output file
SOH_SCORED_BELOW = 0.99  # recordings whose truth starts below this SoH score the SoH tracker
BEST_FUSION = "ensemble"  # python -m hil.fusion_select: the best fusion variant (models/board/README.md)
ESTIMATORS = ("coulomb", "board_ekf", "board_nn", "board_fused", "host_ekf")  # the order of the table
BOARD_MODES = {"board_ekf": "ekf", "board_nn": "nn", "board_fused": "fused"}  # engine/streamrun.py's modes
OUT_SUFFIX = {"ekf": "", "nn": ".nn", "fused": ".fused"}  # the board's output file: NAME{suffix}.sxe

Progress = Callable[[str], ProgressBar]  # makes the progress bar of one estimator's run, given its label


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


@dataclass(frozen=True)
class Evaluation:
    row: dict[str, Any]  # the recording's figures (a row of bench soc's "scenarios")
    soc0: FloatArray  # the start of each cell
    t_s: FloatArray
    truth: FloatArray  # (samples, cells)
    estimates: dict[str, FloatArray]  # estimator -> SoC (samples, cells)
    scores: dict[str, Score]  # estimator -> per-cell figures


def write_stream(path: Path, records: list[reference_ekf.Record], n_cells: int) -> None:
    with open(path, "wb") as f:
        writer = SampleWriter(f, n_cells)
        for t_ms, current_mA, volts, temps in records:
            writer.write(t_ms, current_mA, volts, temps)


def run_board(stream: Path, model: Path, out: Path, soc0: FloatArray, mode: str = "ekf",
              config: Path = SHIPPED_CONFIG, on_record: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The board's estimator (mode: ekf, nn or fused, engine/streamrun.py) over a stream file under MicroPython;
    its summary line (step times, bytes per step). on_record: told how many records are done, every POLL_S."""
    build = cached_build()
    code = (f"import sys\nsys.path.append({str(build)!r})\nfrom engine import streamrun\n"
            f"streamrun.run({str(stream)!r}, {str(model)!r}, {str(config)!r}, {str(out)!r}, "
            f"{[float(s) for s in soc0]!r}, {mode!r}, {str(NN_MODEL)!r})\n")
    out.unlink(missing_ok=True)  # progress is read off this file's size
    proc = subprocess.Popen([micropython_binary(), "-X", f"heapsize={HEAP_KB}k", "-c", code],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + BOARD_TIMEOUT_S
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=POLL_S)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()
                proc.communicate()
                raise RuntimeError(f"board estimator ({mode}) still running after {BOARD_TIMEOUT_S} s") from None
            if on_record is not None and out.exists():
                on_record(max(0, out.stat().st_size - HEADER_BYTES) // out_record_bytes(soc0.size))
    if proc.returncode != 0:
        raise RuntimeError(f"board estimator failed: {stderr.strip() or stdout.strip()}")
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return summary


def starts_both_ways(true_soc0: float) -> FloatArray:
    """The starts of a one-cell recording: 30 % below and 30 % above its true SoC (wrong_start's rule: the other side
    where one leaves [0, 1]); one start when both come out the same (a cell within 30 % of full or of empty)."""
    starts = wrong_start(np.array([true_soc0, true_soc0]))
    return starts[:1] if starts[0] == starts[1] else starts


def _wire(value: int | None) -> int:
    return ABSENT if value is None else value


def log_recording(sent: Sequence[SentSample], copies: int) -> Recording:
    """A replayed log's samples (hil.replay) with the reference SoC as the truth, the one cell repeated `copies`
    times (one per start)."""
    records: list[reference_ekf.Record] = [
        (s.t_ms, _wire(s.current_mA), [_wire(s.voltage_mV)] * copies, [_wire(s.temp_dC)] * copies) for s in sent]
    return Recording(t_s=np.array([s.t_ms / 1000 for s in sent]),
                     current_A=np.array([np.nan if s.current_mA is None else s.current_mA / 1000 for s in sent]),
                     true_soc=np.array([[np.nan if s.ref_soc is None else s.ref_soc] * copies for s in sent]),
                     true_soh=np.ones(copies), records=records)


def evaluate_log(name: str, sent: Sequence[SentSample], model_path: Path, work: Path,
                 soc0: Sequence[float] | None = None, progress: Progress | None = None) -> Evaluation:
    """A replayed log from the given starts (default: starts_both_ways of its first reference SoC)."""
    missing = [k for k, s in enumerate(sent) if s.ref_soc is None or not math.isfinite(s.ref_soc)]
    if not sent or missing:
        raise ValueError(f"no reference SoC at sample {missing[0] if missing else 0}: nothing to score the "
                         "estimators against there")
    assert sent[0].ref_soc is not None
    starts = starts_both_ways(sent[0].ref_soc) if soc0 is None else np.asarray(soc0, dtype=np.float64)
    return evaluate(name, log_recording(sent, starts.size), model_path, work, starts, progress)


def _counted(records: list[reference_ekf.Record], show: Callable[[int], None] | None) -> Iterator[reference_ekf.Record]:
    for k, r in enumerate(records):
        yield r
        if show is not None:
            show(k + 1)


@contextmanager
def _stage(progress: Progress | None, label: str) -> Iterator[Callable[[int], None] | None]:
    """One estimator's run: its progress bar's show(records done), closed at the end (None: no progress)."""
    if progress is None:
        yield None
        return
    bar = progress(label)
    try:
        yield bar.show
    finally:
        bar.close()


def shipped_estimator(config: dict[str, Any]) -> str:
    """The estimator the shipped configuration runs on the board: fused when its "fusion" is not "none"."""
    return "board_ekf" if config.get("fusion", "none") == "none" else "board_fused"


def fused_config(work: Path) -> Path:
    """The configuration board fused runs: the shipped one, or the shipped one with BEST_FUSION when it has none."""
    config = json.loads(SHIPPED_CONFIG.read_text())
    if shipped_estimator(config) == "board_fused":
        return SHIPPED_CONFIG
    path = work / "estimator.fused.json"
    path.write_text(json.dumps(config | {"fusion": BEST_FUSION}))
    return path


def evaluate(name: str, rec: Recording, model_path: Path, work: Path, soc0: FloatArray | None = None,
             progress: Progress | None = None) -> Evaluation:
    """Every estimator over one recording, from the same wrong start (default: wrong_start of the truth)."""
    n = rec.true_soc.shape[1]
    soc0 = wrong_start(rec.true_soc[0]) if soc0 is None else soc0
    model = cellmodel.load(model_path)
    stream = work / f"{name}.sxs"
    write_stream(stream, rec.records, n)
    summaries: dict[str, dict[str, Any]] = {}
    estimates: dict[str, FloatArray] = {}
    for estimator, mode in BOARD_MODES.items():
        out = work / f"{name}{OUT_SUFFIX[mode]}.sxe"
        config = fused_config(work) if mode == "fused" else SHIPPED_CONFIG
        with _stage(progress, estimator) as show:
            summaries[mode] = run_board(stream, model_path, out, soc0, mode, config, on_record=show)
        estimates[estimator] = read_estimates(out).soc
    with _stage(progress, "host_ekf") as show:
        host = reference_ekf.run_ekf(model, json.loads(SHIPPED_CONFIG.read_text()), _counted(rec.records, show),
                                     list(soc0), summaries["ekf"]["capacity_updates"])
    estimates["host_ekf"] = host.soc
    estimates["coulomb"] = coulomb_count(rec.t_s, rec.current_A, soc0, model.capacity_Ah, model.coulombic_efficiency)
    scored = {estimator: score(rec.t_s, estimates[estimator], rec.true_soc)
              for estimator in ("board_ekf", "host_ekf", "coulomb", "board_nn", "board_fused")}
    scores = {estimator: result.as_dict() for estimator, result in scored.items()}
    board, board_summary = estimates["board_ekf"], summaries["ekf"]
    nn_summary, fused_summary = summaries["nn"], summaries["fused"]
    # Board vs host once both have converged: from a 30 % wrong start the first updates amplify any difference
    # (float32 state, a SoC on a table breakpoint taking the other segment's slope) until both filters have settled.
    gap = []
    for c, (b_cell, h_cell) in enumerate(zip(scored["board_ekf"].cells, scored["host_ekf"].cells, strict=True)):
        after_s = max(b_cell.convergence_s or 0.0, h_cell.convergence_s or 0.0)
        gap.append(float(np.max(np.abs(board[rec.t_s >= after_s, c] - host.soc[rec.t_s >= after_s, c]))))
    row = {
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
    return Evaluation(row, soc0, rec.t_s, rec.true_soc, estimates, scored)


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


def per_start(evaluation: Evaluation) -> list[dict[str, Any]]:
    """Each start's figures per estimator (the row's "estimators" hold the worst start's)."""
    out = []
    for k, start in enumerate(evaluation.soc0):
        figures: dict[str, Any] = {"start_soc": round(float(start), 4)}
        for estimator in ESTIMATORS:
            figures[estimator] = evaluation.scores[estimator].cells[k].as_dict()
        out.append(figures)
    return out


def table(evaluation: Evaluation, shipped: str) -> str:
    """The figures as text: one line per estimator and start, then the board-vs-host gap."""
    lines = [f"{'estimator':<12} {'start SoC':>9} {'RMSE %':>8} {'max err %':>9} {'converged at s':>14}"]
    for start in per_start(evaluation):
        for estimator in ESTIMATORS:
            figures = start[estimator]
            converged = "never" if figures["convergence_s"] is None else f"{figures['convergence_s']:g}"
            mark = " (shipped)" if estimator == shipped else ""
            lines.append(f"{estimator:<12} {start['start_soc']:>9.2f} {figures['rmse_pct']:>8.3f} "
                         f"{figures['max_error_pct']:>9.3f} {converged:>14}{mark}")
    row = evaluation.row
    lines.append(f"board EKF vs host EKF after both converged: {row['board_vs_host_pct_max']} % SoC "
                 f"(whole run {row['board_vs_host_pct_max_whole_run']} %)")
    lines.append("RMSE and max error after convergence (over the whole run where it never comes within 2 %)")
    return "\n".join(lines)


def estimates_csv(evaluation: Evaluation) -> Iterable[list[Any]]:
    """Rows of estimates.csv: per sample, the time, the reference SoC and each estimator's SoC from each start."""
    starts = [f"{s:.2f}" for s in evaluation.soc0]
    yield ["t_s", "ref_soc", *(f"{e}_from_{s}" for s in starts for e in ESTIMATORS)]
    for k, t_s in enumerate(evaluation.t_s):
        yield [round(float(t_s), 3), round(float(evaluation.truth[k, 0]), 6),
               *(round(float(evaluation.estimates[e][k, c]), 6) for c in range(len(starts)) for e in ESTIMATORS)]
