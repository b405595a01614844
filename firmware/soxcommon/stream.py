# Sample streams: the board estimator driven straight from recorded samples (no broker, no rig), and its output.
# MicroPython and CPython subset; little-endian throughout.
#
#   input  (SXS1): b"SXS1", n_cells u8, 3 zero bytes; per record
#                  t_ms u32, current_mA i32, n_cells x voltage_mV i32, n_cells x temp_dC i32 (ABSENT = -2**30)
#   output (SXE1): b"SXE1", n_cells u8, 3 zero bytes; per input record
#                  t_ms u32, then per cell soc f32, soc_sigma f32, bias_A f32
# Readers and writers keep one record buffer; reading an input record allocates nothing.

import struct
from array import array

from soxcommon.frame import get_i32, get_u32, put_i32, put_u32

IN_MAGIC = b"SXS1"
OUT_MAGIC = b"SXE1"
HEADER_BYTES = 8


def in_record_bytes(n_cells):
    return 8 + 8 * n_cells


def out_record_bytes(n_cells):
    return 4 + 12 * n_cells


def _header(magic, n_cells):
    if not 0 < n_cells < 256:
        raise ValueError("n_cells must be 1..255")
    return magic + bytes((n_cells, 0, 0, 0))


def _read_header(f, magic):
    head = f.read(HEADER_BYTES)
    if len(head) != HEADER_BYTES or head[:4] != magic or head[5:] != b"\x00\x00\x00" or head[4] == 0:
        raise ValueError("not a %s stream" % magic.decode())
    return head[4]


class SampleWriter:
    def __init__(self, f, n_cells):
        self.f = f
        self.n_cells = n_cells
        self.buf = bytearray(in_record_bytes(n_cells))
        f.write(_header(IN_MAGIC, n_cells))

    def write(self, t_ms, current_mA, volts_mV, temps_dC):
        buf = self.buf
        n = self.n_cells
        put_u32(buf, 0, t_ms)
        put_i32(buf, 4, current_mA)
        for c in range(n):
            put_i32(buf, 8 + 4 * c, volts_mV[c])
            put_i32(buf, 8 + 4 * (n + c), temps_dC[c])
        self.f.write(buf)


class SampleReader:
    """read() fills t_ms, current_mA, volts_mV and temps_dC (int arrays) with the next record; False at the end
    (a truncated last record counts as the end)."""

    def __init__(self, f):
        self.f = f
        self.n_cells = n = _read_header(f, IN_MAGIC)
        self.buf = bytearray(in_record_bytes(n))
        self.t_ms = 0
        self.current_mA = 0
        self.volts_mV = array("i", [0] * n)
        self.temps_dC = array("i", [0] * n)

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
