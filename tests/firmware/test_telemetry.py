"""An absent reading (a sensor dropout) travels as absent: frame.ABSENT on the serial line and in
the board's queue, null in the data message (built under MicroPython), NULL in the store, no
observation in the JSON-LD export. Never a made-up 0."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import paho.mqtt.client as paho

from host import export
from host.broker import make_broker
from host.ingest import parse
from host.records import DataRecord
from host.store import open_store
from tests.mpy import run_mpy


def test_absent_reading_end_to_end(tmp_path: Path) -> None:
    payload = run_mpy(f"""
from app import telemetry
from engine.ringqueue import RingQueue
from engine.sample import Estimate, Sample
from soxcommon import frame
q = RingQueue({str(tmp_path)!r}, 2, 8)
s = Sample(2)
e = Estimate(2)  # no estimation: the message has no estimate group
for k in range(len(s.cells)):
    s.cells[k] = 100 + k
s.cells[1 * frame.CELL_FIELDS + 2] = frame.ABSENT   # cell 1 pressure dropped out
q.append(1, 0, 5, 0, 1, s, e)
q.read(0)
m = telemetry.Messages(2, 0)
print(bytes(m.view[m.start:m.data(q, q.low_seq(1))]).decode())
""").strip().splitlines()[-1]
    msg = json.loads(payload)
    assert msg["p"] == [102, None] and msg["v"] == [100, 106]
    assert "sc" not in msg and "ss" not in msg
    rec = parse("soxbms/v1/dev-1/data", payload.encode(), 1.0)
    assert isinstance(rec, DataRecord) and rec.cells[1][2] is None
    store = open_store(str(tmp_path / "db.sqlite"))
    store.add_device("dev-1", "x")
    assert store.write_batch([rec]).stored == 1
    rows = list(store.samples("dev-1"))
    store.close()
    assert rows[1][7 + 2] is None and rows[0][7 + 2] == 102
    out = io.StringIO()
    export.write_jsonld("dev-1", rows, out)
    text = out.getvalue()
    assert ":cell:1:pressure_Pa" not in text and ":cell:0:pressure_Pa" in text


def test_estimates_end_to_end(tmp_path: Path) -> None:
    """The board's estimates from its queue record (under MicroPython) to the data message, the store, CSV
    and JSON-LD; a cell not yet estimated stays absent all the way."""
    payload = run_mpy(f"""
from app import telemetry
from engine.ringqueue import RingQueue
from engine.sample import Estimate, Sample
from soxcommon import frame, wire
q = RingQueue({str(tmp_path)!r}, 2, 8)
s = Sample(2)
for k in range(len(s.cells)):
    s.cells[k] = 1000 + k
