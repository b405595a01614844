"""Faults in rig scenarios: lying sensors, abused cells and a silent serial link, each over a window of
simulated time, with the truth of when each was active (for scoring the board's protection).

A scenario lists them as an array of tables, applied by hil.simulated.SimulatedModule:

    [[fault]]
    kind = "sensor_stuck"
    channel = "voltage_mV"   # a field of hil.sensors.models.CELL_FIELDS, or "current_mA" (then no cell)
    cell = 3                 # 0-based
    at_s = 120               # onset, simulated seconds from the start (default 0)
    duration_s = 60          # default: to the end of the run

Keys every kind takes, unless stated: kind, at_s (>= 0, default 0), duration_s (> 0, default: to the end).
A fault is active at simulated time t when at_s <= t < at_s + duration_s; a sample taken at time t shows the
faults active at t, and the physics changes exactly at at_s and at the end (the sub-steps are split there).

Sensor faults (channel; cell unless channel = "current_mA"):
- sensor_stuck: the reading repeats the one of the sample before at_s (an absent one stays absent).
- sensor_open: the reading is absent, as from a broken sense wire. For voltage this is what the board sees once
  the front end's open-wire check has marked the channel invalid; the pulled-down raw reading and its effect on
  the neighbouring channel are not modelled.
- sensor_noisy: factor (>= 0): the channel's white noise rms is its drawn value times factor.
- adc_spike: size: size (in the channel's unit, the suffix of its name) added to the one sample at or after
  at_s; no duration_s.
- current_offset_step: offset_A: the current sensor's offset steps by offset_A (before quantisation).

Cell and load faults:
- internal_short: cell, short_ohm (> 0): a resistance across the cell inside its can (a soft internal short).
  It draws V/R from that cell alone, so its SoC falls by V/R·dt/Q faster than its neighbours', and dissipates
  V²/R in that cell's thermal node. Its current does not pass R0 in the model (the few mV that would
  shift the terminal voltage are neglected).
- overcharge: c_rate (> 0), until_V (default: none): a charger fault: the load is replaced by a charge at
  c_rate (C, nominal capacity) with no voltage limit, until the window ends or the highest cell reaches until_V;
  the load's schedule waits and resumes after. (The cell model holds its OCV at the SoC = 1 value beyond full,
  so the overcharged voltage is OCV(1) + overpotential, not the steep rise of a real cell past 100 %.)
- cold_charge: ambient_C: the ambient steps to ambient_C over the window (back to the scenario's after).
  The truth flags plating risk on every sample that charges while a cell is below PLATING_RISK_BELOW_C,
  whatever the cause.
- gas_pressure_rise: cell, rate_umol_per_s (>= 0), heat_W (>= 0, default 0), vent_kPa (default VENT_KPA),
  enclosure_L (default ENCLOSURE_L): gas generated inside the can at rate_umol_per_s (µmol/s; the amount ramps
  linearly) with heat_W of exothermic side reactions into the cell. The gas raises the can's internal pressure
  (p = n·R·T / V_free, V_free the sensor draw mechanics.free_volume_mL); once that overpressure reaches
  vent_kPa the vent opens for good and the can's gas, and all it makes later, goes to the cell's gas sensor,
  which sees x = n_vented / (n_air + n_vented) of an enclosure of enclosure_L litres of air at the ambient.
  Gas already made stays (in the can or the enclosure) after the window ends.
- imbalance: cell, soc_offset: the cell starts at its drawn initial SoC + soc_offset (clipped to 0..1); no
  at_s / duration_s (active over the whole run).
- link_loss: duration_s (required): the serial link is silent over the window (SimulatedModule.link_down()).

On the PyBaMM truth (hil.physics.pybamm_cells) every kind works except those that put heat into a cell
(internal_short, gas_pressure_rise with heat_W > 0), which are refused; there an imbalance restarts the cells rested
at the offset SoC on PyBaMM's own SoC scale (stoichiometry), which differs from the true SoC by well under 1 %.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hil.physics.module import PerCell
from hil.sensors.models import ABSENT, CELL_FIELDS, GAS_CONSTANT_J_PER_MOL_K, KELVIN, Readings, SensorSuite
from soxcommon import wire

CHANNELS = (*CELL_FIELDS, "current_mA")
# Charging below 10 degC is where lithium plating becomes the risk: the Panasonic NCR18650PF data sheet limits
# charging to +10..+45 degC; the NCR18650PF dataset this cell was fitted to was only charged at cell temperatures
# of 12 degC or more (Kollmeyer 2018, doi:10.17632/wykht8y7tg.1); Waldmann et al. 2014 (J. Power Sources 262,
# 129-135, doi:10.1016/j.jpowsour.2014.03.112) find plating the dominant ageing mechanism below 25 degC.
PLATING_RISK_BELOW_C = 10.0
# Vent opening overpressure: an assumption of the order of the pressures at which 18650 current-interrupt
# devices and vents open (about 1 MPa); not a measured figure for this cell.
VENT_KPA = 1000.0
# Air around one cell's gas sensor: an assumption (a module's free air volume per cell of the order of a litre).
ENCLOSURE_L = 1.0
ATMOSPHERE_PA = 101325.0
EPS_S = 1e-9  # simulated times closer than this are the same instant

SENSOR_KINDS = ("sensor_stuck", "sensor_open", "sensor_noisy", "adc_spike")
# kind -> (required keys, optional keys with their defaults), beside kind/at_s/duration_s.
KINDS: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "sensor_stuck": (("channel", "cell"), {}),
    "sensor_open": (("channel", "cell"), {}),
    "sensor_noisy": (("channel", "cell", "factor"), {}),
    "adc_spike": (("channel", "cell", "size"), {}),
    "current_offset_step": (("offset_A",), {}),
    "internal_short": (("cell", "short_ohm"), {}),
    "overcharge": (("c_rate",), {"until_V": math.inf}),
    "cold_charge": (("ambient_C",), {}),
    "gas_pressure_rise": (("cell", "rate_umol_per_s"), {"heat_W": 0.0, "vent_kPa": VENT_KPA,
                                                         "enclosure_L": ENCLOSURE_L}),
    "imbalance": (("cell", "soc_offset"), {}),
    "link_loss": (("duration_s",), {}),
}
NO_WINDOW = {"adc_spike": ("duration_s",), "imbalance": ("at_s", "duration_s")}
# Parameters that must be positive (> 0) or non-negative (>= 0).
POSITIVE = {"short_ohm", "c_rate", "vent_kPa", "enclosure_L", "duration_s"}
NON_NEGATIVE = {"factor", "rate_umol_per_s", "heat_W", "at_s"}
WIRE_LIMITS = {q[1]: (q[4], q[5]) for q in wire.CELL_QUANTITIES + wire.PACK_QUANTITIES}


@dataclass(frozen=True)
class Fault:
    index: int  # position in the scenario's [[fault]] array
    kind: str
    at_s: float = 0.0
    duration_s: float = math.inf
    cell: int | None = None
    channel: str | None = None
    value: dict[str, float] = field(default_factory=dict)  # the kind's numeric keys, defaults filled in

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    def covers(self, t_s: float) -> bool:
        return self.at_s <= t_s + EPS_S < self.end_s


def parse_faults(entries: Any, source: Path, n_cells: int) -> list[Fault]:
    """The [[fault]] array of a scenario, checked; errors name the file and the fault's index."""
    if not isinstance(entries, list):
        raise ValueError(f"{source}: 'fault' must be an array of tables ([[fault]])")
    return [_parse(index, entry, source, n_cells) for index, entry in enumerate(entries)]


