"""The ECM fitted to PyBaMM SPMe (hil.spme_fit): the simulated tests fit, and the drive error is computed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("pybamm", reason="PyBaMM is not installed (pip install .[truth])")

from hil import spme_fit  # noqa: E402
from hil.bench_hil import SPME_FIT  # noqa: E402
from hil.physics.module import NO_SPREAD, CellModule  # noqa: E402
from hil.physics.params import load  # noqa: E402
from hil.physics.pybamm_cells import PybammCells  # noqa: E402


def test_simulated_c20_and_hppc_fit_like_a_cycler_log() -> None:
    cell = spme_fit.fit_spme(spme_fit.c20_log(), spme_fit.hppc_log())
    truth_Ah = PybammCells(1, spread=NO_SPREAD).capacity_Ah[0]
    assert cell.ocv.capacity_Ah == pytest.approx(truth_Ah, rel=2e-3)  # the same C/20 definition, 60 s steps
    assert len(cell.pulses) == len(spme_fit.LEVELS_SOC)
    assert all(0.015 < p.r0_ohm < 0.04 and p.rmse_mV < 2.0 for p in cell.pulses)
    ocv = np.array(cell.params["OCV [V]"]["values"][0])
    assert np.all(np.diff(ocv) > 0) and 2.5 < ocv[0] < ocv[-1] < 4.2


def test_stored_fit_loads_and_its_drive_rmse_is_finite_and_reproduced() -> None:
    params = json.loads(SPME_FIT.read_text())
    CellModule(load(SPME_FIT), 1, spread=NO_SPREAD)  # the rig can run it
    result = spme_fit.compare(params, spme_fit.drive_log())
    rmse_mV = result["voltage RMSE [mV]"]
    assert math.isfinite(rmse_mV) and 0 < rmse_mV < 100
    card = json.loads(SPME_FIT.with_name("chen2020_spme_fit.meta.json").read_text())
    assert rmse_mV == pytest.approx(card["validation"]["voltage RMSE [mV]"], abs=0.1)
