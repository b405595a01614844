"""The rig's simulated cell module: load profile -> cell physics -> sensors, one sample at a time.

It answers the rig as the toy module did (`n_cells`, `step(dt_s)`, `reading()`), and keeps the
truth of every sample it produced for scoring: what the cells really did next to what the sensors
reported. The physics runs in sub-steps of at most 1 s, whatever the sample period."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hil.faults import Fault, FaultRunner, plating_risk, puts_heat_into_a_cell
from hil.physics.module import CellModule
from hil.physics.params import CellParams
from hil.plant import Plant
from hil.profiles import Segment
from hil.sensors.models import DEFAULT_RANGES_PATH, Readings, SensorSuite, Truth

if TYPE_CHECKING:  # PyBaMM is imported only when a PyBaMM truth is asked for
    from hil.physics.pybamm_cells import PybammCells

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
    faults: tuple[int, ...] = ()  # indices (in the scenario's [[fault]] array) of the faults active (hil.faults)
    plating_risk: bool = False  # charging while a cell is below hil.faults.PLATING_RISK_BELOW_C


class SimulatedModule:
    def __init__(self, params: CellParams, n_cells: int, load: list[Segment], seed: int = 1, ambient_C: float = 25.0,
                 initial_soc: float = 1.0, ranges_path: Path | str = DEFAULT_RANGES_PATH,
                 plant: Plant | None = None, faults: Sequence[Fault] = (),
                 cells: CellModule | PybammCells | None = None) -> None:
        """cells: prebuilt cells (an aged CellModule, or hil.physics.pybamm_cells) instead of a fresh CellModule of
        params (then seed only seeds the sensors, and ambient_C and initial_soc are the prebuilt cells' own); faults
        that put heat into a cell need a CellModule (hil.faults)."""
        self.n_cells = n_cells
        self.capacity_Ah = params.nominal_capacity_Ah
        self.cells: CellModule | PybammCells = cells if cells is not None else CellModule(
            params, n_cells, seed=seed, ambient_C=ambient_C, initial_soc=initial_soc)
        self.sensors = SensorSuite(n_cells, seed=seed + 7919, ranges_path=ranges_path)  # its own draw
        self.plant = plant if plant is not None else Plant(n_cells)  # contactor closed, no limits: until the board acts
        self._load = list(load)
        self._segment_t_s = 0.0
        self.truth: list[TruthRow] = []
        # Indices of the truth rows the rig read, in order: the k-th sample the board got is truth[sent[k]]
        # (steps the rig makes while a link_loss fault holds the board unanswered are never read).
        self.sent: list[int] = []
        self._readings: Readings | None = None
        self.faults: FaultRunner | None = None
        if faults:
            heated = [f"fault {f.index} ({f.kind})" for f in faults if puts_heat_into_a_cell(f)]
            if heated and not isinstance(self.cells, CellModule):
                raise ValueError(f"{', '.join(heated)} puts heat into a cell: only the ECM truth takes it "
                                 "(PyBaMM's lumped thermal model has no heat input here)")
            self.faults = FaultRunner(faults, self.cells, self.sensors, self.capacity_Ah)

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
        faults = self.faults
        remaining_s = dt_s
        while remaining_s > 1e-9:
            sub_s = min(MAX_SUBSTEP_S, remaining_s)
            cells = self.cells
            demand_A = None
            if faults is not None:  # sub-steps end where a fault starts or ends; a faulty charger overrides the load
                sub_s = faults.advance_to(cells.t_s, sub_s)
                demand_A = faults.charger_A(cells.t_s, self)
            if demand_A is None:
                demand_A = self._demand_A()
                self._segment_t_s += sub_s  # the load's schedule waits while a faulty charger drives
            cell_V = cells.terminal_V
            current_A = self.plant.pack_current_A(demand_A, float(np.sum(cell_V)), float(np.sum(cells.r0_ohm)), sub_s)
            if self.plant.bleed_mask:
                cells.drain(self.plant.bleed_A(cell_V), sub_s)
            cells.step(current_A, sub_s)
            if faults is not None:
                faults.after_substep(sub_s)
            remaining_s -= sub_s
        cells = self.cells
        truth = Truth(current_A=cells.current_A, voltage_V=cells.terminal_V, temp_C=cells.temp_C, soc=cells.soc,
                      soh=cells.capacity_Ah / cells.fresh_capacity_Ah)
        active: tuple[int, ...] = ()
        if faults is None:
            self._readings = self.sensors.read(dt_s, truth)
        else:
            faults.advance_to(cells.t_s, 0.0)  # the sample shows the faults that start at its time
            truth.gas_mol, truth.gas_ppm = faults.gas_mol, faults.gas_ppm()
            readings = self.sensors.read(dt_s, truth)
            faults.apply_to_readings(readings, self._readings, cells.t_s)
            self._readings = readings
            active = faults.active(cells.t_s)
        self.truth.append(TruthRow(cells.t_s, cells.current_A, truth.voltage_V.copy(), truth.temp_C.copy(),
                                   truth.soc.copy(), truth.soh.copy(), active,
                                   plating_risk(cells.current_A, truth.temp_C)))

    def command(self, command: int, a0: int, a1: int, a2: int) -> int:
        """A T_COMMAND from the board (hil.plant), applied from the next step on."""
        return self.plant.command(command, a0, a1, a2, self.cells.t_s, float(np.sum(self.cells.terminal_V)))

    def flags(self) -> int:
        return self.plant.flags(self.cells.t_s)

    def link_down(self) -> bool:
        """True while a link_loss fault covers the present simulated time: the rig leaves the board unanswered."""
        return self.faults is not None and self.faults.link_down()

    def reading(self) -> tuple[int | None, list[list[int | None]]]:
        if self._readings is None:
            raise RuntimeError("no sample taken yet: step() first")
        if not self.sent or self.sent[-1] != len(self.truth) - 1:
            self.sent.append(len(self.truth) - 1)
        return self._readings.current_mA, self._readings.wire_rows()
