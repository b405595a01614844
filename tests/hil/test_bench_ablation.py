"""The multi-sensor ablation (hil/bench_ablation.py) in its quick form: every configuration runs on the board and is
scored, with loose checks of what the seeded run must show."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hil.bench_ablation import MEASUREMENTS, QUICK, REQUIRED, autocorrelation_time, run, table


def test_quick_ablation(tmp_path: Path) -> None:
    r = run(tmp_path, quick=True)
    assert not set(r["seeds_tuning"]) & set(r["seeds_eval"])
    assert set(r["scenarios"]) == {"us06_25C_ecm", "udds_0C_ecm"}
    assert all(r["tuning"]["r_factor"][m] > 0 for m in MEASUREMENTS)
    units = len(QUICK.seeds_b) * QUICK.cells
    for row in r["scenarios"].values():
        assert set(row["configs"]) == set(REQUIRED)
        for figures in row["configs"].values():
            for key in ("rmse_pct", "max_error_pct", "convergence_s"):
                f = figures[key]
                assert f["ci95"][0] <= f["mean"] <= f["ci95"][1] <= f["max"] + 1e-9 and f["ci95"][0] >= 0
            assert 0 <= figures["convergence_s"]["never"] <= units
        configs = row["configs"]
        # From a 30 % wrong start the extra channels converge within a minute and beat the voltage alone.
        assert configs["all"]["convergence_s"]["max"] < 60
        assert configs["all"]["rmse_pct"]["mean"] < configs["voltage_only"]["rmse_pct"]["mean"]
        assert configs["all"]["rmse_pct"]["max"] < 2.0
        assert set(row["removal_effect"]) == set(MEASUREMENTS)
    # A week after commissioning the channels have drifted: their variance has grown with the calibration's age, so
    # the filter leans on the voltage again instead of following the drift.
    aged = r["aged"]["days"]
    assert set(aged) == {"1", "7"}
    week = aged["7"]
    assert week["all"]["rmse_pct"]["mean"] < 1.5 * week["voltage_only"]["rmse_pct"]["mean"] + 0.2
    for path in r["calibration_files"]:
        calibration = json.loads(Path(path).read_text())
        assert calibration["format"] == "soxbms-multisensor/1" and len(calibration["cells"]) == QUICK.cells
    assert r["ms_step_us_median"] > 0
    assert "voltage_only" in table(r)


def test_autocorrelation_time() -> None:
    rng = np.random.default_rng(1)
    white = rng.normal(size=20000)
    assert 0.8 < autocorrelation_time(white) < 1.2
    # AR(1) with phi = 0.9: tau = (1 + phi) / (1 - phi) = 19
    ar = np.zeros(20000)
    for k in range(1, ar.size):
        ar[k] = 0.9 * ar[k - 1] + white[k]
    assert 14 < autocorrelation_time(ar) < 24
