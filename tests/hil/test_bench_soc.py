"""`soxbms bench soc --quick`: every estimator runs over the same streams and is scored (loose checks; the full run
reports the bounds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hil import fusion_select
from hil.bench_soc import REAL_CELL, replay_log
from hil.soc_eval import BOARD_MODELS, ESTIMATORS, evaluate_log, starts_both_ways
from hil.soc_score import coulomb_count, score, wrong_start
from tests.bench import run_quick
from tests.shared_data import data_file


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
        # NCR18650PF cells: the NN is for another cell type, so board fused (soc_eval.BEST_FUSION) is the EKF alone.
        assert row["fused_uses_nn"] is False and scores["board_fused"] == scores["board_ekf"]
        assert 0 < row["nn_step_us_micropython"] <= row["nn_step_us_micropython_p99"]
        assert row["nn_bytes_per_step"] == 0
    assert r["shipped_estimator"] == "board_ekf"  # models/board/estimator.json: "fusion": "none"
    assert r["soc_rmse_pct_max"] == r["scenarios"][0]["estimators"]["board_ekf"]["rmse_pct"]  # the warm one
    assert 0 < r["nn_step_us_micropython"] <= r["nn_step_us_micropython_p99"]
    assert r["real_us06"]["estimators"]["board_ekf"]["rmse_pct"] < r["real_us06"]["estimators"]["coulomb"]["rmse_pct"]
    assert r["coulomb_rmse_pct_max"] > 25  # a 30 % wrong start stays wrong for coulomb counting
    # 16 cells with estimators need more than the 104 KB of the board without them, and less than 512 KB.
    assert 104 * 1024 < r["heap_min_bytes"] < 512 * 1024


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


def test_a_log_starts_both_ways() -> None:
    np.testing.assert_allclose(starts_both_ways(0.5), [0.2, 0.8])
    np.testing.assert_allclose(starts_both_ways(1.0), [0.7])  # full: only below
    np.testing.assert_allclose(starts_both_ways(0.1), [0.4])  # nearly empty: only above
    np.testing.assert_allclose(starts_both_ways(0.65), [0.35, 0.95])


def test_each_start_of_a_log_is_a_run_of_its_own(tmp_path: Path) -> None:
    """Two starts run as two copies of the logged cell in one pass: each copy's figures are those of a run from
    that start alone (the cells' filters share nothing), and the row's figures are the worse start's."""
    sent = replay_log(data_file("us06_25degC.mat"), REAL_CELL, 20.0)
    model = BOARD_MODELS / f"{REAL_CELL.stem}.json"
    (tmp_path / "both").mkdir()
    both = evaluate_log("both", sent, model, tmp_path / "both", [0.6, 0.95])
    assert both.row["cells"] == 2 and both.row["start_soc"] == [0.6, 0.95]
    for k, start in enumerate((0.6, 0.95)):
        (tmp_path / str(k)).mkdir()
        alone = evaluate_log("alone", sent, model, tmp_path / str(k), [start])
        for estimator in ESTIMATORS:
            assert both.scores[estimator].cells[k] == alone.scores[estimator].cells[0], (start, estimator)
            np.testing.assert_array_equal(both.estimates[estimator][:, k], alone.estimates[estimator][:, 0])
    worst = max(cell.rmse_pct for cell in both.scores["coulomb"].cells)
    assert both.row["estimators"]["coulomb"]["rmse_pct"] == round(worst, 3)


def test_fusion_selection_averages_each_candidate_over_the_runs() -> None:
    def run(ekf: float, measurement: float, ensemble: float) -> dict:
        figures = {"board_ekf": ekf, "board_nn": 0.1, "fused_nn_measurement": measurement, "fused_ensemble": ensemble}
        return {"estimators": {name: {"rmse_after_settle_pct": v} for name, v in figures.items()}}

    # The NN alone (0.1) is no candidate; the EKF alone ("none") wins on the mean though not on every run.
    mean = fusion_select.mean_rmse([run(0.7, 2.0, 0.6), run(0.5, 3.0, 0.8)])
    assert mean == {"none": 0.6, "nn_measurement": 2.5, "ensemble": 0.7}
