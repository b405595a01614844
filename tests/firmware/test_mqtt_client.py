"""firmware/app/mqtt_client.py against a real Mosquitto (client under MicroPython,
checked by a paho-mqtt client) and against scripted fake brokers (retransmit,
re-subscribe, keepalive, partial writes), under MicroPython and CPython.

Every wait is bounded and synchronises on an event (a message, a packet, a
closed socket), never on a sleep.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from amqtt.adapters import BufferReader
from amqtt.mqtt.connect import ConnectPacket

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from host.broker import free_port, make_broker
from host.devices import hash_password
from tests.mpy import run_host, run_mpy

HOST = "127.0.0.1"
WAIT = 15.0  # upper bound for any single event

RUNNERS = pytest.mark.parametrize("runner", [run_mpy, run_host], ids=["micropython", "cpython"])

# Shared prelude of the board-side scripts (common MicroPython/CPython subset).
PRELUDE = """
import sys
from app.mqtt_client import MqttClient, ticks_diff, ticks_ms

HOST = "127.0.0.1"
PORT = int(sys.argv[1])

def wait(c, cond, ms, what):
    # Poll the client until cond() holds; fail loudly on link loss or timeout.
    t0 = ticks_ms()
    while not cond():
        if not c.poll(20):
            raise OSError("link lost while waiting for " + what)
        if ticks_diff(ticks_ms(), t0) > ms:
            raise OSError("timeout waiting for " + what)
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """The project's broker with its shipped config (anonymous here), as the board meets it."""
    b = make_broker(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    yield b.port
    b.stop()


class Watcher:
    """paho-mqtt 2.x subscriber recording every message; optional per-topic reactions."""

    def __init__(self, port: int, topics: list[str], client_id: str) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self.reactions: dict[str, object] = {}
        self._cond = threading.Condition()
        self._subacked: set[int] = set()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(HOST, port, keepalive=30)
        self.client.loop_start()
        mids = [self.client.subscribe(t, qos=1)[1] for t in topics]
        assert self.wait_for(lambda: self._subacked.issuperset(mids)), "paho subscribe not acknowledged"

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            self._subacked.add(mid)
            self._cond.notify_all()

    def _on_message(self, client, userdata, msg) -> None:
        react = self.reactions.get(msg.topic)
        if react:
            react(msg)
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def on(self, topic: str) -> list[paho.MQTTMessage]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate, timeout: float = WAIT) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


E2E_SCRIPT = (
    PRELUDE
    + """
N = int(sys.argv[2])
c = MqttClient("bms-e2e", HOST, PORT, keepalive_s=10, max_inflight=16)
c.set_will("bms/e2e/status", b"offline:session=3", qos=1)
got, acked, subacks = [], [], []
c.on_message = lambda t, p: got.append((t, p))
c.on_puback = acked.append
c.on_suback = lambda pid, codes: subacks.append(codes)
c.connect(5000)
c.subscribe("bms/e2e/cmd", 1)
wait(c, lambda: subacks, 5000, "SUBACK")
print("SUBACK", subacks[0][0])

full = peak = i = 0
while i < N:
    pid = c.publish("bms/e2e/data", b"%d:" % i + b"v" * (i % 300), qos=1)
    if pid is None:  # window of max_inflight unacknowledged messages is full
        full += 1
        if not c.poll(20):
            raise OSError("link lost")
        continue
    peak = max(peak, c.inflight_count())
    i += 1
wait(c, lambda: c.inflight_count() == 0, 10000, "PUBACKs")
print("ACKED", len(acked), len(set(acked)), "WINDOWFULL", full, "PEAK", peak)

c.publish("bms/e2e/hello", b"ready", qos=1)  # the test answers this on bms/e2e/cmd
wait(c, lambda: got, 10000, "command")
print("GOT", got[0][0], got[0][1].decode())
c.close()  # no DISCONNECT: the broker must publish the will
print("CLOSED", c.connected)
"""
)


