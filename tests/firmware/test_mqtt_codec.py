"""firmware/app/mqtt_codec.py: byte-exact across MicroPython and CPython, and
cross-checked against an independent MQTT 3.1.1 codec (amqtt's packet classes)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path

import pytest
from amqtt.adapters import BufferReader
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.pingreq import PingReqPacket
from amqtt.mqtt.pingresp import PingRespPacket
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.subscribe import SubscribePacket

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.mpy import FIRMWARE, run_host, run_mpy

sys.path.insert(0, str(FIRMWARE))
from app import mqtt_codec

# Payloads chosen so the remaining length needs 1, 2 and 3 varint bytes.
MID = 200
BIG = 20000

# Runs unchanged under MicroPython and CPython; prints "name hex" per packet.
ENCODE_SCRIPT = """
from app import mqtt_codec as c

mid = bytes(range(256))[:MID]
big = bytearray(BIG)
for i in range(len(big)):
    big[i] = (i * 7 + 3) & 0xFF
big = bytes(big)
cases = [
    ("connect_full", c.encode_connect("bms-node-7", 15, clean_session=False, user="operator",
        password="s3cr3t", will_topic="bms/node7/status", will_payload=b"offline:42",
        will_qos=1, will_retain=True)),
    ("connect_min", c.encode_connect("n", 0)),
    ("connect_long_will", c.encode_connect("z" * 23, 65535, will_topic="w", will_payload=mid, will_qos=2)),
    ("publish_q0", c.encode_publish("bms/cell/1", b"3.712")),
    ("publish_q0_retain_empty", c.encode_publish("bms/state", b"", retain=True)),
    ("publish_q1_dup_mid", c.encode_publish("bms/Zelle/\\u00b0C", mid, qos=1, dup=True, pid=65535)),
    ("publish_q1_big", c.encode_publish("bms/log", big, qos=1, pid=1)),
    ("subscribe", c.encode_subscribe(1234, [("bms/+/cmd", 1), ("bms/#", 0), ("a", 2)])),
    ("puback", c.encode_puback(513)),
    ("pingreq", c.encode_pingreq()),
    ("disconnect", c.encode_disconnect()),
]
# In place: the header written before a payload already in the buffer, room to spare before it.
buf = bytearray(c.publish_room(b"bms/log") + 3 + MID)
buf[-MID:] = mid
start = c.encode_publish_header(memoryview(buf), len(buf) - MID, b"bms/log", MID, qos=1, pid=258)
cases.append(("publish_in_place", buf[start:]))
try:
    c.encode_publish_header(buf, 8, b"bms/log", MID, qos=1, pid=258)
except ValueError as e:
    cases.append(("publish_no_room", str(e).encode()))
for name, pkt in cases:
    print(name, pkt.hex())
