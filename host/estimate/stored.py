"""`soxbms estimate` (issue 5): a device's stored telemetry re-estimated with the float64 host reference
(host/estimate/reference.py: filterpy EKF or UKF) and compared, sample by sample, with the SoC the board reported.

Order: the samples in (boot, seq) order, whatever order they were stored in.
Starts: a boot restarts the board's filters, so it restarts the host's. The board starts a cell at its first
delivered voltage (the OCV start of engine/sox.py, then a first step at dt = 0) and reports it from that sample on;
the host starts the cell at that same sample from the SoC the board reported there (or --soc0), with the
configuration's initial covariance, and steps it from that sample on (its first step is at dt = 0 too): the
comparison is of the filters, not of their starts.
Gaps: missing sequence numbers within a boot (records the board dropped, or samples outside the window) hide the
samples the board stepped through, so the host does not bridge them: it starts again after the gap from the board's
SoC there, with P_soc = the board's reported sigma² (a mid-run start; its RC voltages and bias start at 0, so the
first samples after it compare less closely than the rest).
Absent values: as on the board, an absent current holds the last valid one (0 before any in the boot), an absent
temperature the cell's last valid one (25 °C before any), an absent voltage makes a predict-only step; a sample
without a board SoC for a cell is not compared.
Time: dt from the stamps (t_s, t_ms), which on one time base differ exactly by the board's sample-clock steps;
where the base switches (board-relative to synced at the host's time sync) or a stamp does not advance (a re-sync),
dt is the device's sample period (the median stamp step), and such steps are counted.
Memory: the device's samples in integer arrays, 8·(6 + 5·cells) bytes a sample, plus 16·cells for the host's."""

from __future__ import annotations

import csv
import math
from array import array
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from host.estimate import reference
from host.estimate.cellmodel import BoardModel
from host.export import ESTIMATE_HEADER, HEADER
from host.store.sql import SqlStore
from soxcommon import wire
from soxcommon.frame import ABSENT

DEFAULT_PERIOD_MS = 1000  # the board's default sample period (app/configschema.py), when the stamps give none
NN_PERIOD_MS = 1000  # engine/sox.py fuses the NN only at this period
BP = 10000  # wire units (0.01 %, basis points) in a fraction of 1
FILTERS: dict[str, Callable[..., reference.Estimates]] = {"ekf": reference.run_ekf, "ukf": reference.run_ukf}
_COLUMN = {name: i for i, name in enumerate(HEADER + ESTIMATE_HEADER)}  # of SqlStore.samples(estimates=True)
_CELL_VALUES = ("voltage_mV", "temp_dC", "soc_bp", "soc_sigma_bp", "soh_bp")  # per cell, in this order
VOLT, TEMP, SOC, SIGMA, SOH = range(len(_CELL_VALUES))
# progress(stage, done, total): stage "read" (samples, total None) or "estimate" (cell-steps of total)
Progress = Callable[[str, int, int | None], None]


class EstimateError(ValueError):
    """The store has nothing to compare: unknown device, no samples, no board estimates, mismatched input."""


@dataclass(frozen=True)
class StoredSamples:
    """One device's samples in (boot, seq) order: per sample boot, seq, stamp (t_s·1000 + t_ms), time_relative,
    current_mA and sos_level (ABSENT: none); per sample and cell the _CELL_VALUES (values[:, :, VOLT] ...),
    ABSENT where absent."""

    boot: np.ndarray
    seq: np.ndarray
    stamp_ms: np.ndarray
    relative: np.ndarray
    current_mA: np.ndarray
    sos_level: np.ndarray
    values: np.ndarray

    @property
    def n_cells(self) -> int:
        return int(self.values.shape[1])


def _int(value: int | None) -> int:
    return ABSENT if value is None else int(value)


def _cell_count(device: str, key: tuple[int, int], expected: int | None, found: int) -> int:
    if expected is not None and found != expected:
        raise EstimateError(f"{device}: samples of {expected} and of {found} cells (boot {key[0]} sequence "
                            f"{key[1]}); re-estimate one configuration at a time (--from/--to)")
    return found


