# Request/reply over the framed serial protocol (soxcommon.frame), shared by the HIL HAL (a pty or
# a UART to the rig) and the board HAL (a UART to the sensor front-end MCU).
#
# One request, one reply. On a timeout or a NACK the same request, with the same sequence number,
# is sent again (the far end answers a repeat from its cache), up to `retries` tries; then
# LinkError. Received bytes go one at a time through Codec.feed, so a corrupt, truncated or
# foreign frame costs a timeout and a retry, never a wrong value. Allocates nothing per request.
#
# The stream is anything with write(buf) and readinto(buf) (a file opened "r+b", machine.UART);
# the poller anything with ipoll(timeout_ms) yielding while the stream has bytes to read
# (select.poll, see poll_in()).

import select

from engine.ticks import ticks_diff, ticks_ms
from soxcommon import frame


class LinkError(OSError):
    pass


def poll_in(stream):
    """A select.poll that reports when `stream` has bytes to read (a file, machine.UART)."""
    p = select.poll()
    p.register(stream, select.POLLIN)
    return p


class FrameLink:
    def __init__(self, stream, poller, max_payload, timeout_ms=500, retries=5):
        self.stream = stream
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.rx = frame.Codec(max_payload)  # the last valid reply: payload at frame.HEADER_BYTES
        self._poll = poller
        self._tx = frame.Codec(0)  # sample requests carry no payload
        self._cmd = frame.Codec(frame.COMMAND_PAYLOAD_BYTES)
        self._byte = bytearray(1)
        self._seq = 0
        self.timeouts = 0
        self.nacks = 0

    @property
    def crc_errors(self):
        return self.rx.crc_errors

    def request(self, req_type, reply_type):
        """Send a request of `req_type` and wait for its `reply_type` reply (same sequence
        number); on return the reply is in self.rx. Raises LinkError when no valid reply came."""
        self._seq = (self._seq + 1) & 0xFFFF
        self._tx.encode(req_type, self._seq, 0)  # empty payload: fills the buffer exactly
        self._exchange(self._tx.buf, reply_type)

    def command(self, command, a0=0, a1=0, a2=0):
        """Set an output of the far end (frame.C_*); returns its status (frame.S_*). Raises
        LinkError when no ack came."""
        self._seq = (self._seq + 1) & 0xFFFF
        frame.encode_command(self._cmd, self._seq, command, a0, a1, a2)  # fills the buffer exactly
        self._exchange(self._cmd.buf, frame.T_COMMAND_ACK)
        buf = self.rx.buf
        if self.rx.length != frame.ACK_PAYLOAD_BYTES or buf[frame.HEADER_BYTES] != command:
            raise LinkError("ack for another command")
        return buf[frame.HEADER_BYTES + 1]

    def _exchange(self, request, reply_type):
        for _ in range(self.retries):
            self.stream.write(request)  # unbuffered: no flush (fsync on a tty is EINVAL)
            if self._await_reply(reply_type):
                return
        raise LinkError("no valid reply after %d tries" % self.retries)

    def _await_reply(self, reply_type):
        rx = self.rx
        start = ticks_ms()
        while True:
            left = self.timeout_ms - ticks_diff(ticks_ms(), start)
            if left <= 0:
                self.timeouts += 1
                return False
            for _ in self._poll.ipoll(left):
                # One byte per read: a stream read of more could block for bytes never sent.
                if self.stream.readinto(self._byte) != 1:
                    raise LinkError("serial port closed")
                if rx.feed(self._byte[0]):
                    if rx.type == frame.T_NACK:
                        self.nacks += 1
                        return False
                    if rx.type == reply_type and rx.seq == self._seq:
                        return True