def test_publish_subscribe_and_will_via_mosquitto(broker):
    n = 500
    w = Watcher(broker, ["bms/e2e/data", "bms/e2e/hello", "bms/e2e/status"], "checker-e2e")
    try:
        w.reactions["bms/e2e/hello"] = lambda msg: w.client.publish("bms/e2e/cmd", b"balance:on", qos=1)
        out = run_mpy(E2E_SCRIPT, args=(broker, n), timeout=90).splitlines()
        assert out == [
            "SUBACK 1",
            out[1],
            "GOT bms/e2e/cmd balance:on",
            "CLOSED False",
        ]
        _, acked, unique, _, full, _, peak = out[1].split()
        assert (int(acked), int(unique)) == (n, n)
        assert int(full) > 0 and int(peak) == 16, "inflight window was not exercised"

        data = w.on("bms/e2e/data")
        assert [m.payload for m in data] == [b"%d:" % i + b"v" * (i % 300) for i in range(n)]
        assert all(m.qos == 1 for m in data)

        assert w.wait_for(lambda: w.on("bms/e2e/status")), "will not published after close()"
        will = w.on("bms/e2e/status")
        assert [(m.payload, m.qos, m.retain) for m in will] == [(b"offline:session=3", 1, False)]
    finally:
        w.stop()


CLEAN_SCRIPT = (
    PRELUDE
    + """
c = MqttClient("bms-clean", HOST, PORT, keepalive_s=10)
c.set_will("bms/clean/status", b"offline", qos=1)
c.connect(5000)
c.disconnect()
print("DISCONNECTED", c.connected)
m = MqttClient("bms-clean-marker", HOST, PORT)
m.connect(5000)
m.publish("bms/clean/status", b"marker", qos=1)
wait(m, lambda: m.inflight_count() == 0, 5000, "PUBACK")
m.disconnect()
"""
)


def test_disconnect_suppresses_will(broker):
    w = Watcher(broker, ["bms/clean/status"], "checker-clean")
    try:
        assert run_mpy(CLEAN_SCRIPT, args=(broker,)).split() == ["DISCONNECTED", "False"]
        # The marker is published after the clean DISCONNECT; a will would have come first.
        assert w.wait_for(lambda: w.on("bms/clean/status"))
        assert [m.payload for m in w.on("bms/clean/status")] == [b"marker"]
    finally:
        w.stop()


REFUSED_SCRIPT = (
    PRELUDE
    + """
for pw in ("wrong", "right"):
    c = MqttClient("bms-auth", HOST, PORT, user="bms", password=pw)
    try:
        c.connect(5000)
        print(pw, "CONNECTED", c.connected)
        c.disconnect()
    except OSError as e:
        print(pw, "OSERROR", c.connected, e)
c = MqttClient("bms-nobody", HOST, int(sys.argv[2]))
try:
    c.connect(5000)
    print("tcp CONNECTED")
except OSError as e:
    print("tcp OSERROR", c.connected)
"""
)