def read_samples(store: SqlStore, device: str, t_from: int | None = None, t_to: int | None = None,
                 progress: Progress | None = None) -> StoredSamples:
    """The device's samples (t_from/t_to: wire seconds, synced samples only) with the board's estimates."""
    c = _COLUMN
    value_columns = [c[name] for name in _CELL_VALUES]
    head = array("q")
    cells = array("q")
    n_cells: int | None = None
    key: tuple[int, int] | None = None
    in_sample = n_samples = 0
    for row in store.samples(device, t_from, t_to, estimates=True):
        if (row[0], row[1]) != key:
            if key is not None:
                n_cells = _cell_count(device, key, n_cells, in_sample)
            key = (row[0], row[1])
            in_sample = 0
            n_samples += 1
            if progress is not None and n_samples % 10000 == 0:
                progress("read", n_samples, None)
            head.extend((row[0], row[1], row[c["t_s"]] * 1000 + row[c["t_ms"]], row[c["time_relative"]],
                         _int(row[c["current_mA"]]), _int(row[c["sos_level"]])))
        if row[c["cell"]] != in_sample:
            raise EstimateError(f"{device}: boot {key[0]} sequence {key[1]} lacks cell {in_sample}")
        cells.extend(_int(row[i]) for i in value_columns)
        in_sample += 1
    if key is not None:
        n_cells = _cell_count(device, key, n_cells, in_sample)
    per_sample = np.frombuffer(head, dtype=np.int64).reshape(n_samples, 6)
    values = np.frombuffer(cells, dtype=np.int64).reshape(n_samples, n_cells or 0, len(_CELL_VALUES))
    order = np.lexsort((per_sample[:, 1], per_sample[:, 0]))
    per_sample, values = per_sample[order], values[order]
    return StoredSamples(boot=per_sample[:, 0], seq=per_sample[:, 1], stamp_ms=per_sample[:, 2],
                         relative=per_sample[:, 3], current_mA=per_sample[:, 4], sos_level=per_sample[:, 5],
                         values=values)


def _segments(s: StoredSamples) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive sequence numbers within one boot."""
    breaks = np.flatnonzero((np.diff(s.boot) != 0) | (np.diff(s.seq) != 1)) + 1
    edges = [0, *breaks.tolist(), len(s.seq)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def _steps_ms(s: StoredSamples) -> tuple[np.ndarray, np.ndarray]:
    """Stamp step to each sample from the one before, and whether it is a sample-clock step (same time base,
    advancing); meaningful within a segment."""
    step_ms = np.diff(s.stamp_ms, prepend=s.stamp_ms[:1])
    clock = (np.diff(s.relative, prepend=s.relative[:1]) == 0) & (step_ms > 0)
    return step_ms, clock


def _period_ms(s: StoredSamples, step_ms: np.ndarray, clock: np.ndarray) -> int:
    """The device's sample period: the median sample-clock step between consecutive sequence numbers."""
    consecutive = clock & (np.diff(s.seq, prepend=-1) == 1) & (np.diff(s.boot, prepend=s.boot[:1] - 1) == 0)
    return int(np.median(step_ms[consecutive])) if np.any(consecutive) else DEFAULT_PERIOD_MS


def _held_current(s: StoredSamples) -> list[int]:
    """The board's current per sample: an absent reading holds the last valid one of the boot (0 before any)."""
    held = []
    last = 0
    boot = None
    for b, current in zip(s.boot.tolist(), s.current_mA.tolist(), strict=True):
        if b != boot:
            boot, last = b, 0
        if current != ABSENT:
            last = current
        held.append(last)
    return held


@dataclass(frozen=True)
class CellResult:
    """One cell: samples where both estimated, max and RMS |host − board| SoC (%), the board's first and last
    reported SoH (fraction; None: never reported)."""

    cell: int
    compared: int
    soc_diff_max_pct: float | None
    soc_diff_rms_pct: float | None
    board_soh_first: float | None
    board_soh_last: float | None


