"""The board's smallest heap with its estimators on: 16 cells estimated as the shipped configuration says
(models/board/estimator.json: the SoC EKF, fused with the NN when its "fusion" is not "none"; SoH, state of safety),
MQTT and the flash queue, code from .mpy, on a rig module of the cell type the NN was trained for (the fusion's code
and the NN model load only for that cell, so a fusing configuration is measured at its largest). By bisection as in
`bench link` (hil.bench_link.heap_min_kb); a heap survives when every sample is stored with its estimates, the
board having said "estimation on" (a board that could not load its estimators runs on without them)."""

from __future__ import annotations

from pathlib import Path

from hil.bench_link import heap_min_kb
from hil.firmware_build import cached_build
from hil.harness import ROOT, Fleet
from hil.physics.params import load
from hil.profiles import Table, us06
from hil.simulated import SimulatedModule
from host.store import open_store

CELL = "chen2020_spme_fit"  # models/board/ and models/cells/: the NN's cell type (estimator.json's "nn_cell")
CELLS = 16


def _module(index: int) -> SimulatedModule:
    params = load(ROOT / "models" / "cells" / f"{CELL}.json")
    return SimulatedModule(params, CELLS, [Table(us06())], seed=index + 1, initial_soc=0.9)


def _estimated(fleet: Fleet) -> bool:
    """The board ran its estimators and every stored cell reading carries a SoC."""
    board = fleet.board_procs[0]
    if "estimation on" not in board.log_path.read_text():
        return False
    store = open_store(fleet.db)
    try:
        return all(row[15] is not None for row in store.samples(fleet.device_ids()[0], estimates=True))
    finally:
        store.close()


def heap_min_with_estimators(state: Path, samples: int = 300, firmware_dir: Path | None = None,
                             lo_kb: int = 64, hi_kb: int = 512) -> int | None:
    """Smallest -X heapsize in bytes (8 KB steps) at which a 16-cell board with estimators, state of safety, MQTT
    and queue stores `samples` samples with their estimates; None when even hi_kb does not."""
    kb = heap_min_kb(state, samples, firmware_dir or cached_build(), lo_kb=lo_kb, hi_kb=hi_kb, check=_estimated,
                     module_factory=_module, sox_cell=CELL)
    return None if kb is None else kb * 1024
