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

import binascii
import json
import math
import os
import struct
import sys
from array import array

GAS_CONSTANT_J_PER_MOLK = 8.314462618
FARADAY_C_PER_MOL = 96485.33212
KELVIN = 273.15
FORMAT = "soxbms-cell/1"
# Per-temperature tables in one array each, [i_temp * S + i_soc].
TS_TABLES = ("ocv_V", "r0_ohm", "r1_ohm", "c1_F", "r2_ohm", "c2_F")
# Binary companion "<name>.bin" of a "<name>.json" (host/boardmodel.py write_binary): the same numbers read straight
# into their arrays, without the JSON document's Python floats (~50 KB for a 121-point model on the 64-bit port).
# Little-endian:
#   header  <4sHHHHHHII  magic "SXCM", version, flags (bit 0: I0 table), n_soc, n_temp, name bytes, 0,
#                        CRC-32 of the JSON file it was made from, payload bytes
#   payload name (UTF-8); f64 capacity_Ah, coulombic_efficiency, hyst_rate_per_As, resistance_ea_J_per_mol,
#           i0_ea_J_per_mol (0 without I0); f64 soc[S], temp_C[T]; f32 ocv_V, r0_ohm, r1_ohm, c1_F, r2_ohm, c2_F
#           (then i0_A) each [T * S]; f32 hyst_V[S], dudt_V_per_K[S]
#   u32     CRC-32 of header and payload
# The f64 values are the JSON's numbers, the f32 tables the JSON's rounded to float32 as the JSON path stores them:
# a model read from either file is the same, bit for bit.
BINARY_MAGIC = b"SXCM"
BINARY_VERSION = 1
BINARY_HEADER = "<4sHHHHHHII"
BINARY_HEADER_BYTES = 24
BINARY_SCALARS = 5
FLAG_I0 = 1
_CHUNK_BYTES = 256  # files are CRC-checked in pieces of this size


def _ascending(values, what):
    for i in range(1, len(values)):
        if not values[i] > values[i - 1]:
            raise ValueError("%s must be strictly ascending" % what)


class CellModel:
    """The tables of one cell type, shared by all cells of a board. Made by from_doc() (the JSON document) or
    read() (the binary companion): scalars and grids here, then the tables (float32 arrays) by the maker."""

    def __init__(self, name, capacity_Ah, efficiency, hyst_rate_per_As, ea_J_per_mol, soc, temps):
        """soc, temps: the SoC and temperature grids (sequences of numbers)."""
        self.name = name
        self.capacity_As = float(capacity_Ah) * 3600.0
        self.efficiency = float(efficiency)
        self.hyst_rate_per_As = float(hyst_rate_per_As)
        self.ea_over_R = float(ea_J_per_mol) / GAS_CONSTANT_J_PER_MOLK
        soc = tuple(float(v) for v in soc)
        temps = tuple(float(v) for v in temps)
        n_soc = len(soc)
        if n_soc < 2 or not temps:
            raise ValueError("model needs >= 2 SoC points and >= 1 temperature")
        _ascending(soc, "soc")
        _ascending(temps, "temp_C")
        self.n_soc = n_soc
        self.n_temp = len(temps)
        # Grid and inverse spacing as tuples of Python floats: reading them allocates nothing (an array("d") would
        # take a fifth of the grid's 5 KB here, but make a float per read). Equal spacings share one float object (a
        # 121-point grid has about 12 distinct ones; a float is a 32-byte heap object on the 64-bit port).
        self.soc = soc
        shared = {}
        inv = [None] * (n_soc - 1)
        for i in range(n_soc - 1):
            v = 1.0 / (soc[i + 1] - soc[i])
            inv[i] = shared.setdefault(v, v)
        self.inv_dsoc = tuple(inv)
        self.temp_C = temps
        self.inv_dtemp = tuple(1.0 / (temps[i + 1] - temps[i]) for i in range(len(temps) - 1))
        self.ocv = self.r0 = self.r1 = self.c1 = self.r2 = self.c2 = self.hyst = self.dudt = None
        self.kinetic = False
        self.i0 = None
        self.i0_ea_over_R = 0.0

    def set_i0(self, table, ea_J_per_mol):
        """The charge-transfer element: I0 table [T * S] (A) and its activation energy."""
        self.kinetic = True
        self.i0 = table
        self.i0_ea_over_R = float(ea_J_per_mol) / GAS_CONSTANT_J_PER_MOLK


# --- the JSON document ------------------------------------------------------------------------------


def _check_row(values, what, n_soc):
    if len(values) != n_soc:
        raise ValueError("%s: %d values, expected %d" % (what, len(values), n_soc))
    return values


def _table(doc, key, model):
    """The [T][S] rows of doc[key] in one array [i_temp * S + i_soc], filled in place (no array per row)."""
    rows = doc[key]
    n_soc = model.n_soc
    if len(rows) != model.n_temp:
        raise ValueError("%s: %d rows, expected one per temperature (%d)" % (key, len(rows), model.n_temp))
    out = array("f", bytes(4 * model.n_temp * n_soc))
    for t in range(model.n_temp):
        row = _check_row(rows[t], key, n_soc)
        for i in range(n_soc):
            out[t * n_soc + i] = row[i]
    return out


