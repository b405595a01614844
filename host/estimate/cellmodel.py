"""Board cell-model files (models/board/<name>.json, format "soxbms-cell/1", made by host.boardmodel) and their
lookups, evaluated exactly as the board does (issue-5 contract):

- SoC: linear on the file's SoC grid, held at the end values outside it (np.interp);
- T: linear between grid temperatures, held at the edges; beyond the edges resistances × exp(Ea/R·(1/T_K −
  1/T_edge_K)), I0 × exp(−Ea_I0/R·(1/T_K − 1/T_edge_K)), OCV + dudt·(T − T_edge), capacitances held
  (the rig's hil.physics.ecm does the same).

Vectorised over cells: soc and temp_C may be scalars or arrays of one shape; every value comes back in that shape.
One np.interp of the grid index per axis gives segment and weight for all tables at once."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

FORMAT = "soxbms-cell/1"
GAS_CONSTANT_J_PER_MOLK = 8.314462618
FARADAY_C_PER_MOL = 96485.33212
KELVIN = 273.15

# Rows of BoardModel.tables; I0 only with the charge-transfer element.
OCV, R0, R1, R2, C1, C2, I0 = range(7)
TABLE_KEYS = ("ocv_V", "r0_ohm", "r1_ohm", "r2_ohm", "c1_F", "c2_F")


@dataclass(frozen=True, eq=False)
class BoardModel:
    name: str
    capacity_Ah: float
    coulombic_efficiency: float
    soc: np.ndarray  # (S,) ascending
    temp_C: np.ndarray  # (T,) ascending
    tables: np.ndarray  # (rows, T, S) in row order OCV, R0, R1, R2, C1, C2[, I0]
    hyst_V: np.ndarray  # (S,)
    dudt_V_per_K: np.ndarray  # (S,)
    hyst_rate_per_As: float
    resistance_ea_J_per_mol: float
    i0_ea_J_per_mol: float | None  # None: no charge-transfer element

    @property
    def kinetic(self) -> bool:
        return self.i0_ea_J_per_mol is not None

    @property
    def capacity_As(self) -> float:
        return self.capacity_Ah * 3600.0


@dataclass(frozen=True)
class CellValues:
    """Model values at (soc, T); outside the SoC grid the tables hold their end values, but the OCV goes on along its
    end segments (as the rig's cells). The OCV's and M's slopes are those of the SoC segment holding soc, outside the
    grid those of the end segment (as the board: the voltage keeps pulling an unclipped soc back); the resistances' and
    I0's (the EKF's Jacobian) are the segment's inside the grid and 0 outside it, where the tables are held.
    b_V = 2RT_K/F; i0_A and di0_dsoc_A are None without the charge-transfer element."""

    ocv_V: np.ndarray
    docv_dsoc_V: np.ndarray
    r0_ohm: np.ndarray
    r1_ohm: np.ndarray
    r2_ohm: np.ndarray
    c1_F: np.ndarray
    c2_F: np.ndarray
    hyst_V: np.ndarray
    dhyst_dsoc_V: np.ndarray
    i0_A: np.ndarray | None
    b_V: np.ndarray
    dr0_dsoc_ohm: np.ndarray
    dr1_dsoc_ohm: np.ndarray
    dr2_dsoc_ohm: np.ndarray
    di0_dsoc_A: np.ndarray | None


def _number(doc: dict[str, Any], key: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"'{key}' must be a finite number, got {value!r}")
    return float(value)


def _grid(doc: dict[str, Any], key: str) -> np.ndarray:
    grid = np.asarray(doc.get(key), dtype=float)
    if grid.ndim != 1 or grid.size == 0 or np.any(np.diff(grid) <= 0) or not np.all(np.isfinite(grid)):
        raise ValueError(f"'{key}' must be a non-empty strictly ascending list of numbers")
    return grid


def _array(doc: dict[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
    values = np.asarray(doc.get(key), dtype=float)
    if values.shape != shape or not np.all(np.isfinite(values)):
        raise ValueError(f"'{key}' must be finite numbers of shape {shape}, got shape {values.shape}")
    return values


def from_dict(doc: dict[str, Any]) -> BoardModel:
    if doc.get("format") != FORMAT:
        raise ValueError(f"'format' must be {FORMAT!r}, got {doc.get('format')!r}")
    soc = _grid(doc, "soc")
    if soc.size < 2:
        raise ValueError("'soc' needs at least two points (a table segment)")
    temp_C = _grid(doc, "temp_C")
    shape = (temp_C.size, soc.size)
    rows = [_array(doc, key, shape) for key in TABLE_KEYS]
    kinetic = doc.get("i0_A") is not None
    if kinetic:
        rows.append(_array(doc, "i0_A", shape))
    return BoardModel(
        name=str(doc.get("name")), capacity_Ah=_number(doc, "capacity_Ah"),
        coulombic_efficiency=_number(doc, "coulombic_efficiency"), soc=soc, temp_C=temp_C, tables=np.array(rows),
        hyst_V=_array(doc, "hyst_V", soc.shape), dudt_V_per_K=_array(doc, "dudt_V_per_K", soc.shape),
        hyst_rate_per_As=_number(doc, "hyst_rate_per_As"),
        resistance_ea_J_per_mol=_number(doc, "resistance_ea_J_per_mol"),
        i0_ea_J_per_mol=_number(doc, "i0_ea_J_per_mol") if kinetic else None)


def load(path: str | Path) -> BoardModel:
    path = Path(path)
    try:
        return from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def _segment(grid: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower index k, upper index and weight w of x on the grid: value = v[k]·(1 − w) + v[k_up]·w is np.interp's
    linear interpolation, clamped at the ends (a one-point grid gives k = k_up = 0, w = 0)."""
    index = np.interp(x, grid, np.arange(grid.size, dtype=float))
    k = np.minimum(index.astype(np.intp), max(grid.size - 2, 0))
    return k, np.minimum(k + 1, grid.size - 1), index - k


