# Watchdog: machine.WDT on a board (a hung loop resets it); on the unix port, which has no WDT,
# a heartbeat file whose age the supervisor (hil.supervisor) watches, killing and restarting a
# board process that stops feeding it.

import os

try:
    from machine import WDT
except ImportError:
    WDT = None


class Watchdog:
    def __init__(self, timeout_ms, heartbeat_path=None):
        self._wdt = WDT(timeout=timeout_ms) if WDT is not None and heartbeat_path is None else None
        self._path = heartbeat_path
        self._beats = 0

    def feed(self):
        if self._wdt is not None:
            self._wdt.feed()
            return
        if self._path is not None:
            self._beats += 1
            # Rename is atomic, so the supervisor never reads a half-written count.
            tmp = self._path + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(self._beats))
            os.rename(tmp, self._path)
