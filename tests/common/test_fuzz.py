"""Seeded fuzz corpus for the shared wire code and the host's ingest path.

The corpus is generated here under CPython (fixed seed) and written as length-prefixed records:

    corpus u8 ('F' frame bytes | 'J' JSON payload), category u8, expected u16, checksum u32, length u32, data

(a) MicroPython replays it in ONE process: every frame record through a fresh frame.Codec, byte by
    byte (expected = number of intact frames inside, checksum = sum of the decoded sample-reply
    integers mod 2**30), and every JSON record through json.loads + validate.check_data/_birth/_death.
    json.loads may only raise ValueError; check_* must never raise. Its check results are written
    to a file and compared with CPython's for every record both interpreters could parse.
(b) CPython sends every payload through host.ingest.parse with a valid and an invalid topic, then
    writes all records to a temporary SQLite store in batches of 500.
"""

from __future__ import annotations

import json
import math
import random
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from host.ingest import parse
from host.records import BirthRecord, DataRecord, DeathRecord, Record, Rejected
from host.store import open_store
from soxcommon import validate, wire
from tests.mpy import run_mpy

SEED = 20240611
N_FRAME = 5000
N_JSON = 6000
MAX_PAYLOAD = 10 + 4 * 6 * wire.MAX_CELLS  # a sample reply of MAX_CELLS cells: the board's receive size
MPY_HEAP_KB = 2048  # a 10,000-deep JSON list is ~640 KB of list objects on MicroPython
I32 = (-(2**31), 2**31 - 1)
M30 = 2**30 - 1
HEAD = struct.Struct("<BBHII")

FRAME_CATEGORIES = ("random_bytes", "sync_noise", "valid_sample", "valid_request", "valid_nack",
                    "garbage_payload", "stream", "truncated", "flipped_bits", "oversized_length")
JSON_CATEGORIES = ("valid_data", "valid_birth", "valid_death", "mutated_data", "mutated_birth", "mutated_death",
                   "random_json", "truncated_json", "deep_nesting", "special")
VALID_JSON = {"valid_data": "data", "valid_birth": "birth", "valid_death": "death"}
# Categories every record of which breaks the wire definition: always Rejected on the host.
INVALID_JSON = {"mutated_data", "mutated_birth", "mutated_death", "truncated_json", "deep_nesting"}

INVALID_TOPICS = (
    "", "/", "soxbms", "soxbms/v1", "soxbms/v1/dev-1", "soxbms/v1/dev-1/", "soxbms/v0/dev-1/data",
    "SOXBMS/v1/dev-1/data", "soxbms/v2/dev-1/data", "soxbms/v1//data", "soxbms/v1/dev 1/data",
    "soxbms/v1/dev.1/data", "soxbms/v1/+/data", "soxbms/v1/#/data", "soxbms/v1/d\u00e9v-1/data",
    "soxbms/v1/\u0663/data", "soxbms/v1/" + "x" * 33 + "/data", "soxbms/v1/dev\x00/data", "soxbms/v1/dev-1/Data",
    "soxbms/v1/dev-1/state", "soxbms/v1/dev-1/event", "soxbms/v1/dev-1/ack", "soxbms/v1/dev-1/cmd/reboot",
    "soxbms/v1/dev-1/data/extra", "soxbms/v1/dev-1/birth ", "x/soxbms/v1/dev-1/data",
)


@dataclass(frozen=True)
class Item:
    corpus: str  # "F" or "J"
    category: str
    data: bytes
    expected: int = 0  # frames: intact frames inside
    checksum: int = 0  # frames: sum of decoded sample-reply integers mod 2**30
    kind: str = "data"  # JSON: the topic kind the payload was made for


# --- frames (built with struct and zlib only, independent of soxcommon.frame) ------------------


def make_frame(ftype: int, seq: int, payload: bytes, length: int | None = None) -> bytes:
    body = struct.pack("<HBH", len(payload) if length is None else length, ftype, seq & 0xFFFF) + payload
    return b"\xa5\x5a" + body + struct.pack("<I", zlib.crc32(body))


def sample_checksum(ftype: int, payload: bytes) -> int:
    """The integers a receiver decodes from a well-formed sample reply, summed mod 2**30."""
    if ftype != 0x81 or len(payload) < 10:
        return 0
    t_ms, cells, flags, current = struct.unpack_from("<IBBi", payload)
    if not 0 < cells <= wire.MAX_CELLS or len(payload) != 10 + 24 * cells:
        return 0
    return (t_ms + cells + flags + current + sum(struct.unpack_from(f"<{6 * cells}i", payload, 10))) % (1 << 30)


