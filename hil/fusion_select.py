"""Which fusion of the board's EKF and NN ships (issue 5), decided on the NN's own evaluation split, never on a
benchmark scenario: the eval runs of hil.nn_data (PyBaMM SPMe with ORegan2022, US06 at 15 °C and udds_like at
32 °C; no parameter set, drive, seed or temperature shared with the NN's training).

Each eval run is recorded as a sample stream (sensor errors on, 1 s); the board runner (engine/streamrun.py under
MicroPython, as bench soc runs it) runs the EKF, the NN and every fusion variant from bench soc's wrong start
(hil.soc_score). The EKF runs on the board model fitted to the eval runs' own parameter set
(models/board/oregan2022_spme_fit.json, hil.spme_gridfit), as bench soc gives each scenario its cell's fit; the NN is
fused on it ("nn_cell" set to that model), nn_sigma = the NN's held-out RMSE (models/nn/soc_mlp.meta.json).
The choice is the lowest mean RMSE after SETTLE_S over the runs among the EKF alone ("none") and the fusion variants
(the NN alone has no cell model to fall back on and is not a candidate). Prints one JSON document;
models/board/README.md has the figures and the choice.

    python -m hil.fusion_select [WORK_DIR]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hil import nn_data
from hil.bench_soc import BOARD_MODELS, SHIPPED_CONFIG, run_board, write_stream
from hil.physics.params import load
from hil.soc_score import score, wrong_start
from host.estimate import reference as reference_ekf
from host.estimate.streamfile import read_estimates
from soxcommon.frame import ABSENT

NN_META = nn_data.ROOT / "models" / "nn" / "soc_mlp.meta.json"
BOARD_MODEL = BOARD_MODELS / "oregan2022_spme_fit.json"  # nn_data's eval runs: ORegan2022 SPMe
VARIANTS = ("nn_measurement", "ensemble")
# The selection figure: RMSE from bench soc's convergence bound on (600 s), the wrong start's transient left out (the
# scored "rmse_pct", after the last excursion beyond 2 %, can leave out most of a run).
SETTLE_S = 600.0


def nn_config() -> dict[str, Any]:
    """The NN's part of the estimator configuration, from its model card."""
    meta = json.loads(NN_META.read_text())
    return {"nn_sigma": meta["metrics"]["eval_int8_rmse"], "nn_capacity_mAh": meta["features"]["capacity_mAh"]}


def record_run(run: nn_data.Run) -> tuple[list[reference_ekf.Record], np.ndarray, np.ndarray]:
    """(records, t_s, true SoC (samples, cells)) of one eval run, the first record at t = 0 as bench soc's."""
    module = nn_data._module(run, load(nn_data.ECM_CELL))
    records: list[reference_ekf.Record] = []
    truth: list[np.ndarray] = []
    t_s: list[float] = []
    while not module.load_done and module.cells.t_s < run.max_s:
        module.step(1.0 if records else 0.0)
        current_mA, rows = module.reading()
        t = module.truth[-1].t_s
        records.append((round(t * 1000), ABSENT if current_mA is None else current_mA,
                        [ABSENT if row[0] is None else row[0] for row in rows],
                        [ABSENT if row[1] is None else row[1] for row in rows]))
        truth.append(np.array(module.truth[-1].soc))
        t_s.append(t)
    return records, np.array(t_s), np.array(truth)


def evaluate(work: Path) -> dict[str, Any]:
    base = json.loads(SHIPPED_CONFIG.read_text()) | nn_config() | {"nn_cell": BOARD_MODEL.stem}
    runs = [r for r in nn_data.RUNS if r.split == "eval"]
    rows: list[dict[str, Any]] = []
    for run in runs:
        print(f"  fusion select: {run.name}", file=sys.stderr, flush=True)
        records, t_s, true_soc = record_run(run)
        soc0 = wrong_start(true_soc[0])
        stream = work / f"{run.name}.sxs"
        write_stream(stream, records, run.n_cells)
        scores: dict[str, Any] = {}
        for name, mode, variant in [("board_ekf", "ekf", None), ("board_nn", "nn", None)] + [
                (f"fused_{v}", "fused", v) for v in VARIANTS]:
            config = work / f"{name}.json"
            config.write_text(json.dumps(base | {"fusion": variant or VARIANTS[0]}))
            out = work / f"{run.name}.{name}.sxe"
            run_board(stream, BOARD_MODEL, out, soc0, mode, config)
            estimate = read_estimates(out).soc
            error = estimate - true_soc
            settled = error[t_s >= SETTLE_S]
            scores[name] = score(t_s, estimate, true_soc).as_dict() | {
                "rmse_whole_run_pct": round(float(np.sqrt(np.mean(error**2))) * 100, 3),
                "rmse_after_settle_pct": round(float(np.sqrt(np.mean(settled**2))) * 100, 3)}
        rows.append({"run": run.name, "samples": len(records), "start_soc": [round(float(s), 4) for s in soc0],
                     "estimators": scores})
    mean = mean_rmse(rows)
    return {"nn": nn_config(), "board_model": BOARD_MODEL.name, "runs": rows, "mean_rmse_after_settle_pct": mean,
            "choice": min(mean, key=lambda fusion: mean[fusion])}


def mean_rmse(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per candidate "fusion" value ("none": the EKF alone), its RMSE after SETTLE_S averaged over the runs."""
    candidates = {"none": "board_ekf"} | {v: f"fused_{v}" for v in VARIANTS}
    return {fusion: round(float(np.mean([r["estimators"][name]["rmse_after_settle_pct"] for r in rows])), 3)
            for fusion, name in candidates.items()}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        work = Path(argv[1])
        work.mkdir(parents=True, exist_ok=True)
        print(json.dumps(evaluate(work), indent=1))
    else:
        with tempfile.TemporaryDirectory(prefix="fusion-select-") as tmp:
            print(json.dumps(evaluate(Path(tmp)), indent=1))


if __name__ == "__main__":
    main(sys.argv)
