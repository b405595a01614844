"""Quantized ONNX graph (QDQ format, as onnxruntime.quantization writes it) -> the board's compact model format,
run by firmware/engine/nn.py with integers only (Jacob et al. 2018, "Quantization and Training of Neural Networks
for Efficient Integer-Arithmetic-Only Inference", CVPR).

Semantics (ONNX operator docs): QuantizeLinear y = saturate(round(x / s) + zp); DequantizeLinear x = (q - zp) * s;
Gemm Y = A @ B + C. A group DequantizeLinear(x), DequantizeLinear(W int8), DequantizeLinear(b int32) -> Gemm ->
QuantizeLinear is one integer layer:
    acc = b + sum_j (x_j - zp_x) * W_jk           int32, b's scale is s_x * s_w (zero point 0)
    y = clamp(round(acc * m) + zp_y, lo, 127)     m = s_x * s_w / s_y; lo = -128, or zp_y after a Relu
A Relu between Gemm and QuantizeLinear, or DequantizeLinear -> Relu -> QuantizeLinear with the same scale and zero
point, is that clamp; onnxruntime usually folds it into zp_y = -128 already. Reshape keeps the tensor.

m is a fixed-point multiplier M / 2**S (gemmlowp's scheme): the board has no float path that does not allocate, and
a 32-bit board's small integers stop at +-2**30. So acc * M is never formed: acc = h * 2**L + l (0 <= l < 2**L) and
    round(acc * M / 2**S) = (h * M + ((l * M + 2**(S-1)) >> L)) >> (S - L)      exact for S >= L,
with L, the bits B of M and S chosen per layer from the worst-case |acc| over every int8 input so that every
intermediate stays inside +-2**30 (`check_ranges`). M keeps B >= 16 significant bits (relative error < 2**-16), so
the board's codes differ from onnxruntime's float32 requantization only for products within that of a rounding tie;
the parity test measures the result. Per-tensor scales only; int8 weights with zero point 0 (symmetric)."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

SUPPORTED_OPS = ("QuantizeLinear", "DequantizeLinear", "Gemm", "Relu", "Reshape")
INT_LIMIT = 1 << 30  # small integers on a 32-bit MicroPython board
MIN_MULTIPLIER_BITS = 16
BOARD_FORMAT = "soxbms-nn-board"
BOARD_VERSION = 1
UNIT_SCALE = 10000  # the board's output in 1e-4 (0.01 %) of the model's unit


@dataclass
class _Quant:
    """An int8 tensor: scale, zero point; layer: index of the layer that writes it (-1: the graph input)."""

    scale: float
    zero_point: int
    layer: int


@dataclass
class _Layer:
    weights: np.ndarray  # (out, in) int8
    bias: np.ndarray  # (out,) int32
    in_scale: float
    in_zero_point: int
    w_scale: float
    relu: bool = False
    out: _Quant | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def _scalar(value: np.ndarray, what: str) -> np.ndarray:
    if value.size != 1:
        raise ValueError(f"{what}: per-tensor quantization only, got {value.size} values")
    return value.reshape(())


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def multiplier(m: float, acc_bound: int) -> tuple[int, int, int]:
    """(M, S, L) of round(acc * m) for |acc| <= acc_bound: the most bits of M that keep l * M + 2**(S-1) and
    h * M + 2**(30-L) below 2**30 (see the module docstring)."""
    a = max(acc_bound, 1).bit_length()
    split = (a + 1) // 2
    bits = 29 - max(split, a - split)
    if not 0 < m < 1 << (bits - split):
        raise ValueError(f"requantization multiplier {m!r} is out of the representable range")
    shift = min(29, bits - 1 - math.floor(math.log2(m)))
    mult = round(m * (1 << shift))
    if mult >= 1 << bits:  # rounding carried into a new bit
        shift -= 1
        mult = round(m * (1 << shift))
    if shift < split or mult.bit_length() < MIN_MULTIPLIER_BITS:
        raise ValueError(f"requantization multiplier {m!r} with |acc| <= {acc_bound} keeps only "
                         f"{mult.bit_length()} bits inside +-2**30")
    return mult, shift, split


def check_ranges(layer: dict[str, Any]) -> None:
    """Every intermediate of the board's layer stays inside +-2**30; ValueError otherwise."""
    mult, shift, split, bound = layer["multiplier"], layer["shift"], layer["split"], layer["acc_bound"]
    worst = {
        "acc": bound,
        "l * M + half": ((1 << split) - 1) * mult + (1 << (shift - 1)),
        "h * M + carry": ((bound >> split) + 1) * mult + ((((1 << split) - 1) * mult + (1 << (shift - 1))) >> split),
    }
    for what, value in worst.items():
        if value >= INT_LIMIT:
            raise ValueError(f"layer {layer['index']}: {what} reaches {value}, beyond +-2**30")