def sample_payload(rng: random.Random) -> bytes:
    cells = rng.randint(1, wire.MAX_CELLS)
    pick = (lambda: rng.choice([I32[0], I32[1], -M30, M30, -1, 0, 1])) if rng.random() < 0.3 else (
        lambda: rng.randint(*I32))
    return struct.pack(f"<IBBi{6 * cells}i", rng.randint(0, 2**32 - 1), cells, rng.randint(0, 255), pick(),
                       *(pick() for _ in range(6 * cells)))


def valid_frame(rng: random.Random) -> tuple[bytes, int]:
    r = rng.random()
    if r < 0.6:
        payload, ftype = sample_payload(rng), 0x81
    elif r < 0.8:
        payload, ftype = b"", 0x01
    else:
        payload, ftype = b"", 0x7F
    return make_frame(ftype, rng.randint(0, 0xFFFF), payload), sample_checksum(ftype, payload)


def noise_without_sync(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n).replace(b"\xa5", b"\x5a")


def frame_items(rng: random.Random, n: int) -> list[Item]:
    items = []
    for k in range(n):
        category = FRAME_CATEGORIES[k % len(FRAME_CATEGORIES)]
        expected, checksum = 0, 0
        if category == "random_bytes":
            data = rng.randbytes(rng.randint(0, 400))
        elif category == "sync_noise":  # sync pairs and small length fields to reach the header states
            parts = []
            for _ in range(rng.randint(1, 12)):
                parts.append(rng.choice([b"\xa5", b"\xa5\x5a", b"\xa5\xa5\x5a", b"\x5a"]))
                parts.append(struct.pack("<H", rng.choice([0, 1, 2, rng.randint(0, 900)])))
                parts.append(rng.randbytes(rng.randint(0, 30)))
            data = b"".join(parts)
        elif category == "valid_sample":
            payload = sample_payload(rng)
            data, expected, checksum = make_frame(0x81, rng.randint(0, 0xFFFF), payload), 1, sample_checksum(
                0x81, payload)
        elif category == "valid_request":
            data, expected = make_frame(0x01, rng.randint(0, 0xFFFF), b""), 1
        elif category == "valid_nack":
            # leading noise: lone sync bytes and non-sync bytes before the frame
            data, expected = noise_without_sync(rng, rng.randint(0, 20)) + b"\xa5" * rng.randint(0, 3) + make_frame(
                0x7F, rng.randint(0, 0xFFFF), b""), 1
        elif category == "garbage_payload":  # intact frame, any type, random payload bytes
            ftype = rng.choice([0x81, 0x81, rng.randint(0, 255)])
            if rng.random() < 0.5:
                payload = rng.randbytes(rng.randint(0, MAX_PAYLOAD))
            else:  # a sample-reply layout with a random cell count byte
                cells = rng.randint(1, wire.MAX_CELLS)
                payload = rng.randbytes(4) + bytes([rng.randint(0, 255)]) + rng.randbytes(5 + 24 * cells)
            data, expected, checksum = make_frame(ftype, rng.randint(0, 0xFFFF), payload), 1, sample_checksum(
                ftype, payload)
        elif category == "stream":  # back-to-back frames, non-sync noise between them
            parts = []
            for _ in range(rng.randint(2, 5)):
                frm, ck = valid_frame(rng)
                parts += [noise_without_sync(rng, rng.randint(0, 8)), frm]
                expected += 1
                checksum = (checksum + ck) % (1 << 30)
            data = b"".join(parts)
        elif category == "truncated":
            frm, _ = valid_frame(rng)
            data = frm[:rng.randrange(len(frm))]
        elif category == "flipped_bits":
            buf = bytearray(valid_frame(rng)[0])
            for bit in rng.sample(range(8 * len(buf)), rng.randint(1, 3)):
                buf[bit // 8] ^= 1 << (bit % 8)
            data = bytes(buf)
        else:  # oversized_length: a length field above the receiver's maximum payload
            length = rng.randint(MAX_PAYLOAD + 1, 0xFFFF)
            data = make_frame(0x81, rng.randint(0, 0xFFFF), rng.randbytes(rng.randint(0, 300)), length)
        items.append(Item("F", category, data, expected, checksum))
    return items


# --- JSON payloads ----------------------------------------------------------------------------


def text(rng: random.Random, n: int) -> str:
    """Random text from ASCII, Latin, Greek, CJK, emoji, controls; no lone surrogates (see the xfail test)."""
    pools = ("abcxyz019 -_/+#\"\\", "\x00\x01\x1f\x7f", "\u00e9\u00df\u00b2\u0663", "\u03a9\u4e2d\u6587",
             "\U0001f600\U0001f50b", "\u0301\u200b\ufeff\uffff")
    return "".join(rng.choice(rng.choice(pools)) for _ in range(n))


def valid_data(rng: random.Random) -> dict:
    edge = rng.random() < 0.2
    s = rng.choice([0, M30]) if edge else rng.randint(0, 3000)
    msg = {"b": rng.choice([0, M30]) if edge else rng.randint(0, 2), "s": s,
           "lo": rng.choice([0, s]) if edge else rng.randint(0, s), "d": rng.randint(0, M30),
           "t": rng.randint(0, M30), "tm": rng.randint(0, 999), "tr": rng.randint(0, 1)}
    lo, hi = wire.PACK_QUANTITIES[0][4:6]
    msg["i"] = rng.choice([lo, hi]) if edge else rng.randint(lo, hi)
    cells = rng.choice([1, wire.MAX_CELLS]) if edge else rng.randint(1, 16)
    for q in wire.CELL_QUANTITIES:
        lo, hi = q[4], q[5]
        msg[q[0]] = [rng.choice([lo, hi]) if edge else rng.randint(lo, hi) for _ in range(cells)]
    keys = list(msg)
    rng.shuffle(keys)  # key order is free on the wire
    return {k: msg[k] for k in keys}


def valid_birth(rng: random.Random) -> dict:
    msg = {"pv": 1, "b": rng.randint(0, M30), "bd": rng.randint(0, M30), "n": rng.randint(1, wire.MAX_CELLS),
           "q": rng.randint(0, 5000), "d": rng.randint(0, M30), "fw": text(rng, rng.randint(0, 20)),
           "al": wire.alias_table()}
    if rng.random() < 0.2:
        msg["extra"] = rng.randint(0, 9)  # check_birth ignores unknown keys (check_data does not)
    return msg


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


BAD_VALUES = (
    "12", "", True, False, None, 1.5, 0.0, -0.0, float("nan"), float("inf"), float("-inf"), 2**64, -(2**64),
    2**30, -(2**30), 2**63, 10**300, "NaN", "Infinity", "-Infinity", [[1]], [[[[[[2]]]]]], {"x": 1}, {},
    "x" * 9000, [1, [2, [3]]], [[None]], "\u00e9\U0001f600\x00",
)


def bad_value(rng: random.Random) -> object:
    """A value no wire field accepts: not an int, or outside +-2**30."""
    return text(rng, 5) if rng.random() < 0.05 else rng.choice(BAD_VALUES)


def mutate(rng: random.Random, msg: dict, kind: str) -> dict:
    """One change that makes a valid message invalid."""
    m = dict(msg)
    r = rng.random()
    keys = [k for k in m if not (kind == "birth" and k == "extra")]
    key = rng.choice(keys)
    if r < 0.15:
        del m[key]
    elif r < 0.25 and kind == "data":
        m[rng.choice(["x", "V", "\u00e9", "\U0001f600", "", "bb", "i "])] = rng.choice([0, [1], "v"])
    elif r < 0.35 and kind == "data":
        choice = rng.randrange(4)
        alias = rng.choice([q[0] for q in wire.CELL_QUANTITIES])
        cells = len(m["v"])
        if choice == 0:  # cell-count mismatch
            m[alias] = m[alias] + [0] if cells < wire.MAX_CELLS or rng.random() < 0.5 else m[alias][:-1]
        elif choice == 1:  # too many cells (all lists agree)
            for q in wire.CELL_QUANTITIES:
                m[q[0]] = [q[4]] * (wire.MAX_CELLS + 1)
        elif choice == 2:  # no cells
            m[alias] = []
        else:
            m["lo"], m["s"] = m["s"] + 1, m["s"]
    elif r < 0.5 and kind == "data" and isinstance(m.get(key), list):
        values = list(m[key])
        value = bad_value(rng)
        while value is None:  # null is a valid cell reading: absent
            value = bad_value(rng)
        values[rng.randrange(len(values))] = value
        m[key] = values
    elif kind == "birth" and key == "al":
        table = {k: list(v) for k, v in m["al"].items()}
        change = rng.randrange(5)
        if change == 0:
            del table[rng.choice(list(table))]
        elif change == 1:
            table["z"] = ["soxbms:Z", "u", "z_u"]
        elif change == 2:
            table[rng.choice(list(table))][1] = "V"
        elif change == 3:
            table = list(table.items())
        else:
            table[rng.choice(list(table))].reverse()
        m["al"] = table
    elif kind == "birth" and key == "n":
        m["n"] = rng.choice([0, wire.MAX_CELLS + 1, bad_value(rng)])
    elif kind == "birth" and key == "fw":
        m["fw"] = rng.choice([1, None, ["0.1"], {"v": "0.1"}, True])
    elif kind == "birth" and key == "pv":
        m["pv"] = rng.choice([0, 2, "1", 1.0, 1.5, True, None, [1], 2**64])
    else:
        value = bad_value(rng)
        while value is None and kind == "data" and key == "i":  # null is a valid current: absent
            value = bad_value(rng)
        m[key] = value
    return m


def dumps(rng: random.Random, value: object) -> bytes:
    sep = rng.choice([(",", ":"), (", ", ": "), (" ,\n", " :\t")])
    return json.dumps(value, ensure_ascii=rng.random() < 0.5, separators=sep).encode()


LEAVES = (
    lambda r: r.randint(-5, 5), lambda r: r.randint(-(2**40), 2**40), lambda r: 2**64, lambda r: -(2**70),
    lambda r: r.random() * 1e6, lambda r: float("nan"), lambda r: r.random() < 0.5, lambda r: None,
    lambda r: text(r, r.randint(0, 12)), lambda r: "", lambda r: r.randint(0, M30),
)
KEYS = ("b", "s", "lo", "d", "t", "tm", "tr", "i", "v", "T", "p", "f", "a", "w", "pv", "bd", "n", "fw", "al", "q")


def random_value(rng: random.Random, depth: int = 0) -> object:
    r = rng.random()
    if depth >= 4 or r < 0.4:
        return rng.choice(LEAVES)(rng)
    if r < 0.65:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {rng.choice(KEYS) if rng.random() < 0.7 else text(rng, 3): random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 8))}