@dataclass(frozen=True)
class Comparison:
    device: str
    model: str
    method: str
    board_estimator: str  # "ekf", or "fused" (EKF with the NN as a measurement)
    samples: StoredSamples
    host: np.ndarray  # (samples, cells, 2): host SoC and its sigma (fractions), NaN where the host did not run
    cells: list[CellResult]
    segments: int
    mid_run_starts: int
    period_ms: int
    dt_assumed: int  # steps within a segment whose dt is the period, not the stamps' difference

    def worst(self) -> dict[str, Any] | None:
        """The largest max and the largest RMS difference over the cells, with their cells (None: none compared)."""
        compared = [c for c in self.cells if c.compared]
        if not compared:
            return None
        by_max = max(compared, key=lambda c: c.soc_diff_max_pct or 0.0)
        by_rms = max(compared, key=lambda c: c.soc_diff_rms_pct or 0.0)
        return {"soc_diff_max_pct": by_max.soc_diff_max_pct, "max_cell": by_max.cell,
                "soc_diff_rms_pct": by_rms.soc_diff_rms_pct, "rms_cell": by_rms.cell}

    def sos_counts(self) -> dict[str, int]:
        """Samples per state-of-safety level the board reported ("none": samples without one)."""
        level = self.samples.sos_level
        counts = {name: int(np.count_nonzero(level == i)) for i, name in enumerate(wire.SOS_LEVELS)}
        counts["none"] = int(np.count_nonzero(level == ABSENT))
        return counts

    def notes(self) -> list[str]:
        notes = []
        if self.board_estimator == "fused":
            notes.append(f"the board fuses its NN with its EKF for {self.model} cells (estimator config nn_cell) at "
                         f"a {NN_PERIOD_MS} ms period: the host reference is the {self.method.upper()} alone, so the "
                         "differences include the NN's pull on the board's SoC; a comparison of the filters needs "
                         "an EKF-only board (a cell model other than nn_cell)")
        if self.method != "ekf":
            notes.append(f"the board's filter is an EKF: host {self.method.upper()} vs board EKF compares two filters")
        notes.append("the host reference estimates no SoH: it keeps the model file's capacity")
        soh = self.samples.values[:, :, SOH]
        moved = np.flatnonzero(np.any((soh != ABSENT) & (soh != BP), axis=0)).tolist()
        if moved:
            notes.append(f"the board's SoH left 1 on cell(s) {', '.join(map(str, moved))}: its EKF then ran on that "
                         "capacity (engine/sox.py feeds it back), the host's did not")
        if self.mid_run_starts:
            notes.append(f"{self.mid_run_starts} cell start(s) after a gap or at a window's start (mid-run, from the "
                         "board's SoC and sigma; RC voltages and bias from 0): the samples after them compare less "
                         "closely")
        return notes

    def as_dict(self) -> dict[str, Any]:
        s = self.samples
        return {
            "device": self.device, "model": self.model, "filter": self.method, "board_estimator": self.board_estimator,
            "samples": int(len(s.seq)), "cells_per_sample": s.n_cells, "boots": sorted(set(s.boot.tolist())),
            "segments": self.segments, "mid_run_starts": self.mid_run_starts, "period_ms": self.period_ms,
            "dt_assumed_steps": self.dt_assumed, "compared": sum(c.compared for c in self.cells),
            "cells": [{**vars(c), "host_soh": None} for c in self.cells], "worst": self.worst(),
            "sos_levels": self.sos_counts(), "notes": self.notes(),
        }

    def text(self) -> str:
        """The comparison as a table for a terminal."""
        s = self.samples
        board = "EKF fused with the NN" if self.board_estimator == "fused" else "EKF"
        lines = [f"{self.device}: {len(s.seq)} samples of {s.n_cells} cells in {len(set(s.boot.tolist()))} boot(s), "
                 f"{self.segments} segment(s); model {self.model}; host {self.method.upper()} (float64) vs board "
                 f"{board} (float32)",
                 f"{'cell':>4} {'compared':>9} {'max |host-board| %':>19} {'RMS %':>8}  "
                 "board SoH first..last  host SoH"]
        for c in self.cells:
            lines.append(f"{c.cell:>4} {c.compared:>9} {_fmt(c.soc_diff_max_pct):>19} {_fmt(c.soc_diff_rms_pct):>8}  "
                         f"{_fmt(c.board_soh_first):>8} .. {_fmt(c.board_soh_last):<8}   none")
        worst = self.worst()
        if worst is not None:
            lines.append(f"worst: max {_fmt(worst['soc_diff_max_pct'])} % (cell {worst['max_cell']}), "
                         f"RMS {_fmt(worst['soc_diff_rms_pct'])} % (cell {worst['rms_cell']})")
        lines.append("board state of safety, samples: " +
                     ", ".join(f"{name} {n}" for name, n in self.sos_counts().items()))
        if self.dt_assumed:
            lines.append(f"{self.dt_assumed} step(s) across a time-base switch or re-sync taken as the "
                         f"{self.period_ms} ms period")
        lines += ["note: " + note for note in self.notes()]
        return "\n".join(lines)

    def write_csv(self, out: TextIO) -> int:
        """Per sample and cell: stamp, board and host SoC, their difference and sigmas (%); returns rows written."""
        writer = csv.writer(out)
        writer.writerow(("boot", "seq", "t_s", "t_ms", "time_relative", "cell", "board_soc_pct", "host_soc_pct",
                         "diff_pct", "board_sigma_pct", "host_sigma_pct"))
        s = self.samples
        n = 0
        for i in range(len(s.seq)):
            head = (int(s.boot[i]), int(s.seq[i]), int(s.stamp_ms[i]) // 1000, int(s.stamp_ms[i]) % 1000,
                    int(s.relative[i]))
            for c in range(s.n_cells):
                board = _board_pct(s.values[i, c, SOC])
                host = _host_pct(self.host[i, c, 0])
                diff = "" if board == "" or host == "" else f"{float(host) - float(board):.4f}"
                writer.writerow((*head, c, board, host, diff, _board_pct(s.values[i, c, SIGMA]),
                                 _host_pct(self.host[i, c, 1])))
                n += 1
        return n


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _board_pct(value_bp: int) -> str:
    return "" if value_bp == ABSENT else f"{value_bp / 100:.2f}"


