"""`soxbms hil run SCENARIO`: a scenario through the whole chain (simulated module, rig, firmware
under MicroPython, broker, host), with the truth of every sample beside what the board reported.

Writes, in STATE/hil/<scenario>/: samples.csv (per sample and cell: truth and board readings, the indices
of the scenario's faults active at the sample, space-separated, and the plating-risk flag), plot.png and
score.json (delivery counts, sensor errors against truth, the run's figures, and per fault its first and last
active sample time)."""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hil import faults
from hil.harness import Fleet
from hil.plot import plot_run
from hil.scenario import Scenario, load_scenario
from hil.simulated import SimulatedModule
from host.store import open_store

CSV_HEADER = ("sample", "t_s", "cell", "true_current_A", "true_voltage_V", "true_temp_C", "true_soc", "true_soh",
              "board_current_mA", "board_voltage_mV", "board_temp_dC", "board_pressure_Pa", "board_tof_ns",
              "board_amplitude_bp", "board_fbg_pm", "active_faults", "plating_risk")


def _rms(errors: list[float]) -> float | None:
    return round(float(np.sqrt(np.mean(np.square(errors)))), 3) if errors else None


def write_outputs(out_dir: Path, module: SimulatedModule, rows: list[tuple[Any, ...]], n_cells: int) -> dict[str, Any]:
    """samples.csv; and the sensor errors against truth. rows: the store's rows of boot 1 in
    sequence order; in lockstep the k-th sample the board stored is the k-th the rig read from the module
    (module.sent; truth rows of a cut link have no board readings)."""
    board_seq = {truth_index: seq for seq, truth_index in enumerate(module.sent)}
    by_sample: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_sample.setdefault(row[1], []).append(row)
    voltage_err_mV: list[float] = []
    temp_err_K: list[float] = []
    with open(out_dir / "samples.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        for k, truth in enumerate(module.truth):
            cells = by_sample.get(board_seq.get(k, -1), [])
            for c in range(n_cells):
                board = cells[c] if c < len(cells) else None
                readings = list(board[5:6]) + list(board[7:]) if board else [None] * 7
                writer.writerow([k, round(truth.t_s, 3), c, round(truth.current_A, 4),
                                 round(float(truth.voltage_V[c]), 5), round(float(truth.temp_C[c]), 3),
                                 round(float(truth.soc[c]), 6), round(float(truth.soh[c]), 6), *readings,
                                 " ".join(map(str, truth.faults)), int(truth.plating_risk)])
                if board and board[7] is not None:
                    voltage_err_mV.append(board[7] - truth.voltage_V[c] * 1000)
                if board and board[8] is not None:
                    temp_err_K.append(board[8] / 10 - truth.temp_C[c])
    return {"voltage_reading_rms_error_mV": _rms(voltage_err_mV), "temp_reading_rms_error_K": _rms(temp_err_K)}


def run_scenario(path: Path, state_dir: Path, cells: int | None = None, realtime: bool = False,
                 truth: str | None = None) -> dict[str, Any]:
    """truth: "ecm" (the scenario's cell file), "spme" or "dfn" (PyBaMM, Chen2020; hil.physics.pybamm_cells);
    None: the scenario's own `truth`."""
    scenario: Scenario = load_scenario(path, cells)
    truth = truth or scenario.truth
    out_dir = state_dir / "hil" / scenario.name
    out_dir.mkdir(parents=True, exist_ok=True)
    modules: list[SimulatedModule] = []

    def make_module(index: int) -> SimulatedModule:
        seed = scenario.seed + index
        if truth == "ecm":
            module = SimulatedModule(scenario.params, scenario.cells, scenario.segments(), seed=seed,
                                     ambient_C=scenario.ambient_C, initial_soc=scenario.initial_soc,
                                     faults=scenario.faults)
        else:
            from hil.physics.pybamm_cells import PybammCells  # imports PyBaMM (~1 s): only when asked for

            truth_cells = PybammCells(scenario.cells, model=truth, seed=seed, ambient_C=scenario.ambient_C,
                                      initial_soc=scenario.initial_soc)
            # The load's C-rates refer to the PyBaMM cell's nominal capacity, not the cell file's.
            params = replace(scenario.params, nominal_capacity_Ah=truth_cells.eng.nominal_capacity_Ah)
            module = SimulatedModule(params, scenario.cells, scenario.segments(), seed=seed, faults=scenario.faults,
                                     cells=truth_cells)
        modules.append(module)
        return module

    fleet = Fleet(out_dir / "run", boards=1, cells=scenario.cells, samples=scenario.samples, pace_ms=0,
                  period_ms=scenario.period_ms, module_factory=make_module, realtime=realtime)
    started = time.monotonic()

    def progress() -> None:
        done = sum(r.counters.samples for r in fleet.rigs)
        print(f"\r  {scenario.name}: {done}/{scenario.samples} samples", end="", file=sys.stderr, flush=True)

    try:
        fleet.start()
        fleet.wait_boards(timeout_s=120 + scenario.samples * 0.05 + (scenario.duration_s if realtime else 0),
                          on_tick=progress)
        print(file=sys.stderr)
    finally:
        fleet.stop()
    wall_s = time.monotonic() - started
    score = fleet.score()
    store = open_store(fleet.db)
    try:
        rows = [r for r in store.samples(fleet.device_ids()[0]) if r[0] == 1]
    finally:
        store.close()
    module = modules[0]
    score.update(write_outputs(out_dir, module, rows, scenario.cells))
    final = module.truth[-1]
    score.update({
        "scenario": scenario.name, "truth": truth, "realtime": realtime, "samples": scenario.samples,
        "simulated_s": round(final.t_s, 1), "wall_s": round(wall_s, 1),
        "x_realtime": round(final.t_s / wall_s, 1),
        "true_soc_start": round(float(np.mean(module.truth[0].soc)), 4),
        "true_soc_end": round(float(np.mean(final.soc)), 4),
        "true_temp_max_C": round(max(float(np.max(t.temp_C)) for t in module.truth), 2),
        "load_finished": module.load_done, "outputs": str(out_dir),
        "plating_risk_samples": sum(t.plating_risk for t in module.truth),
        "faults": faults.summary(scenario.faults, [(t.t_s, t.faults) for t in module.truth]),
    })
    score["plot"] = str(plot_run(out_dir / "samples.csv", out_dir / "plot.png", scenario.name))
    (out_dir / "score.json").write_text(json.dumps(score, indent=1))
    return score
