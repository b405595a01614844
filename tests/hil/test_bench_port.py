"""The rig alone on a named serial port through pyserial (here the slave side of a pty; a USB UART on a
bench): a board on the other end gets its samples and command acks, and the truth is written."""

from __future__ import annotations

import csv
import json
import os
import threading
import tty
from pathlib import Path
from typing import Any

from hil.bench_port import serve_port
from soxcommon import frame
from tests.hil.test_rig import read_some


def exchange(fd: int, request: bytes, max_payload: int) -> frame.Codec:
    """Send and await the reply, repeating the request after a silent second as a board does (the rig may
    not have opened the port yet: opening flushes its input)."""
    rx = frame.Codec(max_payload)
    for _ in range(5):
        os.write(fd, request)
        if any(rx.feed(b) for b in read_some(fd)):
            return rx
    raise AssertionError("no reply")


def test_serve_a_scenario_on_a_serial_port(tmp_path: Path) -> None:
    scenario = tmp_path / "bench.toml"
    scenario.write_text("""
name = "bench"
cells = 2
cell = "models/cells/panasonic_ncr18650pf_25C.json"
duration_s = 5
[[load]]
profile = "cc"
c_rate = -1.0
""")
    master, slave = os.openpty()
    tty.setraw(slave)  # a UART has no line discipline: no echo of the board's requests back to it
    result: dict[str, Any] = {}
    server = threading.Thread(target=lambda: result.update(
        serve_port(scenario, tmp_path, os.ttyname(slave), baudrate=115200)))
    server.start()
    try:
        size = frame.sample_payload_bytes(2)
        tx = frame.Codec(frame.COMMAND_PAYLOAD_BYTES)
        ack = exchange(master, bytes(tx.buf[:frame.encode_command(tx, 1, frame.C_CONTACTOR, frame.CONTACTOR_OPEN)]),
                       size)
        assert (ack.type, ack.buf[frame.HEADER_BYTES + 1]) == (frame.T_COMMAND_ACK, frame.S_OK)
        times_ms = []
        for seq in range(2, 7):
            request = frame.Codec(0)
            reply = exchange(master, bytes(request.buf[:request.encode(frame.T_SAMPLE_REQ, seq, 0)]), size)
            assert reply.type == frame.T_SAMPLE and reply.buf[frame.HEADER_BYTES + 5] == frame.CONTACTOR_OPEN
            times_ms.append(frame.get_u32(reply.buf, frame.HEADER_BYTES))
        server.join(timeout=30)
    finally:
        os.close(master)
        os.close(slave)
    assert not server.is_alive()
    assert times_ms == [1000, 2000, 3000, 4000, 5000]
    assert (result["samples"], result["commands"], result["crc_errors"]) == (5, 1, 0)
    out = Path(result["outputs"])
    assert json.loads((out / "score.json").read_text())["simulated_s"] == 5.0
    rows = list(csv.DictReader((out / "samples.csv").read_text().splitlines()))
    assert len(rows) == 10 and all(float(r["true_current_A"]) == 0.0 for r in rows)  # the contactor was open
