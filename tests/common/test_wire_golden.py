"""Golden vectors for the shared wire code (firmware/soxcommon/wire.py, validate.py and frame.py).

One snippet, GOLDEN_SCRIPT, runs unchanged under MicroPython and CPython and prints a JSON
document; both outputs must equal tests/common/golden_wire.json byte for byte. The frame
vectors of the golden file are then checked independently with zlib.crc32 and struct, and a few
entries against hand-written expectations, so the golden file is not only our own output echoed
back.

After an intended change of the wire, regenerate the golden file with

    .venv/bin/python -m tests.common.test_wire_golden --regenerate

(it refuses to write when MicroPython and CPython disagree) and review the diff.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import zlib
from pathlib import Path

import pytest

from soxcommon import frame, ontology, wire
from tests.mpy import run_host, run_mpy

GOLDEN_PATH = Path(__file__).with_name("golden_wire.json")
REGENERATE_HINT = ".venv/bin/python -m tests.common.test_wire_golden --regenerate"

M30 = 2**30 - 1  # the largest magnitude a wire value may have
# Inputs of the frame vectors; the golden script is built from these, and the independent check
# below compares what struct decodes from the golden bytes with them.
REQ_SEQ = 70000  # above 16 bits: the frame carries REQ_SEQ & 0xFFFF
REPLY_SEQ = 0xBEEF
REPLY_T_MS = 3735928559  # 0xDEADBEEF: a u32 with the top bit set
REPLY_FLAGS = 0x81
REPLY_CURRENT = -M30
REPLY_CELLS = [  # 2 cells x 6 fields (wire.CELL_QUANTITIES order)
    [M30, -M30, -1, 0, 1, -600],
    [3700, 250, -M30 + 1, M30 - 1, -2, 1550000],
]

GOLDEN_SCRIPT = r"""
import binascii
import json
from soxcommon import frame, validate, wire

out = []


def emit(name, value):
    out.append(json.dumps(name) + ": " + json.dumps(value))


def items(d):
    # dict iteration order differs between MicroPython and CPython: emit sorted pairs
    return [[k, d[k]] for k in sorted(d)]


def hexof(buf, n):
    return binascii.hexlify(bytes(buf[:n])).decode()


emit("protocol", [wire.PROTOCOL_VERSION, wire.TOPIC_ROOT, wire.INT_LIMIT, wire.MAX_CELLS,
                  wire.MAX_PAYLOAD_BYTES, wire.DEVICE_ID_MAX])
emit("alias_table", items(wire.alias_table()))
emit("topics", [wire.topic("dev-1", k) for k in ("birth", "data", "state", "event", "death", "ack", "cmd/reboot")])

for name, topic in (
    ("data", "soxbms/v1/dev-1/data"),
    ("cmd", "soxbms/v1/bms_07/cmd/set/x"),
    ("no_kind", "soxbms/v1/dev-1"),
    ("empty_device", "soxbms/v1//data"),
    ("empty_kind", "soxbms/v1/dev-1/"),
    ("old_version", "soxbms/v0/dev-1/data"),
    ("other_root", "other/v1/dev-1/data"),
    ("empty", ""),
):
    try:
        result = ["ok"] + list(wire.split_topic(topic))
    except ValueError as e:
        result = ["ValueError", str(e)]
    emit("split_topic." + name, result)

emit("valid_device_id", [[name, wire.valid_device_id(dev)] for name, dev in (
    ("plain", "dev-1"),
    ("underscore", "bms_07"),
    ("one_char", "a"),
    ("max_len", "x" * 32),
    ("too_long", "x" * 33),
    ("empty", ""),
    ("slash", "a/b"),
    ("plus", "a+b"),
    ("hash", "a#"),
    ("space", "a b"),
    ("dot", "a.b"),
    ("latin1_letter", "d\u00e9v"),
    ("greek_letter", "\u03a9"),
    ("superscript_two", "x\u00b2"),
    ("arabic_digit", "\u0663"),
    ("fullwidth_digit", "\uff11"),
    ("nul", "a\x00"),
)])


def data_msg(cells):
    msg = {"b": 3, "s": 41, "lo": 40, "d": 0, "t": 770000000, "tm": 999, "tr": 0, "i": -1500}
    for k, q in enumerate(wire.CELL_QUANTITIES):
        msg[q[0]] = [q[4] + c * 7 + k for c in range(cells)]
    return msg