SPECIAL = (
    b"", b" ", b"null", b"0", b"-0", b"[]", b"{}", b"NaN", b"[Infinity]", b"-Infinity", b"1e400", b"[1e400]",
    b'{"bd": NaN}', b'{"bd": Infinity}', b'{"bd": 1e400}', b'{"bd": 12,}', b'{"bd": 012}', b"\xef\xbb\xbf{\"bd\": 1}",
    b'{"bd": 1}\x00', b"\xff\xfe\x00\x00", b"\x80", b'{"bd": "\xff"}', b"9" * 5000, b'{"bd": ' + b"9" * 5000 + b"}",
    b'{"bd": 1} {"bd": 2}', b'{"bd": "\\u00e9"}', b'{"bd": "\\ud83d\\ude00"}', b'{"\\u0062d": 3}',
    b'{"bd": 3, "bd": -1}',
    json.dumps({"bd": 5}).encode("utf-16"), b"[" * 5000, b"{" * 100, b'{"a":' * 1000, b"x" * 9000,
    b'"' + b"x" * 9000 + b'"',
)


def json_items(rng: random.Random, n: int) -> list[Item]:
    makers = {"data": valid_data, "birth": valid_birth, "death": lambda r: {"bd": r.randint(0, M30)}}
    items = [Item("J", "special", payload, kind=rng.choice(list(makers))) for payload in SPECIAL]
    for depth in (100, 1000, 4000, 10000):  # 4000: under the 8 KB payload limit; 10000: 20 KB
        for kind in makers:
            items.append(Item("J", "deep_nesting", f'{{"pv": {deep(depth)}, "bd": {deep(depth)}}}'.encode(), kind=kind))
        items.append(Item("J", "deep_nesting", deep(depth).encode(), kind="data"))
        msg = valid_data(rng)
        msg[rng.choice(list(msg))] = "@DEEP@"  # one field of a valid data message becomes a deep list
        items.append(Item("J", "deep_nesting", dumps(rng, msg).replace(b'"@DEEP@"', deep(depth).encode()),
                          kind="data"))
    weights = {"valid_data": 14, "valid_birth": 4, "valid_death": 3, "mutated_data": 30, "mutated_birth": 10,
               "mutated_death": 4, "random_json": 20, "truncated_json": 15}
    categories = list(weights)
    while len(items) < n:
        category = rng.choices(categories, weights=[weights[c] for c in categories])[0]
        kind = VALID_JSON.get(category) or category.removeprefix("mutated_")
        if kind not in makers:
            kind = rng.choice(list(makers))
        if category in VALID_JSON:
            payload = dumps(rng, makers[kind](rng))
        elif category.startswith("mutated_"):
            payload = dumps(rng, mutate(rng, makers[kind](rng), kind))
        elif category == "random_json":
            payload = dumps(rng, random_value(rng))
        else:  # truncated JSON text of a valid object: never valid JSON itself
            full = dumps(rng, makers[kind](rng))
            payload = full[:rng.randrange(len(full))]
        items.append(Item("J", category, payload, kind=kind))
    return items


