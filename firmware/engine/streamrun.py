# Board runner: the SoC estimator driven by a recorded sample stream (soxcommon/stream.py), no broker, no rig.
#
#   micropython -X heapsize=160k firmware/engine/streamrun.py STREAM MODEL CONFIG OUT SOC0_CSV [MODE NN_MODEL]
#
# STREAM: SXS1 input; MODEL: board cell model (models/board/<name>.json); CONFIG: estimator configuration
# (models/board/estimator.json); OUT: SXE1 output, one record per input record; SOC0_CSV: initial SoC per cell;
# MODE: "ekf" (default), "nn" (the neural estimator alone) or "fused" (EKF and NN as CONFIG's "fusion" says, see
# engine/fusion.py); NN_MODEL: the NN board model (models/nn/soc_mlp.board.json) for "nn" and "fused".
# dt is the time since the previous record (0 for the first). Prints one JSON line at the end:
#   {"records", "ekf_step_us_median", "ekf_step_us_p99" (per cell-step, time.ticks_us), "gated" (all cells),
#    "bytes_per_step" (heap bytes per cell-step, gc.mem_alloc deltas), "gc_us_per_step" (collections, per record)}
# with the NN: "nn_step_us_median", "nn_step_us_p99" (inference, the fusion update and the cell's share of the
# sample's feature update), "nn_bytes_per_step"; "fused": also "nn_gated" (NN measurements gated, all cells); "nn"
# has no EKF keys.
# With the EKF, per cell at the end: "soh_capacity_Ah", "soh_capacity_sigma_Ah", "soh_capacity_pairs", "soh_r0_ohm",
# "soh_r0_sigma_ohm", and the capacity prior's "soh_capacity_prior_sigma_Ah" (engine/soh.py, stepped after each
# cell-step outside its timing; every new capacity estimate becomes the EKF's Q for that cell).
# Cell-steps are timed one by one (SocEkf.set_current, then step_cell per cell, as SocEkf.step does) with the
# garbage collector held off; it runs between cell-steps when the free heap is short, so step times and byte counts
# are of the filter alone and collections are reported apart ("gc_us_per_step": per record).
# MicroPython only (time.ticks_us, gc.mem_alloc).

import gc
import json
import sys
import time
from array import array

# Step times per cell-step go to a histogram of BIN_US-wide bins (the last one collects everything slower), so a
# scenario of any length runs in a fixed heap.
BIN_US = 0.25
N_BINS = 2048


def _percentile_us(hist, count, fraction):
    """Upper edge of the bin holding the given fraction of the steps."""
    target = fraction * count
    seen = 0
    for k in range(N_BINS):
        seen += hist[k]
        if seen >= target:
            return (k + 1) * BIN_US
    return N_BINS * BIN_US


def _bin(us):
    return min(N_BINS - 1, int(us / BIN_US))


