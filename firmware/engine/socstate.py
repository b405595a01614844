# The estimator's state across a reset or power cut (issue 5): per cell the EKF's x, h, P and capacity and the SoH
# tracker's learning, saved atomically at intervals chosen from a flash-wear budget; and, when no valid state exists,
# a start from the open-circuit voltage. MicroPython and CPython subset.
#
# File, little-endian: b"SXST", version u16, n_cells u16, t_ms u32 (the sample time of the state), payload bytes
# u32, name length u8, the cell model's name; the payload, EKF_ARRAYS then SOH_ARRAYS as their raw bytes (float32
# and int32 on the board); last a CRC-32 of everything before it. It is written to PATH.tmp, then renamed over PATH
# (as engine/nvstate.py): a kill or power cut leaves the old file or the new one, and a half-written .tmp is never
# read. load() refuses, and says why, in this order: "missing", "short" (fewer bytes than the header says), "format"
# (not a state file), "crc", "version", "model" (another cell model's name), "cells" (another cell count), "size"
# (another payload layout, e.g. an array added); it touches the estimator only when every check passed. A save
# writes from the live arrays and a fixed header buffer: no copy of the state is made.
#
# Flash-wear budget (one save = one new file on littlefs):
#   N = 100,000  program/erase cycles per 4 KiB sector, the minimum of the Winbond W25Q128JV (16 MiB SPI NOR)
#                datasheet ("Min. 100K Program-Erase cycles per sector")
#   E = 1.25     erases per save: littlefs is copy-on-write, so the file (1.7 KB for 16 cells: one block) goes to a
#                freshly erased block, and the create, close and rename commits go to the directory's metadata pair,
#                which compacts (one erase) every few saves; 1/4 erase per save for it is a margin over ~1/10
#   B = 512      free blocks (2 MiB of the 16 MiB kept free); littlefs's allocator walks the whole free space, so
#                the saves wear all free blocks evenly (its DESIGN.md, "Wear leveling": dynamic wear levelling)
#   L = 10 years = 3.156e8 s
#   minimum mean interval between saves  T = L·E / (B·N) = 3.156e8 · 1.25 / (512 · 1e5) = 7.7 s (MIN_MEAN_S)
# Policy (SavePolicy): save when any cell's SoC moved by SOC_STEP = 0.5 % since the last save, or MAX_S = 600 s
# passed, but never sooner than MIN_S = 10 s after the last save. MIN_S >= T, so no duty can break the budget: the
# worst case, a save every 10 s for 10 years (any sustained current above 1.8C: 24/7 2C cycling moves 0.5 % in 9 s),
# is 3.16e7 saves · 1.25 = 3.9e7 erases, 77 % of B·N = 5.12e7. At rest MAX_S alone: 1.3 % of the budget.
# The SoC a kill loses is what the cell moved since the last save: at most max(SOC_STEP, r·MIN_S) + r·dt, with r =
# |I|/Q per second and dt the sample period; at 2C (r = 0.056 %/s) and 1 Hz 0.61 %, and within issue 5's 1 % up to
# 3.3C sustained. MAX_S keeps the SoH and RC states at most 10 min old at rest. After a resume the saved state is
# stale: its SoC by up to about SOC_STEP, and its RC voltages by whatever the current did since the save (a save
# during a rest, a kill after 8 s of 2C charge: v1 alone is then off by R1·I, tens of mV). SavePolicy.widen() adds
# SOC_STEP² to each cell's SoC variance and p0_v (the filter's start variance of v1, v2) to v1's and v2's, so the
# voltage misfit after a resume goes to the RC states and not into the SoC (without the latter, resumed runs drifted
# up to 6.7 % from the uninterrupted one in tests/firmware/test_socstate.py's kill test; with it, at most 0.7 % at
# 29 seeded kill points under 2C and more).
#
# OCV start (ocv_start): the reading V at pack current I, less the instantaneous drop and the middle of the RC
# voltages' range (0 when the current just began, (R1 + R2)·I when steady):
#   U = V − d − (R1 + R2)·I/2,  d = R0·I + B·asinh(I/(2·I0))   (R0, R1, R2, I0 at the start's SoC: two passes)
# The hysteresis state h in [−1, 1] is unknown, so U = OCV(s) + M(s)·h holds for every s in [s_lo, s_hi], with s_lo
# on the charge branch, OCV(s_lo) + M(s_lo) = U, and s_hi on the discharge branch, OCV(s_hi) − M(s_hi) = U (exact
# inversions of the piecewise-linear tables at the cell's temperature). The start takes the band's middle,
# soc = (s_lo + s_hi)/2, with the h that makes it agree with the reading, h = (U − OCV(soc))/M(soc), so the filter's
# first prediction is the reading; s_lo = s_hi without hysteresis. Variance: h uniform over the band, plus the other
# voltage errors through the OCV's secant around soc:
#   var = (s_hi − s_lo)²/12 + ((s₊ − s₋)/2)²,  OCV(s±) = OCV(soc) ± σ_V
#   σ_V² = OCV_SIGMA_V² + ((R1 + R2)·I)²/12 + (R_REL_SIGMA·d)²
# (one OCV reading's error, engine/soh.py; the RC voltage uniform on its range; the model's resistance against the
# cell's), at most p0_soc (knowing nothing). A wide hysteresis band, a flat OCV and load all widen it. A current not
# read is taken as zero.

