"""The rig side of the framed serial protocol: answers the board's sample requests.

Lockstep: simulated time advances by one sample period only on a request with a new sequence
number (real-time mode: it follows the wall clock instead); a repeated request (the board re-asks
after a corrupt or lost reply) gets the cached reply byte for byte. A corrupt request is counted
and answered with a NACK.

A bit-error rate can be injected on the line in both directions. The rig keeps a side channel of
what it really sent and received, so corruption that got past the CRC can be counted: inbound here
(a request accepted although bits of it were flipped), outbound by comparing what the board
decoded with `sent_replies`."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from hil.link import Link
from soxcommon import frame


class RigModule(Protocol):
    """What the rig answers from: the toy module (hil.module) or the simulated one (hil.simulated)."""

    n_cells: int

    def step(self, dt_s: float) -> None: ...
    def reading(self) -> tuple[int | None, Sequence[Sequence[int | None]]]: ...


@runtime_checkable
class ActuatedModule(RigModule, Protocol):
    """A module with outputs the board sets (hil.simulated): commands, flags in each sample, and a
    link that a scenario can cut."""

    def command(self, command: int, a0: int, a1: int, a2: int) -> int: ...
    def flags(self) -> int: ...
    def link_down(self) -> bool: ...


@dataclass
class RigCounters:
    samples: int = 0
    repeats: int = 0
    nacks_sent: int = 0
    unknown_frames: int = 0
    frames_sent: int = 0
    corrupt_frames_injected: int = 0  # frames with at least one flipped bit, both directions
    corrupt_requests_undetected: int = 0  # inbound frames accepted although corrupted
    commands: int = 0
    requests_dropped: int = 0  # requests left unanswered while the scenario cut the link


def flip_bits(data: bytes, ber: float, rng: np.random.Generator) -> tuple[bytes, int]:
    """`data` with each bit flipped independently with probability `ber`; and how many were."""
    flips = int(rng.binomial(len(data) * 8, ber)) if ber > 0 else 0
    if flips == 0:
        return data, 0
    out = bytearray(data)
    for bit in rng.choice(len(data) * 8, size=flips, replace=False):
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out), flips


class Rig:
    def __init__(self, link: Link, module: RigModule, period_ms: int, ber: float = 0.0, seed: int = 0,
                 realtime: bool = False) -> None:
        self.link = link
        self.ber = ber
        self._rng = np.random.default_rng(seed)
        self.sent_replies: dict[int, bytes] = {}  # with a BER: sample time (ms) -> the reply as intended
        self._rx_bytes = 0  # bytes received so far, to place flipped bytes in frames
        self._rx_flipped_at: list[int] = []  # indices of received bytes the line changed
        self.module = module
        self._actuated = module if isinstance(module, ActuatedModule) else None  # checked once: isinstance is slow
        self.period_ms = period_ms
        self.realtime = realtime
        self._wall_start_s: float | None = None
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

    def _advance(self) -> None:
        """Lockstep: one sample period per new request. Real time: to the wall clock (from the
        first request), whatever the board's pace."""
        if not self.realtime:
            step_ms = self.period_ms
        else:
            now_s = time.monotonic()
            if self._wall_start_s is None:
                self._wall_start_s = now_s
            step_ms = round((now_s - self._wall_start_s) * 1000) - self.sim_ms
        if step_ms > 0:
            self.module.step(step_ms / 1000.0)
            self.sim_ms += step_ms

    def _sample_reply(self, seq: int) -> bytes:
        current_mA, rows = self.module.reading()
        flags = self._actuated.flags() if self._actuated is not None else 0
        n = frame.encode_sample(self._tx, seq, self.sim_ms, current_mA, rows, flags)
        return bytes(self._tx.buf[:n])

    def _command_reply(self, seq: int) -> bytes:
        payload = self._rx.buf[frame.HEADER_BYTES:frame.HEADER_BYTES + self._rx.length]
        command = payload[0] if payload else 0
        if self._rx.length != frame.COMMAND_PAYLOAD_BYTES:
            status = frame.S_BAD_ARGS
        elif self._actuated is None:
            status = frame.S_UNSUPPORTED
        else:
            a0, a1, a2 = (frame.get_i32(payload, 1 + 4 * k) for k in range(3))
            status = self._actuated.command(command, a0, a1, a2)
        self.counters.commands += 1
        self._tx.buf[frame.HEADER_BYTES] = command
        self._tx.buf[frame.HEADER_BYTES + 1] = status
        n = self._tx.encode(frame.T_COMMAND_ACK, seq, frame.ACK_PAYLOAD_BYTES)
        return bytes(self._tx.buf[:n])

    def _link_cut(self) -> bool:
        """A scenario's link loss: the request is swallowed (counted) and never answered."""
        if self._actuated is None or not self._actuated.link_down():
            return False
        self.counters.requests_dropped += 1
        return True

    def _send(self, data: bytes) -> None:
        sent, flips = flip_bits(data, self.ber, self._rng)
        self.counters.frames_sent += 1
        self.counters.corrupt_frames_injected += flips > 0
        self.link.write(sent)

    def handle(self, data: bytes) -> None:
        received, flips = flip_bits(data, self.ber, self._rng)
        if flips:
            self.counters.corrupt_frames_injected += 1
            self._rx_flipped_at.extend(self._rx_bytes + i for i, (a, b) in enumerate(zip(data, received, strict=True))
                                       if a != b)
        for byte in received:
            self._rx_bytes += 1
            errors = self.crc_errors
            if self._rx.feed(byte):
                # Side channel: was a byte of the frame just accepted changed on the line?
                first = self._rx_bytes - self._rx.length - frame.OVERHEAD_BYTES  # the frame: [first, _rx_bytes)
                self.counters.corrupt_requests_undetected += any(
                    first <= i < self._rx_bytes for i in self._rx_flipped_at)
                self._rx_flipped_at = [i for i in self._rx_flipped_at if i >= self._rx_bytes]
                self._on_frame()
            elif self.crc_errors != errors:
                self.counters.nacks_sent += 1
                n = self._tx.encode(frame.T_NACK, 0, 0)
                self._send(bytes(self._tx.buf[:n]))

    def _on_frame(self) -> None:
        kind = self._rx.type
        if kind not in (frame.T_SAMPLE_REQ, frame.T_COMMAND):
            self.counters.unknown_frames += 1
            return
        seq = self._rx.seq
        if seq == self._cached_seq:
            if self._link_cut():
                return
            self.counters.repeats += 1
        elif kind == frame.T_COMMAND:
            if self._link_cut():
                return
            self._cached = self._command_reply(seq)
            self._cached_seq = seq
        else:
            # Time moves on a new request even when a cut link swallows it: the board's retries keep the
            # lockstep clock running through the outage, one sample period per unanswered request.
            self._advance()
            if self._link_cut():
                return
            self._cached = self._sample_reply(seq)
            self._cached_seq = seq
            if self.ber > 0:
                self.sent_replies[self.sim_ms] = self._cached
            self.counters.samples += 1
        self._send(self._cached)

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
