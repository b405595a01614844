# The board's estimators for n cells, assembled as shipped (models/board/README.md): per cell the SoC EKF
# (engine/ekf.py), fused with the neural estimator when the estimator config has a "fusion" other than "none" and
# its "nn_cell" names this board's cell model (engine/fusion.py; the shipped config has "none"), the SoH tracker
# (engine/soh.py) whose capacity estimates become the EKF's Q, and the pack's state of safety (engine/safety.py).
# MicroPython and CPython subset.
#
# Start: a cell starts at its first delivered voltage, from the OCV table inverted (Lookup.soc_at) at
#   OCV(soc0, T) = V - R0(0.5, T) * I        (hysteresis and RC voltages taken as 0: a pack at rest)
# with the EKF's initial covariance; its estimates are absent until then. A saved state (a later slice)
# will replace this start when it is valid.
# Per sample, step(): the NN's features (all cells), the pack current into EKF and SoH, then per cell the
# EKF step, the fusion update, the SoH step; then the safety monitor (allocation-free). Allocation: only the float
# filters' results (floats are heap objects) and a few floats per value in export(); the rest is preallocated.
# Measured on the 64-bit unix port, 16 cells: 223 KB per sample for EKF + SoH + SoS, 255 KB with the NN fused (14
# and 16 KB per cell; about half on a 32-bit board), all of it short-lived garbage.
# Heap that stays (64-bit unix port, code from .mpy, 16 cells, fused; models/board/README.md, the memory): the code,
# ~38 KB with wire and frame, ~8 KB more for the NN; the objects ~25 KB (safety monitor 6.3, cell model 12, EKF
# 1.9, SoH 1.9, NN 3.4). The cell model comes from its binary companion when there is one (no JSON document on
# the heap, which took ~50 KB as Python floats), and each file's garbage is collected before the objects that stay
# are made (first fit puts them in the holes it left, not between later garbage).

import gc
import json
from array import array

from engine import cellmodel
from engine.ekf import DEFAULT_TEMP_DC, SocEkf
from engine.nvstate import exists
from engine.safety import SafetyMonitor, parse_limits
from engine.sample import ESTIMATE_FIELDS
from engine.soh import SohTracker
from soxcommon import wire
from soxcommon.frame import ABSENT, CELL_FIELDS

NN_PERIOD_MS = 1000  # soxcommon/socfeatures.py: its filters count samples of 1 s
_SOC_MAX_BP = wire.ESTIMATE_QUANTITIES[0][5]
_SIGMA_MAX_BP = wire.ESTIMATE_QUANTITIES[1][5]
_SOH_MAX_BP = wire.ESTIMATE_QUANTITIES[2][5]


class SoxError(ValueError):
    pass


def _load(what, path, make):
    """make(json document of the file at path); SoxError naming the file and what is wrong with it."""
    try:
        with open(path) as f:
            doc = json.load(f)
        return make(doc)
    except OSError as e:
        raise SoxError("cannot read %s %s: %s" % (what, path, e)) from None
    except KeyError as e:
        raise SoxError("%s %s: missing key %s" % (what, path, e)) from None
    except (ValueError, TypeError) as e:
        raise SoxError("%s %s: %s" % (what, path, e)) from None


class _Consumed(dict):
    """A JSON document whose values are let go as they are read (each key read once by its consumer), so the
    largest transient of a start, a cell model's tables as Python floats, shrinks while the model is built."""

    def __getitem__(self, key):
        return self.pop(key)


def _cell_model(doc):
    consumed = _Consumed(doc)
    doc.clear()  # the values now live in `consumed` alone
    return cellmodel.from_doc(consumed)


def _load_cell_model(path):
    """The cell model at path: a binary one (".bin"), or a JSON one (".json") read from its binary companion
    <name>.bin when there is one (checked against the JSON it was made from), else from the JSON itself."""
    binary = path
    source = None
    if path.endswith(".json"):
        binary = path[:-5] + ".bin"
        source = path
        if not exists(binary):
            return _load("cell model", path, _cell_model)
    try:
        return cellmodel.read(binary, source)
    except OSError as e:
        raise SoxError("cannot read cell model %s: %s" % (binary, e)) from None
    except ValueError as e:  # names the file
        raise SoxError("cell model %s" % e) from None


def _bp(x, hi):
    """A fraction in 0.01 % (basis points), clamped to 0..hi; ABSENT for NaN (no estimate, not a made-up one)."""
    if x != x:
        return ABSENT
    if x <= 0.0:
        return 0
    v = int(x * 10000.0 + 0.5)
    return hi if v > hi else v


