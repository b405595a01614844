"""The ECM fitted to PyBaMM SPMe (hil.spme_fit): the simulated tests fit, and the drive error is computed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("pybamm", reason="PyBaMM is not installed (pip install .[truth])")

from hil import cellfit, spme_fit  # noqa: E402
from hil.bench_hil import SPME_FIT  # noqa: E402
from hil.cycler import CyclerLog  # noqa: E402
from hil.physics.module import NO_SPREAD, CellModule  # noqa: E402
from hil.physics.params import load  # noqa: E402
from hil.physics.pybamm_cells import PybammCells  # noqa: E402

Fitted = tuple[cellfit.CellFit, cellfit.DriveFit, CyclerLog]


@pytest.fixture(scope="module")
def fitted() -> Fitted:
    train = spme_fit.training_log()
    return *spme_fit.fit_spme(spme_fit.c20_log(), spme_fit.hppc_log(), train), train


def test_simulated_c20_and_hppc_fit_like_a_cycler_log(fitted: Fitted) -> None:
    cell = fitted[0]
    truth_Ah = PybammCells(1, spread=NO_SPREAD).capacity_Ah[0]
    assert cell.ocv.capacity_Ah == pytest.approx(truth_Ah, rel=2e-3)  # the same C/20 definition, 60 s steps
    assert len(cell.pulses) == len(spme_fit.LEVELS_SOC)
    assert all(0.015 < p.r0_ohm < 0.04 and p.rmse_mV < 2.0 for p in cell.pulses)
    # Multi-rate pulses: R0 and I0 per set, the asinh fitting the SPMe's steps from -6C to +2C within a few mV.
    assert len(cell.steps) == len(spme_fit.LEVELS_SOC)
    assert all(0.005 < f.r0_ohm < 0.015 and f.i0_A is not None and 0.3 < f.i0_A < 3 and f.rmse_mV < 5
               for f in cell.steps)
    ocv = np.array(cell.params["OCV [V]"]["values"][0])
    assert np.all(np.diff(ocv) > 0) and 2.5 < ocv[0] < ocv[-1] < 4.2


def test_drive_fit_beats_the_pulse_fitted_rc_pairs_on_the_training_drive(fitted: Fitted) -> None:
    cell, drive, train = fitted
    assert "US06" not in train.source["path"]  # never fitted on the validation drive
    assert drive.rmse_mV < 0.5 * drive.rmse_before_mV
    pulse_only = {**cell.params, **cellfit.pulse_rc_tables(cell.pulses)}
    _, before_V = cellfit.replay_V(pulse_only, train, follow_temperature=True)
    _, after_V = cellfit.replay_V(cell.params, train, follow_temperature=True)
    rmse_mV = [float(np.sqrt(np.mean((v - train.voltage_V) ** 2)) * 1e3) for v in (before_V, after_V)]
    assert rmse_mV == pytest.approx([drive.rmse_before_mV, drive.rmse_mV], abs=0.05)  # the written tables are the fit
    assert cellfit.TAU1_BOUNDS_S[0] <= drive.tau1_s < drive.tau2_s <= cellfit.TAU2_BOUNDS_S[1]
    assert min(drive.r1_ohm + drive.r2_ohm) >= cellfit.DRIVE_R_FLOOR_OHM


def test_stored_fit_is_what_the_code_produces(fitted: Fitted) -> None:
    stored = json.loads(SPME_FIT.read_text())
    produced = json.loads(json.dumps(fitted[0].params))
    assert produced.keys() == stored.keys()
    for key in ("OCV [V]", "R0 [Ohm]", "Exchange current [A]", "R1 [Ohm]", "C1 [F]", "R2 [Ohm]", "C2 [F]"):
        assert produced[key]["values"][0] == pytest.approx(stored[key]["values"][0], rel=1e-3), key
    assert produced["sources"] == stored["sources"]


def test_stored_fit_loads_and_its_drive_rmse_is_reproduced_within_the_benchmark() -> None:
    params = json.loads(SPME_FIT.read_text())
    CellModule(load(SPME_FIT), 1, spread=NO_SPREAD)  # the rig can run it
    result = spme_fit.compare(params, spme_fit.drive_log())
    rmse_mV = result["voltage RMSE [mV]"]
    assert math.isfinite(rmse_mV) and 0 < rmse_mV <= 15  # bench_hil: ecm_vs_spme_voltage_rmse_mV <= 15
    card = json.loads(SPME_FIT.with_name("chen2020_spme_fit.meta.json").read_text())
    assert rmse_mV == pytest.approx(card["validation"]["voltage RMSE [mV]"], abs=0.1)
    assert card["validation with the pulse-fitted RC pairs"]["voltage RMSE [mV]"] > rmse_mV
