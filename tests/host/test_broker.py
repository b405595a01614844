"""`soxbms broker`'s two brokers: Mosquitto with our config, and the embedded amqtt fallback."""

from __future__ import annotations

import queue
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from host.broker import make_broker, mosquitto_conf


def roundtrip(port: int) -> bytes:
    got: queue.Queue[bytes] = queue.Queue()
    subscribed: queue.Queue[object] = queue.Queue()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="roundtrip", protocol=mqtt.MQTTv311)
    c.on_connect = lambda cl, u, f, r, p: cl.subscribe("soxbms/v1/x/data", qos=1)
    c.on_subscribe = lambda cl, u, mid, reasons, p: subscribed.put(reasons)
    c.on_message = lambda cl, u, msg: got.put(msg.payload)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        subscribed.get(timeout=15)
        c.publish("soxbms/v1/x/data", b"hello", qos=1)
        return got.get(timeout=15)
    finally:
        c.disconnect()
        c.loop_stop()


@pytest.mark.parametrize("prefer", ["mosquitto", "amqtt"])
def test_broker_carries_a_message(tmp_path: Path, prefer: str) -> None:
    broker = make_broker(tmp_path, prefer=prefer)
    assert broker.kind == prefer
    broker.start()
    try:
        assert roundtrip(broker.port) == b"hello"
    finally:
        broker.stop()


def test_mosquitto_config_lifts_the_silent_drop_limits(tmp_path: Path) -> None:
    conf = mosquitto_conf(tmp_path, 1883)
    for line in ("max_inflight_messages 0", "max_queued_messages 1000000", "persistence true"):
        assert line in conf.splitlines()
    assert "allow_anonymous true" in conf  # no password file given
    secured = mosquitto_conf(tmp_path, 1883, tmp_path / "pw", tmp_path / "acl")
    assert "allow_anonymous false" in secured and f"acl_file {tmp_path / 'acl'}" in secured
