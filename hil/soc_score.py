"""Scoring SoC estimators against the rig's truth (issue 5's conditions).

- Start: each cell's estimator starts 30 % off its true SoC, below for even cells and above for odd ones; where that
  leaves [0, 1] the other side is taken (a full cell can only be wrong below).
- Convergence time: the first sample time after which |error| stays <= 2 % to the end (None: never).
- RMSE and max error are taken after convergence (over the whole run when it never converges), per cell; a
  scenario's figure is its worst cell.
- Coulomb counting is scored under the same conditions: the same wrong start, the capacity of the model file and
  the current as the board's sensor reported it (offset and gain error included)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

START_ERROR = 0.3
CONVERGED_WITHIN = 0.02


def wrong_start(true_soc: FloatArray) -> FloatArray:
    """Per cell: 30 % below (even cells) or above (odd cells) the truth, the other way where that leaves [0, 1]."""
    sign = np.where(np.arange(true_soc.size) % 2 == 0, -1.0, 1.0)
    start = true_soc + sign * START_ERROR
    outside = (start < 0.0) | (start > 1.0)
    return np.where(outside, true_soc - sign * START_ERROR, start)


@dataclass(frozen=True)
class CellScore:
    rmse_pct: float
    max_error_pct: float
    convergence_s: float | None

    def as_dict(self) -> dict[str, float | None]:
        return {"rmse_pct": round(self.rmse_pct, 3), "max_error_pct": round(self.max_error_pct, 3),
                "convergence_s": self.convergence_s}


@dataclass(frozen=True)
class Score:
    """The worst cell's figures, and all cells'."""

    cells: list[CellScore]

    @property
    def rmse_pct(self) -> float:
        return max(c.rmse_pct for c in self.cells)

    @property
    def max_error_pct(self) -> float:
        return max(c.max_error_pct for c in self.cells)

    @property
    def convergence_s(self) -> float | None:
        times = [c.convergence_s for c in self.cells]
        return None if any(t is None for t in times) else max(t for t in times if t is not None)

    def as_dict(self) -> dict[str, float | None]:
        """The worst cell's figures (each figure's worst, possibly from different cells)."""
        return CellScore(self.rmse_pct, self.max_error_pct, self.convergence_s).as_dict()


def score(t_s: FloatArray, estimate: FloatArray, truth: FloatArray) -> Score:
    """estimate, truth: (samples, cells) SoC fractions at sample times t_s (s from the run's start)."""
    cells = []
    for error in (estimate - truth).T:
        outside = np.flatnonzero(np.abs(error) > CONVERGED_WITHIN)
        first = 0 if outside.size == 0 else int(outside[-1]) + 1
        converged = first < error.size
        tail = error[first:] if converged else error
        cells.append(CellScore(rmse_pct=float(np.sqrt(np.mean(tail**2))) * 100,
                               max_error_pct=float(np.max(np.abs(tail))) * 100,
                               convergence_s=float(t_s[first]) if converged else None))
    return Score(cells)


def coulomb_count(t_s: FloatArray, current_A: FloatArray, soc0: FloatArray, capacity_Ah: float,
                  coulombic_efficiency: float) -> FloatArray:
    """SoC per sample and cell by integrating the measured current (held over each sample interval, the value at
    its end as the board gets it), charge scaled by the coulombic efficiency; absent current (NaN) adds nothing."""
    dt_s = np.diff(t_s, prepend=0.0)
    current = np.nan_to_num(current_A)
    accepted_A = np.where(current > 0, current * coulombic_efficiency, current)
    charge = np.cumsum(accepted_A * dt_s) / (capacity_Ah * 3600.0)
    return np.clip(soc0[np.newaxis, :] + charge[:, np.newaxis], 0.0, 1.0)
