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
from engine.sample import Sample
from soxcommon import frame
q = RingQueue({str(tmp_path)!r}, 2, 8)
s = Sample(2)
for k in range(len(s.cells)):
    s.cells[k] = 100 + k
s.cells[1 * frame.CELL_FIELDS + 2] = frame.ABSENT   # cell 1 pressure dropped out
q.append(1, 0, 5, 0, 1, s)
q.read(0)
print(telemetry.data(q, q.low_seq(1)))
""").strip().splitlines()[-1]
    msg = json.loads(payload)
    assert msg["p"] == [102, None] and msg["v"] == [100, 106]
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