def test_refused_connection_raises_oserror(tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text(f"bms:{hash_password('bms', 'right')}\n")
    secured = make_broker(tmp_path / "broker", password_file=pw)
    secured.start()
    try:
        out = run_mpy(REFUSED_SCRIPT, args=(secured.port, free_port())).splitlines()
    finally:
        secured.stop()
    assert out[0].startswith("wrong OSERROR False MQTT connect refused: return code ")
    rc = int(out[0].split("return code ")[1].split()[0])
    assert rc in (4, 5)  # bad user name or password / not authorized (MQTT 3.2.2.3)
    assert out[1:] == ["right CONNECTED True", "tcp OSERROR False"]


# ---------------------------------------------------------------------------
# Scripted fake brokers: raw sockets in a thread, decoding with code independent
# of the module under test.


class FakeBroker:
    """Listening socket plus a scenario function run in a thread; errors re-raised by join()."""

    def __init__(self, scenario, rcvbuf: int | None = None) -> None:
        self.lsock = socket.socket()
        if rcvbuf:  # small windows make the client see partial writes
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.lsock.bind((HOST, 0))
        self.lsock.listen()
        self.lsock.settimeout(WAIT)
        self.port = self.lsock.getsockname()[1]
        self.ctl = socket.create_server((HOST, 0))  # side channel for "go" signals from the script
        self.ctl.settimeout(WAIT)
        self.ctl_port = self.ctl.getsockname()[1]
        self.record: dict[str, object] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(scenario,), daemon=True)
        self._thread.start()

    def _run(self, scenario) -> None:
        try:
            scenario(self)
        except BaseException as e:  # noqa: BLE001 - reported by join()
            self._error = e

    def accept(self):
        conn, _ = self.lsock.accept()
        conn.settimeout(WAIT)
        return conn, conn.makefile("rb")

    def wait_signal(self) -> bytes:
        conn, _ = self.ctl.accept()
        with conn:
            conn.settimeout(WAIT)
            return conn.recv(16)

    def join(self) -> None:
        self._thread.join(WAIT * 4)
        self.lsock.close()
        self.ctl.close()
        assert not self._thread.is_alive(), "fake broker scenario did not finish"
        if self._error:
            raise self._error


def read_packet(f) -> tuple[int, int, bytes]:
    """(type, flags, body); EOFError when the peer closed."""
    b0 = f.read(1)
    if not b0:
        raise EOFError
    length, shift = 0, 0
    while True:
        d = f.read(1)[0]
        length |= (d & 0x7F) << shift
        shift += 7
        if not d & 0x80:
            break
    body = f.read(length)
    assert len(body) == length, "truncated packet"
    return b0[0] >> 4, b0[0] & 0x0F, body


def split_publish(flags: int, body: bytes) -> tuple[str, int, bytes, int, bool]:
    n = int.from_bytes(body[:2], "big")
    topic = body[2 : 2 + n].decode()
    qos = (flags >> 1) & 3
    pid = int.from_bytes(body[2 + n : 4 + n], "big") if qos else 0
    return topic, pid, body[2 + n + (2 if qos else 0) :], qos, bool(flags & 8)


def split_subscribe(body: bytes) -> tuple[int, list[tuple[str, int]]]:
    pid, i, topics = int.from_bytes(body[:2], "big"), 2, []
    while i < len(body):
        n = int.from_bytes(body[i : i + 2], "big")
        topics.append((body[i + 2 : i + 2 + n].decode(), body[i + 2 + n]))
        i += 3 + n
    return pid, topics


def expect(conn, f, ptype: int, pong: bool = True):
    """Next packet of `ptype`, answering PINGREQs met on the way."""
    while True:
        t, flags, body = read_packet(f)
        if t == 12:
            if pong:
                conn.sendall(b"\xd0\x00")
            continue
        assert t == ptype, f"expected packet type {ptype}, got {t}"
        return flags, body


def handshake(conn, f) -> ConnectPacket:
    t, _flags, body = read_packet(f)
    assert t == 1
    raw = bytes([0x10]) + _varint(len(body)) + body
    pkt = asyncio.run(ConnectPacket.from_stream(BufferReader(raw)))
    conn.sendall(b"\x20\x02\x00\x00")
    return pkt


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        d, n = n & 0x7F, n >> 7
        out.append(d | (0x80 if n else 0))
        if not n:
            return bytes(out)


def drain_to_eof(f) -> int:
    """Read until the client closes; returns how many PINGREQs arrived meanwhile."""
    pings = 0
    while True:
        try:
            t, _, _ = read_packet(f)
        except EOFError:
            return pings
        pings += t == 12


