# State of safety (SoS): per cell and per pack checks, each graded ok / warn / alarm / critical, with
# debounce and hysteresis on sample time. MicroPython and CPython subset; update() allocates nothing.
#
# A check compares one reading per cell (or the pack current) with three thresholds, one per level.
# Internally every check is a "high" check: low checks (undervoltage, cold) negate value and
# thresholds, so one state machine serves all. Per (check, cell) and level k:
#   raise: the value has been beyond threshold k on every present sample for debounce_ms of sample
#          time (the first such sample starts the clock at 0, so one sample alone never trips and a
#          sustained fault trips at the first sample >= debounce_ms after its first sample);
#   drop:  the value has been back inside the present level's threshold by the hysteresis margin
#          for release_ms; the level then falls to the highest lower level whose threshold (less
#          the margin) the value still exceeds, else to ok.
# The clocks count sample intervals: a present reading stands for the interval since the sample
# before it. Absent readings (frame.ABSENT) never trip and never clear: the level is held and the
# clocks stand still, so a sensor that drops out during a fault keeps the finding until it reads
# inside again, and a flaky one still trips once its present readings add up to debounce_ms.
#
# Time is the sample's own t_ms (the rig's simulated time in lockstep), never wall time; only
# intervals between samples are kept (capped), so no stored value grows with run time. A clock that
# steps back (a restart of the sample clock) counts as an interval of 0.
#
# Checks (ids are the reason codes' check field; names are the keys of the limits config,
# models/board/safety.json):
#   cell voltage high / low, temperature high / low (any time), temperature high / low while charging
#   (pack current > charge_detect_mA; unknown while the current is absent), dT/dt over a window of
#   samples, pressure rise over a per-cell baseline (mean of the first present readings after start;
#   0 samples: absolute pressure), gas ppm at the cell's gas sensor (not on the serial wire yet: the
#   caller passes it when its front-end delivers it), pack charge and discharge current.

from array import array

from soxcommon.frame import ABSENT, CELL_FIELDS
from soxcommon.wire import SOS_CHECKS as CHECK_NAMES
from soxcommon.wire import reason

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


OK = const(0)
WARN = const(1)
ALARM = const(2)
CRITICAL = const(3)

V_HIGH = const(0)
V_LOW = const(1)
T_HIGH = const(2)
T_LOW = const(3)
T_CHARGE_HIGH = const(4)
T_CHARGE_LOW = const(5)
T_RATE = const(6)
P_RISE = const(7)
GAS = const(8)
I_CHARGE = const(9)
I_DISCHARGE = const(10)
N_CHECKS = const(11)  # CHECK_NAMES (wire.SOS_CHECKS): the limits config's key per check id
# Reason code (wire.reason): level in bits 0-1, cell in bits 2-7, check from bit 8. The low checks' thresholds fall
# from warn to critical.
LOW_CHECKS = (V_LOW, T_LOW, T_CHARGE_LOW)  # the pack checks (I_CHARGE, I_DISCHARGE) report at cell 0

_K_VOLTAGE = const(0)  # wire.CELL_QUANTITIES order
_K_TEMP = const(1)
_K_PRESSURE = const(2)
_LIMIT = const(0x10000000)  # bound of thresholds and margins (2**28): every sum of two stays a small int
_INSIDE = const(-0x30000000)  # inside every threshold by any margin (charge checks while not charging)
_P_MAX_PA = const(10000000)  # wire range of pressure: a baseline only takes readings inside it
_DT_MAX_MS = const(1000000)  # a longer gap between samples counts as this: the window's span stays < 2**30
_RATE_DELTA_MAX_DC = const(10000)  # |T(now) - T(then)| cap, far beyond any real one: the rate stays small
_RATE_WINDOW_MAX = const(600)  # samples in the dT/dt window (its ring's memory)
_LEVEL_KEYS = ("warn", "alarm", "critical")
_CHECK_KEYS = ("warn", "alarm", "critical", "hysteresis", "debounce_ms", "release_ms")
_TEXT_KEYS = ("source", "note")


# --- limits config ---------------------------------------------------------------------------------


class LimitsError(ValueError):
    pass


def _int(where, key, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool):
        raise LimitsError("%s: '%s' must be an integer, got %r" % (where, key, value))
    if value < lo or value > hi:
        raise LimitsError("%s: '%s' = %d is out of range %d..%d" % (where, key, value, lo, hi))
    return value


