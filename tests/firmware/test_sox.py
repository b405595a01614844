"""engine/sox.py under MicroPython: the shipped estimators assembled for n cells, the OCV start, the wire integers
it exports, the state-of-safety reasons, and clear errors for missing or broken files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.mpy import run_mpy

MODELS = Path(__file__).resolve().parents[2] / "models"
FILES = {"cell_model": str(MODELS / "board" / "chen2020_spme_fit.json"),
         "estimator": str(MODELS / "board" / "estimator.json"),
         "nn_model": str(MODELS / "nn" / "soc_mlp.board.json"),
         "safety": str(MODELS / "board" / "safety.json")}
PRELUDE = """
import gc, json, sys
from engine.sample import Estimate, Sample
from engine.sox import Sox, SoxError
from soxcommon.frame import ABSENT, CELL_FIELDS
F = json.loads(open(sys.argv[1]).read())
def make(n, period_ms=1000, **change):
    f = dict(F)
    f.update(change)
    return Sox(n, period_ms, f["cell_model"], f["estimator"], f["nn_model"], f["safety"])
def sample(volts, temp_dC=250, current_mA=0, t_ms=0):
    s = Sample(len(volts))
    for c in range(len(volts)):
        s.cells[c * CELL_FIELDS] = volts[c]
        s.cells[c * CELL_FIELDS + 1] = temp_dC
        s.cells[c * CELL_FIELDS + 2] = 101325
    s.current_mA = current_mA
    s.t_ms = t_ms
    return s
