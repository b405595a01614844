"""A minimal cell module for the link tests: plausible, time-varying sensor values.

Not a physics model (the full simulator is a later issue): a sinusoidal pack current, coulomb
counting per cell with a linear OCV, ohmic drop, first-order heating, and sensor channels that
follow SoC and temperature with magnitudes of the right order:
- FBG: 1550 nm grating, about 10 pm/K and 1.2 pm/ue (design brief),
- ultrasonic time of flight a few microseconds, shortening as SoC rises,
- internal pressure near atmospheric, rising with SoC (electrode swelling)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass
class CellState:
    capacity_As: float
    soc: float
    r0_ohm: float
    temp_C: float


class MinimalModule:
    def __init__(self, n_cells: int, seed: int = 1, amplitude_A: float = 3.0, ambient_C: float = 25.0):
        rng = random.Random(seed)
        self.n_cells = n_cells
        self.amplitude_A = amplitude_A
        self.ambient_C = ambient_C
        self.t_s = 0.0
        self.current_A = 0.0
        self.cells = [
            CellState(capacity_As=3600 * rng.uniform(2.8, 3.0), soc=rng.uniform(0.85, 0.95),
                      r0_ohm=rng.uniform(0.018, 0.024), temp_C=ambient_C)
            for _ in range(n_cells)
        ]

    def step(self, dt_s: float) -> None:
        self.t_s += dt_s
        # Current > 0 charges (wire sign convention); a slow discharge-biased sine.
        self.current_A = self.amplitude_A * (math.sin(self.t_s / 60.0) - 0.5)
        for cell in self.cells:
            cell.soc = min(1.0, max(0.0, cell.soc + self.current_A * dt_s / cell.capacity_As))
            heat_W = self.current_A ** 2 * cell.r0_ohm
            cell.temp_C += dt_s * (heat_W / 45.0 - (cell.temp_C - self.ambient_C) / 600.0)

    def reading(self) -> tuple[int, list[list[int]]]:
        """(pack current in mA, per cell [voltage_mV, temp_dC, pressure_Pa, tof_ns, amplitude_bp, fbg_pm])."""
        rows = []
        for cell in self.cells:
            ocv_V = 3.0 + 1.2 * cell.soc
            voltage_V = ocv_V + self.current_A * cell.r0_ohm
            strain_ue = 300.0 * cell.soc + 10.0 * (cell.temp_C - 25.0)
            rows.append([
                round(voltage_V * 1000),
                round(cell.temp_C * 10),
                round(101325 + 20000 * cell.soc),
                round(4000 - 150 * cell.soc),
                round(6000 + 1500 * cell.soc),
                round(1550e3 + 10.0 * (cell.temp_C - 25.0) + 1.2 * strain_ue),
            ])
        return round(self.current_A * 1000), rows