class Sox:
    def __init__(self, n_cells, sample_period_ms, cell_model_path, estimator_path, nn_path, safety_path):
        """Paths: board cell model (models/board/<cell>.json), estimator config (estimator.json), NN board model
        (models/nn/soc_mlp.board.json, read only when the config fuses it for this cell), safety limits
        (safety.json). SoxError names the file of any problem."""
        self.n_cells = n_cells
        # For a small heap the objects that stay must lie packed, not between the files' transients (a JSON document
        # as Python objects): each file is read, its garbage collected, then what stays is made, from the lowest
        # free block up (first fit). The safety limits' JSON (~19 KB as Python objects) goes first.
        cfg = _load("estimator config", estimator_path, dict)
        limits = _load("safety limits", safety_path, lambda doc: parse_limits(doc, safety_path))
        gc.collect()
        self.safety = SafetyMonitor(n_cells, sample_period_ms, limits)
        del limits
        gc.collect()
        model = _load_cell_model(cell_model_path)
        gc.collect()
        try:
            self.ekf = SocEkf(model, n_cells, cfg)
        except ValueError as e:
            raise SoxError("%s: %s" % (estimator_path, e)) from None
        self.model = model
        self.soh_tracker = SohTracker(self.ekf)
        self.nn = None
        self.fusion = None
        fuse = cfg.get("fusion", "none") != "none"  # not engine.fusion's names: that module loads only when fusing
        if fuse and cfg.get("nn_cell") == model.name and sample_period_ms == NN_PERIOD_MS:
            from engine.fusion import NnSoc, SocFusion
            from engine.nn import Mlp

            gc.collect()
            mlp = _load("NN model", nn_path, Mlp)
            gc.collect()
            try:
                self.nn = NnSoc(mlp, n_cells, cfg["nn_capacity_mAh"], cfg["nn_sigma"])
                self.fusion = SocFusion(self.ekf, self.nn, cfg["fusion"])
            except (KeyError, ValueError) as e:
                raise SoxError("%s: fusion: %s" % (estimator_path, e)) from None
        self.estimator = self.fusion or self.ekf
        self.started = bytearray(n_cells)
        self._volts = array("i", [ABSENT] * n_cells)
        self._temps = array("i", [ABSENT] * n_cells)

    # --- per sample --------------------------------------------------------------------------------

    def step(self, sample, dt_s):
        """Estimate one engine.sample.Sample taken dt_s after the previous one."""
        n = self.n_cells
        cells = sample.cells
        volts = self._volts
        temps = self._temps
        for c in range(n):
            volts[c] = cells[c * CELL_FIELDS]
            temps[c] = cells[c * CELL_FIELDS + 1]
        if self.nn is not None:
            self.nn.update(sample.current_mA, volts, temps)
        ekf = self.ekf
        soh = self.soh_tracker
        ekf.set_current(sample.current_mA)
        soh.set_current(dt_s)
        for c in range(n):
            dt = dt_s
            if not self.started[c]:
                if volts[c] == ABSENT:
                    continue
                self._start(c, volts[c], temps[c], sample.current_mA)
                dt = 0.0  # the start is this sample's state: nothing to predict
            ekf.step_cell(c, dt, volts[c], temps[c])
            if self.fusion is not None:
                self.fusion.step_cell(c)
            if soh.step_cell(c, dt, volts[c]):
                ekf.set_capacity_Ah(c, soh.capacity_Ah(c))
        self.safety.update(sample)

    def _start(self, cell, v_mV, temp_dC, current_mA):
        # The EKF's own lookup: its cell's step right after this one looks the cell up afresh (a lookup's results do
        # not depend on the cell's previous segment or temperature, only how long the search takes).
        lk = self.ekf.lookup
        lk.params(cell, 0.5, DEFAULT_TEMP_DC if temp_dC == ABSENT else temp_dC)
        target_V = v_mV * 0.001
        if current_mA != ABSENT:
            target_V -= lk.r0 * current_mA * 0.001
        soc0 = lk.soc_at(cell, target_V)
        self.ekf.reset(cell, soc0)
        if self.nn is not None:
            self.nn.reset(cell, soc0)
        self.started[cell] = 1

    # --- accessors ---------------------------------------------------------------------------------

    def soc(self, cell):
        return self.estimator.soc(cell)

    def soc_sigma(self, cell):
        return self.estimator.sigma(cell)

    def soh(self, cell):
        """Capacity estimate over the model's nominal capacity."""
        return self.soh_tracker.soh(cell)

    def r0_factor(self, cell):
        """The cell's resistance growth factor against the model (1: as the model)."""
        return self.soh_tracker.resistance_scale(cell)

    def sos_level(self):
        return self.safety.level

    def sos_reasons(self, out):
        """Write the reason codes (wire.reason) of the findings above ok into out (at most len(out)), highest
        level first, then in check and cell order; returns their count."""
        levels = self.safety.levels  # [check * n_cells + cell]
        n = self.n_cells
        k = 0
        for level in (3, 2, 1):
            for i in range(len(levels)):
                if levels[i] == level:
                    if k == len(out):
                        return k
                    out[k] = wire.reason(i // n, i % n, level)
                    k += 1
        return k

    def export(self, est):
        """Write this sample's estimates into an engine.sample.Estimate as wire integers."""
        values = est.values
        for c in range(self.n_cells):
            i = c * ESTIMATE_FIELDS
            if self.started[c]:
                values[i] = _bp(self.estimator.soc(c), _SOC_MAX_BP)
                values[i + 1] = _bp(self.estimator.sigma(c), _SIGMA_MAX_BP)
                values[i + 2] = _bp(self.soh_tracker.soh(c), _SOH_MAX_BP)
            else:
                values[i] = values[i + 1] = values[i + 2] = ABSENT
        est.level = self.safety.level
        est.n_reasons = self.sos_reasons(est.reasons)

