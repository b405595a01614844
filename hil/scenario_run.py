"""`soxbms hil run SCENARIO`: a scenario through the whole chain (simulated module, rig, firmware
under MicroPython, broker, host), with the truth of every sample beside what the board reported.

The board estimates by default (estimate=False: it does not): its config's "sox" section names the board model of
the scenario's cell, models/board/<cell name>.json, or, where the repository has none, one made by host.boardmodel
from the scenario's cell into the output folder; with PyBaMM truth too (the board knows only the cell file, as in
`bench soc`). The board's cells start from their OCV (engine/sox.py: the first voltage reading inverted through the
OCV table), not from bench soc's 30 % wrong start.

Writes, in STATE/hil/<scenario>/: samples.csv (per sample and cell: truth and board readings, with estimation the
board's SoC, its 1-sigma, SoH and the pack's state-of-safety level, the indices of the scenario's faults active at
the sample, space-separated, and the plating-risk flag), plot.png and score.json (delivery counts, sensor errors
against truth, the run's figures, per fault its first and last active sample time; with estimation the SoC figures
of hil.soc_score per cell and worst, coulomb counting from the board's start, the SoS levels and findings, and per
fault when the SoS reacted)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hil import faults, soc_score
from hil.chain import SOX_HEAP_KB, run_chain
from hil.harness import MODELS, sox_config
from hil.physics.module import CellModule
from hil.plot import plot_run
from hil.scenario import Scenario, load_scenario
from hil.simulated import SimulatedModule
from host.boardmodel import board_model
from host.store.schema import CELL_COLUMNS
from soxcommon import wire

READING_COLUMNS = ("board_current_mA", "board_voltage_mV", "board_temp_dC", "board_pressure_Pa", "board_tof_ns",
                   "board_amplitude_bp", "board_fbg_pm")
CSV_HEADER = ("sample", "t_s", "cell", "true_current_A", "true_voltage_V", "true_temp_C", "true_soc", "board_soc",
              "board_soc_sigma", "true_soh", "board_soh", *READING_COLUMNS, "board_sos_level", "active_faults",
              "plating_risk")
ESTIMATE_CSV_COLUMNS = ("board_soc", "board_soc_sigma", "board_soh", "board_sos_level")  # only with estimation
# A stored row (SqlStore.samples): boot, seq, t_s, t_ms, time_relative, current_mA, cell, the cell readings, and
# with estimates sos_level, sos_reasons, soc_bp, soc_sigma_bp, soh_bp.
_CURRENT, _READINGS = 5, 7
_SOS_LEVEL = _READINGS + len(CELL_COLUMNS)
_SOS_REASONS, _SOC, _SIGMA, _SOH = _SOS_LEVEL + 1, _SOS_LEVEL + 2, _SOS_LEVEL + 3, _SOS_LEVEL + 4
BP = 10000  # basis points in 1 (the wire's SoC, sigma and SoH unit)


def _rms(errors: list[float]) -> float | None:
    return round(float(np.sqrt(np.mean(np.square(errors)))), 3) if errors else None


def _fraction(bp: int | None) -> float | None:
    return None if bp is None else bp / BP


@dataclass
class BoardEstimates:
    """Per truth sample the board stored (with estimation): its time, the truth and what the board estimated
    (NaN: no estimate for that cell, e.g. before its first voltage reading)."""

    t_s: list[float] = field(default_factory=list)
    true_soc: list[np.ndarray] = field(default_factory=list)
    true_soh: list[np.ndarray] = field(default_factory=list)
    soc: list[list[float]] = field(default_factory=list)
    soh: list[list[float]] = field(default_factory=list)
    current_A: list[float] = field(default_factory=list)
    sos_level: list[int] = field(default_factory=list)
    sos_reasons: list[str] = field(default_factory=list)


def write_outputs(out_dir: Path, module: SimulatedModule, rows: list[tuple[Any, ...]], n_cells: int,
                  estimates: BoardEstimates | None = None) -> dict[str, Any]:
    """samples.csv; and the sensor errors against truth. rows: the store's rows of boot 1 in
    sequence order; in lockstep the k-th sample the board stored is the k-th the rig read from the module
    (module.sent; truth rows of a cut link have no board readings). estimates: rows carry the estimate columns;
    the CSV gets them and `estimates` is filled with the samples the board stored."""
    board_seq = {truth_index: seq for seq, truth_index in enumerate(module.sent)}
    by_sample: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_sample.setdefault(row[1], []).append(row)
    voltage_err_mV: list[float] = []
    temp_err_K: list[float] = []
    header = CSV_HEADER if estimates is not None else tuple(c for c in CSV_HEADER if c not in ESTIMATE_CSV_COLUMNS)
    with open(out_dir / "samples.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, header, extrasaction="ignore")
        writer.writeheader()
        for k, truth in enumerate(module.truth):
            cells = by_sample.get(board_seq.get(k, -1), [])
            if estimates is not None and len(cells) == n_cells:
                _add_estimates(estimates, truth.t_s, truth.soc, truth.soh, cells)
            for c in range(n_cells):
                board = cells[c] if c < len(cells) else None
                readings = [board[_CURRENT], *board[_READINGS:_SOS_LEVEL]] if board else [None] * len(READING_COLUMNS)
                record = dict(zip(READING_COLUMNS, readings, strict=True))
                if board and estimates is not None:
                    record.update(board_soc=_fraction(board[_SOC]), board_soc_sigma=_fraction(board[_SIGMA]),
                                  board_soh=_fraction(board[_SOH]), board_sos_level=board[_SOS_LEVEL])
                writer.writerow({
                    "sample": k, "t_s": round(truth.t_s, 3), "cell": c, "true_current_A": round(truth.current_A, 4),
                    "true_voltage_V": round(float(truth.voltage_V[c]), 5),
                    "true_temp_C": round(float(truth.temp_C[c]), 3), "true_soc": round(float(truth.soc[c]), 6),
                    "true_soh": round(float(truth.soh[c]), 6), **record,
                    "active_faults": " ".join(map(str, truth.faults)), "plating_risk": int(truth.plating_risk)})
                if board and board[_READINGS] is not None:
                    voltage_err_mV.append(board[_READINGS] - truth.voltage_V[c] * 1000)
                if board and board[_READINGS + 1] is not None:
                    temp_err_K.append(board[_READINGS + 1] / 10 - truth.temp_C[c])
    return {"voltage_reading_rms_error_mV": _rms(voltage_err_mV), "temp_reading_rms_error_K": _rms(temp_err_K)}


def _add_estimates(out: BoardEstimates, t_s: float, true_soc: np.ndarray, true_soh: np.ndarray,
                   cells: list[tuple[Any, ...]]) -> None:
    nan = float("nan")
    out.t_s.append(t_s)
    out.true_soc.append(true_soc)
    out.true_soh.append(true_soh)
    out.soc.append([nan if r[_SOC] is None else r[_SOC] / BP for r in cells])
    out.soh.append([nan if r[_SOH] is None else r[_SOH] / BP for r in cells])
    current_mA = cells[0][_CURRENT]
    out.current_A.append(nan if current_mA is None else current_mA / 1000)
    out.sos_level.append(cells[0][_SOS_LEVEL] or 0)  # the pack's level, on every cell's row
    out.sos_reasons.append(cells[0][_SOS_REASONS] or "")


def score_soc(est: BoardEstimates, model: dict[str, Any]) -> dict[str, Any]:
    """The board's SoC against the truth (hil.soc_score: RMSE and max error after convergence, convergence time),
    per cell and the worst, over the samples where every cell has an estimate; the worst cell's RMSE and max error
    over all those samples; beside it coulomb counting of the board's current from the board's own start, with the
    board model's capacity; and the SoH error at the end."""
    soc = np.array(est.soc)
    scored = ~np.isnan(soc).any(axis=1) if soc.size else np.zeros(0, dtype=bool)
    out: dict[str, Any] = {"start": "ocv", "scored_samples": int(scored.sum()),
                           "start_note": "each cell from its first voltage reading through the OCV table "
                           "(engine/sox.py), not bench soc's 30 % wrong start"}
    if not scored.any():
        return out
    t_s = np.array(est.t_s)[scored]
    truth = np.array(est.true_soc)[scored]
    board = soc_score.score(t_s, soc[scored], truth)
    counted = soc_score.coulomb_count(t_s - t_s[0], np.array(est.current_A)[scored], soc[scored][0],
                                      model["capacity_Ah"], model["coulombic_efficiency"])
    soh_err_pct = np.abs(np.array(est.soh)[scored][-1] - np.array(est.true_soh)[scored][-1]) * 100
    error_pct = np.abs(soc[scored] - truth) * 100  # over the whole run: from an OCV start there is little to converge
    out.update({**board.as_dict(), "soh_err_pct_end": round(float(np.max(soh_err_pct)), 3),
                "whole_run": {"rmse_pct": round(float(np.max(np.sqrt(np.mean(error_pct**2, axis=0)))), 3),
                              "max_error_pct": round(float(np.max(error_pct)), 3)},
                "cells": [{**cell.as_dict(), "soh_err_pct_end": round(float(e), 3)}
                          for cell, e in zip(board.cells, soh_err_pct, strict=True)],
                "coulomb_same_start": soc_score.score(t_s, counted, truth).as_dict()})
    return out


