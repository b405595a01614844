"""The board's neural SoC estimator and its fusion with the EKF (firmware/engine/fusion.py) through the board runner
(firmware/engine/streamrun.py modes "nn" and "fused") under MicroPython from the .mpy build at the 160 KB heap."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from hil.firmware_build import cached_build
from soxcommon.frame import ABSENT
from soxcommon.stream import EstimateReader, SampleWriter
from tests.mpy import REPO, micropython_bin, run_host, run_mpy

CONFIG = REPO / "models" / "board" / "estimator.json"
NN_MODEL = REPO / "models" / "nn" / "soc_mlp.board.json"
NN_CELL_MODEL = REPO / "models" / "board" / "chen2020_spme_fit.json"  # the NN's cell type (config "nn_cell")
OTHER_CELL_MODEL = REPO / "models" / "board" / "panasonic_ncr18650pf_25C.json"
N_CELLS = 4
SOC0 = [0.3, 0.9, 0.5, 0.7]


def _stream(path: Path, records: int = 150) -> None:
    """A discharge in 10 s pulses with rests, per-cell offsets, and absent readings here and there."""
    with open(path, "wb") as f:
        w = SampleWriter(f, N_CELLS)
        for k in range(records):
            current_mA = -5000 if k % 20 < 10 else 0
            volts = [3900 - k + 25 * c + (current_mA // 200) for c in range(N_CELLS)]
            temps = [250 + 10 * c for c in range(N_CELLS)]
            if k % 37 == 0:  # the first record too: cells 1 and 2 are not ready at once
                volts[1] = ABSENT
                temps[2] = ABSENT
            w.write(1000 * k, ABSENT if k % 53 == 7 else current_mA, volts, temps)


def _run(stream: Path, model: Path, out: Path, mode: str, config: Path = CONFIG) -> dict:
    code = (f"import sys\nsys.path.append({str(cached_build())!r})\nfrom engine import streamrun\n"
            f"streamrun.run({str(stream)!r}, {str(model)!r}, {str(config)!r}, {str(out)!r}, {SOC0!r}, {mode!r}, "
            f"{str(NN_MODEL)!r})\n")
    proc = subprocess.run([micropython_bin(), "-X", "heapsize=160k", "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    summary: dict = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary


def _read(path: Path) -> list[list[tuple[float, float, float]]]:
    with open(path, "rb") as f:
        r = EstimateReader(f)
        rows = []
        while (rec := r.read()) is not None:
            rows.append(rec[1])
    return rows


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fusion") / "in.sxs"
    _stream(path)
    return path


@pytest.fixture(scope="module")
def fused_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped configuration with the NN measured into the EKF (the shipped one has "fusion": "none")."""
    path = tmp_path_factory.mktemp("fusion") / "fused.json"
    path.write_text(json.dumps(json.loads(CONFIG.read_text()) | {"fusion": "nn_measurement"}))
    return path


def test_shipped_configuration_takes_the_nn_figures_from_its_model_card() -> None:
    cfg = json.loads(CONFIG.read_text())
    meta = json.loads((REPO / "models" / "nn" / "soc_mlp.meta.json").read_text())
    assert cfg["fusion"] in ("none", "nn_measurement", "ensemble")
    assert cfg["nn_sigma"] == pytest.approx(meta["metrics"]["eval_int8_rmse"])
    assert cfg["nn_capacity_mAh"] == meta["features"]["capacity_mAh"]
    assert cfg["nn_cell"] == json.loads(NN_CELL_MODEL.read_text())["name"]


def test_fused_runs_on_the_board_finite_and_within_0_1(stream: Path, fused_config: Path, tmp_path: Path) -> None:
    summary = _run(stream, NN_CELL_MODEL, tmp_path / "fused.sxe", "fused", fused_config)
    assert summary["records"] == 150
    assert summary["ekf_step_us_median"] > 0 and 0 < summary["nn_step_us_median"] <= summary["nn_step_us_p99"]
    assert summary["nn_gated"] >= 0
    assert all(r0 > 0 for r0 in summary["soh_r0_ohm"])  # this stream's steps fit no cell: k held above 0
    rows = _read(tmp_path / "fused.sxe")
    assert len(rows) == 150
    for cells in rows:
        for soc, sigma, bias in cells:
            assert math.isfinite(sigma) and math.isfinite(bias) and sigma > 0
            assert 0.0 <= soc <= 1.0
    ekf = _run(stream, NN_CELL_MODEL, tmp_path / "ekf.sxe", "ekf")
    assert "nn_step_us_median" not in ekf
    assert _read(tmp_path / "ekf.sxe") != rows  # the NN's measurements moved the filter


def test_fused_on_another_cell_type_is_the_ekf_alone(stream: Path, fused_config: Path, tmp_path: Path) -> None:
    summary = _run(stream, OTHER_CELL_MODEL, tmp_path / "fused.sxe", "fused", fused_config)
    assert "nn_step_us_median" not in summary and "nn_gated" not in summary
    _run(stream, OTHER_CELL_MODEL, tmp_path / "ekf.sxe", "ekf")
    assert (tmp_path / "fused.sxe").read_bytes() == (tmp_path / "ekf.sxe").read_bytes()