def _finish(layer: _Layer, index: int) -> dict[str, Any]:
    assert layer.out is not None
    w = layer.weights.astype(np.int64)
    x_max = max(128 + layer.in_zero_point, 127 - layer.in_zero_point)  # |x - zp_x| over every int8 x
    bound = int(np.max(np.abs(w).sum(axis=1) * x_max + np.abs(layer.bias.astype(np.int64))))
    if bound >= INT_LIMIT:
        raise ValueError(f"layer {index}: the int32 accumulator can reach {bound}, beyond +-2**30")
    m = float(np.float32(layer.in_scale) * np.float32(layer.w_scale) / np.float32(layer.out.scale))
    mult, shift, split = multiplier(m, bound)
    out = {
        "index": index, "op": "gemm", "n_in": int(w.shape[1]), "n_out": int(w.shape[0]),
        "weights_b64": base64.b64encode(layer.weights.astype(np.int8).tobytes()).decode(),  # row-major (out, in)
        "bias": [int(b) for b in layer.bias], "in_zero_point": layer.in_zero_point,
        "out_zero_point": layer.out.zero_point, "lo": layer.out.zero_point if layer.relu else -128,
        "multiplier": mult, "shift": shift, "split": split, "acc_bound": bound, "scale": m,
    }
    check_ranges(out)
    return out


def _unit(scale: float) -> tuple[int, int]:
    """(M, S) with (q - zp) * M >> S = (q - zp) * scale * UNIT_SCALE for |q - zp| <= 255, inside +-2**30."""
    u = scale * UNIT_SCALE
    shift = 29
    while 255 * round(u * (1 << shift)) + (1 << (shift - 1)) >= INT_LIMIT:
        shift -= 1
    return round(u * (1 << shift)), shift


