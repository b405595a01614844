"""`soxbms hil replay LOG [LOG ...]`: recorded cycler logs fed to the firmware as if measured, through the whole chain
(rig, firmware under MicroPython, broker, host), with the log's values beside what the board stored.

Timeline: the logs play one after the other. Log k's first row sits at replay time offset_k; the next log starts on
the first sample after the previous log's last row, so every log's first row is sampled and the files keep their order.
At sample time t the rig reports the log's last row at or before t (zero-order hold, no interpolation): duplicated
timestamps collapse to their last row, irregular sampling needs no resampling, and the charger's constant-voltage
current taper arrives exactly as recorded. A held row older than the log's hold limit is a logging gap: that sample
is sent with every channel absent, never stale. Channels the log lacks (pressure, ultrasound, FBG; temperature when
it is not logged or a cell is blank) are sent absent (frame.ABSENT, stored as NULL), never as 0.

Reference SoC per row: a logged SoC column, or coulomb counting from a stated full-charge point,
SoC(t) = 1 + (Q(t) - Q(t_full)) / capacity, Q the trapezoid integral of the current over the actual time steps (or the
tester's Ah counter, which also holds steps the log left out), chained from one log to the next (charge between two
logs is not logged and counts as none).

With estimation (--estimate): every SoC estimator of `soxbms bench soc` (hil.soc_eval) runs over the samples as the
board read them (the readings the host stored), with the shipped configuration and the board model made from the cell
file, from 30 % below and 30 % above the reference SoC (or the given starts), scored against the reference SoC: RMSE
and max error after convergence, convergence time, board-vs-host difference. The reference must be a logged column or
coulomb counting from a stated full point (--full-at-s): a log start is not assumed full.

Writes, in STATE/hil/replay-<name>/: samples.csv (per sample: log time, file, reference SoC, logged values, what the
board stored), score.json (delivery counts, per-file figures, reference-SoC method, board-vs-log reading error; with
estimation its figures under "estimation"), plot.png, and with estimation estimates.csv (per sample: the reference and
every estimator's SoC from every start) and estimate/ (the board model, the sample stream and the board's outputs)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil.chain import ProgressBar, run_chain
from hil.cycler import (
    TIME_UNITS_S,
    CsvMapping,
    CyclerFormatError,
    CyclerLog,
    FloatArray,
    MatFields,
    cumulative_charge_Ah,
    read_log,
    read_mat,
)
from hil.physics import params as cell_params
from hil.plot import new_figure, save_figure
from hil.soc_eval import SHIPPED_CONFIG, estimates_csv, evaluate_log, per_start, shipped_estimator, table
from host.boardmodel import convert
from soxcommon import wire

# Roles a --columns mapping may name (CsvMapping's and MatFields' attribute names), and those --scale may scale.
ROLES = ("time", "voltage", "current", "temperature", "ah", "soc")
SCALED_ROLES = ("voltage", "current", "ah", "soc")
# Default hold limit of a log: this many of its median time steps, and at least HOLD_PERIODS sample periods.
HOLD_STEPS = 10
HOLD_PERIODS = 2
TIME_EPS_S = 1e-6  # float slack when placing a sample time among the rows
TIME_EPS_MS = TIME_EPS_S * 1000
CELL_FIELDS = len(wire.CELL_QUANTITIES)
CSV_HEADER = ("sample", "t_s", "file", "file_t_s", "row", "in_gap", "ref_soc", "log_current_A", "log_voltage_V",
              "log_temp_C", "board_current_mA", *("board_" + q[1] for q in wire.CELL_QUANTITIES))


def _wire_range(column: str) -> tuple[int, int]:
    entry = next(q for q in wire.CELL_QUANTITIES + wire.PACK_QUANTITIES if q[1] == column)
    return entry[4], entry[5]


@dataclass(frozen=True)
class LogOptions:
    """How to read the logs: column names by role, unit factors, time unit and the file's current sign."""

    columns: dict[str, str | None] = field(default_factory=dict)  # role -> column (field) name; None: not logged
    scales: dict[str, float] = field(default_factory=dict)  # role -> factor to V, A, Ah or a SoC fraction
    time_unit: str = "s"  # s, ms, min, h; for CSV also a strptime format
    current_sign: int = 1  # +1: the log counts charging current as positive (ours); -1: the opposite
    delimiter: str = ","


