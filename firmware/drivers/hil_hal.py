# HIL HAL: the cell module's sensors behind the framed serial protocol (soxcommon.frame), over a
# UART on a board or a raw-mode pty on the unix port. One request, one reply; on a timeout or a
# NACK the same request (same sequence number) is repeated and the rig answers from its cache,
# so simulated time advances exactly once per sample.

import select

from engine.ticks import ticks_diff, ticks_ms
from soxcommon import frame


class LinkError(OSError):
    pass


class HilHal:
    def __init__(self, port_path, n_cells, timeout_ms=500, retries=5):
        self.n_cells = n_cells
        self.timeout_ms = timeout_ms
        self.retries = retries
        self._port = open(port_path, "r+b")
        self._poll = select.poll()
        self._poll.register(self._port, select.POLLIN)
        self._rx = frame.Codec(frame.sample_payload_bytes(n_cells))
        self._tx = frame.Codec(0)
        self._byte = bytearray(1)
        self._seq = 0
        self.timeouts = 0
        self.nacks = 0

    @property
    def crc_errors(self):
        return self._rx.crc_errors

    def read(self, sample):
        """Fill `sample` with the next sample; raises LinkError when the rig stays silent."""
        self._seq = (self._seq + 1) & 0xFFFF
        self._tx.encode(frame.T_SAMPLE_REQ, self._seq, 0)  # empty payload: fills the buffer exactly
        for _ in range(self.retries):
            self._port.write(self._tx.buf)  # unbuffered: no flush (fsync on a tty is EINVAL)
            if self._await_reply():
                self._decode(sample)
                return
        raise LinkError("no valid sample reply from the rig after %d tries" % self.retries)

    def _await_reply(self):
        rx = self._rx
        start = ticks_ms()
        while True:
            left = self.timeout_ms - ticks_diff(ticks_ms(), start)
            if left <= 0:
                self.timeouts += 1
                return False
            for _ in self._poll.ipoll(left):
                # One byte per read: a stream read of more could block for bytes never sent.
                if self._port.readinto(self._byte) != 1:
                    raise LinkError("serial port closed")
                if rx.feed(self._byte[0]):
                    if rx.type == frame.T_NACK:
                        self.nacks += 1
                        return False
                    if rx.type == frame.T_SAMPLE and rx.seq == self._seq:
                        return True

    def _decode(self, sample):
        buf = self._rx.buf
        off = frame.HEADER_BYTES
        sample.t_ms = frame.get_u32(buf, off)
        cells = buf[off + 4]
        if cells != self.n_cells:
            raise LinkError("rig reports %d cells, config says %d" % (cells, self.n_cells))
        sample.current_mA = frame.get_i32(buf, off + 6)
        off += frame.SAMPLE_HEAD_BYTES
        values = sample.cells
        for k in range(len(values)):
            values[k] = frame.get_i32(buf, off)
            off += 4

    def close(self):
        self._port.close()