def convert(model: onnx.ModelProto) -> dict[str, Any]:
    """The board model of a quantized ONNX MLP; ValueError naming the op or tensor it cannot map exactly."""
    graph = model.graph
    for node in graph.node:
        if node.op_type not in SUPPORTED_OPS or node.domain not in ("", "ai.onnx"):
            raise ValueError(f"unsupported ONNX op '{node.op_type}' (node '{node.name}'); the board runs "
                             f"{', '.join(SUPPORTED_OPS)}")
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError("the board runs a graph of one input and one output")
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    # Float tensors: "input", or ("dq" | "relu", _Quant), or ("acc", layer index).
    floats: dict[str, Any] = {graph.input[0].name: "input"}
    quant: dict[str, _Quant] = {}
    weights: dict[str, tuple[np.ndarray, float]] = {}  # dequantized constants
    layers: list[_Layer] = []
    input_quant: _Quant | None = None
    for node in graph.node:
        name = node.name or node.output[0]
        op, ins, out = node.op_type, list(node.input), node.output[0]
        if op in ("QuantizeLinear", "DequantizeLinear"):
            scale = float(_scalar(consts[ins[1]], f"{name} scale"))
            zp_array = consts.get(ins[2]) if len(ins) > 2 and ins[2] else None
            zp = int(_scalar(zp_array, f"{name} zero point")) if zp_array is not None else 0
            if _attrs(node).get("axis", 1) != 1 and np.asarray(consts[ins[1]]).size != 1:
                raise ValueError(f"node '{name}': per-axis quantization is not supported")
        if op == "QuantizeLinear":
            if zp_array is not None and zp_array.dtype != np.int8:
                raise ValueError(f"node '{name}': activations must be int8, got {zp_array.dtype}")
            src = floats.get(ins[0])
            if src == "input":
                input_quant = quant[out] = _Quant(scale, zp, -1)
            elif isinstance(src, tuple) and src[0] == "acc":
                layer = layers[src[1]]
                layer.out = quant[out] = _Quant(scale, zp, src[1])
            elif isinstance(src, tuple) and src[0] in ("dq", "relu"):
                q = src[1]
                if not (math.isclose(scale, q.scale, rel_tol=1e-7) and zp == q.zero_point):
                    raise ValueError(f"node '{name}': requantization to a new scale is not supported")
                if src[0] == "relu":
                    layers[q.layer].relu = True
                quant[out] = q
            else:
                raise ValueError(f"node '{name}': QuantizeLinear of '{ins[0]}' cannot be mapped")
        elif op == "DequantizeLinear":
            if ins[0] in consts:
                weights[out] = (consts[ins[0]], scale)
                if zp:
                    raise ValueError(f"node '{name}': constants need zero point 0 (symmetric), got {zp}")
            elif ins[0] in quant:
                floats[out] = ("dq", quant[ins[0]])
            else:
                raise ValueError(f"node '{name}': DequantizeLinear of '{ins[0]}' cannot be mapped")
        elif op == "Gemm":
            a = _attrs(node)
            if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                raise ValueError(f"node '{name}': Gemm with transA, alpha or beta is not supported")
            x = floats.get(ins[0])
            if not (isinstance(x, tuple) and x[0] == "dq") or ins[1] not in weights or ins[2] not in weights:
                raise ValueError(f"node '{name}': Gemm needs quantized input, weights and bias")
            (w, w_scale), (b, b_scale) = weights[ins[1]], weights[ins[2]]
            if w.dtype != np.int8 or b.dtype != np.int32:
                raise ValueError(f"node '{name}': weights must be int8 and bias int32, got {w.dtype}, {b.dtype}")
            x_quant = x[1]
            if not math.isclose(b_scale, x_quant.scale * w_scale, rel_tol=1e-6):
                raise ValueError(f"node '{name}': bias scale {b_scale} is not input scale x weight scale")
            w_out_in = w if a.get("transB", 0) else w.T
            if x_quant.layer >= 0 and layers[x_quant.layer].weights.shape[0] != w_out_in.shape[1]:
                raise ValueError(f"node '{name}': input size does not match the previous layer")
            layers.append(_Layer(w_out_in, b.reshape(-1), x_quant.scale, x_quant.zero_point, w_scale))
            if x_quant.layer != len(layers) - 2:
                raise ValueError(f"node '{name}': only a chain of layers is supported")
            floats[out] = ("acc", len(layers) - 1)
        elif op == "Relu":
            src = floats.get(ins[0])
            if isinstance(src, tuple) and src[0] == "acc":
                layers[src[1]].relu = True
                floats[out] = src
            elif isinstance(src, tuple) and src[0] == "dq":
                floats[out] = ("relu", src[1])
            else:
                raise ValueError(f"node '{name}': Relu of '{ins[0]}' cannot be mapped")
        elif op == "Reshape":
            shape = consts.get(ins[1])
            if shape is None or len(shape) != 2 or shape[-1] not in (-1, len(layers[-1].bias) if layers else -1):
                raise ValueError(f"node '{name}': only a Reshape to (batch, features) is supported")
            if ins[0] in quant:
                quant[out] = quant[ins[0]]
            elif ins[0] in floats:
                floats[out] = floats[ins[0]]
            else:
                raise ValueError(f"node '{name}': Reshape of '{ins[0]}' cannot be mapped")
    output = graph.output[0].name
    out_quant = quant.get(output) or (floats[output][1] if isinstance(floats.get(output), tuple)
                                      and floats[output][0] == "dq" else None)
    if input_quant is None or not layers or not isinstance(out_quant, _Quant) or out_quant.layer != len(layers) - 1:
        raise ValueError("the graph is not input -> QuantizeLinear -> layers -> output")
    unit_mult, unit_shift = _unit(out_quant.scale)
    return {
        "format": BOARD_FORMAT, "version": BOARD_VERSION,
        "input": {"name": graph.input[0].name, "size": int(layers[0].weights.shape[1]), "scale": input_quant.scale,
                  "zero_point": input_quant.zero_point},
        "output": {"name": output, "size": int(layers[-1].weights.shape[0]), "scale": out_quant.scale,
                   "zero_point": out_quant.zero_point, "unit_scale": UNIT_SCALE, "unit_multiplier": unit_mult,
                   "unit_shift": unit_shift},
        "layers": [_finish(layer, k) for k, layer in enumerate(layers)],
    }


def convert_file(onnx_path: Path, board_path: Path) -> dict[str, Any]:
    board = convert(onnx.load(str(onnx_path)))
    board_path.write_text(json.dumps(board, indent=1) + "\n")
    return board