def build_corpus() -> list[Item]:
    rng = random.Random(SEED)
    return frame_items(rng, N_FRAME) + json_items(rng, N_JSON)


def write_corpus(items: list[Item], path: Path) -> None:
    categories = FRAME_CATEGORIES + JSON_CATEGORIES
    with path.open("wb") as f:
        for it in items:
            f.write(HEAD.pack(ord(it.corpus), categories.index(it.category), it.expected, it.checksum, len(it.data)))
            f.write(it.data)


# --- (a) replay under MicroPython -------------------------------------------------------------

REPLAY_SCRIPT = r"""
import json
import sys
from soxcommon import frame, validate, wire

MAXP = frame.sample_payload_bytes(wire.MAX_CELLS)
H = frame.HEADER_BYTES
NAMES = sys.argv[3].split(",")
CHECKS = (("check_data", validate.check_data), ("check_birth", validate.check_birth),
          ("check_death", validate.check_death))
counts = {}
problems = []
lenbuf = bytearray(4)


def count(key, n=1):
    counts[key] = counts.get(key, 0) + n


def problem(*args):
    count("problems")
    if len(problems) < 40:
        problems.append([str(a)[:200] for a in args])


def put_len(dst, n):
    frame.put_u32(lenbuf, 0, n)
    dst.write(lenbuf)


def sample_sum(buf, length):
    cells = buf[H + 4]
    if not 0 < cells <= wire.MAX_CELLS or length != frame.sample_payload_bytes(cells):
        return 0
    total = frame.get_u32(buf, H) + cells + buf[H + 5] + frame.get_i32(buf, H + 6)
    off = H + frame.SAMPLE_HEAD_BYTES
    for k in range(cells * frame.CELL_FIELDS):
        total += frame.get_i32(buf, off + 4 * k)
    return total % (1 << 30)


src = open(sys.argv[1], "rb")
dst = open(sys.argv[2], "wb")
index = 0
while True:
    head = src.read(12)
    if not head:
        break
    corpus = head[0]
    cat = NAMES[head[1]]
    expected = frame.get_u16(head, 2)
    expected_sum = frame.get_u32(head, 4)
    data = src.read(frame.get_u32(head, 8))
    if corpus == 70:  # 'F'
        codec = frame.Codec(MAXP)
        good = 0
        total = 0
        try:
            for byte in data:
                if codec.feed(byte):
                    good += 1
                    if codec.type == frame.T_SAMPLE:
                        total = (total + sample_sum(codec.buf, codec.length)) % (1 << 30)
        except Exception as e:
            problem("frame", index, cat, repr(e))
        count("F.records")
        count("F.bytes", len(data))
        count("F.good_frames", good)
        count("F.expected_frames", expected)
        count("F.crc_errors", codec.crc_errors)
        count("F.length_errors", codec.length_errors)
        count("F." + cat + ".good", good)
        if codec.length_errors:
            count("F." + cat + ".with_length_error")
        if good != expected:
            problem("frame count", index, cat, expected, good)
        if total != expected_sum:
            problem("frame checksum", index, cat, expected_sum, total)
    else:
        count("J.records")
        try:
            msg = json.loads(data)
        except ValueError:
            count("J." + cat + ".json_error")
            dst.write(b"\x00")
            msg = None
            data = None
        except Exception as e:
            problem("json.loads raised", index, cat, repr(e))
            dst.write(b"\x02")
            data = None
        if data is not None:
            dst.write(b"\x01")
            for name, check in CHECKS:
                try:
                    result = check(msg)
                except Exception as e:
                    problem(name + " raised", index, cat, repr(e))
                    put_len(dst, 0xFFFFFFFE)
                    continue
                if result is None:
                    count("J." + cat + "." + name + ".ok")
                    put_len(dst, 0xFFFFFFFF)
                elif isinstance(result, str) and result:
                    encoded = result.encode()
                    put_len(dst, len(encoded))
                    dst.write(encoded)
                else:
                    problem(name + " returned", index, cat, repr(result))
                    put_len(dst, 0xFFFFFFFE)
        msg = None
    index += 1
dst.close()
print(json.dumps({"counts": counts, "problems": problems}))
"""

