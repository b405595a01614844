# Per-cell state of health beside the SoC EKF (engine/ekf.py): capacity by recursive weighted least squares with
# forgetting, and a resistance-growth factor by a scalar EKF with forgetting, each with its variance. MicroPython and
# CPython subset.
#
# Capacity (Plett 2011, "Recursive approximate weighted total least squares estimation of battery cell total
# capacity", J. Power Sources 196, 2319: charge against SoC change). Between two SoC readings x = soc_2 − soc_1
# (variance σ_1² + σ_2²) and y = ∫η'·I_meas·dt / 3600 (Ah) satisfy x = θ·y,
# θ = 1/Q (1/Ah). The noise is in x, so x is regressed on y (y on x biases Q when x is noisy, Plett 2011):
#   c_yy ← λ·c_yy + y²/s,  c_xy ← λ·c_xy + x·y/s,  s = σ_x² + (θ̂·σ_y)²  (σ_y: current gain error × |y|)
#   θ̂ = c_xy/c_yy,  σ_θ² = 1/c_yy,  Q = 1/θ̂,  σ_Q = σ_θ/θ̂²  (first order)
# The prior is one fictitious observation, c_yy = 1/σ_θ0², c_xy = θ_0/σ_θ0² (θ_0 = 1/Q_model, σ_θ0 = σ_Q0/Q0²), and
# fades with λ like the data. y integrates the measured current, not the EKF's I_meas − b: the bias state also
# takes up model misfit (tens of mA where the OCV is flat), which moved the capacity 3-4 % off on the aged US06 run,
# while the shunt's own offset (<= 10 mA) is < 0.7 % of a 6400 s discharge's charge. The SoC readings are OCV
# readings at rests (|I| < REST_A for REST_S): the OCV table
# inverted at V − M·h − v1 − v2, σ = OCV_SIGMA_V / (dOCV/dsoc). Not the EKF's SoC: it integrates the current with
# the model's Q, so on an aged cell its SoC change follows the model's Q and the regression stays at the prior
# (measured on the aged US06 run: +20..65 % capacity error, 2σ coverage 1/8). A pair needs a swing of
# CAP_MIN_SWING since the anchor; a smaller one keeps the older anchor (a later rest gives a larger swing).
#
# Resistance: from the voltage step at a current step within one sample (|ΔI| >= R_MIN_STEP_A, dt <= R_MAX_DT_S).
# At 1 Hz the first RC branch (τ1 = R1·C1 under a second) and the charge-transfer element answer inside the sample,
# so ΔV/ΔI is not R0 alone. Ageing is taken to scale the cell's resistances together (a growth factor k on R0, R1,
# R2 and the charge-transfer resistance, I0 → I0/k); the model's one-sample step is then
#   g(k) = k·R0·ΔI + Σ_j (1 − e_j(k))·(k·R_j·I − v_j) + B·(asinh(k·z1) − asinh(k·z0)),  e_j(k) = exp(−dt/(k·R_j·C_j))
# with z = I/(2·I0) and v1, v2 the EKF's states before the step (fitted to the measured voltage, so the cell's RC
# voltages as they are, not scaled by k; the time constants scale with k), against the measured
# ΔV − M·Δh − dOCV/dsoc·Δsoc with noise R_STEP_VAR_V2.
# k by a scalar EKF, P/λ per step (forgetting), prior 1 ± R_PRIOR_SIGMA; steps beyond R_GATE σ (a voltage spike)
# are skipped. r0 = k·R0(soc, T) at the cell's last looked-up state, σ_r0 = R0·sqrt(P_k + R_MODEL_SIGMA²).
#
# Call order per sample: soh.set_current(dt) after ekf.set_current; per cell ekf.step_cell(cell, ...) then
# soh.step_cell(cell, ...), which reads the EKF's lookup (the cell's parameters at its prior soc and temperature)
# and states. Feeding the capacity back is the runner's choice (SocEkf.set_capacity_Ah). Per cell-step only float
# arithmetic allocates (state in arrays, no lists or tuples).

import math
from array import array

from soxcommon.frame import ABSENT