def with_(msg, key, value):
    m = dict(msg)
    m[key] = value
    return m


def without(msg, key):
    m = dict(msg)
    del m[key]
    return m


def estimated(msg, cells):
    m = dict(msg)
    for k, q in enumerate(wire.ESTIMATE_QUANTITIES):
        m[q[0]] = [q[4] + 100 * c + k for c in range(cells)]
    m[wire.SOS_LEVEL[0]] = 2
    m[wire.SOS_REASONS[0]] = [wire.reason(0, 1, 2), wire.reason(6, 0, 1)]
    return m


good = data_msg(2)
est = estimated(good, 2)
edge = data_msg(1)
for q in wire.CELL_QUANTITIES:
    edge[q[0]] = [q[5]]
edge["b"] = edge["s"] = edge["lo"] = edge["d"] = edge["t"] = (1 << 30) - 1
edge["i"] = wire.PACK_QUANTITIES[0][4]
emit("check_data", [[name, validate.check_data(msg)] for name, msg in (
    ("valid", good),
    ("valid_edges", edge),
    ("valid_32_cells", data_msg(32)),
    ("valid_absent_cell", with_(good, "p", [None, 101325])),
    ("valid_absent_column", with_(good, "w", [None, None])),
    ("absent_and_out_of_range", with_(good, "T", [None, 2001])),
    ("valid_absent_current", with_(good, "i", None)),
    ("missing_pack", without(good, "i")),
    ("not_object", [good]),
    ("missing_field", without(good, "t")),
    ("missing_cells", without(good, "f")),
    ("bool_not_int", with_(good, "tr", True)),
    ("bool_in_cells", with_(good, "v", [True, 3700])),
    ("float_not_int", with_(good, "s", 41.0)),
    ("out_of_range_header", with_(good, "tm", 1000)),
    ("out_of_range_negative", with_(good, "b", -1)),
    ("out_of_range_2_30", with_(good, "t", 1 << 30)),
    ("out_of_range_pack", with_(good, "i", 1000001)),
    ("out_of_range_cell", with_(good, "T", [-601, 250])),
    ("lo_above_s", with_(good, "lo", 42)),
    ("cell_count_mismatch", with_(good, "p", [101325])),
    ("too_many_cells", data_msg(33)),
    ("no_cells", with_(good, "v", [])),
    ("unknown_alias", with_(good, "x", 1)),
    ("valid_estimates", est),
    ("valid_estimates_absent_cell", with_(est, "sc", [None, 5000])),
    ("valid_estimates_no_reasons", with_(with_(est, "ss", 0), "sr", [])),
    ("valid_estimates_edges", with_(with_(with_(est, "sh", [0, 20000]), "ss", 3),
                                    "sr", [1, 0xFFFF, 1, 1])),
    ("estimates_without_level", without(est, "ss")),
    ("estimates_missing_list", without(est, "su")),
    ("estimates_level_null", with_(est, "ss", None)),
    ("estimates_level_out_of_range", with_(est, "ss", 4)),
    ("estimates_reasons_null", with_(est, "sr", None)),
    ("estimates_too_many_reasons", with_(est, "sr", [1, 2, 3, 4, 5])),
    ("estimates_reason_zero", with_(est, "sr", [0])),
    ("estimates_reason_bool", with_(est, "sr", [True])),
    ("estimates_soc_out_of_range", with_(est, "sc", [10001, 0])),
    ("estimates_soh_out_of_range", with_(est, "sh", [-1, 0])),
    ("estimates_cell_count_mismatch", with_(est, "sh", [1])),
)])
emit("reason_text", [[code, wire.reason_parts(code), wire.reason_text(code)] for code in (
    wire.reason(0, 3, 2), wire.reason(10, 0, 3), wire.reason(7, 63, 1), wire.reason(200, 1, 1))])

