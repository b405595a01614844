"""An absent reading (a sensor dropout) travels as absent: frame.ABSENT on the serial line and in
the board's queue, null in the data message (built under MicroPython), NULL in the store, no
observation in the JSON-LD export. Never a made-up 0."""

from __future__ import annotations

import io
import json
from pathlib import Path

from host import export
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
print(telemetry.data(q, q.low_seq(1)))
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
print(telemetry.data(q, q.low_seq(3)))
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