def score_sos(est: BoardEstimates, fault_summary: list[dict[str, Any]]) -> dict[str, Any]:
    """The board's state of safety: samples per level; per check that reported, the samples it was among the
    reasons, its first time, highest level and cells (at most wire.SOS_MAX_REASONS reasons a sample); per fault the
    truth recorded (fault_summary, hil.faults.summary): `sos_first_s`, the first sample at or after its onset with
    the pack at warn or above (None: never), and `sos_max_level`, the highest level while it was active."""
    levels = np.array(est.sos_level, dtype=int)
    t_s = np.array(est.t_s)
    findings: dict[str, dict[str, Any]] = {}
    for t, codes in zip(est.t_s, est.sos_reasons, strict=True):
        for check, group in _by_check(codes).items():
            finding = findings.setdefault(check, {"samples": 0, "first_s": t, "max_level": 0, "cells": set()})
            finding["samples"] += 1
            finding["max_level"] = max(finding["max_level"], max(level for _, level in group))
            finding["cells"].update(cell for cell, _ in group)
    reactions = []
    for fault in fault_summary:
        onset, end = fault["onset_s"], fault["end_s"]
        after = t_s >= (np.inf if onset is None else onset)
        first = np.flatnonzero(after & (levels >= 1))
        active = levels[after & (t_s <= end)] if end is not None else levels[:0]
        reactions.append({"index": fault["index"], "kind": fault["kind"], "onset_s": onset,
                          "sos_first_s": round(float(t_s[first[0]]), 3) if first.size else None,
                          "sos_max_level": wire.SOS_LEVELS[int(active.max())] if active.size else None})
    return {"level_samples": {name: int(np.sum(levels == i)) for i, name in enumerate(wire.SOS_LEVELS)},
            "findings": {check: {**f, "max_level": wire.SOS_LEVELS[f["max_level"]], "cells": sorted(f["cells"])}
                         for check, f in findings.items()},
            "faults": reactions}


