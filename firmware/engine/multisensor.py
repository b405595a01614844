# Extra SoC measurements for the EKF (engine/ekf.py): contact pressure, can strain from the FBG and ultrasonic time of
# flight, each through a per-cell calibrated linear mapping, applied as sequential scalar Kalman updates to the EKF's
# public state x and covariance P after its voltage update. MicroPython and CPython subset.
#
#   measurement m of a cell:  y_m = a + b·soc + c·dT    dT = T − 25 °C (K)
#     pressure  y = pressure_Pa,   dT from the cell's NTC reading (the EKF's last valid temp_dC)
#     tof       y = tof_ns,        dT from the NTC reading
#     strain    y = strain_ue after the reference-grating separation (hil.sensors.models.separate, the gratings'
#               calibration sheet): dT = (ref − ref_λ0)/kT_ref,  strain = (fbg − λ0 − kT·dT)/ke, and that dT
#   update:   H = [b, 0, 0, 0],  g = P·Hᵀ = b·P[:, 0],  innovation ν = y − (a + b·soc + c·dT),  S = b·g0 + r
#             gated (skipped, counted) when ν² > gate²·S, at most gate_run samples in a row (as the EKF's voltage
#             gate: a spike is one sample, a lasting innovation is the filter's own error and is corrected)
#             K = g/S,  x += K·ν,  P = P − K·gᵀ − g·Kᵀ + S·K·Kᵀ (Joseph form, expanded, upper triangle)
# A reading that is ABSENT (both gratings for strain) updates nothing. The measurement variance, in the channel's unit²:
#   R = r + memory·(s·age_h)²
# r: the variance right after commissioning; s: the sigma of the channel's drift rate (unit per hour); age_h: hours
# since the commissioning fit. A drift is a bias, not white noise: entered as white, it would be averaged down over the
# filter's memory, so its variance counts `memory` times (samples); the channel thus fades to the voltage alone as its
# calibration ages instead of pulling the SoC by its drift. hil/bench_ablation.py says how r, s and memory are made.
#
# Calibration file (JSON, made on the host, format "soxbms-multisensor/1"): "gate", "gate_run", "memory", and
# "cells": one object per cell with "pressure", "strain", "tof": [a, b, c, r, s] each, and "grating": [λ0_pm,
# ref_λ0_pm, kT_pm_per_K, kT_ref_pm_per_K, ke_pm_per_ue]. Coefficients live in float32 arrays; an update allocates
# only its float results (~45 on this port), nothing per cell or channel otherwise.

import json
from array import array

from engine.ekf import soc_measurement
from soxcommon.frame import ABSENT
from soxcommon.stream import EXTRA_CHANNELS

FORMAT = "soxbms-multisensor/1"
MEASUREMENTS = ("pressure", "strain", "tof")
N_COEF = 5  # a, b, c, r, s
N_GRATING = 5
REF_TEMP_DC = 250
# Where each measurement's readings sit in a sample stream's extra channels (soxcommon.stream.EXTRA_CHANNELS).
PRESSURE_CH = EXTRA_CHANNELS.index("pressure_Pa")
TOF_CH = EXTRA_CHANNELS.index("tof_ns")
FBG_CH = EXTRA_CHANNELS.index("fbg_pm")
FBG_REF_CH = EXTRA_CHANNELS.index("fbg_ref_pm")


def load(path):
    with open(path) as f:
        return json.load(f)