def soc_segment(model: BoardModel, soc: float) -> int:
    """Index k of the SoC grid segment [soc_k, soc_k+1) holding soc (the end segments outside the grid), as the
    board's Lookup seeks it."""
    return int(_segment(model.soc, np.asarray(soc, dtype=float))[0])


def evaluate(model: BoardModel, soc: ArrayLike, temp_C: ArrayLike) -> CellValues:
    soc = np.asarray(soc, dtype=float)
    temp_C = np.asarray(temp_C, dtype=float)
    k, k_up, w = _segment(model.soc, soc)
    j, j_up, u = _segment(model.temp_C, temp_C)
    tab = model.tables
    # Bilinear: first along SoC at both neighbouring temperatures, then along T; slopes per SoC segment.
    lo = tab[:, j, k] * (1.0 - w) + tab[:, j, k_up] * w
    hi = tab[:, j_up, k] * (1.0 - w) + tab[:, j_up, k_up] * w
    values = lo * (1.0 - u) + hi * u
    dsoc = 1.0 / (model.soc[k_up] - model.soc[k])
    slopes = ((tab[:, j, k_up] - tab[:, j, k]) * (1.0 - u) + (tab[:, j_up, k_up] - tab[:, j_up, k]) * u) * dsoc
    docv = slopes[OCV]
    inside = (soc > model.soc[0]) & (soc < model.soc[-1])
    hyst_V = model.hyst_V[k] * (1.0 - w) + model.hyst_V[k_up] * w
    dudt = model.dudt_V_per_K[k] * (1.0 - w) + model.dudt_V_per_K[k_up] * w

    edge_C = np.clip(temp_C, model.temp_C[0], model.temp_C[-1])
    temp_K = temp_C + KELVIN
    inv_dT = 1.0 / temp_K - 1.0 / (edge_C + KELVIN)  # 0 inside the grid
    r_factor = np.exp(model.resistance_ea_J_per_mol / GAS_CONSTANT_J_PER_MOLK * inv_dT)
    i0_A = di0 = None
    if model.i0_ea_J_per_mol is not None:
        i0_factor = np.exp(-model.i0_ea_J_per_mol / GAS_CONSTANT_J_PER_MOLK * inv_dT)
        i0_A = values[I0] * i0_factor
        di0 = np.where(inside, slopes[I0] * i0_factor, 0.0)
    dr = np.where(inside, slopes[[R0, R1, R2]] * r_factor, 0.0)
    beyond = soc - np.clip(soc, model.soc[0], model.soc[-1])  # the OCV goes on along its end segments
    return CellValues(
        ocv_V=values[OCV] + docv * beyond + dudt * (temp_C - edge_C), docv_dsoc_V=docv, r0_ohm=values[R0] * r_factor,
        r1_ohm=values[R1] * r_factor, r2_ohm=values[R2] * r_factor, c1_F=values[C1], c2_F=values[C2],
        hyst_V=hyst_V, dhyst_dsoc_V=(model.hyst_V[k_up] - model.hyst_V[k]) * dsoc, i0_A=i0_A,
        b_V=(2.0 * GAS_CONSTANT_J_PER_MOLK / FARADAY_C_PER_MOL) * temp_K, dr0_dsoc_ohm=dr[0], dr1_dsoc_ohm=dr[1],
        dr2_dsoc_ohm=dr[2], di0_dsoc_A=di0)
