"""The rig's simulated cell module: load profile -> cell physics -> sensors, one sample at a time.

It answers the rig as the toy module did (`n_cells`, `step(dt_s)`, `reading()`), and keeps the
truth of every sample it produced for scoring: what the cells really did next to what the sensors
reported. The physics runs in sub-steps of at most 1 s, whatever the sample period."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hil.physics.module import CellModule
from hil.physics.params import CellParams
from hil.profiles import Segment
from hil.sensors.models import DEFAULT_RANGES_PATH, Readings, SensorSuite, Truth

MAX_SUBSTEP_S = 1.0


@dataclass(frozen=True)
class TruthRow:
    """The true state at one sample."""

    t_s: float
    current_A: float
    voltage_V: np.ndarray
    temp_C: np.ndarray
    soc: np.ndarray
    soh: np.ndarray


class SimulatedModule:
    def __init__(self, params: CellParams, n_cells: int, load: list[Segment], seed: int = 1, ambient_C: float = 25.0,
                 initial_soc: float = 1.0, ranges_path: Path | str = DEFAULT_RANGES_PATH) -> None:
        self.n_cells = n_cells
        self.capacity_Ah = params.nominal_capacity_Ah
        self.cells = CellModule(params, n_cells, seed=seed, ambient_C=ambient_C, initial_soc=initial_soc)
        self.sensors = SensorSuite(n_cells, seed=seed + 7919, ranges_path=ranges_path)  # its own draw
        self._load = list(load)
        self._segment_t_s = 0.0
        self.truth: list[TruthRow] = []
        self._readings: Readings | None = None

    # --- what a load segment may read (hil.profiles.ModuleView) ----------------------------------

    def max_cell_V(self) -> float:
        return float(np.max(self.cells.terminal_V))

    def min_cell_V(self) -> float:
        return float(np.min(self.cells.terminal_V))

    # --- the rig's side ------------------------------------------------------------------------

    @property
    def load_done(self) -> bool:
        return not self._load

    def _demand_A(self) -> float:
        """The current segment's demand; the next segment once one is done; rest after the last."""
        while self._load:
            demand = self._load[0].demand_A(self._segment_t_s, self)
            if demand is not None:
                return demand
            self._load.pop(0)
            self._segment_t_s = 0.0
        return 0.0

    def step(self, dt_s: float) -> None:
        remaining_s = dt_s
        while remaining_s > 1e-9:
            sub_s = min(MAX_SUBSTEP_S, remaining_s)
            self.cells.step(self._demand_A(), sub_s)
            self._segment_t_s += sub_s
            remaining_s -= sub_s
        cells = self.cells
        truth = Truth(current_A=cells.current_A, voltage_V=cells.terminal_V, temp_C=cells.temp_C, soc=cells.soc,
                      soh=cells.capacity_Ah / cells.fresh_capacity_Ah)
        self._readings = self.sensors.read(dt_s, truth)
        self.truth.append(TruthRow(cells.t_s, cells.current_A, truth.voltage_V.copy(), truth.temp_C.copy(),
                                   truth.soc.copy(), truth.soh.copy()))

    def reading(self) -> tuple[int | None, list[list[int | None]]]:
        if self._readings is None:
            raise RuntimeError("no sample taken yet: step() first")
        return self._readings.current_mA, self._readings.wire_rows()