RAISED = object()


def read_results(path: Path, n_json: int) -> list[object]:
    """Per JSON record: None (json.loads failed) or a tuple of three check results."""
    raw = path.read_bytes()
    out: list[object] = []
    pos = 0
    for _ in range(n_json):
        status = raw[pos]
        pos += 1
        if status != 1:
            out.append(None)
            continue
        results: list[object] = []
        for _ in range(3):
            (n,) = struct.unpack_from("<I", raw, pos)
            pos += 4
            if n == 0xFFFFFFFF:
                results.append(None)
            elif n == 0xFFFFFFFE:
                results.append(RAISED)
            else:
                results.append(raw[pos:pos + n].decode("utf-8", "surrogatepass"))
                pos += n
        out.append(tuple(results))
    assert pos == len(raw), "result file longer than the JSON corpus"
    return out


def cpython_checks(payload: bytes) -> tuple[object, ...] | None:
    try:
        msg = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return (validate.check_data(msg), validate.check_birth(msg), validate.check_death(msg))


def normalise(result: object) -> object:
    # With several unknown keys, which one is named follows dict iteration order, which differs
    # between MicroPython and CPython; and MicroPython's json keeps \uD83D\uDE00 as two code points.
    if isinstance(result, str) and result.startswith("unknown alias "):
        return "unknown alias *"
    return result


