# Per-cell extended Kalman filter for state of charge on the two-RC model with hysteresis (Plett, Battery
# Management Systems Vol. 2, 2015, ch. 3: EKF SoC estimation; the contract of issue 5). MicroPython and CPython
# subset.
#
#   x = [soc, v1, v2, b]   b: current-sensor bias (A), true current I = I_meas − b
#   predict:  soc' = soc + η'·I·dt/Q,  v_k' = v_k·e_k + R_k·I·(1 − e_k),  e_k = exp(−dt/(R_k·C_k)),  b' = b
#             h' = s + (h − s)·exp(−γ·|I|·dt), s = sign I (h, the hysteresis state, is propagated, not estimated)
#             F = [[1,0,0,−η'·dt/Q], [d1,e1,0,−R1(1−e1)], [d2,0,e2,−R2(1−e2)], [0,0,0,1]],  d_k = (1−e_k)·I·dR_k/dsoc
#             P' = F·P·Fᵀ + diag(q_soc, q_v, q_v, q_b)·dt
#   update:   V(x') = OCV(soc', T) + M·h' + v1 + v2 + R0·I + B·asinh(z),  z = I/(2·I0),  B = 2RT/F
#             H = [dOCV/dsoc + h'·dM/dsoc + I·(dR0/dsoc − q·dI0/dsoc / I0), 1, 1, −(R0 + q)],
#             q = B/(2·I0·sqrt(1 + z²))
#             y = V_meas − V(x'),  S = H·P·Hᵀ + r_V;  gated (skipped, counted) when y² > gate²·S, but only the first
#             gate_run samples of a run beyond the gate: a spike is brief, a lasting innovation is the filter's own
#             error (e.g. after a wrong start) and must be corrected, not locked out
#             K = P·Hᵀ/S,  x += K·y,  P = (I − K·H)·P·(I − K·H)ᵀ + K·r_V·Kᵀ  (Joseph form)
#   iterated (config "iterations" n > 1; Bell & Cathey 1993, the IEKF as Gauss-Newton on the MAP): the OCV and
#             its slope relinearised at soc_i, y_i = V − V(x') − H0_i·(soc' − soc_i) with V(x') taken at soc_i,
#             soc_{i+1} = soc' + K0_i·y_i, until soc moves less than ITERATION_TOL_SOC or n linearisations; the
#             last K_i, y_i make the update. V is linear in v1, v2, b, so only soc needs it. Why: from a 30 %
#             wrong start one linearisation across 30 % of OCV overshoots (NCR18650PF at 0 °C: +10 % after the
#             first update of a start 30 % low), and the RC states then take up the error with σ 0.5 %; iterated,
#             the first update lands within 1.5 %. Gating uses the first linearisation's y and S.
#             The OCV is piecewise linear, so the MAP lies inside a segment (a fixed point) or on a grid point
#             between two, where the iterates cycle around it and where they stop would be arbitrary (a start on
#             a grid point, 0.7 in float32 just below it, then ended 2 % from the float64 reference). So the
#             iterates keep a bracket (lo, hi) of the MAP's soc (the step rises from lo, falls from hi), bisect it
#             when a step leaves it, and when lo and hi lie on the two segments of one grid point s* the update is
#             made there, with the H0 = h that puts soc at s*: soc' + (P·Hᵀ)_0·(Y0 − h·d)/S(h) = s* with
#             d = soc' − s*, Y0 = V − V(x') at s*, (P·Hᵀ)_0 = P00·h + c, S(h) = P00·h² + 2c·h + e (c, e the terms
#             without h), whose h² terms cancel: h = −(c·Y0 + d·e)/(P00·Y0 + c·d), held between the two segments'.
# Parameters are looked up at the prior soc and the cell's temperature (absent: the last valid reading, else
# 25 °C); OCV and its slope at soc'. The Jacobians carry the resistances' and I0's SoC slopes (engine/cellmodel.py):
# without them the filter believes a lower soc lowers the voltage, while under charge at low SoC a fitted cell's
# R1·I rises faster than its OCV falls (Panasonic NCR18650PF: R1 0.018 → 0.09 Ω from SoC 0.2 to 0.1), so a filter
# started high fell into that region and stayed (CC-CV bench run: 40 % error; with the slopes the US06 and UDDS
# runs also converge 6-10x sooner). d_k omits (v_k − R_k·I)·de_k/dsoc, which vanishes once the branch has settled.
# The Joseph form is evaluated expanded, P_ij − K_i·g_j − g_i·K_j + S·K_i·K_j with g = P·Hᵀ (an identity for any
# K), on the 10 upper-triangle entries only, so P stays exactly symmetric.
#
# State and covariance live in float32 arrays (the board's float): per cell 4 state values, h, and P's upper
# triangle [p00 p01 p02 p03 p11 p12 p13 p22 p23 p33]. Floats are heap objects on MicroPython, so a cell-step
# allocates its ~285 float results and nothing else: 9.2 KB on the 64-bit unix port (32-byte blocks), about half on
# a 32-bit board; ~17 µs per cell-step from .mpy (engine/streamrun.py measures both).

