# Board cell model ("soxbms-cell/1", made by host/boardmodel.py from a cell parameter file) and its lookup.
# MicroPython and CPython subset.
#
# Tables are float32 arrays on one SoC grid and one temperature grid. Lookup rules (board and host identical):
# linear in SoC, held at the end values outside the grid, but the OCV goes on along its end segments (as the rig's
# cells: hil/physics/ecm.py); linear in T between grid temperatures; beyond the
# temperature edges resistances x exp(Ea/R·(1/T_K − 1/T_edge_K)), I0 x exp(−Ea_i0/R·(…)), OCV + dudt·(T − T_edge),
# capacitances held (as hil/physics/ecm.py).
#
# Cheap per cell-step: the SoC segment is found by walking from the cell's previous segment (SoC moves little per
# sample, so the walk is 0 or 1 step) and is shared by all tables; the temperature-dependent factors are cached per
# cell and recomputed only when the cell's temperature reading (0.1 °C) changes.

import json
import math
from array import array

GAS_CONSTANT_J_PER_MOLK = 8.314462618
FARADAY_C_PER_MOL = 96485.33212
KELVIN = 273.15
FORMAT = "soxbms-cell/1"
# Per-temperature tables in one array each, [i_temp * S + i_soc].
TS_TABLES = ("ocv_V", "r0_ohm", "r1_ohm", "c1_F", "r2_ohm", "c2_F")


def _f32(values):
    return array("f", values)


def _ascending(values, what):
    for i in range(1, len(values)):
        if not values[i] > values[i - 1]:
            raise ValueError("%s must be strictly ascending" % what)


class CellModel:
    """The tables of one cell type, shared by all cells of a board."""

    def __init__(self, doc):
        if doc.get("format") != FORMAT:
            raise ValueError("model format %r, expected %r" % (doc.get("format"), FORMAT))
        self.name = doc["name"]
        self.capacity_As = float(doc["capacity_Ah"]) * 3600.0
        self.efficiency = float(doc["coulombic_efficiency"])
        self.hyst_rate_per_As = float(doc["hyst_rate_per_As"])
        self.ea_over_R = float(doc["resistance_ea_J_per_mol"]) / GAS_CONSTANT_J_PER_MOLK
        soc = [float(v) for v in doc["soc"]]
        temps = [float(v) for v in doc["temp_C"]]
        if len(soc) < 2 or not temps:
            raise ValueError("model needs >= 2 SoC points and >= 1 temperature")
        _ascending(soc, "soc")
        _ascending(temps, "temp_C")
        n_soc = len(soc)
        self.n_soc = n_soc
        # Grid and inverse spacing as tuples of Python floats: reading them allocates nothing.
        self.soc = tuple(soc)
        self.inv_dsoc = tuple(1.0 / (soc[i + 1] - soc[i]) for i in range(n_soc - 1))
        self.temp_C = tuple(temps)
        self.inv_dtemp = tuple(1.0 / (temps[i + 1] - temps[i]) for i in range(len(temps) - 1))
        tables = [self._table(doc, key, len(temps)) for key in TS_TABLES]
        self.ocv, self.r0, self.r1, self.c1, self.r2, self.c2 = tables
        self.hyst = self._row(doc["hyst_V"], "hyst_V")
        self.dudt = self._row(doc["dudt_V_per_K"], "dudt_V_per_K")
        self.kinetic = doc.get("i0_A") is not None
        if self.kinetic:
            self.i0 = self._table(doc, "i0_A", len(temps))
            self.i0_ea_over_R = float(doc["i0_ea_J_per_mol"]) / GAS_CONSTANT_J_PER_MOLK

    def _row(self, values, what):
        if len(values) != self.n_soc:
            raise ValueError("%s: %d values, expected %d" % (what, len(values), self.n_soc))
        return _f32(values)

    def _table(self, doc, key, n_temps):
        rows = doc[key]
        if len(rows) != n_temps:
            raise ValueError("%s: %d rows, expected one per temperature (%d)" % (key, len(rows), n_temps))
        out = array("f")
        for row in rows:
            out.extend(self._row(row, key))
        return out


def load(path):
    with open(path) as f:
        return CellModel(json.load(f))