@pytest.fixture(scope="module")
def corpus() -> list[Item]:
    return build_corpus()


def test_corpus_shape(corpus: list[Item]) -> None:
    assert len(corpus) >= 10_000
    assert frame_items(random.Random(SEED), 100) == corpus[:100], "the corpus must be reproducible from SEED"
    by_cat = {c: sum(it.category == c for it in corpus) for c in FRAME_CATEGORIES + JSON_CATEGORIES}
    assert all(n > 0 for n in by_cat.values()), by_cat
    # the frame generator is checked against itself with zlib: intact frames carry the CRC residue
    for it in corpus:
        if it.category in ("valid_sample", "valid_request", "garbage_payload"):
            assert zlib.crc32(it.data[2:]) == 0x2144DF1C
    assert any(len(it.data) > wire.MAX_PAYLOAD_BYTES for it in corpus if it.corpus == "J")
    assert any(b"[" * 10000 in it.data for it in corpus)


def test_replay_under_micropython(corpus: list[Item], tmp_path: Path) -> None:
    start = time.monotonic()
    src, dst = tmp_path / "corpus.bin", tmp_path / "results.bin"
    write_corpus(corpus, src)
    names = ",".join(FRAME_CATEGORIES + JSON_CATEGORIES)
    out = run_mpy(REPLAY_SCRIPT, heap_kb=MPY_HEAP_KB, timeout=50, args=(src, dst, names))
    report = json.loads(out.strip().splitlines()[-1])
    counts, problems = report["counts"], report["problems"]
    print(f"\nMicroPython replay ({time.monotonic() - start:.1f} s):")
    for key in sorted(counts):
        print(f"  {key}: {counts[key]}")
    assert problems == [], f"{counts.get('problems')} problems under MicroPython, first ones: {problems}"

    frames = [it for it in corpus if it.corpus == "F"]
    jsons = [it for it in corpus if it.corpus == "J"]
    assert counts["F.records"] == len(frames) and counts["J.records"] == len(jsons)
    intact = sum(it.expected for it in frames)
    assert intact >= 1500
    assert counts["F.good_frames"] == counts["F.expected_frames"] == intact
    for cat in ("random_bytes", "sync_noise", "truncated", "flipped_bits", "oversized_length"):
        assert counts.get(f"F.{cat}.good", 0) == 0, cat
    n_oversized = sum(it.category == "oversized_length" for it in frames)
    assert counts["F.oversized_length.with_length_error"] == n_oversized
    assert counts["F.crc_errors"] > 0

    # every valid message is accepted by its checker (so validation cannot reject everything) ...
    for cat, kind in VALID_JSON.items():
        n = sum(it.category == cat for it in jsons)
        assert n > 50 and counts.get(f"J.{cat}.check_{kind}.ok") == n, cat
    # ... and no message broken by construction passes the check it was made for
    for cat in ("mutated_data", "mutated_birth", "mutated_death"):
        assert f"J.{cat}.check_{cat.removeprefix('mutated_')}.ok" not in counts, cat
    assert counts.get("J.truncated_json.json_error") == sum(it.category == "truncated_json" for it in jsons)

    # differential: the shared checks give the same answers on board and host for every payload
    # both JSON parsers accept (they differ on NaN, leading zeros, trailing commas, nesting depth)
    mpy_results = read_results(dst, len(jsons))
    compared = 0
    for it, mine in zip(jsons, mpy_results, strict=True):
        host = cpython_checks(it.data)
        if mine is None or host is None:
            continue
        compared += 1
        assert [normalise(r) for r in mine] == [normalise(r) for r in host], (it.category, it.data[:300])
    print(f"  differential: {compared} payloads parsed by both interpreters gave identical check results")
    assert compared > len(jsons) // 2


