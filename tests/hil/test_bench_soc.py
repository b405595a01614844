"""`soxbms bench soc --quick`: every estimator runs over the same streams and is scored (loose checks; the full run
reports the bounds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hil.soc_score import coulomb_count, score, wrong_start
from tests.bench import run_quick


def test_bench_soc_quick(tmp_path: Path) -> None:
    r = run_quick("soc", tmp_path)
    assert [s["scenario"] for s in r["scenarios"]] == ["us06_25C_ecm", "udds_0C_ecm"]
    for row in r["scenarios"]:
        assert row["cells"] == 4 and row["samples"] == 301
        # Both sides of the truth at the start, 30 % off (a cell near a limit starts on the other side).
        assert all(abs(abs(s - row["true_soc_start"]) - 0.3) < 0.05 for s in row["start_soc"])
        assert row["estimators"]["board_ekf"]["rmse_pct"] < row["estimators"]["coulomb"]["rmse_pct"]
        assert row["board_vs_host_pct_max"] < 1.0
        assert 0 < row["ekf_step_us_micropython"] < row["ekf_step_us_filterpy"]
        scores = row["estimators"]
        for estimator in ("board_nn", "board_fused"):
            assert scores[estimator]["rmse_pct"] < scores["coulomb"]["rmse_pct"]
        assert row["best_board_estimator"] in ("board_ekf", "board_nn", "board_fused")
        # NCR18650PF cells: the NN is for another cell type, so the shipped fusion is the EKF alone.
        assert row["fused_uses_nn"] is False and scores["board_fused"] == scores["board_ekf"]
        assert 0 < row["nn_step_us_micropython"] <= row["nn_step_us_micropython_p99"]
        assert row["nn_bytes_per_step"] == 0
    assert r["shipped_estimator"] == "board_fused"
    assert r["soc_rmse_pct_max"] == r["scenarios"][0]["estimators"]["board_fused"]["rmse_pct"]  # the warm one
    assert 0 < r["nn_step_us_micropython"] <= r["nn_step_us_micropython_p99"]
    assert r["real_us06"]["estimators"]["board_ekf"]["rmse_pct"] < r["real_us06"]["estimators"]["coulomb"]["rmse_pct"]
    assert r["coulomb_rmse_pct_max"] > 25  # a 30 % wrong start stays wrong for coulomb counting


def test_score_and_coulomb_counting_by_hand() -> None:
    t_s = np.arange(5.0)
    truth = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    estimate = truth + np.array([[0.1, 0.0], [0.03, 0.01], [0.01, -0.01], [0.0, 0.0], [0.015, 0.0]])
    cells = score(t_s, estimate, truth).cells
    assert cells[0].convergence_s == 2.0 and abs(cells[0].max_error_pct - 1.5) < 1e-9
    assert abs(cells[0].rmse_pct - np.sqrt((0.01**2 + 0 + 0.015**2) / 3) * 100) < 1e-9
    assert cells[1].convergence_s == 0.0
    never = score(t_s, truth + 0.05, truth).cells[0]
    assert never.convergence_s is None and abs(never.rmse_pct - 5.0) < 1e-9
    np.testing.assert_allclose(wrong_start(np.array([0.5, 0.5, 0.9, 0.1])), [0.2, 0.8, 0.6, 0.4])
    # 1 A charging for 3600 s into 2 Ah at 99 % efficiency: +0.495; the first sample is the start.
    soc = coulomb_count(np.array([0.0, 3600.0]), np.array([np.nan, 1.0]), np.array([0.2]), 2.0, 0.99)
    np.testing.assert_allclose(soc[:, 0], [0.2, 0.695])
