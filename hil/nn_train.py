"""Train the neural SoC estimator and write its artifacts: `python -m hil.nn_train --out models/nn`.

An MLP (scikit-learn MLPRegressor, ReLU) maps the 8 int8 feature codes of soxcommon.socfeatures (as the float
input code * 2**-5) to SoC. It is exported with skl2onnx, pre-processed by onnxruntime (MatMul + Add fused into
Gemm), and statically quantized by onnxruntime to int8 in the QDQ format, per tensor, MinMax-calibrated on training
rows; the input's scale is pinned to the features' 2**-5 so QuantizeLinear gives back the board's codes exactly.
QDQ, not QOperator: it keeps standard ONNX ops (QOperator's Gemm becomes com.microsoft's QGemm), onnxruntime fuses
each DequantizeLinear -> Gemm -> QuantizeLinear group into its int32-accumulating kernel, and the group maps one to
one onto a board layer (host.nnconvert). Writes, in --out:
  soc_mlp.onnx (float), soc_mlp_int8.onnx (QDQ int8), soc_mlp.board.json (host.nnconvert), soc_mlp.meta.json
  (model card: data, split, features, metrics on the held-out evaluation runs, sizes, hashes).
Deterministic from SEED and the runs' seeds (hil.nn_data)."""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.neural_network import MLPRegressor

from hil import nn_data
from host import nnconvert
from soxcommon import socfeatures

SEED = 5
HIDDEN = (32, 16)
TRAIN_STRIDE = 4  # every 4th training row: 1 s rows are strongly correlated
CALIBRATION_ROWS = 4000
INPUT_NAME = "features"
OPSET = 17


@dataclass
class Trained:
    float_onnx: onnx.ModelProto
    int8_onnx: onnx.ModelProto
    board: dict[str, Any]
    metrics: dict[str, Any]