def _by_check(codes: str) -> dict[str, list[tuple[int, int]]]:
    """A sample's reason codes (space-separated) as check name -> [(cell, level)]."""
    out: dict[str, list[tuple[int, int]]] = {}
    for code in codes.split():
        check, cell, level = wire.reason_parts(int(code))
        name = wire.SOS_CHECKS[check] if check < len(wire.SOS_CHECKS) else f"check {check}"
        out.setdefault(name, []).append((cell, level))
    return out


def board_model_for(scenario: Scenario, out_dir: Path) -> tuple[Path, str]:
    """The board model of the scenario's cell and where it came from: the repository's models/board/<name>.json,
    or, where there is none, one made now by host.boardmodel into out_dir (the board needs only the cell file)."""
    shipped = MODELS / "board" / f"{scenario.params.name}.json"
    if shipped.exists():
        return shipped, "models/board"
    made = out_dir / "board-model" / f"{scenario.params.name}.json"
    made.parent.mkdir(parents=True, exist_ok=True)
    doc = {**board_model(scenario.params), "source": {"cell": scenario.params.name, "made_by": "soxbms hil run"}}
    made.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    return made, "made by host.boardmodel from the scenario's cell (none in models/board)"


def _start_aged(cells: CellModule, aged: dict[str, float]) -> None:
    if "cycles" in aged:
        start_soc = cells.soc
        cells.set_state(soc=1.0)  # cycled from full, as in service; the run then starts rested at its own SoC
        cells.fast_forward(cycles=int(aged["cycles"]), dod=aged["dod"], c_rate=aged["c_rate"], temp_C=aged["temp_C"],
                           cycle_duration_s=aged["cycle_duration_s"])
        cells.set_state(soc=start_soc)
        cells.t_s = 0.0  # the run's clock (and its faults' windows) start at the aged state
    elif aged:
        cells.set_state(capacity_factor=aged.get("capacity_factor"), resistance_factor=aged.get("resistance_factor"))


