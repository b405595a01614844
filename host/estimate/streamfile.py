"""Whole-file readers of the issue-5 stream files on top of the shared format code (soxcommon.stream): an input
stream (b"SXS1") as the records reference.run_ekf takes, a board runner's output (b"SXE1") as arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from host.estimate.reference import Record
from soxcommon.stream import EstimateReader, SampleReader


def read_stream(path: str | Path) -> list[Record]:
    with open(path, "rb") as f:
        reader = SampleReader(f)
        records: list[Record] = []
        while reader.read():
            records.append((reader.t_ms, reader.current_mA, list(reader.volts_mV), list(reader.temps_dC)))
    return records


@dataclass(frozen=True)
class BoardEstimates:
    """A board runner's output: t_ms per record, and soc, soc_sigma, bias_A per record and cell (from float32)."""

    t_ms: np.ndarray
    soc: np.ndarray
    soc_sigma: np.ndarray
    bias_A: np.ndarray


def read_estimates(path: str | Path) -> BoardEstimates:
    with open(path, "rb") as f:
        reader = EstimateReader(f)
        t_ms: list[int] = []
        cells: list[list[tuple[float, float, float]]] = []
        while (record := reader.read()) is not None:
            t_ms.append(record[0])
            cells.append(record[1])
    table = np.array(cells, dtype=float).reshape(len(cells), reader.n_cells, 3)
    return BoardEstimates(t_ms=np.array(t_ms, dtype=np.int64), soc=table[..., 0], soc_sigma=table[..., 1],
                          bias_A=table[..., 2])
