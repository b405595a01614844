"""host.nnconvert: quantized ONNX -> board format; refusals by op name, and every integer inside +-2**30."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from host import nnconvert
from tests.mpy import REPO

MODELS = REPO / "models" / "nn"


def _committed() -> onnx.ModelProto:
    return onnx.load(str(MODELS / "soc_mlp_int8.onnx"))


@pytest.mark.parametrize("op", ["Sigmoid", "Conv"])
def test_refuses_an_unsupported_op_by_name(op: str) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4])
    inputs = ["x", "w"] if op == "Conv" else ["x"]
    weight = [numpy_helper.from_array(np.ones((1, 1, 1), dtype=np.float32), "w")] if op == "Conv" else []
    graph = helper.make_graph([helper.make_node(op, inputs, ["y"], name="odd_one")], "g", [x], [y], weight)
    with pytest.raises(ValueError, match=f"unsupported ONNX op '{op}' \\(node 'odd_one'\\)"):
        nnconvert.convert(helper.make_model(graph))


def test_refuses_an_op_inside_a_quantized_graph() -> None:
    model = _committed()
    model.graph.node.insert(1, helper.make_node("Sigmoid", ["unused"], ["unused_out"], name="inserted"))
    with pytest.raises(ValueError, match="unsupported ONNX op 'Sigmoid' \\(node 'inserted'\\)"):
        nnconvert.convert(model)


def test_refuses_an_accumulator_beyond_2_pow_30() -> None:
    model = _committed()
    bias = next(t for t in model.graph.initializer if numpy_helper.to_array(t).dtype == np.int32)
    value = numpy_helper.to_array(bias).copy()
    value[0] = 1 << 30
    bias.CopyFrom(numpy_helper.from_array(value, bias.name))
    with pytest.raises(ValueError, match="accumulator can reach .* beyond \\+-2\\*\\*30"):
        nnconvert.convert(model)


def test_committed_board_file_is_the_conversion_of_the_committed_graph() -> None:
    assert nnconvert.convert(_committed()) == json.loads((MODELS / "soc_mlp.board.json").read_text())


def test_committed_board_stays_inside_2_pow_30() -> None:
    board = json.loads((MODELS / "soc_mlp.board.json").read_text())
    for layer in board["layers"]:
        nnconvert.check_ranges(layer)
        assert layer["acc_bound"] < 1 << 30
        assert max(abs(b) for b in layer["bias"]) < 1 << 30
        assert layer["multiplier"].bit_length() >= nnconvert.MIN_MULTIPLIER_BITS
        assert -128 <= layer["out_zero_point"] <= 127 and layer["lo"] in (-128, layer["out_zero_point"])
    out = board["output"]
    assert 255 * out["unit_multiplier"] + (1 << (out["unit_shift"] - 1)) < 1 << 30
    assert board["input"] == {"name": "features", "size": 8, "scale": 2 ** -5, "zero_point": 0}


@pytest.mark.parametrize("m, bound", [(0.0084, 62474), (0.0171, 119287), (1e-3, 1 << 20), (0.9, 1 << 12)])
def test_split_requantization_is_exact_and_small(m: float, bound: int) -> None:
    """(h * M + ((l * M + half) >> L)) >> (S - L) equals floor((acc * M + half) / 2**S), with every intermediate
    inside +-2**30, over the whole accumulator range."""
    mult, shift, split = nnconvert.multiplier(m, bound)
    nnconvert.check_ranges({"index": 0, "multiplier": mult, "shift": shift, "split": split, "acc_bound": bound})
    assert abs(mult / (1 << shift) - m) <= m * 2.0 ** -nnconvert.MIN_MULTIPLIER_BITS
    half = 1 << (shift - 1)
    for acc in np.unique(np.concatenate([np.linspace(-bound, bound, 4001).astype(int), [-bound, 0, bound]])):
        acc = int(acc)
        low = (acc & ((1 << split) - 1)) * mult + half
        high = (acc >> split) * mult + (low >> split)
        assert abs(low) < 1 << 30 and abs(high) < 1 << 30
        assert high >> (shift - split) == (acc * mult + half) >> shift


def test_refuses_a_multiplier_it_cannot_keep_precise() -> None:
    with pytest.raises(ValueError, match="keeps only 14 bits inside \\+-2\\*\\*30"):
        nnconvert.multiplier(3e-5, 1 << 20)