def parse_limits(raw, where="safety"):
    """Check a limits config (models/board/safety.json) and return it with integers only:
    {"charge_detect_mA", "temp_rate_window_ms", "pressure_baseline_samples",
     "checks": {name: {"warn", "alarm", "critical", "hysteresis", "debounce_ms", "release_ms"}}}.
    Raises LimitsError naming the offending key."""
    if not isinstance(raw, dict):
        raise LimitsError(where + ": expected a JSON object")
    for key in raw:
        if key not in ("_doc", "sources", "cell", "charge_detect_mA", "temp_rate_window_ms",
                       "pressure_baseline_samples", "checks"):
            raise LimitsError(where + ": unknown key '" + key + "'")
    out = {"checks": {}}  # type: dict
    for key, lo, hi in (("charge_detect_mA", 0, 1000000), ("temp_rate_window_ms", 1, 600000),
                        ("pressure_baseline_samples", 0, 64)):
        if key not in raw:
            raise LimitsError(where + ": missing required key '" + key + "'")
        out[key] = _int(where, key, raw[key], lo, hi)
    checks = raw.get("checks")
    if not isinstance(checks, dict):
        raise LimitsError(where + ": 'checks' must be an object of the checks " + ", ".join(CHECK_NAMES))
    for name in checks:
        if name not in CHECK_NAMES:
            raise LimitsError(where + ".checks: unknown check '" + name + "'")
    for check in range(N_CHECKS):
        name = CHECK_NAMES[check]
        entry = checks.get(name)
        at = where + ".checks." + name
        if not isinstance(entry, dict):
            raise LimitsError(at + ": missing, or not an object")
        for key in entry:
            if key not in _CHECK_KEYS and key not in _TEXT_KEYS:
                raise LimitsError(at + ": unknown key '" + key + "'")
        for key in _CHECK_KEYS:
            if key not in entry:
                raise LimitsError(at + ": missing required key '" + key + "'")
        got = {}
        for key in _LEVEL_KEYS:
            got[key] = _int(at, key, entry[key], -_LIMIT, _LIMIT)
        got["hysteresis"] = _int(at, "hysteresis", entry["hysteresis"], 0, _LIMIT)
        # debounce_ms >= 1: the first sample beyond a threshold starts the clock at 0, so no single
        # sample can ever trip.
        got["debounce_ms"] = _int(at, "debounce_ms", entry["debounce_ms"], 1, 3600000)
        got["release_ms"] = _int(at, "release_ms", entry["release_ms"], 0, 3600000)
        low = check in LOW_CHECKS
        for k in range(2):
            a = got[_LEVEL_KEYS[k]]
            b = got[_LEVEL_KEYS[k + 1]]
            if (a <= b) if low else (a >= b):
                raise LimitsError("%s: %s (%d) must be %s %s (%d)" % (
                    at, _LEVEL_KEYS[k], a, "above" if low else "below", _LEVEL_KEYS[k + 1], b))
        out["checks"][name] = got
    return out


def load_limits(path):
    import json

    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise LimitsError("cannot read safety limits " + path + ": " + str(e)) from None
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise LimitsError(path + " is not valid JSON: " + str(e)) from None
    return parse_limits(raw, path)


# --- the monitor ------------------------------------------------------------------------------------


def _ints(n, value):
    """array("i") of n values, made without a list of n Python ints (twice the array's size) at start."""
    out = array("i", bytes(4 * n))
    if value:
        for i in range(n):
            out[i] = value
    return out


