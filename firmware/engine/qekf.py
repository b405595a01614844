# Quantized (fixed-point) twin of engine/ekf.py: the same per-cell SoC EKF of the issue-5 contract, with state,
# covariance and every per-step intermediate an integer inside ±2**30 (a small int on a 32-bit board: a cell-step
# allocates nothing there). MicroPython and CPython subset. Floats appear only at load, when dt changes, and in the
# read-out methods (soc, sigma, bias_A).
#
# Q-formats (value = int · 2**-f; "fN" below):
#   soc f24 · v1, v2, OCV, M, y, measured voltage f20 V · b, current f20 A (|I| < 488 A) · h f27
#   P (upper triangle [p00 p01 p02 p03 p11 p12 p13 p22 p23 p33]): P_ij in f(e_i + e_j), e = (16, 18, 18, 20):
#     p00 f32, p01 p02 f34, p03 f36, p11 p12 p22 f36, p13 p23 f38, p33 f40; diagonals kept below 2**28 (process
#     noise stops accumulating there; off-diagonals follow by |P_ij| <= sqrt(P_ii·P_jj))
#   tables: OCV, dOCV/dsoc, M, dM/dsoc f20 · R f28 Ω · C f8 F · I0 f16 A · dU/dT f36 V per 0.1 K
#   F: e_k f28, c_k = −R_k(1 − e_k) f28, a = −η'·dt/Q f36 · H0 f20 V/soc, H3 f28 Ω
# The update runs on the measurement scaled by 2**-k, k the smallest with |H0|·2**-k <= 1 V/soc: H' = H·2**-k,
# y' = y·2**-k, r' = r·2**-2k leave K·y and the Joseph update unchanged (K' = K·2**k, g' = g·2**-k) and keep
# g' = P·H'ᵀ and S' = H'·P·H'ᵀ + r' inside fixed formats over the steep ends of the OCV curve:
#   g0' f31, g1' g2' f33, g3' f35, S' f31, K0' f22 soc/V, K1' K2' f24, K3' f24 A/V.
# Joseph form P − K·gᵀ − g·Kᵀ + S·K·Kᵀ, evaluated as P_ij − K_i·e_j − g_i·K_j with e = g − S·K (exact for any
# K, the residual of K's rounding), on the upper triangle only. exp(−λ): 2**(−λ·log2 e) from a 257-entry table of
# 2**(−j/256), linear between entries (relative error < 1e-6); asinh z and 1/sqrt(1 + z²): tables over |z| <= 32
# in steps of 1/16, linear between (|z| clamped at 32, i.e. |I| <= 64·I0). Temperature: per 0.1 °C, linear in T
# inside the grid; beyond it Arrhenius factors from a per-°C table over −40..85 °C (readings clamped to it).
# Products go through _mul (both factors split into 15-bit halves), quotients through _div (long division by a
# divisor held below 2**22, 8 bits a step); both round to nearest (ties up).

import math
from array import array

from engine.ekf import CONFIG_KEYS
from soxcommon.frame import ABSENT

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


DEFAULT_TEMP_DC = const(250)
P_CAP = const(0x10000000)  # diagonal bound for adding process noise (half of the ±2**29 operand range)
CUR_MAX_MA = const(488000)  # |I|·2**20 < 2**29
MILLI_TO_F20 = const(274877907)  # 2**20/1000 in f18: mA -> f20 A, mV -> f20 V
LOG2E_F28 = const(387270501)  # log2(e) in f28
ONE_F28 = const(0x10000000)
ONE_F27 = const(0x8000000)
SEG_F16 = const(65536)
T_LO_C = const(-40)  # Arrhenius table range (°C)
T_HI_C = const(85)
Z_STEPS = const(512)  # asinh table: |z| in 0..32 step 1/16
B_PER_DC_F24 = const(303195460)  # 2R/F per 0.1 K in f20 V (18.07), scaled by 2**24
B_0C_F20 = const(49363)  # 2R/F·273.15 K in f20 V
GAS_CONSTANT_J_PER_MOLK = 8.314462618
FARADAY_C_PER_MOL = 96485.33212


