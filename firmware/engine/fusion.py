# The neural SoC estimator per cell (soxcommon.socfeatures -> engine.nn) and its fusion with the EKF
# (engine.ekf.SocEkf, through its public state x and P). MicroPython and CPython subset.
#
# Fusion variants (estimator configuration key "fusion"; "none" runs the EKF alone and loads no NN; models/board/
# README.md says which one ships and why):
#   "nn_measurement"  the NN's SoC z is one more scalar measurement of the EKF's soc, after the voltage update:
#                     H = [1, 0, 0, 0], y = z − soc, S = P00 + nn_sigma², gated as the voltage is (y² > gate²·S
#                     skipped and counted, at most gate_run samples in a row), K = P·Hᵀ/S, Joseph form
#   "ensemble"        the EKF runs alone; reported soc = variance-weighted mean of EKF and NN,
#                     (soc_ekf·σ_nn² + z·P00)/(P00 + σ_nn²), variance P00·σ_nn²/(P00 + σ_nn²)
# nn_sigma is the NN's held-out SoC error (models/nn/soc_mlp.meta.json, eval split). Until a cell's features are
# ready (first current, voltage and temperature) there is no NN SoC: both variants report the EKF alone.

from array import array

from engine.ekf import soc_measurement
from soxcommon.socfeatures import N_FEATURES, SocFeatures

UNIT_SCALE = 10000  # engine.nn.Mlp.value: SoC in 1e-4
VARIANTS = ("nn_measurement", "ensemble")


class NnSoc:
    """The neural estimator over a sample stream: update() once per sample, then step_cell() per cell. Reports as
    an estimator (soc, sigma, bias_A) for soxcommon.stream.EstimateWriter: the start SoC until a cell is ready."""

    def __init__(self, mlp, n_cells, capacity_mAh, sigma):
        """mlp: engine.nn.Mlp of the SoC model; capacity_mAh: the model card's (the features' current scale)."""
        self.mlp = mlp
        self.n_cells = n_cells
        self.features = SocFeatures(n_cells, capacity_mAh)
        self.nn_sigma = sigma
        self.codes = array("b", bytes(N_FEATURES))
        self.cells = array("i", [0] * (2 * n_cells))  # voltage_mV, temp_dC per cell: socfeatures' stride-2 layout
        self.value = array("i", [-1] * n_cells)  # the last NN SoC per cell in 1e-4, clamped to 0..UNIT_SCALE
        self.soc0 = array("f", [0.5] * n_cells)

    def reset(self, cell, soc0):
        self.soc0[cell] = soc0

    def update(self, current_mA, volts_mV, temps_dC):
        """One sample's readings (ABSENT where not delivered) into the features' running state."""
        cells = self.cells
        for c in range(self.n_cells):
            cells[2 * c] = volts_mV[c]
            cells[2 * c + 1] = temps_dC[c]
        self.features.update(current_mA, cells, 2)

    def step_cell(self, cell):
        """Infer cell's SoC into value[cell]; False (nothing inferred) while its features are not ready."""
        if not self.features.ready(cell):
            return False
        self.features.codes(cell, self.codes)
        self.mlp.run(self.codes)
        v = self.mlp.value(0)
        self.value[cell] = 0 if v < 0 else UNIT_SCALE if v > UNIT_SCALE else v
        return True

    def soc(self, cell):
        v = self.value[cell]
        return self.soc0[cell] if v < 0 else v / UNIT_SCALE

    def sigma(self, cell):
        return self.nn_sigma

    def bias_A(self, cell):
        return 0.0


class SocFusion:
    """EKF and NN of the same cells combined by one variant; reports as an estimator (soc, sigma, bias_A)."""

    def __init__(self, ekf, nn, variant):
        if variant not in VARIANTS:
            raise ValueError("fusion must be one of %s" % (VARIANTS,))
        self.ekf = ekf
        self.nn = nn
        self.measurement = variant == "nn_measurement"
        self.nn_var = nn.nn_sigma * nn.nn_sigma
        n = ekf.n_cells
        self.n_gated = array("i", [0] * n)  # NN measurements skipped by the gate
        self.run_gated = array("i", [0] * n)

    def step_cell(self, cell):
        """After ekf.step_cell(cell) (and nn.update() for the sample): the NN's SoC, and its update of the EKF."""
        if not self.nn.step_cell(cell) or not self.measurement:
            return
        ekf = self.ekf
        nu = self.nn.value[cell] / UNIT_SCALE - ekf.x[4 * cell]
        soc_measurement(ekf.x, ekf.P, cell, 1.0, nu, self.nn_var, ekf.gate2, ekf.gate_run, self.run_gated,
                        self.n_gated, cell)

    def soc(self, cell):
        soc = self.ekf.soc(cell)
        if self.measurement or self.nn.value[cell] < 0:
            return soc
        p00 = self.ekf.P[10 * cell]
        return (soc * self.nn_var + self.nn.soc(cell) * p00) / (p00 + self.nn_var)

    def sigma(self, cell):
        if self.measurement or self.nn.value[cell] < 0:
            return self.ekf.sigma(cell)
        p00 = self.ekf.P[10 * cell]
        return (p00 * self.nn_var / (p00 + self.nn_var)) ** 0.5

    def bias_A(self, cell):
        return self.ekf.bias_A(cell)
