# The MQTT wire of soxbms, one definition for board (MicroPython) and host (CPython).
#
# Topics: soxbms/v1/<device>/{birth,data,state,event,death}; host -> board: .../ack and
# .../cmd/<name>. Payloads are compact JSON with integers in the units below; every value is
# kept inside +-2**30 so it stays a small integer on a 32-bit board.
#
# Sign convention (as the cycler data of ../shared/data): current > 0 charges the pack,
# current < 0 discharges it.
#
# A reading the sensor did not deliver (a dropout, a channel the board lacks) is JSON null here and
# frame.ABSENT on the serial line: absent, never a made-up 0. A pack quantity may be null too, but
# its key must be there.
#
# Time: "t" is whole seconds, "tm" the milliseconds 0..999. When the board is synced ("tr": 0),
# "t" counts from the MicroPython epoch 2000-01-01T00:00:00Z (fits 2**30 until 2034); before the
# host's time sync ("tr": 1) it counts from the board's own start (board-relative).

from soxcommon import ontology as onto

PROTOCOL_VERSION = 1
EPOCH_2000_UNIX_S = 946684800  # the wire's epoch, 2000-01-01T00:00:00Z, in Unix seconds
TOPIC_ROOT = "soxbms/v1"
INT_LIMIT = 1 << 30
MAX_CELLS = 32
MAX_PAYLOAD_BYTES = 8192
DEVICE_ID_MAX = 32

# Per-cell quantities: (alias, column name, CURIE, unit, lo, hi). Column names carry the unit and
# are the host's database columns.
CELL_QUANTITIES = (
    ("v", "voltage_mV", onto.CELL_VOLTAGE, "mV", 0, 10000),
    ("T", "temp_dC", onto.CELSIUS_TEMPERATURE, "dC", -600, 2000),
    ("p", "pressure_Pa", onto.PRESSURE, "Pa", 0, 10000000),
    ("f", "tof_ns", "soxbms:UltrasonicTimeOfFlight", "ns", 0, 1000000),
    ("a", "amplitude_bp", "soxbms:UltrasonicAmplitude", "bp", 0, 10000),
    ("w", "fbg_pm", "soxbms:FbgBraggWavelength", "pm", 0, 2000000),
)
# Pack quantities: same layout, one value per sample.
PACK_QUANTITIES = (
    ("i", "current_mA", onto.ELECTRIC_CURRENT, "mA", -1000000, 1000000),
)

# Header fields of a data message: (key, lo, hi).
DATA_HEADER = (
    ("b", 0, INT_LIMIT - 1),  # boot id: persisted counter, +1 per board start
    ("s", 0, INT_LIMIT - 1),  # sequence number within the boot, from 0, no wrap (3.4 years at 10 Hz)
    ("lo", 0, INT_LIMIT - 1),  # oldest sequence of this boot still queued on the board
    ("d", 0, INT_LIMIT - 1),  # records the board dropped on queue overflow, total since first start
    ("t", 0, INT_LIMIT - 1),  # time, whole seconds (see above)
    ("tm", 0, 999),  # time, milliseconds part
    ("tr", 0, 1),  # 1: time is board-relative (not yet synced)
)


def topic(device, kind):
    return TOPIC_ROOT + "/" + device + "/" + kind


def split_topic(name):
    """(device, kind) of a soxbms topic, kind may contain '/' (cmd/<name>); ValueError otherwise."""
    parts = name.split("/", 3)
    if len(parts) != 4 or parts[0] + "/" + parts[1] != TOPIC_ROOT or not parts[2]:
        raise ValueError("not a soxbms v1 topic: " + name)
    return parts[2], parts[3]


def valid_device_id(device):
    if not 0 < len(device) <= DEVICE_ID_MAX:
        return False
    for ch in device:
        if not ("a" <= ch <= "z" or "A" <= ch <= "Z" or "0" <= ch <= "9" or ch in "-_"):  # ASCII on both
            return False
    return True


def alias_table():
    """Birth message's alias table: alias -> [CURIE, unit, column]."""
    table = {}
    for q in CELL_QUANTITIES + PACK_QUANTITIES:
        table[q[0]] = [q[2], q[3], q[1]]
    return table


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


_PACK_RANGES = tuple((q[0], q[4], q[5]) for q in PACK_QUANTITIES)
_CELL_RANGES = tuple((q[0], q[4], q[5]) for q in CELL_QUANTITIES)
_DATA_KEYS = len(DATA_HEADER) + len(PACK_QUANTITIES) + len(CELL_QUANTITIES)


def check_data(msg):
    """Error text for an invalid data message, None when it follows the wire definition.
    The host's hot path: valid fields pass inline tests, only a failing one builds its reason."""
    if not isinstance(msg, dict):
        return "data message is not an object"
    for key, lo, hi in DATA_HEADER:
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
    cells = -1
    for alias, lo, hi in _CELL_RANGES:
        values = msg.get(alias)
        if not isinstance(values, list) or not values or len(values) > MAX_CELLS:
            return "field " + alias + " missing or not a list of 1.." + str(MAX_CELLS) + " cells"
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
    if len(msg) != _DATA_KEYS:
        for key in msg:
            if not _known_key(key):
                return "unknown alias " + str(key)
    return None


def _known_key(key):
    for entry in DATA_HEADER + PACK_QUANTITIES + CELL_QUANTITIES:
        if entry[0] == key:
            return True
    return False


def check_birth(msg):
    """Error text for an invalid birth message, None when valid."""
    if not isinstance(msg, dict):
        return "birth message is not an object"
    if not _is_int(msg.get("pv")) or msg["pv"] != PROTOCOL_VERSION:  # true == 1.0 == 1 in Python
        return "unsupported protocol version " + (str(msg["pv"]) if _is_int(msg.get("pv")) else "(not an integer)")
    for key in ("b", "bd", "n", "q", "d"):
        err = _check_int(msg, key, 0, INT_LIMIT - 1)
        if err:
            return err
    if not 0 < msg["n"] <= MAX_CELLS:
        return "field n (cell count) out of range"
    if not isinstance(msg.get("fw"), str):
        return "field fw missing"
    if msg.get("al") != alias_table():
        return "alias table differs from protocol version " + str(PROTOCOL_VERSION)
    return None


def check_death(msg):
    if not isinstance(msg, dict):
        return "death message is not an object"
    return _check_int(msg, "bd", 0, INT_LIMIT - 1)