import math
from array import array

from engine.cellmodel import Lookup
from soxcommon.frame import ABSENT

DEFAULT_TEMP_DC = 250
CONFIG_KEYS = ("q_soc", "q_v", "q_b", "r_V", "p0_soc", "p0_v", "p0_b", "gate", "gate_run")
ITERATION_TOL_SOC = 1e-4  # an iterated update stops when soc moves less between linearisations
BRACKET = 1e9  # the iterated update's first bracket of the MAP's soc: unbounded


def soc_measurement(x, P, cell, b, nu, var, gate2, gate_run, run_gated, n_gated, u):
    """A scalar measurement of b·soc (plus terms the state does not hold) on a SocEkf's x and P, with innovation nu
    and variance var: gated as the voltage is (counted in n_gated[u], at most gate_run samples in a row in
    run_gated[u]), else K = g/S with g = P·Hᵀ = b·P[:, 0], S = b·g0 + var, x += K·nu and P in Joseph form, expanded
    on the upper triangle. True when applied. The NN's SoC (engine/fusion.py) and the extra sensors
    (engine/multisensor.py) measure the cell this way."""
    i = 4 * cell
    j = 10 * cell
    g0 = b * P[j]
    g1 = b * P[j + 1]
    g2 = b * P[j + 2]
    g3 = b * P[j + 3]
    S = b * g0 + var
    outlier = nu * nu > gate2 * S
    run_gated[u] = run_gated[u] + 1 if outlier else 0
    if outlier and run_gated[u] <= gate_run:
        n_gated[u] += 1
        return False
    k0 = g0 / S
    k1 = g1 / S
    k2 = g2 / S
    k3 = g3 / S
    x[i] += k0 * nu
    x[i + 1] += k1 * nu
    x[i + 2] += k2 * nu
    x[i + 3] += k3 * nu
    P[j] += (S * k0 - 2.0 * g0) * k0
    P[j + 1] += S * k0 * k1 - k0 * g1 - g0 * k1
    P[j + 2] += S * k0 * k2 - k0 * g2 - g0 * k2
    P[j + 3] += S * k0 * k3 - k0 * g3 - g0 * k3
    P[j + 4] += (S * k1 - 2.0 * g1) * k1
    P[j + 5] += S * k1 * k2 - k1 * g2 - g1 * k2
    P[j + 6] += S * k1 * k3 - k1 * g3 - g1 * k3
    P[j + 7] += (S * k2 - 2.0 * g2) * k2
    P[j + 8] += S * k2 * k3 - k2 * g3 - g2 * k3
    P[j + 9] += (S * k3 - 2.0 * g3) * k3
    return True


def iterations(cfg):
    """The configuration's "iterations" of the update (optional; 1, the default, is the plain EKF)."""
    n = cfg.get("iterations", 1)
    if not isinstance(n, int) or n < 1:
        raise ValueError("estimator config: iterations must be an integer >= 1")
    return n


