"""Lumped thermal model of a row of cells (1-D chain), one temperature per cell.

    m·cp·dT_i/dt = Q_i − hA·(T_i − T_amb) + G·(T_i−1 − T_i) + G·(T_i+1 − T_i)

Q_i is the cell's heat (W), from `heat_W`; end cells have one neighbour. With θ = T − T_amb this is
θ' = A·θ + q/(m·cp), A = −(hA·I + G·L)/(m·cp) with L the chain's graph Laplacian. A is symmetric, so
the update for heat held constant over dt is exact and unconditionally stable for any dt:
    θ' = e^(A·dt)·θ + A⁻¹(e^(A·dt) − I)·q/(m·cp),  both matrices from one eigendecomposition, cached per dt."""

from __future__ import annotations

import numpy as np

from hil.physics.params import ThermalParams

KELVIN = 273.15


def heat_W(current_A: float, overpotential_V: np.ndarray, temp_C: np.ndarray, dudt_V_per_K: np.ndarray) -> np.ndarray:
    """Irreversible I·(V − OCV) (ohmic, polarisation and hysteresis losses) plus reversible I·T·dOCV/dT.

    With current > 0 charging, the reversible term is exothermic on charge when dOCV/dT > 0 and
    endothermic on discharge (Bernardi's balance with the sign of I flipped)."""
    return current_A * (overpotential_V + (temp_C + KELVIN) * dudt_V_per_K)


class ThermalChain:
    def __init__(self, thermal: ThermalParams, n_cells: int, ambient_C: float) -> None:
        self.heat_capacity_J_per_K = thermal.heat_capacity_J_per_K
        self._ambient_C = float(ambient_C)
        self._rise_K = np.zeros(n_cells)  # θ = T − T_amb, the integrated state
        laplacian = np.zeros((n_cells, n_cells))
        for i in range(n_cells - 1):
            laplacian[i, i] += 1.0
            laplacian[i + 1, i + 1] += 1.0
            laplacian[i, i + 1] = laplacian[i + 1, i] = -1.0
        a = -(thermal.cooling_W_per_K * np.eye(n_cells) + thermal.neighbour_W_per_K * laplacian)
        self._eigenvalues, self._eigenvectors = np.linalg.eigh(a / self.heat_capacity_J_per_K)
        self._propagators: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def temp_C(self) -> np.ndarray:
        return self._ambient_C + self._rise_K

    @temp_C.setter
    def temp_C(self, temp_C: np.ndarray) -> None:
        self._rise_K = temp_C - self._ambient_C

    @property
    def ambient_C(self) -> float:
        return self._ambient_C

    @ambient_C.setter
    def ambient_C(self, ambient_C: float) -> None:
        """A step of the ambient temperature; cell temperatures are continuous across it."""
        self._rise_K += self._ambient_C - ambient_C
        self._ambient_C = float(ambient_C)

    def _propagator(self, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        if dt_s not in self._propagators:
            if len(self._propagators) >= 16:  # a caller with jittering dt: keep the cache bounded
                self._propagators.clear()
            lam, vec = self._eigenvalues, self._eigenvectors
            # ∫0^dt e^(λs) ds = (e^(λ·dt) − 1)/λ, → dt as λ → 0 (no cooling, isolated chain mode).
            safe = np.where(lam == 0.0, 1.0, lam)
            integral = np.where(lam == 0.0, dt_s, np.expm1(lam * dt_s) / safe)
            phi = (vec * np.exp(lam * dt_s)) @ vec.T
            gamma = (vec * (integral / self.heat_capacity_J_per_K)) @ vec.T
            self._propagators[dt_s] = (phi, gamma)
        return self._propagators[dt_s]

    def advance(self, heat_W: np.ndarray, dt_s: float) -> None:
        phi, gamma = self._propagator(dt_s)
        self._rise_K = phi @ self._rise_K + gamma @ heat_W
