"""A series string of 1..32 cells: equivalent circuit, thermal chain and ageing per cell, with seeded
cell-to-cell spread. One current flows through every cell; current > 0 charges.

Each step evaluates the parameter tables once, at the state at the start of the step, then advances
the electrical states (exact for constant current) and the temperatures (exact for constant heat); ageing
is integrated every AGEING_INTERVAL_S. Read-outs are evaluated at the present state with the last applied
current."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hil.physics import ageing, thermal
from hil.physics.ecm import DUDT, OCV, R0, Ecm
from hil.physics.params import CellParams

MAX_CELLS = 32
# Ageing is integrated on this sub-grid of simulated time (stress sampled at its end, throughput summed every
# step): within a minute capacity and resistance move by < 1e-5, so per-step updates would only cost speed.
AGEING_INTERVAL_S = 60.0


@dataclass(frozen=True)
class CellSpread:
    """Cell-to-cell spread as one relative (or absolute SoC) standard deviation, drawn normal per cell.

    Capacity and resistance: the upper end of the inherent variation of fresh same-batch cells reviewed by
    Wildfeuer & Lienkamp 2021 ("Quantifiability of inherent cell-to-cell variations of commercial lithium-ion
    batteries", eTransportation): 0.2–0.3 % capacity and 0.7–3.8 % impedance.
    Self-discharge and initial SoC: assumptions (self-discharge currents of nominally equal cells differ by a
    large fraction of their mean; cells assembled after individual formation sit within ~1 % SoC)."""

    capacity_rel: float = 0.003
    resistance_rel: float = 0.038
    self_discharge_rel: float = 0.5
    initial_soc: float = 0.01


NO_SPREAD = CellSpread(0.0, 0.0, 0.0, 0.0)

PerCell = float | Sequence[float] | np.ndarray  # one value for all cells, or one per cell


def _per_cell(value: PerCell, n_cells: int, what: str) -> np.ndarray:
    array = np.broadcast_to(np.asarray(value, dtype=float), (n_cells,)).copy()
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} must be finite")
    return array


class CellModule:
    def __init__(self, params: CellParams, n_cells: int, seed: int = 1, ambient_C: float = 25.0,
                 spread: CellSpread = CellSpread(), initial_soc: float = 0.5) -> None:
        if not 1 <= n_cells <= MAX_CELLS:
            raise ValueError(f"n_cells must be 1..{MAX_CELLS}, got {n_cells}")
        self.params = params
        self.n_cells = n_cells
        rng = np.random.default_rng(seed)
        # Truncated so that no draw is unphysical: capacity and resistance stay positive.
        self.capacity_spread = np.clip(1.0 + spread.capacity_rel * rng.standard_normal(n_cells), 0.5, 1.5)
        self.resistance_spread = np.clip(1.0 + spread.resistance_rel * rng.standard_normal(n_cells), 0.5, 1.5)
        self.ecm = Ecm(params, n_cells)
        self.ecm.self_discharge_A = params.self_discharge_A * np.maximum(
            1.0 + spread.self_discharge_rel * rng.standard_normal(n_cells), 0.0)
        self.ecm.soc = np.clip(initial_soc + spread.initial_soc * rng.standard_normal(n_cells), 0.0, 1.0)
        self.thermal = thermal.ThermalChain(params.thermal, n_cells, ambient_C)
        self.ageing = ageing.AgeingState.fresh(n_cells)
        self._pending_s = 0.0
        self._pending_Ah = 0.0
        self.t_s = 0.0
        self.current_A = 0.0
        self._heat_W = np.zeros(n_cells)
        # Abuse inputs (hil.faults), None when absent so that a healthy step costs nothing: a conductance across
        # each cell inside its can (an internal short), and heat of side reactions per cell.
        self.short_conductance_S: np.ndarray | None = None
        self.extra_heat_W: np.ndarray | None = None
        self._apply_ageing()
        self._readout = np.empty((8, n_cells))
        self._readout_step = -1
        self._steps = 0

    @property
    def fresh_capacity_Ah(self) -> np.ndarray:
        return self.params.nominal_capacity_Ah * self.capacity_spread

    def _apply_ageing(self) -> None:
        self.ecm.capacity_As = self.fresh_capacity_Ah * self.ageing.capacity_factor * 3600.0
        self.ecm.resistance_factor = self.resistance_spread * self.ageing.resistance_factor

    def step(self, current_A: float, dt_s: float) -> None:
        """Advance every cell by dt_s with current_A (A, > 0 charges) held constant over the step."""
        temp_C = self.thermal.temp_C
        # The parameters at the present state: the last read-out's, when one was made since the last
        # step (same SoC and temperatures), which halves the lookups of a module that is read every step.
        values = self._values()
        if self.short_conductance_S is not None:
            # An internal short drains its cell alone: I_s = V·G at the start-of-step terminal voltage, held over the
            # step (dSoC = −I_s·dt/Q); its Joule heat V²·G stays in the cell. The short current's own polarisation
            # of the cell (I_s·R0, a few mV for a soft short) is neglected.
            short_V = values[OCV] + self.ecm.overpotential_V(self.current_A, values)
            short_A = short_V * self.short_conductance_S
        self.ecm.advance(current_A, dt_s, values)
        # Heat from the end-of-step overpotential with the step's parameters.
        self._heat_W = thermal.heat_W(current_A, self.ecm.overpotential_V(current_A, values), temp_C, values[DUDT])
        if self.short_conductance_S is not None:
            self.ecm.soc -= short_A * dt_s / self.ecm.capacity_As
            self._heat_W += short_V * short_A
        if self.extra_heat_W is not None:
            self._heat_W += self.extra_heat_W
        self.thermal.advance(self._heat_W, dt_s)
        self._pending_Ah += abs(current_A) * dt_s / 3600.0
        self._pending_s += dt_s
        if self._pending_s >= AGEING_INTERVAL_S:
            self._age()
        self.current_A = current_A
        self.t_s += dt_s
        self._steps += 1

    def _age(self) -> None:
        ageing.advance(self.ageing, self.params.ageing, self._pending_Ah, self.thermal.temp_C, self.ecm.soc,
                       self._pending_s)
        self._pending_s = self._pending_Ah = 0.0
        self._apply_ageing()

    def fast_forward(self, cycles: int, dod: float, c_rate: float, temp_C: float, cycle_duration_s: float) -> None:
        """Age by whole charge/discharge cycles in closed form (see ageing.fast_forward); each cycle starts
        and ends at the present SoC, so SoC, temperatures and the electrical state are left as they are."""
        self._age()
        ageing.fast_forward(self.ageing, self.params.ageing, cycles=cycles, dod=dod, c_rate=c_rate, temp_C=temp_C,
                            cycle_duration_s=cycle_duration_s, nominal_Ah=self.params.nominal_capacity_Ah,
                            fresh_capacity_Ah=self.fresh_capacity_Ah, soc_top=self.ecm.soc)
        self._apply_ageing()
        self.t_s += cycles * cycle_duration_s
        self._steps += 1

    def drain(self, current_A: np.ndarray, dt_s: float) -> None:
        """Take charge from each cell through a path outside it (balancing bleed resistors: current_A > 0
        drains): SoC only, as their heat goes to the board, not into the cell."""
        self.ecm.soc = self.ecm.soc - current_A * dt_s / self.ecm.capacity_As

    def set_state(self, soc: PerCell | None = None, temp_C: PerCell | None = None,
                  capacity_factor: PerCell | None = None, resistance_factor: PerCell | None = None,
                  hysteresis: PerCell = 0.0) -> None:
        """Start from a given state: SoC (a rested cell: RC branches discharged, hysteresis state as given,
        -1 after a discharge .. +1 after a charge), temperatures, and an aged state relative to fresh."""
        n = self.n_cells
        if soc is not None:
            self.ecm.soc = _per_cell(soc, n, "soc")
            self.ecm.v_rc_V = np.zeros((2, n))
            h = _per_cell(hysteresis, n, "hysteresis")
            if np.any(np.abs(h) > 1):
                raise ValueError("hysteresis state must lie in [-1, 1]")
            self.ecm.h = h
        if temp_C is not None:
            self.thermal.temp_C = _per_cell(temp_C, n, "temp_C")
        if capacity_factor is not None or resistance_factor is not None:
            self._pending_s = self._pending_Ah = 0.0
            self.ageing = ageing.AgeingState.aged(
                _per_cell(1.0 if capacity_factor is None else capacity_factor, n, "capacity_factor"),
                _per_cell(1.0 if resistance_factor is None else resistance_factor, n, "resistance_factor"))
            self._apply_ageing()
        self._steps += 1

    def _values(self) -> np.ndarray:
        if self._readout_step != self._steps:
            self._readout = self.ecm.evaluate(self.thermal.temp_C)
            self._readout_step = self._steps
        return self._readout

    @property
    def terminal_V(self) -> np.ndarray:
        values = self._values()
        return values[OCV] + self.ecm.overpotential_V(self.current_A, values)

    @property
    def soc(self) -> np.ndarray:
        """True SoC per cell (stored charge / present capacity, see hil.physics.ecm)."""
        return self.ecm.soc.copy()

    @property
    def temp_C(self) -> np.ndarray:
        return self.thermal.temp_C.copy()

    @property
    def ambient_C(self) -> float:
        return self.thermal.ambient_C

    @ambient_C.setter
    def ambient_C(self, value: float) -> None:
        self.thermal.ambient_C = float(value)

    @property
    def ocv_V(self) -> np.ndarray:
        return self._values()[OCV].copy()

    @property
    def capacity_Ah(self) -> np.ndarray:
        return self.ecm.capacity_As / 3600.0

    @property
    def r0_ohm(self) -> np.ndarray:
        return self._values()[R0].copy()

    @property
    def heat_W(self) -> np.ndarray:
        """Heat generated in each cell over the last step."""
        return self._heat_W.copy()
