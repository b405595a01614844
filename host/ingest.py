"""Turn one MQTT message into a record for the store: validated against the wire definition, or
rejected with the reason (it is quarantined, never dropped and never a crash)."""

from __future__ import annotations

import functools

import orjson

from host.records import BirthRecord, DataRecord, DeathRecord, Record, Rejected
from soxcommon import validate, wire

CELL_ALIASES = tuple(q[0] for q in wire.CELL_QUANTITIES)
ESTIMATE_ALIASES = tuple(q[0] for q in wire.ESTIMATE_QUANTITIES)
SOS_LEVEL = wire.SOS_LEVEL[0]
SOS_REASONS = wire.SOS_REASONS[0]


def parse(topic: str, payload: bytes, received_at: float) -> Record:
    try:
        return _parse(topic, payload, received_at)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        return Rejected(topic, bytes(payload), str(e) or type(e).__name__, received_at)


@functools.lru_cache(maxsize=4096)
def _route(topic: str) -> tuple[str, str]:
    """(device, kind) of a topic, checked once per topic: a fleet reuses a few topics endlessly."""
    device, kind = wire.split_topic(topic)
    if not wire.valid_device_id(device):
        raise ValueError("invalid device id in topic")
    return device, kind


def _parse(topic: str, payload: bytes, received_at: float) -> Record:
    device, kind = _route(topic)
    if len(payload) > wire.MAX_PAYLOAD_BYTES:
        raise ValueError(f"oversized payload: {len(payload)} bytes > {wire.MAX_PAYLOAD_BYTES}")
    try:
        msg = orjson.loads(payload)  # 3x the stdlib's speed here; strict: no NaN, no lone surrogates
    except orjson.JSONDecodeError as e:
        raise ValueError(f"malformed JSON: {e.msg} at {e.pos}") from None
    if kind == "data":
        _raise_if(validate.check_data(msg))
        cells = tuple(zip(*(msg[a] for a in CELL_ALIASES), strict=True))
        if SOS_LEVEL not in msg:
            return DataRecord(device, msg["b"], msg["s"], msg["lo"], msg["d"], msg["t"], msg["tm"], msg["tr"],
                              msg["i"], cells, received_at)
        estimates = tuple(zip(*(msg[a] for a in ESTIMATE_ALIASES), strict=True))
        return DataRecord(device, msg["b"], msg["s"], msg["lo"], msg["d"], msg["t"], msg["tm"], msg["tr"],
                          msg["i"], cells, received_at, estimates, msg[SOS_LEVEL], tuple(msg[SOS_REASONS]))
    if kind == "birth":
        _raise_if(validate.check_birth(msg))
        return BirthRecord(device, msg["b"], msg["bd"], msg["n"], msg["fw"], msg["q"], msg["d"], received_at)
    if kind == "death":
        _raise_if(validate.check_death(msg))
        return DeathRecord(device, msg["bd"], received_at)
    raise ValueError(f"unexpected topic kind '{kind}'")


def _raise_if(error: str | None) -> None:
    if error:
        raise ValueError(error)
