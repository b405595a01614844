"""What the board acts on in the rig: the contactor with its precharge circuit, the passive-balancing
bleed resistors, the charger (or inverter) with the current and voltage limits the board sets, and the
self-healing actuator port. The board sets them with T_COMMAND frames (soxcommon.frame); each sample
reports their real state in its flags, as auxiliary contacts and a charger's status line would.

Electrical model, per step of dt (sign: current > 0 charges the pack):
- contactor open: no pack current; the DC-link capacitor C discharges through the load's bleeder,
  V_bus' = V_bus·exp(-dt/(R_bleeder·C));
- precharge: the main contactor stays open, the capacitor charges from the pack through R_pre,
  V_bus' = V_pack - (V_pack - V_bus)·exp(-dt/(R_pre·C)), and the pack delivers the mean current
  -C·(V_bus' - V_bus)/dt; the load sees nothing;
- closed: V_bus = V_pack and the load's demand flows, clipped by the board's discharge and charge
  current limits; when charging, the charger also holds the pack voltage at its limit (CV):
  I <= (V_limit - V_rest)/R_pack, with V_rest the pack voltage less the ohmic drop of the last step.
  Closing with |V_pack - V_bus| above HOT_CLOSE_FRACTION·V_pack is a hot close (contact welding risk)
  and opening above the contactor's rated break current is a break under load; both are recorded.
- bleed resistors: each switched-on cell loses V_cell/R_bleed; their heat goes to the board, not the cell.
- actuator: a dose on one cell for a stated time; the port refuses a new dose while one runs. Its effect
  on the cell (healing) is a later issue: the rig records each dose.

Parameter values are stated assumptions for a 48 V-class module (see PlantParams)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from soxcommon import frame

HOT_CLOSE_FRACTION = 0.05  # precharge is commonly taken as complete at 95 % of the pack voltage


@dataclass(frozen=True)
class PlantParams:
    """Assumed values, typical of a 48 V-class module; none is from a datasheet of a part we ship."""

    precharge_ohm: float = 47.0  # with 1 mF: tau = 47 ms, precharged well within one 1 s sample
    dc_link_F: float = 1e-3
    bleeder_ohm: float = 10e3  # the load's discharge resistor: tau = 10 s
    bleed_ohm: float = 39.0  # external balancing resistor: about 95 mA at 3.7 V
    contactor_break_A: float = 100.0  # rated break current under load


@dataclass(frozen=True)
class PlantEvent:
    t_s: float
    kind: str  # hot_close | break_under_load | dose
    value: float  # volts across the contactor, amps broken, or the dose in seconds
    cell: int = -1


@dataclass
class Plant:
    n_cells: int
    params: PlantParams = PlantParams()
    contactor: int = frame.CONTACTOR_CLOSED
    bleed_mask: int = 0
    voltage_limit_V: float = math.inf
    charge_limit_A: float = math.inf
    discharge_limit_A: float = math.inf
    bus_V: float = 0.0
    events: list[PlantEvent] = field(default_factory=list)
    dose_until_s: float = -math.inf
    cv_held: bool = False
    current_limited: bool = False
    _last_current_A: float = 0.0

    def command(self, command: int, a0: int, a1: int, a2: int, t_s: float, pack_V: float) -> int:
        """Apply one T_COMMAND at simulated time t_s; returns the frame.S_* status."""
        if command == frame.C_CONTACTOR:
            return self._set_contactor(a0, t_s, pack_V)
        if command == frame.C_BALANCE:
            mask = a0 & 0xFFFFFFFF
            if mask >> self.n_cells:
                return frame.S_BAD_ARGS
            self.bleed_mask = mask
            return frame.S_OK
        if command == frame.C_CHARGER:
            if a0 <= 0 or a1 < 0 or a2 < 0:
                return frame.S_BAD_ARGS
            self.voltage_limit_V, self.charge_limit_A, self.discharge_limit_A = a0 / 1000, a1 / 1000, a2 / 1000
            return frame.S_OK
        if command == frame.C_ACTUATOR:
            if not 0 <= a0 < self.n_cells or a1 <= 0:
                return frame.S_BAD_ARGS
            if t_s < self.dose_until_s:
                return frame.S_REFUSED
            self.dose_until_s = t_s + a1 / 1000
            self.events.append(PlantEvent(t_s, "dose", a1 / 1000, cell=a0))
            return frame.S_OK
        return frame.S_UNSUPPORTED

    def _set_contactor(self, state: int, t_s: float, pack_V: float) -> int:
        if state not in (frame.CONTACTOR_OPEN, frame.CONTACTOR_PRECHARGE, frame.CONTACTOR_CLOSED):
            return frame.S_BAD_ARGS
        if state == frame.CONTACTOR_CLOSED and self.contactor != frame.CONTACTOR_CLOSED:
            mismatch_V = abs(pack_V - self.bus_V)
            if mismatch_V > HOT_CLOSE_FRACTION * pack_V:
                self.events.append(PlantEvent(t_s, "hot_close", mismatch_V))
            self.bus_V = pack_V
        if state != frame.CONTACTOR_CLOSED and self.contactor == frame.CONTACTOR_CLOSED \
                and abs(self._last_current_A) > self.params.contactor_break_A:
            self.events.append(PlantEvent(t_s, "break_under_load", abs(self._last_current_A)))
        self.contactor = state
        return frame.S_OK

    def pack_current_A(self, demand_A: float, pack_V: float, pack_r_ohm: float, dt_s: float) -> float:
        """The pack current over the next step of dt_s, from the load's demand and the outputs' state;
        advances the DC-link voltage. pack_V: the pack's terminal voltage now; pack_r_ohm: its ohmic
        resistance (for the charger's CV limit)."""
        p = self.params
        self.cv_held = self.current_limited = False
        if self.contactor == frame.CONTACTOR_OPEN:
            self.bus_V *= math.exp(-dt_s / (p.bleeder_ohm * p.dc_link_F))
            current_A = 0.0
        elif self.contactor == frame.CONTACTOR_PRECHARGE:
            start_V = self.bus_V
            self.bus_V = pack_V - (pack_V - start_V) * math.exp(-dt_s / (p.precharge_ohm * p.dc_link_F))
            current_A = -p.dc_link_F * (self.bus_V - start_V) / dt_s
        else:
            current_A = min(max(demand_A, -self.discharge_limit_A), self.charge_limit_A)
            self.current_limited = current_A != demand_A
            if current_A > 0 and math.isfinite(self.voltage_limit_V):
                rest_V = pack_V - self._last_current_A * pack_r_ohm
                cv_A = max(0.0, (self.voltage_limit_V - rest_V) / pack_r_ohm)
                if cv_A < current_A:
                    current_A, self.cv_held = cv_A, True
            self.bus_V = pack_V
        self._last_current_A = current_A
        return current_A

    def bleed_A(self, cell_V: np.ndarray) -> np.ndarray:
        """Per-cell bleed current (A, > 0 drains the cell) of the switched-on resistors."""
        on = (self.bleed_mask >> np.arange(self.n_cells)) & 1
        return on * cell_V / self.params.bleed_ohm

    def flags(self, t_s: float) -> int:
        return (self.contactor | (frame.F_CV if self.cv_held else 0)
                | (frame.F_CURRENT_LIMITED if self.current_limited else 0)
                | (frame.F_DOSING if t_s < self.dose_until_s else 0))
