"""`soxbms bench hil --quick`: runs and writes sane figures (loose checks; the full run reports the bounds)."""

from __future__ import annotations

from pathlib import Path

from tests.bench import run_quick


def test_bench_hil_quick(tmp_path: Path) -> None:
    r = run_quick("hil", tmp_path)
    assert r["chain_lost"] == 0 and r["chain_ecm_x_realtime"] > 5
    assert r["rig_ecm_x_realtime"] > 50 and r["ageing_cell_cycles_per_min"] > 100
    assert r["samples_decoded"] == 150 and r["frames_sent"] > 150
    assert r["corrupt_frames_injected"] > 0 and r["corrupt_frames_undetected"] == 0
    assert r["chain_spme_lost"] == 0 and r["chain_spme_x_realtime"] > 2
    assert 0 < r["ecm_vs_spme_voltage_rmse_mV"] < 100
    assert r["bounds"]["corrupt_frames_undetected == 0"] is True