def retransmit_scenario(fb: FakeBroker) -> None:
    rec = fb.record
    # Session 1: accept 3 QoS-1 publishes, ack only the first, then hang up.
    conn, f = fb.accept()
    with conn:
        rec["connect"] = handshake(conn, f)
        _, body = expect(conn, f, 8)
        rec["sub1"] = split_subscribe(body)
        conn.sendall(b"\x90\x03" + body[:2] + b"\x01")
        rec["pub1"] = [split_publish(*expect(conn, f, 3)) for _ in range(3)]
        conn.sendall(b"\x40\x02" + rec["pub1"][0][1].to_bytes(2, "big"))
        conn.shutdown(socket.SHUT_WR)
        drain_to_eof(f)
    # Session 2: expect re-subscribe and DUP re-sends, ack them, then go silent.
    conn, f = fb.accept()
    with conn:
        handshake(conn, f)
        _, body = expect(conn, f, 8)
        rec["sub2"] = split_subscribe(body)
        conn.sendall(b"\x90\x03" + body[:2] + b"\x01")
        rec["pub2"] = [split_publish(*expect(conn, f, 3)) for _ in range(2)]
        for p in rec["pub2"]:
            conn.sendall(b"\x40\x02" + p[1].to_bytes(2, "big"))
        rec["silent_pings"] = drain_to_eof(f)  # no PINGRESP: client must give up


RETRANSMIT_SCRIPT = (
    PRELUDE
    + """
c = MqttClient("bms-fake", HOST, PORT, keepalive_s=1, clean_session=False)
acked = []
c.on_puback = acked.append
c.subscribe("bms/fake/cmd", 1)  # before connect: sent by connect()
c.connect(5000)
pids = [c.publish("bms/fake/data", b"m%d" % i, qos=1) for i in range(3)]
print("PIDS", *pids)
t0 = ticks_ms()
while c.poll(50):
    if ticks_diff(ticks_ms(), t0) > 10000:
        raise OSError("broker hang-up not noticed")
print("DROPPED", c.connected, c.inflight_count(), *acked)
c.connect(5000)
wait(c, lambda: c.inflight_count() == 0, 5000, "PUBACKs after reconnect")
print("ACKED", *acked)
t0 = ticks_ms()
while c.poll(50):
    if ticks_diff(ticks_ms(), t0) > 10000:
        raise OSError("dead link not detected")
print("DEAD", ticks_diff(ticks_ms(), t0))
"""
)


@RUNNERS
def test_retransmit_resubscribe_and_keepalive_timeout(runner):
    fb = FakeBroker(retransmit_scenario)
    out = runner(RETRANSMIT_SCRIPT, args=(fb.port,), timeout=60).splitlines()
    fb.join()
    rec = fb.record

    pids = [int(x) for x in out[0].split()[1:]]
    assert out[0].startswith("PIDS") and len(set(pids)) == 3 and all(0 < p < 65536 for p in pids)
    assert out[1].split() == ["DROPPED", "False", "2", str(pids[0])]
    assert out[2].split() == ["ACKED", *map(str, pids)]
    assert out[3].startswith("DEAD")
    assert 1300 <= int(out[3].split()[1]) <= 6000, "dead link must be declared after ~1.5 x keepalive"

    c = rec["connect"]
    assert (c.client_id, c.variable_header.keep_alive, c.clean_session_flag) == ("bms-fake", 1, False)
    assert not (c.will_flag or c.username_flag or c.password_flag)
    assert rec["sub1"][1] == rec["sub2"][1] == [("bms/fake/cmd", 1)]
    assert rec["sub2"][0] not in pids[1:], "SUBSCRIBE reused an in-flight packet id"
    assert rec["pub1"] == [("bms/fake/data", p, b"m%d" % i, 1, False) for i, p in enumerate(pids)]
    assert rec["pub2"] == [("bms/fake/data", p, b"m%d" % (i + 1), 1, True) for i, p in enumerate(pids[1:])]
    assert rec["silent_pings"] >= 1


