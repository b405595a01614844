"""The unix port's watchdog: the board process feeds a heartbeat file (drivers/watchdog.py) where
a board feeds machine.WDT. A process that stops feeding it for its watchdog period (a hung loop)
is killed and started again, as a WDT reset would; so is one that exits with an error."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Protocol


class Supervised(Protocol):
    def start(self) -> None: ...
    def kill(self) -> None: ...
    def running(self) -> bool: ...
    def exit_code(self) -> int | None: ...


class Supervisor:
    def __init__(self, target: Supervised, heartbeat: Path, timeout_s: float, poll_s: float = 0.2) -> None:
        self.target = target
        self.heartbeat = heartbeat
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.watchdog_resets = 0
        self.crash_restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="board-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _last_beat(self) -> float:
        try:
            return self.heartbeat.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _watch(self) -> None:
        started = time.time()
        while not self._stop.wait(self.poll_s):
            if not self.target.running():
                if self.target.exit_code() in (0, None):
                    return  # finished normally
                self.crash_restarts += 1
            elif time.time() - max(started, self._last_beat()) > self.timeout_s:
                self.target.kill()
                self.watchdog_resets += 1
            else:
                continue
            self.target.start()
            started = time.time()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