birth = {"pv": 1, "b": 3, "bd": 12, "n": 2, "q": 0, "d": 0, "fw": "0.1.0", "al": wire.alias_table()}
short_table = wire.alias_table()
del short_table["w"]
emit("check_birth", [[name, validate.check_birth(msg)] for name, msg in (
    ("valid", birth),
    ("not_object", "birth"),
    ("wrong_version", with_(birth, "pv", 2)),
    ("version_as_text", with_(birth, "pv", "1")),
    ("version_true", with_(birth, "pv", True)),
    ("version_float", with_(birth, "pv", 1.0)),
    ("no_version", without(birth, "pv")),
    ("zero_cells", with_(birth, "n", 0)),
    ("too_many_cells", with_(birth, "n", 33)),
    ("session_bool", with_(birth, "bd", False)),
    ("no_firmware", without(birth, "fw")),
    ("firmware_not_text", with_(birth, "fw", 1)),
    ("alias_table_short", with_(birth, "al", short_table)),
    ("alias_table_missing", without(birth, "al")),
)])
emit("check_death", [[name, validate.check_death(msg)] for name, msg in (
    ("valid", {"bd": 12}),
    ("valid_max", {"bd": (1 << 30) - 1}),
    ("not_object", 12),
    ("missing", {}),
    ("negative", {"bd": -1}),
    ("too_big", {"bd": 1 << 30}),
    ("bool", {"bd": True}),
)])

# --- frames ---------------------------------------------------------------------------------
H = frame.HEADER_BYTES


def parse_back(data, max_payload):
    rx = frame.Codec(max_payload)
    done = [i for i in range(len(data)) if rx.feed(data[i])]
    return rx, done


tx = frame.Codec(0)
n = tx.encode(frame.T_SAMPLE_REQ, REQ_SEQ, 0)
req = bytes(tx.buf[:n])
emit("frame.request_hex", hexof(req, n))
rx, done = parse_back(req, 64)
emit("frame.request_decoded", [done, rx.type, rx.seq, rx.length, rx.crc_errors, rx.length_errors])

CELLS = REPLY_CELLS
tx = frame.Codec(frame.sample_payload_bytes(len(CELLS)))
frame.put_u32(tx.buf, H, REPLY_T_MS)
tx.buf[H + 4] = len(CELLS)
tx.buf[H + 5] = REPLY_FLAGS
frame.put_i32(tx.buf, H + 6, REPLY_CURRENT)
off = H + frame.SAMPLE_HEAD_BYTES
for cell in CELLS:
    for value in cell:
        frame.put_i32(tx.buf, off, value)
        off += 4
n = tx.encode(frame.T_SAMPLE, REPLY_SEQ, frame.sample_payload_bytes(len(CELLS)))
reply = bytes(tx.buf[:n])
emit("frame.reply_hex", hexof(reply, n))
rx, done = parse_back(reply, frame.sample_payload_bytes(len(CELLS)))
buf = rx.buf
off = H + frame.SAMPLE_HEAD_BYTES
cells = []
for c in range(buf[H + 4]):
    cells.append([frame.get_i32(buf, off + 4 * k) for k in range(frame.CELL_FIELDS)])
    off += 4 * frame.CELL_FIELDS
emit("frame.reply_decoded", [done, rx.type, rx.seq, rx.length, rx.crc_errors, rx.length_errors,
                             frame.get_u32(buf, H), buf[H + 4], buf[H + 5], frame.get_i32(buf, H + 6), cells])

# one flipped bit in the payload: a CRC error, no frame
bad = bytearray(reply)
bad[H + 9] ^= 0x10
rx, done = parse_back(bad, frame.sample_payload_bytes(len(CELLS)))
emit("frame.reply_flipped_bit", [done, rx.crc_errors, rx.length_errors])
# a length field above the receiver's maximum payload: a length error, no frame
rx, done = parse_back(reply, frame.sample_payload_bytes(1))
emit("frame.reply_too_long_for_1_cell", [done, rx.crc_errors, rx.length_errors])

tx = frame.Codec(0)
n = tx.encode(frame.T_NACK, 0, 0)
emit("frame.nack_hex", hexof(tx.buf, n))

# a charger command (three i32 arguments, one negative to cover the sign) and its ack
tx = frame.Codec(frame.COMMAND_PAYLOAD_BYTES)
n = frame.encode_command(tx, REQ_SEQ, frame.C_CHARGER, 58800, 2900, -1)
emit("frame.command_hex", hexof(tx.buf, n))
tx = frame.Codec(frame.ACK_PAYLOAD_BYTES)
tx.buf[H] = frame.C_CHARGER
tx.buf[H + 1] = frame.S_REFUSED
n = tx.encode(frame.T_COMMAND_ACK, REQ_SEQ, frame.ACK_PAYLOAD_BYTES)
emit("frame.ack_hex", hexof(tx.buf, n))

ints = []
scratch = bytearray(4)
for v in (0, 1, -1, 255, -256, 65535, -65536, (1 << 30) - 1, -(1 << 30) + 1, 1 << 30, -(1 << 30)):
    frame.put_i32(scratch, 0, v)
    ints.append([v, hexof(scratch, 4), frame.get_i32(scratch, 0), frame.get_u32(scratch, 0)])
