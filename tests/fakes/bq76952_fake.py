# A fake machine.I2C bus with a BQ76952 on it: a register model of the direct-command space
# (0x00..0x7F, little-endian 16-bit values), read with readfrom_mem_into as on a board, where the
# command address increments after every byte of a block read. MicroPython subset; a read
# allocates nothing (unless `log` is set).

import errno

ADDR = 0x08
CELL1_VOLTAGE = 0x14
CC2_CURRENT = 0x3A
TEMP = {"INT": 0x68, "CFETOFF": 0x6A, "DFETOFF": 0x6C, "ALERT": 0x6E, "TS1": 0x70, "TS2": 0x72,
        "TS3": 0x74, "HDQ": 0x76, "DCHG": 0x78, "DDSG": 0x7A}


class FakeBq76952Bus:
    def __init__(self, addr=ADDR):
        self.addr = addr
        self.regs = bytearray(128)
        self.transactions = 0
        self.bytes_read = 0
        self.log = None  # a list to record (command, length) per read
        self.present = True

    def set16(self, cmd, value):
        value &= 0xFFFF
        self.regs[cmd] = value & 0xFF
        self.regs[cmd + 1] = value >> 8

    def set_cell_mV(self, cell, mv):
        """cell: BQ76952 cell input 1..16."""
        self.set16(CELL1_VOLTAGE + 2 * (cell - 1), mv)

    def set_current_userA(self, value):
        self.set16(CC2_CURRENT, value)

    def set_temp_dK(self, source, dk):
        self.set16(TEMP[source], dk)

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        if addr != self.addr or not self.present:
            raise OSError(errno.ENODEV)  # what a NACKed address gives on the ESP32 port
        regs = self.regs
        for i in range(len(buf)):
            buf[i] = regs[(memaddr + i) & 0x7F]
        self.transactions += 1
        self.bytes_read += len(buf)
        if self.log is not None:
            self.log.append((memaddr, len(buf)))
