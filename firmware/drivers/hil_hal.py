# HIL HAL: the cell module's sensors behind the framed serial protocol (soxcommon.frame), over a
# UART on a board or a raw-mode pty on the unix port. One request, one reply; on a timeout or a
# NACK the same request (same sequence number) is repeated and the rig answers from its cache,
# so simulated time advances exactly once per sample (drivers.frame_link does the exchange).

from drivers import frame_link
from soxcommon import frame

LinkError = frame_link.LinkError


class HilHal:
    def __init__(self, port_path, n_cells, timeout_ms=500, retries=5):
        self.n_cells = n_cells
        self._port = open(port_path, "r+b")
        self.link = frame_link.FrameLink(self._port, frame_link.poll_in(self._port),
                                          frame.sample_payload_bytes(n_cells), timeout_ms, retries)

    def read(self, sample):
        """Fill `sample` with the next sample; raises LinkError when the rig stays silent."""
        self.link.request(frame.T_SAMPLE_REQ, frame.T_SAMPLE)
        self._decode(sample)

    def command(self, command, a0=0, a1=0, a2=0):
        """Set a rig output: contactor, bleed resistors, charger limits, actuator (frame.C_*).
        Returns the rig's status (frame.S_*)."""
        return self.link.command(command, a0, a1, a2)

    def _decode(self, sample):
        buf = self.link.rx.buf
        off = frame.HEADER_BYTES
        sample.t_ms = frame.get_u32(buf, off)
        cells = buf[off + 4]
        if cells != self.n_cells:
            raise LinkError("rig reports %d cells, config says %d" % (cells, self.n_cells))
        sample.flags = buf[off + 5]
        sample.current_mA = frame.get_i32(buf, off + 6)
        off += frame.SAMPLE_HEAD_BYTES
        values = sample.cells
        for k in range(len(values)):
            values[k] = frame.get_i32(buf, off)
            off += 4

    def close(self):
        self._port.close()