class SocEkf:
    def __init__(self, model, n_cells, cfg, typecode="f"):
        """model: engine.cellmodel.CellModel; cfg: the estimator configuration (models/board/estimator.json);
        typecode: storage of x and P, "f" (float32, the board) or "d" (float64 where the port has it)."""
        for key in CONFIG_KEYS:
            if key not in cfg or not cfg[key] >= 0:
                raise ValueError("estimator config: %s must be a number >= 0" % key)
        self.model = model
        self.n_cells = n_cells
        self.lookup = Lookup(model, n_cells)
        self.q_soc = float(cfg["q_soc"])
        self.q_v = float(cfg["q_v"])
        self.q_b = float(cfg["q_b"])
        self.r_V = float(cfg["r_V"])
        self.gate2 = float(cfg["gate"]) ** 2
        self.gate_run = int(cfg["gate_run"])
        self.iterations = iterations(cfg)
        self.p0 = (float(cfg["p0_soc"]), float(cfg["p0_v"]), float(cfg["p0_b"]))
        self.x = array(typecode, [0.0] * (4 * n_cells))
        self.h = array(typecode, [0.0] * n_cells)
        self.P = array(typecode, [0.0] * (10 * n_cells))
        self.n_gated = array("i", [0] * n_cells)
        self.run_gated = array("i", [0] * n_cells)  # consecutive samples beyond the gate
        self.temp_dC = array("i", [DEFAULT_TEMP_DC] * n_cells)
        self.current_A = 0.0  # the last valid current reading
        self.capacity_As = array(typecode, [model.capacity_As] * n_cells)  # per cell: set_capacity_Ah (SoH)
        for cell in range(n_cells):
            self.reset(cell, 0.5)

    def reset(self, cell, soc0):
        """Start the cell at soc0 with v1 = v2 = b = 0, h = 0 and the initial covariance."""
        x = self.x
        i = 4 * cell
        x[i] = soc0
        x[i + 1] = x[i + 2] = x[i + 3] = 0.0
        self.h[cell] = 0.0
        P = self.P
        i = 10 * cell
        for k in range(10):
            P[i + k] = 0.0
        p_soc, p_v, p_b = self.p0
        P[i] = p_soc
        P[i + 4] = P[i + 7] = p_v
        P[i + 9] = p_b
        self.n_gated[cell] = 0
        self.run_gated[cell] = 0

    def set_capacity_Ah(self, cell, capacity_Ah):
        """The cell's Q from now on (the model file's until set), e.g. a SoH tracker's estimate."""
        self.capacity_As[cell] = capacity_Ah * 3600.0

    def soc(self, cell):
        s = self.x[4 * cell]
        return 0.0 if s < 0.0 else 1.0 if s > 1.0 else s

    def sigma(self, cell):
        return math.sqrt(self.P[10 * cell])

    def bias_A(self, cell):
        return self.x[4 * cell + 3]

    def gated(self, cell):
        return self.n_gated[cell]

    def step(self, dt_s, current_mA, volts_mV, temps_dC):
        """One sample for every cell: pack current (mA, ABSENT: the last valid one), per-cell voltage (mV, ABSENT:
        predict only) and temperature (0.1 °C, ABSENT: the last valid one)."""
        self.set_current(current_mA)
        for cell in range(self.n_cells):
            self.step_cell(cell, dt_s, volts_mV[cell], temps_dC[cell])

    def set_current(self, current_mA):
        """The sample's pack current, before its step_cell() calls (ABSENT: keep the last valid one)."""
        if current_mA != ABSENT:
            self.current_A = current_mA * 0.001

    def step_cell(self, cell, dt, v_mV, temp_dC):
        """One cell's part of step() (a runner times and measures cell-steps one by one)."""
        if temp_dC != ABSENT:
            self.temp_dC[cell] = temp_dC
        model = self.model
        lk = self.lookup
        x = self.x
        i = 4 * cell
        soc = x[i]
        v1 = x[i + 1]
        v2 = x[i + 2]
        b = x[i + 3]
        lk.params(cell, soc, self.temp_dC[cell])
        cur = self.current_A - b

        # Predict.
        a = -dt / self.capacity_As[cell]  # F[0][3] = −η'·dt/Q
        if cur > 0.0:
            a *= model.efficiency
        soc -= a * cur
        r1 = lk.r1
        r2 = lk.r2
        e1 = math.exp(-dt / (r1 * lk.c1))
        e2 = math.exp(-dt / (r2 * lk.c2))
        c1 = -r1 * (1.0 - e1)  # F[1][3]
        c2 = -r2 * (1.0 - e2)  # F[2][3]
        d1 = (1.0 - e1) * cur * lk.dr1  # F[1][0]
        d2 = (1.0 - e2) * cur * lk.dr2  # F[2][0]
        v1 = v1 * e1 - c1 * cur
        v2 = v2 * e2 - c2 * cur
        h = self.h[cell]
        if cur:
            s = 1.0 if cur > 0.0 else -1.0
            h = s + (h - s) * math.exp(-model.hyst_rate_per_As * abs(cur) * dt)
            self.h[cell] = h

        P = self.P
        j = 10 * cell
        p00 = P[j]
        p01 = P[j + 1]
        p02 = P[j + 2]
        p03 = P[j + 3]
        p13 = P[j + 6]
        p23 = P[j + 8]
        p33 = P[j + 9]
        # F·P·Fᵀ on the upper triangle (F's rows: [1,0,0,a], [d1,e1,0,c1], [d2,0,e2,c2], [0,0,0,1]);
        # u_k = (P·Fᵀ)[0][k] for the rows k = 1, 2.
        n03 = p03 + a * p33
        n13 = d1 * p03 + e1 * p13 + c1 * p33
        n23 = d2 * p03 + e2 * p23 + c2 * p33
        u1 = d1 * p00 + e1 * p01 + c1 * p03
        u2 = d2 * p00 + e2 * p02 + c2 * p03
        n00 = p00 + a * (p03 + n03) + self.q_soc * dt
        n01 = u1 + a * n13
        n02 = u2 + a * n23
        n11 = d1 * u1 + e1 * (d1 * p01 + e1 * P[j + 4] + c1 * p13) + c1 * n13 + self.q_v * dt
        n12 = d1 * u2 + e1 * (d2 * p01 + e2 * P[j + 5] + c2 * p13) + c1 * n23
        n22 = d2 * u2 + e2 * (d2 * p02 + e2 * P[j + 7] + c2 * p23) + c2 * n23 + self.q_v * dt
        n33 = p33 + self.q_b * dt

        if v_mV != ABSENT:
            r0 = lk.r0
            h3 = r0
            dr = lk.dr0  # d(R0·I + B·asinh z)/dsoc / I
            rest = lk.m * h + v1 + v2 + r0 * cur  # V(x') but its OCV
            if model.kinetic:
                i0 = lk.i0
                z = cur / (2.0 * i0)
                rest += lk.b_V * math.log(z + math.sqrt(z * z + 1.0))  # asinh, absent from some ports' math
                q = lk.b_V / (2.0 * i0 * math.sqrt(1.0 + z * z))
                h3 += q
                dr -= q * lk.di0 / i0
            h3 = -h3
            dv_dsoc = h * lk.dm + cur * dr  # H[0] but dOCV/dsoc
            v_V = v_mV * 0.001
            # Iterated update: the OCV relinearised at soc_i, y = V − V(x') − H0·(soc' − soc_i) with V(x') at soc_i
            # (Gauss-Newton on the MAP, the rest of V being linear in x).
            soc_i = soc
            lo = -BRACKET  # the MAP's soc lies in (lo, hi), on OCV segments k_lo, k_hi (-1: none yet)
            hi = BRACKET
            k_lo = k_hi = -1
            h_lo = h_hi = t_lo = t_hi = 0.0  # H0 on lo's and hi's segments, and where their lines put soc
            gated = False
            for it in range(self.iterations):
                lk.ocv_at(cell, soc_i)
                h0 = lk.docv + dv_dsoc
                y = v_V - rest - lk.ocv - h0 * (soc - soc_i)
                # g = P·Hᵀ, H = [h0, 1, 1, h3]
                g0 = n00 * h0 + n01 + n02 + n03 * h3
                g1 = n01 * h0 + n11 + n12 + n13 * h3
                g2 = n02 * h0 + n12 + n22 + n23 * h3
                g3 = n03 * h0 + n13 + n23 + n33 * h3
                S = h0 * g0 + g1 + g2 + h3 * g3 + self.r_V
                if not it:
                    outlier = y * y > self.gate2 * S
                    self.run_gated[cell] = self.run_gated[cell] + 1 if outlier else 0
                    if outlier and self.run_gated[cell] <= self.gate_run:
                        self.n_gated[cell] += 1
                        gated = True
                        break
                step = soc + g0 / S * y - soc_i
                if abs(step) < ITERATION_TOL_SOC:
                    break
                target = soc_i + step  # the MAP on the line of soc_i's segment (the same from all of it)
                if step > 0.0:
                    lo = soc_i
                    k_lo = lk.segment[cell]
                    h_lo = h0
                    t_lo = target
                else:
                    hi = soc_i
                    k_hi = lk.segment[cell]
                    h_hi = h0
                    t_hi = target
                s_star = self.model.soc[k_hi] if k_lo >= 0 and k_hi == k_lo + 1 else None
                if s_star is not None and t_lo >= s_star >= t_hi:  # the MAP on the grid point: update there
                    lk.ocv_at(cell, s_star)
                    y0 = v_V - rest - lk.ocv
                    d = soc - s_star
                    c = n01 + n02 + n03 * h3
                    e = n11 + 2.0 * n12 + n22 + 2.0 * h3 * (n13 + n23) + h3 * h3 * n33 + self.r_V
                    den = n00 * y0 + c * d
                    h0 = -(c * y0 + d * e) / den if den else 0.5 * (h_lo + h_hi)
                    h0 = min(max(h0, min(h_lo, h_hi)), max(h_lo, h_hi))
                    y = y0 - h0 * d
                    g0 = n00 * h0 + c
                    g1 = n01 * h0 + n11 + n12 + n13 * h3
                    g2 = n02 * h0 + n12 + n22 + n23 * h3
                    g3 = n03 * h0 + n13 + n23 + n33 * h3
                    S = h0 * g0 + g1 + g2 + h3 * g3 + self.r_V
                    break
                if s_star is not None:  # inside one of the two segments: on its line
                    soc_i = t_lo if t_lo < s_star else t_hi
                else:  # the line's MAP, or the bracket bisected when that lies outside it
                    soc_i = target if lo < target < hi else 0.5 * (lo + hi)
            if not gated:
                k0 = g0 / S
                k1 = g1 / S
                k2 = g2 / S
                k3 = g3 / S
                soc += k0 * y
                v1 += k1 * y
                v2 += k2 * y
                b += k3 * y
                # Joseph form, expanded: P_ij − K_i·g_j − g_i·K_j + S·K_i·K_j
                n00 += (S * k0 - 2.0 * g0) * k0
                n01 += S * k0 * k1 - k0 * g1 - g0 * k1
                n02 += S * k0 * k2 - k0 * g2 - g0 * k2
                n03 += S * k0 * k3 - k0 * g3 - g0 * k3
                n11 += (S * k1 - 2.0 * g1) * k1
                n12 += S * k1 * k2 - k1 * g2 - g1 * k2
                n13 += S * k1 * k3 - k1 * g3 - g1 * k3
                n22 += (S * k2 - 2.0 * g2) * k2
                n23 += S * k2 * k3 - k2 * g3 - g2 * k3
                n33 += (S * k3 - 2.0 * g3) * k3
                x[i + 3] = b

        x[i] = soc
        x[i + 1] = v1
        x[i + 2] = v2
        P[j] = n00
        P[j + 1] = n01
        P[j + 2] = n02
        P[j + 3] = n03
        P[j + 4] = n11
        P[j + 5] = n12
        P[j + 6] = n13
        P[j + 7] = n22
        P[j + 8] = n23
        P[j + 9] = n33