emit("frame.i32_round_trip", ints)
frame.put_u16(scratch, 0, 0xA55A)
emit("frame.u16", [hexof(scratch, 2), frame.get_u16(scratch, 0)])

print("{\n  " + ",\n  ".join(out) + "\n}")
"""

CONSTANTS = (
    f"REQ_SEQ = {REQ_SEQ}\nREPLY_SEQ = {REPLY_SEQ}\nREPLY_T_MS = {REPLY_T_MS}\nREPLY_FLAGS = {REPLY_FLAGS}\n"
    f"REPLY_CURRENT = {REPLY_CURRENT}\nREPLY_CELLS = {REPLY_CELLS!r}\n"
)


def golden_script() -> str:
    return CONSTANTS + GOLDEN_SCRIPT


def produce(interpreter: str = "cpython") -> str:
    """The golden document as the code produces it now, under "cpython" or "micropython"."""
    runner = run_mpy if interpreter == "micropython" else run_host
    return runner(golden_script())


def regenerate() -> Path:
    """Rewrite golden_wire.json from the current code; refuses when the interpreters disagree."""
    host, mpy = produce("cpython"), produce("micropython")
    if host != mpy:
        raise SystemExit("MicroPython and CPython disagree; not writing the golden file:\n"
                         + _first_difference(host, mpy, "cpython", "micropython"))
    json.loads(host)  # must be one valid JSON document
    GOLDEN_PATH.write_text(host)
    return GOLDEN_PATH


def _first_difference(a: str, b: str, name_a: str, name_b: str) -> str:
    for number, (la, lb) in enumerate(zip(a.splitlines(), b.splitlines(), strict=False), start=1):
        if la != lb:
            return f"line {number}:\n  {name_a}: {la}\n  {name_b}: {lb}"
    return f"{name_a} has {len(a.splitlines())} lines, {name_b} {len(b.splitlines())}"


# --- tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden_text() -> str:
    assert GOLDEN_PATH.exists(), f"{GOLDEN_PATH} missing: create it with {REGENERATE_HINT}"
    return GOLDEN_PATH.read_text()


@pytest.fixture(scope="module")
def golden(golden_text: str) -> dict:
    return json.loads(golden_text)


@pytest.fixture(scope="module")
def outputs() -> dict[str, str]:
    return {"cpython": produce("cpython"), "micropython": produce("micropython")}


def test_micropython_and_cpython_agree(outputs: dict[str, str]) -> None:
    host, mpy = outputs["cpython"], outputs["micropython"]
    assert host == mpy, "shared wire code behaves differently on board and host:\n" + _first_difference(
        host, mpy, "cpython", "micropython")


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_output_equals_golden_file(outputs: dict[str, str], golden_text: str, interpreter: str) -> None:
    out = outputs[interpreter]
    assert out == golden_text, (
        f"{GOLDEN_PATH.name} is stale or the wire changed ({interpreter} output differs):\n"
        + _first_difference(golden_text, out, "golden", interpreter)
        + f"\nIf the change is intended, regenerate with: {REGENERATE_HINT}")


def test_wire_table_limits_fit_in_small_ints() -> None:
    m = wire.INT_LIMIT - 1
    assert m == 2**30 - 1
    quantities = wire.CELL_QUANTITIES + wire.PACK_QUANTITIES + wire.ESTIMATE_QUANTITIES
    rows = [(q[0], q[4], q[5]) for q in quantities + (wire.SOS_LEVEL, wire.SOS_REASONS)] + list(wire.DATA_HEADER)
    assert len(rows) == 6 + 1 + 3 + 2 + 7
    for key, lo, hi in rows:
        for bound in (lo, hi):
            assert isinstance(bound, int) and not isinstance(bound, bool), key
            assert -m <= bound <= m, f"{key}: bound {bound} outside +-(2**30 - 1)"
        assert lo <= hi, key
    # Each table entry is unique, and the frame carries one i32 per cell quantity.
    keys = [r[0] for r in rows]
    assert len(keys) == len(set(keys))
    assert len(wire.CELL_QUANTITIES) == frame.CELL_FIELDS


def test_golden_entries_match_hand_written_expectations(golden: dict) -> None:
    """Spot checks written from the wire definition, independent of the code's output."""
    assert golden["protocol"] == [1, "soxbms/v1", 2**30, 32, 8192, 32]
    table = dict(golden["alias_table"])
    assert sorted(table) == ["T", "a", "f", "i", "p", "sc", "sh", "sr", "ss", "su", "v", "w"]
    assert table["sc"] == [ontology.STATE_OF_CHARGE, "bp", "soc_bp"]
    assert table["sh"] == [ontology.STATE_OF_HEALTH, "bp", "soh_bp"]
    assert table["v"][1:] == ["mV", "voltage_mV"]
    assert table["i"][1:] == ["mA", "current_mA"]
    assert golden["topics"][1] == "soxbms/v1/dev-1/data"
    assert golden["topics"][-1] == "soxbms/v1/dev-1/cmd/reboot"
    assert golden["split_topic.data"] == ["ok", "dev-1", "data"]
    assert golden["split_topic.cmd"] == ["ok", "bms_07", "cmd/set/x"]
    for name in ("no_kind", "empty_device", "old_version", "other_root", "empty"):
        assert golden["split_topic." + name][0] == "ValueError", name
    ids = dict(golden["valid_device_id"])
    assert [k for k, ok in ids.items() if ok] == ["plain", "underscore", "one_char", "max_len"]

    data = dict(golden["check_data"])
    for name in ("valid", "valid_edges", "valid_32_cells", "valid_absent_cell", "valid_absent_column",
                 "valid_absent_current"):
        assert data[name] is None, name
    assert data["missing_pack"] == "field i missing or not an integer"
    assert data["absent_and_out_of_range"] == "field T has a value out of range or not an integer"
    assert data["not_object"] == "data message is not an object"
    assert data["missing_field"] == "field t missing or not an integer"
    assert data["missing_cells"] == "field f missing or not a list of 1..32 cells"
    assert data["bool_not_int"] == "field tr missing or not an integer"
    assert data["bool_in_cells"] == "field v has a value out of range or not an integer"
    assert data["float_not_int"] == "field s missing or not an integer"
    for name in ("out_of_range_header", "out_of_range_negative", "out_of_range_2_30", "out_of_range_pack"):
        assert data[name].endswith(" out of range"), name
    assert data["out_of_range_cell"] == "field T has a value out of range or not an integer"
    assert data["lo_above_s"] == "field lo is above s"
    assert data["cell_count_mismatch"] == "field p has 1 cells, expected 2"
    assert data["too_many_cells"] == "field v missing or not a list of 1..32 cells"
    assert data["unknown_alias"] == "unknown alias x"
    for name in ("valid_estimates", "valid_estimates_absent_cell", "valid_estimates_no_reasons",
                 "valid_estimates_edges"):
        assert data[name] is None, name
    assert data["estimates_without_level"] == "estimate fields without ss: they come all together or not at all"
    assert data["estimates_missing_list"] == "field su missing or not a list of 1..32 cells"
    assert data["estimates_level_null"] == "field ss missing or not an integer"
    assert data["estimates_level_out_of_range"] == "field ss out of range"
    for name in ("estimates_reasons_null", "estimates_too_many_reasons"):
        assert data[name] == "field sr missing or not a list of at most 4 codes", name
    for name in ("estimates_reason_zero", "estimates_reason_bool"):
        assert data[name] == "field sr has a code out of range or not an integer", name
    assert data["estimates_soc_out_of_range"] == "field sc has a value out of range or not an integer"
    assert data["estimates_soh_out_of_range"] == "field sh has a value out of range or not an integer"
    assert data["estimates_cell_count_mismatch"] == "field sh has 1 cells, expected 2"
    # check << 8 | cell << 2 | level, decoded by hand
    assert golden["reason_text"] == [
        [2 + (3 << 2), [0, 3, 2], "cell_voltage_high_mV cell 3 alarm"],
        [3 + (10 << 8), [10, 0, 3], "discharge_current_mA cell 0 critical"],
        [1 + (63 << 2) + (7 << 8), [7, 63, 1], "pressure_rise_Pa cell 63 warn"],
        [1 + (1 << 2) + (200 << 8), [200, 1, 1], "check 200 cell 1 warn"],
    ]

    birth = dict(golden["check_birth"])
    assert birth["wrong_version"] == "unsupported protocol version 2"
    for name in ("version_as_text", "version_true", "version_float", "no_version"):
        assert birth[name] == "unsupported protocol version (not an integer)", name
    assert birth.pop("valid") is None
    assert all(isinstance(reason, str) and reason for reason in birth.values())
    death = dict(golden["check_death"])
    assert (death.pop("valid"), death.pop("valid_max")) == (None, None)
    assert all(isinstance(reason, str) and reason for reason in death.values())