def load_log(path: Path, options: LogOptions) -> CyclerLog:
    """A .mat or .csv log in our units and sign convention; CyclerFormatError names what is wrong."""
    if not path.is_file():
        raise CyclerFormatError(f"{path}: no such file")
    for kind, roles, allowed in (("column", options.columns, ROLES), ("scale", options.scales, SCALED_ROLES)):
        unknown = sorted(set(roles) - set(allowed))
        if unknown:
            raise CyclerFormatError(f"unknown {kind} role(s) {unknown}; roles are {list(allowed)}")
    needed = [role for role in ("time", "voltage", "current") if role in options.columns and not options.columns[role]]
    if needed:
        raise CyclerFormatError(f"the {' and '.join(needed)} column cannot be left out")
    if options.current_sign not in (1, -1):
        raise CyclerFormatError(f"current sign must be +1 or -1, got {options.current_sign}")
    charge_positive = options.current_sign > 0
    if path.suffix.lower() != ".mat":
        scales = {f"{role}_scale": factor for role, factor in options.scales.items()}
        mapping = CsvMapping(**options.columns, **scales, time_unit=options.time_unit,  # type: ignore[arg-type]
                             charge_positive=charge_positive, delimiter=options.delimiter)
        # A role mapped to no column is not logged, even where CsvMapping would fall back to a BDF column name.
        log = read_log(path, mapping=mapping)
        left_out = [role for role in ("temperature", "ah") if role in options.columns and options.columns[role] is None]
        return dataclasses.replace(log, temp_C=None if "temperature" in left_out else log.temp_C,
                                   ah=None if "ah" in left_out else log.ah)
    if options.time_unit not in TIME_UNITS_S:
        raise CyclerFormatError(f"{path}: a MAT log's time field is numeric: the time unit must be one of "
                                f"{list(TIME_UNITS_S)}, not {options.time_unit!r}")
    log = read_mat(path, fields=MatFields(**options.columns), charge_positive=charge_positive)  # type: ignore[arg-type]
    factors = {"time_s": TIME_UNITS_S[options.time_unit], **{
        {"voltage": "voltage_V", "current": "current_A", "ah": "ah", "soc": "soc"}[role]: factor
        for role, factor in options.scales.items()}}
    return dataclasses.replace(log, **{name: getattr(log, name) * factor for name, factor in factors.items()
                                       if getattr(log, name) is not None and factor != 1.0})


def _check_wire_ranges(path: Path, log: CyclerLog) -> None:
    """A logged value outside the wire's range means a wrong unit: say so instead of sending what the host rejects."""
    for role, values, scale, column in (("voltage", log.voltage_V, 1000, "voltage_mV"),
                                        ("current", log.current_A, 1000, "current_mA"),
                                        ("temperature", log.temp_C, 10, "temp_dC")):
        if values is None:
            continue
        lo, hi = _wire_range(column)
        bad = np.flatnonzero(np.isfinite(values) & ((values * scale < lo) | (values * scale > hi)))
        if bad.size:
            k = int(bad[0])
            raise CyclerFormatError(f"{path}: {role} {values[k]} at row {k + 1} is outside the wire's range "
                                    f"{lo / scale}..{hi / scale}: check the column's unit (--scale {role}=...)")


@dataclass(frozen=True)
class ReplayLog:
    """One log on the replay timeline."""

    path: Path
    log: CyclerLog
    offset_ms: int  # replay time of the log's first row
    max_hold_s: float  # a held row older than this is a gap

    def row_at(self, file_t_s: float) -> int:
        """The last row at or before file time t (the last of duplicated timestamps)."""
        return int(np.searchsorted(self.log.time_s, file_t_s + TIME_EPS_S, side="right")) - 1