class Lookup:
    """Per-cell lookup state over one CellModel. params() evaluates at (soc, temperature) and leaves the values
    in attributes: r0, r1, c1, r2, c2 (ohm, F), m (hysteresis half-width V), dm (dM/dsoc, V), i0 (A, 0 without
    the charge-transfer element), b_V = 2RT/F, and the SoC slopes dr0, dr1, dr2 (ohm), di0 (A) (the EKF's
    Jacobian: the segment's slope inside the grid, 0 outside it, where the tables are held). ocv() then gives ocv (V)
    and docv (dOCV/dsoc, V) at the same cell's temperature."""

    def __init__(self, model, n_cells):
        self.model = model
        self.segment = array("H", [0] * n_cells)  # the cell's last SoC segment
        # Per-cell temperature cache: the reading it holds, the temperature segment and weight, the Arrhenius
        # factors for resistances and I0, OCV's offset beyond the grid's edge (K) and 2RT/F.
        self.temp_dC = array("i", [-0x40000000] * n_cells)
        self.t_seg = array("H", [0] * n_cells)
        self.t_w = [0.0] * n_cells
        self.f_r = [1.0] * n_cells
        self.f_i0 = [1.0] * n_cells
        self.dtemp_K = [0.0] * n_cells
        self.b_cell = [0.0] * n_cells
        self.r0 = self.r1 = self.c1 = self.r2 = self.c2 = 0.0
        self.m = self.dm = self.i0 = self.b_V = 0.0
        self.dr0 = self.dr1 = self.dr2 = self.di0 = 0.0
        self.ocv = self.docv = 0.0
        self._k = 0
        self._u = 0.0
        self._inside = False
        self._beyond = 0.0  # soc minus the grid end it lies beyond (0 inside the grid)
        self._tk = 0
        self._tw = 0.0
        self._dtemp = 0.0

    def _temperature(self, cell, temp_dC):
        if temp_dC == self.temp_dC[cell]:
            return
        self.temp_dC[cell] = temp_dC
        model = self.model
        temps = model.temp_C
        temp_C = temp_dC * 0.1
        j = 0
        w = 0.0
        edge_C = temp_C
        if temp_C <= temps[0]:
            edge_C = temps[0]
        elif temp_C >= temps[-1]:
            edge_C = temps[-1]
            j = len(temps) - 1
        else:
            while temps[j + 1] <= temp_C:
                j += 1
            w = (temp_C - temps[j]) * model.inv_dtemp[j]
        temp_K = temp_C + KELVIN
        self.t_seg[cell] = j
        self.t_w[cell] = w
        self.b_cell[cell] = 2.0 * GAS_CONSTANT_J_PER_MOLK / FARADAY_C_PER_MOL * temp_K
        self.dtemp_K[cell] = temp_C - edge_C
        inv = 1.0 / temp_K - 1.0 / (edge_C + KELVIN)
        self.f_r[cell] = math.exp(model.ea_over_R * inv)
        if model.kinetic:
            self.f_i0[cell] = math.exp(-model.i0_ea_over_R * inv)

    def _seek(self, cell, soc):
        """Segment k and weight u of soc (held inside the grid): walk from the cell's last segment."""
        grid = self.model.soc
        k = self.segment[cell]
        self._inside = False
        self._beyond = 0.0
        if soc <= grid[0]:
            self._beyond = soc - grid[0]
            soc = grid[0]
        elif soc >= grid[-1]:
            self._beyond = soc - grid[-1]
            soc = grid[-1]
        else:
            self._inside = True
        while k > 0 and soc < grid[k]:
            k -= 1
        last = len(grid) - 2
        while k < last and soc >= grid[k + 1]:
            k += 1
        self.segment[cell] = k
        self._k = k
        self._u = (soc - grid[k]) * self.model.inv_dsoc[k]

    def _at(self, table):
        """Table value at the sought segment and temperature (linear in SoC, then in T)."""
        k = self._k
        u = self._u
        base = self._tk * self.model.n_soc + k
        a = table[base]
        v = a + (table[base + 1] - a) * u
        if self._tw:
            base += self.model.n_soc
            a = table[base]
            v += (a + (table[base + 1] - a) * u - v) * self._tw
        return v

    def _slope(self, table):
        """d table / d soc on the sought segment (the end segment outside the grid), linear in T."""
        k = self._k
        base = self._tk * self.model.n_soc + k
        d = table[base + 1] - table[base]
        if self._tw:
            base += self.model.n_soc
            d += (table[base + 1] - table[base] - d) * self._tw
        return d * self.model.inv_dsoc[k]

    def params(self, cell, soc, temp_dC):
        model = self.model
        self._temperature(cell, temp_dC)
        self._seek(cell, soc)
        self._tk = self.t_seg[cell]
        self._tw = self.t_w[cell]
        self._dtemp = self.dtemp_K[cell]
        f_r = self.f_r[cell]
        self.r0 = self._at(model.r0) * f_r
        self.r1 = self._at(model.r1) * f_r
        self.r2 = self._at(model.r2) * f_r
        self.c1 = self._at(model.c1)
        self.c2 = self._at(model.c2)
        hyst = model.hyst
        k = self._k
        a = hyst[k]
        d = hyst[k + 1] - a
        self.m = a + d * self._u
        self.dm = d * model.inv_dsoc[k]
        if model.kinetic:
            self.i0 = self._at(model.i0) * self.f_i0[cell]
        self.b_V = self.b_cell[cell]
        if self._inside:
            self.dr0 = self._slope(model.r0) * f_r
            self.dr1 = self._slope(model.r1) * f_r
            self.dr2 = self._slope(model.r2) * f_r
            if model.kinetic:
                self.di0 = self._slope(model.i0) * self.f_i0[cell]
        else:
            self.dr0 = self.dr1 = self.dr2 = self.di0 = 0.0

    def ocv_at(self, cell, soc):
        """ocv and docv at soc, for the cell whose params() ran last (its temperature); beyond the grid the OCV
        goes on along the end segment."""
        model = self.model
        self._seek(cell, soc)
        self.docv = self._slope(model.ocv)
        self.ocv = self._at(model.ocv) + self.docv * self._beyond
        if self._dtemp:
            dudt = model.dudt
            a = dudt[self._k]
            self.ocv += (a + (dudt[self._k + 1] - a) * self._u) * self._dtemp