CAP_PRIOR_SIGMA_REL = 0.1  # σ_Q0 / Q_model: a stated prior, a fade of 20 % is 2σ away
CAP_MIN_SWING = 0.1  # SoC change per pair
REST_A = 0.05  # |pack current| below this is rest (C/60 for a 3 Ah cell; the shunt's offset is 10 mA)
REST_S = 900.0  # a rest this long reads the OCV: τ2 = R2·C2 is up to ~4 min in the board model
OCV_SIGMA_V = 0.005  # one rest's OCV reading: relaxation left, hysteresis model, sensor offset/gain differences
CAP_FORGET = 0.99  # λ per pair: about 100 pairs (10 full-equivalent cycles) of memory
CURRENT_GAIN_SIGMA = 0.005  # current-sensor gain error (hil/sensors/ranges.json: shunt after calibration)
R_MIN_STEP_A = 1.0
R_MAX_DT_S = 1.5
R_STEP_VAR_V2 = 9e-6  # (3 mV)²: two readings' noise and quantisation, and the model's one-sample error
R_PRIOR_SIGMA = 0.5  # σ of k's prior 1
R_FORGET = 0.999  # λ per current step
R_GATE = 5.0
R_MODEL_SIGMA = 0.03  # σ of k from the model's shape (its R1, R2, I0 and their SoC dependence), not from noise
# k is a factor on resistances, so k > 0; steps the model cannot explain (a synthetic or faulty stream) could
# drive the scalar EKF through 0, where exp(−a/k) overflows.
R_FACTOR_MIN = 0.2


def _asinh(z):
    return math.log(z + math.sqrt(z * z + 1.0))  # asinh, absent from some ports' math


