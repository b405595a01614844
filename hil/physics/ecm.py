"""Two-RC Thevenin equivalent circuit with one-state hysteresis, vectorised over the cells of a string.

Sign: current > 0 charges the cell. Per cell:
    V    = OCV(SoC, T) + M(SoC)·h + V1 + V2 + R0·I + η_ct
    η_ct = (2RT/F)·asinh(I / (2·I0(SoC, T)))   charge transfer, optional (params.exchange_current_A)
    SoC  = stored charge / present capacity  (the single definition of true SoC in hil.physics)
    dSoC/dt = ((η·I if I > 0 else I) − I_sd) / Q   η: coulombic efficiency, I_sd: self-discharge
    RC branch, exact for I constant over dt:  V' = V·e^(−dt/τ) + R·I·(1 − e^(−dt/τ)),  τ = R·C
    hysteresis (Plett 2004), dh/dt = −γ·|I|·(h − sign I), exact:  h' = s + (h − s)·e^(−γ·|I|·dt)
η_ct is the Butler–Volmer equation I = 2·I0·sinh(F·η/(2RT)) (symmetric, α = 0.5) solved for η (Newman &
Thomas-Alyea, Electrochemical Systems, 3rd ed. 2004, ch. 8; Plett, Battery Management Systems Vol. 1, 2015, ch. 3):
instantaneous like R0, linear with slope RT/(F·I0) at small currents and logarithmic at large ones, so the drop
per amp falls with the current. Without an exchange-current table the element and its rows are absent.
Tables are bilinear in (SoC, T) and held at their edge values outside the SoC grid, but for the OCV, which goes on
along its end segments' slopes: a cell charged past the SoC 1 of its C/20 test (the rested state after CC-CV) sees its
voltage rise steeply, as real cells do in overcharge, so a CV phase tapers instead of charging on at a flat OCV;
beyond a table's
temperature range resistances scale by Arrhenius exp(Ea/R·(1/T − 1/T_edge)), I0 by exp(−Ea_I0/R·(1/T − 1/T_edge))
and the OCV follows its entropic slope dOCV/dT. Capacitances are held at the edge. The per-cell resistance factor
(spread × ageing) multiplies the resistances and divides I0 (a charge-transfer resistance RT/(F·I0) grows with it).

Speed (~20 000 steps/s for 16 cells) comes from one lookup for all tables: every
table row is resampled onto the union of all SoC breakpoints (exact for piecewise-linear tables) and
stored per SoC interval as intercept and slope, so one gather and one multiply-add interpolate them all."""

from __future__ import annotations

import math

import numpy as np

from hil.physics.params import CellParams, SocTable, Table

GAS_CONSTANT_J_PER_MOLK = 8.314462618
FARADAY_C_PER_MOL = 96485.33212
KELVIN = 273.15

# Row order of the evaluated parameter block: R1/R2 and C1/C2 adjacent so both branches update as one (2, N) array.
# I0 and B = 2RT/F (V) are present only with the charge-transfer element.
OCV, R0, R1, R2, C1, C2, HYST, DUDT, I0, B = range(10)
N_ROWS = 8
N_ROWS_KINETIC = 10


class _TempInterp:
    """Rows whose tables share one multi-row temperature grid: linear in T between their SoC-interpolated rows."""

    def __init__(self, temp_C: np.ndarray, rows: list[int], columns: np.ndarray) -> None:
        self.temp_C = temp_C
        self.rows = rows
        self.columns = columns  # [table, i_temp] -> column of the SoC-interpolated block
        self.inv_dtemp = 1.0 / np.diff(temp_C)

    def fill(self, block: np.ndarray, temp_C: np.ndarray, cells: np.ndarray) -> None:
        t = np.minimum(np.maximum(temp_C, self.temp_C[0]), self.temp_C[-1])
        j = self.temp_C[1:-1].searchsorted(t, "right")
        u = (t - self.temp_C[j]) * self.inv_dtemp[j]
        lo = block[self.columns[:, j], cells]
        block[self.rows] = lo + (block[self.columns[:, j + 1], cells] - lo) * u


