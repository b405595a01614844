"""Float64 numpy reference of the board cell-model lookup and the SoC EKF of the issue-5 contract (the header of
firmware/engine/ekf.py), written independently of the board code for the parity tests."""

from __future__ import annotations

from typing import Any

import numpy as np

R_GAS = 8.314462618
FARADAY = 96485.33212
KELVIN = 273.15
ABSENT = -(2**30)


TABLES = ("ocv_V", "r0_ohm", "r1_ohm", "c1_F", "r2_ohm", "c2_F", "i0_A", "hyst_V", "dudt_V_per_K")


class RefModel:
    """The board holds the tables in float32: the reference takes the same numbers, then computes in float64."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.tables = {k: np.array(doc[k], np.float32).astype(float) for k in TABLES if doc[k] is not None}
        self.soc = np.array(doc["soc"], float)
        self.temp_C = np.array(doc["temp_C"], float)
        self.q_As = doc["capacity_Ah"] * 3600.0
        self.eta = doc["coulombic_efficiency"]
        self.kinetic = doc["i0_A"] is not None

    def _edge(self, temp_C: float) -> tuple[float, float]:
        """(edge temperature, 1/T_K − 1/T_edge_K)."""
        edge = float(np.clip(temp_C, self.temp_C[0], self.temp_C[-1]))
        return edge, 1.0 / (temp_C + KELVIN) - 1.0 / (edge + KELVIN)

    def table(self, key: str, soc: float, temp_C: float) -> float:
        rows = self.tables[key]
        edge, inv = self._edge(temp_C)
        by_temp = [np.interp(soc, self.soc, row) for row in rows]
        value = float(np.interp(edge, self.temp_C, by_temp))
        if key in ("r0_ohm", "r1_ohm", "r2_ohm"):
            value *= np.exp(self.doc["resistance_ea_J_per_mol"] / R_GAS * inv)
        elif key == "i0_A":
            value *= np.exp(-self.doc["i0_ea_J_per_mol"] / R_GAS * inv)
        elif key == "ocv_V":
            value += float(np.interp(soc, self.soc, self.tables["dudt_V_per_K"])) * (temp_C - edge)
            value += self.slope(key, soc, temp_C) * (soc - float(np.clip(soc, self.soc[0], self.soc[-1])))
        return value

    def segment(self, soc: float) -> int:
        """The grid segment holding soc (the end segments outside the grid)."""
        return int(np.clip(np.searchsorted(self.soc, soc, "right") - 1, 0, self.soc.size - 2))

    def on_grid_point(self, s_star: float, x: np.ndarray, P: np.ndarray, H: np.ndarray, rest: float, v_mV: float,
                      temp_C: float, r_V: float, slopes: tuple[float, float]) -> tuple[np.ndarray, float]:
        """(H, y) of the update on the grid point s*: H0 = h solving x0 + (P·H(h))_0·y(h)/S(h) = s*, found here by
        bisection on h between the two segments' slopes (the board solves it in closed form)."""
        y0 = v_mV * 1e-3 - rest - self.table("ocv_V", s_star, temp_C)

        def miss(h: float) -> float:
            Hh = np.array([h, *H[1:]])
            return x[0] + (P @ Hh)[0] * (y0 - h * (x[0] - s_star)) / (Hh @ P @ Hh + r_V) - s_star

        a, b = min(slopes), max(slopes)
        if miss(a) * miss(b) > 0:  # no root between: the nearer end
            h = a if abs(miss(a)) < abs(miss(b)) else b
        else:
            for _ in range(60):
                h = 0.5 * (a + b)
                a, b = (h, b) if miss(a) * miss(h) > 0 else (a, h)
            h = 0.5 * (a + b)
        return np.array([h, *H[1:]]), y0 - h * (x[0] - s_star)

    def slope(self, key: str, soc: float, temp_C: float) -> float:
        """d/dsoc on the segment holding soc (the end segment outside the grid), linear in T inside the grid."""
        k = self.segment(soc)
        rows = np.atleast_2d(self.tables[key])
        slopes = (rows[:, k + 1] - rows[:, k]) / (self.soc[k + 1] - self.soc[k])
        edge, _ = self._edge(temp_C)
        return float(np.interp(edge, self.temp_C, slopes)) if rows.shape[0] > 1 else float(slopes[0])

    def factor(self, key: str, temp_C: float) -> float:
        """The Arrhenius factor beyond the temperature grid (1 inside it) of a resistance or I0 table."""
        _, inv = self._edge(temp_C)
        if key == "i0_A":
            return float(np.exp(-self.doc["i0_ea_J_per_mol"] / R_GAS * inv))
        return float(np.exp(self.doc["resistance_ea_J_per_mol"] / R_GAS * inv))

    def param_slope(self, key: str, soc: float, temp_C: float) -> float:
        """d/dsoc of a resistance or I0 table: the segment's slope inside the SoC grid, 0 outside (held values)."""
        if not self.soc[0] < soc < self.soc[-1]:
            return 0.0
        return self.slope(key, soc, temp_C) * self.factor(key, temp_C)

    def hyst(self, soc: float) -> float:
        return float(np.interp(soc, self.soc, self.tables["hyst_V"]))