"""


def mpy(tmp_path: Path, body: str, files: dict[str, str] | None = None, heap_kb: int = 512) -> dict:
    """Run under MicroPython from source (compiled at import: more heap than the board's .mpy; the board's heap
    is hil/bench_heap.py's figure)."""
    path = tmp_path / "files.json"
    path.write_text(json.dumps(files or FILES))
    return json.loads(run_mpy(PRELUDE + body, heap_kb=heap_kb, args=[path]).strip().splitlines()[-1])


def _fusing(tmp_path: Path) -> dict[str, str]:
    """FILES with the shipped configuration fusing the NN as a measurement (tmp_path/fused.json), and beside it
    tmp_path/none.json with "fusion": "none"."""
    cfg = json.loads(Path(FILES["estimator"]).read_text())
    for name, fusion in (("fused", "nn_measurement"), ("none", "none")):
        (tmp_path / f"{name}.json").write_text(json.dumps(cfg | {"fusion": fusion}))
    return {**FILES, "estimator": str(tmp_path / "fused.json")}


def test_ocv_start_and_absent_cells(tmp_path: Path) -> None:
    """Cells start at the SoC whose OCV is their first voltage (the cell model's own OCV table, so the start is
    exact up to the 1 mV reading; a cell type without the NN, whose first update would pull towards the NN's SoC);
    a cell without a voltage reading stays absent until it has one."""
    r = mpy(tmp_path, """
from engine import cellmodel
F["cell_model"] = F["cell_model"].replace("chen2020_spme_fit", "panasonic_ncr18650pf_25C")
model = cellmodel.load(F["cell_model"])
lk = cellmodel.Lookup(model, 1)
lk.params(0, 0.5, 250)
volts = []
for soc in (0.2, 0.5, 0.8):
    lk.ocv_at(0, soc)
    volts.append(round(lk.ocv * 1000))
sox = make(4)
est = Estimate(4)
sox.step(sample(volts + [ABSENT]), 0.0)
sox.export(est)
first = list(est.values)
started_first = [sox.started[c] for c in range(4)]
sox.step(sample(volts + [volts[1]], t_ms=1000), 1.0)
sox.export(est)
print(json.dumps({"first": first, "started": started_first, "second": list(est.values), "absent": ABSENT,
                  "fused": sox.fusion is not None, "level": est.level, "soc": [sox.soc(c) for c in range(4)]}))
""")
    a = r["absent"]
    assert r["fused"] is False
    assert r["started"] == [1, 1, 1, 0]
    assert r["first"][9:] == [a, a, a]
    for c, soc in enumerate((0.2, 0.5, 0.8)):
        soc_bp, sigma_bp, soh_bp = r["first"][3 * c:3 * c + 3]
        assert abs(soc_bp - soc * 10000) <= 50, (c, soc_bp)  # 1 mV of OCV is well under 0.5 % here
        assert 0 < sigma_bp <= 10000 and soh_bp == 10000
    assert abs(r["second"][9] - 5000) <= 50  # cell 3 started at its first voltage
    assert r["level"] == 0


def test_export_is_wire_integers_and_reasons_come_highest_first(tmp_path: Path) -> None:
    """Sustained overvoltage on two cells (critical on one, warn on the other) and a long discharge current: the
    level is the highest finding, reasons highest first, at most 4, all as wire.reason codes."""
    r = mpy(tmp_path, """
from soxcommon import wire
sox = make(6)
est = Estimate(6)
for k in range(40):
    s = sample([4400, 4230, 4400, 4400, 4400, 3700], current_mA=-16000, t_ms=1000 * k)
    sox.step(s, 1.0 if k else 0.0)
sox.export(est)
out = [0] * 32
n = sox.sos_reasons(out)
print(json.dumps({"level": est.level, "reasons": [est.reasons[i] for i in range(est.n_reasons)],
                  "all": out[:n], "values": list(est.values), "int_limit": wire.INT_LIMIT}))
""")
    assert r["level"] == 3
    levels = [code & 3 for code in r["all"]]
    assert levels == sorted(levels, reverse=True) and len(r["all"]) > 4
    assert r["reasons"] == r["all"][:4]
    checks = {(code >> 8, (code >> 2) & 0x3F, code & 3) for code in r["all"]}
    assert {(0, 0, 3), (0, 1, 1), (10, 0, 2)} <= checks  # voltage high cell 0 critical, cell 1 warn; discharge
    for v in r["values"]:
        assert isinstance(v, int) and 0 <= v <= 20000 < r["int_limit"]


def test_a_nan_estimate_goes_out_absent_not_made_up(tmp_path: Path) -> None:
    r = mpy(tmp_path, """
from engine import sox as soxmod
print(json.dumps([soxmod._bp(float("nan"), 10000), soxmod._bp(-0.1, 10000), soxmod._bp(0.81234, 10000),
                  soxmod._bp(3.0, 20000), ABSENT]))
""")
    assert r == [r[4], 0, 8123, 20000, r[4]]


@pytest.mark.parametrize("change, message", [
    ({"cell_model": "/nonexistent/cell.json"}, "cannot read cell model /nonexistent/cell.json: "),
    ({"estimator": "BROKEN_JSON"}, "estimator config {path}: "),
    ({"estimator": "NO_Q_SOC"}, "{path}: estimator config: q_soc must be a number >= 0"),
    ({"safety": "NO_CHECKS"}, "{path}: 'checks' must be an object"),
    ({"nn_model": "/nonexistent/nn.json"}, "cannot read NN model /nonexistent/nn.json: "),
    ({"cell_model": "NOT_A_MODEL"}, "cell model {path}: model format None, expected 'soxbms-cell/1'"),
])
def test_bad_files_are_named(tmp_path: Path, change: dict[str, str], message: str) -> None:
    (key, value), = change.items()
    bad = tmp_path / "bad.json"
    estimator = json.loads((MODELS / "board" / "estimator.json").read_text())
    del estimator["q_soc"]
    bad.write_text({"BROKEN_JSON": "{q_soc: 1", "NO_Q_SOC": json.dumps(estimator),
                    "NO_CHECKS": json.dumps({"charge_detect_mA": 1, "temp_rate_window_ms": 1000,
                                             "pressure_baseline_samples": 0}),
                    "NOT_A_MODEL": "{}"}.get(value, ""))
    files = {**_fusing(tmp_path), key: str(bad) if value.isupper() else value}  # fusing: the NN file is read
    r = mpy(tmp_path, """
try:
    make(2)
    print(json.dumps("no error"))
except SoxError as e:
    print(json.dumps(str(e)))
""", files)
    assert message.format(path=bad) in r, r


def test_the_cell_model_is_read_from_its_binary_companion(tmp_path: Path) -> None:
    """A board model with its companion <name>.bin beside it is read from that (engine/cellmodel.py read(): no JSON
    document on the heap), which must have been made from that JSON; without one the JSON itself is read; a config
    may name the companion alone."""
    board = MODELS / "board"
    cases = {}
    for case, files in {"both": ("json", "bin"), "json only": ("json",), "bin only": ("bin",),
                        "stale": ("json", "bin"), "damaged": ("json", "bin")}.items():
        folder = tmp_path / case.replace(" ", "_")
        folder.mkdir()
        for suffix in files:
            data = (board / f"chen2020_spme_fit.{suffix}").read_bytes()
            if case == "stale" and suffix == "json":
                data = data.replace(b'"coulombic_efficiency":0.999', b'"coulombic_efficiency":0.998')
            if case == "damaged" and suffix == "bin":
                data = data[:-1]
            (folder / f"cell.{suffix}").write_bytes(data)
        cases[case] = str(folder / ("cell.bin" if files == ("bin",) else "cell.json"))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    r = mpy(tmp_path, files=_fusing(tmp_path), body="""
out = {}
for case, path in json.load(open(sys.argv[1].replace("files.json", "cases.json"))).items():
    try:
        sox = make(2, cell_model=path)
        out[case] = [sox.model.name, sox.model.n_soc, sox.fusion is not None]
    except SoxError as e:
        out[case] = str(e)
print(json.dumps(out))
""")
    for case in ("both", "json only", "bin only"):
        assert r[case] == ["chen2020_spme_fit", 121, True], (case, r[case])
    stale = tmp_path / "stale" / "cell"
    assert r["stale"].startswith(f"cell model {stale}.bin was made from another {stale}.json"), r["stale"]
    damaged = tmp_path / "damaged" / "cell.bin"
    assert r["damaged"].startswith(f"cell model {damaged}: {len(damaged.read_bytes())} bytes, expected"), r["damaged"]


def test_nn_only_for_its_cell_type_and_period(tmp_path: Path) -> None:
    """The NN's features count 1 s samples: no fusion at another period, nor for another cell type (whose NN file
    is then not even read), nor with "fusion": "none" (the shipped configuration)."""
    r = mpy(tmp_path, files=_fusing(tmp_path), body="""
other = F["cell_model"].replace("chen2020_spme_fit", "panasonic_ncr18650pf_25C")
print(json.dumps([make(2).fusion is not None, make(2, period_ms=100).fusion is not None,
                  make(2, cell_model=other, nn_model="/nonexistent").fusion is not None,
                  make(2, estimator=sys.argv[1].replace("files.json", "none.json"), nn_model="/nonexistent").fusion
                  is not None]))
""")
    assert r == [True, False, False, False]


def test_step_allocation(tmp_path: Path) -> None:
    """What one 16-cell sample allocates (floats are heap objects here): the filters' float results (ekf.py states
    ~9 KB per cell-step on this 64-bit port, and ~1.3 KB more per extra linearisation of its iterated update, which
    this sample's innovation keeps asking for; fusion and SoH add theirs) and export() a few floats per value."""
    r = mpy(tmp_path, """
sox = make(16)
est = Estimate(16)
s = sample([3800 + c for c in range(16)], current_mA=-3000)
sox.step(s, 0.0)
step_bytes = []
export_bytes = []
for k in range(1, 21):
    s.t_ms = 1000 * k
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    sox.step(s, 1.0)
    b = gc.mem_alloc()
    sox.export(est)
    c = gc.mem_alloc()
    gc.enable()
    step_bytes.append(b - a)
    export_bytes.append(c - b)
print(json.dumps({"step": max(step_bytes), "export": max(export_bytes)}))
""", heap_kb=1024)  # the collector is held off over each step
    print(f"bytes per 16-cell sample: step {r['step']}, export {r['export']}")
    assert r["step"] <= 16 * 17000
    assert r["export"] <= 16 * 3 * 6 * 32  # a few 32-byte floats per value



def test_the_wire_decodes_the_monitors_reason_codes(tmp_path: Path) -> None:
    """The safety monitor encodes reasons with the wire's reason() and names its checks by wire.SOS_CHECKS: its
    check ids must index that table (the host decodes with it)."""
    r = mpy(tmp_path, """
from engine import safety
from soxcommon import wire
ids = (safety.V_HIGH, safety.V_LOW, safety.T_HIGH, safety.T_LOW, safety.T_CHARGE_HIGH, safety.T_CHARGE_LOW,
       safety.T_RATE, safety.P_RISE, safety.GAS, safety.I_CHARGE, safety.I_DISCHARGE)
print(json.dumps([safety.N_CHECKS, [wire.SOS_CHECKS[k] for k in ids],
                  list(wire.reason_parts(safety.reason(safety.GAS, 5, 3)))]))
""")
    assert r == [11, ["cell_voltage_high_mV", "cell_voltage_low_mV", "temp_high_dC", "temp_low_dC",
                      "charge_temp_high_dC", "charge_temp_low_dC", "temp_rate_dC_per_min", "pressure_rise_Pa",
                      "gas_ppm", "charge_current_mA", "discharge_current_mA"], [8, 5, 3]]
