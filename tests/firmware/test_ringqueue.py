"""The board's flash queue under MicroPython: order, acknowledgement, recovery, exact drop counts."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from tests.mpy import run_mpy

PRELUDE = """
import sys, json
from engine.ringqueue import RingQueue
from engine.sample import Estimate, Sample
D = sys.argv[1]
def fill(q, boot, first, n, cells=2):
    s = Sample(cells)
    e = Estimate(cells)
    for seq in range(first, first + n):
        s.current_mA = -seq
        for k in range(len(s.cells)):
            s.cells[k] = seq * 100 + k
        q.append(boot, seq, seq, 0, 1, s, e)
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
e = Estimate(n)
for k in range(len(e.values)):
    e.values[k] = 10000 - k
e.level = 2
e.n_reasons = 1
e.reasons[0] = 0x0106
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
    q.append(1, seq, seq, 0, 1, s, e)
    return ok
def allocate():
    return [1, 2, 3]
sample_once(0)  # warm-up: the first use of a frame length makes its CRC view
ok = lock_works = False  # globals made before the lock: a new one may grow the module's dict
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


def test_estimates_round_trip_and_absent_stays_absent(tmp_path: Path) -> None:
    """Estimates come back as written; a record without estimation reads ABSENT everywhere, never 0."""
    r = mpy(tmp_path, """
from soxcommon.frame import ABSENT
q = RingQueue(D, 3, 8)
s = Sample(3)
e = Estimate(3)
q.append(1, 0, 0, 0, 1, s, e)          # no estimation
for k in range(len(e.values)):
    e.values[k] = [0, 20000, 9999, 1, 65534, 5000, 7, 8, 9][k]
e.values[4] = ABSENT                   # cell 1's sigma not estimated
e.level = 3
e.n_reasons = 2
e.reasons[0] = 0x0a03
e.reasons[1] = 0xFFFF
q.append(1, 1, 1, 0, 1, s, e)
q.close()
q = RingQueue(D, 3, 8)                 # back from flash
out = []
for i in (0, 1):
    assert q.read(i)
    out.append([[q.record_estimate(c, k) for c in range(3) for k in range(3)], q.record_level(),
                [q.record_reason(j) for j in range(q.record_reasons())]])
print(json.dumps({"out": out, "absent": ABSENT}))
""")
    a = r["absent"]
    assert r["out"][0] == [[a] * 9, a, []]
    assert r["out"][1] == [[0, 20000, 9999, 1, a, 5000, 7, 8, 9], 3, [0x0a03, 0xFFFF]]


def _v1_queue(path: Path, n_cells: int, capacity: int, records: list[tuple[int, int, int]], tail: int) -> None:
    """A format-1 queue file ("SXQ1": no estimates) as the previous firmware wrote it, from struct and zlib:
    records (index, boot, seq), tail and drop count in queue.tail."""
    slot = 4 * (6 + 6 * n_cells) + 4
    raw = bytearray(struct.pack("<III4x", 0x31515853, slot, capacity)) + bytes(slot * capacity)
    for index, boot, seq in records:
        words = struct.pack(f"<Iii{3 + 6 * n_cells}i", index, boot, seq, seq, 1 << 10, -100,
                            *range(6 * n_cells))
        at = 16 + (index % capacity) * slot
        raw[at:at + slot] = words + struct.pack("<I", zlib.crc32(words))
    (path / "queue.bin").write_bytes(bytes(raw))
    (path / "queue.tail").write_text(f"{tail} 5\n")


def test_format_1_queue_is_detected_not_misread(tmp_path: Path) -> None:
    """A queue written before the estimates: its boot ids are remembered, its unacknowledged records are
    counted as dropped (exactly), and the new queue starts empty in format 2."""
    _v1_queue(tmp_path, 2, 8, [(i, 4 if i < 3 else 5, i) for i in range(6)], tail=2)
    r = mpy(tmp_path, """
q = RingQueue(D, 2, 8)
first = {"len": len(q), "last_boot": q.last_boot, "discarded": q.discarded, "dropped": q.dropped}
fill(q, 6, 0, 2)
q.close()
q = RingQueue(D, 2, 8)
print(json.dumps({"first": first, "again": {"len": len(q), "keys": keys(q), "dropped": q.dropped,
                                            "discarded": q.discarded}}))
""")
    # 6 records written, 2 acknowledged: 4 discarded on top of the 5 dropped before
    assert r["first"] == {"len": 0, "last_boot": 5, "discarded": 4, "dropped": 9}
    assert r["again"] == {"len": 2, "keys": [[6, 0, 0, 11], [6, 1, -1, 111]], "dropped": 9, "discarded": 0}
    assert (tmp_path / "queue.bin").read_bytes()[:4] == b"SXQ2"
