# Payloads of the board's topics, built from queue records (wire definition: soxcommon.wire).
# Birth and data messages (~1 KB each) are written into one buffer made at start (Messages), not built as a
# dict, lists and a string: no message needs a new contiguous ~1 KB of heap (three did per sample, and the heap
# fragmented until one no longer found room).

import json

from app.jsonbuf import put_int, put_value
from soxcommon import wire
from soxcommon.frame import ABSENT

FIRMWARE_VERSION = "0.1.0"
COMPACT = (",", ":")  # no blanks: a 16-cell data message with estimates is ~15 % shorter, in flight and in RAM

_CELL_ALIASES = tuple(q[0] for q in wire.CELL_QUANTITIES)
_ESTIMATE_ALIASES = tuple(q[0] for q in wire.ESTIMATE_QUANTITIES)
# A data message's fields by code: the header (wire.DATA_HEADER, then the current), the cell quantities, the
# estimates, the state of safety's level and reasons.
_FIELDS = tuple(h[0] for h in wire.DATA_HEADER) + ("i",) + _CELL_ALIASES + _ESTIMATE_ALIASES + (
    wire.SOS_LEVEL[0], wire.SOS_REASONS[0])
_CELLS = len(wire.DATA_HEADER) + 1
_ESTIMATES = _CELLS + len(_CELL_ALIASES)
_LEVEL = _ESTIMATES + len(_ESTIMATE_ALIASES)
_I32_MIN = -2147483648  # a record's 32-bit values at their longest
_I32_CHARS = 11  # len("-2147483648")
_U16_CHARS = 5  # "65535": a record's 16-bit estimates, level and reason codes (null is shorter)


def _key_order(estimates):
    """The field codes of a data message in the order json.dumps wrote its dict: MicroPython writes a dict in its
    hash table's order, which follows from the keys and the order they went in. The same dict as the board built
    for every message, built once, keeps the bytes on the wire as they were."""
    msg = {"b": 0, "s": 0, "lo": 0, "d": 0, "t": 0, "tm": 0, "tr": 0, "i": 0}
    for alias in _CELL_ALIASES:
        msg[alias] = 0
    if estimates:
        for alias in _ESTIMATE_ALIASES:
            msg[alias] = 0
        msg[wire.SOS_LEVEL[0]] = 0
        msg[wire.SOS_REASONS[0]] = 0
    return bytes([_FIELDS.index(key) for key in msg])


_ORDER = _key_order(True)
_ORDER_PLAIN = _key_order(False)  # a record without estimates


def _birth(boot, bd_seq, n_cells, queued, dropped):
    return {
        "pv": wire.PROTOCOL_VERSION,
        "b": boot,
        "bd": bd_seq,
        "n": n_cells,
        "fw": FIRMWARE_VERSION,
        "al": wire.alias_table(),
        "q": queued,
        "d": dropped,
    }


def death(bd_seq):
    return json.dumps({"bd": bd_seq}, separators=COMPACT)


def data_max_bytes(n_cells):
    """The longest data message of n_cells cells: every value at its longest."""
    size = len(_ORDER) * 4 + 1  # the braces, the commas, each key's quotes and colon
    for code in _ORDER:
        size += len(_FIELDS[code])
    size += _CELLS * _I32_CHARS + _U16_CHARS  # the header and the level
    size += len(_CELL_ALIASES) * (n_cells * (_I32_CHARS + 1) + 1)
    size += len(_ESTIMATE_ALIASES) * (n_cells * (_U16_CHARS + 1) + 1)
    return size + wire.SOS_MAX_REASONS * (_U16_CHARS + 1) + 1


def _present(value):
    return None if value == ABSENT else value


def _put_cells(buf, pos, queue, k, estimates):
    # Quantity k of every cell as a JSON list: a cell quantity, or (estimates) an estimate.
    buf[pos] = 0x5B  # "["
    pos += 1
    for c in range(queue.n_cells):
        if c:
            buf[pos] = 0x2C  # ","
            pos += 1
        pos = put_int(buf, pos, _present(queue.record_estimate(c, k) if estimates else queue.record_cell(c, k)))
    buf[pos] = 0x5D  # "]"
    return pos + 1


class Messages:
    """The buffer the board's birth and data messages are written into, view[start:end], after `start` bytes left
    free for the MQTT header (MqttClient.publish_in); each message is valid until the next is written."""

    def __init__(self, n_cells, room):
        self.n_cells = n_cells
        self.start = room
        # The longest birth: its numbers at their longest (json.dumps once, at start).
        birth_max = len(json.dumps(_birth(_I32_MIN, _I32_MIN, n_cells, _I32_MIN, _I32_MIN), separators=COMPACT))
        self.view = memoryview(bytearray(room + max(birth_max, data_max_bytes(n_cells))))
        self._header = [0] * _CELLS

    def birth(self, boot, bd_seq, queued, dropped):
        """Writes the birth message; returns its end."""
        return put_value(self.view, self.start, _birth(boot, bd_seq, self.n_cells, queued, dropped))

    def data(self, queue, low_seq):
        """Writes the data message of the record loaded in `queue` (RingQueue.read); returns its end."""
        header = self._header
        header[0] = queue.record_boot()
        header[1] = queue.record_seq()
        header[2] = low_seq
        header[3] = queue.dropped
        header[4], header[5], header[6] = queue.record_time()
        header[7] = _present(queue.record_current())
        level = queue.record_level()
        buf = self.view
        pos = self.start
        sep = 0x7B  # "{" before the first field, "," before the others
        for code in _ORDER_PLAIN if level == ABSENT else _ORDER:  # the estimates: all of them or none
            buf[pos] = sep
            sep = 0x2C
            pos = put_value(buf, pos + 1, _FIELDS[code])
            buf[pos] = 0x3A  # ":"
            pos += 1
            if code < _CELLS:
                pos = put_int(buf, pos, header[code])
            elif code < _ESTIMATES:
                pos = _put_cells(buf, pos, queue, code - _CELLS, False)
            elif code < _LEVEL:
                pos = _put_cells(buf, pos, queue, code - _ESTIMATES, True)
            elif code == _LEVEL:
                pos = put_int(buf, pos, level)
            else:
                buf[pos] = 0x5B
                pos += 1
                for i in range(queue.record_reasons()):
                    if i:
                        buf[pos] = 0x2C
                        pos += 1
                    pos = put_int(buf, pos, queue.record_reason(i))
                buf[pos] = 0x5D
                pos += 1
        buf[pos] = 0x7D  # "}"
        return pos + 1