def _parse(index: int, entry: Any, source: Path, n_cells: int) -> Fault:
    where = f"{source}: fault {index}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a table")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    where += f" ({kind})"
    required, optional = KINDS[kind]
    channel = entry.get("channel")
    if kind in SENSOR_KINDS and "channel" in entry and channel not in CHANNELS:
        raise ValueError(f"{where}: channel {channel!r} is not one of {', '.join(CHANNELS)}")
    if channel == "current_mA":
        required = tuple(k for k in required if k != "cell")
    missing = [k for k in required if k not in entry]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(map(repr, missing))}")
    allowed = {"kind", "at_s", "duration_s", *required, *optional} - set(NO_WINDOW.get(kind, ()))
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}")
    numbers: dict[str, float] = {}
    for key, raw in entry.items():
        if key in ("kind", "channel", "cell"):
            continue
        if isinstance(raw, bool) or not isinstance(raw, int | float) or math.isnan(raw):
            raise ValueError(f"{where}: {key} must be a number, got {raw!r}")
        if key in POSITIVE and not raw > 0 or key in NON_NEGATIVE and not raw >= 0:
            raise ValueError(f"{where}: {key} must be {'> 0' if key in POSITIVE else '>= 0'}, got {raw}")
        numbers[key] = float(raw)
    cell = entry.get("cell")
    if "cell" in required and (isinstance(cell, bool) or not isinstance(cell, int) or not 0 <= cell < n_cells):
        raise ValueError(f"{where}: cell {cell!r} is not a cell index 0..{n_cells - 1}")
    at_s = numbers.pop("at_s", 0.0)
    duration_s = numbers.pop("duration_s", math.inf)
    return Fault(index, kind, at_s, duration_s, cell, channel, {**optional, **numbers})


