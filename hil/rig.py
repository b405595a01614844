"""The rig side of the framed serial protocol: answers the board's sample requests.

Lockstep: simulated time advances by one sample period only on a request with a new sequence
number; a repeated request (the board re-asks after a corrupt or lost reply) gets the cached
reply byte for byte. A corrupt request is counted and answered with a NACK."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from hil.link import Link
from hil.module import MinimalModule
from soxcommon import frame


@dataclass
class RigCounters:
    samples: int = 0
    repeats: int = 0
    nacks_sent: int = 0
    unknown_frames: int = 0


class Rig:
    def __init__(self, link: Link, module: MinimalModule, period_ms: int) -> None:
        self.link = link
        self.module = module
        self.period_ms = period_ms
        self.sim_ms = 0
        self.counters = RigCounters()
        self._rx = frame.Codec(max_payload=64)
        self._tx = frame.Codec(frame.sample_payload_bytes(module.n_cells))
        self._cached_seq = -1
        self._cached = b""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def crc_errors(self) -> int:
        return self._rx.crc_errors + self._rx.length_errors

    def _sample_reply(self, seq: int) -> bytes:
        self.module.step(self.period_ms / 1000.0)
        self.sim_ms += self.period_ms
        current_mA, rows = self.module.reading()
        n = frame.encode_sample(self._tx, seq, self.sim_ms, current_mA, rows)
        return bytes(self._tx.buf[:n])

    def handle(self, data: bytes) -> None:
        for byte in data:
            errors = self.crc_errors
            if self._rx.feed(byte):
                self._on_frame()
            elif self.crc_errors != errors:
                self.counters.nacks_sent += 1
                n = self._tx.encode(frame.T_NACK, 0, 0)
                self.link.write(bytes(self._tx.buf[:n]))

    def _on_frame(self) -> None:
        if self._rx.type != frame.T_SAMPLE_REQ:
            self.counters.unknown_frames += 1
            return
        seq = self._rx.seq
        if seq == self._cached_seq:
            self.counters.repeats += 1
        else:
            self._cached = self._sample_reply(seq)
            self._cached_seq = seq
            self.counters.samples += 1
        self.link.write(self._cached)

    def serve(self) -> None:
        while not self._stop.is_set():
            data = self.link.read(0.1)
            if data:
                self.handle(data)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve, name="hil-rig", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