def timeline(paths: Sequence[Path], logs: Sequence[CyclerLog], period_ms: int,
             max_hold_s: float | None = None) -> list[ReplayLog]:
    """Logs one after the other, each starting on the first sample after the previous one's last row."""
    out: list[ReplayLog] = []
    offset_ms = 0
    for path, log in zip(paths, logs, strict=True):
        median_step_s = float(np.median(np.diff(log.time_s)))
        hold_s = max_hold_s if max_hold_s is not None else max(HOLD_STEPS * median_step_s,
                                                               HOLD_PERIODS * period_ms / 1000)
        out.append(ReplayLog(path, log, offset_ms, hold_s))
        end_ms = offset_ms + log.duration_s * 1000
        offset_ms = (math.floor((end_ms + TIME_EPS_MS) / period_ms) + 1) * period_ms
    return out


@dataclass(frozen=True)
class SocReference:
    """The reference SoC of every row of every log, and how it was obtained."""

    method: str  # "column", or "coulomb counting" of the logged current or of the tester's Ah column
    soc: list[FloatArray]  # per log, per row
    column: str | None = None
    capacity_Ah: float | None = None
    capacity_from: str | None = None
    full_at_s: float | None = None  # replay time of the full-charge point
    full_at_file: int | None = None
    full_at_row: int | None = None  # 0-based data row in that file
    counted: str | None = None  # "current" (trapezoid integral) or "ah" (the tester's Ah counter)

    def describe(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "soc"}
        charge = {"current": "trapezoid integral of the logged current", "ah": "the tester's Ah column, chained "
                  "across logs", None: ""}[self.counted]
        out["equation"] = ("SoC = logged column" if self.method == "column" else
                           f"SoC = 1 + (Q(t) - Q(t_full)) / capacity; Q = {charge}, charge > 0")
        return out


def soc_from_column(logs: Sequence[ReplayLog], column: str) -> SocReference:
    missing = [str(r.path) for r in logs if r.log.soc is None]
    if missing:
        raise CyclerFormatError(f"no SoC column in {missing}")
    return SocReference("column", [np.asarray(r.log.soc, dtype=np.float64) for r in logs], column=column)


def soc_by_coulomb_counting(logs: Sequence[ReplayLog], capacity_Ah: float, capacity_from: str,
                            full_at_s: float = 0.0, counted: str = "current") -> SocReference:
    """SoC 1 at the row held at replay time full_at_s, counted forwards and backwards from there. counted: "current"
    integrates the logged current; "ah" takes the tester's Ah counter, which also holds steps the log left out."""
    if not capacity_Ah > 0:
        raise ValueError(f"capacity must be positive, got {capacity_Ah} Ah")
    if counted not in ("current", "ah"):
        raise ValueError(f"charge is counted from 'current' or 'ah', not {counted!r}")
    for r in logs:
        values = r.log.current_A if counted == "current" else r.log.ah
        if values is None:
            raise ValueError(f"{r.path}: no Ah column to count from (--columns ah=NAME)")
        blank = np.flatnonzero(~np.isfinite(values))
        if blank.size:
            raise ValueError(f"{r.path}: no {counted} at row {int(blank[0]) + 1}: coulomb counting needs it in every "
                             "row (or give --soc-column)")
    k = max((i for i, r in enumerate(logs) if r.offset_ms / 1000 <= full_at_s + TIME_EPS_S), default=None)
    if k is None or full_at_s > logs[k].offset_ms / 1000 + logs[k].log.duration_s + TIME_EPS_S:
        raise ValueError(f"full-charge point {full_at_s} s is not inside a log (logs at {_spans(logs)})")
    row = logs[k].row_at(full_at_s - logs[k].offset_ms / 1000)
    charge_Ah: list[FloatArray] = []
    carried_Ah = 0.0
    for r in logs:
        ah = r.log.ah if counted == "ah" else None
        charge_Ah.append(carried_Ah + (cumulative_charge_Ah(r.log) if ah is None else ah - ah[0]))
        carried_Ah = float(charge_Ah[-1][-1])
    full_Ah = float(charge_Ah[k][row])
    return SocReference("coulomb counting", [1.0 + (q - full_Ah) / capacity_Ah for q in charge_Ah],
                        capacity_Ah=capacity_Ah, capacity_from=capacity_from, full_at_s=full_at_s, full_at_file=k,
                        full_at_row=row, counted=counted)


