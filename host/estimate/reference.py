"""Float64 host reference of the board's SoC estimator: the issue-5 contract's EKF, and a UKF of the same model,
both through filterpy 2.0, one filter per cell, over a sample stream.

Model (hil/physics/ecm.py, Plett 2004 / Battery Management Systems vol. 2, 2015, ch. 3): state x = [soc, v1, v2, b]
with b the current-sensor bias (true current I = I_meas − b); the hysteresis h is propagated outside the state with
I. Per sample, dt since the previous sample (0 for the first), parameters at the prior soc and the cell's measured
temperature (absent: the last valid one, else 25 °C), then
    predict  x' = F x + B·I_meas  (the model with the prior's parameters held: linear in x once
             η' = η if I > 0 else 1 is fixed), F = [[1,0,0,−η'dt/Q],[0,e1,0,−R1(1−e1)],[0,0,e2,−R2(1−e2)],[0,0,0,1]],
             B = −F[:, 3] with B[3] = 0;  P' = J P Jᵀ + diag(q_soc, q_v, q_v, q_b)·dt with the Jacobian J = F plus
             J[k][0] = (1 − e_k)·I·dR_k/dsoc (the branches depend on soc through R_k(soc))
    update   y = V_meas − V(x'), V = OCV(soc) + M(soc)·h + v1 + v2 + R0·I + B_ct·asinh(I/(2·I0)), H = ∂V/∂x with
             R0's and I0's SoC slopes in H[0] (measurement_row); gate: skipped (and counted) when y² > gate²·S, but
             only the first gate_run samples of a run beyond the gate (a lasting innovation is corrected, not locked
             out); no update when the voltage is absent. With the configuration's "iterations" n > 1 the
             update is iterated as the board's (engine/ekf.py): OCV and its slope relinearised at soc_i, the
             other terms linear in x, until soc moves less than ITERATION_TOL_SOC or n linearisations; the MAP's
             soc bracketed, and on an OCV grid point the update made there with the slope that lands on it.
OCV and its slope are looked up at the predicted soc (V's dependence on the state); M, dM/dsoc, R0 and I0 and the
resistances' and I0's slopes are the prior-soc parameters (as the board's engine/ekf.py). soc is not clipped inside
the filters, only in the reported estimates.

EKF (Plett 2004, "Extended Kalman filtering for battery management systems of LiPB-based HEV battery packs",
J. Power Sources 134): filterpy's ExtendedKalmanFilter.predict (P = J P Jᵀ + Q, with x moved by the model's F
instead of J) and .update, which is the Joseph form P = (I − KH) P (I − KH)ᵀ + K R Kᵀ with K = P Hᵀ S⁻¹; H and V(x')
are computed here and handed to it (the contract's H at x'), the gate is applied before, and P is symmetrised,
(P + Pᵀ)/2, at the end of every step.

UKF (Julier & Uhlmann 1997, "A new extension of the Kalman filter to nonlinear systems"; Wan & van der Merwe 2000,
"The unscented Kalman filter for nonlinear estimation"): filterpy's UnscentedKalmanFilter with Merwe scaled sigma
points, α = 1, β = 2, κ = 3 − n = −1 (n + κ = 3 matches the Gaussian's fourth moment, Julier & Uhlmann; with α = 1
every covariance weight is positive, so the predicted P stays positive definite). The same process and measurement
functions per sigma point, each with its own parameters (looked up at the point's soc: the UKF needs no slopes) and
η' and I from its b; the same additive Q and r_V, the same gate (y and S of
filterpy's update, undone when gated). Its update is P − K S Kᵀ (not Joseph); P is symmetrised as in the EKF."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from filterpy.kalman import ExtendedKalmanFilter, MerweScaledSigmaPoints, UnscentedKalmanFilter

from host.estimate.cellmodel import BoardModel, CellValues, evaluate, soc_segment
from soxcommon.frame import ABSENT

CONFIG_KEYS = ("q_soc", "q_v", "q_b", "r_V", "p0_soc", "p0_v", "p0_b", "gate", "gate_run")
ITERATION_TOL_SOC = 1e-4  # engine/ekf.py's
DEFAULT_TEMP_C = 25.0
UKF_ALPHA, UKF_BETA, UKF_KAPPA = 1.0, 2.0, -1.0
# A stream record: t_ms, current_mA, voltage_mV per cell, temp_dC per cell; ABSENT (-2**30) where not measured.
Record = tuple[int, int, Sequence[int], Sequence[int]]


@dataclass(frozen=True)
class Estimates:
    """Per record (rows) and cell (columns): soc clipped to [0, 1], soc_sigma = sqrt(P[0][0]), bias_A = b, gated:
    the update was skipped by the gate. Step times: per cell-step (lookups, hysteresis, predict, gate, update)."""

    t_ms: np.ndarray
    soc: np.ndarray
    soc_sigma: np.ndarray
    bias_A: np.ndarray
    gated: np.ndarray
    step_us_median: float
    step_us_p99: float

    @property
    def gated_count(self) -> np.ndarray:
        return np.count_nonzero(self.gated, axis=0)


def _config(cfg: Mapping[str, float]) -> dict[str, float]:
    missing = [key for key in CONFIG_KEYS if key not in cfg]
    if missing:
        raise ValueError(f"estimator config lacks {', '.join(missing)}")
    return {key: float(cfg[key]) for key in CONFIG_KEYS}


def iterations(cfg: Mapping[str, Any]) -> int:
    """The configuration's "iterations" of the EKF update (optional; 1, the default, is the plain EKF)."""
    n = cfg.get("iterations", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError("estimator config: iterations must be an integer >= 1")
    return n


def transition(model: BoardModel, prior: CellValues, dt_s: float, current_A: float) -> tuple[np.ndarray, np.ndarray]:
    """F and B of x' = F x + B·I_meas for the true current I = I_meas − b (whose sign picks η'), with the
    parameters of `prior` held (F has no soc column here: that is the Jacobian's, see jacobian)."""
    eta = model.coulombic_efficiency if current_A > 0 else 1.0
    e1 = math.exp(-dt_s / float(prior.r1_ohm * prior.c1_F))
    e2 = math.exp(-dt_s / float(prior.r2_ohm * prior.c2_F))
    f = np.eye(4)
    f[1, 1], f[2, 2] = e1, e2
    f[:3, 3] = (-eta * dt_s / model.capacity_As, -float(prior.r1_ohm) * (1.0 - e1), -float(prior.r2_ohm) * (1.0 - e2))
    b = np.zeros((4, 1))
    b[:, 0] = -f[:, 3]
    b[3, 0] = 0.0
    return f, b


def jacobian(f: np.ndarray, prior: CellValues, current_A: float) -> np.ndarray:
    """∂x'/∂x: transition's F plus the branches' dependence on soc through R_k(soc), (1 − e_k)·I·dR_k/dsoc
    (the term (v_k − R_k·I)·de_k/dsoc, zero once a branch has settled, is left out, as on the board)."""
    jac = f.copy()
    jac[1, 0] = (1.0 - f[1, 1]) * current_A * float(prior.dr1_dsoc_ohm)
    jac[2, 0] = (1.0 - f[2, 2]) * current_A * float(prior.dr2_dsoc_ohm)
    return jac


def hysteresis(model: BoardModel, h: float, current_A: float, dt_s: float) -> float:
    """h' = s + (h − s)·exp(−γ·|I|·dt), s = sign I; unchanged at I = 0 (Plett 2004)."""
    if not current_A:
        return h
    target = math.copysign(1.0, current_A)
    return target + (h - target) * math.exp(-model.hyst_rate_per_As * abs(current_A) * dt_s)


def voltage_V(at: CellValues, prior: CellValues, x: np.ndarray, h: float, current_A: float) -> float:
    """V(x) with the OCV from `at` (looked up at x's soc) and M, R0, I0 from the prior-soc `prior`."""
    v = float(at.ocv_V + prior.hyst_V * h + x[1] + x[2] + prior.r0_ohm * current_A)
    if prior.i0_A is not None:
        v += float(prior.b_V * math.asinh(current_A / (2.0 * float(prior.i0_A))))
    return v


def measurement_row(at: CellValues, prior: CellValues, h: float, current_A: float) -> np.ndarray:
    """H = ∂V/∂x at x': [dOCV/dsoc + h·dM/dsoc + I·dR0/dsoc + d(B·asinh z)/dsoc, 1, 1, −(R0 + q)] with
    z = I/(2·I0), q = B/(2·I0·sqrt(1 + z²)) = d(B·asinh z)/dI and d(B·asinh z)/dsoc = −q·I/I0·dI0/dsoc; the
    charge-transfer terms only with I0."""
    dv_dsoc = float(at.docv_dsoc_V + h * prior.dhyst_dsoc_V + current_A * prior.dr0_dsoc_ohm)
    dv_di = float(prior.r0_ohm)
    if prior.i0_A is not None and prior.di0_dsoc_A is not None:
        i0_A = float(prior.i0_A)
        q = float(prior.b_V) / (2.0 * i0_A * math.sqrt(1.0 + (current_A / (2.0 * i0_A)) ** 2))
        dv_di += q
        dv_dsoc -= q * current_A / i0_A * float(prior.di0_dsoc_A)
    return np.array([dv_dsoc, 1.0, 1.0, -dv_di])


def _given(_x: np.ndarray, value: np.ndarray) -> np.ndarray:
    """filterpy's HJacobian / Hx callback: H and V(x') are computed before its update (for the gate)."""
    return value


class CellFilter(Protocol):
    model: BoardModel  # the cell's (its capacity can be replaced during a run)

    def step(self, dt_s: float, current_meas_A: float, voltage_meas_V: float | None, temp_C: float) -> bool: ...

    @property
    def x(self) -> np.ndarray: ...

    @property
    def P(self) -> np.ndarray: ...


class _Tuned:
    """What both filters take from the configuration: initial covariance, noises and the gate."""

    def __init__(self, model: BoardModel, cfg: Mapping[str, float], kf: Any) -> None:
        self.model = model
        self.cfg = c = _config(cfg)
        self.kf = kf
        kf.P = np.diag([c["p0_soc"], c["p0_v"], c["p0_v"], c["p0_b"]])
        kf.R = np.array([[c["r_V"]]])
        self._q_per_s = np.diag([c["q_soc"], c["q_v"], c["q_v"], c["q_b"]])
        self._gate2 = c["gate"] ** 2
        self._gate_run = int(c["gate_run"])
        self._run_gated = 0  # consecutive samples beyond the gate: only the first gate_run of a run are gated
        self.iterations = iterations(cfg)  # of the EKF's update; the UKF takes none
        self.h = 0.0

    def _gated(self, innovation_V: float, s_V2: float) -> bool:
        outlier = innovation_V * innovation_V > self._gate2 * s_V2
        self._run_gated = self._run_gated + 1 if outlier else 0
        return outlier and self._run_gated <= self._gate_run


class _Extended(ExtendedKalmanFilter):
    """filterpy's EKF propagates x with F (x = F x + B u) and P with the same F; here F is the Jacobian, and x moves
    with the model's own transition (`transition`'s F, parameters held at the prior), set before predict()."""

    x: np.ndarray
    f_state = np.eye(4)

    def predict_x(self, u: Any = 0) -> None:
        self.x = self.f_state @ self.x + self.B @ np.atleast_2d(u)


class EkfCell(_Tuned):
    """The contract's EKF for one cell on a filterpy ExtendedKalmanFilter."""

    def __init__(self, model: BoardModel, cfg: Mapping[str, float], soc0: float) -> None:
        super().__init__(model, cfg, _Extended(dim_x=4, dim_z=1, dim_u=1))
        self.kf.x = np.array([[soc0], [0.0], [0.0], [0.0]])

    @property
    def x(self) -> np.ndarray:
        return self.kf.x[:, 0]

    @property
    def P(self) -> np.ndarray:
        return self.kf.P

    def _on_grid_point(self, s_star: float, prior: CellValues, temp_C: float, current_A: float,
                       voltage_meas_V: float, slopes: tuple[float, float]) -> tuple[np.ndarray, float]:
        """(H, V(x') linearised) at the grid point s* with the H0 that puts the update's soc on s* (engine/ekf.py:
        soc' + (P·Hᵀ)_0·(Y0 − h·d)/S(h) = s*, linear in h), held between the two segments' slopes."""
        kf = self.kf
        x, p = kf.x[:, 0], kf.P
        at = evaluate(self.model, s_star, temp_C)
        u = measurement_row(at, prior, self.h, current_A)
        u[0] = 0.0
        y0 = voltage_meas_V - voltage_V(at, prior, x, self.h, current_A)
        d = float(x[0]) - s_star
        c = float(p[0] @ u)
        e = float(u @ p @ u) + self.cfg["r_V"]
        den = float(p[0, 0]) * y0 + c * d
        h = -(c * y0 + d * e) / den if den else 0.5 * sum(slopes)
        u[0] = min(max(h, min(slopes)), max(slopes))
        return u, voltage_meas_V - (y0 - u[0] * d)

    def step(self, dt_s: float, current_meas_A: float, voltage_meas_V: float | None, temp_C: float) -> bool:
        """One sample; True when the gate rejected the voltage."""
        kf, model = self.kf, self.model
        prior = evaluate(model, kf.x[0, 0], temp_C)
        current_A = current_meas_A - kf.x[3, 0]  # the predict leaves b as it is
        kf.f_state, kf.B = transition(model, prior, dt_s, current_A)
        kf.F = jacobian(kf.f_state, prior, current_A)
        kf.Q = self._q_per_s * dt_s
        kf.predict(u=current_meas_A)
        self.h = hysteresis(model, self.h, current_A, dt_s)
        gated = False
        if voltage_meas_V is not None:
            x = kf.x[:, 0]
            soc_i = float(x[0])
            # engine/ekf.py's iterated update: relinearised at soc_i, the MAP's soc bracketed in (lo, hi) by the
            # sign of the step, on a grid point s* when lo and hi lie on its two segments and their lines meet there.
            lo, hi = -math.inf, math.inf
            k_lo = k_hi = -1
            h_lo = h_hi = t_lo = t_hi = 0.0
            for it in range(self.iterations):
                at = evaluate(model, soc_i, temp_C)
                h_row = measurement_row(at, prior, self.h, current_A)
                v_lin = voltage_V(at, prior, x, self.h, current_A) + h_row[0] * (x[0] - soc_i)
                s_V2 = float(h_row @ kf.P @ h_row) + self.cfg["r_V"]
                if not it and self._gated(voltage_meas_V - v_lin, s_V2):
                    gated = True
                    break
                step = float(x[0] + (kf.P[0] @ h_row) / s_V2 * (voltage_meas_V - v_lin)) - soc_i
                if abs(step) < ITERATION_TOL_SOC:
                    break
                if step > 0.0:
                    lo, k_lo, h_lo, t_lo = soc_i, soc_segment(model, soc_i), float(h_row[0]), soc_i + step
                else:
                    hi, k_hi, h_hi, t_hi = soc_i, soc_segment(model, soc_i), float(h_row[0]), soc_i + step
                s_star = float(model.soc[k_hi]) if k_lo >= 0 and k_hi == k_lo + 1 else None
                if s_star is not None and t_lo >= s_star >= t_hi:
                    h_row, v_lin = self._on_grid_point(s_star, prior, temp_C, current_A, voltage_meas_V, (h_lo, h_hi))
                    break
                if s_star is not None:
                    soc_i = t_lo if t_lo < s_star else t_hi
                else:
                    soc_i = soc_i + step if lo < soc_i + step < hi else 0.5 * (lo + hi)
            if not gated:
                kf.update(voltage_meas_V, HJacobian=_given, Hx=_given, args=(h_row[np.newaxis],),
                          hx_args=(np.array([[v_lin]]),))
        kf.P = 0.5 * (kf.P + kf.P.T)
        return gated


def _ukf_fx(x: np.ndarray, dt: float, model: BoardModel, temp_C: float, current_meas_A: float) -> np.ndarray:
    f, b = transition(model, evaluate(model, x[0], temp_C), dt, current_meas_A - x[3])
    return f @ x + b[:, 0] * current_meas_A


def _ukf_hx(x: np.ndarray, model: BoardModel, h: float, current_meas_A: float, temp_C: float) -> np.ndarray:
    at = evaluate(model, x[0], temp_C)
    return np.array([voltage_V(at, at, x, h, current_meas_A - x[3])])


class UkfCell(_Tuned):
    """The same model through filterpy's UnscentedKalmanFilter (module docstring)."""

    def __init__(self, model: BoardModel, cfg: Mapping[str, float], soc0: float) -> None:
        points = MerweScaledSigmaPoints(4, alpha=UKF_ALPHA, beta=UKF_BETA, kappa=UKF_KAPPA)
        super().__init__(model, cfg, UnscentedKalmanFilter(dim_x=4, dim_z=1, dt=0.0, hx=_ukf_hx, fx=_ukf_fx,
                                                           points=points))
        self.kf.x = np.array([soc0, 0.0, 0.0, 0.0])

    @property
    def x(self) -> np.ndarray:
        return self.kf.x

    @property
    def P(self) -> np.ndarray:
        return self.kf.P

    def step(self, dt_s: float, current_meas_A: float, voltage_meas_V: float | None, temp_C: float) -> bool:
        kf, model = self.kf, self.model
        self.h = hysteresis(model, self.h, current_meas_A - kf.x[3], dt_s)
        kf.Q = self._q_per_s * dt_s
        kf.predict(dt=dt_s, model=model, temp_C=temp_C, current_meas_A=current_meas_A)
        gated = False
        if voltage_meas_V is not None:
            kf.update(np.array([voltage_meas_V]), model=model, h=self.h, current_meas_A=current_meas_A,
                      temp_C=temp_C)
            gated = self._gated(float(kf.y[0]), float(kf.S[0, 0]))
            if gated:
                kf.x, kf.P = kf.x_prior.copy(), kf.P_prior.copy()
        kf.P = 0.5 * (kf.P + kf.P.T)
        return gated


CapacityUpdate = tuple[int, int, float]  # (t_ms, cell, capacity_Ah): from this record on, after the cell's step


def _run(cells: Sequence[CellFilter], records: Iterable[Record],
         capacity_updates: Iterable[CapacityUpdate] = ()) -> Estimates:
    n_cells = len(cells)
    new_capacity_Ah = {(t, cell): capacity_Ah for t, cell, capacity_Ah in capacity_updates}
    temps_C = [DEFAULT_TEMP_C] * n_cells
    current_A = 0.0
    t_prev: int | None = None
    t_ms: list[int] = []
    rows: list[list[tuple[float, float, float, bool]]] = []
    step_ns: list[int] = []
    for t, current_mA, voltages_mV, temps_dC in records:
        # u32 milliseconds: the difference modulo 2**32 survives a wrap.
        dt_s = 0.0 if t_prev is None else ((t - t_prev) % 2**32) / 1000.0
        t_prev = t
        if current_mA != ABSENT:  # an absent current: the last valid one is held
            current_A = current_mA / 1000.0
        row = []
        for cell, kf in enumerate(cells):
            if temps_dC[cell] != ABSENT:
                temps_C[cell] = temps_dC[cell] / 10.0
            voltage = None if voltages_mV[cell] == ABSENT else voltages_mV[cell] / 1000.0
            start_ns = time.perf_counter_ns()
            gated = kf.step(dt_s, current_A, voltage, temps_C[cell])
            step_ns.append(time.perf_counter_ns() - start_ns)
            if (t, cell) in new_capacity_Ah:
                kf.model = replace(kf.model, capacity_Ah=new_capacity_Ah[t, cell])
            x = kf.x
            row.append((min(max(float(x[0]), 0.0), 1.0), math.sqrt(float(kf.P[0, 0])), float(x[3]), gated))
        t_ms.append(t)
        rows.append(row)
    table = np.array(rows, dtype=float).reshape(len(rows), n_cells, 4)
    step_us = np.array(step_ns) / 1000.0 if step_ns else np.zeros(1)
    return Estimates(t_ms=np.array(t_ms, dtype=np.int64), soc=table[..., 0], soc_sigma=table[..., 1],
                     bias_A=table[..., 2], gated=table[..., 3].astype(bool), step_us_median=float(np.median(step_us)),
                     step_us_p99=float(np.percentile(step_us, 99)))


def run_ekf(model: BoardModel, cfg: Mapping[str, float], records: Iterable[Record], soc0: Sequence[float],
            capacity_updates: Iterable[CapacityUpdate] = ()) -> Estimates:
    """The contract's EKF over a stream, one filter per cell, from the initial SoC per cell; capacity_updates: the
    capacities a board's SoH tracker gave its EKF during the same stream (engine/streamrun.py), replayed."""
    return _run([EkfCell(model, cfg, s) for s in soc0], records, capacity_updates)


def run_ukf(model: BoardModel, cfg: Mapping[str, float], records: Iterable[Record], soc0: Sequence[float]) -> Estimates:
    """The UKF of the same model over a stream, one filter per cell."""
    return _run([UkfCell(model, cfg, s) for s in soc0], records)