e = Estimate(2)
e.values[0] = 8123   # cell 0: SoC 81.23 %, sigma 0.45 %, SoH 97.5 %
e.values[1] = 45
e.values[2] = 9750   # cell 1 not estimated yet: absent
e.level = 2
e.n_reasons = 2
e.reasons[0] = wire.reason(0, 1, 2)
e.reasons[1] = wire.reason(10, 0, 1)
q.append(3, 7, 5, 0, 1, s, e)
q.read(0)
m = telemetry.Messages(2, 0)
print(bytes(m.view[m.start:m.data(q, q.low_seq(3))]).decode())
""").strip().splitlines()[-1]
    msg = json.loads(payload)
    assert (msg["sc"], msg["su"], msg["sh"], msg["ss"], msg["sr"]) == (
        [8123, None], [45, None], [9750, None], 2, [(0 << 8) | (1 << 2) | 2, (10 << 8) | 1])
    rec = parse("soxbms/v1/dev-1/data", payload.encode(), 1.0)
    assert isinstance(rec, DataRecord), rec
    store = open_store(str(tmp_path / "db.sqlite"))
    store.add_device("dev-1", "x")
    assert store.write_batch([rec]).stored == 1
    rows = list(store.samples("dev-1", estimates=True))
    plain = list(store.samples("dev-1"))
    status = store.status()[0]
    store.close()
    assert [r[13:] for r in rows] == [(2, "6 2561", 8123, 45, 9750), (2, "6 2561", None, None, None)]
    assert [r[:13] for r in rows] == plain
    assert (status.sos_level, status.soc_pct) == (2, 81.23)  # the mean over the estimated cells
    out = io.StringIO()
    export.write_csv(rows, out, estimates=True)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(",cell,voltage_mV,temp_dC,pressure_Pa,tof_ns,amplitude_bp,fbg_pm,"
                             "sos_level,sos_reasons,soc_bp,soc_sigma_bp,soh_bp")
    assert lines[1].endswith(",2,6 2561,8123,45,9750") and lines[2].endswith(",2,6 2561,,,")
    out = io.StringIO()
    export.write_jsonld("dev-1", rows, out, estimates=True)
    graph = json.loads(out.getvalue())["@graph"]
    by_id = {node["@id"]: node for node in graph}
    soc = by_id["urn:soxbms:dev-1:obs:3:7:cell:0:soc_bp"]["hasResult"]
    assert soc["hasNumericalPart"]["hasNumericalValue"] == {"@value": "0.8123", "@type": "xsd:decimal"}
    assert soc["hasMetrologicalUncertainty"]["hasNumericalPart"]["hasNumericalValue"]["@value"] == "0.0045"
    assert "urn:soxbms:dev-1:obs:3:7:cell:1:soc_bp" not in by_id
    assert by_id["urn:soxbms:dev-1:obs:3:7:sos_level"]["hasResult"]["rdfs:label"] == "alarm"
    findings = {n["hasResult"]["rdfs:label"]: n["hasFeatureOfInterest"] for n in graph
                if n.get("observedProperty") == "soxbms:SafetyFinding"}
    assert findings == {"cell_voltage_high_mV cell 1 alarm": "urn:soxbms:dev-1:cell:1",
                        "discharge_current_mA cell 0 warn": "urn:soxbms:dev-1"}


# The birth and data messages as the board built them before it wrote them into its buffer (a dict, lists,
# json.dumps): the oracle of the bytes on the wire, which must not change. Then one connect and a publish per
# record, each measured: what it allocates (gc held off around it).
PUBLISH_SCRIPT = """
import gc, json, sys
from app import mqtt_codec, telemetry
from app.mqtt_client import MqttClient, ticks_diff, ticks_ms
from engine.ringqueue import RingQueue
from engine.sample import Estimate, Sample
from soxcommon import wire
from soxcommon.frame import ABSENT

PORT, N, DIR = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
CELLS = 16

def present(v):
    return None if v == ABSENT else v

def reference_data(q, low_seq):
    t_s, t_ms, relative = q.record_time()
    msg = {"b": q.record_boot(), "s": q.record_seq(), "lo": low_seq, "d": q.dropped, "t": t_s, "tm": t_ms,
           "tr": relative, "i": present(q.record_current())}
    for k, quantity in enumerate(wire.CELL_QUANTITIES):
        msg[quantity[0]] = [present(q.record_cell(c, k)) for c in range(CELLS)]
    level = q.record_level()
    if level != ABSENT:
        for k, quantity in enumerate(wire.ESTIMATE_QUANTITIES):
            msg[quantity[0]] = [present(q.record_estimate(c, k)) for c in range(CELLS)]
        msg[wire.SOS_LEVEL[0]] = level
        msg[wire.SOS_REASONS[0]] = [q.record_reason(i) for i in range(q.record_reasons())]
    return json.dumps(msg, separators=(",", ":"))

def reference_birth(boot, bd, queued, dropped):
    return json.dumps({"pv": wire.PROTOCOL_VERSION, "b": boot, "bd": bd, "n": CELLS, "fw": telemetry.FIRMWARE_VERSION,
                       "al": wire.alias_table(), "q": queued, "d": dropped}, separators=(",", ":"))

