# Quantized (fixed-point) twin of engine/ekf.py: the same per-cell SoC EKF of the issue-5 contract, with state,
# covariance and every per-step intermediate an integer inside ±2**30 (a small int on a 32-bit board: a cell-step
# allocates nothing there; beyond it MicroPython's arithmetic stays exact, in a heap-allocated long int).
# MicroPython and CPython subset. Floats appear only at load, when dt changes, and in the read-out methods (soc,
# sigma, bias_A).
#
# Q-formats (value = int · 2**-f; "fN" below):
#   soc f24 · v1, v2, OCV, M, y, measured voltage f20 V · b, current f20 A (|I| < 488 A) · h f27
#   P (upper triangle [p00 p01 p02 p03 p11 p12 p13 p22 p23 p33]): P_ij in f(e_i + e_j), e = (16, 16, 16, 20):
#     p00 p01 p02 p11 p12 p22 f32, p03 p13 p23 f36, p33 f40; process noise is added only below 2**28 on the diagonal
#     (off-diagonals follow by |P_ij| <= sqrt(P_ii·P_jj)). The branch voltages share the SoC's e = 16 because d_k
#     (below) carries the SoC's variance into them: the float filter's P11 reached 0.027 V² (Panasonic NCR18650PF,
#     2C charge from empty, starts 5-20 % high), beyond the 2**-6 V² that e = 18 held.
#   tables: OCV, M f20 V · R f28 Ω · C f8 F · I0 f16 A · dU/dT f36 V per 0.1 K. Slopes per SoC segment and grid
#     temperature, made at load (a step reads one instead of forming a difference and a product; those of R0, R1,
#     R2 and I0 are 1.9 KB for a 121-point model): dOCV/dsoc, dM/dsoc f20 V/soc (|·| < 128 V/soc), dR_k/dsoc
#     f20 Ω/soc (|·|·Arrhenius factor < 256 Ω/soc), dI0/dsoc f8 A/soc (< 2**20) with |dI0/dsoc|/I0 < 2**18 per soc
#     (ValueError at load beyond these). Inside the SoC grid only: outside it the tables are held and the slopes are 0.
#   F: e_k f28, c_k = −R_k(1 − e_k) f28, a = −η'·dt/Q f36; d_k = F[k][0] = (1 − e_k)·m_k f20 V/soc, m_k = I·dR_k/dsoc
#     f20 held to |m_k|·sqrt(P00) <= 0.3 V, so that sqrt(P_kk') <= e_k·sqrt(P_kk) + (1 − e_k)·(|m_k|·σ_soc + R_k·σ_b)
#     stays below 0.344 V (P_kk < 2**28.9). The float filter's |m_k|·σ_soc peaked at 0.26 V (Panasonic, 2C charge
#     from SoC 0.01, starts 2-8 % high); the bound binds while P00 is still near p0_soc under a large I·dR/dsoc.
#   H0 f20 V/soc = dOCV/dsoc + h·dM/dsoc + I·dR0/dsoc − B·z/sqrt(1 + z²)·w, w = (dI0/dsoc)/I0 f10 per soc (the
#     Arrhenius factor cancels), the last two terms saturated at ±256 V/soc: at the Panasonic model's I0 step
#     (≈2000 → 1.9 A within SoC 0.12-0.13) the float's H0 reaches thousands of V/soc, where a 1 mV innovation moves
#     the SoC by less than 4e-6 either way. H3 f28 Ω. I0 saturates at 4096 A (f16·2 < 2**30; then B·asinh z is a
#     resistance below 7 µΩ at |I| < 488 A).
#   OCV beyond the SoC grid goes on along the end segment, ocv_end + dOCV/dsoc·(soc − end) (saturated at ±256 V).
# The update runs on the measurement scaled by 2**-k, k the smallest with |H0|·2**-k <= 1 V/soc: H' = H·2**-k,
# y' = y·2**-k, r' = r·2**-2k leave K·y and the Joseph update unchanged (K' = K·2**k, g' = g·2**-k) and keep
# g' = P·H'ᵀ and S' = H'·P·H'ᵀ + r' inside fixed formats over the steep ends of the OCV curve:
#   g0' g1' g2' f31, g3' f35, S' f31, K0' f22 soc/V, K1' K2' f24, K3' f24 A/V.
#   |g_i'| <= σ_i·σ(H'x) and S' <= σ(H'x)² + r' stay below 2**29 while σ(H'x) < 0.5 V; the diagonal caps alone
#   would allow 1.04 V (P00 = 1/8 with both branches at 0.344 V at once). The test drives reach g', S' < 2**27.4.
# Joseph form P − K·gᵀ − g·Kᵀ + S·K·Kᵀ, evaluated as P_ij − K_i·e_j − g_i·K_j with e = g − S·K (exact for any
# K, the residual of K's rounding), on the upper triangle only. exp(−λ): 2**(−λ·log2 e) from a 257-entry table of
# 2**(−j/256), linear between entries (relative error < 1e-6); asinh z and 1/sqrt(1 + z²): tables over |z| <= 32
# in steps of 1/16 (|z| clamped at 32, i.e. |I| <= 64·I0), asinh on the parabola through three entries (error
# < 1.6e-5, i.e. < 1 µV of B·asinh z; linear between two was 1e-5 V, a bias the SoC followed), 1/sqrt(1 + z²)
# linear. Temperature: per 0.1 °C, linear in T inside the grid; beyond it the Arrhenius factors
# exp(±Ea/R·(1/T − 1/T_edge)), the exponent in integers (_div) then _exp_neg, when the cell's reading changes
# (readings clamped to −40..85 °C; a factor must stay below 32 there: ValueError at load). A per-°C table, linear
# between entries, was up to 1.8e-4 off in R and I0 between whole degrees, and drifted the SoC by ~1e-5.
# Products go through _mul (both factors split into 15-bit halves), quotients through _div (long division by a
# divisor held below 2**22, 8 bits a step); both round to nearest (ties up). _mulsat saturates a product at
# ±2**28 where the factors have no joint bound (I·dR/dsoc, the I0 term, I0 beyond the temperature grid, the
# OCV beyond the SoC grid).

