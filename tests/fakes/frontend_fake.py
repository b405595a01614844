# A fake sensor front-end MCU on a UART: a stream (write/readinto) that parses the board's request
# frames with soxcommon.frame.Codec and answers a T_SAMPLE_REQ with a T_SAMPLE frame, plus a poller
# (ipoll) standing in for select.poll. MicroPython subset; answering allocates nothing.
#
# Faults, for the retry paths: `corrupt` replies get one byte flipped (the board sees a CRC error,
# times out and repeats), `nacks` requests are answered with T_NACK, `silent` answers nothing.
# A repeated request (same sequence number) is answered with the same values, as the rig does.

import time

from soxcommon import frame


class FakeFrontEnd:
    def __init__(self, n_cells, t_ms=0):
        self.n_cells = n_cells
        self.reported_cells = n_cells
        self.t_ms = t_ms
        self.current_mA = -777777  # the board must ignore these columns
        self.values = [[-1, -2, 0, 0, 0, 0] for _ in range(n_cells)]
        self._rx = frame.Codec(16)
        self._tx = frame.Codec(frame.sample_payload_bytes(n_cells))
        self._pos = 0
        self._end = 0
        self.requests = 0
        self.repeats = 0
        self.replies = 0
        self.corrupt = 0
        self.nacks = 0
        self.silent = False
        self._last_seq = -1
        self.closed = False

    def set_cell(self, c, pressure_Pa, tof_ns, amplitude_bp, fbg_pm):
        v = self.values[c]
        v[2] = pressure_Pa
        v[3] = tof_ns
        v[4] = amplitude_bp
        v[5] = fbg_pm

    # --- the stream the board HAL writes to and reads from --------------------------------------

    def write(self, buf):
        rx = self._rx
        for b in buf:
            if rx.feed(b) and rx.type == frame.T_SAMPLE_REQ:
                self._answer(rx.seq)
        return len(buf)

    def readinto(self, buf):
        n = 0
        while n < len(buf) and self._pos < self._end:
            buf[n] = self._tx.buf[self._pos]
            self._pos += 1
            n += 1
        return n

    def pending(self):
        return self._end - self._pos

    def deinit(self):
        self.closed = True

    def _answer(self, seq):
        self.requests += 1
        if seq == self._last_seq:
            self.repeats += 1
        self._last_seq = seq
        if self.silent:
            return
        tx = self._tx
        if self.nacks > 0:
            self.nacks -= 1
            self._end = tx.encode(frame.T_NACK, 0, 0)
            self._pos = 0
            return
        self._end = frame.encode_sample(tx, seq, self.t_ms, self.current_mA, self.values)
        if self.reported_cells != self.n_cells:  # a front-end that lies about its cell count
            tx.buf[frame.HEADER_BYTES + 4] = self.reported_cells
            tx.encode(frame.T_SAMPLE, seq, self._end - frame.OVERHEAD_BYTES)
        self._pos = 0
        if self.corrupt > 0:
            self.corrupt -= 1
            tx.buf[frame.HEADER_BYTES + 1] ^= 0x55
        self.replies += 1


_READY = ((None, 1),)
_NONE = ()


class FakePoller:
    """select.poll stand-in: ready while the front-end has reply bytes; otherwise it blocks for
    the whole timeout, as a silent UART would."""

    def __init__(self, frontend):
        self.frontend = frontend

    def ipoll(self, timeout_ms=-1, flags=0):
        if self.frontend.pending() > 0:
            return _READY
        if timeout_ms > 0:
            time.sleep_ms(timeout_ms)
        return _NONE