class _Calibration(CalibrationDataReader):
    """Training rows for onnxruntime's MinMax calibration, in one batch."""

    def __init__(self, x: np.ndarray) -> None:
        self._batches = iter([{INPUT_NAME: x}])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def run_onnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """onnxruntime's output for float inputs x (rows, N_FEATURES), one column."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {INPUT_NAME: x.astype(np.float32)})[0]).reshape(-1)


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(np.sqrt(np.mean(np.square(a - b)))), 5)


def quantize(float_model: onnx.ModelProto, calibration_x: np.ndarray) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory(prefix="soc-mlp-") as tmp:
        raw, fused, int8 = (Path(tmp) / n for n in ("float.onnx", "fused.onnx", "int8.onnx"))
        onnx.save(float_model, str(raw))
        quant_pre_process(str(raw), str(fused), skip_symbolic_shape=True)
        overrides = {INPUT_NAME: [{"scale": np.array(socfeatures.INPUT_SCALE, dtype=np.float32),
                                   "zero_point": np.array(0, dtype=np.int8)}]}
        quantize_static(str(fused), str(int8), _Calibration(calibration_x), quant_format=QuantFormat.QDQ,
                        per_channel=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        extra_options={"TensorQuantOverrides": overrides})
        return onnx.load(str(int8))


def train(data: nn_data.Dataset, hidden: tuple[int, ...] = HIDDEN, max_iter: int = 60,
          stride: int = TRAIN_STRIDE) -> Trained:
    training, evaluation = nn_data.split(data, "train"), nn_data.split(data, "eval")
    x, y = training.inputs()[::stride], training.soc[::stride]
    mlp = MLPRegressor(hidden_layer_sizes=hidden, activation="relu", solver="adam", batch_size=256,
                       learning_rate_init=1e-3, max_iter=max_iter, early_stopping=True, n_iter_no_change=8,
                       random_state=SEED)
    mlp.fit(x, y)
    float_model = to_onnx(mlp, initial_types=[(INPUT_NAME, FloatTensorType([None, socfeatures.N_FEATURES]))],
                          target_opset=OPSET)
    rng = np.random.default_rng(SEED)
    calibration_x = x[rng.choice(len(x), size=min(CALIBRATION_ROWS, len(x)), replace=False)]
    int8_model = quantize(float_model, calibration_x)
    board = nnconvert.convert(int8_model)
    metrics: dict[str, Any] = {"iterations": int(mlp.n_iter_)}
    for name, part in (("train", training), ("eval", evaluation)):
        xs = part.inputs()
        metrics[f"{name}_float_rmse"] = _rmse(run_onnx(float_model, xs), part.soc)
        metrics[f"{name}_int8_rmse"] = _rmse(run_onnx(int8_model, xs), part.soc)
    xs = evaluation.inputs()
    pred_float, pred_int8 = run_onnx(float_model, xs), run_onnx(int8_model, xs)
    metrics["eval_runs"] = {
        run.name: {"rows": int(np.sum(evaluation.run == k)),
                   "float_rmse": _rmse(pred_float[evaluation.run == k], evaluation.soc[evaluation.run == k]),
                   "int8_rmse": _rmse(pred_int8[evaluation.run == k], evaluation.soc[evaluation.run == k])}
        for k, run in enumerate(evaluation.runs)}
    metrics["eval_max_abs_error"] = {"float": round(float(np.max(np.abs(pred_float - evaluation.soc))), 4),
                                     "int8": round(float(np.max(np.abs(pred_int8 - evaluation.soc))), 4)}
    return Trained(float_model, int8_model, board, metrics)


def model_card(trained: Trained, data: nn_data.Dataset, files: dict[str, bytes], seconds: float) -> dict[str, Any]:
    layers = trained.board["layers"]
    return {
        "name": "soc_mlp", "version": 1, "task": "cell SoC (0..1) from the board's per-cell features",
        "model": {"kind": "MLP", "layers": [socfeatures.N_FEATURES, *[la["n_out"] for la in layers]],
                  "activation": "relu", "trainer": f"scikit-learn MLPRegressor (adam, early stopping, seed {SEED})",
                  "parameters": sum(la["n_in"] * la["n_out"] + la["n_out"] for la in layers),
                  "macs_per_inference": sum(la["n_in"] * la["n_out"] for la in layers),
                  "quantization": "onnxruntime quantize_static, QDQ, int8 activations and weights, per tensor, "
                                  "MinMax calibration on training rows, input scale pinned to 2**-5",
                  "opset": OPSET},
        "features": {"definition": "firmware/soxcommon/socfeatures.py (one code for board and host)",
                     "names": list(socfeatures.NAMES), "input": "int8 code * 2**-5", "sample_period_ms": 1000,
                     "capacity_mAh": nn_data.CAPACITY_MAH},
        "output": {"quantity": "state of charge", "board_units": "1e-4 (engine.nn.Mlp.value)",
                   "scale": trained.board["output"]["scale"], "zero_point": trained.board["output"]["zero_point"]},
        "data": {"generator": "hil.nn_data (SimulatedModule, sensor errors on, 1 s samples)",
                 "split": "training and evaluation share no parameter set, drive shape, seed or ambient "
                          "temperature (hil.nn_data.check_split)",
                 "runs": data.metadata(), "train_row_stride": TRAIN_STRIDE},
        "metrics": trained.metrics,
        "files": {name: {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
                  for name, blob in files.items()},
        "board_int8_weight_bytes": sum(la["n_in"] * la["n_out"] for la in layers),
        "train_seconds": round(seconds, 1),
    }


def write(out: Path, data: nn_data.Dataset | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    data = data or nn_data.generate()
    trained = train(data)
    out.mkdir(parents=True, exist_ok=True)
    files = {"soc_mlp.onnx": trained.float_onnx.SerializeToString(),
             "soc_mlp_int8.onnx": trained.int8_onnx.SerializeToString(),
             "soc_mlp.board.json": (json.dumps(trained.board, indent=1) + "\n").encode()}
    for name, blob in files.items():
        (out / name).write_bytes(blob)
    card = model_card(trained, data, files, time.perf_counter() - start)
    (out / "soc_mlp.meta.json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=nn_data.ROOT / "models" / "nn")
    card = write(parser.parse_args().out)
    print(json.dumps(card["metrics"], indent=1))


if __name__ == "__main__":
    main()
