"""`soxbms serve`: the fleet's ingest service.

A persistent MQTT session (clean_session off, fixed client id) with manual acknowledgement: a
message is acknowledged to the broker, and its record to the board (topic .../ack with the
committed watermark), only after the database commit that holds it. A crash anywhere before the
commit loses nothing: the broker redelivers what was not acknowledged, and the board resends what
the host did not confirm. Several services can share one fleet through a shared subscription
group ($share/GROUP/...) and one PostgreSQL database."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from host import ingest
from host.store.sql import SqlStore
from soxcommon import wire

log = logging.getLogger("soxbms.serve")

EPOCH_2000_UNIX_S = 946684800  # 2000-01-01T00:00:00Z, the wire's epoch (MicroPython's)
INGEST_TOPICS = ("data", "birth", "death")


@dataclass
class Delivery:
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: float


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
    now_ms = int(time.time() * 1000) - EPOCH_2000_UNIX_S * 1000
    return now_ms // 1000, now_ms % 1000


class IngestService:
    def __init__(self, broker_url: str, store: SqlStore, client_id: str = "soxbms-host",
                 group: str | None = None, user: str | None = None, password: str | None = None,
                 batch_max: int = 500, batch_ms: int = 50) -> None:
        self.host, self.port = parse_broker_url(broker_url)
        self.store = store
        self.group = group
        self.batch_max = batch_max
        self.batch_s = batch_ms / 1000
        self.stats = ServiceStats()
        self.connected = threading.Event()
        self._inbox: queue.Queue[Delivery] = queue.Queue()
        self._stop = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
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

    # --- paho callbacks (network thread) ---------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker refused the connection: %s", reason)
            return
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
        self._inbox.put(Delivery(msg.mid, msg.qos, msg.topic, bytes(msg.payload), time.time()))

    # --- batching (main thread) ----------------------------------------------------------------

    def _next_batch(self) -> list[Delivery]:
        try:
            first = self._inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_s
        while len(batch) < self.batch_max:
            left = deadline - time.monotonic()
            try:
                batch.append(self._inbox.get(timeout=left) if left > 0 else self._inbox.get_nowait())
            except queue.Empty:
                break
        return batch

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
        # Committed: now, and only now, acknowledge to the broker and to the boards.
        for d in batch:
            if d.qos > 0:
                self.client.ack(d.mid, d.qos)
        for (device, boot), committed in result.acks.items():
            if committed >= 0:
                self.client.publish(wire.topic(device, "ack"), json.dumps({"b": boot, "s": committed}), qos=1)
        for rec in records:
            if isinstance(rec, ingest.BirthRecord) and rec.device in self.store.registered():
                t_s, t_ms = wire_time_now()
                self.client.publish(wire.topic(rec.device, "cmd/time"), json.dumps({"t": t_s, "tm": t_ms}),
                                    qos=1)
        s = self.stats
        s.received += len(batch)
        s.stored += result.stored
        s.duplicates += result.duplicates
        s.quarantined += result.quarantined
        s.batches += 1

    def run(self) -> None:
        """Serve until stop() is called."""
        self.client.connect_async(self.host, self.port, keepalive=15)
        self.client.loop_start()
        last_report = time.monotonic()
        try:
            while not self._stop.is_set():
                batch = self._next_batch()
                if batch:
                    self._commit(batch)
                if time.monotonic() - last_report > 10:
                    log.info("received %d stored %d duplicates %d quarantined %d", self.stats.received,
                             self.stats.stored, self.stats.duplicates, self.stats.quarantined)
                    last_report = time.monotonic()
            batch = []
            while not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            if batch:
                self._commit(batch)
        finally:
            self.client.disconnect()
            self.client.loop_stop()

    def stop(self) -> None:
        self._stop.set()