class LoadView(Protocol):
    """What the charger fault reads of the module."""

    def max_cell_V(self) -> float: ...


def _get(readings: Readings, channel: str, cell: int | None) -> int | None:
    if channel == "current_mA":
        return readings.current_mA
    assert cell is not None
    return int(getattr(readings, channel)[cell]) if readings.present[channel][cell] else None


def _set(readings: Readings, channel: str, cell: int | None, value: int | None) -> None:
    if channel == "current_mA":
        readings.current_mA = value
        return
    assert cell is not None
    getattr(readings, channel)[cell] = ABSENT if value is None else value
    readings.present[channel][cell] = value is not None


class FaultableCells(Protocol):
    """What the faults act on: hil.physics.module.CellModule, or hil.physics.pybamm_cells.PybammCells, which
    takes no heat input (see puts_heat_into_a_cell)."""

    n_cells: int
    ambient_C: float
    short_conductance_S: np.ndarray | None
    extra_heat_W: np.ndarray | None

    @property
    def soc(self) -> np.ndarray: ...
    @property
    def temp_C(self) -> np.ndarray: ...
    def set_state(self, soc: PerCell | None = None) -> None: ...


def puts_heat_into_a_cell(fault: Fault) -> bool:
    """A short's V²/R and side-reaction heat go into the cell's thermal node: only the ECM truth has a heat input."""
    return fault.kind == "internal_short" or (fault.kind == "gas_pressure_rise" and fault.value["heat_W"] > 0)


