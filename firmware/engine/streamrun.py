# Board runner: the SoC estimator driven by a recorded sample stream (soxcommon/stream.py), no broker, no rig.
#
#   micropython -X heapsize=160k firmware/engine/streamrun.py STREAM MODEL CONFIG OUT SOC0 [MODE NN_MODEL]
#                                                              [--state PATH] [--multisensor CAL MEASUREMENTS AGE_H]
#
# STREAM: SXS1 or SXS2 input; MODEL: board cell model (models/board/<name>.json); CONFIG: estimator configuration
# (models/board/estimator.json); OUT: SXE1 output, one record per input record; SOC0: initial SoC per cell (CSV), or
# "ocv": each cell from its first voltage reading (engine/socstate.ocv_start; not in mode "nn");
# MODE: "ekf" (default), "nn" (the neural estimator alone) or "fused" (EKF and NN as CONFIG's "fusion" says, see
# engine/fusion.py); NN_MODEL: the NN board model (models/nn/soc_mlp.board.json) for "nn" and "fused".
# --state PATH: persistence (engine/socstate.py, EKF modes): start from the state saved at PATH when it is valid
# (widened by the policy's staleness), else from SOC0; save by the policy (SavePolicy), printing {"saved_t_ms": t}
# after each save. A restarted board simply sees new samples: the caller feeds it the stream from where it stopped.
# --multisensor CAL MEASUREMENTS AGE_H (EKF modes): the extra measurements (engine/multisensor.py) with the calibration
# file CAL, MEASUREMENTS a comma-separated subset of pressure,strain,tof ("none": the calibration loaded, nothing used),
# AGE_H the calibration's age at the first record (hours; it ages with the stream's time), each applied after the
# cell's voltage update from the stream's extra channels (an SXS1 stream has none).
# dt is the time since the previous record (0 for the first). Prints one JSON line at the end:
#   {"records", "ekf_step_us_median", "ekf_step_us_p99" (per cell-step, time.ticks_us), "gated" (all cells),
#    "bytes_per_step" (heap bytes per cell-step, gc.mem_alloc deltas), "gc_us_per_step" (collections, per record)}
# "start": "state", "soc0" or "ocv"; "start_soc", "start_soc_sigma" per cell (before the first step); with --state:
# "resumed", "resumed_t_ms" (the loaded state's sample time, null when not resumed), "fallback_reason" (why the
# saved state was refused, socstate's reasons, null when resumed), "saves", "state_bytes", "save_us_max" and
# "save_alloc_bytes_max" (per save).
# with the NN: "nn_step_us_median", "nn_step_us_p99" (inference, the fusion update and the cell's share of the
# sample's feature update), "nn_bytes_per_step"; "fused": also "nn_gated" (NN measurements gated, all cells); "nn"
# has no EKF keys.
# With --multisensor: "ms_step_us_median", "ms_step_us_p99", "ms_bytes_per_step" (the cell's extra updates),
# "ms_used" and "ms_gated" (per measurement name, all cells: updates applied, readings gated).
# With the EKF, per cell at the end: "soh_capacity_Ah", "soh_capacity_sigma_Ah", "soh_capacity_pairs", "soh_r0_ohm",
# "soh_r0_sigma_ohm", and the capacity prior's "soh_capacity_prior_sigma_Ah" (engine/soh.py, stepped after each
# cell-step outside its timing; every new capacity estimate becomes the EKF's Q for that cell), and those updates,
# "capacity_updates": [t_ms, cell, capacity_Ah] each (the host reference replays them: a few per run).
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
# scenario of any length runs in a fixed heap. Made from zero bytes, not a list of zeros: the list would be a 16 KB
# temporary on this port (8 KB on a board) next to the 8 KB array, at the 160 KB heap's tightest moment.
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