import math
from array import array

from engine.ekf import CONFIG_KEYS, iterations
from soxcommon.frame import ABSENT

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


DEFAULT_TEMP_DC = const(250)
P_CAP = const(0x10000000)  # diagonal bound for adding process noise (half of the ±2**29 operand range)
SAT = const(0x10000000)  # _mulsat's bound, and the slope terms' (256 V/soc in f20)
M_SIGMA_F18 = const(78643)  # 0.3 V in f18: the bound of |m_k|·sqrt(P00)
M_VAR_F16 = const(5898)  # (0.3 V)² in f16
SLOPE_MAX = const(0x10000000)  # slope tables' bound (after the Arrhenius factor for resistances)
CUR_MAX_MA = const(488000)  # |I|·2**20 < 2**29
MILLI_TO_F20 = const(274877907)  # 2**20/1000 in f18: mA -> f20 A, mV -> f20 V
LOG2E_F28 = const(387270501)  # log2(e) in f28
ONE_F28 = const(0x10000000)
ONE_F27 = const(0x8000000)
T_LO_C = const(-40)  # temperature readings are clamped to T_LO_C..T_HI_C (°C)
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


def _mulsat(a, b, s):
    """_mul(a, b, s) held inside ±SAT, 16 <= s <= 30. |a·b| < (|a|//2**15 + 1)·(|b|//2**15 + 1)·2**30: while that
    bound stays within SAT·2**s the product cannot reach SAT; past it |b| >= 2**(s−1) and |a| is compared with
    SAT·2**s/|b| (<= 2**29)."""
    ma = a if a > 0 else -a
    mb = b if b > 0 else -b
    if ((ma >> 15) + 1) * ((mb >> 15) + 1) > 1 << (s - 2) and ma >= _div(SAT, mb, s):
        return SAT if (a > 0) == (b > 0) else -SAT
    return _mul(a, b, s)


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


