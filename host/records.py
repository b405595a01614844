"""What ingest hands to the store: one validated message, or one rejected with its reason.
Named tuples: made once per message on the ingest hot path (a fifth of a frozen dataclass's cost)."""

from __future__ import annotations

from typing import NamedTuple


class DataRecord(NamedTuple):
    device: str
    boot: int
    seq: int
    low_seq: int  # the board's oldest queued sequence of this boot (all below: committed or dropped)
    dropped: int  # board's total queue-overflow drops
    t_s: int
    t_ms: int
    time_relative: int
    current_mA: int | None
    cells: tuple[tuple[int | None, ...], ...]  # per cell, in wire.CELL_QUANTITIES order; None: absent
    received_at: float
    # The board's estimates (None: the board sent none): per cell in wire.ESTIMATE_QUANTITIES order (None: that
    # cell not estimated), the state-of-safety level and its reason codes (wire.reason).
    estimates: tuple[tuple[int | None, ...], ...] | None = None
    sos_level: int | None = None
    sos_reasons: tuple[int, ...] | None = None


class BirthRecord(NamedTuple):
    device: str
    boot: int
    session: int
    cells: int
    firmware: str
    queued: int
    dropped: int
    received_at: float


class DeathRecord(NamedTuple):
    device: str
    session: int
    received_at: float


class Rejected(NamedTuple):
    topic: str
    payload: bytes
    reason: str
    received_at: float


Record = DataRecord | BirthRecord | DeathRecord | Rejected
