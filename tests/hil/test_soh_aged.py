"""The aged benchmark scenario (scenarios/soc/us06_aged_ecm.toml, 4 of its cells): the board's SoH tracker, run by
the board runner under MicroPython, ends nearer the true capacity than its prior (the model file's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hil.bench_soc import SCENARIOS, board_model_for, record, run_board, soh_score, write_stream
from hil.scenario import load_scenario
from hil.soc_score import wrong_start
from host.estimate import cellmodel


def test_aged_run_capacity_beats_the_prior(tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "us06_aged_ecm.toml", 4)
    rec = record(scenario, scenario.truth)
    assert rec.true_capacity_Ah is not None
    stream = tmp_path / "aged.sxs"
    write_stream(stream, rec.records, 4)
    model_path = board_model_for(scenario)
    summary = run_board(stream, model_path, tmp_path / "aged.sxe", wrong_start(rec.true_soc[0]))
    model = cellmodel.load(model_path)
    soh = soh_score(rec, summary, model)
    prior_err_pct = float(np.min(np.abs(model.capacity_Ah - rec.true_capacity_Ah) / rec.true_capacity_Ah)) * 100
    assert prior_err_pct > 15  # the run is aged (about 20 % fade)
    assert soh["capacity_err_pct_max"] < prior_err_pct / 5