def run(stream, model, config, out, soc0, mode="ekf", nn_model=None):
    """Run the estimator over the stream file `stream`, write `out`; returns (and prints) the summary dict.
    mode: "ekf", "nn" or "fused"; nn_model: path of the NN board model (for "nn" and "fused")."""
    from engine import cellmodel
    from engine.ekf import SocEkf
    from engine.soh import SohTracker
    from soxcommon.stream import EstimateWriter, SampleReader

    if mode not in ("ekf", "nn", "fused"):
        raise ValueError("mode must be ekf, nn or fused")
    with open(config) as f:
        cfg = json.load(f)
    cell_model = cellmodel.load(model)
    mlp = None
    # "fused" on a cell the NN was not trained for (CONFIG's "nn_cell") is the EKF alone: no NN for that cell.
    if mode == "nn" or mode == "fused" and cell_model.name == cfg["nn_cell"]:
        from engine.nn import Mlp

        with open(nn_model) as f:
            mlp = Mlp(json.load(f))
    gc.collect()
    with open(stream, "rb") as fin, open(out, "wb") as fout:
        reader = SampleReader(fin)
        n = reader.n_cells
        if len(soc0) != n:
            raise ValueError("%d initial SoC values for %d cells" % (len(soc0), n))
        ekf = nn = fusion = soh = None
        if mode != "nn":
            ekf = SocEkf(cell_model, n, cfg)
            soh = SohTracker(ekf)
        if mlp is not None:
            from engine.fusion import NnSoc, SocFusion

            nn = NnSoc(mlp, n, cfg["nn_capacity_mAh"], cfg["nn_sigma"])
            if ekf is not None:
                fusion = SocFusion(ekf, nn, cfg["fusion"])
        for cell in range(n):
            if ekf is not None:
                ekf.reset(cell, soc0[cell])
            if nn is not None:
                nn.reset(cell, soc0[cell])
        estimator = fusion or ekf or nn
        writer = EstimateWriter(fout, n)
        hist = array("I", [0] * N_BINS)  # the EKF's cell-steps
        nn_hist = array("I", [0] * N_BINS) if nn is not None else None
        records = 0
        total_bytes = 0
        nn_bytes = 0
        gc_us = 0
        reserve = 8192
        prev_ms = None
        while reader.read():
            t_ms = reader.t_ms
            dt_s = 0.0 if prev_ms is None else (t_ms - prev_ms) * 0.001
            prev_ms = t_ms
            volts = reader.volts_mV
            temps = reader.temps_dC
            share_us = 0.0
            if nn is not None:  # the features of all cells at once: each cell-step takes its share
                gc.disable()  # a collection here would be charged to the features
                t0 = time.ticks_us()
                nn.update(reader.current_mA, volts, temps)
                t1 = time.ticks_us()
                gc.enable()
                share_us = time.ticks_diff(t1, t0) / n
            if ekf is not None:
                ekf.set_current(reader.current_mA)
                soh.set_current(dt_s)
            for cell in range(n):
                if gc.mem_free() < reserve:
                    t0 = time.ticks_us()
                    gc.collect()
                    gc_us += time.ticks_diff(time.ticks_us(), t0)
                gc.disable()
                m0 = gc.mem_alloc()
                t0 = time.ticks_us()
                if ekf is not None:
                    ekf.step_cell(cell, dt_s, volts[cell], temps[cell])
                t1 = time.ticks_us()
                m1 = gc.mem_alloc()
                if fusion is not None:
                    fusion.step_cell(cell)
                elif nn is not None:
                    nn.step_cell(cell)
                t2 = time.ticks_us()
                m2 = gc.mem_alloc()
                gc.enable()
                # SoH beside the EKF, untimed; a new capacity estimate is the EKF's Q from now on.
                if soh is not None and soh.step_cell(cell, dt_s, volts[cell]):
                    ekf.set_capacity_Ah(cell, soh.capacity_Ah(cell))
                if ekf is not None:
                    hist[_bin(time.ticks_diff(t1, t0))] += 1
                if nn_hist is not None:
                    nn_hist[_bin(time.ticks_diff(t2, t1) + share_us)] += 1
                total_bytes += m1 - m0
                nn_bytes += m2 - m1
                reserve = 2 * (m2 - m0) + 4096
            records += 1
            writer.write(t_ms, estimator)
    steps = records * n
    summary = {"records": records, "gc_us_per_step": gc_us / records if records else 0}
    if ekf is not None:
        gated = 0
        for cell in range(n):
            gated += ekf.gated(cell)
        summary["ekf_step_us_median"] = _percentile_us(hist, steps, 0.5)
        summary["ekf_step_us_p99"] = _percentile_us(hist, steps, 0.99)
        summary["gated"] = gated
        summary["bytes_per_step"] = total_bytes / steps if steps else 0
        summary["soh_capacity_Ah"] = [soh.capacity_Ah(c) for c in range(n)]
        summary["soh_capacity_sigma_Ah"] = [soh.capacity_sigma_Ah(c) for c in range(n)]
        summary["soh_capacity_pairs"] = [soh.n_pairs[c] for c in range(n)]
        summary["soh_capacity_prior_sigma_Ah"] = soh.prior_sigma_Ah
        summary["soh_r0_ohm"] = [soh.r0_ohm(c) for c in range(n)]
        summary["soh_r0_sigma_ohm"] = [soh.r0_sigma(c) for c in range(n)]
    if nn_hist is not None:
        summary["nn_step_us_median"] = _percentile_us(nn_hist, steps, 0.5)
        summary["nn_step_us_p99"] = _percentile_us(nn_hist, steps, 0.99)
        summary["nn_bytes_per_step"] = nn_bytes / steps if steps else 0
    if fusion is not None:
        summary["nn_gated"] = sum(fusion.n_gated)
    print(json.dumps(summary))
    return summary


def main(argv):
    if len(argv) not in (6, 8):
        print("usage: streamrun.py STREAM MODEL CONFIG OUT SOC0_CSV [MODE NN_MODEL]")
        sys.exit(2)
    mode, nn_model = (argv[6], argv[7]) if len(argv) == 8 else ("ekf", None)
    run(argv[1], argv[2], argv[3], argv[4], [float(v) for v in argv[5].split(",")], mode, nn_model)


if __name__ == "__main__":
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    sys.path.append(here + "/..")  # firmware/, when run as a script from firmware/engine/
    main(sys.argv)