def _spans(logs: Sequence[ReplayLog]) -> str:
    return ", ".join(f"{r.offset_ms / 1000:g}..{r.offset_ms / 1000 + r.log.duration_s:g} s" for r in logs)


def _wire_int(value: float | None, scale: float) -> int | None:
    return None if value is None or not math.isfinite(value) else round(value * scale)


@dataclass(frozen=True)
class SentSample:
    """What the rig sent at one sample time, and the log row it came from."""

    t_ms: int  # replay time
    file: int | None  # None: after the last log
    file_t_s: float | None
    row: int | None  # the held row (0-based data row)
    in_gap: bool  # the held row is older than the hold limit: every channel absent
    ref_soc: float | None
    current_mA: int | None
    voltage_mV: int | None
    temp_dC: int | None


class ReplayModule:
    """The rig's module for a replay (hil.rig.RigModule): one cell, values from the logs on the timeline.

    The rig steps before every reading: the first step starts the replay at the first log's first row, each later
    one advances the replay clock by dt_s (whole milliseconds)."""

    n_cells = 1

    def __init__(self, logs: Sequence[ReplayLog], reference: SocReference) -> None:
        self.logs = list(logs)
        self.reference = reference
        self.t_ms: int | None = None
        self.sent: list[SentSample] = []

    def step(self, dt_s: float) -> None:
        self.t_ms = 0 if self.t_ms is None else self.t_ms + round(dt_s * 1000)
        self.sent.append(self.sample_at(self.t_ms))

    def sample_at(self, t_ms: int) -> SentSample:
        k = max(i for i, r in enumerate(self.logs) if r.offset_ms <= t_ms)
        replay_log = self.logs[k]
        log = replay_log.log
        file_t_s = (t_ms - replay_log.offset_ms) / 1000
        if file_t_s > log.duration_s + TIME_EPS_S:
            return SentSample(t_ms, None, None, None, False, None, None, None, None)
        row = replay_log.row_at(file_t_s)
        in_gap = file_t_s - float(log.time_s[row]) > replay_log.max_hold_s
        soc = float(self.reference.soc[k][row])
        if in_gap:
            return SentSample(t_ms, k, file_t_s, row, True, soc, None, None, None)
        return SentSample(t_ms, k, file_t_s, row, False, soc, _wire_int(float(log.current_A[row]), 1000),
                          _wire_int(float(log.voltage_V[row]), 1000),
                          None if log.temp_C is None else _wire_int(float(log.temp_C[row]), 10))

    def reading(self) -> tuple[int | None, list[list[int | None]]]:
        if not self.sent:
            raise RuntimeError("no sample taken yet: step() first")
        s = self.sent[-1]
        return s.current_mA, [[s.voltage_mV, s.temp_dC] + [None] * (CELL_FIELDS - 2)]


def sample_times_ms(logs: Sequence[ReplayLog], period_ms: int, limit_s: float | None = None) -> list[int]:
    """Sample times on the period grid up to the last log's last row (and before limit_s)."""
    last = logs[-1]
    end_ms = last.offset_ms + last.log.duration_s * 1000 + TIME_EPS_MS
    if limit_s is not None:
        end_ms = min(end_ms, limit_s * 1000 - TIME_EPS_MS)
    return list(range(0, math.floor(end_ms) + 1, period_ms))


def _rms(errors: list[float]) -> float | None:
    return round(float(np.sqrt(np.mean(np.square(errors)))), 4) if errors else None


def _max_abs(errors: list[float]) -> float | None:
    return round(float(np.max(np.abs(errors))), 4) if errors else None