def _mul(a, b, s):
    """round(a·b / 2**s) for |a|, |b| < 2**29, s >= 16, without forming a·b: a = ah·2**15 + al, b likewise,
    a·b = ah·bh·2**30 + mid·2**15 (+ the low bits dropped below 2**15). For s < 30 the caller keeps the result
    below 2**29."""
    ah = a >> 15
    al = a & 32767
    bh = b >> 15
    bl = b & 32767
    mid = ah * bl + al * bh + ((al * bl) >> 15)
    if s > 30:
        return (ah * bh + (mid >> 15) + (1 << (s - 31))) >> (s - 30)
    if s == 30:
        return ah * bh + ((mid + 16384) >> 15)
    return ((ah * bh) << (30 - s)) + ((mid + (1 << (s - 16))) >> (s - 15))


def _div(a, b, f):
    """round(a·2**f / b), b > 0, |a| < 2**29, the quotient below 2**29: b is cut to < 2**22 (23 significant bits
    at least), so the remainder shifted by 8 stays below 2**30."""
    while b >= 0x400000:
        b = (b + 1) >> 1
        f -= 1
    neg = a < 0
    if neg:
        a = -a
    q = a // b
    r = a - q * b
    while f > 0:
        k = 8 if f > 8 else f
        r <<= k
        d = r // b
        q = (q << k) + d
        r -= d * b
        f -= k
    if r + r >= b:
        q += 1
    return -q if neg else q


_EXP2 = array("i", [round(ONE_F28 * 2.0 ** (-j / 256)) for j in range(257)])  # 2**(−j/256) in f28


def _exp_neg(lam):
    """exp(−λ) in f28 for λ >= 0 in f24 (λ < 32): 2**−(n + j/256 + t), n integer, t the remainder."""
    mu = _mul(lam, LOG2E_F28, 28)
    n = mu >> 24
    if n >= 28:
        return 0
    j = (mu >> 16) & 255
    a = _EXP2[j]
    return (a + _mul(_EXP2[j + 1] - a, mu & 65535, 16)) >> n


def _ints(values, f):
    """int32 array of a float sequence in fN."""
    return _qarray(len(values), lambda k: values[k], f)


def _qarray(n, value, f):
    """int32 array of value(0..n−1) in fN, filled in place (no list of floats on the small heap)."""
    out = array("i", bytes(4 * n))
    scale = 2.0**f
    for k in range(n):
        out[k] = round(value(k) * scale)
    return out