def _isqrt(n):
    """floor(sqrt(n)) for 0 < n < 2**30 (Newton's iteration from above)."""
    x = n
    y = (x + 1) >> 1
    while y < x:
        x = y
        y = (x + n // x) >> 1
    return x


def _branch_slope(cur, dr, e, p00):
    """F[k][0] = (1 − e_k)·m_k (f20 V/soc), m_k = I·dR_k/dsoc held to |m_k|·sqrt(P00) <= 0.3 V (the header)."""
    if not dr or not cur:
        return 0
    m = _mulsat(cur, dr, 20)
    # m²·P00 in f16 V² (below the bound without forming it when P00 < 2**-12 and |m| < 16 V/soc)
    if (p00 >= 0x100000 or not -0x1000000 < m < 0x1000000) and _mul(m, _mul(m, p00, 28), 28) > M_VAR_F16:
        lim = _div(M_SIGMA_F18, _isqrt(p00), 16)  # 0.3 V/sqrt(P00) in f20 (P00 in f32: sqrt in f16)
        m = lim if m > 0 else -lim
    return _mul(m, ONE_F28 - e, 28)


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


def _parabola(tab, k, t):
    """tab at k + t (t in [0, 1) f16) on the parabola through entries k, k + 1, k + 2."""
    a = tab[k]
    d = tab[k + 1] - a
    return a + _mul(d, t, 16) + _mul(tab[k + 2] - tab[k + 1] - d, _mul(t, t - 65536, 17), 16)


def _exp_f24(x):
    """exp(x) in f24 for x in f24 (exp(x) < 32)."""
    if x <= 0:
        return (_exp_neg(-x) + 8) >> 4
    return _div(1 << 24, _exp_neg(x), 28)


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


def _slopes(table, model, f, limit, what):
    """Per (grid temperature, SoC segment) d table/dsoc in fN, [i_temp·(S − 1) + k]; ValueError from |·| >= limit."""
    n = model.n_soc - 1
    inv = model.inv_dsoc
    out = _qarray(len(table) // (n + 1) * n, lambda j: (table[j + j // n + 1] - table[j + j // n]) * inv[j % n], f)
    for v in out:
        if not -limit < v < limit:
            raise ValueError("model: d%s/dsoc out of its f%d range" % (what, f))
    return out


class QLookup:
    """Integer lookup of an engine.cellmodel.CellModel (tables quantized once, at construction) for n cells.
    params() leaves r0, r1, r2 (f28), c1, c2 (f8), m, dm (f20), i0 (f16), b_V (f20) and, inside the SoC grid (0
    outside it, where the tables are held), the slopes dr0, dr1, dr2 (f20 Ω/soc) and w = (dI0/dsoc)/I0 (f10);
    ocv_at() ocv, docv (f20)."""

    def __init__(self, model, n_cells):
        self.model = model
        n = model.n_soc
        self.n_soc = n
        soc = model.soc
        self.grid = _ints(soc, 24)
        self.inv_dsoc = _ints(model.inv_dsoc, 16)  # 1/Δsoc, f16
        temps = model.temp_C
        self.temp_dC = array("i", [round(10 * t) for t in temps])
        self.ocv = _ints(model.ocv, 20)
        self.docv = _slopes(model.ocv, model, 20, SLOPE_MAX >> 1, "OCV")
        self.r0 = _ints(model.r0, 28)
        self.r1 = _ints(model.r1, 28)
        self.r2 = _ints(model.r2, 28)
        self.c1 = _ints(model.c1, 8)
        self.c2 = _ints(model.c2, 8)
        self.hyst = _ints(model.hyst, 20)
        self.dhyst = _slopes(model.hyst, model, 20, SLOPE_MAX >> 1, "M")
        self.dudt = _ints(model.dudt, 36 - math.log2(10))  # per 0.1 K
        self.kinetic = model.kinetic
        if self.kinetic:
            self.i0 = _ints(model.i0, 16)
            self.di0 = _slopes(model.i0, model, 8, SLOPE_MAX, "I0")
            i0 = model.i0
            for j in range(len(i0)):  # |dI0/dsoc|/I0 < 2**18 on every segment: then also between grid temperatures
                if (j + 1) % n and abs(self.di0[j - j // n]) * 2.0**-8 >= min(i0[j], i0[j + 1]) * 2.0**18:
                    raise ValueError("model: (dI0/dsoc)/I0 out of its f10 range")
            self.asinh = _qarray(Z_STEPS + 2, lambda k: math.log(k / 16 + math.sqrt(k * k / 256 + 1)), 24)
            self.isq = _qarray(Z_STEPS + 1, lambda k: 1 / math.sqrt(1 + k * k / 256), 28)
        # Arrhenius exponents' constants 40·Ea/R (f8, K) for resistances and I0 (_temperature); the factors must stay
        # below 32 (f24 operands) over T_LO_C..T_HI_C.
        ea_i0 = model.i0_ea_over_R if self.kinetic else 0.0
        self.ea_r_f8 = round(40 * 256 * model.ea_over_R)
        self.ea_i0_f8 = round(40 * 256 * ea_i0)
        factors = [math.exp(sign * ea * (1.0 / (t + 273.15) - 1.0 / (min(max(t, temps[0]), temps[-1]) + 273.15)))
                   for ea, sign in ((model.ea_over_R, 1.0), (ea_i0, -1.0)) for t in (T_LO_C, T_HI_C)]
        if max(factors) >= 32.0 or max(self.ea_r_f8, self.ea_i0_f8) >= 0x20000000:
            raise ValueError("model: an Arrhenius factor beyond 32 between %d and %d °C" % (T_LO_C, T_HI_C))
        f_r_max = max(factors[0], factors[1], 1.0)
        self.dr0, self.dr1, self.dr2 = (_slopes(t, model, 20, SLOPE_MAX / f_r_max, "R")
                                        for t in (model.r0, model.r1, model.r2))
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
        self.v_dr0 = self.v_dr1 = self.v_dr2 = self.w_i0 = 0
        self.m = self.dm = self.i0_A = self.b_V = self.ocv_V = self.docv_V = 0
        self._k = self._u = self._base = self._tseg = self._tw = self._dtemp = self._beyond = 0
        self._inside = False

    def _temperature(self, cell, temp_dC):
        if temp_dC == self.c_temp[cell]:
            return
        self.c_temp[cell] = temp_dC
        grid = self.temp_dC
        t = temp_dC
        if t < 10 * T_LO_C:
            t = 10 * T_LO_C
        elif t > 10 * T_HI_C:
            t = 10 * T_HI_C
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
        # Arrhenius: 1/T_K − 1/T_edge_K = 40·(edge − t)/((2t + 5463)·(2·edge + 5463)), t in 0.1 °C; f40, then ·40·Ea/R
        self.c_fr[cell] = self.c_fi0[cell] = 1 << 24
        if t != edge:
            inv = _div(edge - t, (t + t + 5463) * (edge + edge + 5463), 40)
            self.c_fr[cell] = _exp_f24(_mul(inv, self.ea_r_f8, 24))
            if self.kinetic:
                self.c_fi0[cell] = _exp_f24(-_mul(inv, self.ea_i0_f8, 24))
        self.c_b[cell] = B_0C_F20 + _mul(t, B_PER_DC_F24, 24)

    def _seek(self, cell, soc):
        """Segment and weight (f16) of soc (held inside the grid): walk from the cell's last segment."""
        grid = self.grid
        self._inside = False
        self._beyond = 0
        if soc <= grid[0]:
            self._beyond = soc - grid[0]
            soc = grid[0]
        elif soc >= grid[-1]:
            self._beyond = soc - grid[-1]
            soc = grid[-1]
        else:
            self._inside = True
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

    def _seg(self, slopes):
        """A slope table (_slopes) on the sought segment, linear in T."""
        i = self._base - self._tseg
        d = slopes[i]
        if self._tw:
            d += _mul(slopes[i + self.n_soc - 1] - d, self._tw, 16)
        return d

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
        i0 = 0
        if self.kinetic:
            i0 = self._at(self.i0)
            self.i0_A = _mulsat(i0, self.c_fi0[cell], 24)
        self.b_V = self.c_b[cell]
        self.v_dr0 = self.v_dr1 = self.v_dr2 = self.w_i0 = 0
        if self._inside:
            d = self._seg(self.dr0)
            if d:
                self.v_dr0 = _mul(d, f_r, 24)
            d = self._seg(self.dr1)
            if d:
                self.v_dr1 = _mul(d, f_r, 24)
            d = self._seg(self.dr2)
            if d:
                self.v_dr2 = _mul(d, f_r, 24)
            if i0:
                d = self._seg(self.di0)
                if d:
                    self.w_i0 = _div(d, i0, 18)  # f8 / f16 -> f10

    def ocv_at(self, cell, soc):
        """ocv_V and docv_V (f20) at soc, at the temperature of the last params() call; beyond the grid the OCV goes
        on along the end segment (saturated at ±256 V)."""
        self._seek(cell, soc)
        self.docv_V = self._seg(self.docv)
        self.ocv_V = self._at(self.ocv)
        if self._beyond:
            self.ocv_V += _mulsat(self.docv_V, self._beyond, 24)
        if self._dtemp:
            a = self.dudt[self._k]
            self.ocv_V += _mul(a + _mul(self.dudt[self._k + 1] - a, self._u, 16), self._dtemp, 16)


class QSocEkf:
    def __init__(self, model, n_cells, cfg):
        """model: engine.cellmodel.CellModel; cfg: the estimator configuration (models/board/estimator.json).
        ValueError when a configuration value or a model table does not fit its fixed-point format."""
        for key in CONFIG_KEYS:
            if key not in cfg or not cfg[key] >= 0:
                raise ValueError("estimator config: %s must be a number >= 0" % key)
        if iterations(cfg) != 1:
            raise ValueError("estimator config: the fixed-point filter has no iterated update (iterations %d)"
                             % cfg["iterations"])
        self.model = model
        self.n_cells = n_cells
        self.lookup = QLookup(model, n_cells)
        self.cfg = cfg
        self.p0 = (self._fit(cfg["p0_soc"], 32, "p0_soc"), self._fit(cfg["p0_v"], 32, "p0_v"),
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
        self.q1 = self._fit(cfg["q_v"] * dt_s, 32, "q_v dt")
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
        P = self.P
        j = 10 * cell
        p00 = P[j]
        p01 = P[j + 1]
        p02 = P[j + 2]
        p03 = P[j + 3]
        p13 = P[j + 6]
        p23 = P[j + 8]
        p33 = P[j + 9]

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
        d1 = _branch_slope(cur, lk.v_dr1, e1, p00)  # F[1][0], f20 V/soc
        d2 = _branch_slope(cur, lk.v_dr2, e2, p00)
        v1 = _mul(v1, e1, 28) - _mul(c1, cur, 28)
        v2 = _mul(v2, e2, 28) - _mul(c2, cur, 28)
        h = self.h[cell]
        if cur:
            # h = s + (h − s)·exp(−γ·|I|·dt)
            s = ONE_F27 if cur > 0 else -ONE_F27
            h = s + _mul(h - s, _exp_neg(_mul(self.gdt_f36, cur if cur > 0 else -cur, 32)), 28)
            self.h[cell] = h

        # F·P·Fᵀ on the upper triangle (rows [1,0,0,a], [d1,e1,0,c1], [d2,0,e2,c2], [0,0,0,1]); shifts take each
        # product to its entry's format. u_k = (P·Fᵀ)[0][k], t_kl = (F·P)[k][l] for the branch rows.
        n03 = p03 + _mul(a, p33, 40)
        n13 = _mul(e1, p13, 28) + _mul(c1, p33, 32)
        n23 = _mul(e2, p23, 28) + _mul(c2, p33, 32)
        u1 = _mul(e1, p01, 28) + _mul(c1, p03, 32)
        u2 = _mul(e2, p02, 28) + _mul(c2, p03, 32)
        t11 = _mul(e1, P[j + 4], 28) + _mul(c1, p13, 32)
        t12 = _mul(e2, P[j + 5], 28) + _mul(c2, p13, 32)
        t22 = _mul(e2, P[j + 7], 28) + _mul(c2, p23, 32)
        if d1:
            n13 += _mul(d1, p03, 20)
            u1 += _mul(d1, p00, 20)
            t11 += _mul(d1, p01, 20)
        if d2:
            n23 += _mul(d2, p03, 20)
            u2 += _mul(d2, p00, 20)
            t12 += _mul(d2, p01, 20)
            t22 += _mul(d2, p02, 20)
        n00 = p00 + _mul(a, p03, 40) + _mul(a, n03, 40)
        n01 = u1 + _mul(a, n13, 40)
        n02 = u2 + _mul(a, n23, 40)
        n11 = _mul(e1, t11, 28) + _mul(c1, n13, 32)
        n12 = _mul(e1, t12, 28) + _mul(c1, n23, 32)
        n22 = _mul(e2, t22, 28) + _mul(c2, n23, 32)
        if d1:
            n11 += _mul(d1, u1, 20)
            n12 += _mul(d1, u2, 20)
        if d2:
            n22 += _mul(d2, u2, 20)
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
            dh0 = _mulsat(cur, lk.v_dr0, 20) if lk.v_dr0 else 0  # I·(dR0/dsoc − q·w), f20 V/soc
            if lk.kinetic:
                # z = I/(2·I0) f16; V += B·asinh z, dV/dI += q = B/(2·I0)/sqrt(1 + z²); I·q·w = B·z/sqrt(1 + z²)·w
                i0x2 = lk.i0_A << 1
                z = _div(cur if cur > 0 else -cur, i0x2, 12)
                if z >= Z_STEPS << 12:
                    z = (Z_STEPS << 12) - 1
                k = z >> 12
                t = (z & 4095) << 4  # f16
                ash = _parabola(lk.asinh, k, t)
                tab = lk.isq
                isq = tab[k] + _mul(tab[k + 1] - tab[k], t, 16)
                v_pred += _mul(lk.b_V, ash if cur > 0 else -ash, 24)
                h3 += _mul(_div(lk.b_V, i0x2, 24), isq, 28)
                if lk.w_i0:
                    t = _mulsat(_mul(lk.b_V, _mul(z, isq, 16), 22), lk.w_i0, 16)  # B·|z|/sqrt(1 + z²) f26, ·w
                    dh0 -= t if cur > 0 else -t
            h3 = -h3
            if dh0 > SAT:
                dh0 = SAT
            elif dh0 < -SAT:
                dh0 = -SAT
            h0 = lk.docv_V + _mul(h, lk.dm, 27) + dh0
            y = _mul(v_mV, MILLI_TO_F20, 18) - v_pred
            # Scale H by 2**-k so that |H0'| <= 1 V/soc.
            k = 0
            t = h0 if h0 > 0 else -h0
            while t > 0x100000:
                t >>= 1
                k += 1
            # g' = P·H'ᵀ, S' = H'·g' + r' (formats in the header)
            m = 1 + k
            g0 = _mul(n00, h0, 21 + k) + ((n01 + n02) >> m) + _mul(n03, h3, 33 + k)
            g1 = _mul(n01, h0, 21 + k) + ((n11 + n12) >> m) + _mul(n13, h3, 33 + k)
            g2 = _mul(n02, h0, 21 + k) + ((n12 + n22) >> m) + _mul(n23, h3, 33 + k)
            g3 = _mul(n03, h0, 21 + k) + ((n13 + n23) >> m) + _mul(n33, h3, 33 + k)
            S = _mul(h0, g0, 20 + k) + ((g1 + g2) >> k) + _mul(h3, g3, 32 + k) + (self.r_f31 >> (k + k))
            # Gate: y'² > gate²·S', both f24 (|y'| >= 4 V is beyond any gate)
            ay = y if y > 0 else -y
            outlier = (ay >> k) >= 0x400000 or _mul(y, y, 16 + k + k) > _mul(S, self.gate2_f20, 27)
            self.run_gated[cell] = self.run_gated[cell] + 1 if outlier else 0
            if outlier and self.run_gated[cell] <= self.gate_run:
                self.n_gated[cell] += 1
            else:
                k0 = _div(g0, S, 22)
                k1 = _div(g1, S, 24)
                k2 = _div(g2, S, 24)
                k3 = _div(g3, S, 20)
                soc += _mul(k0, y, 18 + k)
                v1 += _mul(k1, y, 24 + k)
                v2 += _mul(k2, y, 24 + k)
                x[i + 3] = b + _mul(k3, y, 24 + k)
                # e = g' − S'·K' (K's rounding residual), in g's formats
                e0 = g0 - _mul(S, k0, 22)
                e1 = g1 - _mul(S, k1, 24)
                e2 = g2 - _mul(S, k2, 24)
                e3 = g3 - _mul(S, k3, 20)
                # Joseph: P_ij −= K_i·e_j + g_i·K_j
                n00 -= _mul(k0, e0, 21) + _mul(g0, k0, 21)
                n01 -= _mul(k0, e1, 21) + _mul(g0, k1, 23)
                n02 -= _mul(k0, e2, 21) + _mul(g0, k2, 23)
                n03 -= _mul(k0, e3, 21) + _mul(g0, k3, 19)
                n11 -= _mul(k1, e1, 23) + _mul(g1, k1, 23)
                n12 -= _mul(k1, e2, 23) + _mul(g1, k2, 23)
                n13 -= _mul(k1, e3, 23) + _mul(g1, k3, 19)
                n22 -= _mul(k2, e2, 23) + _mul(g2, k2, 23)
                n23 -= _mul(k2, e3, 23) + _mul(g2, k3, 19)
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
