"""`soxbms bench link`: the data path's loss, throughput, latency and board memory, measured.

1. Faults: 8 MicroPython boards x 16 cells in lockstep; the broker SIGKILLed twice and the host
   once mid-stream. sent / stored / lost / duplicates / gaps, and recovery time after each broker
   restart (until everything the rigs had sent before the restart is committed).
2. Drain: the same backlog of queued messages, drained by the host (counting committed rows) and
   then by a bare paho subscriber that only counts, on the same broker config and QoS 1.
3. Latency: 1,000 msg/s offered by a paho publisher emulating 8 boards; latency = publish to the
   host's ack, which it sends only after the database commit (so an upper bound of publish to commit).
4. Heap: the boards' live heap peak (largest gc.mem_alloc() after gc.collect(), code from .mpy),
   and the smallest -X heapsize that survives a run, by bisection in 8 KB steps."""

from __future__ import annotations

import collections
import json
import platform
import queue
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from hil.firmware_build import cached_build
from hil.harness import Fleet, HostProcess, environment_versions, wait_for
from host.broker import Broker, make_broker
from host.store import open_store
from soxcommon import wire


def log(msg: str) -> None:
    print(f"[bench link] {msg}", file=sys.stderr, flush=True)


def data_payload(boot: int, seq: int, cells: int = 16) -> bytes:
    """A valid 16-cell data message, as a board sends it."""
    msg: dict[str, Any] = {"b": boot, "s": seq, "lo": 0, "d": 0, "t": seq, "tm": 0, "tr": 1, "i": -1500}
    for alias, _, _, _, lo, hi in wire.CELL_QUANTITIES:
        msg[alias] = [(lo + hi) // 2 + (seq + c) % 100 for c in range(cells)]
    return json.dumps(msg, separators=(",", ":")).encode()


def paho_client(port: int, client_id: str, clean: bool = True) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    ready = threading.Event()
    c.on_connect = lambda cl, u, f, reason, p: ready.set()
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    if not ready.wait(15):
        raise TimeoutError(f"{client_id} could not connect")
    return c


def publish_backlog(port: int, devices: list[str], per_device: int) -> None:
    pub = paho_client(port, "bench-publisher")
    infos: collections.deque[mqtt.MQTTMessageInfo] = collections.deque()
    for seq in range(per_device):
        for device in devices:
            if len(infos) >= 30000:  # packet ids are 16-bit: never more than this outstanding
                infos.popleft().wait_for_publish(120)
            infos.append(pub.publish(wire.topic(device, "data"), data_payload(1, seq), qos=1))
    for info in infos:
        info.wait_for_publish(120)
    pub.disconnect()
    pub.loop_stop()


# --- 1. faults -------------------------------------------------------------------------------


def fault_run(state: Path, boards: int, samples: int, firmware_dir: Path) -> dict[str, Any]:
    fleet = Fleet(state, boards=boards, cells=16, samples=samples, pace_ms=10, firmware_dir=firmware_dir)
    total = boards * samples
    recovery: list[float] = []

    def broker_restart() -> None:
        assert fleet.broker is not None
        sent_before = sum(r.counters.samples for r in fleet.rigs)
        t0 = time.monotonic()
        fleet.broker.restart()
        wait_for(lambda: fleet.stored() >= sent_before, 120, "the backlog after a broker restart", 0.1)
        recovery.append(time.monotonic() - t0)

    try:
        fleet.start()
        wait_for(lambda: fleet.stored() >= total * 0.2, 300, "20 % stored", 0.1)
        log("broker SIGKILL 1")
        broker_restart()
        wait_for(lambda: fleet.stored() >= total * 0.45, 300, "45 % stored", 0.1)
        log("host SIGKILL")
        fleet.host.kill()
        fleet.host.start()
        wait_for(lambda: fleet.stored() >= total * 0.7, 300, "70 % stored", 0.1)
        log("broker SIGKILL 2")
        broker_restart()
        fleet.wait_boards(600)
    finally:
        fleet.stop()
    score = fleet.score()
    assert fleet.broker is not None
    return {**score, "broker_restarts": fleet.broker.restarts, "host_kills": 1,
            "recovery_s": round(max(recovery), 2), "recovery_each_s": [round(r, 2) for r in recovery],
            "broker_config": fleet.broker.conf_path.read_text(), "mosquitto": fleet.broker.version}


# --- 2. drain and 3. latency -------------------------------------------------------------------


def drain_host(broker: Broker, state: Path, db: str, devices: list[str], per_device: int) -> float:
    host = HostProcess(broker.url, db, state, name="drain-host")
    n = len(devices) * per_device
    try:
        host.start()  # creates the persistent session and its subscriptions
        host.stop()
        publish_backlog(broker.port, devices, per_device)
        host.start()
        wait_for(lambda: count_rows(db) + count_rows(db, "quarantine") >= n, 600, "the host to drain the backlog",
                 0.2)
    finally:
        host.stop()
    if count_rows(db, "quarantine"):
        raise RuntimeError("the host quarantined benchmark messages: the generator is wrong")
    store = open_store(db)
    try:
        first, last = store.ingest_span()
    finally:
        store.close()
    return n / (last - first)


def count_rows(db: str, table: str = "sample") -> int:
    store = open_store(db)
    try:
        return store.count(table)
    finally:
        store.close()


def drain_bare(broker: Broker, devices: list[str], per_device: int) -> float:
    n = len(devices) * per_device
    topic = f"{wire.TOPIC_ROOT}/+/data"
    sub = paho_client(broker.port, "bench-bare", clean=False)
    sub.subscribe(topic, qos=1)
    sub.disconnect()
    sub.loop_stop()
    publish_backlog(broker.port, devices, per_device)
    times: list[float] = []
    done = threading.Event()

    def on_message(cl: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        times.append(time.time())
        if len(times) >= n:
            done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare", clean_session=False,
                    protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(1000)
    c.on_message = on_message
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    if not done.wait(600):
        raise TimeoutError(f"bare subscriber got {len(times)} of {n}")
    c.disconnect()
    c.loop_stop()
    return n / (times[-1] - times[0])


def forget_session(port: int, client_id: str) -> None:
    """A clean-session connect discards the broker's stored session of this client id, so later
    phases do not pile messages into it (Mosquitto snapshots every queued message each second)."""
    c = paho_client(port, client_id, clean=True)
    c.disconnect()
    c.loop_stop()


def latency(broker: Broker, state: Path, db: str, devices: list[str], rate_hz: int, seconds: float) -> dict[str, Any]:
    host = HostProcess(broker.url, db, state, ["--client-id", "bench-latency-host"], name="latency-host")
    try:
        return _latency(host, broker, devices, rate_hz, seconds)
    finally:
        host.stop()


def _latency(host: HostProcess, broker: Broker, devices: list[str], rate_hz: int, seconds: float) -> dict[str, Any]:
    host.start()
    boot = 2  # a boot of its own: the drain phase used boot 1
    sent: dict[tuple[str, int], float] = {}
    acked: dict[tuple[str, int], float] = {}
    acks: queue.Queue[tuple[str, int, float]] = queue.Queue()
    pub = paho_client(broker.port, "bench-latency")

    def on_ack(cl: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        ack = json.loads(msg.payload)
        if ack["b"] == boot:  # the drain phase's acks (boot 1) say nothing about these messages
            acks.put((wire.split_topic(msg.topic)[0], int(ack["s"]), time.time()))

    pub.on_message = on_ack
    pub.subscribe(f"{wire.TOPIC_ROOT}/+/ack", qos=1)
    n = int(rate_hz * seconds)
    start = time.monotonic()
    for i in range(n):
        seq, index = divmod(i, len(devices))
        delay = start + i / rate_hz - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the offered load, not synchronisation
        sent[(devices[index], seq)] = time.time()
        pub.publish(wire.topic(devices[index], "data"), data_payload(boot, seq), qos=1)
    offered = n / (time.monotonic() - start)
    watermark = {d: -1 for d in devices}
    deadline = time.monotonic() + 60
    while any(w < n // len(devices) - 1 for w in watermark.values()) and time.monotonic() < deadline:
        try:
            device, seq, at = acks.get(timeout=1)
        except queue.Empty:
            continue
        for s in range(watermark[device] + 1, seq + 1):
            acked[(device, s)] = at
        watermark[device] = max(watermark[device], seq)
    pub.disconnect()
    pub.loop_stop()
    lat_ms = sorted((acked[k] - sent[k]) * 1000 for k in sent if k in acked)
    if len(lat_ms) != len(sent):
        raise RuntimeError(f"only {len(lat_ms)} of {len(sent)} latency messages were acknowledged")
    return {"latency_p50_ms": round(statistics.median(lat_ms), 1),
            "latency_p99_ms": round(lat_ms[int(0.99 * (len(lat_ms) - 1))], 1),
            "latency_max_ms": round(lat_ms[-1], 1), "latency_messages": len(lat_ms),
            "offered_msgs_s": round(offered, 1)}


def throughput_and_latency(state: Path, per_device: int, latency_s: float) -> dict[str, Any]:
    devices = [f"dev-{n:02d}" for n in range(8)]
    broker = make_broker(state / "broker")
    broker.start()
    try:
        db = str(state / "drain.sqlite")
        store = open_store(db)
        for d in devices:
            store.add_device(d, "")
        store.close()
        log(f"drain: host, {len(devices) * per_device} queued messages")
        ingest = drain_host(broker, state, db, devices, per_device)
        forget_session(broker.port, "soxbms-host")
        log("drain: bare paho subscriber")
        bare = drain_bare(broker, devices, per_device)
        forget_session(broker.port, "bench-bare")
        log(f"latency: 1000 msg/s for {latency_s} s")
        lat = latency(broker, state, db, devices, 1000, latency_s)
    finally:
        broker.stop()
    return {"backlog_messages": len(devices) * per_device, "ingest_msgs_s": round(ingest, 1),
            "bare_subscriber_msgs_s": round(bare, 1), "ingest_vs_bare": round(ingest / bare, 3), **lat}


# --- 4. heap -------------------------------------------------------------------------------------


def survives(state: Path, heap_kb: int, samples: int, firmware_dir: Path,
             check: Callable[[Fleet], bool] | None = None, **fleet_args: Any) -> bool:
    """One 16-cell board with -X heapsize=heap_kb stores all its samples (and passes `check`, if given);
    fleet_args go to the Fleet (e.g. a rig module, estimation)."""
    run_dir = state / f"heap-{heap_kb}k"
    fleet = Fleet(run_dir, boards=1, cells=16, samples=samples, pace_ms=2, heap_kb=heap_kb,
                  firmware_dir=firmware_dir, **fleet_args)
    try:
        fleet.start()
        fleet.wait_boards(120 + samples * 0.1)
        ok = fleet.score()["stored"] == samples and (check is None or check(fleet))
    except (RuntimeError, TimeoutError):
        ok = False
    finally:
        fleet.stop()
    shutil.rmtree(run_dir, ignore_errors=True)
    return ok


def heap_min_kb(state: Path, samples: int, firmware_dir: Path, lo_kb: int = 8, hi_kb: int = 256,
                check: Callable[[Fleet], bool] | None = None, **fleet_args: Any) -> int | None:
    """Smallest heap (a multiple of 8 KB) that survives (see survives()); None when even hi_kb does not."""
    if not survives(state, hi_kb, samples, firmware_dir, check, **fleet_args):
        return None
    lo, hi = lo_kb // 8, hi_kb // 8  # in 8 KB steps; invariant: hi survives, lo is not known to
    while hi - lo > 1:
        mid = (lo + hi) // 2
        log(f"heap bisection: {mid * 8} KB")
        if survives(state, mid * 8, samples, firmware_dir, check, **fleet_args):
            hi = mid
        else:
            lo = mid
    return hi * 8


# --- the benchmark -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    boards: int
    samples: int  # per board in the fault run
    per_device: int  # backlog messages per device (8 devices) in the drain
    latency_s: float
    heap_samples: int  # per heap bisection trial


FULL = Plan(boards=8, samples=1000, per_device=12500, latency_s=20.0, heap_samples=300)
QUICK = Plan(boards=2, samples=150, per_device=250, latency_s=2.0, heap_samples=60)


def run(out: Path | None, quick: bool, state: Path) -> dict[str, Any]:
    started = time.monotonic()
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    firmware_dir = cached_build()
    plan = QUICK if quick else FULL
    log(f"faults: {plan.boards} boards x 16 cells, {plan.samples} samples each")
    result: dict[str, Any] = {"quick": quick}
    result.update(fault_run(state / "faults", plan.boards, plan.samples, firmware_dir))
    result.update(throughput_and_latency(state / "drain", plan.per_device, plan.latency_s))
    log("heap bisection")
    heap_min = heap_min_kb(state / "heap", plan.heap_samples, firmware_dir)
    result["heap_min_bytes"] = heap_min * 1024 if heap_min is not None else None
    result["versions"] = {**environment_versions(), "mosquitto": result.pop("mosquitto"),
                          "paho_mqtt": paho.mqtt.__version__, "python": platform.python_version()}
    result["wall_s"] = round(time.monotonic() - started, 1)
    bounds: dict[str, Callable[[dict[str, Any]], bool]] = {
        "lost == 0": lambda r: r["lost"] == 0,
        "duplicates == 0": lambda r: r["duplicates"] == 0,
        "broker_restarts >= 2": lambda r: r["broker_restarts"] >= 2,
        "ingest >= 0.5 x bare": lambda r: r["ingest_msgs_s"] >= 0.5 * r["bare_subscriber_msgs_s"],
        "latency_p99_ms < 250": lambda r: r["latency_p99_ms"] < 250,
        "heap_min <= 160 KB": lambda r: r["heap_min_bytes"] is not None and r["heap_min_bytes"] <= 160 * 1024,
    }
    result["bounds"] = {name: check(result) for name, check in bounds.items()}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    return result