class _Persistence:
    """The runner's side of engine/socstate: the saved state loaded at the start, saves by the policy, and their
    figures for the summary."""

    def __init__(self, path, ekf, soh, policy):
        from engine.socstate import SavePolicy, SocState

        self.ekf = ekf
        self.state = SocState(path, ekf, soh)
        self.policy = policy or SavePolicy(ekf.n_cells)
        self.reason = self.state.load()
        self.resumed_t_ms = None
        if self.reason is None:
            self.resumed_t_ms = self.state.t_ms
            self.policy.widen(ekf)
        self.saves = 0
        self.us_max = 0
        self.bytes_max = 0

    def sample(self, t_ms):
        """After a sample's steps: save when the policy says so. Returns the µs spent collecting garbage first."""
        if not self.policy.due(t_ms, self.ekf):
            return 0
        t0 = time.ticks_us()
        gc.collect()  # so that the save's own allocation is measured without a collection inside it
        t1 = time.ticks_us()
        gc.disable()
        m0 = gc.mem_alloc()
        self.state.save(t_ms)
        t2 = time.ticks_us()
        m1 = gc.mem_alloc()
        gc.enable()
        self.policy.mark(t_ms, self.ekf)
        self.saves += 1
        self.us_max = max(self.us_max, time.ticks_diff(t2, t1))
        self.bytes_max = max(self.bytes_max, m1 - m0)
        print(json.dumps({"saved_t_ms": t_ms}))
        return time.ticks_diff(t1, t0)

    def report(self, summary):
        summary.update({"resumed": self.reason is None, "resumed_t_ms": self.resumed_t_ms,
                        "fallback_reason": self.reason, "saves": self.saves, "state_bytes": self.state.file_bytes(),
                        "save_us_max": self.us_max, "save_alloc_bytes_max": self.bytes_max})


