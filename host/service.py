"""`soxbms serve`: the fleet's ingest service.

A persistent MQTT session (clean_session off, fixed client id) with manual acknowledgement: a
message is acknowledged to the broker, and its record to the board (topic .../ack with the
committed watermark), only after the database commit that holds it. A crash anywhere before the
commit loses nothing: the broker redelivers what was not acknowledged, and the board resends what
the host did not confirm. Several services can share one fleet through a shared subscription
group ($share/GROUP/...) and one PostgreSQL database."""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from host import ingest
from host.records import BirthRecord
from host.store.sql import SqlStore
from soxcommon import wire

log = logging.getLogger("soxbms.serve")

INGEST_TOPICS = ("data", "birth", "death")
PASSWORD_ENV = "SOXBMS_MQTT_PASSWORD"  # the broker password of `soxbms serve`, kept off the command line


@dataclass
class Delivery:
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: float
    generation: int


@dataclass
class ServiceStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    batches: int = 0
    db_errors: int = 0


def parse_broker_url(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname:
        raise ValueError(f"broker URL must look like mqtt://HOST:PORT, got {url!r}")
    return parsed.hostname, parsed.port or 1883


def wire_time_now() -> tuple[int, int]:
    now_ms = int(time.time() * 1000) - wire.EPOCH_2000_UNIX_S * 1000
    return now_ms // 1000, now_ms % 1000


class IngestService:
    def __init__(self, broker_url: str, store: SqlStore, client_id: str = "soxbms-host",
                 group: str | None = None, user: str | None = None, password: str | None = None,
                 batch_max: int = 500, batch_ms: int = 20) -> None:
        self.host, self.port = parse_broker_url(broker_url)
        self.store = store
        self.group = group
        self.batch_max = batch_max
        self.batch_s = batch_ms / 1000
        self.stats = ServiceStats()
        self.connected = threading.Event()
        self._pending: list[Delivery] = []
        self._batch_deadline = 0.0
        self._generation = 0  # connections so far: a delivery's packet id is valid only in its own
        self._stop = threading.Event()
        # Alone, a persistent session lets the broker hold the fleet's messages while the service
        # restarts. In a $share group it must be a clean session: Mosquitto 2.0 keeps dealing
        # messages round-robin to a dead member's persistent session, where they wait until it
        # returns (seen here: a killed member stalled half the fleet). The boards' end-to-end
        # resend covers whatever a dead member held unacknowledged.
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=group is not None,
                                  protocol=mqtt.MQTTv311, manual_ack=True)
        if user:
            self.client.username_pw_set(user, password)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=1, max_delay=4)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.on_ready: Callable[[], None] | None = None

    def subscriptions(self) -> list[tuple[str, int]]:
        prefix = f"$share/{self.group}/" if self.group else ""
        return [(f"{prefix}{wire.TOPIC_ROOT}/+/{kind}", 1) for kind in INGEST_TOPICS]

    # --- paho callbacks (called from client.loop() in run(): one thread, no hand-off) ------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker refused the connection: %s", reason)
            return
        self._generation += 1
        client.subscribe(self.subscriptions())
        self.connected.set()
        log.info("connected to %s:%d", self.host, self.port)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reasons: list[Any],
                      properties: object) -> None:
        failed = [r for r in reasons if getattr(r, "is_failure", False)]
        if failed:
            log.error("broker refused subscriptions: %s", failed)
            return
        if self.on_ready is not None:
            self.on_ready()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       properties: object) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("broker connection lost (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if not self._pending:
            self._batch_deadline = time.monotonic() + self.batch_s
        self._pending.append(Delivery(msg.mid, msg.qos, msg.topic, bytes(msg.payload), time.time(),
                                      self._generation))

    # --- batching ------------------------------------------------------------------------------

    def _commit(self, batch: list[Delivery]) -> None:
        records = [ingest.parse(d.topic, d.payload, d.received_at) for d in batch]
        while True:
            try:
                result = self.store.write_batch(records)
                break
            except Exception:
                self.stats.db_errors += 1
                log.exception("database write failed; retrying in 1 s (nothing is acknowledged)")
                if self._stop.wait(1.0):
                    return
        # Committed: now, and only now, acknowledge to the broker and to the boards. A packet id
        # of an earlier connection may name another message now: those are left to redelivery.
        for d in batch:
            if d.qos > 0 and d.generation == self._generation:
                self.client.ack(d.mid, d.qos)
        for (device, boot), committed in result.acks.items():
            if committed >= 0:
                self.client.publish(wire.topic(device, "ack"), json.dumps({"b": boot, "s": committed}), qos=1)
        for rec in records:
            if isinstance(rec, BirthRecord) and rec.device in self.store.registered():
                t_s, t_ms = wire_time_now()
                self.client.publish(wire.topic(rec.device, "cmd/time"), json.dumps({"t": t_s, "tm": t_ms}),
                                    qos=1)
        s = self.stats
        s.received += len(batch)
        s.stored += result.stored
        s.duplicates += result.duplicates
        s.quarantined += result.quarantined
        s.batches += 1

    def _connect(self) -> None:
        """Connect, retrying every 1-4 s until it works or the service is stopped."""
        delay = 1.0
        while not self._stop.is_set():
            try:
                self.client.connect(self.host, self.port, keepalive=15)
                return
            except OSError as e:
                log.warning("broker %s:%d unreachable (%s); retry in %.0f s", self.host, self.port, e, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 4.0)

    def run(self) -> None:
        """Serve until stop() is called. One thread runs the MQTT loop and the database: measured
        here, a network thread handing messages to a writer thread through a queue ingested a
        fifth slower, the two contending for the GIL."""
        # Ingest makes ~100 short-lived objects a message, freed by reference counting; the cyclic
        # collector's default 700-allocation trigger cost a quarter of parse time here.
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        self._connect()
        last_report = time.monotonic()
        try:
            while not self._stop.is_set():
                wait = min(0.1, max(0.0, self._batch_deadline - time.monotonic())) if self._pending else 0.1
                if self.client.loop(timeout=wait) != mqtt.MQTT_ERR_SUCCESS:
                    self._flush()
                    self._stop.wait(1.0)
                    self._connect()
                    continue
                if self._pending and (len(self._pending) >= self.batch_max
                                      or time.monotonic() >= self._batch_deadline):
                    self._flush()
                if time.monotonic() - last_report > 10:
                    log.info("received %d stored %d duplicates %d quarantined %d", self.stats.received,
                             self.stats.stored, self.stats.duplicates, self.stats.quarantined)
                    last_report = time.monotonic()
            self._flush()
        finally:
            self.client.disconnect()

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._commit(batch)

    def stop(self) -> None:
        self._stop.set()