q = RingQueue(DIR, CELLS, N)
s = Sample(CELLS)
e = Estimate(CELLS)
for i in range(N):
    for k in range(len(s.cells)):
        s.cells[k] = ABSENT if (i + k) % 11 == 0 else (k * 7919 + i * 104729) % 2000001 - 1000
    s.current_mA = ABSENT if i % 7 == 3 else -1073741823 + i * 53687091
    for k in range(len(e.values)):
        e.values[k] = ABSENT if (i + k) % 5 == 0 else (k * 31 + i) % 20001
    e.level = ABSENT if i % 4 == 0 else i % 4  # every fourth record without estimates
    e.n_reasons = i % (wire.SOS_MAX_REASONS + 1)
    for k in range(wire.SOS_MAX_REASONS):
        e.reasons[k] = wire.reason(k + 1, i % CELLS, 1 + k % 3)
    q.append(2, i, 1000 + i, i % 1000, i & 1, s, e)

birth_topic = wire.topic("dev-pub", "birth").encode()
topic = wire.topic("dev-pub", "data").encode()
msgs = telemetry.Messages(CELLS, mqtt_codec.publish_room(birth_topic))
c = MqttClient("dev-pub", "127.0.0.1", PORT, max_inflight=N + 1)
c.connect(5000)
print("REF", reference_birth(2, 5, N, 0))
c.publish_in(birth_topic, msgs.view, msgs.start, msgs.birth(2, 5, N, 0), 1)
most = 0
for i in range(N):
    q.read(i)
    low = q.low_seq(q.record_boot())
    print("REF", reference_data(q, low))
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    c.publish_in(topic, msgs.view, msgs.start, msgs.data(q, low), 1)
    most = max(most, gc.mem_alloc() - before)
    gc.enable()
t0 = ticks_ms()
while c.inflight_count():
    if not c.poll(20) or ticks_diff(ticks_ms(), t0) > 10000:
        raise OSError("PUBACKs missing")
c.disconnect()
print("ALLOC", most)
"""


def test_messages_on_the_wire_as_before_and_a_publish_allocates_no_message(tmp_path: Path) -> None:
    """Birth and data messages written into the board's buffer reach a real Mosquitto byte for byte as the dict +
    json.dumps they replace (MicroPython's own key order included), and a data message published allocates at most
    256 B (json.dumps and a packet of its own made ~6 KB of objects per publish, ~1 KB of it in one piece)."""
    n = 24
    got: list[tuple[str, bytes]] = []
    done = threading.Event()
    broker = make_broker(tmp_path / "broker")
    broker.start()
    watcher = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="checker-pub", protocol=paho.MQTTv311)
    try:
        subscribed = threading.Event()
        watcher.on_subscribe = lambda *args: subscribed.set()

        def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
            got.append((msg.topic, msg.payload))
            if len(got) == n + 1:
                done.set()

        watcher.on_message = on_message
        watcher.connect("127.0.0.1", broker.port)
        watcher.loop_start()
        watcher.subscribe("soxbms/v1/dev-pub/#", qos=1)
        assert subscribed.wait(15), "subscribe not acknowledged"
        (tmp_path / "q").mkdir()
        out = run_mpy(PUBLISH_SCRIPT, args=(broker.port, n, tmp_path / "q"), timeout=120).splitlines()
        assert done.wait(15), f"{len(got)} of {n + 1} messages arrived"
    finally:
        watcher.loop_stop()
        watcher.disconnect()
        broker.stop()
    want = [line[4:].encode() for line in out if line.startswith("REF ")]
    assert [topic for topic, _ in got] == ["soxbms/v1/dev-pub/birth"] + ["soxbms/v1/dev-pub/data"] * n
    assert [payload for _, payload in got] == want
    data = want[1:]
    assert sum(b'"sc":' in p for p in data) == n * 3 // 4  # records with estimates and without
    for part in (b'"sr":[]', b'"sr":[', b'"i":null', b'"i":-', b",null,"):
        assert any(part in p for p in data), part
    most = int(out[-1].split()[1])
    # 128 B a publish here (the record time's tuple, an iterator, the packet's view, its in-flight entry), and the
    # in-flight list growing now and then
    assert out[-1].startswith("ALLOC") and 0 < most <= 256
