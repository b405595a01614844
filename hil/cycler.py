"""Cycler logs (MATLAB v5 exports, CSV) read into one normalised structure, and a coulomb-counted SoC.

Sign convention of `CyclerLog`: current_A and ah are positive while CHARGING. Each reader is told the file's
own convention and flips it if needed. Time is elapsed seconds since the first row; duplicate timestamps are
kept in order (a zero time step); time going backwards is an error."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.io  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float64]

# Seconds per unit for numeric time columns; any other time_unit is taken as a strptime format.
TIME_UNITS_S = {"s": 1.0, "ms": 1e-3, "min": 60.0, "h": 3600.0}
# Battery Data Format names tried, in order, when the caller names no temperature / Ah column.
BDF_TEMPERATURE = ("Temperature T1 / degC", "Temperature / degC")
BDF_AH = ("Net Capacity / Ah",)


class CyclerFormatError(ValueError):
    """The file cannot be read as a cycler log (missing column, bad time axis, unknown format)."""


@dataclass(frozen=True)
class CyclerLog:
    time_s: FloatArray
    voltage_V: FloatArray
    current_A: FloatArray  # positive = charge
    temp_C: FloatArray | None = None
    ah: FloatArray | None = None  # the tester's own Ah counter, positive = charge
    soc: FloatArray | None = None  # a logged state of charge, as a fraction
    source: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.time_s)
        for name in ("voltage_V", "current_A", "temp_C", "ah", "soc"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise CyclerFormatError(f"{name} has {len(arr)} rows, time_s has {n}")
        if n < 2:
            raise CyclerFormatError(f"a log needs at least 2 rows, got {n}")
        back = np.flatnonzero(np.diff(self.time_s) < 0)
        if back.size:
            k = int(back[0]) + 1
            raise CyclerFormatError(f"time goes backwards at row {k}: {self.time_s[k - 1]} -> {self.time_s[k]} s")

    def __len__(self) -> int:
        return len(self.time_s)

    @property
    def duration_s(self) -> float:
        return float(self.time_s[-1] - self.time_s[0])


@dataclass(frozen=True)
class CsvMapping:
    """Column names and units of a CSV log; the defaults are the Battery Data Format's."""

    time: str = "Test Time / s"
    voltage: str = "Voltage / V"
    current: str = "Current / A"
    temperature: str | None = None  # None: the first of BDF_TEMPERATURE present, else no temperature
    ah: str | None = None  # None: BDF "Net Capacity / Ah" if present
    soc: str | None = None  # a logged SoC column, if wanted
    time_unit: str = "s"  # s, ms, min, h, or a strptime format such as "%Y-%m-%d %H:%M:%S"
    voltage_scale: float = 1.0  # multiply to get V (1e-3 for a mV column)
    current_scale: float = 1.0  # multiply to get A
    ah_scale: float = 1.0  # multiply to get Ah
    soc_scale: float = 1.0  # multiply to get a fraction (0.01 for a percent column)
    charge_positive: bool = True  # the file's convention; BDF counts charging current as positive
    delimiter: str = ","


@dataclass(frozen=True)
class MatFields:
    """Field names inside the MAT struct; the defaults are the Panasonic 18650PF (Kollmeyer 2018) ones."""

    time: str = "Time"
    voltage: str = "Voltage"
    current: str = "Current"
    temperature: str | None = "Battery_Temp_degC"
    ah: str | None = "Ah"
    soc: str | None = None
    timestamp: str | None = "TimeStamp"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_log(path: str | Path, **options: Any) -> CyclerLog:
    """Read a .mat or .csv log by its suffix; options go to read_mat / read_csv."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".mat":
        return read_mat(p, **options)
    if suffix in (".csv", ".txt", ".tsv"):
        return read_csv(p, **options)
    raise CyclerFormatError(f"{p}: unknown log format {suffix!r} (expected .mat or .csv)")


def read_mat(path: str | Path, struct: str | None = None, fields: MatFields = MatFields(),
             charge_positive: bool = True) -> CyclerLog:
    """A MAT v5 file holding one struct of equal-length column vectors (e.g. `meas` in the Panasonic data).

    charge_positive: the file's convention (the Panasonic files record discharge as negative, so True)."""
    p = Path(path)
    try:
        # mat_dtype: whole-number columns are stored as uint8 and would otherwise come back unsigned.
        content = scipy.io.loadmat(p, mat_dtype=True, squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, NotImplementedError) as e:
        raise CyclerFormatError(f"{p}: not a readable MAT v5 file ({e})") from e
    names = [k for k in content if not k.startswith("__")]
    if struct is None:
        if len(names) != 1:
            raise CyclerFormatError(f"{p}: holds {names}; say which struct to read")
        struct = names[0]
    if struct not in content:
        raise CyclerFormatError(f"{p}: no variable {struct!r}; variables are {names}")
    meas = content[struct]
    available = list(getattr(meas, "_fieldnames", []))

    def column(role: str, name: str) -> FloatArray:
        if name not in available:
            raise CyclerFormatError(f"{p}: {role} field {name!r} not in struct {struct!r}; fields are {available}")
        return np.atleast_1d(np.asarray(getattr(meas, name), dtype=np.float64))

    sign = 1.0 if charge_positive else -1.0
    time_s = column("time", fields.time)
    temp_C = column("temperature", fields.temperature) if fields.temperature else None
    ah = sign * column("Ah", fields.ah) if fields.ah else None
    soc = column("SoC", fields.soc) if fields.soc else None
    source = {"path": str(p), "format": "mat", "sha256": sha256_file(p),
              "sign": "file counts charge as " + ("positive" if charge_positive else "negative")}
    if fields.timestamp and fields.timestamp in available:
        source["start"] = str(np.atleast_1d(getattr(meas, fields.timestamp))[0])
    return CyclerLog(time_s=time_s - time_s[0], voltage_V=column("voltage", fields.voltage),
                     current_A=sign * column("current", fields.current), temp_C=temp_C, ah=ah, soc=soc,
                     source=source)