class SafetyMonitor:
    def __init__(self, n_cells, sample_period_ms, limits):
        """limits: parse_limits() output. sample_period_ms sizes the dT/dt window in samples; the rate
        itself uses the samples' own times."""
        self.n_cells = n_cells
        self.level = OK  # the pack's level: the highest of all findings
        self.levels = bytearray(N_CHECKS * n_cells)  # [check * n_cells + cell]
        slots = N_CHECKS * n_cells
        self._thr = _ints(3 * N_CHECKS, 0)  # [check * 3 + k], in "high" orientation
        self._hyst = _ints(N_CHECKS, 0)
        self._debounce = _ints(N_CHECKS, 0)
        self._release = _ints(N_CHECKS, 0)
        for check in range(N_CHECKS):
            got = limits["checks"][CHECK_NAMES[check]]
            sign = -1 if check in LOW_CHECKS else 1
            for k in range(3):
                self._thr[check * 3 + k] = sign * got[_LEVEL_KEYS[k]]
            self._hyst[check] = got["hysteresis"]
            self._debounce[check] = got["debounce_ms"]
            self._release[check] = got["release_ms"]
        self._onset = _ints(3 * slots, -1)  # ms beyond threshold k (capped), -1: inside
        self._clear = _ints(slots, -1)  # ms back inside the level by the margin (capped), -1: not
        self._charge_detect_mA = limits["charge_detect_mA"]
        # dT/dt: the temperature W samples ago against the present one, W = window / period.
        self._w = max(1, limits["temp_rate_window_ms"] // sample_period_ms)
        if self._w > _RATE_WINDOW_MAX:
            raise LimitsError("temp_rate_window_ms / sample_period_ms = %d samples, at most %d"
                              % (self._w, _RATE_WINDOW_MAX))
        self._t_ring = _ints(n_cells * self._w, ABSENT)  # [cell * W + pos]
        self._dt_ring = _ints(self._w, 0)  # sample intervals in the window
        self._span_ms = 0  # their sum: t(now) - t(W samples ago)
        self._pos = 0
        # Pressure baseline: mean of the first `samples` present readings per cell (0 samples: the
        # baseline stays 0, absolute pressure).
        self._p_samples = limits["pressure_baseline_samples"]
        self._p_sum = _ints(n_cells, 0)
        self._p_n = _ints(n_cells, 0)
        self._p_base = _ints(n_cells, 0)
        self._started = False
        self._t_prev = 0
        self._dt = 0

    def level_of(self, check, cell=0):
        return self.levels[check * self.n_cells + cell]

    def findings(self, out):
        """Write the reason code of every finding above ok into `out` (array("i") of at least
        N_CHECKS * n_cells entries), in check then cell order; returns their count."""
        n = 0
        levels = self.levels
        cells = self.n_cells
        for i in range(len(levels)):
            if levels[i]:
                out[n] = reason(i // cells, i % cells, levels[i])
                n += 1
        return n

    def update(self, sample, gas_ppm=None):
        """Take one engine.sample.Sample (and the per-cell gas readings, array("i") with ABSENT, when
        there are any); sets self.level and self.levels."""
        t = sample.t_ms
        dt = t - self._t_prev if self._started else 0
        self._dt = 0 if dt < 0 else (dt if dt < _DT_MAX_MS else _DT_MAX_MS)
        self._t_prev = t
        self._started = True
        self.level = OK
        current = sample.current_mA
        if current == ABSENT:
            self._check(I_CHARGE, 0, ABSENT)
            self._check(I_DISCHARGE, 0, ABSENT)
        else:
            self._check(I_CHARGE, 0, current)
            self._check(I_DISCHARGE, 0, -current)
        # The dT/dt window moves by one sample for every cell.
        pos = self._pos
        w = self._w
        self._span_ms += self._dt - self._dt_ring[pos]
        self._dt_ring[pos] = self._dt
        self._pos = pos + 1 if pos + 1 < w else 0
        span = self._span_ms
        cells = sample.cells
        for c in range(self.n_cells):
            base = c * CELL_FIELDS
            v = cells[base + _K_VOLTAGE]
            self._check(V_HIGH, c, v)
            self._check(V_LOW, c, ABSENT if v == ABSENT else -v)
            temp = cells[base + _K_TEMP]
            self._check(T_HIGH, c, temp)
            self._check(T_LOW, c, ABSENT if temp == ABSENT else -temp)
            if temp == ABSENT or current == ABSENT:
                self._check(T_CHARGE_HIGH, c, ABSENT)
                self._check(T_CHARGE_LOW, c, ABSENT)
            elif current > self._charge_detect_mA:
                self._check(T_CHARGE_HIGH, c, temp)
                self._check(T_CHARGE_LOW, c, -temp)
            else:
                self._check(T_CHARGE_HIGH, c, _INSIDE)
                self._check(T_CHARGE_LOW, c, _INSIDE)
            old = self._t_ring[c * w + pos]
            self._t_ring[c * w + pos] = temp
            if temp == ABSENT or old == ABSENT or span <= 0:
                self._check(T_RATE, c, ABSENT)
            else:
                delta = temp - old
                if delta > _RATE_DELTA_MAX_DC:
                    delta = _RATE_DELTA_MAX_DC
                elif delta < -_RATE_DELTA_MAX_DC:
                    delta = -_RATE_DELTA_MAX_DC
                self._check(T_RATE, c, delta * 60000 // span)
            p = cells[base + _K_PRESSURE]
            n = self._p_n[c]
            if n < self._p_samples:  # learning the baseline: no finding meanwhile
                if 0 <= p <= _P_MAX_PA:
                    self._p_sum[c] += p
                    self._p_n[c] = n + 1
                    if n + 1 == self._p_samples:
                        self._p_base[c] = self._p_sum[c] // self._p_samples
                self._check(P_RISE, c, ABSENT)
            else:
                self._check(P_RISE, c, ABSENT if p == ABSENT else p - self._p_base[c])
            self._check(GAS, c, ABSENT if gas_ppm is None else gas_ppm[c])

    def _check(self, check, cell, value):
        """One reading of one check ("high" orientation: beyond means value > threshold)."""
        i = check * self.n_cells + cell
        level = self.levels[i]
        if value != ABSENT:
            dt = self._dt
            thr = self._thr
            t3 = check * 3
            onset = self._onset
            o3 = i * 3
            debounce = self._debounce[check]
            target = OK
            for k in range(3):
                if value > thr[t3 + k]:
                    held = onset[o3 + k]
                    held = 0 if held < 0 else min(held + dt, debounce)
                    onset[o3 + k] = held
                    if held >= debounce:
                        target = k + 1
                else:
                    onset[o3 + k] = -1
            if target > level:
                level = target
                self._clear[i] = -1
            elif level:
                hyst = self._hyst[check]
                if value <= thr[t3 + level - 1] - hyst:
                    release = self._release[check]
                    held = self._clear[i]
                    held = 0 if held < 0 else min(held + dt, release)
                    if held >= release:
                        new = OK
                        for k in range(level - 1):
                            if value > thr[t3 + k] - hyst:
                                new = k + 1
                        level = new
                        held = -1
                    self._clear[i] = held
                else:
                    self._clear[i] = -1
            self.levels[i] = level
        if level > self.level:
            self.level = level