def _log_value(values: FloatArray | None, s: SentSample) -> float | None:
    if values is None or s.row is None or s.in_gap:
        return None
    value = float(values[s.row])
    return value if math.isfinite(value) else None


def write_samples(out_dir: Path, module: ReplayModule, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """samples.csv; and the board-vs-log reading errors. rows: the store's rows of boot 1; in lockstep the sample with
    sequence k is the k-th the module produced."""
    by_seq = {row[1]: row for row in rows}  # one cell: one row per sample
    errors: dict[str, list[float]] = {"voltage_mV": [], "current_mA": [], "temp_K": []}
    with open(out_dir / "samples.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        for k, s in enumerate(module.sent):
            log = None if s.file is None else module.logs[s.file].log
            current_A = _log_value(None if log is None else log.current_A, s)
            voltage_V = _log_value(None if log is None else log.voltage_V, s)
            temp_C = _log_value(None if log is None else log.temp_C, s)
            board = by_seq.get(k)
            stored = [board[5], *board[7:]] if board else [None] * (1 + CELL_FIELDS)
            writer.writerow([k, s.t_ms / 1000, "" if s.file is None else s.file,
                             "" if s.file_t_s is None else round(s.file_t_s, 3), "" if s.row is None else s.row,
                             int(s.in_gap), "" if s.ref_soc is None else round(s.ref_soc, 6),
                             *("" if v is None else v for v in (current_A, voltage_V, temp_C)),
                             *("" if v is None else v for v in stored)])
            if board is None:
                continue
            if voltage_V is not None and board[7] is not None:
                errors["voltage_mV"].append(board[7] - voltage_V * 1000)
            if current_A is not None and board[5] is not None:
                errors["current_mA"].append(board[5] - current_A * 1000)
            if temp_C is not None and board[8] is not None:
                errors["temp_K"].append(board[8] / 10 - temp_C)
    return {"reading_error": {
        "voltage_max_mV": _max_abs(errors["voltage_mV"]), "voltage_rms_mV": _rms(errors["voltage_mV"]),
        "current_max_mA": _max_abs(errors["current_mA"]), "current_rms_mA": _rms(errors["current_mA"]),
        "temp_max_K": _max_abs(errors["temp_K"]), "temp_rms_K": _rms(errors["temp_K"]),
        "note": "board value minus the logged value of the held row: rounding to the wire's 1 mV, 1 mA, 0.1 K"}}


def file_summary(k: int, replay_log: ReplayLog, sent: Sequence[SentSample]) -> dict[str, Any]:
    """One log's figures over the part of it that was replayed."""
    log = replay_log.log
    mine = [s for s in sent if s.file == k]
    replayed_t_s = max((s.file_t_s for s in mine if s.file_t_s is not None), default=None)
    t_s = log.time_s if replayed_t_s is None else log.time_s[:replay_log.row_at(replayed_t_s) + 1]
    steps_s = np.diff(t_s)
    return {
        **log.source, "rows": len(log), "duration_s": round(log.duration_s, 3),
        "offset_s": replay_log.offset_ms / 1000, "samples": len(mine),
        "replayed_s": None if replayed_t_s is None else round(replayed_t_s, 3), "rows_replayed": len(t_s),
        "median_step_s": round(float(np.median(np.diff(log.time_s))), 4),
        "duplicate_timestamps_dropped": int(np.count_nonzero(steps_s == 0)),
        "max_hold_s": round(replay_log.max_hold_s, 4), "gaps_over_hold": int(np.count_nonzero(steps_s > replay_log.
                                                                                               max_hold_s)),
        "samples_in_gaps": sum(s.in_gap for s in mine),
        "temperature": "absent (not logged)" if log.temp_C is None else "logged; blank rows sent absent",
        "samples_without_temperature": sum(s.temp_dC is None for s in mine),
    }


def plot_replay(out_png: Path, module: ReplayModule, stored: dict[int, tuple[Any, ...]], title: str) -> Path:
    """The log at its own rate (black) and what the board stored (dots), on the replay timeline."""
    panels = (("current [A]", "current_A", 5, 1e-3), ("cell voltage [V]", "voltage_V", 7, 1e-3),
              ("cell temperature [°C]", "temp_C", 8, 0.1), ("reference SoC [-]", None, None, 1.0))
    fig, axes = new_figure(len(panels), panel_height_in=2.2)
    t_board_s = [s.t_ms / 1000 for s in module.sent]
    for ax, (label, attr, column, scale) in zip(axes, panels, strict=True):
        for k, replay_log in enumerate(module.logs):
            replayed = [s.row for s in module.sent if s.file == k and s.row is not None]
            if not replayed:
                continue
            n = max(replayed) + 1
            t_s = replay_log.offset_ms / 1000 + replay_log.log.time_s[:n]
            values = module.reference.soc[k] if attr is None else getattr(replay_log.log, attr)
            if values is not None:
                # Steps, as the rig holds each row; the line breaks where a gap left the samples absent.
                gaps = np.flatnonzero(np.diff(t_s) > replay_log.max_hold_s) + 1
                ax.plot(np.insert(t_s, gaps, t_s[gaps - 1] + replay_log.max_hold_s),
                        np.insert(values[:n], gaps, np.nan), lw=0.6, color="black", alpha=0.7, drawstyle="steps-post")
            if k > 0:
                ax.axvline(replay_log.offset_ms / 1000, color="grey", ls="--", lw=0.6)
        if column is not None:
            board = [stored[k][column] if k in stored and stored[k][column] is not None else float("nan")
                     for k in range(len(module.sent))]
            ax.plot(t_board_s, [v * scale for v in board], ".", ms=2.5, color="tab:orange")
        ax.set_ylabel(label, fontsize=8)
    return save_figure(fig, axes, f"{title}: log (black, its own rate), board samples (dots), file starts (dashed)",
                       "replay time [s]", out_png)


def replay(paths: Sequence[Path], state_dir: Path, options: LogOptions = LogOptions(), period_ms: int = 1000,
           cell: Path | None = None, capacity_Ah: float | None = None, full_at_s: float | None = None,
           soc_column: str | None = None, soc_from: str = "current", limit_s: float | None = None,
           max_hold_s: float | None = None, name: str | None = None, estimate: bool = False,
           soc0: Sequence[float] | None = None) -> dict[str, Any]:
    """Replays the logs in order through the whole chain; writes and returns the score. full_at_s: None is the first
    row, which estimate does not assume (it needs a stated full point or a SoC column). estimate: every SoC estimator
    over the samples as the board read them (estimate_replay), from soc0 (default: 30 % below and above the reference).
    ValueError (CyclerFormatError among them) for a file, mapping or option that cannot work."""
    if not paths:
        raise ValueError("no log to replay")
    if period_ms <= 0:
        raise ValueError(f"sample period must be positive, got {period_ms} ms")
    if estimate:
        _check_estimation(cell, full_at_s, soc_column, soc0)
    elif soc0 is not None:
        raise ValueError("--soc0 is the estimators' start: it goes with --estimate")
    if soc_column is not None:
        options = dataclasses.replace(options, columns={**options.columns, "soc": soc_column})
    logs = [load_log(Path(p), options) for p in paths]
    for path, log in zip(paths, logs, strict=True):
        _check_wire_ranges(Path(path), log)
    if cell is not None and not Path(cell).is_file():
        raise ValueError(f"{cell}: no such cell parameter file")
    params = cell_params.load(cell) if cell is not None else None
    replay_logs = timeline([Path(p) for p in paths], logs, period_ms, max_hold_s)
    if soc_column is not None:
        reference = soc_from_column(replay_logs, soc_column)
    elif capacity_Ah is not None:
        reference = soc_by_coulomb_counting(replay_logs, capacity_Ah, "--capacity-Ah", full_at_s or 0.0, soc_from)
    elif params is not None:
        reference = soc_by_coulomb_counting(replay_logs, params.nominal_capacity_Ah,
                                            f"nominal capacity of --cell {cell}", full_at_s or 0.0, soc_from)
    else:
        raise ValueError("the reference SoC needs a capacity (--capacity-Ah or --cell) or a logged SoC column "
                         "(--soc-column)")
    blank = [k for k, soc in enumerate(reference.soc) if not np.all(np.isfinite(soc))] if estimate else []
    if blank:
        raise ValueError(f"{paths[blank[0]]}: the reference SoC column has blank rows: the estimators cannot be "
                         "scored there")
    times_ms = sample_times_ms(replay_logs, period_ms, limit_s)
    if not times_ms:
        raise ValueError(f"nothing to replay before {limit_s} s")
    run_name = name or Path(paths[0]).stem + (f"+{len(paths) - 1}" if len(paths) > 1 else "")
    out_dir = state_dir / "hil" / f"replay-{run_name}"
    soc_text = (f"column {reference.column!r}" if reference.method == "column" else
                f"coulomb counting ({'tester Ah column' if soc_from == 'ah' else 'logged current'}), "
                f"{reference.capacity_Ah:.4f} Ah ({reference.capacity_from}), "
                f"SoC 1 at {reference.full_at_s:g} s (file {reference.full_at_file}, row {reference.full_at_row})")
    print(f"  replay {run_name}: {len(paths)} log(s), {len(times_ms)} samples every {period_ms} ms; reference SoC: "
          f"{soc_text}", file=sys.stderr)
    modules: list[ReplayModule] = []

    def make_module(index: int) -> ReplayModule:
        modules.append(ReplayModule(replay_logs, reference))
        return modules[-1]

    run = run_chain(out_dir, f"replay {run_name}", ReplayModule.n_cells, len(times_ms), period_ms, make_module)
    score, rows, wall_s = run.score, run.rows, run.wall_s
    module = modules[0]
    score.update(write_samples(out_dir, module, rows))
    sent_soc = [s.ref_soc for s in module.sent if s.ref_soc is not None]
    replay_s = module.sent[-1].t_ms / 1000 if module.sent else 0.0
    score.update({
        "replay": run_name, "period_ms": period_ms, "samples": len(times_ms), "limit_s": limit_s,
        "replay_s": replay_s, "wall_s": round(wall_s, 1), "x_realtime": round(replay_s / wall_s, 1),
        "sample_rule": "last log row at or before the sample time (duplicated timestamps: the last); a row older "
                       "than the log's max_hold_s is a gap: the sample goes out with every channel absent",
        "current_sign": options.current_sign, "columns": options.columns, "scales": options.scales,
        "time_unit": options.time_unit,
        "absent_channels": [q[1] for q in wire.CELL_QUANTITIES[2:]],
        "files": [file_summary(k, r, module.sent) for k, r in enumerate(replay_logs)],
        "reference_soc": {**reference.describe(), "start": round(sent_soc[0], 6) if sent_soc else None,
                          "end": round(sent_soc[-1], 6) if sent_soc else None},
        "cell": None if params is None else {"name": params.name, "path": str(cell),
                                             "nominal_capacity_Ah": params.nominal_capacity_Ah},
        "outputs": str(out_dir),
    })
    score["plot"] = str(plot_replay(out_dir / "plot.png", module, {r[1]: r for r in rows}, run_name))
    if estimate:
        assert cell is not None
        score["estimation"] = estimate_replay(out_dir, run_name, board_read(module.sent, rows), Path(cell), soc0,
                                              period_ms)
    (out_dir / "score.json").write_text(json.dumps(score, indent=1))
    return score


def _check_estimation(cell: Path | None, full_at_s: float | None, soc_column: str | None,
                      soc0: Sequence[float] | None) -> None:
    """What estimation needs, before anything runs: the cell file (its board model) and a stated reference SoC."""
    if cell is None:
        raise ValueError("--estimate needs --cell: the estimators' board model is made from the cell file")
    if soc_column is None and full_at_s is None:
        raise ValueError("--estimate needs a reference SoC to score against: a logged SoC column (--soc-column) or "
                         "the replay time at which the cell was full (--full-at-s; 0 when the log starts full)")
    if soc0 is not None and not (soc0 and all(0.0 <= s <= 1.0 for s in soc0)):
        raise ValueError(f"--soc0: start SoC fractions in 0..1, got {list(soc0)}")


def board_read(sent: Sequence[SentSample], rows: list[tuple[Any, ...]]) -> list[SentSample]:
    """The samples as the board read them: each one's readings from the row the host stored for its sequence number
    (boot 1, sample k), every channel absent where the host got none."""
    by_seq = {row[1]: row for row in rows}  # one cell: one row per sample
    read = []
    for k, s in enumerate(sent):
        row = by_seq.get(k)
        read.append(dataclasses.replace(s, current_mA=None if row is None else row[5],
                                        voltage_mV=None if row is None else row[7],
                                        temp_dC=None if row is None else row[8]))
    return read


def estimate_replay(out_dir: Path, run_name: str, samples: list[SentSample], cell: Path,
                    soc0: Sequence[float] | None, period_ms: int) -> dict[str, Any]:
    """Every SoC estimator over the replayed samples (hil.soc_eval, the evaluation of `bench soc`), with the board
    model made from the cell file into out_dir/estimate; prints the table; writes estimates.csv."""
    work = out_dir / "estimate"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model_path = work / f"{cell.stem}.json"
    convert(cell, model_path)
    config = json.loads(SHIPPED_CONFIG.read_text())
    shipped = shipped_estimator(config)
    print(f"  estimate {run_name}: every estimator over the {len(samples)} samples the board read, shipped "
          f"configuration {SHIPPED_CONFIG.name} ({shipped}), board model of {cell}", file=sys.stderr)
    started = time.monotonic()
    evaluation = evaluate_log(run_name, samples, model_path, work, soc0,
                              lambda label: ProgressBar(f"estimate {label}", len(samples), period_ms))
    with open(out_dir / "estimates.csv", "w", newline="") as f:
        csv.writer(f).writerows(estimates_csv(evaluation))
    print(table(evaluation, shipped), file=sys.stderr)
    return {
        **evaluation.row, "shipped_estimator": shipped, "configuration": config,
        "configuration_file": str(SHIPPED_CONFIG), "board_model": str(model_path), "cell_file": str(cell),
        "start_rule": "given (--soc0)" if soc0 is not None else "30 % below and 30 % above the reference SoC at the "
                      "first sample, the other side where one leaves 0..1 (one start for a full or empty cell)",
        "cells_note": "the logged cell is estimated once per start: 'cells' counts the starts",
        "samples_used": "the readings the host stored from the board, per sample (absent where none arrived)",
        "per_start": per_start(evaluation), "estimates_csv": str(out_dir / "estimates.csv"),
        "wall_s": round(time.monotonic() - started, 1),
    }


def parse_pairs(text: str | None, what: str) -> dict[str, str]:
    """`role=value,role=value` (a --columns or --scale option); ValueError naming the bad item."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        role, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{what}: {item!r} is not role=value")
        out[role.strip()] = value.strip()
    return out


def parse_starts(text: str | None) -> list[float] | None:
    """--soc0's comma-separated start SoC fractions (None: not given); ValueError naming the bad item."""
    if text is None:
        return None
    starts = []
    for item in text.split(","):
        try:
            starts.append(float(item))
        except ValueError:
            raise ValueError(f"--soc0: {item.strip()!r} is not a number") from None
    return starts


def options_from_args(columns: str | None, scales: str | None, time_unit: str, current_sign: int,
                      delimiter: str) -> LogOptions:
    """LogOptions from the command line's text; an empty column name means "not logged"."""
    scale_factors: dict[str, float] = {}
    for role, text in parse_pairs(scales, "--scale").items():
        try:
            scale_factors[role] = float(text)
        except ValueError:
            raise ValueError(f"--scale: {role}={text!r} is not a number") from None
    return LogOptions(columns={role: name or None for role, name in parse_pairs(columns, "--columns").items()},
                      scales=scale_factors, time_unit=time_unit, current_sign=current_sign, delimiter=delimiter)