""".replace("MID", str(MID)).replace("BIG", str(BIG))

MID_PAYLOAD = bytes(range(256))[:MID]
BIG_PAYLOAD = bytes((i * 7 + 3) & 0xFF for i in range(BIG))


def _amqtt(cls, data: bytes):
    """Decode one packet with amqtt and check it consumed exactly `data`."""
    reader = BufferReader(data)
    pkt = asyncio.run(cls.from_stream(reader))
    leftover = asyncio.run(reader.read(-1))
    assert leftover == b"", f"{cls.__name__} left {len(leftover)} bytes undecoded"
    return pkt


def _parse_lines(out: str) -> dict[str, bytes]:
    packets = {}
    for line in out.splitlines():
        name, hexdata = line.split(" ", 1)
        packets[name] = bytes.fromhex(hexdata)
    return packets


@pytest.fixture(scope="module")
def mpy_packets() -> dict[str, bytes]:
    return _parse_lines(run_mpy(ENCODE_SCRIPT))


def test_micropython_and_cpython_encode_identically(mpy_packets):
    host = run_host(ENCODE_SCRIPT)
    assert _parse_lines(host) == mpy_packets
    assert len(mpy_packets) == 13
    assert mpy_packets["publish_in_place"] == mqtt_codec.encode_publish("bms/log", MID_PAYLOAD, qos=1, pid=258)
    assert mpy_packets["publish_no_room"] == b"no room for the PUBLISH header"


def test_connect_decoded_by_amqtt(mpy_packets):
    p = _amqtt(ConnectPacket, mpy_packets["connect_full"])
    assert p.fixed_header.flags == 0
    assert (p.proto_name, p.proto_level) == ("MQTT", 4)
    assert p.variable_header.keep_alive == 15
    assert p.client_id == "bms-node-7"
    assert not p.clean_session_flag
    assert p.will_flag and p.will_qos == 1 and p.will_retain_flag
    assert p.payload.will_topic == "bms/node7/status"
    assert p.payload.will_message == b"offline:42"
    assert p.username_flag and p.payload.username == "operator"
    assert p.password_flag and p.payload.password == "s3cr3t"
    assert not p.reserved_flag

    p = _amqtt(ConnectPacket, mpy_packets["connect_min"])
    assert p.client_id == "n" and p.variable_header.keep_alive == 0
    assert p.clean_session_flag
    assert not (p.will_flag or p.username_flag or p.password_flag or p.will_retain_flag)
    assert p.will_qos == 0
    assert mpy_packets["connect_min"] == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x00\x00\x01n"

    data = mpy_packets["connect_long_will"]
    assert data[1] & 0x80, "remaining length > 127 must use a 2-byte varint"
    p = _amqtt(ConnectPacket, data)
    assert p.client_id == "z" * 23 and p.variable_header.keep_alive == 65535
    assert p.will_flag and p.will_qos == 2 and not p.will_retain_flag
    assert p.payload.will_topic == "w" and p.payload.will_message == MID_PAYLOAD


@pytest.mark.parametrize(
    "name, topic, payload, qos, dup, retain, pid, varint_len",
    [
        ("publish_q0", "bms/cell/1", b"3.712", 0, False, False, None, 1),
        ("publish_q0_retain_empty", "bms/state", b"", 0, False, True, None, 1),
        ("publish_q1_dup_mid", "bms/Zelle/\u00b0C", MID_PAYLOAD, 1, True, False, 65535, 2),
        ("publish_q1_big", "bms/log", BIG_PAYLOAD, 1, False, False, 1, 3),
    ],
)
def test_publish_decoded_by_amqtt(mpy_packets, name, topic, payload, qos, dup, retain, pid, varint_len):
    data = mpy_packets[name]
    header = asyncio.run(MQTTFixedHeader.from_stream(BufferReader(data)))
    assert header.bytes_length == 1 + varint_len
    assert header.remaining_length == len(data) - 1 - varint_len
    p = _amqtt(PublishPacket, data)
    assert p.topic_name == topic
    assert p.data == payload
    assert (p.qos, p.dup_flag, p.retain_flag, p.packet_id) == (qos, dup, retain, pid)


def test_subscribe_puback_ping_disconnect_decoded_by_amqtt(mpy_packets):
    p = _amqtt(SubscribePacket, mpy_packets["subscribe"])
    assert p.fixed_header.flags == 0x2  # MQTT-3.8.1-1
    assert p.variable_header.packet_id == 1234
    assert p.payload.topics == [("bms/+/cmd", 1), ("bms/#", 0), ("a", 2)]

    p = _amqtt(PubackPacket, mpy_packets["puback"])
    assert p.packet_id == 513 and p.fixed_header.flags == 0

    assert mpy_packets["pingreq"] == b"\xc0\x00"
    assert _amqtt(PingReqPacket, mpy_packets["pingreq"]).fixed_header.remaining_length == 0
    assert mpy_packets["disconnect"] == b"\xe0\x00"
    assert _amqtt(DisconnectPacket, mpy_packets["disconnect"]).fixed_header.remaining_length == 0


# Reads a binary stream of server->client packets and prints one JSON line per packet.
DECODE_SCRIPT = """
import sys, json, hashlib
from app import mqtt_codec as c

