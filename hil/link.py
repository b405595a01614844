"""Serial links on the rig side: a raw-mode pty pair on this machine, a named port on a bench."""

from __future__ import annotations

import os
import select
import tty
from typing import Protocol

import serial  # type: ignore[import-untyped]


class Link(Protocol):
    def read(self, timeout_s: float) -> bytes: ...
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class PtyLink:
    """A pty pair: the board opens `slave_path`; the rig reads and writes the master side.

    The slave is set to raw mode before the board opens it (otherwise the line discipline rewrites
    0x0a, 0x0d, 0xff ...), and the rig keeps its own slave fd open so a board restart never hangs
    the master up."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.slave_path = os.ttyname(self._slave)

    def read(self, timeout_s: float) -> bytes:
        ready, _, _ = select.select([self._master], [], [], timeout_s)
        if not ready:
            return b""
        return os.read(self._master, 4096)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._master, view):]

    def close(self) -> None:
        if self._master >= 0:
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1


class SerialLink:
    """A named serial port (a USB UART on a bench), through pyserial."""

    def __init__(self, port: str, baudrate: int = 921600) -> None:
        self._port = serial.Serial(port, baudrate=baudrate, timeout=0)

    def read(self, timeout_s: float) -> bytes:
        self._port.timeout = timeout_s
        first = self._port.read(1)
        return first + self._port.read(self._port.in_waiting) if first else b""

    def write(self, data: bytes) -> None:
        self._port.write(data)

    def close(self) -> None:
        self._port.close()
