# Input features of the neural SoC estimator (engine.nn), one definition for board and host: hil.nn_data trains
# on exactly the integers a board computes. MicroPython and CPython subset; integers only, nothing allocated per
# sample.
#
# Input, once per sample at 1 s (the filters count samples, so their time constants assume period_ms = 1000):
# the pack current_mA (> 0 charges) and per cell voltage_mV and temp_dC, frame.ABSENT when the sensor delivered
# nothing (a cell's filters then hold; a cell is `ready` from its first delivered voltage and temperature on).
#
# Running state, kept << FRAC_BITS; each filter is y += (x - y) / 2**k, an exponential moving average with a time
# constant of about 2**k samples; the arithmetic right shift floors identically in both interpreters:
#   current_c32 = clamp((current_mA << 5) // capacity_mAh, +-CURRENT_CLAMP_C32)   pack current in 1/32 C
#   i_fast, i_slow: current_c32 filtered with k = FAST_SHIFT (~32 s) and k = SLOW_SHIFT (~512 s)
#   per cell v_fast, v_slow: voltage_mV filtered with k = FAST_SHIFT and k = SLOW_SHIFT
# Features, N_FEATURES int8 codes q = clamp(value, -128, 127); the model's input is q * INPUT_SCALE (zero point 0),
# which onnxruntime's QuantizeLinear maps back to q exactly (INPUT_SCALE is a power of two):
#   0 voltage      (voltage_mV - 3600) >> 3          8 mV steps, 2576..4623 mV
#   1 v_fast       (v_fast - 3600 mV) >> 3
#   2 v_slow       (v_slow - 3600 mV) >> 3
#   3 v_dyn        (voltage_mV - v_fast) >> 1        2 mV steps, +-256 mV: the cell's polarisation
#   4 current      current_c32                       1/32 C steps, +-4 C
#   5 i_fast       i_fast in 1/64 C                  +-2 C
#   6 i_slow       i_slow in 1/128 C                 +-1 C
#   7 temperature  (temp_dC - 250) >> 2              0.4 K steps, -26..76 degC
# The model is tied to one cell type: capacity_mAh is its nominal capacity (the model card's `capacity_mAh`).

from array import array

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


N_FEATURES = const(8)
INPUT_SHIFT = const(5)
INPUT_SCALE = 1.0 / (1 << INPUT_SHIFT)  # model input = code * INPUT_SCALE, in [-4, 4)
FRAC_BITS = const(8)
FAST_SHIFT = const(5)
SLOW_SHIFT = const(9)
CURRENT_CLAMP_C32 = const(1024)  # 32 C: keeps every state inside +-2**30 (1024 << 8 << 5 is 2**23)
V_CENTRE_MV = const(3600)
T_CENTRE_DC = const(250)
ABSENT = const(-0x40000000)  # soxcommon.frame.ABSENT
NAMES = ("voltage", "v_fast", "v_slow", "v_dyn", "current", "i_fast", "i_slow", "temperature")


def _clamp8(x):
    return -128 if x < -128 else (127 if x > 127 else x)


class SocFeatures:
    def __init__(self, n_cells, capacity_mAh):
        self.n_cells = n_cells
        self.capacity_mAh = capacity_mAh
        self.voltage_mV = array("i", [0] * n_cells)  # last delivered
        self.temp_dC = array("i", [0] * n_cells)
        self.v_fast = array("i", [0] * n_cells)  # mV << FRAC_BITS
        self.v_slow = array("i", [0] * n_cells)
        self.seen = array("b", [0] * n_cells)  # bit 0: a voltage delivered, bit 1: a temperature
        self.current_c32 = 0
        self.i_fast = 0  # 1/32 C << FRAC_BITS
        self.i_slow = 0
        self.current_seen = False

    def ready(self, c):
        return self.current_seen and self.seen[c] == 3

    def update(self, current_mA, cells, stride):
        """One sample: cells[c * stride] is cell c's voltage_mV, cells[c * stride + 1] its temp_dC (engine.sample)."""
        if current_mA != ABSENT:
            i = (current_mA << 5) // self.capacity_mAh
            i = -CURRENT_CLAMP_C32 if i < -CURRENT_CLAMP_C32 else (CURRENT_CLAMP_C32 if i > CURRENT_CLAMP_C32 else i)
            self.current_c32 = i
            i <<= FRAC_BITS
            if self.current_seen:
                self.i_fast += (i - self.i_fast) >> FAST_SHIFT
                self.i_slow += (i - self.i_slow) >> SLOW_SHIFT
            else:  # the filters start at the first value, not at 0
                self.i_fast = self.i_slow = i
                self.current_seen = True
        for c in range(self.n_cells):
            v = cells[c * stride]
            if v != ABSENT:
                self.voltage_mV[c] = v
                v <<= FRAC_BITS
                if self.seen[c] & 1:
                    self.v_fast[c] += (v - self.v_fast[c]) >> FAST_SHIFT
                    self.v_slow[c] += (v - self.v_slow[c]) >> SLOW_SHIFT
                else:
                    self.v_fast[c] = self.v_slow[c] = v
                    self.seen[c] |= 1
            t = cells[c * stride + 1]
            if t != ABSENT:
                self.temp_dC[c] = t
                self.seen[c] |= 2

    def codes(self, c, out):
        """Cell c's N_FEATURES int8 codes into out (an array('b') or list)."""
        v = self.voltage_mV[c]
        v_fast = self.v_fast[c]
        out[0] = _clamp8((v - V_CENTRE_MV) >> 3)
        out[1] = _clamp8((v_fast - (V_CENTRE_MV << FRAC_BITS)) >> (FRAC_BITS + 3))
        out[2] = _clamp8((self.v_slow[c] - (V_CENTRE_MV << FRAC_BITS)) >> (FRAC_BITS + 3))
        out[3] = _clamp8(((v << FRAC_BITS) - v_fast) >> (FRAC_BITS + 1))
        out[4] = _clamp8(self.current_c32)
        out[5] = _clamp8(self.i_fast >> (FRAC_BITS - 1))
        out[6] = _clamp8(self.i_slow >> (FRAC_BITS - 2))
        out[7] = _clamp8((self.temp_dC[c] - T_CENTRE_DC) >> 2)
