"""Load profiles for rig scenarios: the current a test asks of the module, second by second.

A profile is a list of segments run in order. Each segment gives a current demand in C-rate
(current / nominal capacity; > 0 charges, as on the wire) for the simulated time since it began,
and says when it is done. Segments that depend on the module's state (CC-CV, cut-off) read it
through `ModuleView`. Profiles:
- cc, rest: constant current (C-rate) for a duration or until a voltage limit;
- cccv: constant current to the charge voltage, then constant voltage until the current tapers;
- hppc: discharge pulses with rests, as the five-pulse test in ../shared/data (10 s pulses, 20 min rests);
- us06: one US06 cycle as C-rate at 1 Hz, derived from the Panasonic NCR18650PF recording
  (Kollmeyer 2018, doi:10.17632/wykht8y7tg.1, CC BY 4.0; models/profiles/README.md), repeated;
- udds_like, random: seeded synthetic drives (lower power, more idle / a random walk);
- csv: a recorded current profile (columns time_s, current_A)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

PROFILE_DIR = Path(__file__).resolve().parent.parent / "models" / "profiles"
US06_FILE = PROFILE_DIR / "us06_panasonic_crate_1hz.csv"
US06_PERIOD_S = 603  # the recording repeats every 603 s (autocorrelation peak 0.995)


class ModuleView(Protocol):
    """What a segment may know of the module."""

    capacity_Ah: float  # nominal, for C-rates

    def max_cell_V(self) -> float: ...
    def min_cell_V(self) -> float: ...


class Segment(Protocol):
    def demand_A(self, t_s: float, module: ModuleView) -> float | None:
        """Current demand at t_s seconds into the segment; None once the segment is done."""


@dataclass
class ConstantCurrent:
    c_rate: float  # > 0 charge, < 0 discharge, 0 rest
    duration_s: float = float("inf")
    stop_V: float | None = None  # charge: stop when the highest cell reaches it; discharge: the lowest

    def demand_A(self, t_s: float, module: ModuleView) -> float | None:
        if t_s >= self.duration_s or self._at_limit(module):
            return None
        return self.c_rate * module.capacity_Ah

    def _at_limit(self, module: ModuleView) -> bool:
        if self.stop_V is None or self.c_rate == 0:
            return False
        return module.max_cell_V() >= self.stop_V if self.c_rate > 0 else module.min_cell_V() <= self.stop_V


@dataclass
class ConstantCurrentConstantVoltage:
    """CC to `voltage_V`, then hold the highest cell there by a proportional current cut, until the
    current falls below `taper_c_rate` (the chargers' CV phase; 1C to 4.2 V and C/50 taper as the
    Panasonic tests, README)."""

    c_rate: float = 1.0
    voltage_V: float = 4.2
    taper_c_rate: float = 0.02
    gain_A_per_V: float = 20.0
    _current_A: float | None = None

    def demand_A(self, t_s: float, module: ModuleView) -> float | None:
        cc_A = self.c_rate * module.capacity_Ah
        if self._current_A is None:
            self._current_A = cc_A
        over_V = module.max_cell_V() - self.voltage_V
        if over_V > 0 or self._current_A < cc_A:
            self._current_A = max(0.0, min(cc_A, self._current_A - self.gain_A_per_V * over_V))
        if self._current_A < self.taper_c_rate * module.capacity_Ah:
            return None
        return self._current_A


@dataclass
class Table:
    """A current profile sampled at 1 Hz (C-rate), held constant within each second."""

    c_rates: np.ndarray
    repeat: bool = True
    stop_V: float | None = 2.5  # lowest cell

    def demand_A(self, t_s: float, module: ModuleView) -> float | None:
        index = int(t_s)
        if not self.repeat and index >= len(self.c_rates):
            return None
        if self.stop_V is not None and module.min_cell_V() <= self.stop_V:
            return None
        return float(self.c_rates[index % len(self.c_rates)]) * module.capacity_Ah


def hppc(levels: int = 9, pulse_c_rates: tuple[float, ...] = (0.5, 1, 2, 4, 6), pulse_s: float = 10,
         rest_s: float = 1200, step_soc: float = 0.1) -> list[Segment]:
    """Five-rate discharge pulses at SoC levels `step_soc` apart, each pulse followed by a rest, with
    a 1C discharge between levels (the structure of the Panasonic HPPC test, README)."""
    segments: list[Segment] = []
    for level in range(levels):
        for c_rate in pulse_c_rates:
            segments += [ConstantCurrent(-c_rate, pulse_s, stop_V=2.5), ConstantCurrent(0.0, rest_s)]
        if level < levels - 1:
            segments.append(ConstantCurrent(-1.0, step_soc * 3600, stop_V=2.5))
    return segments


def us06() -> np.ndarray:
    return read_csv_profile(US06_FILE, capacity_Ah=1.0, column="c_rate")


def udds_like(seed: int, duration_s: int = 1369) -> np.ndarray:
    """Stop-and-go city driving: idle stops and moderate accelerations, peaks near 2.5C discharge
    and 1C regeneration (an urban profile of 1369 s, the UDDS length; synthetic, not the EPA trace)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(duration_s)
    t = 0
    while t < duration_s:
        idle = int(rng.integers(10, 40))
        accel = int(rng.integers(30, 110))
        brake = int(rng.integers(10, 40))
        drive = np.concatenate([-rng.uniform(0.8, 2.5) * np.sin(np.linspace(0, np.pi, accel)),
                                rng.uniform(0.3, 1.0) * np.sin(np.linspace(0, np.pi, brake))])
        start = t + idle
        end = min(duration_s, start + len(drive))
        out[start:end] = drive[: max(0, end - start)]
        t = start + len(drive)
    return out


