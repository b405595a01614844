"""The `soxbms` CLI on a real SQLite store: device registry, status, export with a time window and with the board's
estimates."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from host.cli import main
from host.records import DataRecord
from host.store import open_store
from soxcommon.terms import STATE_OF_CHARGE
from soxcommon.wire import EPOCH_2000_UNIX_S, SOS_CHECKS, reason

T0 = 1_700_000_000 - EPOCH_2000_UNIX_S  # 2023-11-14T22:13:20Z in wire seconds


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_device_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path)
    code, out, err = run(capsys, "--state", state, "device", "add", "bms-07")
    assert code == 0 and "shown once" in err
    creds = json.loads(out)
    assert creds["device_id"] == "bms-07" and len(creds["broker"]["password"]) >= 20
    assert "bms-07:" in (tmp_path / "mosquitto.passwd").read_text()
    assert run(capsys, "--state", state, "device", "add", "bms-07")[0] == 1  # already registered
    assert run(capsys, "--state", state, "device", "add", "no/slash")[0] == 1
    assert run(capsys, "--state", state, "device", "list")[1].split() == ["bms-07"]
    assert run(capsys, "device", "remove", "bms-07", "--state", state)[0] == 0  # options after the command too
    assert run(capsys, "--state", state, "device", "list")[1] == ""
    assert "bms-07:" not in (tmp_path / "mosquitto.passwd").read_text()
    assert run(capsys, "--state", state, "device", "remove", "bms-07")[0] == 1


def test_status_and_export_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "soxbms.sqlite")
    store = open_store(db)
    store.add_device("bms-01", "x")
    cells = ((3700, 250, 101325, 3900, 7000, 1550000),) * 3
    store.write_batch([DataRecord("bms-01", 1, seq, 0, 0, T0 + seq * 60, 0, 0, -500, cells, 1.0)
                       for seq in range(10) if seq != 4])
    store.close()
    code, out, _ = run(capsys, "--db", db, "status", "--json")
    status = json.loads(out)
    assert code == 0 and status["devices"][0]["samples"] == 9 and status["gaps"] == [["bms-01", 1, 4, 4]]
    # 22:15:00 .. 22:19:00 UTC holds samples 2, 3, (4 missing), 5.
    out_file = tmp_path / "out.csv"
    code, _, err = run(capsys, "--db", db, "export", "bms-01", "--start", "2023-11-14T22:15:00",
                       "--end", "2023-11-14T22:19:00+00:00", "-o", str(out_file))
    rows = list(csv.DictReader(io.StringIO(out_file.read_text())))
    assert code == 0 and "exported 9 cell readings" in err
    assert sorted({int(r["seq"]) for r in rows}) == [2, 3, 5] and {r["voltage_mV"] for r in rows} == {"3700"}


def test_status_and_export_show_the_board_estimates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A board with estimation and one without: status prints the latest sample's pack SoC (mean over the cells) and
    state of safety where there are some, '-' where not; export carries the estimate columns (CSV) and the
    observations (JSON-LD)."""
    db = str(tmp_path / "soxbms.sqlite")
    store = open_store(db)
    store.add_device("bms-01", "x")
    store.add_device("bms-02", "x")
    cells = ((3700, 250, None, None, None, None),) * 2
    code = reason(SOS_CHECKS.index("temp_high_dC"), 1, 1)
    store.write_batch([DataRecord("bms-01", 1, seq, 0, 0, T0 + seq, 0, 0, -500, cells, 1.0,
                                  ((6000 - seq, 150, 9900), (6100 - seq, 150, 9950)), 1, (code,))
                       for seq in range(3)]
                      + [DataRecord("bms-02", 1, 0, 0, 0, T0, 0, 0, -500, cells, 1.0)])
    store.close()
    code_, out, _ = run(capsys, "--db", db, "status")
    lines = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert code_ == 0 and lines["bms-01"].split()[7:9] == ["60.48", "warn"]  # (5998 + 6098) / 2 bp
    assert lines["bms-02"].split()[7:9] == ["-", "-"]
    status = json.loads(run(capsys, "--db", db, "status", "--json")[1])
    assert [(d["soc_pct"], d["sos_level"]) for d in status["devices"]] == [(60.48, 1), (None, None)]
    out_file = tmp_path / "out.csv"
    assert run(capsys, "--db", db, "export", "bms-01", "-o", str(out_file))[0] == 0
    rows = list(csv.DictReader(io.StringIO(out_file.read_text())))
    assert [(r["seq"], r["cell"], r["soc_bp"], r["soc_sigma_bp"], r["soh_bp"], r["sos_level"], r["sos_reasons"])
            for r in rows[-2:]] == [("2", "0", "5998", "150", "9900", "1", str(code)),
                                    ("2", "1", "6098", "150", "9950", "1", str(code))]
    assert run(capsys, "--db", db, "export", "bms-01", "--format", "jsonld", "-o", str(out_file))[0] == 0
    graph = json.loads(out_file.read_text())["@graph"]
    socs = [node for node in graph if node.get("observedProperty") == STATE_OF_CHARGE]
    assert len(socs) == 3 * 2 and socs[-1]["hasResult"]["hasNumericalPart"]["hasNumericalValue"]["@value"] == "0.6098"
