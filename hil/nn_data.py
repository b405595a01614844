"""Training and evaluation data of the neural SoC estimator: the rig's simulated module (sensor errors on) run
through drives, the board's own feature code (soxcommon.socfeatures) applied to the integers it would read, and the
true SoC beside every row.

The split (RUNS) shares nothing between training and evaluation, and `check_split` asserts it:
- parameter sets: training sees the Chen2020 family (PyBaMM SPMe with Chen2020, and the ECM cell file
  models/cells/chen2020_spme_fit.json fitted to it); evaluation only PyBaMM SPMe with ORegan2022 (the same LG M50
  cell, parameterised independently by O'Regan et al. 2022, with temperature-dependent transport);
- drive shapes: training random_walk and udds_like of its own seeds, charged back by CC-CV; evaluation US06 (never
  in training) and udds_like of other seeds;
- seeds (drive and module: cell spread, sensor draw and noise) and ambient temperatures: disjoint sets.
Deterministic from the seeds in RUNS; about a minute for all (PyBaMM's ORegan2022 set is ~3 ms per cell-step)."""

from __future__ import annotations

from array import array
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hil import profiles
from hil.physics.params import CellParams, load
from hil.simulated import SimulatedModule
from soxcommon import socfeatures

ROOT = Path(__file__).resolve().parent.parent
ECM_CELL = ROOT / "models" / "cells" / "chen2020_spme_fit.json"
CAPACITY_MAH = 5000  # LG M50 nominal (data sheet; the features' current scale, soxcommon.socfeatures)
STOP_V = 2.5
DRIVE_S = 6 * 3600  # long enough to reach STOP_V from full in every drive (random_walk needs its length)


@dataclass(frozen=True)
class Run:
    """One simulated module run."""

    name: str
    split: str  # "train" | "eval"
    truth: str  # "ecm" (ECM_CELL) | "spme" (hil.physics.pybamm_cells)
    parameter_set: str  # the PyBaMM set, or the one the ECM cell file was fitted to
    drive: str  # "random_walk" | "udds_like" | "us06"
    drive_seed: int  # 0 for us06 (a recording)
    module_seed: int  # cell spread and sensors (hil.simulated.SimulatedModule)
    ambient_C: float
    n_cells: int
    initial_soc: float
    charge: bool  # rest and CC-CV charge back to full after the drive
    max_s: int = DRIVE_S


RUNS = (
    Run("train-ecm-rw-5C", "train", "ecm", "Chen2020", "random_walk", 11, 1, 5.0, 8, 1.0, True),
    Run("train-ecm-udds-25C", "train", "ecm", "Chen2020", "udds_like", 12, 2, 25.0, 8, 0.9, True),
    Run("train-ecm-rw-40C", "train", "ecm", "Chen2020", "random_walk", 13, 3, 40.0, 8, 1.0, True),
    Run("train-ecm-udds-5C", "train", "ecm", "Chen2020", "udds_like", 14, 4, 5.0, 8, 1.0, True),
    Run("train-ecm-rw-25C", "train", "ecm", "Chen2020", "random_walk", 15, 5, 25.0, 8, 0.7, True),
    Run("train-ecm-udds-40C", "train", "ecm", "Chen2020", "udds_like", 16, 6, 40.0, 8, 1.0, True),
    Run("train-spme-udds-25C", "train", "spme", "Chen2020", "udds_like", 17, 7, 25.0, 2, 1.0, False),
    Run("train-spme-rw-40C", "train", "spme", "Chen2020", "random_walk", 18, 8, 40.0, 2, 0.8, False),
    Run("eval-spme-us06-15C", "eval", "spme", "ORegan2022", "us06", 0, 101, 15.0, 1, 1.0, False),
    Run("eval-spme-udds-32C", "eval", "spme", "ORegan2022", "udds_like", 102, 102, 32.0, 1, 0.5, False),
)


@dataclass
class Dataset:
    codes: np.ndarray  # (rows, N_FEATURES) int8: soxcommon.socfeatures codes, the int8 model input
    soc: np.ndarray  # (rows,) true SoC
    run: np.ndarray  # (rows,) index into runs
    runs: tuple[Run, ...]

    def inputs(self) -> np.ndarray:
        """The float model's input: codes * INPUT_SCALE (float32, as the ONNX graph takes it)."""
        return (self.codes.astype(np.float32) * np.float32(socfeatures.INPUT_SCALE)).astype(np.float32)

    def metadata(self) -> list[dict[str, Any]]:
        counts = np.bincount(self.run, minlength=len(self.runs))
        return [asdict(r) | {"rows": int(counts[k])} for k, r in enumerate(self.runs)]