class RefEkf:
    """One cell, float64, every matrix product written out with numpy."""

    def __init__(self, model: RefModel, cfg: dict[str, float], soc0: float) -> None:
        self.m = model
        self.cfg = cfg
        self.x = np.array([soc0, 0.0, 0.0, 0.0])
        self.P = np.diag([cfg["p0_soc"], cfg["p0_v"], cfg["p0_v"], cfg["p0_b"]])
        self.h = 0.0
        self.temp_C = 25.0
        self.current_A = 0.0
        self.gated = 0
        self.run_gated = 0

    def step(self, dt: float, current_mA: int, v_mV: int, temp_dC: int) -> None:
        m, cfg = self.m, self.cfg
        if current_mA != ABSENT:
            self.current_A = current_mA * 1e-3
        if temp_dC != ABSENT:
            self.temp_C = temp_dC * 0.1
        soc, v1, v2, b = self.x
        T = self.temp_C
        cur = self.current_A - b
        r0, r1, c1, r2, c2 = (m.table(k, soc, T) for k in ("r0_ohm", "r1_ohm", "c1_F", "r2_ohm", "c2_F"))
        mh, dmh = m.hyst(soc), m.slope("hyst_V", soc, T)
        eta = m.eta if cur > 0 else 1.0
        e1, e2 = np.exp(-dt / (r1 * c1)), np.exp(-dt / (r2 * c2))
        d1 = (1 - e1) * cur * m.param_slope("r1_ohm", soc, T)
        d2 = (1 - e2) * cur * m.param_slope("r2_ohm", soc, T)
        F = np.array([[1, 0, 0, -eta * dt / m.q_As], [d1, e1, 0, -r1 * (1 - e1)], [d2, 0, e2, -r2 * (1 - e2)],
                      [0, 0, 0, 1.0]])
        x = np.array([soc + eta * cur * dt / m.q_As, v1 * e1 + r1 * cur * (1 - e1), v2 * e2 + r2 * cur * (1 - e2), b])
        if cur != 0:
            s = np.sign(cur)
            self.h = s + (self.h - s) * np.exp(-m.doc["hyst_rate_per_As"] * abs(cur) * dt)
        P = F @ self.P @ F.T + np.diag([cfg["q_soc"], cfg["q_v"], cfg["q_v"], cfg["q_b"]]) * dt
        if v_mV != ABSENT:
            rest = mh * self.h + x[1] + x[2] + r0 * cur  # V(x') but its OCV
            dv_di = r0
            dv_dsoc = self.h * dmh + cur * m.param_slope("r0_ohm", soc, T)  # H[0] but dOCV/dsoc
            if m.kinetic:
                i0 = m.table("i0_A", soc, T)
                B = 2 * R_GAS * (T + KELVIN) / FARADAY
                z = cur / (2 * i0)
                rest += B * np.arcsinh(z)
                dv_di += B / (2 * i0 * np.sqrt(1 + z**2))
                # d(B·asinh z)/dsoc = B/sqrt(1 + z²) · dz/dI0 · dI0/dsoc, dz/dI0 = −z/I0
                dv_dsoc -= B / np.sqrt(1 + z**2) * z / i0 * m.param_slope("i0_A", soc, T)
            # Iterated update (engine/ekf.py): OCV relinearised at soc_i until soc moves < 1e-4 or n linearisations;
            # the MAP's soc bracketed by the steps' signs; on the grid point between two segments whose lines both
            # point at it, the update is made there with the H0 that lands on it.
            soc_i, gated = x[0], False
            bound = {1: -np.inf, -1: np.inf}  # +1: lo (the step rises from it), -1: hi
            seg: dict[int, int] = {}
            h0: dict[int, float] = {}
            target: dict[int, float] = {}
            for it in range(int(cfg.get("iterations", 1))):
                H = np.array([m.slope("ocv_V", soc_i, T) + dv_dsoc, 1.0, 1.0, -dv_di])
                y = v_mV * 1e-3 - rest - m.table("ocv_V", soc_i, T) - H[0] * (x[0] - soc_i)
                S = H @ P @ H + cfg["r_V"]
                if not it:
                    outlier = y * y > cfg["gate"] ** 2 * S
                    self.run_gated = self.run_gated + 1 if outlier else 0
                    if outlier and self.run_gated <= cfg["gate_run"]:
                        self.gated += 1
                        gated = True
                        break
                step = x[0] + (P @ H)[0] / S * y - soc_i
                if abs(step) < 1e-4:
                    break
                side = 1 if step > 0 else -1
                bound[side], seg[side], h0[side], target[side] = soc_i, m.segment(soc_i), H[0], soc_i + step
                s_star = m.soc[seg[-1]] if len(seg) == 2 and seg[-1] == seg[1] + 1 else None
                if s_star is not None and target[1] >= s_star >= target[-1]:
                    H, y = m.on_grid_point(s_star, x, P, H, rest, v_mV, T, cfg["r_V"], (h0[1], h0[-1]))
                    S = H @ P @ H + cfg["r_V"]
                    break
                if s_star is not None:
                    soc_i = target[1] if target[1] < s_star else target[-1]
                elif bound[1] < soc_i + step < bound[-1]:
                    soc_i = soc_i + step
                else:
                    soc_i = 0.5 * (bound[1] + bound[-1])
            if not gated:
                K = P @ H / S
                x = x + K * y
                A = np.eye(4) - np.outer(K, H)
                P = A @ P @ A.T + cfg["r_V"] * np.outer(K, K)
        self.x, self.P = x, P