def build_module(scenario: Scenario, index: int, truth: str, sensor_ranges: Path | None = None) -> SimulatedModule:
    """Board `index`'s simulated module: its own seed; cells from the scenario's cell file (truth "ecm") or
    PyBaMM ("spme", "dfn"; hil.physics.pybamm_cells); sensors drawn from sensor_ranges (default: the scenario's)."""
    seed = scenario.seed + index
    ranges = sensor_ranges or scenario.sensor_ranges
    if truth == "ecm":
        cells = CellModule(scenario.params, scenario.cells, seed=seed, ambient_C=scenario.ambient_C,
                           initial_soc=scenario.initial_soc)
        _start_aged(cells, scenario.aged)
        return SimulatedModule(scenario.params, scenario.cells, scenario.segments(), seed=seed,
                               faults=scenario.faults, ranges_path=ranges, cells=cells)
    from hil.physics.pybamm_cells import PybammCells  # imports PyBaMM (~1 s): only when asked for

    truth_cells = PybammCells(scenario.cells, model=truth, parameter_set=scenario.pybamm_parameters, seed=seed,
                              ambient_C=scenario.ambient_C, initial_soc=scenario.initial_soc)
    # The load's C-rates refer to the PyBaMM cell's nominal capacity, not the cell file's.
    params = replace(scenario.params, nominal_capacity_Ah=truth_cells.eng.nominal_capacity_Ah)
    return SimulatedModule(params, scenario.cells, scenario.segments(), seed=seed, faults=scenario.faults,
                           cells=truth_cells, ranges_path=ranges)


