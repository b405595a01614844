# Sample time and its mapping to wall time. The sample clock is the rig's simulated time in
# lockstep (or the board's ticks in real time); the host's time sync anchors it to the epoch:
#   epoch_ms(sample) = sync_epoch_ms + (t_ms(sample) - sync_t_ms)
# Until synced, stamps are board-relative (seconds since the board's sample clock started).
# Seconds and milliseconds are kept apart so every value stays a small integer on a 32-bit board.


class SampleClock:
    def __init__(self):
        self.synced = False
        self._sync_s = 0  # epoch seconds (since 2000-01-01) at the sync point
        self._sync_ms = 0  # its millisecond part
        self._anchor_t_ms = 0  # sample clock at the sync point

    def sync(self, epoch_s, epoch_ms, now_t_ms):
        self._sync_s = epoch_s
        self._sync_ms = epoch_ms
        self._anchor_t_ms = now_t_ms
        self.synced = True

    def stamp(self, t_ms):
        """(seconds, milliseconds, relative flag) of a sample taken at t_ms."""
        if not self.synced:
            return t_ms // 1000, t_ms % 1000, 1
        delta_ms = t_ms - self._anchor_t_ms + self._sync_ms
        return self._sync_s + delta_ms // 1000, delta_ms % 1000, 0
