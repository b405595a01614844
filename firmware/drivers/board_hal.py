# Board HAL: the real cell module.
#
#   cell voltages, thermistors, pack current   TI BQ76952 battery monitor, I2C (7-bit address 0x08)
#   pressure, ultrasonic ToF and amplitude,    sensor front-end MCU on a UART, framed protocol
#   FBG Bragg wavelength                       (soxcommon.frame) through drivers.frame_link
#
# Both devices are passed in (machine.I2C, machine.UART: see main.make_hal), so tests drive the HAL
# with fakes. read() allocates nothing: two I2C block reads into preallocated bytearrays, one
# front-end request/reply in the link's frame buffer, integer arithmetic only.
#
# BQ76952 facts used (direct commands: write the command byte, repeated start, read the data;
# little-endian; "I2" = signed 16-bit). Sources and how far each was checked:
#   - Cell 1 Voltage 0x14, mV, I2: TI SLUAA11B "BQ769x2 Software Development Guide" sec. 1.2.
#     Cell 2..16 Voltage 0x16..0x32 (step 2), Stack 0x34, PACK 0x36, LD 0x38 and the
#     CFETOFF/DFETOFF/ALERT/HDQ/DCHG/DDSG temperature commands 0x6A/0x6C/0x6E/0x76/0x78/0x7A:
#     from TI's BQ769x2 example-code command table (same addresses as the BQ76952 TRM SLUUBY2,
#     "Direct Commands" chapter, whose table itself could not be consulted here); the
#     pin-temperature units (0.1 K, as TS1..TS3) are NOT verified.
#   - CC2 Current 0x3A, userA, I2: SLUAA11B sec. 1.4. userA is set by Settings:Configuration:
#     DA Configuration [USER_AMPS_1:0]: 0 = 0.1 mA, 1 = 1 mA, 2 = 10 mA, 3 = 100 mA (table in the
#     sibling BQ76922 TRM SLUUCG7, "Current Measurement"); the default DA Configuration 0x05 gives
#     1 mA (BQ76942 TRM SLUUBY1B), matching the mA readings in SLUAA11B's examples.
#   - Int Temperature 0x68, 0.1 K, I2: SLUAA11B sec. 1.3. TS1/TS2/TS3 Temperature 0x70/0x72/0x74,
#     0.1 K, I2 (a pin configured as ADCIN reports mV instead): TI SLAAEB3 (MSPM0 + BQ769x2
#     example), table 4-5. 0.1 degC = 0.1 K - 2731.5, taken as - 2732 (integer, 0.05 K bias).
#   - Block reads: the I2C engine increments the command address after each byte, so one read of
#     32 bytes from 0x14 returns all 16 cell voltages (TI E2E forum, thread 1560065, TI answer).
#     We read 0x14..0x3B (cells, stack, PACK, LD, CC2 current) in one 40-byte transaction, and the
#     used temperature commands as one span in a second one.
#   - Current sign: the sense resistor is wired so a charging current makes SRP positive against
#     SRN and is reported positive, discharge negative (BQ769x2 family: BQ76922 TRM SLUUCG7
#     "Current Measurement"; not re-checked in the BQ76952 TRM). That is this project's convention
#     (current > 0 charges the pack), so the value is used as is.
#   - The BQ76952's optional I2C CRC mode is not supported (default device: no CRC).
#
# Thermistors: a module has fewer thermistors than cells. `thermistors` lists temperature sources
# (names of TEMP_COMMANDS) as a comma-separated string or a sequence; the cells are split into
# that many contiguous, near-equal groups in order, so "TS1,TS3" on 16 cells gives cells 1-8 TS1
# and 9-16 TS3, and a list of n_cells names maps every cell on its own.
# Cell inputs: `vc_inputs` lists the BQ76952 cell numbers (1..16) holding the module's cells in
# order (VCell Mode may leave inputs unused, e.g. 1-9 and 16 for 10 cells); empty/None: 1..n_cells.

from time import ticks_ms

from micropython import const

from drivers import frame_link
from soxcommon import frame

LinkError = frame_link.LinkError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from machine import I2C, UART

BQ76952_ADDR = const(0x08)  # 7-bit (0x10 write / 0x11 read as 8-bit), BQ76952 data sheet SLUSE13
CMD_CELL1_VOLTAGE = const(0x14)
CMD_CC2_CURRENT = const(0x3A)
MAX_BQ_CELLS = const(16)
KELVIN_DK = const(2732)  # 273.2 K in 0.1 K
_BLOCK_BYTES = const(CMD_CC2_CURRENT + 2 - CMD_CELL1_VOLTAGE)  # 0x14..0x3B: 40 bytes
_CURRENT_OFF = const(CMD_CC2_CURRENT - CMD_CELL1_VOLTAGE)

TEMP_COMMANDS = {
    "INT": 0x68,
    "CFETOFF": 0x6A,
    "DFETOFF": 0x6C,
    "ALERT": 0x6E,
    "TS1": 0x70,
    "TS2": 0x72,
    "TS3": 0x74,
    "HDQ": 0x76,
    "DCHG": 0x78,
    "DDSG": 0x7A,
}
USER_AMPS_UA = (100, 1000, 10000, 100000)  # userA in uA for DA Configuration [USER_AMPS] 0..3