class Ecm:
    """States (per cell): soc, v_rc_V (2, N) = [V1, V2], h in [-1, 1]. Per-cell factors set by the module:
    capacity_As (present capacity) and resistance_factor (spread × ageing, applied to R0, R1, R2)."""

    def __init__(self, params: CellParams, n_cells: int) -> None:
        self.params = params
        self.soc = np.full(n_cells, 0.5)
        self.v_rc_V = np.zeros((2, n_cells))
        self.h = np.zeros(n_cells)
        self.capacity_As = np.full(n_cells, params.nominal_capacity_Ah * 3600.0)
        self.self_discharge_A = np.full(n_cells, params.self_discharge_A)
        self._cells = np.arange(n_cells)

        tables: dict[int, Table | SocTable] = {
            OCV: params.ocv_V, R0: params.r0_ohm, R1: params.r1_ohm, R2: params.r2_ohm, C1: params.c1_F,
            C2: params.c2_F, HYST: params.hysteresis_V, DUDT: params.entropic_V_per_K,
        }
        self.kinetic = params.exchange_current_A is not None
        if params.exchange_current_A is not None:
            # Row B has no table: a zero row that evaluate() overwrites with 2RT/F.
            tables[I0] = params.exchange_current_A
            tables[B] = SocTable(np.array([0.0, 1.0]), np.zeros(2))
        self.n_rows = N_ROWS_KINETIC if self.kinetic else N_ROWS
        grid = np.unique(np.concatenate([[0.0, 1.0], *(t.soc for t in tables.values())]))
        self._breaks = grid
        # Column r < N_ROWS holds row r's table at its first temperature; further temperatures are appended.
        columns: list[np.ndarray] = [np.empty(0)] * self.n_rows
        by_grid: dict[bytes, tuple[np.ndarray, list[int], list[list[int]]]] = {}
        edges: dict[int, tuple[float, float]] = {}
        for row, table in tables.items():
            rows = table.values if isinstance(table, Table) else table.values[np.newaxis, :]
            resampled = [np.interp(grid, table.soc, values) for values in rows]
            columns[row] = resampled[0]
            if isinstance(table, Table):
                edges[row] = (float(table.temp_C[0]), float(table.temp_C[-1]))
                if table.temp_C.size > 1:
                    group = by_grid.setdefault(table.temp_C.tobytes(), (table.temp_C, [], []))
                    group[1].append(row)
                    group[2].append([row, *range(len(columns), len(columns) + len(resampled) - 1)])
                    columns.extend(resampled[1:])
        values = np.array(columns).T  # [soc breakpoint, column]
        slope = np.diff(values, axis=0) / np.diff(grid)[:, np.newaxis]
        intercept = values[:-1] - slope * grid[:-1, np.newaxis]
        # Segment k (from searchsorted over all breakpoints): value = intercept[k] + slope[k]·SoC, with segments
        # before 0 and after 1 so that the SoC needs no clipping: flat, but the OCV's columns continue their end
        # segments.
        first = np.stack([values[0], np.zeros(len(columns))])
        last = np.stack([values[-1], np.zeros(len(columns))])
        ocv_columns = [OCV, *(c for _, rows, cols in by_grid.values() for r, *extra in cols if r == OCV
                              for c in extra)]
        first[:, ocv_columns] = intercept[0, ocv_columns], slope[0, ocv_columns]
        last[:, ocv_columns] = intercept[-1, ocv_columns], slope[-1, ocv_columns]
        self._segments = np.stack([np.concatenate([first[:1], intercept, last[:1]]),
                                   np.concatenate([first[1:], slope, last[1:]])], axis=1)
        self._temp_interps = [_TempInterp(t, rows, np.array(cols)) for t, rows, cols in by_grid.values()]

        ea_over_R = params.resistance_activation_J_per_mol / GAS_CONSTANT_J_PER_MOLK
        # Arrhenius groups (rows, T_edge low, T_edge high, sign·Ea/R, sign): sign +1 scales a resistance, −1 the
        # exchange current. Resistances on one temperature grid (the usual case) share one factor.
        shared = len({edges[r] for r in (R0, R1, R2)}) == 1
        self._arrhenius = [(rows, *edges[rows.start], ea_over_R, 1.0)
                           for rows in ([slice(R0, R2 + 1)] if shared else [slice(r, r + 1) for r in (R0, R1, R2)])]
        if params.exchange_current_A is not None:
            ea_i0_J_per_mol = (params.resistance_activation_J_per_mol if params.exchange_activation_J_per_mol is None
                               else params.exchange_activation_J_per_mol)
            self._arrhenius.append((slice(I0, I0 + 1), *edges[I0], -ea_i0_J_per_mol / GAS_CONSTANT_J_PER_MOLK, -1.0))
        self._ocv_edges = edges[OCV]
        self.resistance_factor = np.ones(n_cells)

    @property
    def resistance_factor(self) -> np.ndarray:
        return self._resistance_factor

    @resistance_factor.setter
    def resistance_factor(self, factor: np.ndarray) -> None:
        self._resistance_factor = factor
        # Folded into the Arrhenius exponent, R = R_table·exp(Ea/R·(1/T − 1/T_edge) + ln factor) and
        # I0 = I0_table·exp(−(Ea_I0/R·(1/T − 1/T_edge) + ln factor)); for a single temperature row the edge is fixed
        # and all but (sign·Ea/R)/T is one cached offset per group.
        self._log_factors = [sign * np.log(factor) for *_, sign in self._arrhenius]
        self._arrhenius_offsets = [ea / (lo_C + KELVIN) - log_factor
                                   for (_, lo_C, _, ea, _), log_factor in zip(self._arrhenius, self._log_factors,
                                                                              strict=True)]

    def _arrhenius_exponent(self, group: int, temp_C: np.ndarray, temp_K: np.ndarray) -> np.ndarray:
        _, lo_C, hi_C, ea_over_R, _ = self._arrhenius[group]
        if lo_C == hi_C:
            return ea_over_R / temp_K - self._arrhenius_offsets[group]
        edge_K = np.minimum(np.maximum(temp_C, lo_C), hi_C) + KELVIN
        return ea_over_R * (1.0 / temp_K - 1.0 / edge_K) + self._log_factors[group]

    def evaluate(self, temp_C: np.ndarray) -> np.ndarray:
        """Parameter block (n_rows, N) at the present SoC and the given cell temperatures; rows OCV, R0, ... DUDT,
        and I0, B with the charge-transfer element."""
        ab = self._segments[self._breaks.searchsorted(self.soc, "right")]
        block = (ab[:, 0] + ab[:, 1] * self.soc[:, np.newaxis]).T
        for interp in self._temp_interps:
            interp.fill(block, temp_C, self._cells)
        out = block[:self.n_rows]
        temp_K = temp_C + KELVIN
        for group, (rows, *_) in enumerate(self._arrhenius):
            out[rows] *= np.exp(self._arrhenius_exponent(group, temp_C, temp_K))
        if self.kinetic:
            out[B] = (2.0 * GAS_CONSTANT_J_PER_MOLK / FARADAY_C_PER_MOL) * temp_K
        lo_C, hi_C = self._ocv_edges
        out[OCV] += out[DUDT] * (temp_C - (lo_C if lo_C == hi_C else np.minimum(np.maximum(temp_C, lo_C), hi_C)))
        return out

    def overpotential_V(self, current_A: float, values: np.ndarray) -> np.ndarray:
        """Terminal voltage minus OCV: hysteresis + both RC branches + ohmic drop (+ charge-transfer overpotential)."""
        linear_V = values[HYST] * self.h + self.v_rc_V[0] + self.v_rc_V[1] + values[R0] * current_A
        if self.kinetic:
            return linear_V + values[B] * np.arcsinh(current_A * 0.5 / values[I0])
        return linear_V

    def advance(self, current_A: float, dt_s: float, values: np.ndarray) -> None:
        """Advance SoC, RC branches and hysteresis by dt at constant current, with `values` from evaluate()."""
        r_ohm = values[R1 : R2 + 1]
        decay = np.exp(-dt_s / (r_ohm * values[C1 : C2 + 1]))
        drop_V = r_ohm * current_A
        self.v_rc_V = drop_V + (self.v_rc_V - drop_V) * decay
        if current_A:
            target = math.copysign(1.0, current_A)
            self.h = target + (self.h - target) * math.exp(-self.params.hysteresis_rate_per_As * abs(current_A) * dt_s)
        accepted_A = current_A * self.params.coulombic_efficiency if current_A > 0 else current_A
        self.soc = self.soc + (accepted_A - self.self_discharge_A) * dt_s / self.capacity_As
