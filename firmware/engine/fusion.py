# The neural SoC estimator per cell (soxcommon.socfeatures -> engine.nn) and its fusion with the EKF
# (engine.ekf.SocEkf, through its public state x and P). MicroPython and CPython subset.
#
# Fusion variants (estimator configuration key "fusion"; models/board/README.md says which one ships and why):
#   "nn_measurement"  the NN's SoC z is one more scalar measurement of the EKF's soc, after the voltage update:
#                     H = [1, 0, 0, 0], y = z − soc, S = P00 + nn_sigma², gated as the voltage is (y² > gate²·S
#                     skipped and counted, at most gate_run samples in a row), K = P·Hᵀ/S, Joseph form
#   "ensemble"        the EKF runs alone; reported soc = variance-weighted mean of EKF and NN,
#                     (soc_ekf·σ_nn² + z·P00)/(P00 + σ_nn²), variance P00·σ_nn²/(P00 + σ_nn²)
# nn_sigma is the NN's held-out SoC error (models/nn/soc_mlp.meta.json, eval split). Until a cell's features are
# ready (first current, voltage and temperature) there is no NN SoC: both variants report the EKF alone.

from array import array

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
        x = ekf.x
        P = ekf.P
        i = 4 * cell
        j = 10 * cell
        g0 = P[j]  # g = P·Hᵀ, the first column of P
        g1 = P[j + 1]
        g2 = P[j + 2]
        g3 = P[j + 3]
        S = g0 + self.nn_var
        y = self.nn.value[cell] / UNIT_SCALE - x[i]
        outlier = y * y > ekf.gate2 * S
        self.run_gated[cell] = self.run_gated[cell] + 1 if outlier else 0
        if outlier and self.run_gated[cell] <= ekf.gate_run:
            self.n_gated[cell] += 1
            return
        k0 = g0 / S
        k1 = g1 / S
        k2 = g2 / S
        k3 = g3 / S
        x[i] += k0 * y
        x[i + 1] += k1 * y
        x[i + 2] += k2 * y
        x[i + 3] += k3 * y
        # Joseph form, expanded as in SocEkf: P_ij − K_i·g_j − g_i·K_j + S·K_i·K_j (upper triangle)
        P[j] = g0 + (S * k0 - 2.0 * g0) * k0
        P[j + 1] = g1 + S * k0 * k1 - k0 * g1 - g0 * k1
        P[j + 2] = g2 + S * k0 * k2 - k0 * g2 - g0 * k2
        P[j + 3] = g3 + S * k0 * k3 - k0 * g3 - g0 * k3
        P[j + 4] += (S * k1 - 2.0 * g1) * k1
        P[j + 5] += S * k1 * k2 - k1 * g2 - g1 * k2
        P[j + 6] += S * k1 * k3 - k1 * g3 - g1 * k3
        P[j + 7] += (S * k2 - 2.0 * g2) * k2
        P[j + 8] += S * k2 * k3 - k2 * g3 - g2 * k3
        P[j + 9] += (S * k3 - 2.0 * g3) * k3

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
