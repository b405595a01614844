"""Cell parameter file (models/cells/SCHEMA.md) -> board cell-model file (format "soxbms-cell/1").

The board model carries every table on ONE SoC grid (the OCV table's) and ONE temperature grid (the union of the
(SoC, T) tables' temperatures), so the board finds one SoC segment and one temperature segment per cell-step and
reads all tables there. Tables on another SoC grid are resampled linearly (np.interp holds the end values, as the
rig does); a table on a narrower temperature grid is evaluated at the extra temperatures with the rig's rules beyond
its edges (hil.physics.ecm): resistances x exp(Ea/R·(1/T_K − 1/T_edge_K)), I0 x exp(−Ea_i0/R·(…)), OCV +
dOCV/dT·(T − T_edge), capacitances held. Values are written with 7 significant digits (float32 holds about 7).

Beside the JSON (the readable source) goes its binary companion, <name>.bin (format: firmware/engine/cellmodel.py),
which the board reads straight into its arrays instead of parsing the JSON (models/board/README.md, memory).

    python -m host.boardmodel models/cells/<name>.json models/board/<name>.json
    python -m host.boardmodel --binary models/board/<name>.json      (the companion of an existing board model)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from hil.physics.ecm import GAS_CONSTANT_J_PER_MOLK, KELVIN
from hil.physics.params import CellParams, SocTable, Table, load

FORMAT = "soxbms-cell/1"
SIGNIFICANT_DIGITS = 7
# The binary companion (firmware/engine/cellmodel.py BINARY_*).
BINARY_MAGIC = b"SXCM"
BINARY_VERSION = 1
BINARY_HEADER = "<4sHHHHHHII"
FLAG_I0 = 1
TS_TABLES = ("ocv_V", "r0_ohm", "r1_ohm", "c1_F", "r2_ohm", "c2_F")


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


def binary_path(board_path: Path) -> Path:
    return board_path.with_suffix(".bin")


def binary_model(board_json: bytes) -> bytes:
    """The binary companion of a board model file's bytes: its numbers as the board stores them (grids and scalars
    float64, tables float32), the file's CRC-32 (the board refuses a companion of another file) and a CRC-32."""
    doc = json.loads(board_json)
    if doc.get("format") != FORMAT:
        raise ValueError(f"board model format {doc.get('format')!r}, expected {FORMAT!r}")
    soc = np.asarray(doc["soc"], dtype=float)
    temps = np.asarray(doc["temp_C"], dtype=float)
    kinetic = doc["i0_A"] is not None
    keys = [*TS_TABLES, "i0_A"] if kinetic else list(TS_TABLES)
    tables = [np.asarray(doc[key], dtype=float) for key in keys]
    for key, table in zip(keys, tables, strict=True):
        if table.shape != (temps.size, soc.size):
            raise ValueError(f"{key}: shape {table.shape}, expected ({temps.size}, {soc.size})")
    name = doc["name"].encode()
    scalars = [doc["capacity_Ah"], doc["coulombic_efficiency"], doc["hyst_rate_per_As"],
               doc["resistance_ea_J_per_mol"], doc["i0_ea_J_per_mol"] if kinetic else 0.0]
    payload = b"".join([
        name, np.asarray(scalars, dtype="<f8").tobytes(), soc.astype("<f8").tobytes(), temps.astype("<f8").tobytes(),
        *(table.astype("<f4").tobytes() for table in tables),
        np.asarray(doc["hyst_V"], dtype="<f4").tobytes(), np.asarray(doc["dudt_V_per_K"], dtype="<f4").tobytes()])
    header = struct.pack(BINARY_HEADER, BINARY_MAGIC, BINARY_VERSION, FLAG_I0 if kinetic else 0, soc.size,
                         temps.size, len(name), 0, zlib.crc32(board_json), len(payload))
    return header + payload + struct.pack("<I", zlib.crc32(header + payload))


def write_binary(board_path: Path) -> Path:
    """Write the binary companion of the board model file at board_path beside it (<name>.bin)."""
    out = binary_path(board_path)
    out.write_bytes(binary_model(board_path.read_bytes()))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m host.boardmodel", description=__doc__.splitlines()[0])
    parser.add_argument("--binary", action="store_true",
                        help="only write the binary companion of an existing board model file (the one argument)")
    parser.add_argument("files", type=Path, nargs="+", metavar="FILE",
                        help="models/cells/<name>.json models/board/<name>.json (with --binary: the board file)")
    args = parser.parse_args(argv)
    if args.binary:
        if len(args.files) != 1:
            parser.error("--binary takes one board model file")
        print(f"{write_binary(args.files[0])}: binary companion of {args.files[0]}")
        return
    if len(args.files) != 2:
        parser.error("expected a cell file and a board model file")
    cell_file, board_file = args.files
    doc = convert(cell_file, board_file)
    write_binary(board_file)
    print(f"{board_file}: {len(doc['soc'])} SoC x {len(doc['temp_C'])} temperatures"
          f"{'' if doc['i0_A'] is None else ', charge-transfer element'}, and its binary companion "
          f"{binary_path(board_file).name}")


if __name__ == "__main__":
    main()