# Front-end sample columns this HAL takes (the BQ76952 is the authority for voltage, temperature
# and current): field k of frame.CELL_FIELDS, wire.CELL_QUANTITIES order.
_FIRST_FRONTEND_FIELD = const(2)  # pressure_Pa, tof_ns, amplitude_bp, fbg_pm


def _names(spec):
    if isinstance(spec, str):
        spec = spec.split(",")
    return [str(s).strip() for s in spec]


def _i16(buf, off):
    v = buf[off] | (buf[off + 1] << 8)
    if v & 0x8000:
        v -= 0x10000
    return v


class BoardHal:
    def __init__(self, i2c: "I2C", uart: "UART", n_cells, thermistors="TS1,TS3", vc_inputs=None,
                 bq_addr=BQ76952_ADDR, current_unit_uA=1000, timeout_ms=200, retries=5, poller=None):
        if not 0 < n_cells <= MAX_BQ_CELLS:
            raise ValueError("the BQ76952 monitors 1..16 cells, not %d" % n_cells)
        self.n_cells = n_cells
        self._i2c = i2c
        self._uart = uart
        self._addr = bq_addr

        # Cell c's voltage at _v_off[c] in the 0x14.. block.
        inputs = list(range(1, n_cells + 1)) if not vc_inputs else [int(x) for x in _names(vc_inputs)]
        if len(inputs) != n_cells or len(set(inputs)) != n_cells or min(inputs) < 1 or max(inputs) > MAX_BQ_CELLS:
            raise ValueError("vc_inputs: %d distinct BQ76952 cell inputs 1..16 wanted, got %r" % (n_cells, inputs))
        self._v_off = bytearray(2 * (i - 1) for i in inputs)
        self._vbuf = bytearray(_BLOCK_BYTES)

        # Cell c's temperature at _t_off[c] in the block read from _t_cmd.
        names = _names(thermistors)
        if not 0 < len(names) <= n_cells:
            raise ValueError("thermistors: 1..%d sources wanted, got %r" % (n_cells, names))
        cmds = []
        for name in names:
            cmd = TEMP_COMMANDS.get(name.upper())
            if cmd is None:
                raise ValueError("thermistors: unknown source %r, known: %s" % (name, ", ".join(TEMP_COMMANDS)))
            cmds.append(cmd)
        self._t_cmd = min(cmds)
        self._tbuf = bytearray(max(cmds) + 2 - self._t_cmd)
        k = len(cmds)
        self._t_off = bytearray(cmds[c * k // n_cells] - self._t_cmd for c in range(n_cells))
        self.thermistor_of_cell = tuple(names[c * k // n_cells].upper() for c in range(n_cells))

        # userA -> mA as n * mul / div, rounded half away from zero.
        if current_unit_uA not in USER_AMPS_UA:
            raise ValueError("current_unit_uA: one of %r wanted (DA Configuration USER_AMPS)" % (USER_AMPS_UA,))
        if current_unit_uA >= 1000:
            self._cur_mul, self._cur_div = current_unit_uA // 1000, 1
        else:
            self._cur_mul, self._cur_div = current_unit_uA, 1000

        if poller is None:
            poller = frame_link.poll_in(uart)
        self.link = frame_link.FrameLink(uart, poller, frame.sample_payload_bytes(n_cells), timeout_ms, retries)

    def read(self, sample):
        """Fill `sample`; raises OSError (I2C) or LinkError (front-end). On an error the sample is
        left unchanged."""
        t_ms = ticks_ms()
        self._i2c.readfrom_mem_into(self._addr, CMD_CELL1_VOLTAGE, self._vbuf)
        self._i2c.readfrom_mem_into(self._addr, self._t_cmd, self._tbuf)
        link = self.link
        link.request(frame.T_SAMPLE_REQ, frame.T_SAMPLE)
        fb = link.rx.buf
        off = frame.HEADER_BYTES
        if fb[off + 4] != self.n_cells:
            raise LinkError("front-end reports %d cells, config says %d" % (fb[off + 4], self.n_cells))

        vbuf = self._vbuf
        tbuf = self._tbuf
        v_off = self._v_off
        t_off = self._t_off
        values = sample.cells
        off += frame.SAMPLE_HEAD_BYTES + 4 * _FIRST_FRONTEND_FIELD
        base = 0
        for c in range(self.n_cells):
            values[base] = _i16(vbuf, v_off[c])
            values[base + 1] = _i16(tbuf, t_off[c]) - KELVIN_DK
            for k in range(_FIRST_FRONTEND_FIELD, frame.CELL_FIELDS):
                values[base + k] = frame.get_i32(fb, off)
                off += 4
            off += 4 * _FIRST_FRONTEND_FIELD
            base += frame.CELL_FIELDS

        n = _i16(vbuf, _CURRENT_OFF) * self._cur_mul
        div = self._cur_div
        if div != 1:
            half = div >> 1
            n = (n + half) // div if n >= 0 else -((half - n) // div)
        sample.current_mA = n
        sample.t_ms = t_ms

    def close(self):
        deinit = getattr(self._uart, "deinit", None)
        if deinit is not None:
            deinit()
