# Checks of received messages against the wire definition (soxcommon/wire.py): the host's ingest, and the
# golden and fuzz tests under both interpreters (MicroPython and CPython subset). Not on the board, which only
# builds messages: it keeps this module's code out of the board's heap.

from soxcommon import wire

_INT_ONLY = {int}
_INT_OR_ABSENT = {int, type(None)}  # a cell reading the sensor did not deliver is null, never 0


def _is_int(value):
    # type() rather than isinstance(): a JSON true/false (bool, an int subclass) is no measurement.
    return type(value) is int


def _check_int(msg, key, lo, hi):
    value = msg.get(key)
    if not _is_int(value):
        return "field " + key + " missing or not an integer"
    if value < lo or value > hi:
        return "field " + key + " out of range"
    return None


_PACK_RANGES = tuple((q[0], q[4], q[5]) for q in wire.PACK_QUANTITIES)
_CELL_RANGES = tuple((q[0], q[4], q[5]) for q in wire.CELL_QUANTITIES)
_ESTIMATE_RANGES = tuple((q[0], q[4], q[5]) for q in wire.ESTIMATE_QUANTITIES)
_DATA_KEYS = len(wire.DATA_HEADER) + len(wire.PACK_QUANTITIES) + len(wire.CELL_QUANTITIES)
_ESTIMATED_KEYS = _DATA_KEYS + len(wire.ESTIMATE_QUANTITIES) + 2
_LEVEL = wire.SOS_LEVEL
_REASONS = wire.SOS_REASONS
_KNOWN_KEYS = tuple(q[0] for q in wire.DATA_HEADER + wire.PACK_QUANTITIES + wire.CELL_QUANTITIES
                    + wire.ESTIMATE_QUANTITIES + (_LEVEL, _REASONS))


def check_data(msg):
    """Error text for an invalid data message, None when it follows the wire definition.
    The host's hot path: valid fields pass inline tests, only a failing one builds its reason."""
    if not isinstance(msg, dict):
        return "data message is not an object"
    for key, lo, hi in wire.DATA_HEADER:
        value = msg.get(key)
        if type(value) is not int or value < lo or value > hi:
            return _check_int(msg, key, lo, hi)
    if msg["lo"] > msg["s"]:
        return "field lo is above s"
    for key, lo, hi in _PACK_RANGES:
        if key not in msg:
            return _check_int(msg, key, lo, hi)
        value = msg[key]
        if value is not None and (type(value) is not int or value < lo or value > hi):
            return _check_int(msg, key, lo, hi)
    err = _check_cell_lists(msg, _CELL_RANGES, -1)
    if err:
        return err
    keys = _DATA_KEYS
    if _LEVEL[0] in msg:
        err = _check_estimates(msg, len(msg["v"]))
        if err:
            return err
        keys = _ESTIMATED_KEYS
    if len(msg) != keys:
        for key in msg:
            if key not in _KNOWN_KEYS:
                return "unknown alias " + str(key)
        return "estimate fields without " + _LEVEL[0] + ": they come all together or not at all"
    return None


def _check_cell_lists(msg, ranges, cells):
    """Per-cell lists of `ranges` (alias, lo, hi): each a list of `cells` integers or nulls (cells < 0:
    of the first list's length, 1..MAX_CELLS)."""
    for alias, lo, hi in ranges:
        values = msg.get(alias)
        if not isinstance(values, list) or not values or len(values) > wire.MAX_CELLS:
            return "field " + alias + " missing or not a list of 1.." + str(wire.MAX_CELLS) + " cells"
        if cells < 0:
            cells = len(values)
        elif len(values) != cells:
            return "field " + alias + " has " + str(len(values)) + " cells, expected " + str(cells)
        # Whole-list checks run in C on the host (3x a per-value loop there).
        types = set(map(type, values))
        if types != _INT_ONLY:
            if not types <= _INT_OR_ABSENT:
                return "field " + alias + " has a value out of range or not an integer"
            values = [v for v in values if v is not None]
            if not values:
                continue
        if min(values) < lo or max(values) > hi:
            return "field " + alias + " has a value out of range or not an integer"
    return None


def _check_estimates(msg, cells):
    err = _check_int(msg, _LEVEL[0], _LEVEL[4], _LEVEL[5])
    if err:
        return err
    codes = msg.get(_REASONS[0])
    if not isinstance(codes, list) or len(codes) > wire.SOS_MAX_REASONS:
        return "field " + _REASONS[0] + " missing or not a list of at most " + str(wire.SOS_MAX_REASONS) + " codes"
    for code in codes:
        if not _is_int(code) or code < _REASONS[4] or code > _REASONS[5]:
            return "field " + _REASONS[0] + " has a code out of range or not an integer"
    return _check_cell_lists(msg, _ESTIMATE_RANGES, cells)


def check_birth(msg):
    """Error text for an invalid birth message, None when valid."""
    if not isinstance(msg, dict):
        return "birth message is not an object"
    if not _is_int(msg.get("pv")) or msg["pv"] != wire.PROTOCOL_VERSION:  # true == 1.0 == 1 in Python
        return "unsupported protocol version " + (str(msg["pv"]) if _is_int(msg.get("pv")) else "(not an integer)")
    for key in ("b", "bd", "n", "q", "d"):
        err = _check_int(msg, key, 0, wire.INT_LIMIT - 1)
        if err:
            return err
    if not 0 < msg["n"] <= wire.MAX_CELLS:
        return "field n (cell count) out of range"
    if not isinstance(msg.get("fw"), str):
        return "field fw missing"
    if msg.get("al") != wire.alias_table():
        return "alias table differs from protocol version " + str(wire.PROTOCOL_VERSION)
    return None


def check_death(msg):
    if not isinstance(msg, dict):
        return "death message is not an object"
    return _check_int(msg, "bd", 0, wire.INT_LIMIT - 1)