import binascii
import math
import os
import struct
from array import array

from engine.soh import OCV_SIGMA_V
from soxcommon.frame import ABSENT

MAGIC = b"SXST"
VERSION = 1
HEADER_BYTES = 17  # magic, version, n_cells, t_ms, payload bytes, name length
CHUNK_BYTES = 64  # load() checks the CRC in chunks of this size
EKF_ARRAYS = ("x", "h", "P", "capacity_As")
SOH_ARRAYS = ("c_yy", "c_xy", "anchor_soc", "anchor_var", "charge_Ah", "n_pairs", "k_r", "p_r", "n_steps")

PE_CYCLES = 100000
ERASES_PER_SAVE = 1.25
POOL_BLOCKS = 512
LIFETIME_S = 10 * 365.25 * 86400
MIN_MEAN_S = LIFETIME_S * ERASES_PER_SAVE / (POOL_BLOCKS * PE_CYCLES)
SOC_STEP = 0.005
MIN_S = 10.0
MAX_S = 600.0

R_REL_SIGMA = 0.3  # the board model's resistance against a cell's: unit spread and ageing up to ~+50 %


class SocState:
    """Save and load of one estimator's state at `path`. The arrays are taken at construction: the estimator must
    keep them (it does: it only writes into them)."""

    def __init__(self, path, ekf, soh):
        self.path = path
        self.tmp = path + ".tmp"
        self.arrays = [getattr(ekf, k) for k in EKF_ARRAYS] + [getattr(soh, k) for k in SOH_ARRAYS]
        self.name = ekf.model.name.encode()
        self.n_cells = ekf.n_cells
        self.payload_bytes = 0
        for a in self.arrays:
            self.payload_bytes += len(bytes(a))
        self.head = bytearray(HEADER_BYTES + len(self.name))
        struct.pack_into("<4sHHIIB", self.head, 0, MAGIC, VERSION, self.n_cells, 0, self.payload_bytes,
                         len(self.name))
        self.head[HEADER_BYTES:] = self.name
        self.word = bytearray(4)  # the CRC
        self.chunk = bytearray(CHUNK_BYTES)
        self.t_ms = 0  # of the state last saved or loaded

    def file_bytes(self):
        return len(self.head) + self.payload_bytes + 4

    def save(self, t_ms):
        """Write the state of sample time t_ms: PATH.tmp, then renamed over PATH."""
        head = self.head
        struct.pack_into("<I", head, 8, t_ms)
        crc = binascii.crc32(head)
        for a in self.arrays:
            crc = binascii.crc32(a, crc)
        struct.pack_into("<I", self.word, 0, crc)
        with open(self.tmp, "wb") as f:
            f.write(head)
            for a in self.arrays:
                f.write(a)
            f.write(self.word)
        os.rename(self.tmp, self.path)
        self.t_ms = t_ms

    def load(self):
        """Restore the saved state into the estimator: None when restored, else why not (see the header)."""
        try:
            f = open(self.path, "rb")
        except OSError:
            return "missing"
        with f:
            reason = self._check(f)
            if reason is None:
                f.seek(len(self.head))
                for a in self.arrays:
                    f.readinto(a)
        return reason

    def _check(self, f):
        """Every check of load() on the open file; sets t_ms."""
        head = self.chunk
        if f.readinto(head) < HEADER_BYTES:
            return "short"
        magic, version, n_cells, t_ms, payload, name_len = struct.unpack_from("<4sHHIIB", head, 0)
        if magic != MAGIC:
            return "format"
        crc = binascii.crc32(memoryview(head)[:HEADER_BYTES])
        f.seek(HEADER_BYTES)
        name = f.read(name_len)
        if len(name) != name_len:
            return "short"
        crc = binascii.crc32(name, crc)
        left = payload
        while left:
            n = f.readinto(head) if left >= CHUNK_BYTES else f.readinto(memoryview(head)[:left])
            if not n:
                return "short"
            crc = binascii.crc32(memoryview(head)[:n], crc)
            left -= n
        if f.readinto(self.word) != 4:
            return "short"
        if struct.unpack_from("<I", self.word, 0)[0] != crc:
            return "crc"
        if version != VERSION:
            return "version"
        if name != self.name:
            return "model"
        if n_cells != self.n_cells:
            return "cells"
        if payload != self.payload_bytes:
            return "size"
        self.t_ms = t_ms
        return None