def from_doc(doc):
    """CellModel of a "soxbms-cell/1" document (json.load of models/board/<name>.json). Each key is read once
    (engine/sox.py lets each value go as it is read)."""
    if doc.get("format") != FORMAT:
        raise ValueError("model format %r, expected %r" % (doc.get("format"), FORMAT))
    model = CellModel(doc["name"], doc["capacity_Ah"], doc["coulombic_efficiency"], doc["hyst_rate_per_As"],
                      doc["resistance_ea_J_per_mol"], doc["soc"], doc["temp_C"])
    tables = [_table(doc, key, model) for key in TS_TABLES]
    model.ocv, model.r0, model.r1, model.c1, model.r2, model.c2 = tables
    model.hyst = array("f", _check_row(doc["hyst_V"], "hyst_V", model.n_soc))
    model.dudt = array("f", _check_row(doc["dudt_V_per_K"], "dudt_V_per_K", model.n_soc))
    if doc.get("i0_A") is not None:
        model.set_i0(_table(doc, "i0_A", model), doc["i0_ea_J_per_mol"])
    return model


def load(path):
    with open(path) as f:
        return from_doc(json.load(f))


# --- the binary companion ---------------------------------------------------------------------------


def binary_payload_bytes(n_name, n_soc, n_temp, kinetic):
    """Payload bytes of a companion with a name of n_name bytes on an n_soc x n_temp grid."""
    return n_name + 8 * (BINARY_SCALARS + n_soc + n_temp) + 4 * ((7 if kinetic else 6) * n_temp * n_soc + 2 * n_soc)


def _file_crc(path):
    """CRC-32 of the file at path, read in small pieces."""
    crc = 0
    chunk = bytearray(_CHUNK_BYTES)
    view = memoryview(chunk)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(chunk)
            if not n:
                return crc
            crc = binascii.crc32(view[:n], crc)


def read(path, source=None):
    """CellModel of a binary companion (format above). source: the JSON file it must have been made from (its
    CRC-32 is checked; None: not checked). ValueError naming the file for another format or version, a size that
    does not match the header (truncated), a CRC mismatch (damaged) or another source; OSError when unreadable."""
    with open(path, "rb") as f:
        head = f.read(BINARY_HEADER_BYTES)
        if len(head) < BINARY_HEADER_BYTES or head[:4] != BINARY_MAGIC:
            raise ValueError("%s: not a binary cell model (no %r header)" % (path, BINARY_MAGIC))
        _, version, flags, n_soc, n_temp, n_name, _, source_crc, n_payload = struct.unpack(BINARY_HEADER, head)
        if version != BINARY_VERSION or sys.byteorder != "little":
            raise ValueError("%s: binary cell model version %d, this board reads version %d (%s-endian)" % (
                path, version, BINARY_VERSION, sys.byteorder))
        kinetic = flags & FLAG_I0
        size = BINARY_HEADER_BYTES + binary_payload_bytes(n_name, n_soc, n_temp, kinetic) + 4
        found = os.stat(path)[6]
        if found != size or BINARY_HEADER_BYTES + n_payload + 4 != size:
            raise ValueError("%s: %d bytes, expected %d for %d SoC x %d temperatures (truncated?)" % (
                path, found, size, n_soc, n_temp))
        # The CRC-32 of data followed by its own CRC-32 is this constant.
        if _file_crc(path) != 0x2144DF1C:
            raise ValueError("%s: CRC mismatch (damaged)" % path)
        if source is not None and _file_crc(source) != source_crc:
            raise ValueError("%s was made from another %s: write it again with python -m host.boardmodel "
                             "--binary %s" % (path, source, source))
        name = str(f.read(n_name), "utf-8")
        scalars = array("d", bytes(8 * BINARY_SCALARS))
        soc = array("d", bytes(8 * n_soc))
        temps = array("d", bytes(8 * n_temp))
        for buf in (scalars, soc, temps):
            f.readinto(buf)
        # The arrays are made from zero images, one per size made before them all, so that the arrays lie next to
        # each other and the images leave one gap, not one beside every array.
        table_zeros = bytes(4 * n_temp * n_soc)
        row_zeros = bytes(4 * n_soc)
        tables = [array("f", table_zeros) for _ in range(7 if kinetic else 6)]
        hyst = array("f", row_zeros)
        dudt = array("f", row_zeros)
        for buf in tables:
            f.readinto(buf)
        f.readinto(hyst)
        f.readinto(dudt)
    try:
        model = CellModel(name, scalars[0], scalars[1], scalars[2], scalars[3], soc, temps)
    except ValueError as e:
        raise ValueError("%s: %s" % (path, e)) from None
    model.ocv, model.r0, model.r1, model.c1, model.r2, model.c2 = tables[:6]
    model.hyst = hyst
    model.dudt = dudt
    if kinetic:
        model.set_i0(tables[6], scalars[4])
    return model


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

    def soc_at(self, cell, target_V, branch=0.0):
        """The SoC s where OCV(s) + branch·M(s) = target_V (branch: +1 the charge branch, −1 the discharge branch, 0 the
        OCV), at the cell's temperature (from self.params): exact on the piecewise-linear tables, by bisection over
        the grid points then the segment's line; held at the grid's ends."""
        grid = self.model.soc
        hyst = self.model.hyst
        lo = 0
        hi = len(grid) - 1
        self.ocv_at(cell, grid[lo])
        v_lo = self.ocv + branch * hyst[lo]
        if target_V <= v_lo:
            return grid[lo]
        self.ocv_at(cell, grid[hi])
        v_hi = self.ocv + branch * hyst[hi]
        if target_V >= v_hi:
            return grid[hi]
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            self.ocv_at(cell, grid[mid])
            v = self.ocv + branch * hyst[mid]
            if v <= target_V:
                lo = mid
                v_lo = v
            else:
                hi = mid
                v_hi = v
        return grid[lo] + (target_V - v_lo) / (v_hi - v_lo) * (grid[hi] - grid[lo])