class MultiSensor:
    """The enabled measurements of every cell of one SocEkf. Counters per measurement and cell at [m·n + cell]:
    n_used (updates applied), n_gated (skipped by the gate)."""

    def __init__(self, ekf, calibration, enabled, age_h=0.0):
        """calibration: the calibration file's dict; enabled: names of MEASUREMENTS to use (others are ignored);
        age_h: hours from the commissioning fit to the first sample (advance() counts on from there)."""
        n = ekf.n_cells
        if calibration.get("format") != FORMAT:
            raise ValueError("multisensor calibration: format must be %s" % FORMAT)
        cells = calibration["cells"]
        if len(cells) != n:
            raise ValueError("multisensor calibration: %d cells for %d" % (len(cells), n))
        for name in enabled:
            if name not in MEASUREMENTS:
                raise ValueError("multisensor: unknown measurement %s" % name)
        self.ekf = ekf
        self.n_cells = n
        self.enabled = array("b", [1 if name in enabled else 0 for name in MEASUREMENTS])
        self.gate2 = float(calibration["gate"]) ** 2
        self.gate_run = int(calibration["gate_run"])
        self.memory = float(calibration["memory"])
        self.age_h = float(age_h)
        self.drift_scale = self.memory * self.age_h * self.age_h  # memory·age_h²: R = r + s²·drift_scale
        self.coef = array("f", [0.0] * (len(MEASUREMENTS) * N_COEF * n))  # [(m·n + cell)·N_COEF + k]
        self.grating = array("f", [0.0] * (N_GRATING * n))
        for cell in range(n):
            entry = cells[cell]
            for m in range(len(MEASUREMENTS)):
                values = entry[MEASUREMENTS[m]]
                if len(values) != N_COEF or not values[1] != 0.0 or not values[3] > 0.0 or not values[4] >= 0.0:
                    raise ValueError("multisensor calibration: cell %d %s needs [a, b != 0, c, r > 0, s >= 0]"
                                     % (cell, MEASUREMENTS[m]))
                for k in range(N_COEF):
                    self.coef[(m * n + cell) * N_COEF + k] = values[k]
            sheet = entry["grating"]
            if len(sheet) != N_GRATING or not sheet[3] > 0.0 or not sheet[4] > 0.0:
                raise ValueError("multisensor calibration: cell %d grating needs 5 values, kT_ref, ke > 0" % cell)
            for k in range(N_GRATING):
                self.grating[N_GRATING * cell + k] = sheet[k]
        self.n_used = array("i", [0] * (len(MEASUREMENTS) * n))
        self.n_gated = array("i", [0] * (len(MEASUREMENTS) * n))
        self.run_gated = array("i", [0] * (len(MEASUREMENTS) * n))

    def advance(self, dt_s):
        """Once per sample, before its step_cell() calls: the calibration is dt_s older."""
        self.age_h += dt_s / 3600.0
        self.drift_scale = self.memory * self.age_h * self.age_h

    def variance(self, m, cell):
        """R of measurement index m for the cell at the present calibration age."""
        k = (m * self.n_cells + cell) * N_COEF
        s = self.coef[k + 4]
        return self.coef[k + 3] + s * s * self.drift_scale

    def predict(self, m, cell, soc, dT_K):
        """The calibrated mapping a + b·soc + c·dT of measurement index m."""
        k = (m * self.n_cells + cell) * N_COEF
        coef = self.coef
        return coef[k] + coef[k + 1] * soc + coef[k + 2] * dT_K

    def step_cell(self, cell, extra):
        """After the EKF's step_cell(cell) for a sample: extra is the sample's extra readings in soxcommon.stream's
        layout ([channel·n_cells + cell], ABSENT where not delivered)."""
        n = self.n_cells
        enabled = self.enabled
        ntc_dT = (self.ekf.temp_dC[cell] - REF_TEMP_DC) * 0.1
        if enabled[0]:
            v = extra[PRESSURE_CH * n + cell]
            if v != ABSENT:
                self._update(0, cell, v, ntc_dT)
        if enabled[1]:
            fbg = extra[FBG_CH * n + cell]
            ref = extra[FBG_REF_CH * n + cell]
            if fbg != ABSENT and ref != ABSENT:
                g = self.grating
                i = N_GRATING * cell
                dT = (ref - g[i + 1]) / g[i + 3]
                self._update(1, cell, (fbg - g[i] - g[i + 2] * dT) / g[i + 4], dT)
        if enabled[2]:
            v = extra[TOF_CH * n + cell]
            if v != ABSENT:
                self._update(2, cell, v, ntc_dT)

    def _update(self, m, cell, y, dT_K):
        ekf = self.ekf
        x = ekf.x
        u = m * self.n_cells + cell
        k = u * N_COEF
        coef = self.coef
        b = coef[k + 1]
        nu = y - (coef[k] + b * x[4 * cell] + coef[k + 2] * dT_K)
        s = coef[k + 4]
        if soc_measurement(x, ekf.P, cell, b, nu, coef[k + 3] + s * s * self.drift_scale, self.gate2, self.gate_run,
                           self.run_gated, self.n_gated, u):
            self.n_used[u] += 1
