"""Capacity fade and resistance growth per cell: calendar ageing (SEI growth, √t) and cycle ageing
(linear in charge throughput), each with its own rate for capacity and for resistance.

    stress    f = exp(−Ea/R·(1/T − 1/T_ref)) · exp(s·(SoC − 0.5))       s: calendar SoC sensitivity
    calendar  q_cal = k_cal·f·√t at constant stress. Under varying stress the state is q_cal², which grows
              as d(q_cal²)/dt = (k_cal·f)²: the √t law continued in 'virtual time', path-consistent.
    cycle     q_cyc = k_cyc·∫|I| dt   (A·h)
    capacity factor = 1 − q_cal − q_cyc,   resistance factor = 1 + r_cal + r_cyc

`fast_forward` applies whole cycles in closed form: the SoC sweeps linearly (constant current) between
the cycle's top and bottom, so the mean of f² over a half cycle is an integral of an exponential."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hil.physics.params import AgeingParams

GAS_CONSTANT_J_PER_MOLK = 8.314462618
KELVIN = 273.15
MIN_CAPACITY_FACTOR = 0.01  # a worn-out cell keeps 1 % so SoC stays finite


@dataclass
class AgeingState:
    calendar_fade_sq: np.ndarray
    cycle_fade: np.ndarray
    calendar_growth_sq: np.ndarray
    cycle_growth: np.ndarray

    @classmethod
    def fresh(cls, n_cells: int) -> AgeingState:
        return cls(*(np.zeros(n_cells) for _ in range(4)))

    @classmethod
    def aged(cls, capacity_factor: np.ndarray, resistance_factor: np.ndarray) -> AgeingState:
        """A state with the given factors, carried as calendar ageing (the √t law continues from there)."""
        if np.any(capacity_factor <= 0) or np.any(capacity_factor > 1) or np.any(resistance_factor < 1):
            raise ValueError("aged state needs 0 < capacity factor <= 1 and resistance factor >= 1")
        n = capacity_factor.size
        return cls((1.0 - capacity_factor) ** 2, np.zeros(n), (resistance_factor - 1.0) ** 2, np.zeros(n))

    @property
    def capacity_factor(self) -> np.ndarray:
        return np.maximum(1.0 - np.sqrt(self.calendar_fade_sq) - self.cycle_fade, MIN_CAPACITY_FACTOR)

    @property
    def resistance_factor(self) -> np.ndarray:
        return 1.0 + np.sqrt(self.calendar_growth_sq) + self.cycle_growth


def _arrhenius_sq(p: AgeingParams, temp_C: np.ndarray | float) -> np.ndarray | float:
    ea_over_R = p.activation_J_per_mol / GAS_CONSTANT_J_PER_MOLK
    return np.exp(-2.0 * ea_over_R * (1.0 / (np.asarray(temp_C) + KELVIN) - 1.0 / (p.reference_temp_C + KELVIN)))


def advance(state: AgeingState, p: AgeingParams, throughput_Ah: float, temp_C: np.ndarray, soc: np.ndarray,
            dt_s: float) -> None:
    """Age every cell by dt_s spent at the given temperatures and SoCs, passing throughput_Ah of charge."""
    stress_sq_s = _arrhenius_sq(p, temp_C) * np.exp(2.0 * p.calendar_soc_sensitivity * (soc - 0.5)) * dt_s
    state.calendar_fade_sq += p.calendar_fade_per_sqrt_s**2 * stress_sq_s
    state.calendar_growth_sq += p.calendar_res_per_sqrt_s**2 * stress_sq_s
    state.cycle_fade += p.cycle_fade_per_Ah * throughput_Ah
    state.cycle_growth += p.cycle_res_per_Ah * throughput_Ah


def _mean_soc_factor_sq(sensitivity: float, soc_low: np.ndarray, soc_high: np.ndarray) -> np.ndarray:
    """Mean of exp(2s·(SoC − 0.5)) over SoC swept uniformly in time from soc_low to soc_high."""
    a = 2.0 * sensitivity
    high = np.exp(a * (soc_high - 0.5))
    if a == 0.0:
        return high
    span = soc_high - soc_low
    low = np.exp(a * (soc_low - 0.5))
    return np.where(span > 0, (high - low) / np.where(span > 0, a * span, 1.0), high)


def fast_forward(state: AgeingState, p: AgeingParams, *, cycles: int, dod: float, c_rate: float,
                 temp_C: float, cycle_duration_s: float, nominal_Ah: float, fresh_capacity_Ah: np.ndarray,
                 soc_top: np.ndarray) -> None:
    """Age a series string by whole cycles without stepping: each cycle discharges from soc_top by
    dod × the weakest cell's present capacity at c_rate × nominal_Ah amperes, charges back at the same
    current, then rests at soc_top for the rest of cycle_duration_s. Cell temperature is held at temp_C."""
    if not (0 < dod <= 1 and c_rate > 0 and cycles >= 0):
        raise ValueError("fast_forward needs 0 < dod <= 1, c_rate > 0 and cycles >= 0")
    current_A = c_rate * nominal_Ah
    arrhenius_sq = _arrhenius_sq(p, temp_C)
    rest_factor_sq = np.exp(2.0 * p.calendar_soc_sensitivity * (soc_top - 0.5))
    for _ in range(cycles):
        capacity_Ah = fresh_capacity_Ah * state.capacity_factor
        swing_Ah = dod * float(capacity_Ah.min())  # series string: the weakest cell bounds the usable charge
        active_s = 2.0 * swing_Ah * 3600.0 / current_A
        if active_s > cycle_duration_s * (1 + 1e-12):
            raise ValueError(f"a cycle of {active_s:.0f} s at {current_A} A does not fit in {cycle_duration_s} s")
        soc_bottom = soc_top - swing_Ah / capacity_Ah
        if np.any(soc_bottom < -1e-9):
            raise ValueError("the cycle would take a cell below 0 % SoC: start it from a higher SoC")
        sweep_sq = _mean_soc_factor_sq(p.calendar_soc_sensitivity, soc_bottom, soc_top)
        stress_sq_s = arrhenius_sq * (sweep_sq * active_s + rest_factor_sq * max(cycle_duration_s - active_s, 0.0))
        state.calendar_fade_sq += p.calendar_fade_per_sqrt_s**2 * stress_sq_s
        state.calendar_growth_sq += p.calendar_res_per_sqrt_s**2 * stress_sq_s
        state.cycle_fade += p.cycle_fade_per_Ah * 2.0 * swing_Ah
        state.cycle_growth += p.cycle_res_per_Ah * 2.0 * swing_Ah