with open(sys.argv[1], "rb") as f:
    data = f.read()
chunk = int(sys.argv[2])
r = c.PacketReader()
for i in range(0, len(data), chunk):
    r.feed(data[i:i + chunk])
    while True:
        p = r.next()
        if p is None:
            break
        t, flags, body = p
        if t == c.CONNACK:
            sp, rc = c.parse_connack(body)
            out = ["CONNACK", sp, rc]
        elif t == c.PUBLISH:
            topic, pid, payload, qos, dup, retain = c.parse_publish(flags, body)
            digest = hashlib.sha256(payload).digest().hex()
            out = ["PUBLISH", topic, pid, len(payload), digest, qos, dup, retain]
        elif t == c.PUBACK:
            out = ["PUBACK", c.parse_pid(body)]
        elif t == c.SUBACK:
            pid, codes = c.parse_suback(body)
            out = ["SUBACK", pid, codes]
        elif t == c.PINGRESP:
            out = ["PINGRESP", len(body)]
        else:
            out = ["OTHER", t]
        print(json.dumps(out))
print(json.dumps(["PENDING", r.pending()]))
"""


def _digest(payload: bytes) -> list:
    return [len(payload), hashlib.sha256(payload).hexdigest()]


@pytest.mark.parametrize("chunk", [1, 7, 100000])
def test_parse_packets_built_by_amqtt(tmp_path, chunk):
    stream = [
        (ConnackPacket.build(1, 0), ["CONNACK", True, 0]),
        (ConnackPacket.build(0, 5), ["CONNACK", False, 5]),
        (
            PublishPacket.build("bms/cmd", b"balance:on", None, False, 0, False),
            ["PUBLISH", "bms/cmd", 0, *_digest(b"balance:on"), 0, False, False],
        ),
        (
            PublishPacket.build("bms/\u00e9t\u00e9", MID_PAYLOAD, 42, True, 1, True),
            ["PUBLISH", "bms/\u00e9t\u00e9", 42, *_digest(MID_PAYLOAD), 1, True, True],
        ),
        (
            PublishPacket.build("bms/fw", BIG_PAYLOAD[:16000], 65535, False, 1, False),
            ["PUBLISH", "bms/fw", 65535, *_digest(BIG_PAYLOAD[:16000]), 1, False, False],
        ),
        (PubackPacket.build(7), ["PUBACK", 7]),
        (SubackPacket.build(300, [1, 0, 0x80]), ["SUBACK", 300, [1, 0, 128]]),
        (PingRespPacket.build(), ["PINGRESP", 0]),
    ]
    path = tmp_path / "stream.bin"
    path.write_bytes(b"".join(p.to_bytes() for p, _ in stream))
    out = run_mpy(DECODE_SCRIPT, args=(path, chunk))
    got = [json.loads(line) for line in out.splitlines()]
    assert got == [want for _, want in stream] + [["PENDING", 0]]


# Feeds 2,000 seeded garbage / truncated / mutated / oversized inputs through
# PacketReader and every parser.  Only ValueError may escape the codec.
FUZZ_SCRIPT = """
import sys, random
from app import mqtt_codec as c

random.seed(20240611)
def rnd(n):
    return bytes([random.getrandbits(8) for _ in range(n)])

valid = [
    c.encode_publish("a/b", b"xyz", qos=1, pid=9),
    c.encode_publish("t", bytes(300)),
    c.encode_subscribe(5, [("x/#", 1)]),
    c.encode_connect("id", 10, user="u", password="p", will_topic="w", will_payload=b"q"),
    b"\\x20\\x02\\x00\\x00", b"\\x40\\x02\\x00\\x07", b"\\x90\\x03\\x00\\x01\\x01", b"\\xd0\\x00",
]
# remaining length > max_len, and varints of 5 bytes
oversized = [b"\\x30\\xff\\xff\\xff\\x7f", b"\\x30\\x81\\x08",
             b"\\x30\\xff\\xff\\xff\\xff\\x01", b"\\x30\\x80\\x80\\x80\\x80"]
