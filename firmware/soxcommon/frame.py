# Framed serial protocol between the board and a sensor front-end (the HIL rig, or a real one).
# MicroPython and CPython subset; the parser and the codec allocate nothing per frame.
#
#   offset  size  field
#   0       2     sync 0xA5 0x5A
#   2       2     payload length L, little-endian
#   4       1     type
#   5       2     sequence number, little-endian (a re-request repeats it)
#   7       L     payload (little-endian integers)
#   7+L     4     CRC-32 (IEEE, binascii.crc32) of bytes 2 .. 7+L, little-endian
#
# A frame is valid when CRC-32 over bytes 2 .. end (CRC included) gives the CRC-32 residue
# 0x2144DF1C, which fits a small integer even on a 32-bit board.

import binascii

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


SYNC0 = const(0xA5)
SYNC1 = const(0x5A)
HEADER_BYTES = const(7)
OVERHEAD_BYTES = const(11)
CRC_RESIDUE = const(0x2144DF1C)

# Frame types: requests from the board, replies (bit 7 set) from the front-end.
T_SAMPLE_REQ = const(0x01)
T_SAMPLE = const(0x81)
T_NACK = const(0x7F)  # front-end got a corrupt frame: the board repeats its request
T_COMMAND = const(0x02)  # the board sets an output of the front-end (below)
T_COMMAND_ACK = const(0x82)

# Command payload: command u8, then three i32 arguments (unused ones 0). Fixed size, so the board's
# request buffer is allocated once. The ack's payload: command u8, status u8. A repeated request
# (same sequence number) gets the cached ack and is not applied twice.
COMMAND_PAYLOAD_BYTES = const(13)
ACK_PAYLOAD_BYTES = const(2)
C_CONTACTOR = const(1)  # a0: CONTACTOR_OPEN / _PRECHARGE / _CLOSED
C_BALANCE = const(2)  # a0: bit mask of the cells whose bleed resistor is switched on (bit 0 = cell 0)
C_CHARGER = const(3)  # a0: pack voltage limit mV, a1: charge current limit mA, a2: discharge current limit mA
C_ACTUATOR = const(4)  # a0: cell index, a1: dose duration ms (the self-healing additive port)
CONTACTOR_OPEN = const(0)
CONTACTOR_PRECHARGE = const(1)
CONTACTOR_CLOSED = const(2)
S_OK = const(0)
S_REFUSED = const(1)  # valid, but not in the present state (e.g. the actuator is still dosing)
S_BAD_ARGS = const(2)
S_UNSUPPORTED = const(3)  # this front-end has no such output

# Sample flags: what the front-end's outputs really are (auxiliary contacts, charger status).
F_CONTACTOR_MASK = const(0x03)  # the contactor state as CONTACTOR_* from its auxiliary contact
F_CV = const(0x04)  # the charger holds the pack voltage limit
F_CURRENT_LIMITED = const(0x08)  # the load or charger is held at a current limit
F_DOSING = const(0x10)  # the actuator port is dosing

# Sample reply payload: t_ms u32, cells u8, flags u8, current_mA i32, then per cell
# CELL_FIELDS i32 in wire.CELL_QUANTITIES order. ABSENT marks a reading the sensor did not deliver:
# -2**30, below every wire range and still a small integer on a 32-bit board.
ABSENT = const(-0x40000000)
SAMPLE_HEAD_BYTES = const(10)
CELL_FIELDS = const(6)


def sample_payload_bytes(cells):
    return SAMPLE_HEAD_BYTES + 4 * CELL_FIELDS * cells


def get_u16(buf, off):
    return buf[off] | (buf[off + 1] << 8)


def get_u32(buf, off):
    return buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16) | (buf[off + 3] << 24)


def get_i32(buf, off):
    # Sign from the top byte first, so a value inside +-2**30 never builds a larger
    # intermediate (a heap object on a 32-bit board).
    top = buf[off + 3]
    if top & 0x80:
        top -= 256
    return (top << 24) | (buf[off + 2] << 16) | (buf[off + 1] << 8) | buf[off]


def put_u16(buf, off, value):
    buf[off] = value & 0xFF
    buf[off + 1] = (value >> 8) & 0xFF