def run_scenario(path: Path, state_dir: Path, cells: int | None = None, realtime: bool = False,
                 truth: str | None = None, db_url: str | None = None, broker_prefer: str = "mosquitto",
                 sensor_ranges: Path | None = None, estimate: bool = True) -> dict[str, Any]:
    """truth: "ecm" (the scenario's cell file), "spme" or "dfn" (PyBaMM; hil.physics.pybamm_cells); None: the
    scenario's own `truth`. sensor_ranges: a ranges file instead of the scenario's (hil.sensors.models).
    estimate: the board runs its estimators (SoC, SoH, SoS) with the board model of the scenario's cell."""
    scenario: Scenario = load_scenario(path, cells)
    truth = truth or scenario.truth
    out_dir = state_dir / "hil" / scenario.name
    modules: list[SimulatedModule] = []

    def make_module(index: int) -> SimulatedModule:
        modules.append(build_module(scenario, index, truth, sensor_ranges))
        return modules[-1]

    model_path, model_from = board_model_for(scenario, out_dir) if estimate else (None, "")
    sox = None if model_path is None else {**sox_config(scenario.params.name), "cell_model": str(model_path)}
    run = run_chain(out_dir, scenario.name, scenario.cells, scenario.samples, scenario.period_ms, make_module,
                    realtime=realtime, realtime_s=scenario.duration_s, db_url=db_url, broker_prefer=broker_prefer,
                    sox=sox)
    score = run.score
    module = modules[0]
    estimates = BoardEstimates() if sox is not None else None
    score.update(write_outputs(out_dir, module, run.rows, scenario.cells, estimates))
    final = module.truth[-1]
    score.update({
        "scenario": scenario.name, "truth": truth, "realtime": realtime, "samples": scenario.samples,
        "pybamm_parameters": scenario.pybamm_parameters if truth != "ecm" else None,
        "sensor_ranges": str(sensor_ranges or scenario.sensor_ranges),
        "simulated_s": round(final.t_s, 1), "wall_s": round(run.wall_s, 1),
        "x_realtime": round(final.t_s / run.wall_s, 1),
        "true_soc_start": round(float(np.mean(module.truth[0].soc)), 4),
        "true_soh_start": round(float(np.mean(module.truth[0].soh)), 4),
        "true_soc_end": round(float(np.mean(final.soc)), 4),
        "true_temp_max_C": round(max(float(np.max(t.temp_C)) for t in module.truth), 2),
        "load_finished": module.load_done, "outputs": str(out_dir),
        "plating_risk_samples": sum(t.plating_risk for t in module.truth),
        "faults": faults.summary(scenario.faults, [(t.t_s, t.faults) for t in module.truth]),
        "plant_events": [asdict(e) for e in module.plant.events],
    })
    if estimates is not None and model_path is not None:
        score["board_estimation"] = _estimation(run.board.log_path.read_text(), model_path, model_from)
        if score["board_estimation"]["on"]:
            score["board_soc"] = score_soc(estimates, json.loads(model_path.read_text()))
            score["board_sos"] = score_sos(estimates, score["faults"])
    else:
        score["board_estimation"] = {"on": False, "why": "not asked (--no-estimate)"}
    score["plot"] = str(plot_run(out_dir / "samples.csv", out_dir / "plot.png", scenario.name))
    (out_dir / "score.json").write_text(json.dumps(score, indent=1))
    return score


def _estimation(board_log: str, model_path: Path, model_from: str) -> dict[str, Any]:
    """What the board said of its estimators (app/node.py logs "estimation on: ..." or "estimation off: why")."""
    said = next((line for line in board_log.splitlines() if line.startswith("estimation ")), None)
    on = said is not None and said.startswith("estimation on")
    return {"on": on, "board_said": said, **({} if on else {"why": f"the board said {said!r}"}),
            "board_model": str(model_path), "board_model_from": model_from, "board_heap_kb": SOX_HEAP_KB}


def run_summary(score: dict[str, Any]) -> str:
    """A few lines for `soxbms run`: delivery, speed, reading error, the board's SoC against the truth, SoS."""
    lines = [f"sent {score['sent']}, stored {score['stored']}, lost {score['lost']}, duplicated {score['duplicates']}, "
             f"gaps {score['gaps']}; board heap peak {score['heap_live_peak_bytes']} B; {score['simulated_s']:.0f} s "
             f"simulated in {score['wall_s']} s; voltage readings vs truth {score['voltage_reading_rms_error_mV']} mV "
             f"RMS."]
    estimation = score.get("board_estimation", {})
    soc = score.get("board_soc", {})
    if "rmse_pct" in soc:
        converged = soc["convergence_s"]
        convergence = "never within 2 %" if converged is None else f"within 2 % from {converged:.0f} s"
        levels = ", ".join(f"{name} {n}" for name, n in score["board_sos"]["level_samples"].items() if n)
        whole, coulomb = soc["whole_run"], soc["coulomb_same_start"]
        lines.append(f"board SoC vs truth (start from OCV), worst of {score['cells']} cells: RMSE "
                     f"{soc['rmse_pct']:.2f} %, max {soc['max_error_pct']:.2f} % after convergence ({convergence}); "
                     f"whole run RMSE {whole['rmse_pct']:.2f} %, max {whole['max_error_pct']:.2f} %; coulomb counting "
                     f"from the same start RMSE {coulomb['rmse_pct']:.2f} %. SoS samples: {levels}.")
    elif not estimation.get("on"):
        lines.append(f"no board estimates: {estimation.get('why')}")
    else:
        lines.append("board estimates: no sample had an estimate of every cell")
    lines.append(f"Outputs: {score['outputs']} (samples.csv, plot.png, score.json)")
    return "\n".join(lines)