# --- (b) host ingest and store ----------------------------------------------------------------


def _no_constants(token: str) -> None:
    raise ValueError(f"{token} is not JSON (RFC 8259)")


def strict_json(payload: bytes) -> object:
    """JSON as the wire defines it (RFC 8259 text in UTF-8): no byte order mark, no UTF-16, no
    NaN/Infinity, no lone surrogate escapes. CPython's json module alone allows all four."""
    text = payload.decode("utf-8")
    if text.startswith("\ufeff"):
        raise ValueError("byte order mark")
    msg = json.loads(text, parse_constant=_no_constants)
    json.dumps(msg, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError on a lone surrogate
    return msg


def oracle(topic_kind: str, payload: bytes) -> bool:
    """Whether a payload on a valid topic of this kind follows the wire definition."""
    if len(payload) > wire.MAX_PAYLOAD_BYTES:
        return False
    try:
        msg = strict_json(payload)
    except (ValueError, RecursionError):
        return False
    checks = {"data": validate.check_data, "birth": validate.check_birth, "death": validate.check_death}
    return checks[topic_kind](msg) is None


def test_host_ingest_and_store(corpus: list[Item], tmp_path: Path) -> None:
    start = time.monotonic()
    rng = random.Random(SEED + 1)
    records = []
    n_invalid_topic = n_valid_topic = 0
    accepted = {"data": 0, "birth": 0, "death": 0}
    for it in corpus:
        device = rng.choice(["dev-1"] * 8 + ["dev-2", "Bms_07"])  # dev-2, Bms_07: not registered
        kind = it.kind if it.corpus == "J" else rng.choice(["data", "birth", "death"])
        for topic in (wire.topic(device, kind), rng.choice(INVALID_TOPICS)):
            valid_topic = topic.startswith("soxbms/v1/") and topic.count("/") == 3 and topic.endswith("/" + kind) \
                and wire.valid_device_id(topic.split("/")[2])
            received_at = 1.0 + len(records)
            rec = parse(topic, it.data, received_at)  # must never raise
            records.append(rec)
            expected_ok = valid_topic and oracle(kind, it.data)
            if not valid_topic:
                n_invalid_topic += 1
            else:
                n_valid_topic += 1
            if not expected_ok:
                assert isinstance(rec, Rejected), (topic, it.category, it.data[:200], rec)
                assert isinstance(rec.reason, str) and rec.reason.strip(), (topic, it.data[:200])
                assert rec.topic == topic and rec.payload == it.data and rec.received_at == received_at
                continue
            assert it.category not in INVALID_JSON and it.corpus == "J", (it.category, it.data[:200])
            msg = json.loads(it.data)
            want = {"data": DataRecord, "birth": BirthRecord, "death": DeathRecord}[kind]
            assert type(rec) is want and rec.device == device and rec.received_at == received_at
            accepted[kind] += 1
            if isinstance(rec, DataRecord):
                assert (rec.boot, rec.seq, rec.low_seq, rec.dropped, rec.t_s, rec.t_ms, rec.time_relative,
                        rec.current_mA) == tuple(msg[k] for k in ("b", "s", "lo", "d", "t", "tm", "tr", "i"))
                assert rec.cells == tuple(zip(*(msg[q[0]] for q in wire.CELL_QUANTITIES), strict=True))
            elif isinstance(rec, BirthRecord):
                assert (rec.boot, rec.session, rec.cells, rec.firmware) == (msg["b"], msg["bd"], msg["n"], msg["fw"])
            else:
                assert rec.session == msg["bd"]
        # the valid messages made on purpose are accepted on their own topic
        if it.category in VALID_JSON:
            assert not isinstance(records[-2], Rejected), (it.category, records[-2])
    parse_s = time.monotonic() - start
    rejected = sum(isinstance(r, Rejected) for r in records)
    n_valid_data = sum(it.category == "valid_data" for it in corpus)
    assert accepted["data"] == n_valid_data and accepted["birth"] > 50 and accepted["death"] > 50

    store = open_store(str(tmp_path / "fuzz.sqlite"))
    try:
        store.add_device("dev-1", "x")
        stored = duplicates = quarantined = 0
        for k in range(0, len(records), 500):
            result = store.write_batch(records[k:k + 500])
            stored += result.stored
            duplicates += result.duplicates
            quarantined += result.quarantined
        registered = [r for r in records if not isinstance(r, Rejected) and r.device == "dev-1"]
        # birth and death records of a registered device are neither stored samples nor quarantined:
        # they update the device row and add a device_event
        events = sum(isinstance(r, BirthRecord | DeathRecord) for r in registered)
        assert store.count("quarantine") == quarantined == len(records) - len(registered)
        assert store.count("quarantine") + stored + duplicates + events == len(records)
        assert stored + duplicates == sum(isinstance(r, DataRecord) for r in registered)
        assert store.count("sample") == stored > 0 and duplicates > 0
        assert store.count("device_event") == events
        keys = {(r.boot, r.seq) for r in registered if isinstance(r, DataRecord)}
        assert stored == len(keys)
    finally:
        store.close()
    print(f"\nhost ingest: {len(records)} records ({n_valid_topic} on valid topics, {n_invalid_topic} on invalid"
          f" ones) in {parse_s:.1f} s; accepted {accepted}, rejected {rejected}")
    print(f"store ({time.monotonic() - start - parse_s:.1f} s): stored {stored}, duplicates {duplicates},"
          f" quarantined {quarantined}, birth/death events {events}")


def _write_one(rec: Record, tmp_path: Path) -> int:
    store = open_store(str(tmp_path / "s.sqlite"))
    try:
        store.add_device("dev-1", "x")
        store.write_batch([rec])
        return store.count("quarantine")
    finally:
        store.close()


def test_protocol_version_text_is_not_echoed(tmp_path: Path) -> None:
    """A non-integer "pv" is not copied into the reason (a deep list made MicroPython's check_birth
    raise RuntimeError; a quoted input could make the quarantine row unstorable)."""
    rec = parse("soxbms/v1/dev-1/birth", json.dumps({"pv": "x" * 5000}).encode(), 1.0)
    assert isinstance(rec, Rejected) and rec.reason == "unsupported protocol version (not an integer)"
    assert _write_one(rec, tmp_path) == 1


def test_birth_firmware_with_lone_surrogate_does_not_break_a_batch(tmp_path: Path) -> None:
    """A JSON escape of a lone surrogate is no text a database can hold: rejected, not a failed batch."""
    payload = {"pv": 1, "b": 1, "bd": 1, "n": 2, "q": 0, "d": 0, "fw": "\ud800", "al": wire.alias_table()}
    rec = parse("soxbms/v1/dev-1/birth", json.dumps(payload).encode(), 1.0)
    assert isinstance(rec, Rejected)
    assert _write_one(rec, tmp_path) == 1


def test_unknown_alias_with_lone_surrogate_is_quarantined(tmp_path: Path) -> None:
    msg = valid_data(random.Random(1))
    msg["\udfff"] = 1
    rec = parse("soxbms/v1/dev-1/data", json.dumps(msg).encode(), 1.0)
    assert isinstance(rec, Rejected)
    assert _write_one(rec, tmp_path) == 1


def test_nan_and_infinity_are_never_values() -> None:
    """CPython's json accepts NaN/Infinity tokens and huge exponents; the host rejects them all."""
    for token in ("NaN", "Infinity", "-Infinity", "1e400"):
        msg = valid_data(random.Random(2))
        payload = json.dumps(msg).replace(f'"t": {msg["t"]}', f'"t": {token}').encode()
        assert math.isnan(json.loads(payload)["t"]) or math.isinf(json.loads(payload)["t"])
        rec = parse("soxbms/v1/dev-1/data", payload, 1.0)
        assert isinstance(rec, Rejected) and rec.reason.startswith("malformed JSON")