def test_fused_mode_names_the_variants_when_the_config_fuses_nothing(stream: Path, tmp_path: Path) -> None:
    config = tmp_path / "none.json"
    config.write_text(json.dumps(json.loads(CONFIG.read_text()) | {"fusion": "none"}))
    with pytest.raises(subprocess.CalledProcessError) as failed:
        _run(stream, NN_CELL_MODEL, tmp_path / "fused.sxe", "fused", config)
    assert "fusion must be one of ('nn_measurement', 'ensemble')" in failed.value.stdout + failed.value.stderr


# engine.nn on the socfeatures codes of the stream, with no runner: per record, per cell the SoC in 1e-4 clamped to
# 0..10000, or None while the cell's features are not ready.
DIRECT = """
import sys, json
from engine.nn import Mlp
from soxcommon.socfeatures import SocFeatures, N_FEATURES
from soxcommon.stream import SampleReader
from array import array
cfg = json.load(open(sys.argv[2]))
mlp = Mlp(json.load(open(sys.argv[3])))
r = SampleReader(open(sys.argv[1], "rb"))
n = r.n_cells
feat = SocFeatures(n, cfg["nn_capacity_mAh"])
flat = array("i", [0] * (2 * n))
codes = array("b", bytes(N_FEATURES))
rows = []
while r.read():
    for c in range(n):
        flat[2 * c] = r.volts_mV[c]
        flat[2 * c + 1] = r.temps_dC[c]
    feat.update(r.current_mA, flat, 2)
    row = []
    for c in range(n):
        if feat.ready(c):
            feat.codes(c, codes)
            mlp.run(codes)
            row.append(min(10000, max(0, mlp.value(0))))
        else:
            row.append(None)
    rows.append(row)
print(json.dumps(rows))
"""


def test_runner_nn_mode_matches_the_interpreter_run_directly(stream: Path, tmp_path: Path) -> None:
    summary = _run(stream, OTHER_CELL_MODEL, tmp_path / "nn.sxe", "nn")
    assert summary["nn_bytes_per_step"] == 0  # integer inference: nothing allocated per cell-step
    assert "ekf_step_us_median" not in summary
    want = json.loads(run_host(DIRECT, args=[stream, CONFIG, NN_MODEL]))
    got = _read(tmp_path / "nn.sxe")
    assert len(got) == len(want) == 150
    assert any(v is None for v in want[0]) and all(v is not None for v in want[-1])
    for cells, row in zip(got, want, strict=True):
        for c, ((soc, sigma, bias), value) in enumerate(zip(cells, row, strict=True)):
            if value is None:  # not ready: the start SoC
                assert soc == pytest.approx(SOC0[c], abs=1e-7)
            else:
                assert round(soc * 10000) == value
            assert sigma == pytest.approx(json.loads(CONFIG.read_text())["nn_sigma"]) and bias == 0.0


# SocFusion's NN measurement on one cell with a stub NN (fixed SoC in 1e-4): prints soc, P00 and gated count after
# each fusion step.
GATE = """
import json
from array import array
from engine import cellmodel
from engine.ekf import SocEkf
from engine.fusion import SocFusion

class StubNn:
    nn_sigma = SIGMA
    value = array("i", [0])
    def step_cell(self, cell):
        return True

cfg = json.load(open(CONFIG))
ekf = SocEkf(cellmodel.load(MODEL), 1, cfg)
ekf.reset(0, 0.5)
ekf.P[0] = 1e-4
nn = StubNn()
fusion = SocFusion(ekf, nn, "nn_measurement")
out = []
for value in VALUES:
    nn.value[0] = value
    fusion.step_cell(0)
    out.append([ekf.x[0], ekf.P[0], ekf.P[1], fusion.n_gated[0]])
print(json.dumps(out))
"""


def test_nn_measurement_is_gated_like_the_voltage() -> None:
    """The shipped gate and gate_run 3: an NN SoC 0.4 away (beyond the gate's sigmas of S = P00 + nn_sigma²) is
    skipped 3 times in a row and taken the 4th; a near one is taken at once, with the Kalman gain P00/S and P00
    shrinking to P00·r/S."""
    cfg = json.loads(CONFIG.read_text())
    sigma = 0.04
    code = (GATE.replace("SIGMA", repr(sigma)).replace("CONFIG", repr(str(CONFIG)))
            .replace("MODEL", repr(str(NN_CELL_MODEL))).replace("VALUES", repr([9000, 9000, 9000, 9000])))
    steps = json.loads(run_mpy(code))
    s_var = 1e-4 + sigma**2
    assert 0.05**2 < cfg["gate"] ** 2 * s_var < 0.4**2 and cfg["gate_run"] == 3
    assert [s[3] for s in steps] == [1, 2, 3, 3]
    assert all(s[0] == pytest.approx(0.5) and s[1] == pytest.approx(1e-4) for s in steps[:3])
    assert steps[3][0] == pytest.approx(0.5 + 1e-4 / s_var * 0.4, rel=1e-5)
    assert steps[3][1] == pytest.approx(1e-4 * sigma**2 / s_var, rel=1e-4)
    near = (GATE.replace("SIGMA", repr(sigma)).replace("CONFIG", repr(str(CONFIG)))
            .replace("MODEL", repr(str(NN_CELL_MODEL))).replace("VALUES", repr([5500])))
    (soc, p00, _p01, gated), = json.loads(run_mpy(near))
    assert gated == 0 and soc == pytest.approx(0.5 + 1e-4 / s_var * 0.05, rel=1e-5)
    assert p00 == pytest.approx(1e-4 * sigma**2 / s_var, rel=1e-4)