class SavePolicy:
    """When to save (see the header): due() after each sample, mark() when the state is saved (or started)."""

    def __init__(self, n_cells, soc_step=SOC_STEP, min_s=MIN_S, max_s=MAX_S):
        if not min_s >= MIN_MEAN_S:
            raise ValueError("min_s %.1f s is below the wear budget's mean interval %.1f s" % (min_s, MIN_MEAN_S))
        self.soc_step = soc_step
        self.min_ms = int(min_s * 1000)
        self.max_ms = int(max_s * 1000)
        self.soc_saved = array("f", [0.0] * n_cells)
        self.last_ms = 0

    def mark(self, t_ms, ekf):
        """The state at sample time t_ms is saved, or is the start (which needs no save)."""
        self.last_ms = t_ms
        for cell in range(len(self.soc_saved)):
            self.soc_saved[cell] = ekf.x[4 * cell]

    def due(self, t_ms, ekf):
        elapsed = (t_ms - self.last_ms) & 0xFFFFFFFF  # t_ms is u32 in the stream: it wraps after 49.7 days
        if elapsed < self.min_ms:
            return False
        if elapsed >= self.max_ms:
            return True
        x = ekf.x
        for cell in range(len(self.soc_saved)):
            if abs(x[4 * cell] - self.soc_saved[cell]) >= self.soc_step:
                return True
        return False

    def widen(self, ekf):
        """After a resume (see the header): the saved state is stale, its SoC by up to about soc_step and its RC
        voltages by whatever the current did since; the variances now carry both."""
        var = self.soc_step * self.soc_step
        p0_v = ekf.p0[1]
        P = ekf.P
        for cell in range(len(self.soc_saved)):
            j = 10 * cell
            P[j] += var
            P[j + 4] += p0_v  # v1
            P[j + 7] += p0_v  # v2


def ocv_start(ekf, cell, v_mV, temp_dC):
    """Start the cell from its voltage reading (see the header) at the pack current of ekf.set_current; returns the
    start's SoC variance. No voltage reading: the knowledge-free start of ekf.reset (0.5, p0_soc)."""
    if temp_dC != ABSENT:
        ekf.temp_dC[cell] = temp_dC
    p0_soc = ekf.p0[0]
    if v_mV == ABSENT:
        ekf.reset(cell, 0.5)
        return p0_soc
    lk = ekf.lookup
    cur = ekf.current_A
    soc = 0.5
    for _ in range(2):
        lk.params(cell, soc, ekf.temp_dC[cell])
        drop = lk.r0 * cur
        if ekf.model.kinetic:
            z = cur / (2.0 * lk.i0)
            drop += lk.b_V * math.log(z + math.sqrt(z * z + 1.0))  # asinh
        rc = (lk.r1 + lk.r2) * cur
        u = v_mV * 0.001 - drop - 0.5 * rc
        s_lo = lk.soc_at(cell, u, 1.0)
        s_hi = lk.soc_at(cell, u, -1.0)
        soc = 0.5 * (s_lo + s_hi)
    lk.params(cell, soc, ekf.temp_dC[cell])
    lk.ocv_at(cell, soc)
    ocv = lk.ocv
    h = (u - ocv) / lk.m if lk.m > 0.0 else 0.0
    h = -1.0 if h < -1.0 else 1.0 if h > 1.0 else h
    sigma_V = math.sqrt(OCV_SIGMA_V * OCV_SIGMA_V + rc * rc / 12.0 + (R_REL_SIGMA * drop) ** 2)
    secant = lk.soc_at(cell, ocv + sigma_V, 0.0) - lk.soc_at(cell, ocv - sigma_V, 0.0)
    var = (s_hi - s_lo) ** 2 / 12.0 + 0.25 * secant * secant
    if var > p0_soc:
        var = p0_soc
    ekf.reset(cell, soc)
    ekf.h[cell] = h
    i = 4 * cell
    ekf.x[i + 1] = 0.5 * lk.r1 * cur
    ekf.x[i + 2] = 0.5 * lk.r2 * cur
    ekf.P[10 * cell] = var
    return var