def _host_pct(value: float) -> str:
    return "" if math.isnan(value) else f"{value * 100:.4f}"


def _cell_result(s: StoredSamples, host: np.ndarray, cell: int) -> CellResult:
    board = s.values[:, cell, SOC]
    both = (board != ABSENT) & ~np.isnan(host[:, cell, 0])
    diff_pct = (host[both, cell, 0] - board[both] / BP) * 100
    soh = s.values[:, cell, SOH]
    soh = soh[soh != ABSENT] / BP
    return CellResult(cell=cell, compared=int(np.count_nonzero(both)),
                      soc_diff_max_pct=round(float(np.max(np.abs(diff_pct))), 4) if diff_pct.size else None,
                      soc_diff_rms_pct=round(float(np.sqrt(np.mean(diff_pct ** 2))), 4) if diff_pct.size else None,
                      board_soh_first=float(soh[0]) if soh.size else None,
                      board_soh_last=float(soh[-1]) if soh.size else None)


def compare(device: str, s: StoredSamples, model: BoardModel, cfg: Mapping[str, Any], method: str = "ekf",
            soc0: list[float] | None = None, progress: Progress | None = None) -> Comparison:
    """Re-estimate every cell of the stored samples with the host filter `method` and compare with the board
    (module docstring). soc0: start SoC fraction, one for every cell or one per cell (default: the board's)."""
    n = s.n_cells
    board_soc = s.values[:, :, SOC]
    if not np.any(board_soc != ABSENT):
        raise EstimateError(f"{device}'s samples carry no board estimates (a board without estimation): "
                            "nothing to compare with")
    if soc0 is not None and len(soc0) not in (1, n):
        raise EstimateError(f"--soc0 gives {len(soc0)} start values for {n} cells (give one, or one per cell)")
    if soc0 is not None and not all(0.0 <= x <= 1.0 for x in soc0):
        raise EstimateError(f"--soc0 values are SoC fractions in 0..1, got {soc0}")
    starts_soc = None if soc0 is None else (soc0 * n if len(soc0) == 1 else soc0)
    step_ms, clock = _steps_ms(s)
    period_ms = _period_ms(s, step_ms, clock)
    t_ms = np.cumsum(np.where(clock, step_ms, period_ms))  # only its differences within a segment are used
    current_mA = _held_current(s)
    segments = _segments(s)
    runs = []  # (segment start, first sample the cell has a board SoC, segment end, cell)
    for a, b in segments:
        for c in range(n):
            estimated = np.flatnonzero(board_soc[a:b, c] != ABSENT)
            if estimated.size:
                runs.append((a, a + int(estimated[0]), b, c))
    total = sum(b - k for _, k, b, _ in runs)
    host = np.full((len(s.seq), n, 2), np.nan)
    done = mid_run = 0

    def records(k: int, b: int, c: int) -> Iterator[reference.Record]:
        nonlocal done
        volts = s.values[k:b, c, VOLT].tolist()
        temps = s.values[k:b, c, TEMP].tolist()
        for i in range(k, b):
            yield int(t_ms[i]) % 2**32, current_mA[i], (volts[i - k],), (temps[i - k],)
            done += 1
            if progress is not None and (done % 1000 == 0 or done == total):
                progress("estimate", done, total)

    for a, k, b, c in runs:
        cell_cfg = dict(cfg)
        # Estimated at a segment's first sample past a boot's first: the board started the cell before the samples
        # at hand, so its uncertainty there is taken too.
        if starts_soc is None and k == a and s.seq[a] > 0:
            mid_run += 1
            if s.values[k, c, SIGMA] != ABSENT:
                cell_cfg["p0_soc"] = (s.values[k, c, SIGMA] / BP) ** 2
        start = board_soc[k, c] / BP if starts_soc is None else starts_soc[c]
        estimates = FILTERS[method](model, cell_cfg, records(k, b, c), [start])
        host[k:b, c, 0] = estimates.soc[:, 0]
        host[k:b, c, 1] = estimates.soc_sigma[:, 0]
    starts = {a for a, _ in segments}
    dt_assumed = sum(1 for i in np.flatnonzero(~clock).tolist() if i not in starts)
    fused = cfg.get("nn_cell") == model.name and period_ms == NN_PERIOD_MS
    return Comparison(device=device, model=model.name, method=method, board_estimator="fused" if fused else "ekf",
                      samples=s, host=host, cells=[_cell_result(s, host, c) for c in range(n)],
                      segments=len(segments), mid_run_starts=mid_run, period_ms=period_ms, dt_assumed=dt_assumed)


def estimate(store: SqlStore, device: str, model: BoardModel, cfg: Mapping[str, Any], method: str = "ekf",
             t_from: int | None = None, t_to: int | None = None, soc0: list[float] | None = None,
             progress: Progress | None = None) -> Comparison:
    """`soxbms estimate`: the device's stored samples in the window, re-estimated and compared."""
    if method not in FILTERS:
        raise EstimateError(f"unknown filter {method!r} (one of {', '.join(FILTERS)})")
    samples = read_samples(store, device, t_from, t_to, progress)
    if not len(samples.seq):
        if device not in store.registered():
            known = ", ".join(sorted(store.registered())) or "none"
            raise EstimateError(f"unknown device {device} (registered: {known})")
        window = " in that window" if t_from is not None or t_to is not None else ""
        raise EstimateError(f"no samples of {device} stored{window}")
    return compare(device, samples, model, cfg, method, soc0, progress)