def check_split(runs: tuple[Run, ...]) -> None:
    """Training and evaluation share no parameter set, drive shape, seed or ambient temperature."""
    train = [r for r in runs if r.split == "train"]
    evaluate = [r for r in runs if r.split == "eval"]
    keys = (("parameter set", lambda r: r.parameter_set), ("drive seed", lambda r: r.drive_seed or None),
            ("module seed", lambda r: r.module_seed), ("ambient", lambda r: r.ambient_C),
            ("US06 drive", lambda r: r.drive if r.drive == "us06" else None))
    for what, key in keys:
        shared = ({key(r) for r in train} & {key(r) for r in evaluate}) - {None}
        if shared:
            raise ValueError(f"training and evaluation share the {what} {sorted(map(str, shared))}")


def _drive(run: Run) -> np.ndarray:
    if run.drive == "us06":
        return profiles.us06()
    if run.drive == "udds_like":
        return profiles.udds_like(run.drive_seed)
    return profiles.random_walk(run.drive_seed, run.max_s)


def _module(run: Run, params: CellParams) -> SimulatedModule:
    load_segments: list[profiles.Segment] = [profiles.Table(_drive(run), repeat=True, stop_V=STOP_V)]
    if run.charge:
        load_segments += [profiles.ConstantCurrent(0.0, 1800.0), profiles.ConstantCurrentConstantVoltage(1.0),
                          profiles.ConstantCurrent(0.0, 600.0)]
    if run.truth == "ecm":
        return SimulatedModule(params, run.n_cells, load_segments, seed=run.module_seed, ambient_C=run.ambient_C,
                               initial_soc=run.initial_soc)
    from hil.physics.pybamm_cells import PybammCells  # imports PyBaMM: only for these runs

    cells = PybammCells(run.n_cells, model=run.truth, parameter_set=run.parameter_set, seed=run.module_seed,
                        ambient_C=run.ambient_C, initial_soc=run.initial_soc)
    # The drive's C-rates refer to the PyBaMM cell's nominal capacity (as hil.scenario_run.build_module).
    return SimulatedModule(replace(params, nominal_capacity_Ah=cells.eng.nominal_capacity_Ah), run.n_cells,
                           load_segments, seed=run.module_seed, cells=cells)


def simulate(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(codes (samples * cells, N_FEATURES), true SoC) of one run, 1 s samples until the load is done."""
    module = _module(run, load(ECM_CELL))
    n = run.n_cells
    features = socfeatures.SocFeatures(n, CAPACITY_MAH)
    flat = array("i", [0] * (2 * n))  # voltage_mV, temp_dC per cell: the board's sample layout, stride 2
    out = array("b", [0] * socfeatures.N_FEATURES)
    codes: list[int] = []
    soc: list[float] = []
    while not module.load_done and module.cells.t_s < run.max_s:
        module.step(1.0)
        current_mA, rows = module.reading()
        for c, row in enumerate(rows):
            flat[2 * c] = socfeatures.ABSENT if row[0] is None else row[0]
            flat[2 * c + 1] = socfeatures.ABSENT if row[1] is None else row[1]
        features.update(socfeatures.ABSENT if current_mA is None else current_mA, flat, 2)
        true_soc = module.truth[-1].soc
        for c in range(n):
            if features.ready(c):
                features.codes(c, out)
                codes.extend(out)
                soc.append(float(true_soc[c]))
    return np.array(codes, dtype=np.int8).reshape(-1, socfeatures.N_FEATURES), np.array(soc)


def generate(runs: tuple[Run, ...] = RUNS) -> Dataset:
    check_split(runs)
    parts = [simulate(r) for r in runs]
    return Dataset(codes=np.concatenate([p[0] for p in parts]), soc=np.concatenate([p[1] for p in parts]),
                   run=np.concatenate([np.full(len(p[1]), k) for k, p in enumerate(parts)]), runs=runs)


def split(data: Dataset, name: str) -> Dataset:
    """The rows of the runs of one split ("train" or "eval")."""
    keep = [k for k, r in enumerate(data.runs) if r.split == name]
    rows = np.isin(data.run, keep)
    renumber = np.full(len(data.runs), -1)
    renumber[keep] = np.arange(len(keep))
    return Dataset(data.codes[rows], data.soc[rows], renumber[data.run[rows]], tuple(data.runs[k] for k in keep))