def random_walk(seed: int, duration_s: int, max_c_rate: float = 3.0, step_c_rate: float = 0.2) -> np.ndarray:
    """A random dynamic load: a bounded random walk of the C-rate, biased to discharge."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(-0.01, step_c_rate, duration_s)
    return np.clip(np.cumsum(steps), -max_c_rate, max_c_rate / 3)


def read_csv_profile(path: Path, capacity_Ah: float, column: str = "current_A") -> np.ndarray:
    """A 1 Hz profile from a CSV with columns time_s and `column`; returned as C-rates."""
    with open(path, newline="") as f:
        reader = csv.DictReader(row for row in f if not row.startswith("#"))
        if reader.fieldnames is None or "time_s" not in reader.fieldnames or column not in reader.fieldnames:
            raise ValueError(f"{path}: needs the columns time_s and {column}, has {reader.fieldnames}")
        rows = [(float(r["time_s"]), float(r[column])) for r in reader]
    if not rows:
        raise ValueError(f"{path}: no rows")
    time_s, value = np.array(rows).T
    if np.any(np.diff(time_s) < 0):
        raise ValueError(f"{path}: time_s must not decrease")
    grid = np.arange(0, time_s[-1] + 1, 1.0)
    # Zero-order hold onto the 1 Hz grid: each second takes the last logged value.
    held = value[np.clip(np.searchsorted(time_s, grid, side="right") - 1, 0, len(value) - 1)]
    return held / capacity_Ah


def derive_us06(time_s: np.ndarray, current_A: np.ndarray, capacity_Ah: float) -> np.ndarray:
    """The first US06 cycle of a recording as 1 Hz C-rates (the mean current over each second,
    from the trapezoid integral over the actual, irregular time steps)."""
    edges = np.arange(0, US06_PERIOD_S + 1, 1.0)
    charge_As = np.concatenate([[0.0], np.cumsum(np.diff(time_s) * (current_A[1:] + current_A[:-1]) / 2)])
    at_edges = np.interp(edges, time_s, charge_As)
    return np.diff(at_edges) / capacity_Ah