def _frame_fields(hex_text: str) -> tuple[bytes, int, int, int, bytes, int]:
    raw = bytes.fromhex(hex_text)
    sync, length, ftype, seq = struct.unpack_from("<2sHBH", raw, 0)
    assert sync == b"\xa5\x5a"
    assert len(raw) == 7 + length + 4, "length field disagrees with the frame size"
    payload = raw[7:7 + length]
    (crc,) = struct.unpack_from("<I", raw, 7 + length)
    return raw, length, ftype, seq, payload, crc


def test_frame_vectors_independently(golden: dict) -> None:
    """Re-derive the golden frames with struct and zlib.crc32 only (no soxcommon.frame)."""
    residue = 0x2144DF1C
    # sample request: empty payload, sequence masked to 16 bits
    raw, length, ftype, seq, payload, crc = _frame_fields(golden["frame.request_hex"])
    assert (length, ftype, seq, payload) == (0, 0x01, REQ_SEQ & 0xFFFF, b"")
    assert crc == zlib.crc32(raw[2:7])
    assert zlib.crc32(raw) != residue and zlib.crc32(raw[2:]) == residue
    assert golden["frame.request_decoded"] == [[len(raw) - 1], 0x01, REQ_SEQ & 0xFFFF, 0, 0, 0]

    # NACK
    raw, length, ftype, seq, payload, crc = _frame_fields(golden["frame.nack_hex"])
    assert (length, ftype, seq, crc) == (0, 0x7F, 0, zlib.crc32(raw[2:7]))

    # command and its ack
    raw, length, ftype, seq, payload, crc = _frame_fields(golden["frame.command_hex"])
    assert (length, ftype, seq, crc) == (13, 0x02, REQ_SEQ & 0xFFFF, zlib.crc32(raw[2:20]))
    assert struct.unpack("<B3i", payload) == (3, 58800, 2900, -1)
    raw, length, ftype, seq, payload, crc = _frame_fields(golden["frame.ack_hex"])
    assert (length, ftype, seq, payload, crc) == (2, 0x82, REQ_SEQ & 0xFFFF, b"\x03\x01", zlib.crc32(raw[2:9]))

    # 2-cell sample reply
    raw, length, ftype, seq, payload, crc = _frame_fields(golden["frame.reply_hex"])
    n_cells = len(REPLY_CELLS)
    assert (length, ftype, seq) == (10 + 4 * 6 * n_cells, 0x81, REPLY_SEQ)
    assert crc == zlib.crc32(raw[2:7 + length])
    assert zlib.crc32(raw[2:]) == residue
    t_ms, cells, flags, current = struct.unpack_from("<IBBi", payload, 0)
    values = struct.unpack_from(f"<{6 * n_cells}i", payload, 10)
    assert (t_ms, cells, flags, current) == (REPLY_T_MS, n_cells, REPLY_FLAGS, REPLY_CURRENT)
    assert [list(values[6 * c:6 * c + 6]) for c in range(n_cells)] == REPLY_CELLS
    # the integers the codec parsed back equal the ones struct decodes
    assert golden["frame.reply_decoded"] == [
        [len(raw) - 1], 0x81, REPLY_SEQ, length, 0, 0, t_ms, cells, flags, current,
        [list(values[6 * c:6 * c + 6]) for c in range(n_cells)]]
    assert golden["frame.reply_flipped_bit"] == [[], 1, 0]
    assert golden["frame.reply_too_long_for_1_cell"] == [[], 0, 1]

    for v, hex_text, back_i32, back_u32 in golden["frame.i32_round_trip"]:
        assert bytes.fromhex(hex_text) == struct.pack("<i", v)
        assert back_i32 == v and back_u32 == struct.unpack("<I", struct.pack("<i", v))[0]
    assert golden["frame.u16"] == [struct.pack("<H", 0xA55A).hex(), 0xA55A]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regenerate", action="store_true", help=f"rewrite {GOLDEN_PATH.name}")
    args = parser.parse_args(argv)
    if args.regenerate:
        print(f"wrote {regenerate()}")
    else:
        sys.stdout.write(produce())
    return 0


if __name__ == "__main__":
    sys.exit(main())
