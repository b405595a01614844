"""Per-device broker credentials and ACL: a board can write only its own topics and read only its
own ack and command topics; the host reads and writes the whole tree."""

from __future__ import annotations

import queue
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from host.broker import make_broker
from host.devices import add_device, host_credentials, write_broker_auth
from host.store import open_store


def client(port: int, user: str, password: str, inbox: queue.Queue | None = None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    connected: queue.Queue = queue.Queue()
    c.on_connect = lambda cl, u, f, reason, p: connected.put(reason)
    if inbox is not None:
        c.on_message = lambda cl, u, msg: inbox.put((msg.topic, msg.payload))
    c.connect("127.0.0.1", port)
    c.loop_start()
    reason = connected.get(timeout=10)
    if reason.is_failure:
        c.loop_stop()  # no thread left retrying after the test
        raise AssertionError(f"{user} refused: {reason}")
    return c


@pytest.fixture
def secured(tmp_path: Path):
    store = open_store(str(tmp_path / "db.sqlite"))
    creds = {d: add_device(store, d).password for d in ("board-01", "board-02")}
    pw, acl = write_broker_auth(tmp_path, store)
    store.close()
    broker = make_broker(tmp_path / "broker", password_file=pw, acl_file=acl)
    broker.start()
    yield broker, creds, host_credentials(tmp_path)
    broker.stop()


def subscribed(c: mqtt.Client, topic: str) -> None:
    done: queue.Queue = queue.Queue()
    c.on_subscribe = lambda cl, u, mid, reasons, p: done.put(reasons)
    c.subscribe(topic, qos=1)
    done.get(timeout=10)


def test_board_cannot_publish_as_another(secured) -> None:
    broker, creds, host = secured
    inbox: queue.Queue = queue.Queue()
    watcher = client(broker.port, host.user, host.password, inbox)
    subscribed(watcher, "soxbms/v1/#")
    board = client(broker.port, "board-01", creds["board-01"])
    board.publish("soxbms/v1/board-02/data", b"forged", qos=1).wait_for_publish(10)
    board.publish("soxbms/v1/board-01/ack", b"not mine to write", qos=1).wait_for_publish(10)
    board.publish("soxbms/v1/board-01/data", b"marker", qos=1).wait_for_publish(10)
    # The broker keeps one client's messages in order: when the marker arrives, the forged
    # ones would have arrived before it.
    topic, payload = inbox.get(timeout=10)
    assert (topic, payload) == ("soxbms/v1/board-01/data", b"marker")
    assert inbox.empty()
    for c in (board, watcher):
        c.disconnect()
        c.loop_stop()


def test_board_reads_only_its_own_acks_and_commands(secured) -> None:
    broker, creds, host = secured
    inbox: queue.Queue = queue.Queue()
    board = client(broker.port, "board-01", creds["board-01"], inbox)
    subscribed(board, "soxbms/v1/board-02/ack")
    subscribed(board, "soxbms/v1/board-01/cmd/#")
    hub = client(broker.port, host.user, host.password)
    hub.publish("soxbms/v1/board-02/ack", b"for board-02", qos=1).wait_for_publish(10)
    hub.publish("soxbms/v1/board-01/cmd/time", b"for board-01", qos=1).wait_for_publish(10)
    assert inbox.get(timeout=10) == ("soxbms/v1/board-01/cmd/time", b"for board-01")
    assert inbox.empty()
    for c in (board, hub):
        c.disconnect()
        c.loop_stop()


def test_wrong_password_is_refused(secured) -> None:
    broker, creds, _ = secured
    with pytest.raises(AssertionError, match="refused"):
        client(broker.port, "board-01", creds["board-02"])
