# Sample streams: the board estimator driven straight from recorded samples (no broker, no rig), and its output.
# MicroPython and CPython subset; little-endian throughout.
#
#   input  (SXS1): b"SXS1", n_cells u8, 3 zero bytes; per record
#                  t_ms u32, current_mA i32, n_cells x voltage_mV i32, n_cells x temp_dC i32 (ABSENT = -2**30)
#          (SXS2): b"SXS2", n_cells u8, channels u8 (bit k: EXTRA_CHANNELS[k] is carried, at least one), 2 zero
#                  bytes; per record as SXS1, then per carried channel in bit order n_cells x i32 (ABSENT as above)
#                  A writer without extra channels writes SXS1, so files of the voltage-only estimators stay as they
#                  were; a reader takes both and refuses other versions by name.
#   output (SXE1): b"SXE1", n_cells u8, 3 zero bytes; per input record
#                  t_ms u32, then per cell soc f32, soc_sigma f32, bias_A f32
# Readers and writers keep one record buffer; reading an input record allocates nothing.

import struct
from array import array

from soxcommon.frame import ABSENT, get_i32, get_u32, put_i32, put_u32

IN_MAGIC = b"SXS1"
IN_MAGIC_CHANNELS = b"SXS2"
OUT_MAGIC = b"SXE1"
HEADER_BYTES = 8
# The per-cell readings beyond voltage and temperature (wire units, hil/sensors/models.py): contact/gas pressure,
# ultrasonic time of flight, the strain grating's and the strain-free reference grating's Bragg wavelengths.
EXTRA_CHANNELS = ("pressure_Pa", "tof_ns", "fbg_pm", "fbg_ref_pm")
ALL_CHANNELS = (1 << len(EXTRA_CHANNELS)) - 1


def n_channels(channels):
    """How many extra channels a channel mask carries."""
    count = 0
    for k in range(len(EXTRA_CHANNELS)):
        count += (channels >> k) & 1
    return count


def in_record_bytes(n_cells, channels=0):
    return 8 + 8 * n_cells + 4 * n_cells * n_channels(channels)


def out_record_bytes(n_cells):
    return 4 + 12 * n_cells


def _header(magic, n_cells, channels=0):
    if not 0 < n_cells < 256:
        raise ValueError("n_cells must be 1..255")
    return magic + bytes((n_cells, channels, 0, 0))


def _read_header(f, magic):
    head = f.read(HEADER_BYTES)
    if len(head) != HEADER_BYTES or head[:4] != magic or head[5:] != b"\x00\x00\x00" or head[4] == 0:
        raise ValueError("not a %s stream" % magic.decode())
    return head[4]


def _read_in_header(f):
    """(n_cells, channel mask) of an input stream, SXS1 or SXS2."""
    head = f.read(HEADER_BYTES)
    ok = len(head) == HEADER_BYTES and head[4] != 0 and head[6:] == b"\x00\x00"
    if ok and head[:4] == IN_MAGIC and head[5] == 0:
        return head[4], 0
    if ok and head[:4] == IN_MAGIC_CHANNELS and 0 < head[5] <= ALL_CHANNELS:
        return head[4], head[5]
    if len(head) == HEADER_BYTES and head[:3] == b"SXS":
        raise ValueError("sample stream version %s not supported (this reader: SXS1, SXS2)" % head[:4].decode())
    raise ValueError("not a SXS1 or SXS2 stream")


class SampleWriter:
    """channels: mask of the EXTRA_CHANNELS to carry (0: an SXS1 file); write()'s extra then holds per channel
    n_cells readings at [k * n_cells + cell] for every k in EXTRA_CHANNELS (those not carried are ignored)."""

    def __init__(self, f, n_cells, channels=0):
        if not 0 <= channels <= ALL_CHANNELS:
            raise ValueError("channels must be a mask of %d bits" % len(EXTRA_CHANNELS))
        self.f = f
        self.n_cells = n_cells
        self.channels = channels
        self.buf = bytearray(in_record_bytes(n_cells, channels))
        f.write(_header(IN_MAGIC_CHANNELS if channels else IN_MAGIC, n_cells, channels))

    def write(self, t_ms, current_mA, volts_mV, temps_dC, extra=None):
        buf = self.buf
        n = self.n_cells
        put_u32(buf, 0, t_ms)
        put_i32(buf, 4, current_mA)
        for c in range(n):
            put_i32(buf, 8 + 4 * c, volts_mV[c])
            put_i32(buf, 8 + 4 * (n + c), temps_dC[c])
        off = 8 + 8 * n
        for k in range(len(EXTRA_CHANNELS)):
            if (self.channels >> k) & 1:
                for c in range(n):
                    put_i32(buf, off, extra[k * n + c])
                    off += 4
        self.f.write(buf)


class SampleReader:
    """read() fills t_ms, current_mA, volts_mV, temps_dC and extra (int arrays) with the next record; False at the
    end (a truncated last record counts as the end). extra: [k * n_cells + cell] for EXTRA_CHANNELS[k], ABSENT
    throughout for a channel the file does not carry (channels: the file's mask)."""

    def __init__(self, f):
        self.f = f
        n, self.channels = _read_in_header(f)
        self.n_cells = n
        self.buf = bytearray(in_record_bytes(n, self.channels))
        self.t_ms = 0
        self.current_mA = 0
        self.volts_mV = array("i", [0] * n)
        self.temps_dC = array("i", [0] * n)
        self.extra = array("i", [ABSENT] * (len(EXTRA_CHANNELS) * n))

    def read(self):
        buf = self.buf
        if self.f.readinto(buf) != len(buf):
            return False
        n = self.n_cells
        self.t_ms = get_u32(buf, 0)
        self.current_mA = get_i32(buf, 4)
        for c in range(n):
            self.volts_mV[c] = get_i32(buf, 8 + 4 * c)
            self.temps_dC[c] = get_i32(buf, 8 + 4 * (n + c))
        if self.channels:
            extra = self.extra
            off = 8 + 8 * n
            for k in range(len(EXTRA_CHANNELS)):
                if (self.channels >> k) & 1:
                    for c in range(n):
                        extra[k * n + c] = get_i32(buf, off)
                        off += 4
        return True


class EstimateWriter:
    def __init__(self, f, n_cells):
        self.f = f
        self.n_cells = n_cells
        self.buf = bytearray(out_record_bytes(n_cells))
        f.write(_header(OUT_MAGIC, n_cells))

    def write(self, t_ms, ekf):
        """One output record from an estimator with soc(cell), sigma(cell) and bias_A(cell)."""
        buf = self.buf
        put_u32(buf, 0, t_ms)
        for c in range(self.n_cells):
            struct.pack_into("<fff", buf, 4 + 12 * c, ekf.soc(c), ekf.sigma(c), ekf.bias_A(c))
        self.f.write(buf)


class EstimateReader:
    """read() returns (t_ms, [(soc, soc_sigma, bias_A) per cell]) or None at the end."""

    def __init__(self, f):
        self.f = f
        self.n_cells = _read_header(f, OUT_MAGIC)
        self.buf = bytearray(out_record_bytes(self.n_cells))

    def read(self):
        buf = self.buf
        if self.f.readinto(buf) != len(buf):
            return None
        return get_u32(buf, 0), [struct.unpack_from("<fff", buf, 4 + 12 * c) for c in range(self.n_cells)]
