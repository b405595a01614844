"""`soxbms hil run SCENARIO`: a scenario through the whole chain (simulated module, rig, firmware
under MicroPython, broker, host), with the truth of every sample beside what the board reported.

Writes, in STATE/hil/<scenario>/: samples.csv (per sample and cell: truth and board readings, the indices
of the scenario's faults active at the sample, space-separated, and the plating-risk flag), plot.png and
score.json (delivery counts, sensor errors against truth, the run's figures, and per fault its first and last
active sample time)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from hil import faults
from hil.chain import run_chain
from hil.physics.module import CellModule
from hil.plot import plot_run
from hil.scenario import Scenario, load_scenario
from hil.simulated import SimulatedModule

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
                 sensor_ranges: Path | None = None) -> dict[str, Any]:
    """truth: "ecm" (the scenario's cell file), "spme" or "dfn" (PyBaMM; hil.physics.pybamm_cells); None: the
    scenario's own `truth`. sensor_ranges: a ranges file instead of the scenario's (hil.sensors.models)."""
    scenario: Scenario = load_scenario(path, cells)
    truth = truth or scenario.truth
    out_dir = state_dir / "hil" / scenario.name
    modules: list[SimulatedModule] = []

    def make_module(index: int) -> SimulatedModule:
        modules.append(build_module(scenario, index, truth, sensor_ranges))
        return modules[-1]

    run = run_chain(out_dir, scenario.name, scenario.cells, scenario.samples, scenario.period_ms, make_module,
                    realtime=realtime, realtime_s=scenario.duration_s, db_url=db_url, broker_prefer=broker_prefer)
    score = run.score
    module = modules[0]
    score.update(write_outputs(out_dir, module, run.rows, scenario.cells))
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
    score["plot"] = str(plot_run(out_dir / "samples.csv", out_dir / "plot.png", scenario.name))
    (out_dir / "score.json").write_text(json.dumps(score, indent=1))
    return score