class FaultRunner:
    """The faults of one module over a run. The set of active faults changes only at their window edges (and
    when an overcharge reaches its voltage), so the physics inputs are set there, not per step: between
    changes a step costs one comparison, plus the gas integration while gas is being made."""

    def __init__(self, faults: Sequence[Fault], cells: FaultableCells, sensors: SensorSuite,
                 capacity_Ah: float) -> None:
        self.faults = list(faults)
        self._cells = cells
        self._sensors = sensors
        self._capacity_Ah = capacity_Ah
        self._ambient_C = cells.ambient_C  # the scenario's, restored after a cold spell
        n = cells.n_cells
        self._ended: set[int] = set()  # overcharges stopped at their voltage
        self._held: dict[int, int | None] = {}  # stuck sensors: the reading they hold
        self._fired: dict[int, float] = {}  # ADC spikes: the sample time each hit
        self._on_readings = [f for f in self.faults if f.kind in ("sensor_stuck", "sensor_open", "adc_spike")]
        self._degraded = {(f.channel or "current_mA", f.cell or 0) for f in self.faults
                          if f.kind in ("sensor_noisy", "current_offset_step")}
        self._changes = sorted({t for f in self.faults if f.kind not in NO_WINDOW for t in (f.at_s, f.end_s)
                                if math.isfinite(t)})
        offsets = np.zeros(n)
        for f in self.faults:
            if f.kind == "imbalance":
                offsets[f.cell] += f.value["soc_offset"]
        if np.any(offsets):
            cells.set_state(soc=np.clip(cells.soc + offsets, 0.0, 1.0))
        gas = [f for f in self.faults if f.kind == "gas_pressure_rise"]
        self.gas_mol: np.ndarray | None = None  # per cell, gas in the can (None: no gas fault in the run)
        if gas:
            self.gas_mol = np.zeros(n)
            self._vented_mol = np.zeros(n)
            self._vent_open = np.zeros(n, dtype=bool)
            self._vent_Pa = np.full(n, math.inf)
            enclosure_m3 = np.full(n, ENCLOSURE_L * 1e-3)
            for f in gas:
                self._vent_Pa[f.cell] = min(self._vent_Pa[f.cell], f.value["vent_kPa"] * 1e3)
                enclosure_m3[f.cell] = f.value["enclosure_L"] * 1e-3
            self._free_volume_m3 = sensors.drawn["mechanics.free_volume_mL"] * 1e-6
            self._air_mol = ATMOSPHERE_PA * enclosure_m3 / GAS_CONSTANT_J_PER_MOL_K  # x 1/T_ambient (K)
        self._gas_rate_mol_per_s: np.ndarray | None = None
        self._charger: Fault | None = None
        self._link_down = False
        self._window: list[Fault] = []
        self._refresh(0.0)

    # --- the physics side: called by the module around each sub-step -------------------------------

    def advance_to(self, t_s: float, sub_s: float) -> float:
        """Bring the faults to time t_s; the sub-step from there, cut at the next change."""
        if t_s + EPS_S >= self._next_change_s:
            self._refresh(t_s)
        return min(sub_s, self._next_change_s - t_s)

    def charger_A(self, t_s: float, module: LoadView) -> float | None:
        """The current a faulty charger forces (A), or None to let the load decide."""
        fault = self._charger
        if fault is None:
            return None
        if module.max_cell_V() >= fault.value["until_V"]:
            self._ended.add(fault.index)
            self._refresh(t_s)
            return None
        return fault.value["c_rate"] * self._capacity_Ah

    def after_substep(self, dt_s: float) -> None:
        if self._gas_rate_mol_per_s is None or self.gas_mol is None:
            return
        self.gas_mol += self._gas_rate_mol_per_s * dt_s
        over_Pa = self.gas_mol * GAS_CONSTANT_J_PER_MOL_K * (self._cells.temp_C + KELVIN) / self._free_volume_m3
        self._vent_open |= over_Pa >= self._vent_Pa
        # An open vent passes everything in the can on to the gas sensor at once.
        self._vented_mol += np.where(self._vent_open, self.gas_mol, 0.0)
        self.gas_mol[self._vent_open] = 0.0

    def gas_ppm(self) -> np.ndarray | None:
        """Per cell, vented gas at its gas sensor above the baseline (ppm by amount of substance)."""
        if self.gas_mol is None:
            return None
        air_mol = self._air_mol / (self._cells.ambient_C + KELVIN)
        ppm: np.ndarray = 1e6 * self._vented_mol / (air_mol + self._vented_mol)
        return ppm

    def _refresh(self, t_s: float) -> None:
        """Set every fault input for the faults active from t_s on."""
        self._next_change_s = next(iter(self._changes[bisect.bisect_right(self._changes, t_s + EPS_S):]), math.inf)
        self._window = [f for f in self.faults if f.kind not in ("adc_spike", "imbalance") and f.covers(t_s)
                        and f.index not in self._ended]
        active = {kind: [f for f in self._window if f.kind == kind] for kind in KINDS}
        n = self._cells.n_cells
        shorts = active["internal_short"]
        conductance_S = np.zeros(n)
        for f in shorts:
            conductance_S[f.cell] += 1.0 / f.value["short_ohm"]
        self._cells.short_conductance_S = conductance_S if shorts else None
        gas = active["gas_pressure_rise"]
        rate, heat_W = np.zeros(n), np.zeros(n)
        for f in gas:
            rate[f.cell] += f.value["rate_umol_per_s"] * 1e-6
            heat_W[f.cell] += f.value["heat_W"]
        self._gas_rate_mol_per_s = rate if gas else None
        self._cells.extra_heat_W = heat_W if np.any(heat_W) else None
        colds = active["cold_charge"]
        self._cells.ambient_C = colds[-1].value["ambient_C"] if colds else self._ambient_C
        chargers = active["overcharge"]
        self._charger = chargers[-1] if chargers else None
        self._link_down = bool(active["link_loss"])
        degrade = {key: [0.0, 1.0] for key in self._degraded}  # (channel, cell) -> [offset shift, noise factor]
        for f in active["sensor_noisy"]:
            degrade[(f.channel or "current_mA", f.cell or 0)][1] *= f.value["factor"]
        for f in active["current_offset_step"]:
            degrade[("current_mA", 0)][0] += f.value["offset_A"]
        for (channel, cell), (shift, factor) in degrade.items():
            self._sensors.degrade(channel, cell, shift, factor)

    # --- the sample side ----------------------------------------------------------------------------

    def link_down(self) -> bool:
        return self._link_down

    def apply_to_readings(self, readings: Readings, previous: Readings | None, t_s: float) -> None:
        """Stuck, open and spiking sensors on the sample taken at t_s (`previous`: the sample before)."""
        for f in self._on_readings:
            channel = f.channel or "current_mA"
            if f.kind == "adc_spike":
                if f.index not in self._fired and t_s + EPS_S >= f.at_s:
                    self._fired[f.index] = t_s
                    value = _get(readings, channel, f.cell)
                    if value is not None:
                        lo, hi = WIRE_LIMITS.get(channel, (-math.inf, math.inf))
                        _set(readings, channel, f.cell, int(min(max(value + f.value["size"], lo), hi)))
            elif f.covers(t_s):
                if f.kind == "sensor_open":
                    _set(readings, channel, f.cell, None)
                    continue
                if f.index not in self._held:
                    self._held[f.index] = _get(previous or readings, channel, f.cell)
                _set(readings, channel, f.cell, self._held[f.index])

    def active(self, t_s: float) -> tuple[int, ...]:
        """Indices of the faults active at t_s (the present time): imbalances always, a spike on its sample."""
        hit = [i for i, fired_s in self._fired.items() if fired_s == t_s]
        return tuple(sorted([f.index for f in self._window] + hit
                            + [f.index for f in self.faults if f.kind == "imbalance"]))


def plating_risk(current_A: float, temp_C: np.ndarray) -> bool:
    """Charging while a cell is below PLATING_RISK_BELOW_C."""
    return current_A > 0 and float(np.min(temp_C)) < PLATING_RISK_BELOW_C


def summary(faults: Sequence[Fault], rows: Sequence[tuple[float, tuple[int, ...]]]) -> list[dict[str, Any]]:
    """Per fault: what it is and when it was active in the samples (first and last sample time, count).
    rows: (t_s, active fault indices) per sample."""
    out = []
    for f in faults:
        times = [t_s for t_s, active in rows if f.index in active]
        values = {k: v if math.isfinite(v) else None for k, v in f.value.items()}  # JSON has no infinity
        out.append({"index": f.index, "kind": f.kind, "cell": f.cell, "channel": f.channel, **values,
                    "onset_s": round(times[0], 3) if times else None, "end_s": round(times[-1], 3) if times else None,
                    "samples": len(times)})
    return out
