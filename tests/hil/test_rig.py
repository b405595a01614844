"""The rig's side of the framed protocol over a real raw-mode pty: lockstep time, cached replies
for repeated requests, NACK for corrupt requests, and binary bytes passing the pty unaltered."""

from __future__ import annotations

import json
import os
import select
import time

import pytest

from hil.link import PtyLink
from hil.module import MinimalModule
from hil.rig import Rig
from soxcommon import frame
from tests.mpy import run_mpy


@pytest.fixture
def rig_and_port():
    link = PtyLink()
    rig = Rig(link, MinimalModule(4, seed=3), period_ms=1000)
    rig.start()
    port = os.open(link.slave_path, os.O_RDWR | os.O_NOCTTY)
    yield rig, port
    os.close(port)
    rig.stop()
    link.close()


def read_some(fd: int) -> bytes:
    ready, _, _ = select.select([fd], [], [], 1.0)
    return os.read(fd, 4096) if ready else b""


def request(port: int, seq: int, corrupt: bool = False) -> bytes:
    tx = frame.Codec(0)
    n = tx.encode(frame.T_SAMPLE_REQ, seq, 0)
    data = bytearray(tx.buf[:n])
    if corrupt:
        data[5] ^= 0x01
    os.write(port, bytes(data))
    rx = frame.Codec(frame.sample_payload_bytes(4))
    deadline = time.monotonic() + 5
    raw = bytearray()
    while time.monotonic() < deadline:
        chunk = read_some(port)
        raw += chunk
        for i, byte in enumerate(chunk):
            if rx.feed(byte):
                assert i == len(chunk) - 1, "one reply per request"
                return bytes(raw)
    raise TimeoutError("no reply from the rig")


def test_lockstep_time_and_cached_repeats(rig_and_port) -> None:
    rig, port = rig_and_port
    first = request(port, 1)
    again = request(port, 1)  # the board lost the reply and asks again
    second = request(port, 2)
    assert again == first
    assert frame.get_u32(first, frame.HEADER_BYTES) == 1000
    assert frame.get_u32(second, frame.HEADER_BYTES) == 2000  # time moved once per new request
    assert (rig.counters.samples, rig.counters.repeats) == (2, 1)


def test_corrupt_request_gets_a_nack(rig_and_port) -> None:
    rig, port = rig_and_port
    reply = request(port, 7, corrupt=True)
    assert reply[4] == frame.T_NACK
    assert rig.crc_errors == 1 and rig.counters.nacks_sent == 1 and rig.counters.samples == 0


def test_raw_pty_carries_every_byte_value() -> None:
    """0x00, 0x0a, 0x0d, 0x11, 0x13, 0x7f, 0xff would be rewritten or eaten by a cooked tty."""
    link_side = PtyLink()
    try:
        other = os.open(link_side.slave_path, os.O_RDWR | os.O_NOCTTY)
        payload = bytes(range(256)) * 4
        link_side.write(payload)
        got = bytearray()
        deadline = time.monotonic() + 5
        while len(got) < len(payload) and time.monotonic() < deadline:
            got += read_some(other)
        os.close(other)
    finally:
        link_side.close()
    assert bytes(got) == payload


def test_bit_errors_are_caught_both_ways(tmp_path) -> None:
    """At a bit-error rate of 1e-4 (about a quarter of the 405-byte replies hit), the board's HAL under
    MicroPython decodes every sample exactly as the rig meant it, and the rig's side channel finds
    no corrupt request accepted."""
    link = PtyLink()
    rig = Rig(link, MinimalModule(16, seed=4), period_ms=1000, ber=1e-4, seed=5)
    rig.start()
    try:
        out = run_mpy(f"""
import json
from drivers.hil_hal import HilHal
from engine.sample import Sample
hal = HilHal({link.slave_path!r}, 16, timeout_ms=100, retries=20)
s = Sample(16)
for _ in range(300):
    hal.read(s)
    print(json.dumps([s.t_ms, s.current_mA] + list(s.cells)))
print("LINK", hal.link.crc_errors, hal.link.nacks, hal.link.timeouts)
""", timeout=120)
    finally:
        rig.stop()
        link.close()
    lines = out.strip().splitlines()
    link_stats = [int(x) for x in lines[-1].split()[1:]]
    undetected = 0
    for line in lines[:-1]:
        t_ms, current_mA, *cells = json.loads(line)
        rx = frame.Codec(frame.sample_payload_bytes(16))
        intended = rig.sent_replies[t_ms]
        assert any(rx.feed(b) for b in intended)
        h = frame.HEADER_BYTES + frame.SAMPLE_HEAD_BYTES
        want = [frame.get_i32(rx.buf, h + 4 * k) for k in range(16 * frame.CELL_FIELDS)]
        undetected += (current_mA, cells) != (frame.get_i32(rx.buf, frame.HEADER_BYTES + 6), want)
    assert len(lines) == 301
    assert rig.counters.corrupt_frames_injected > 30, rig.counters
    assert sum(link_stats) > 0, "the board saw and recovered from corrupt replies"
    assert undetected == 0 and rig.counters.corrupt_requests_undetected == 0


def test_realtime_mode_follows_the_wall_clock() -> None:
    link = PtyLink()
    rig = Rig(link, MinimalModule(4, seed=3), period_ms=1000, realtime=True)
    rig.start()
    port = os.open(link.slave_path, os.O_RDWR | os.O_NOCTTY)
    try:
        first = frame.get_u32(request(port, 1), frame.HEADER_BYTES)
        wall_start = time.monotonic()
        time.sleep(0.3)  # elapsed time to measure, not synchronisation
        second = frame.get_u32(request(port, 2), frame.HEADER_BYTES)
        wall_ms = (time.monotonic() - wall_start) * 1000
    finally:
        os.close(port)
        rig.stop()
        link.close()
    assert first < 100  # the clock starts at the first request
    assert 250 <= second - first <= wall_ms + 50  # not one 1000 ms lockstep period
