"""Cell parameter file (models/cells/SCHEMA.md) -> board cell-model file (format "soxbms-cell/1").

The board model carries every table on ONE SoC grid (the OCV table's) and ONE temperature grid (the union of the
(SoC, T) tables' temperatures), so the board finds one SoC segment and one temperature segment per cell-step and
reads all tables there. Tables on another SoC grid are resampled linearly (np.interp holds the end values, as the
rig does); a table on a narrower temperature grid is evaluated at the extra temperatures with the rig's rules beyond
its edges (hil.physics.ecm): resistances x exp(Ea/R·(1/T_K − 1/T_edge_K)), I0 x exp(−Ea_i0/R·(…)), OCV +
dOCV/dT·(T − T_edge), capacitances held. Values are written with 7 significant digits (float32 holds about 7).

    python -m host.boardmodel models/cells/<name>.json models/board/<name>.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from hil.physics.ecm import GAS_CONSTANT_J_PER_MOLK, KELVIN
from hil.physics.params import CellParams, SocTable, Table, load

FORMAT = "soxbms-cell/1"
SIGNIFICANT_DIGITS = 7


def _round(values: np.ndarray) -> Any:
    """Nested lists of floats rounded to SIGNIFICANT_DIGITS."""
    return np.vectorize(lambda v: float(f"{v:.{SIGNIFICANT_DIGITS}g}"), otypes=[float])(values).tolist()


def _on_grid(table: Table, soc: np.ndarray, temps_C: np.ndarray, edge_rule: str, ea_J_per_mol: float,
             dudt_V_per_K: np.ndarray) -> np.ndarray:
    """table values [T, S] on the board grids. edge_rule: 'arrhenius' (resistance), 'inverse' (I0), 'entropic' (OCV)
    or 'hold' (capacitance) beyond the table's own temperature range."""
    rows = np.array([np.interp(soc, table.soc, row) for row in table.values])  # [table T, S]
    out = np.empty((temps_C.size, soc.size))
    for i, temp_C in enumerate(temps_C):
        edge_C = min(max(temp_C, table.temp_C[0]), table.temp_C[-1])
        out[i] = [np.interp(edge_C, table.temp_C, rows[:, s]) for s in range(soc.size)]
        if edge_C == temp_C or edge_rule == "hold":
            continue
        exponent = ea_J_per_mol / GAS_CONSTANT_J_PER_MOLK * (1.0 / (temp_C + KELVIN) - 1.0 / (edge_C + KELVIN))
        if edge_rule == "arrhenius":
            out[i] *= np.exp(exponent)
        elif edge_rule == "inverse":
            out[i] *= np.exp(-exponent)
        else:
            out[i] += dudt_V_per_K * (temp_C - edge_C)
    return out


def _soc_only(table: SocTable, soc: np.ndarray) -> np.ndarray:
    return np.interp(soc, table.soc, table.values)


def board_model(params: CellParams) -> dict[str, Any]:
    """The board model document of a cell parameter set."""
    soc = params.ocv_V.soc
    kinetic = params.exchange_current_A
    tables: list[Table] = [params.ocv_V, params.r0_ohm, params.r1_ohm, params.c1_F, params.r2_ohm, params.c2_F]
    if kinetic is not None:
        tables.append(kinetic)
    temps_C = np.unique(np.concatenate([t.temp_C for t in tables]))
    dudt = _soc_only(params.entropic_V_per_K, soc)
    ea = params.resistance_activation_J_per_mol
    i0_ea = None
    if kinetic is not None:
        i0_ea = ea if params.exchange_activation_J_per_mol is None else params.exchange_activation_J_per_mol

    def grid(table: Table, rule: str, ea_J_per_mol: float = 0.0) -> Any:
        return _round(_on_grid(table, soc, temps_C, rule, ea_J_per_mol, dudt))

    return {
        "format": FORMAT,
        "name": params.name,
        "capacity_Ah": params.nominal_capacity_Ah,
        "coulombic_efficiency": params.coulombic_efficiency,
        "soc": _round(soc),
        "temp_C": _round(temps_C),
        "ocv_V": grid(params.ocv_V, "entropic"),
        "r0_ohm": grid(params.r0_ohm, "arrhenius", ea),
        "r1_ohm": grid(params.r1_ohm, "arrhenius", ea),
        "c1_F": grid(params.c1_F, "hold"),
        "r2_ohm": grid(params.r2_ohm, "arrhenius", ea),
        "c2_F": grid(params.c2_F, "hold"),
        "hyst_V": _round(_soc_only(params.hysteresis_V, soc)),
        "dudt_V_per_K": _round(dudt),
        "hyst_rate_per_As": params.hysteresis_rate_per_As,
        "resistance_ea_J_per_mol": ea,
        "i0_A": None if kinetic is None or i0_ea is None else grid(kinetic, "inverse", i0_ea),
        "i0_ea_J_per_mol": i0_ea,
    }


def convert(cell_path: Path, board_path: Path) -> dict[str, Any]:
    """Write the board model of the cell file; its "source" names the cell file and its SHA-256."""
    doc = board_model(load(cell_path))
    doc["source"] = {"cell_file": cell_path.name, "sha256": hashlib.sha256(cell_path.read_bytes()).hexdigest()}
    board_path.parent.mkdir(parents=True, exist_ok=True)
    board_path.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    return doc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m host.boardmodel", description=__doc__.splitlines()[0])
    parser.add_argument("cell_file", type=Path, help="models/cells/<name>.json")
    parser.add_argument("board_file", type=Path, help="models/board/<name>.json")
    args = parser.parse_args(argv)
    doc = convert(args.cell_file, args.board_file)
    print(f"{args.board_file}: {len(doc['soc'])} SoC x {len(doc['temp_C'])} temperatures"
          f"{'' if doc['i0_A'] is None else ', charge-transfer element'}")


if __name__ == "__main__":
    main()