class QLookup:
    """Integer lookup of an engine.cellmodel.CellModel (tables quantized once, at construction) for n cells.
    params() leaves r0, r1, r2 (f28), c1, c2 (f8), m, dm (f20), i0 (f16), b_V (f20); ocv_at() ocv, docv (f20)."""

    def __init__(self, model, n_cells):
        self.model = model
        n = model.n_soc
        self.n_soc = n
        soc = model.soc
        self.grid = _ints(soc, 24)
        self.inv_dsoc = _ints(model.inv_dsoc, 16)  # 1/Δsoc, f16
        temps = model.temp_C
        n_t = len(temps)
        self.temp_dC = array("i", [round(10 * t) for t in temps])
        self.ocv = _ints(model.ocv, 20)
        # Segment slopes (S − 1 per temperature), so the slope's lookup is a read, not a product.
        ocv = model.ocv
        inv = model.inv_dsoc
        self.docv = _qarray(n_t * (n - 1), lambda j: (ocv[j + j // (n - 1) + 1] - ocv[j + j // (n - 1)])
                            * inv[j % (n - 1)], 20)
        self.r0 = _ints(model.r0, 28)
        self.r1 = _ints(model.r1, 28)
        self.r2 = _ints(model.r2, 28)
        self.c1 = _ints(model.c1, 8)
        self.c2 = _ints(model.c2, 8)
        self.hyst = _ints(model.hyst, 20)
        hyst = model.hyst
        self.dhyst = _qarray(n - 1, lambda k: (hyst[k + 1] - hyst[k]) * inv[k], 20)
        self.dudt = _ints(model.dudt, 36 - math.log2(10))  # per 0.1 K
        self.kinetic = model.kinetic
        if self.kinetic:
            self.i0 = _ints(model.i0, 16)
            self.asinh = _qarray(Z_STEPS + 1, lambda k: math.log(k / 16 + math.sqrt(k * k / 256 + 1)), 24)
            self.isq = _qarray(Z_STEPS + 1, lambda k: 1 / math.sqrt(1 + k * k / 256), 28)
        # Arrhenius factors per °C over T_LO_C..T_HI_C (1 inside the grid), f24; resistances and I0.
        def arrhenius(ea_over_R):
            def factor(k):
                t = T_LO_C + k
                edge = min(max(t, temps[0]), temps[-1])
                return math.exp(ea_over_R * (1.0 / (t + 273.15) - 1.0 / (edge + 273.15)))

            return _qarray(T_HI_C - T_LO_C + 1, factor, 24)

        self.arr_r = arrhenius(model.ea_over_R)
        self.arr_i0 = arrhenius(-model.i0_ea_over_R if self.kinetic else 0.0)
        # Per-cell temperature cache: reading, T segment, weight (f16), factors (f24), 2RT/F (f20), T − edge (0.1 K).
        self.c_temp = array("i", [ABSENT] * n_cells)
        self.c_tseg = array("H", [0] * n_cells)
        self.c_tw = array("i", [0] * n_cells)
        self.c_fr = array("i", [0] * n_cells)
        self.c_fi0 = array("i", [0] * n_cells)
        self.c_b = array("i", [0] * n_cells)
        self.c_dtemp = array("i", [0] * n_cells)
        self.segment = array("H", [0] * n_cells)
        self.v_r0 = self.v_r1 = self.v_r2 = self.v_c1 = self.v_c2 = 0
        self.m = self.dm = self.i0_A = self.b_V = self.ocv_V = self.docv_V = 0
        self._k = self._u = self._base = self._tseg = self._tw = self._dtemp = 0

    def _temperature(self, cell, temp_dC):
        if temp_dC == self.c_temp[cell]:
            return
        self.c_temp[cell] = temp_dC
        grid = self.temp_dC
        t = temp_dC
        if t < 10 * T_LO_C:
            t = 10 * T_LO_C
        elif t >= 10 * T_HI_C:
            t = 10 * T_HI_C - 1
        j = 0
        w = 0
        edge = t
        if t <= grid[0]:
            edge = grid[0]
        elif t >= grid[-1]:
            edge = grid[-1]
            j = len(grid) - 1
        else:
            while grid[j + 1] <= t:
                j += 1
            w = ((t - grid[j]) << 16) // (grid[j + 1] - grid[j])
        self.c_tseg[cell] = j
        self.c_tw[cell] = w
        self.c_dtemp[cell] = t - edge
        i = (t - 10 * T_LO_C) // 10  # whole °C above T_LO_C, then the tenths between table entries
        u = (t - 10 * T_LO_C) - 10 * i
        u *= 6554  # tenths -> f16
        a = self.arr_r[i]
        self.c_fr[cell] = a + _mul(self.arr_r[i + 1] - a, u, 16)
        a = self.arr_i0[i]
        self.c_fi0[cell] = a + _mul(self.arr_i0[i + 1] - a, u, 16)
        self.c_b[cell] = B_0C_F20 + _mul(t, B_PER_DC_F24, 24)

    def _seek(self, cell, soc):
        """Segment and weight (f16) of soc (held inside the grid): walk from the cell's last segment."""
        grid = self.grid
        if soc < grid[0]:
            soc = grid[0]
        elif soc > grid[-1]:
            soc = grid[-1]
        k = self.segment[cell]
        while k > 0 and soc < grid[k]:
            k -= 1
        last = self.n_soc - 2
        while k < last and soc >= grid[k + 1]:
            k += 1
        self.segment[cell] = k
        self._k = k
        self._u = _mul(soc - grid[k], self.inv_dsoc[k], 24)
        self._base = self._tseg * self.n_soc + k

    def _at(self, table):
        """Linear in soc, then in T (weights f16)."""
        base = self._base
        a = table[base]
        v = a + _mul(table[base + 1] - a, self._u, 16)
        if self._tw:
            base += self.n_soc
            a = table[base]
            v += _mul(a + _mul(table[base + 1] - a, self._u, 16) - v, self._tw, 16)
        return v

    def params(self, cell, soc, temp_dC):
        self._temperature(cell, temp_dC)
        self._tseg = self.c_tseg[cell]
        self._tw = self.c_tw[cell]
        self._dtemp = self.c_dtemp[cell]
        self._seek(cell, soc)
        f_r = self.c_fr[cell]
        self.v_r0 = _mul(self._at(self.r0), f_r, 24)
        self.v_r1 = _mul(self._at(self.r1), f_r, 24)
        self.v_r2 = _mul(self._at(self.r2), f_r, 24)
        self.v_c1 = self._at(self.c1)
        self.v_c2 = self._at(self.c2)
        k = self._k
        a = self.hyst[k]
        self.m = a + _mul(self.hyst[k + 1] - a, self._u, 16)
        self.dm = self.dhyst[k]
        if self.kinetic:
            self.i0_A = _mul(self._at(self.i0), self.c_fi0[cell], 24)
        self.b_V = self.c_b[cell]

    def ocv_at(self, cell, soc):
        """ocv_V and docv_V (f20) at soc, at the temperature of the last params() call."""
        self._seek(cell, soc)
        self.ocv_V = self._at(self.ocv)
        k = self._k
        d = self.docv[self._tseg * (self.n_soc - 1) + k]
        if self._tw:
            d += _mul(self.docv[(self._tseg + 1) * (self.n_soc - 1) + k] - d, self._tw, 16)
        self.docv_V = d
        if self._dtemp:
            a = self.dudt[k]
            self.ocv_V += _mul(a + _mul(self.dudt[k + 1] - a, self._u, 16), self._dtemp, 16)


class QSocEkf:
    def __init__(self, model, n_cells, cfg):
        """model: engine.cellmodel.CellModel; cfg: the estimator configuration (models/board/estimator.json).
        ValueError when a configuration value does not fit its fixed-point format."""
        for key in CONFIG_KEYS:
            if key not in cfg or not cfg[key] >= 0:
                raise ValueError("estimator config: %s must be a number >= 0" % key)
        self.model = model
        self.n_cells = n_cells
        self.lookup = QLookup(model, n_cells)
        self.cfg = cfg
        self.p0 = (self._fit(cfg["p0_soc"], 32, "p0_soc"), self._fit(cfg["p0_v"], 36, "p0_v"),
                   self._fit(cfg["p0_b"], 40, "p0_b"))
        self.r_f31 = self._fit(cfg["r_V"], 31, "r_V")
        self.gate2_f20 = self._fit(float(cfg["gate"]) ** 2, 20, "gate")
        self.gate_run = int(cfg["gate_run"])
        self.x = array("i", [0] * (4 * n_cells))  # soc f24, v1 f20, v2 f20, b f20
        self.h = array("i", [0] * n_cells)  # f27
        self.P = array("i", [0] * (10 * n_cells))
        self.n_gated = array("i", [0] * n_cells)
        self.run_gated = array("i", [0] * n_cells)
        self.temp_dC = array("i", [DEFAULT_TEMP_DC] * n_cells)
        self.current = 0  # the last valid current reading, f20 A
        self.dt_s = None  # dt of the per-dt constants below
        self.dt_f16 = self.a_f36 = self.a_chg_f36 = self.gdt_f36 = self.q0 = self.q1 = self.q3 = 0
        for cell in range(n_cells):
            self.reset(cell, 0.5)

    @staticmethod
    def _fit(value, f, what):
        v = round(float(value) * 2.0**f)
        if not 0 <= v < 0x20000000:
            raise ValueError("estimator config: %s out of its f%d range" % (what, f))
        return v

    def _set_dt(self, dt_s):
        """Constants of a sample period (floats, once per distinct dt): dt f16, η'·dt/Q f36, γ·dt f36, q·dt."""
        model = self.model
        cfg = self.cfg
        self.dt_s = dt_s
        self.dt_f16 = self._fit(dt_s, 16, "dt")
        self.a_f36 = self._fit(dt_s / model.capacity_As, 36, "dt/Q")
        self.a_chg_f36 = self._fit(dt_s * model.efficiency / model.capacity_As, 36, "dt/Q")
        self.gdt_f36 = self._fit(dt_s * model.hyst_rate_per_As, 36, "gamma dt")
        self.q0 = self._fit(cfg["q_soc"] * dt_s, 32, "q_soc dt")
        self.q1 = self._fit(cfg["q_v"] * dt_s, 36, "q_v dt")
        self.q3 = self._fit(cfg["q_b"] * dt_s, 40, "q_b dt")

    def reset(self, cell, soc0):
        """Start the cell at soc0 with v1 = v2 = b = 0, h = 0 and the initial covariance."""
        x = self.x
        i = 4 * cell
        x[i] = round(soc0 * 2.0**24)
        x[i + 1] = x[i + 2] = x[i + 3] = 0
        self.h[cell] = 0
        P = self.P
        i = 10 * cell
        for k in range(10):
            P[i + k] = 0
        p_soc, p_v, p_b = self.p0
        P[i] = p_soc
        P[i + 4] = P[i + 7] = p_v
        P[i + 9] = p_b
        self.n_gated[cell] = 0
        self.run_gated[cell] = 0

    def soc(self, cell):
        s = self.x[4 * cell] / 16777216
        return 0.0 if s < 0.0 else 1.0 if s > 1.0 else s

    def sigma(self, cell):
        return math.sqrt(self.P[10 * cell]) / 65536

    def bias_A(self, cell):
        return self.x[4 * cell + 3] / 1048576

    def gated(self, cell):
        return self.n_gated[cell]

    def step(self, dt_s, current_mA, volts_mV, temps_dC):
        """One sample for every cell, as SocEkf.step."""
        self.set_current(current_mA)
        for cell in range(self.n_cells):
            self.step_cell(cell, dt_s, volts_mV[cell], temps_dC[cell])

    def set_current(self, current_mA):
        if current_mA != ABSENT:
            i = current_mA
            if i > CUR_MAX_MA:
                i = CUR_MAX_MA
            elif i < -CUR_MAX_MA:
                i = -CUR_MAX_MA
            self.current = _mul(i, MILLI_TO_F20, 18)

    def step_cell(self, cell, dt_s, v_mV, temp_dC):
        if dt_s != self.dt_s:
            self._set_dt(dt_s)
        if temp_dC != ABSENT:
            self.temp_dC[cell] = temp_dC
        lk = self.lookup
        x = self.x
        i = 4 * cell
        soc = x[i]
        v1 = x[i + 1]
        v2 = x[i + 2]
        b = x[i + 3]
        lk.params(cell, soc, self.temp_dC[cell])
        cur = self.current - b

        # Predict: soc += η'·I·dt/Q; v_k = v_k·e_k + R_k(1 − e_k)·I, e_k = exp(−dt/(R_k·C_k)).
        a = self.a_chg_f36 if cur > 0 else self.a_f36
        soc += _mul(a, cur, 32)
        a = -a  # F[0][3]
        r1 = lk.v_r1
        r2 = lk.v_r2
        e1 = self._decay(r1, lk.v_c1)
        e2 = self._decay(r2, lk.v_c2)
        c1 = -_mul(r1, ONE_F28 - e1, 28)  # F[1][3], f28 Ω
        c2 = -_mul(r2, ONE_F28 - e2, 28)
        v1 = _mul(v1, e1, 28) - _mul(c1, cur, 28)
        v2 = _mul(v2, e2, 28) - _mul(c2, cur, 28)
        h = self.h[cell]
        if cur:
            # h = s + (h − s)·exp(−γ·|I|·dt)
            s = ONE_F27 if cur > 0 else -ONE_F27
            h = s + _mul(h - s, _exp_neg(_mul(self.gdt_f36, cur if cur > 0 else -cur, 32)), 28)
            self.h[cell] = h

        P = self.P
        j = 10 * cell
        p03 = P[j + 3]
        p13 = P[j + 6]
        p23 = P[j + 8]
        p33 = P[j + 9]
        # F·P·Fᵀ on the upper triangle (rows [1,0,0,a], [0,e1,0,c1], [0,0,e2,c2], [0,0,0,1]); shifts take each
        # product to its entry's format.
        n03 = p03 + _mul(a, p33, 40)
        n13 = _mul(e1, p13, 28) + _mul(c1, p33, 30)
        n23 = _mul(e2, p23, 28) + _mul(c2, p33, 30)
        n00 = P[j] + _mul(a, p03, 40) + _mul(a, n03, 40)
        n01 = _mul(e1, P[j + 1] + _mul(a, p13, 40), 28) + _mul(c1, n03, 30)
        n02 = _mul(e2, P[j + 2] + _mul(a, p23, 40), 28) + _mul(c2, n03, 30)
        n11 = _mul(e1, _mul(e1, P[j + 4], 28) + _mul(c1, p13, 30), 28) + _mul(c1, n13, 30)
        n12 = _mul(e2, _mul(e1, P[j + 5], 28) + _mul(c1, p23, 30), 28) + _mul(c2, n13, 30)
        n22 = _mul(e2, _mul(e2, P[j + 7], 28) + _mul(c2, p23, 30), 28) + _mul(c2, n23, 30)
        n33 = p33
        if n00 < P_CAP:
            n00 += self.q0
        if n11 < P_CAP:
            n11 += self.q1
        if n22 < P_CAP:
            n22 += self.q1
        if n33 < P_CAP:
            n33 += self.q3

        if v_mV != ABSENT:
            lk.ocv_at(cell, soc)
            r0 = lk.v_r0
            h3 = r0
            v_pred = lk.ocv_V + _mul(lk.m, h, 27) + v1 + v2 + _mul(r0, cur, 28)
            if lk.kinetic:
                # z = I/(2·I0) f16; V += B·asinh z, dV/dI += B/(2·I0)/sqrt(1 + z²)
                i0x2 = lk.i0_A << 1
                z = _div(cur if cur > 0 else -cur, i0x2, 12)
                if z >= Z_STEPS << 12:
                    z = (Z_STEPS << 12) - 1
                k = z >> 12
                t = (z & 4095) << 4  # f16
                tab = lk.asinh
                ash = tab[k] + _mul(tab[k + 1] - tab[k], t, 16)
                tab = lk.isq
                isq = tab[k] + _mul(tab[k + 1] - tab[k], t, 16)
                v_pred += _mul(lk.b_V, ash if cur > 0 else -ash, 24)
                h3 += _mul(_div(lk.b_V, i0x2, 24), isq, 28)
            h3 = -h3
            h0 = lk.docv_V + _mul(h, lk.dm, 27)
            y = _mul(v_mV, MILLI_TO_F20, 18) - v_pred
            # Scale H by 2**-k so that |H0'| <= 1 V/soc.
            k = 0
            t = h0 if h0 > 0 else -h0
            while t > 0x100000:
                t >>= 1
                k += 1
            # g' = P·H'ᵀ, S' = H'·g' + r' (formats in the header)
            m = 3 + k
            g0 = _mul(n00, h0, 21 + k) + ((n01 + n02) >> m) + _mul(n03, h3, 33 + k)
            g1 = _mul(n01, h0, 21 + k) + ((n11 + n12) >> m) + _mul(n13, h3, 33 + k)
            g2 = _mul(n02, h0, 21 + k) + ((n12 + n22) >> m) + _mul(n23, h3, 33 + k)
            g3 = _mul(n03, h0, 21 + k) + ((n13 + n23) >> m) + _mul(n33, h3, 33 + k)
            S = _mul(h0, g0, 20 + k) + ((g1 + g2) >> (2 + k)) + _mul(h3, g3, 32 + k) + (self.r_f31 >> (k + k))
            # Gate: y'² > gate²·S', both f24 (|y'| >= 4 V is beyond any gate)
            ay = y if y > 0 else -y
            outlier = (ay >> k) >= 0x400000 or _mul(y, y, 16 + k + k) > _mul(S, self.gate2_f20, 27)
            self.run_gated[cell] = self.run_gated[cell] + 1 if outlier else 0
            if outlier and self.run_gated[cell] <= self.gate_run:
                self.n_gated[cell] += 1
            else:
                k0 = _div(g0, S, 22)
                k1 = _div(g1, S, 22)
                k2 = _div(g2, S, 22)
                k3 = _div(g3, S, 20)
                soc += _mul(k0, y, 18 + k)
                v1 += _mul(k1, y, 24 + k)
                v2 += _mul(k2, y, 24 + k)
                x[i + 3] = b + _mul(k3, y, 24 + k)
                # e = g' − S'·K' (K's rounding residual), in g's formats
                e0 = g0 - _mul(S, k0, 22)
                e1 = g1 - _mul(S, k1, 22)
                e2 = g2 - _mul(S, k2, 22)
                e3 = g3 - _mul(S, k3, 20)
                # Joseph: P_ij −= K_i·e_j + g_i·K_j
                n00 -= _mul(k0, e0, 21) + _mul(g0, k0, 21)
                n01 -= _mul(k0, e1, 21) + _mul(g0, k1, 21)
                n02 -= _mul(k0, e2, 21) + _mul(g0, k2, 21)
                n03 -= _mul(k0, e3, 21) + _mul(g0, k3, 19)
                n11 -= _mul(k1, e1, 21) + _mul(g1, k1, 21)
                n12 -= _mul(k1, e2, 21) + _mul(g1, k2, 21)
                n13 -= _mul(k1, e3, 21) + _mul(g1, k3, 19)
                n22 -= _mul(k2, e2, 21) + _mul(g2, k2, 21)
                n23 -= _mul(k2, e3, 21) + _mul(g2, k3, 19)
                n33 -= _mul(k3, e3, 19) + _mul(g3, k3, 19)

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

    def _decay(self, r_f28, c_f8):
        """exp(−dt/(R·C)) in f28: τ = R·C f16, λ = dt/τ f24 (λ >= 16 reads as 0)."""
        tau = _mul(r_f28, c_f8, 20)
        if tau <= self.dt_f16 >> 4:
            return 0
        return _exp_neg(_div(self.dt_f16, tau, 24))
