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
#
# Board estimates (a board running its estimators, engine/sox.py) come as one optional group: all of
# ESTIMATE_QUANTITIES (per cell, null for a cell not yet estimated), SOS_LEVEL and SOS_REASONS, or
# none of them (a board without a cell model). A state-of-safety reason code is
# check << 8 | cell << 2 | level (level 1..3: warn, alarm, critical; check: index in SOS_CHECKS;
# a pack check reports at cell 0), at most SOS_MAX_REASONS per message, highest level first.

from soxcommon import terms as onto

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

# Board estimates per cell: same layout as CELL_QUANTITIES. SoH is the capacity estimate over the cell
# model's nominal capacity; the board clamps every value into its range.
ESTIMATE_QUANTITIES = (
    ("sc", "soc_bp", onto.STATE_OF_CHARGE, "bp", 0, 10000),
    ("su", "soc_sigma_bp", onto.METROLOGICAL_UNCERTAINTY, "bp", 0, 10000),  # 1 sigma of "sc"
    ("sh", "soh_bp", onto.STATE_OF_HEALTH, "bp", 0, 20000),
)
# State of safety: the pack's level (0 ok, 1 warn, 2 alarm, 3 critical) and the reason codes.
SOS_LEVEL = ("ss", "sos_level", "soxbms:StateOfSafety", "1", 0, 3)
SOS_REASONS = ("sr", "sos_reasons", "soxbms:SafetyFinding", "code", 1, 0xFFFF)
SOS_MAX_REASONS = 4
SOS_LEVELS = ("ok", "warn", "alarm", "critical")
# The checks of a reason code, by index (the limits keys of engine/safety.py).
SOS_CHECKS = (
    "cell_voltage_high_mV",
    "cell_voltage_low_mV",
    "temp_high_dC",
    "temp_low_dC",
    "charge_temp_high_dC",
    "charge_temp_low_dC",
    "temp_rate_dC_per_min",
    "pressure_rise_Pa",
    "gas_ppm",
    "charge_current_mA",
    "discharge_current_mA",
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
    for q in CELL_QUANTITIES + PACK_QUANTITIES + ESTIMATE_QUANTITIES + (SOS_LEVEL, SOS_REASONS):
        table[q[0]] = [q[2], q[3], q[1]]
    return table


def reason(check, cell, level):
    return (check << 8) | (cell << 2) | level


def reason_parts(code):
    """(check, cell, level) of a state-of-safety reason code."""
    return code >> 8, (code >> 2) & 0x3F, code & 3


def reason_text(code):
    """A reason code in words, e.g. "cell_voltage_high_mV cell 3 alarm"."""
    check, cell, level = reason_parts(code)
    name = SOS_CHECKS[check] if check < len(SOS_CHECKS) else "check " + str(check)
    return name + " cell " + str(cell) + " " + SOS_LEVELS[level]
