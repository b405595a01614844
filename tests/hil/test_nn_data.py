"""hil.nn_data and hil.nn_train: a split that shares nothing, the board's feature code, a small training run end to
end (train -> ONNX -> int8 -> board format -> board interpreter = onnxruntime)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hil import nn_data, nn_train
from soxcommon import socfeatures
from tests.mpy import FIRMWARE, REPO, run_host


def test_committed_split_shares_nothing() -> None:
    nn_data.check_split(nn_data.RUNS)
    card = json.loads((REPO / "models" / "nn" / "soc_mlp.meta.json").read_text())
    runs = card["data"]["runs"]
    train = [r for r in runs if r["split"] == "train"]
    evaluate = [r for r in runs if r["split"] == "eval"]
    for key in ("parameter_set", "drive_seed", "module_seed", "ambient_C"):
        assert not {r[key] for r in train} & {r[key] for r in evaluate}, key
    assert "us06" not in {r["drive"] for r in train} and all(r["rows"] > 0 for r in runs)


def test_check_split_refuses_a_shared_temperature() -> None:
    runs = (nn_data.RUNS[0], replace(nn_data.RUNS[-1], ambient_C=nn_data.RUNS[0].ambient_C))
    with pytest.raises(ValueError, match="share the ambient"):
        nn_data.check_split(runs)


def test_features_hold_on_absent_readings_and_stay_small() -> None:
    f = socfeatures.SocFeatures(1, 5000)
    out = [0] * socfeatures.N_FEATURES
    f.update(-5000, [3700, 250], 2)  # -1 C
    assert f.ready(0)
    f.codes(0, out)
    assert out == [12, 12, 12, 0, -32, -64, -128, 0]
    f.update(socfeatures.ABSENT, [socfeatures.ABSENT, socfeatures.ABSENT], 2)
    f.codes(0, out)
    assert out == [12, 12, 12, 0, -32, -64, -128, 0]
    f.update(10 ** 6, [10000, 2000], 2)  # the wire's extremes
    f.codes(0, out)
    assert all(-128 <= q <= 127 for q in out)
    assert max(abs(f.i_fast), abs(f.i_slow), f.v_fast[0], f.v_slow[0]) < 1 << 30


def test_a_small_training_run_end_to_end(tmp_path: Path) -> None:
    runs = (nn_data.Run("t", "train", "ecm", "Chen2020", "random_walk", 1, 1, 25.0, 4, 1.0, False, max_s=900),
            nn_data.Run("e", "eval", "ecm", "held-out", "udds_like", 2, 2, 10.0, 2, 0.9, False, max_s=300))
    data = nn_data.generate(runs)
    trained = nn_train.train(data, hidden=(8,), max_iter=5, stride=1)
    assert trained.metrics["eval_int8_rmse"] < 0.5
    board_path = tmp_path / "board.json"
    board_path.write_text(json.dumps(trained.board))
    evaluation = nn_data.split(data, "eval")
    codes = evaluation.codes[:100]
    reference = nn_train.run_onnx(trained.int8_onnx, evaluation.inputs()[:100])
    out = trained.board["output"]
    expected = np.round(reference / out["scale"]).astype(int) + out["zero_point"]
    (tmp_path / "rows.json").write_text(json.dumps(codes.tolist()))
    snippet = ("import sys, json\nsys.path.insert(0, sys.argv[3])\nfrom engine.nn import Mlp\n"
               "m = Mlp(json.load(open(sys.argv[1])))\n"
               "print(json.dumps([int(m.run(r)[0]) for r in json.load(open(sys.argv[2]))]))\n")
    got = np.array(json.loads(run_host(snippet, args=(board_path, tmp_path / "rows.json", FIRMWARE))))
    assert np.max(np.abs(got - expected)) <= 1