def backpressure_scenario(fb: FakeBroker) -> None:
    rec = fb.record
    # Session 1: never read after CONNACK, so the client's outgoing queue overflows.
    conn, f = fb.accept()
    with conn:
        handshake(conn, f)
        rec["signal1"] = fb.wait_signal()
    # Session 2: start reading only once the client reports a backlog; check every byte.
    conn, f = fb.accept()
    with conn:
        handshake(conn, f)
        rec["signal2"] = fb.wait_signal()
        pubs = []
        while True:
            t, flags, body = read_packet(f)
            if t == 14:
                break
            assert t == 3
            pubs.append(split_publish(flags, body))
        rec["pubs"] = pubs
        rec["after_disconnect"] = drain_to_eof(f)


def _payload(i: int) -> bytes:
    return b"%06d" % i + bytes([65 + i % 26]) * 3994


BACKPRESSURE_SCRIPT = (
    PRELUDE
    + """
import socket

def payload(i):
    return b"%06d" % i + bytes([65 + i % 26]) * 3994

def signal(msg):
    s = socket.socket()
    s.connect(socket.getaddrinfo(HOST, int(sys.argv[2]))[0][-1])
    s.send(msg)
    s.close()

# 1. The peer never reads: the bounded queue overflows and the link is dropped.
c = MqttClient("bms-bulk", HOST, PORT, keepalive_s=0)
c.connect(5000)
n = 0
while c.connected and n < 100000:
    c.publish("bms/bulk", payload(n), qos=0)
    n += 1
print("OVERFLOW", c.connected, n < 100000)
signal(b"done")

# 2. Fill the socket until part of a packet waits in our queue, then let the peer drain.
# A small send buffer (SO_SNDBUF, 7 on Linux) makes the kernel accept partial writes while draining.
c.connect(5000)
c.sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_SNDBUF", 7), 4096)
n = 0
while not c.out_pending():
    if c.publish("bms/bulk", payload(n), qos=0) != 0 or n > 100000:
        raise OSError("publish failed before backlog")
    n += 1
print("BACKLOG", n, c.out_pending() > 0)
signal(b"go")
# Keep producing while the peer drains, throttled on the queue as an application would.
target = n + 300
t0 = ticks_ms()
while n < target:
    if ticks_diff(ticks_ms(), t0) > 20000:
        raise OSError("timeout while streaming")
    if c.out_pending() > 8192:
        if not c.poll(20):
            raise OSError("link lost while streaming")
    elif c.publish("bms/bulk", payload(n), qos=0) != 0:
        raise OSError("publish failed while streaming")
    else:
        n += 1
wait(c, lambda: not c.out_pending(), 10000, "drain")
c.disconnect()
print("SENT", n)
"""
)


@RUNNERS
def test_partial_writes_and_bounded_outgoing_queue(runner):
    fb = FakeBroker(backpressure_scenario, rcvbuf=4096)
    out = runner(BACKPRESSURE_SCRIPT, args=(fb.port, fb.ctl_port), timeout=60).splitlines()
    fb.join()
    rec = fb.record
    assert out[0] == "OVERFLOW False True"
    assert out[1].startswith("BACKLOG") and out[1].endswith("True")
    n = int(out[2].split()[1])
    assert (rec["signal1"], rec["signal2"]) == (b"done", b"go")
    assert len(rec["pubs"]) == n
    for i, (topic, pid, payload, qos, dup) in enumerate(rec["pubs"]):
        assert (topic, pid, qos, dup) == ("bms/bulk", 0, 0, False)
        assert payload == _payload(i), f"message {i} corrupted"
    assert rec["after_disconnect"] == 0


BACKOFF_SCRIPT = """
from app.mqtt_client import Backoff
b = Backoff(500, 8000)
print(*[b.next_delay_ms() for _ in range(8)])
b.reset()
print(b.next_delay_ms())
"""


@RUNNERS
def test_backoff(runner):
    first, again = runner(BACKOFF_SCRIPT).splitlines()
    delays = [int(x) for x in first.split()]
    for d, base in zip(delays, [500, 1000, 2000, 4000, 8000, 8000, 8000, 8000], strict=True):
        assert base * 0.8 <= d <= min(base * 1.2, 8000)
    assert 400 <= int(again) <= 600