parsers = (c.parse_connack, c.parse_pid, c.parse_suback)

cases = errors = packets = 0
for n in range(2000):
    kind = n % 5
    if kind == 0:
        data = rnd(random.getrandbits(7))
    elif kind == 1:
        v = random.choice(valid)
        data = v[:random.getrandbits(9) % (len(v) + 1)]
    elif kind == 2:
        data = bytearray(b"".join(random.choice(valid) for _ in range(3)))
        for _ in range(1 + random.getrandbits(3)):
            data[random.getrandbits(16) % len(data)] = random.getrandbits(8)
        data = bytes(data)
    elif kind == 3:
        data = random.choice(oversized) + rnd(random.getrandbits(6))
    else:
        data = bytes([random.getrandbits(4) << 4 | random.getrandbits(4)]) + rnd(1 + random.getrandbits(5))
    cases += 1
    r = c.PacketReader(max_len=1024)
    try:
        i = 0
        while i < len(data):
            step = 1 + random.getrandbits(5)
            r.feed(data[i:i + step])
            i += step
            while True:
                p = r.next()
                if p is None:
                    break
                packets += 1
                t, flags, body = p
                for f in parsers:
                    try:
                        f(body)
                    except ValueError:
                        errors += 1
                try:
                    c.parse_publish(flags, body)
                except ValueError:
                    errors += 1
    except ValueError:
        errors += 1
print("cases", cases, "packets", packets, "valueerrors", errors)
"""


@pytest.mark.parametrize("runner", [run_mpy, run_host], ids=["micropython", "cpython"])
def test_fuzz_only_value_error(runner):
    out = runner(FUZZ_SCRIPT, timeout=120).split()
    assert out[0::2] == ["cases", "packets", "valueerrors"]
    cases, packets, errors = map(int, out[1::2])
    assert cases == 2000
    assert packets > 500 and errors > 1000  # both paths really exercised


def test_encoder_rejects_invalid_arguments():
    bad = [
        lambda: mqtt_codec.encode_publish("a/+", b""),
        lambda: mqtt_codec.encode_publish("", b""),
        lambda: mqtt_codec.encode_publish("a", b"", qos=1, pid=0),
        lambda: mqtt_codec.encode_publish("a", b"", qos=1, pid=65536),
        lambda: mqtt_codec.encode_publish("a", b"", qos=3, pid=1),
        lambda: mqtt_codec.encode_publish("a", b"", qos=0, dup=True),
        lambda: mqtt_codec.encode_connect("id", 70000),
        lambda: mqtt_codec.encode_connect("id", 10, password="p"),
        lambda: mqtt_codec.encode_subscribe(1, []),
        lambda: mqtt_codec.encode_puback(0),
    ]
    for i, f in enumerate(bad):
        with pytest.raises(ValueError):
            f()
            pytest.fail(f"case {i} accepted")


def test_reader_limits():
    r = mqtt_codec.PacketReader(max_len=100)
    r.feed(b"\x30\x65")  # remaining length 101 > 100
    with pytest.raises(ValueError):
        r.next()
    r = mqtt_codec.PacketReader()
    r.feed(b"\x30\x80\x80\x80\x80\x01")  # five varint bytes, MQTT 2.2.3 allows four
    with pytest.raises(ValueError):
        r.next()
    r = mqtt_codec.PacketReader()
    r.feed(b"\x30\x80")
    assert r.next() is None  # incomplete header is not an error
    r.feed(b"\x01" + b"\x00" * 128)
    assert r.next() == (3, 0, b"\x00" * 128)
    assert r.next() is None and r.pending() == 0