def run(stream, model, config, out, soc0, mode="ekf", nn_model=None, state_path=None, policy=None,
        multisensor=None, measurements=(), calibration_age_h=0.0):
    """Run the estimator over the stream file `stream`, write `out`; returns (and prints) the summary dict.
    soc0: initial SoC per cell, or None for the OCV start (EKF modes); mode: "ekf", "nn" or "fused"; nn_model: path
    of the NN board model (for "nn" and "fused"); state_path: persistence (EKF modes) with `policy`
    (engine.socstate.SavePolicy; None: its defaults); multisensor: path of a calibration file (EKF modes) whose
    `measurements` (names of engine.multisensor.MEASUREMENTS) are used, calibration_age_h old at the first record."""
    from engine import cellmodel
    from engine.ekf import SocEkf
    from engine.soh import SohTracker
    from soxcommon.stream import EstimateWriter, SampleReader

    if mode not in ("ekf", "nn", "fused"):
        raise ValueError("mode must be ekf, nn or fused")
    if mode == "nn" and (soc0 is None or state_path is not None or multisensor is not None):
        raise ValueError("the OCV start, persistence and extra measurements need the EKF (mode ekf or fused)")
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
        if soc0 is not None and len(soc0) != n:
            raise ValueError("%d initial SoC values for %d cells" % (len(soc0), n))
        ekf = nn = fusion = soh = persist = ms = ms_hist = None
        if mode != "nn":
            ekf = SocEkf(cell_model, n, cfg)
            soh = SohTracker(ekf)
        if multisensor is not None:
            from engine.multisensor import MultiSensor
            from engine.multisensor import load as load_calibration

            ms = MultiSensor(ekf, load_calibration(multisensor), measurements, calibration_age_h)
            ms_hist = array("I", bytes(4 * N_BINS))
        if mlp is not None:
            from engine.fusion import NnSoc, SocFusion

            nn = NnSoc(mlp, n, cfg["nn_capacity_mAh"], cfg["nn_sigma"])
            if ekf is not None:
                fusion = SocFusion(ekf, nn, cfg["fusion"])
        estimator = fusion or ekf or nn
        writer = EstimateWriter(fout, n)
        hist = array("I", bytes(4 * N_BINS))  # the EKF's cell-steps
        nn_hist = array("I", bytes(4 * N_BINS)) if nn is not None else None
        start_soc = array("f", [0.0] * n)
        start_sigma = array("f", [0.0] * n)
        # After the large arrays, so that the load's short-lived objects do not split the heap under them.
        if state_path is not None:
            persist = _Persistence(state_path, ekf, soh, policy)
        start = "state" if persist is not None and persist.reason is None else "soc0" if soc0 is not None else "ocv"
        if start == "ocv":
            from engine.socstate import ocv_start
        records = 0
        capacity_updates = []
        total_bytes = 0
        nn_bytes = 0
        ms_bytes = 0
        gc_us = 0
        # Free heap a cell-step needs with the collector held off (below it, collect first): then twice the last
        # step's; before any, above the most one was measured to take (~17 KB on this 64-bit port: the iterated
        # update's first linearisations and the NN).
        reserve = 32768
        prev_ms = None
        while reader.read():
            t_ms = reader.t_ms
            dt_s = 0.0 if prev_ms is None else (t_ms - prev_ms) * 0.001
            volts = reader.volts_mV
            temps = reader.temps_dC
            if prev_ms is None:  # the start, at the first sample's readings
                if ekf is not None:
                    ekf.set_current(reader.current_mA)
                for cell in range(n):
                    if start == "soc0" and ekf is not None:
                        ekf.reset(cell, soc0[cell])
                    elif start == "ocv":
                        ocv_start(ekf, cell, volts[cell], temps[cell])
                    start_soc[cell] = ekf.x[4 * cell] if ekf is not None else soc0[cell]
                    start_sigma[cell] = ekf.sigma(cell) if ekf is not None else 0.0
                    if nn is not None:
                        nn.reset(cell, start_soc[cell])
                if persist is not None:
                    persist.policy.mark(t_ms, ekf)
            prev_ms = t_ms
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
            if ms is not None:
                ms.advance(dt_s)
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
                tm = t1
                mm = m1
                if ms is not None:
                    ms.step_cell(cell, reader.extra)
                    tm = time.ticks_us()
                    mm = gc.mem_alloc()
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
                    capacity_updates.append([t_ms, cell, soh.capacity_Ah(cell)])
                if ekf is not None:
                    hist[_bin(time.ticks_diff(t1, t0))] += 1
                if ms_hist is not None:
                    ms_hist[_bin(time.ticks_diff(tm, t1))] += 1
                if nn_hist is not None:
                    nn_hist[_bin(time.ticks_diff(t2, tm) + share_us)] += 1
                total_bytes += m1 - m0
                ms_bytes += mm - m1
                nn_bytes += m2 - mm
                reserve = 2 * (m2 - m0) + 4096
            records += 1
            if persist is not None:
                gc_us += persist.sample(t_ms)
            writer.write(t_ms, estimator)
    steps = records * n
    summary = {"records": records, "gc_us_per_step": gc_us / records if records else 0, "start": start,
               "start_soc": list(start_soc), "start_soc_sigma": list(start_sigma)}
    if persist is not None:
        persist.report(summary)
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
        summary["capacity_updates"] = capacity_updates
        summary["soh_r0_ohm"] = [soh.r0_ohm(c) for c in range(n)]
        summary["soh_r0_sigma_ohm"] = [soh.r0_sigma(c) for c in range(n)]
    if nn_hist is not None:
        summary["nn_step_us_median"] = _percentile_us(nn_hist, steps, 0.5)
        summary["nn_step_us_p99"] = _percentile_us(nn_hist, steps, 0.99)
        summary["nn_bytes_per_step"] = nn_bytes / steps if steps else 0
    if fusion is not None:
        summary["nn_gated"] = sum(fusion.n_gated)
    if ms is not None:
        from engine.multisensor import MEASUREMENTS

        summary["ms_step_us_median"] = _percentile_us(ms_hist, steps, 0.5)
        summary["ms_step_us_p99"] = _percentile_us(ms_hist, steps, 0.99)
        summary["ms_bytes_per_step"] = ms_bytes / steps if steps else 0
        summary["ms_used"] = {name: sum(ms.n_used[m * n:(m + 1) * n]) for m, name in enumerate(MEASUREMENTS)}
        summary["ms_gated"] = {name: sum(ms.n_gated[m * n:(m + 1) * n]) for m, name in enumerate(MEASUREMENTS)}
    print(json.dumps(summary))
    return summary


def main(argv):
    state_path = calibration = None
    measurements = ()
    age_h = 0.0
    if len(argv) > 4 and argv[-4] == "--multisensor":
        calibration = argv[-3]
        measurements = () if argv[-2] == "none" else tuple(argv[-2].split(","))
        age_h = float(argv[-1])
        argv = argv[:-4]
    if len(argv) > 2 and argv[-2] == "--state":
        state_path = argv[-1]
        argv = argv[:-2]
    if len(argv) not in (6, 8):
        print("usage: streamrun.py STREAM MODEL CONFIG OUT SOC0_CSV|ocv [MODE NN_MODEL] [--state PATH] "
              "[--multisensor CAL pressure,strain,tof|none AGE_H]")
        sys.exit(2)
    mode, nn_model = (argv[6], argv[7]) if len(argv) == 8 else ("ekf", None)
    soc0 = None if argv[5] == "ocv" else [float(v) for v in argv[5].split(",")]
    run(argv[1], argv[2], argv[3], argv[4], soc0, mode, nn_model, state_path, None, calibration, measurements, age_h)


if __name__ == "__main__":
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    sys.path.append(here + "/..")  # firmware/, when run as a script from firmware/engine/
    main(sys.argv)