def put_u32(buf, off, value):
    buf[off] = value & 0xFF
    buf[off + 1] = (value >> 8) & 0xFF
    buf[off + 2] = (value >> 16) & 0xFF
    buf[off + 3] = (value >> 24) & 0xFF


put_i32 = put_u32  # two's complement: the low 32 bits are the same


class Codec:
    """One frame buffer with a byte-at-a-time parser and an in-place encoder."""

    def __init__(self, max_payload):
        self.max_payload = max_payload
        self.buf = bytearray(OVERHEAD_BYTES + max_payload)
        self._views = {}  # frame length -> memoryview of bytes 2..end, made once per length
        self._n = 0
        self._total = 0
        self.type = 0
        self.seq = 0
        self.length = 0
        self.crc_errors = 0
        self.length_errors = 0

    def _crc_view(self, total):
        view = self._views.get(total)
        if view is None:
            view = memoryview(self.buf)[2:total]
            self._views[total] = view
        return view

    def feed(self, byte):
        """Take one received byte; True when it completes a valid frame (then read type, seq,
        length and the payload at HEADER_BYTES)."""
        buf = self.buf
        n = self._n
        if n == 0:
            if byte == SYNC0:
                buf[0] = byte
                self._n = 1
            return False
        if n == 1:
            if byte == SYNC1:
                buf[1] = byte
                self._n = 2
            elif byte != SYNC0:
                self._n = 0
            return False
        buf[n] = byte
        n += 1
        self._n = n
        if n == 4:
            length = get_u16(buf, 2)
            if length > self.max_payload:
                self.length_errors += 1
                self._n = 0
                return False
            self._total = OVERHEAD_BYTES + length
            return False
        if n < 5 or n != self._total:
            return False
        self._n = 0
        if binascii.crc32(self._crc_view(n)) != CRC_RESIDUE:
            self.crc_errors += 1
            return False
        self.type = buf[4]
        self.seq = get_u16(buf, 5)
        self.length = n - OVERHEAD_BYTES
        return True

    def encode(self, ftype, seq, length):
        """Finish a frame whose payload is already at HEADER_BYTES; returns its total length."""
        buf = self.buf
        buf[0] = SYNC0
        buf[1] = SYNC1
        put_u16(buf, 2, length)
        buf[4] = ftype
        put_u16(buf, 5, seq & 0xFFFF)
        end = HEADER_BYTES + length
        put_u32(buf, end, binascii.crc32(self._crc_view(end)))
        return end + 4


def encode_sample(codec, seq, t_ms, current_mA, rows, flags=0):
    """A sample reply into `codec` (sized by sample_payload_bytes(len(rows))): sample time, pack
    current and per cell CELL_FIELDS values (None: absent, for the current too), and the F_* flags.
    Returns the frame length (the frame is codec.buf)."""
    buf = codec.buf
    off = HEADER_BYTES
    put_u32(buf, off, t_ms)
    buf[off + 4] = len(rows)
    buf[off + 5] = flags
    put_i32(buf, off + 6, ABSENT if current_mA is None else current_mA)
    off += SAMPLE_HEAD_BYTES
    for row in rows:  # no allocation: a test fake runs this under MicroPython with the heap locked
        for k in range(CELL_FIELDS):
            value = row[k]
            if value is None:
                value = ABSENT
            buf[off] = value & 0xFF
            buf[off + 1] = (value >> 8) & 0xFF
            buf[off + 2] = (value >> 16) & 0xFF
            buf[off + 3] = (value >> 24) & 0xFF
            off += 4
    return codec.encode(T_SAMPLE, seq, off - HEADER_BYTES)


def encode_command(codec, seq, command, a0=0, a1=0, a2=0):
    """A T_COMMAND request into `codec` (max_payload >= COMMAND_PAYLOAD_BYTES); returns its length."""
    buf = codec.buf
    buf[HEADER_BYTES] = command
    put_i32(buf, HEADER_BYTES + 1, a0)
    put_i32(buf, HEADER_BYTES + 5, a1)
    put_i32(buf, HEADER_BYTES + 9, a2)
    return codec.encode(T_COMMAND, seq, COMMAND_PAYLOAD_BYTES)
