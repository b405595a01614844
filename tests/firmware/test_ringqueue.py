"""The board's flash queue under MicroPython: order, acknowledgement, recovery, exact drop counts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.mpy import run_mpy

PRELUDE = """
import sys, json
from engine.ringqueue import RingQueue
from engine.sample import Sample
D = sys.argv[1]
def fill(q, boot, first, n, cells=2):
    s = Sample(cells)
    for seq in range(first, first + n):
        s.current_mA = -seq
        for k in range(len(s.cells)):
            s.cells[k] = seq * 100 + k
        q.append(boot, seq, seq, 0, 1, s)
def keys(q):
    out = []
    for index in range(q.tail, q.head):
        assert q.read(index)
        out.append([q.record_boot(), q.record_seq(), q.record_current(), q.record_cell(1, 5)])
    return out
"""


def mpy(tmp_path: Path, body: str) -> dict:
    out = run_mpy(PRELUDE + body, args=[tmp_path])
    return json.loads(out.strip().splitlines()[-1])


def test_records_come_back_in_order_and_ack_releases_them(tmp_path: Path) -> None:
    r = mpy(tmp_path, """
q = RingQueue(D, 2, 8)
fill(q, 1, 0, 5)
released = q.ack(1, 2)
print(json.dumps({"released": released, "left": keys(q), "low": q.low_seq(1)}))
""")
    assert r["released"] == 3
    assert r["left"] == [[1, 3, -3, 311], [1, 4, -4, 411]]
    assert r["low"] == 3


def test_ack_of_a_later_boot_waits_for_the_older_boot(tmp_path: Path) -> None:
    r = mpy(tmp_path, """
q = RingQueue(D, 2, 8)
fill(q, 1, 0, 2)
fill(q, 2, 0, 2)
a = q.ack(2, 1)          # boot 1 still unacknowledged at the tail: nothing leaves yet
b = q.ack(1, 1)          # now boot 1 and the remembered boot-2 ack release everything
print(json.dumps({"a": a, "b": b, "len": len(q)}))
""")
    assert r == {"a": 0, "b": 4, "len": 0}


def test_overflow_drops_the_oldest_and_counts_exactly(tmp_path: Path) -> None:
    r = mpy(tmp_path, """
q = RingQueue(D, 2, 8)
fill(q, 1, 0, 21)
print(json.dumps({"dropped": q.dropped, "first": keys(q)[0][1], "len": len(q), "low": q.low_seq(1)}))
""")
    assert r == {"dropped": 13, "first": 13, "len": 8, "low": 13}


def test_reopen_after_a_crash_recovers_head_tail_and_drops(tmp_path: Path) -> None:
    # First process: 6 records, ack 2, persist; then 9 more without persisting (a crash).
    mpy(tmp_path, """
q = RingQueue(D, 2, 8)
fill(q, 1, 0, 6)
q.ack(1, 1)
q.persist()
fill(q, 1, 6, 9)
print(json.dumps({}))
""")
    r = mpy(tmp_path, """
q = RingQueue(D, 2, 8)
print(json.dumps({"head": q.head, "tail": q.tail, "dropped": q.dropped, "first": keys(q)[0][1]}))
""")
    # 15 written, 2 acknowledged, capacity 8: 15 - 8 = 7 survive from index 7; 5 were dropped unsent.
    assert r == {"head": 15, "tail": 7, "dropped": 5, "first": 7}


def test_corrupt_slot_is_detected(tmp_path: Path) -> None:
    mpy(tmp_path, """
q = RingQueue(D, 2, 8)
fill(q, 1, 0, 3)
q.close()
print(json.dumps({}))
""")
    path = tmp_path / "queue.bin"
    raw = bytearray(path.read_bytes())
    slot = (len(raw) - 16) // 8
    raw[16 + slot + 10] ^= 0xFF  # flip a byte inside record 1
    path.write_bytes(bytes(raw))
    r = mpy(tmp_path, """
q = RingQueue(D, 2, 8)
print(json.dumps({"ok": [q.read(i) for i in range(3)], "head": q.head}))
""")
    assert r == {"ok": [True, False, True], "head": 3}


def test_sampling_path_allocates_nothing(tmp_path: Path) -> None:
    """Frame decode and queue append with the heap locked: any allocation raises MemoryError."""
    r = mpy(tmp_path, """
import micropython
from soxcommon import frame
n = 16
q = RingQueue(D, n, 64)
s = Sample(n)
rx = frame.Codec(frame.sample_payload_bytes(n))
tx = frame.Codec(frame.sample_payload_bytes(n))
H = frame.HEADER_BYTES
frame.put_u32(tx.buf, H, 123456)
tx.buf[H + 4] = n
frame.put_i32(tx.buf, H + 6, -1234)
for k in range(n * frame.CELL_FIELDS):
    frame.put_i32(tx.buf, H + frame.SAMPLE_HEAD_BYTES + 4 * k, k * 1000 - 50000)
total = tx.encode(frame.T_SAMPLE, 7, frame.sample_payload_bytes(n))
def sample_once(seq):
    ok = False
    for i in range(total):
        if rx.feed(tx.buf[i]):
            ok = True
    s.current_mA = frame.get_i32(rx.buf, H + 6)
    off = H + frame.SAMPLE_HEAD_BYTES
    for k in range(len(s.cells)):
        s.cells[k] = frame.get_i32(rx.buf, off)
        off += 4
    q.append(1, seq, seq, 0, 1, s)
    return ok
def allocate():
    return [1, 2, 3]
sample_once(0)  # warm-up: the first use of a frame length makes its CRC view
micropython.heap_lock()
try:
    ok = sample_once(1) and sample_once(2)
    try:
        allocate()
        lock_works = False
    except MemoryError:
        lock_works = True
finally:
    micropython.heap_unlock()
print(json.dumps({"ok": ok, "lock_works": lock_works, "head": q.head, "current": s.current_mA,
                  "cell5": s.cells[5]}))
""")
    assert r == {"ok": True, "lock_works": True, "head": 3, "current": -1234, "cell5": 5 * 1000 - 50000}


def test_boot_id_survives_a_lost_state_file(tmp_path: Path) -> None:
    """Acknowledged slots keep their boot id, so a board whose state file is gone never reuses one."""
    r = mpy(tmp_path, """
q = RingQueue(D, 2, 8)
fill(q, 7, 0, 3)
q.ack(7, 2)
q.close()
q = RingQueue(D, 2, 8)
print(json.dumps({"len": len(q), "last_boot": q.last_boot}))
""")
    assert r == {"len": 0, "last_boot": 7}