def read_csv(path: str | Path, mapping: CsvMapping = CsvMapping()) -> CyclerLog:
    """A delimited text log with a header row, mapped by column name (see CsvMapping)."""
    p = Path(path)
    with p.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f, delimiter=mapping.delimiter))
    if len(rows) < 2:
        raise CyclerFormatError(f"{p}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    data = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    short = next((n for n, r in enumerate(data, start=2) if len(r) < len(header)), None)
    if short is not None:
        raise CyclerFormatError(f"{p}: data row {short} has fewer cells than the header's {len(header)}")

    def index(role: str, name: str) -> int:
        if name not in header:
            raise CyclerFormatError(f"{p}: {role} column {name!r} not found; columns are {header}")
        return header.index(name)

    def optional_index(role: str, name: str | None, defaults: tuple[str, ...]) -> int | None:
        if name is not None:
            return index(role, name)
        return next((header.index(d) for d in defaults if d in header), None)

    def numbers(k: int, scale: float) -> FloatArray:
        try:
            return np.array([float(r[k]) if r[k].strip() else np.nan for r in data]) * scale
        except ValueError as e:
            raise CyclerFormatError(f"{p}: column {header[k]!r}: {e}") from e

    k_time = index("time", mapping.time)
    k_voltage = index("voltage", mapping.voltage)
    k_current = index("current", mapping.current)
    k_temp = optional_index("temperature", mapping.temperature, BDF_TEMPERATURE)
    k_ah = optional_index("Ah", mapping.ah, BDF_AH)
    k_soc = None if mapping.soc is None else index("SoC", mapping.soc)
    sign = 1.0 if mapping.charge_positive else -1.0
    source = {"path": str(p), "format": "csv", "sha256": sha256_file(p),
              "sign": "file counts charge as " + ("positive" if mapping.charge_positive else "negative")}
    return CyclerLog(time_s=_time_column(p, [r[k_time] for r in data], mapping.time_unit),
                     voltage_V=numbers(k_voltage, mapping.voltage_scale),
                     current_A=sign * numbers(k_current, mapping.current_scale),
                     temp_C=None if k_temp is None else numbers(k_temp, 1.0),
                     ah=None if k_ah is None else sign * numbers(k_ah, mapping.ah_scale),
                     soc=None if k_soc is None else numbers(k_soc, mapping.soc_scale), source=source)


def _time_column(path: Path, cells: list[str], unit: str) -> FloatArray:
    """Elapsed seconds since the first row, from numbers in `unit` or datetimes in strptime format `unit`."""
    try:
        if unit in TIME_UNITS_S:
            t = np.array([float(c) for c in cells]) * TIME_UNITS_S[unit]
        else:
            stamps = [datetime.strptime(c.strip(), unit) for c in cells]
            t = np.array([(s - stamps[0]).total_seconds() for s in stamps])
    except ValueError as e:
        raise CyclerFormatError(f"{path}: time column ({unit!r}): {e}") from e
    return t - t[0]


def cumulative_charge_Ah(log: CyclerLog) -> FloatArray:
    """Charge moved since the first row (positive = charged in), trapezoid over the actual time steps."""
    dq_As = 0.5 * (log.current_A[1:] + log.current_A[:-1]) * np.diff(log.time_s)
    return np.concatenate(([0.0], np.cumsum(dq_As))) / 3600.0


def coulomb_soc(log: CyclerLog, capacity_Ah: float, full_at_index: int = 0, soc0: float = 1.0) -> FloatArray:
    """Reference SoC: soc0 at row full_at_index, then soc0 + (charge moved since that row) / capacity."""
    if capacity_Ah <= 0:
        raise ValueError(f"capacity must be positive, got {capacity_Ah} Ah")
    q_Ah = cumulative_charge_Ah(log)
    return soc0 + (q_Ah - q_Ah[full_at_index]) / capacity_Ah