class SohTracker:
    def __init__(self, ekf, typecode="f"):
        """ekf: the engine.ekf.SocEkf whose cells this tracks."""
        n = ekf.n_cells
        self.ekf = ekf
        self.n_cells = n
        q0 = ekf.model.capacity_As / 3600.0
        self.nominal_Ah = q0
        self.prior_sigma_Ah = CAP_PRIOR_SIGMA_REL * q0
        theta0 = 1.0 / q0
        var_theta0 = (self.prior_sigma_Ah * theta0 * theta0) ** 2
        self.c_yy = array(typecode, [1.0 / var_theta0] * n)
        self.c_xy = array(typecode, [theta0 / var_theta0] * n)
        self.anchor_soc = array(typecode, [0.0] * n)
        self.anchor_var = array(typecode, [-1.0] * n)  # < 0: no anchor yet
        self.charge_Ah = array(typecode, [0.0] * n)
        self.n_pairs = array("i", [0] * n)
        self.rest_taken = array("b", [0] * n)  # this rest's pair is taken
        self.rest_s = 0.0  # time the pack current has stayed below REST_A
        self.k_r = array(typecode, [1.0] * n)
        self.p_r = array(typecode, [R_PRIOR_SIGMA * R_PRIOR_SIGMA] * n)
        self.r0_model = array(typecode, [0.0] * n)
        self.n_steps = array("i", [0] * n)
        # The previous sample per cell: voltage (mV, ABSENT: none), v1, v2, h, soc, and the pack current.
        self.prev_mV = array("i", [ABSENT] * n)
        self.prev_state = array(typecode, [0.0] * (4 * n))
        self.prev_current_A = 0.0
        self.current_A = 0.0

    def set_current(self, dt):
        """After ekf.set_current, before the sample's step_cell calls; dt: time since the previous sample (s)."""
        self.prev_current_A = self.current_A
        self.current_A = self.ekf.current_A
        if abs(self.current_A) < REST_A:
            self.rest_s += dt
        else:
            self.rest_s = 0.0
            for cell in range(self.n_cells):
                self.rest_taken[cell] = 0

    def step_cell(self, cell, dt, v_mV):
        """Right after ekf.step_cell(cell, ...); True when the capacity estimate was updated."""
        ekf = self.ekf
        x = ekf.x
        i = 4 * cell
        soc = x[i]
        cur = self.current_A - x[i + 3]
        lk = ekf.lookup
        self.r0_model[cell] = lk.r0
        p = self.prev_state
        prev_mV = self.prev_mV[cell]
        di = self.current_A - self.prev_current_A
        if v_mV != ABSENT and prev_mV != ABSENT and 0.0 < dt <= R_MAX_DT_S and abs(di) >= R_MIN_STEP_A:
            k = self.k_r[cell]
            g = k * lk.r0 * di
            h = lk.r0 * di  # dg/dk
            # Branch j: (1 − e)·(k·R·I − v), e = exp(−a/k), a = dt/(R·C): k scales R, so also τ = k·R·C.
            a = dt / (lk.r1 * lk.c1)
            e = math.exp(-a / k)
            g += (1.0 - e) * (k * lk.r1 * cur - p[i])
            h += (1.0 - e) * lk.r1 * cur - e * a / (k * k) * (k * lk.r1 * cur - p[i])
            a = dt / (lk.r2 * lk.c2)
            e = math.exp(-a / k)
            g += (1.0 - e) * (k * lk.r2 * cur - p[i + 1])
            h += (1.0 - e) * lk.r2 * cur - e * a / (k * k) * (k * lk.r2 * cur - p[i + 1])
            if ekf.model.kinetic:
                z1 = cur / (2.0 * lk.i0)
                z0 = (cur - di) / (2.0 * lk.i0)
                g += lk.b_V * (_asinh(k * z1) - _asinh(k * z0))
                h += lk.b_V * (z1 / math.sqrt(1.0 + k * k * z1 * z1) - z0 / math.sqrt(1.0 + k * k * z0 * z0))
            resid = (v_mV - prev_mV) * 0.001 - lk.m * (ekf.h[cell] - p[i + 2]) - lk.docv * (soc - p[i + 3]) - g
            pk = self.p_r[cell] / R_FORGET
            s = h * h * pk + R_STEP_VAR_V2
            if resid * resid <= R_GATE * R_GATE * s:
                gain = pk * h / s
                k += gain * resid
                self.k_r[cell] = k if k > R_FACTOR_MIN else R_FACTOR_MIN
                self.p_r[cell] = (1.0 - gain * h) * pk
                self.n_steps[cell] += 1
        self.prev_mV[cell] = v_mV
        p[i] = x[i + 1]
        p[i + 1] = x[i + 2]
        p[i + 2] = ekf.h[cell]
        p[i + 3] = soc
        return self._capacity(cell, dt, self.current_A, v_mV)

    def _capacity(self, cell, dt, cur, v_mV):
        """Charge since the anchor; at a settled rest, a pair with the rest's SoC from the OCV. True: updated."""
        if self.anchor_var[cell] >= 0.0:
            self.charge_Ah[cell] += (self.ekf.model.efficiency * cur if cur > 0.0 else cur) * dt / 3600.0
        if self.rest_s < REST_S or v_mV == ABSENT or self.rest_taken[cell]:
            return False
        self.rest_taken[cell] = 1
        lk = self.ekf.lookup
        x = self.ekf.x
        # OCV = V − M·h − v1 − v2 (the RC states nearly relaxed; the EKF's estimate of the remainder), inverted on
        # the table at the cell's temperature.
        target_V = v_mV * 0.001 - lk.m * self.ekf.h[cell] - x[4 * cell + 1] - x[4 * cell + 2]
        soc_ocv = lk.soc_at(cell, target_V)
        lk.ocv_at(cell, soc_ocv)
        var_soc = (OCV_SIGMA_V / lk.docv) ** 2 if lk.docv > 0.0 else 1.0
        if self.anchor_var[cell] < 0.0:
            self._anchor(cell, soc_ocv, var_soc)
            return False
        dsoc = soc_ocv - self.anchor_soc[cell]
        if abs(dsoc) < CAP_MIN_SWING:
            return False  # too small a swing: keep the older anchor, a later rest gives a larger one
        y = self.charge_Ah[cell]
        theta = self.c_xy[cell] / self.c_yy[cell]
        sy = CURRENT_GAIN_SIGMA * y * theta
        s = self.anchor_var[cell] + var_soc + sy * sy
        self.c_yy[cell] = CAP_FORGET * self.c_yy[cell] + y * y / s
        self.c_xy[cell] = CAP_FORGET * self.c_xy[cell] + dsoc * y / s
        self.n_pairs[cell] += 1
        self._anchor(cell, soc_ocv, var_soc)
        return True

    def _anchor(self, cell, soc, var_soc):
        self.anchor_soc[cell] = soc
        self.anchor_var[cell] = var_soc
        self.charge_Ah[cell] = 0.0

    def capacity_Ah(self, cell):
        return self.c_yy[cell] / self.c_xy[cell]

    def capacity_sigma_Ah(self, cell):
        theta = self.c_xy[cell] / self.c_yy[cell]
        return 1.0 / (math.sqrt(self.c_yy[cell]) * theta * theta)

    def soh(self, cell):
        return self.capacity_Ah(cell) / self.nominal_Ah

    def resistance_scale(self, cell):
        return self.k_r[cell]

    def r0_ohm(self, cell):
        """k·R0 at the cell's last looked-up state (its prior soc and temperature of the last sample)."""
        return self.resistance_scale(cell) * self.r0_model[cell]

    def r0_sigma(self, cell):
        return self.r0_model[cell] * math.sqrt(self.p_r[cell] + R_MODEL_SIGMA * R_MODEL_SIGMA)
