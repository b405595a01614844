"""Sensors of the HIL rig: true cell physics in, imperfect integer wire readings out.

Every coefficient comes from the ranges file (ranges.json beside this module, one cited range per
coefficient): `SensorSuite` draws each cell's values once, uniformly, from a seeded generator. The
draw is hidden from the firmware (it only sees readings) and open to tests as `SensorSuite.drawn`.

A reading passes two stages, both vectorised over cells:
1. physics -> sensor input, an affine map of a few per-cell features (SoC, SoH loss, temperature
   rise, generated gas, lagged sensor states): NTC thermal lag on the can, gas-sensor response, can
   strain and internal pressure from swelling, heat and gas, ultrasonic ToF and amplitude, Bragg
   wavelengths of a strain grating and a strain-free reference grating;
2. sensor input -> wire integer, the same for every channel: gain error, offset, slow linear drift,
   white noise, rare spikes, quantisation, clipping to the wire range and dropouts.
Absent readings are flagged in masks and filled with ABSENT, never 0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from soxcommon import wire

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

DEFAULT_RANGES_PATH = Path(__file__).with_name("ranges.json")
T_REF_C = 25.0  # every coefficient in the ranges file is quoted at this temperature
KELVIN = 273.15
GAS_CONSTANT_J_PER_MOL_K = 8.314462618
ABSENT = -(1 << 62)  # fill of absent readings: outside every wire range, so it cannot pass for a value

_WIRE_LIMITS = {q[1]: (q[4], q[5]) for q in wire.CELL_QUANTITIES + wire.PACK_QUANTITIES}

# Per-cell channels, in this order everywhere: (Readings field, ranges section, unit in the ranges
# file, wire units per file unit).
CELL_CHANNELS = (
    ("voltage_mV", "voltage", "mV", 1.0),
    ("temp_dC", "temperature", "K", 10.0),
    ("pressure_Pa", "pressure", "Pa", 1.0),
    ("tof_ns", "tof", "ns", 1.0),
    ("amplitude_bp", "amplitude", "bp", 1.0),
    ("fbg_pm", "fbg", "pm", 1.0),
    ("fbg_ref_pm", "fbg_ref", "pm", 1.0),
    ("gas_ppm", "gas", "ppm", 1.0),
)
CELL_FIELDS = tuple(c[0] for c in CELL_CHANNELS)
WIRE_CELL_FIELDS = tuple(q[1] for q in wire.CELL_QUANTITIES)  # per-cell layout of a sample reply
PHYSICS_SECTIONS = ("mechanics", "acoustics", "fbg_optics")

# Coefficients every channel has: generic name -> key in a ranges section of unit {u}.
IMPERFECTION_KEYS = {"offset": "offset_{u}", "gain_error": "gain_error", "noise_rms": "noise_{u}_rms",
                     "quant": "quant_{u}", "drift_per_h": "drift_{u}_per_h", "dropout_prob": "dropout_prob",
                     "spike_prob": "spike_prob", "spike": "spike_{u}"}

# Per-cell features; every sensor input is an affine function of them (see _physics_map).
FEATURES = ("one", "voltage_V", "ntc_C", "rise_K", "soc", "soh_loss", "gas_mol_K", "gas_sensor_ppm")
_F = {name: i for i, name in enumerate(FEATURES)}


# --- ranges file ---------------------------------------------------------------------------------

def load_ranges(path: Path | str = DEFAULT_RANGES_PATH) -> dict[str, Any]:
    """The ranges file, checked: every range has min <= max and cites known sources."""
    ranges: dict[str, Any] = json.loads(Path(path).read_text())
    for name, section in sections(ranges).items():
        for key, entry in range_entries(section).items():
            if not entry["min"] <= entry["max"]:
                raise ValueError(f"{path}: {name}.{key}: min > max")
            cited = entry.get("source") or []
            if not cited or any(s not in ranges["sources"] for s in cited):
                raise ValueError(f"{path}: {name}.{key}: source missing or unknown: {cited}")
    return ranges


def sections(ranges: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Sections that are drawn, by name; "current" is the sensor the file selects (shunt or Hall)."""
    current = ranges["current"]
    names = [c[1] for c in CELL_CHANNELS] + list(PHYSICS_SECTIONS)
    return {"current": current[current["sensor"]]} | {name: ranges[name] for name in names}


def range_entries(section: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The {min, max, source} entries of a section, by key."""
    return {k: v for k, v in section.items() if isinstance(v, dict) and "min" in v}


# --- physics -> sensor input ---------------------------------------------------------------------

@dataclass
class Truth:
    """True state of the module over the interval just elapsed (held constant over it)."""

    current_A: float  # pack current, > 0 charges
    voltage_V: FloatArray  # per cell, terminal voltage
    temp_C: FloatArray  # per cell, can surface
    soc: FloatArray  # per cell, 0..1
    soh: FloatArray  # per cell, capacity / rated capacity, 0..1
    gas_ppm: FloatArray | None = None  # per cell, vented gas at its gas sensor above the ambient baseline
    gas_mol: FloatArray | None = None  # per cell, gas generated inside the can (abuse), cumulative
    electronics_C: float = T_REF_C  # current-sensor temperature: its offset drifts with it


@dataclass(frozen=True)
class FbgCoeffs:
    """Calibration of a strain grating and its strain-free reference grating (arrays over cells)."""

    lambda0_pm: FloatArray  # strain grating, strain-free, at T_REF_C
    ref_lambda0_pm: FloatArray
    temp_sens_pm_per_K: FloatArray
    ref_temp_sens_pm_per_K: FloatArray
    strain_sens_pm_per_ue: FloatArray


def fbg_forward(coeffs: FbgCoeffs, temp_C: ArrayLike, strain_ue: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """True Bragg wavelengths (strain grating, reference grating), pm: lambda = lambda0 + kT dT + ke strain."""
    rise_K = np.asarray(temp_C, dtype=float) - T_REF_C
    strain_pm = (coeffs.lambda0_pm + coeffs.temp_sens_pm_per_K * rise_K
                 + coeffs.strain_sens_pm_per_ue * np.asarray(strain_ue, dtype=float))
    return strain_pm, coeffs.ref_lambda0_pm + coeffs.ref_temp_sens_pm_per_K * rise_K


def separate(fbg_pm: ArrayLike, ref_pm: ArrayLike, coeffs: FbgCoeffs) -> tuple[FloatArray, FloatArray]:
    """(delta_T_K from T_REF_C, strain_ue) from the two gratings: the reference sees temperature only,
    so dT = (ref - ref_lambda0) / kT_ref, then strain = (fbg - lambda0 - kT dT) / ke."""
    delta_T_K = (np.asarray(ref_pm, dtype=float) - coeffs.ref_lambda0_pm) / coeffs.ref_temp_sens_pm_per_K
    strain_ue = ((np.asarray(fbg_pm, dtype=float) - coeffs.lambda0_pm - coeffs.temp_sens_pm_per_K * delta_T_K)
                 / coeffs.strain_sens_pm_per_ue)
    return delta_T_K, strain_ue


def _physics_map(d: Mapping[str, FloatArray], n: int) -> tuple[FloatArray, FloatArray]:
    """(channel, feature, cell) coefficients of the sensor inputs, and (feature, cell) of the can strain."""

    def affine(**terms: Any) -> FloatArray:
        row = np.zeros((len(FEATURES), n))
        for feature, coeff in terms.items():
            row[_F[feature]] = coeff
        return row

    t_ref_K = T_REF_C + KELVIN
    sealed_Pa, free_volume_m3 = d["mechanics.sealed_Pa"], d["mechanics.free_volume_mL"] * 1e-6
    swelling_ue = d["mechanics.swelling_ue_at_full"]
    # Headspace sealed at p0, heated at constant volume, plus generated gas n: p = p0 T / T_ref + n R T / V.
    overpressure_Pa = affine(rise_K=sealed_Pa / t_ref_K, gas_mol_K=GAS_CONSTANT_J_PER_MOL_K / free_volume_m3)
    # The swelling jelly roll adds contact pressure in proportion to its strain.
    pressure_Pa = affine(one=sealed_Pa, soc=d["mechanics.contact_Pa_per_ue"] * swelling_ue) + overpressure_Pa
    # Can hoop strain: swelling (linear in SoC) + thermal expansion + thin-wall response to overpressure.
    strain_ue = (affine(soc=swelling_ue, rise_K=d["mechanics.can_expansion_ue_per_K"])
                 + d["mechanics.can_hoop_ue_per_MPa"] * 1e-6 * overpressure_Pa)
    fbg_pm = (affine(one=d["fbg_optics.lambda0_pm"], rise_K=d["fbg_optics.temp_sens_pm_per_K"])
              + d["fbg_optics.strain_sens_pm_per_ue"] * strain_ue)
    ref_pm = affine(one=d["fbg_optics.ref_lambda0_pm"], rise_K=d["fbg_optics.ref_temp_sens_pm_per_K"])
    # Ultrasound: ToF shortens as SoC rises (Hsieh 2015), lengthens with ageing and heat; the
    # amplitude rises by percents with SoC and falls with ageing.
    tof_ns = affine(one=d["acoustics.tof_base_ns"], soc=d["acoustics.tof_soc_ns"],
                    soh_loss=d["acoustics.tof_soh_loss_ns"], rise_K=d["acoustics.tof_tc_ns_per_K"])
    amplitude_bp = d["acoustics.amp_base_bp"] * affine(one=1.0, soc=d["acoustics.amp_soc_frac"],
                                                       soh_loss=-d["acoustics.amp_soh_loss_frac"],
                                                       rise_K=d["acoustics.amp_tc_frac_per_K"])
    inputs = [affine(voltage_V=1000.0), affine(ntc_C=1.0), pressure_Pa, tof_ns, amplitude_bp, fbg_pm, ref_pm,
              affine(gas_sensor_ppm=1.0)]
    return np.stack(inputs), strain_ue


class FirstOrderLag:
    """Sensor response y' = (x - y) / tau, stepped exactly for an input held over dt:
    y += (x - y) (1 - exp(-dt / tau)). Starts in equilibrium with its first input."""

    def __init__(self, tau_s: FloatArray) -> None:
        self.tau_s = tau_s
        self.state: FloatArray | None = None
        self._dt_s = -1.0
        self._weight = np.zeros_like(tau_s)

    def step(self, dt_s: float, x: FloatArray) -> FloatArray:
        if self.state is None:
            self.state = np.array(x, dtype=float)
            return self.state
        if dt_s != self._dt_s:  # the rig steps with a fixed dt: compute the weight once
            self._dt_s, self._weight = dt_s, -np.expm1(-dt_s / self.tau_s)
        self.state += (x - self.state) * self._weight
        return self.state


# --- sensor input -> wire integer ----------------------------------------------------------------

class ImperfectChannels:
    """The imperfections every channel shares, on a flat vector of channels; every coefficient is an
    array of that length, in the channel's file unit:
        y = pivot + (x - pivot)(1 + gain) + offset + drift t + noise z,  z ~ N(0, 1)
        y += -+spike with probability spike_prob;  y = round(y / quant) quant;  clip to the wire range;
        absent with probability dropout_prob."""

    def __init__(self, coeffs: Mapping[str, FloatArray], pivot: FloatArray, wire_per_unit: FloatArray,
                 lo_wire: FloatArray, hi_wire: FloatArray, rng: np.random.Generator) -> None:
        self._gain = 1.0 + coeffs["gain_error"]
        self._drawn_offset = coeffs["offset"] - pivot * coeffs["gain_error"]  # pivot folded into the offset
        self._offset = self._drawn_offset.copy()
        self._drift_per_h = coeffs["drift_per_h"]
        self._drawn_noise_rms = coeffs["noise_rms"]
        self._noise_rms = self._drawn_noise_rms.copy()
        self._inv_quant = 1.0 / coeffs["quant"]
        self._quant_wire = coeffs["quant"] * wire_per_unit
        self._whole_wire_steps = bool(np.all(self._quant_wire == np.rint(self._quant_wire)))
        self._spike_prob = coeffs["spike_prob"]
        self._spike = coeffs["spike"]
        self._dropout_prob = coeffs["dropout_prob"]
        self._lo, self._hi = lo_wire, hi_wire
        self._rng = rng

    def degrade(self, index: int, offset_shift: float = 0.0, noise_factor: float = 1.0) -> None:
        """Channel `index` with its drawn offset shifted and its drawn noise rms scaled (a sensor fault);
        the defaults restore it."""
        self._offset[index] = self._drawn_offset[index] + offset_shift
        self._noise_rms[index] = self._drawn_noise_rms[index] * noise_factor

    def sample(self, x: FloatArray, t_h: float) -> tuple[IntArray, BoolArray]:
        """(wire integers with ABSENT where absent, present mask) for true inputs x."""
        y = x * self._gain
        y += self._offset
        y += self._drift_per_h * t_h
        z = self._rng.standard_normal(x.shape)
        z *= self._noise_rms
        y += z
        u = self._rng.random((2, *x.shape))
        hit = u[0] < self._spike_prob
        if np.count_nonzero(hit):  # on a hit u[0] is uniform on [0, spike_prob): its lower half spikes down
            y[hit] += np.where(u[0][hit] < 0.5 * self._spike_prob[hit], -self._spike[hit], self._spike[hit])
        y *= self._inv_quant
        np.rint(y, out=y)
        y *= self._quant_wire
        if not self._whole_wire_steps:
            np.rint(y, out=y)
        np.maximum(y, self._lo, out=y)
        np.minimum(y, self._hi, out=y)
        values = y.astype(np.int64)
        present = u[1] >= self._dropout_prob
        if np.count_nonzero(present) < present.size:
            values[~present] = ABSENT
        return values, present


# --- the suite -----------------------------------------------------------------------------------

@dataclass(slots=True)
class Readings:
    """One sample in wire units. Arrays are per cell; where `present[field]` is False the reading is
    absent and the array holds ABSENT. fbg_ref_pm and gas_ppm are not on the wire (yet)."""

    current_mA: int | None
    voltage_mV: IntArray
    temp_dC: IntArray
    pressure_Pa: IntArray
    tof_ns: IntArray
    amplitude_bp: IntArray
    fbg_pm: IntArray
    fbg_ref_pm: IntArray
    gas_ppm: IntArray
    present: dict[str, BoolArray]

    def wire_rows(self) -> list[list[int | None]]:
        """Per cell [voltage_mV, temp_dC, pressure_Pa, tof_ns, amplitude_bp, fbg_pm], None if absent."""
        columns = [getattr(self, f).tolist() for f in WIRE_CELL_FIELDS]
        return [[None if v == ABSENT else v for v in row] for row in zip(*columns, strict=True)]


class SensorSuite:
    """The sensors of a module of n_cells cells in series and its pack current sensor."""

    def __init__(self, n_cells: int, seed: int, ranges_path: Path | str = DEFAULT_RANGES_PATH) -> None:
        if not 1 <= n_cells <= wire.MAX_CELLS:
            raise ValueError(f"n_cells must be 1..{wire.MAX_CELLS}")
        self.n_cells = n_cells
        self.ranges = load_ranges(ranges_path)
        draw_seq, read_seq = np.random.SeedSequence(seed).spawn(2)  # the draw does not depend on reads
        draw_rng = np.random.default_rng(draw_seq)
        # Drawn coefficients, "section.key" -> array over cells (over the one pack sensor for current).
        self.drawn: dict[str, FloatArray] = {
            f"{name}.{key}": draw_rng.uniform(entry["min"], entry["max"], 1 if name == "current" else n_cells)
            for name, section in sections(self.ranges).items()
            for key, entry in range_entries(section).items()}

        self.t_s = 0.0
        self._ntc_lag = FirstOrderLag(self.drawn["temperature.tau_s"])
        self._gas_lag = FirstOrderLag(self.drawn["gas.tau_s"])
        self._map, self._strain_map = _physics_map(self.drawn, n_cells)
        self._current_offset_tc_A_per_K = float(self.drawn["current.offset_tc_A_per_K"][0])
        self._features = np.zeros((len(FEATURES), n_cells))
        self._features[_F["one"]] = 1.0
        # One flat bank: the per-cell channels row after row, then the pack current.
        self._x = np.empty(len(CELL_CHANNELS) * n_cells + 1)
        self._x_cells = self._x[:-1].reshape(len(CELL_CHANNELS), n_cells)
        self._bank = self._make_bank(np.random.default_rng(read_seq))
        self.last: Readings | None = None  # the last read()'s readings, with the channels not on the wire

    def _make_bank(self, rng: np.random.Generator) -> ImperfectChannels:
        n = self.n_cells
        current_unit = sections(self.ranges)["current"]["unit"]
        rows = [(section, unit, per_unit, *self._wire_limits(field))
                for field, section, unit, per_unit in CELL_CHANNELS]
        rows.append(("current", current_unit, 1000.0, *_WIRE_LIMITS["current_mA"]))

        def flat(per_row: list[Any]) -> FloatArray:
            return np.concatenate([np.broadcast_to(np.asarray(v, dtype=float), n) for v in per_row[:-1]]
                                  + [np.asarray(per_row[-1], dtype=float).reshape(1)])

        coeffs = {g: flat([self.drawn[f"{section}.{key.format(u=unit)}"] for section, unit, *_ in rows])
                  for g, key in IMPERFECTION_KEYS.items()}
        pivot = flat([T_REF_C if r[0] == "temperature" else 0.0 for r in rows])  # NTC error pivots at 25 degC
        return ImperfectChannels(coeffs, pivot, flat([r[2] for r in rows]), flat([r[3] for r in rows]),
                                 flat([r[4] for r in rows]), rng)

    def _wire_limits(self, field: str) -> tuple[float, float | FloatArray]:
        if field == "fbg_ref_pm":
            return _WIRE_LIMITS["fbg_pm"]  # same interrogator and range as the strain grating
        if field == "gas_ppm":
            return 0.0, self.drawn["gas.full_scale_ppm"]
        return _WIRE_LIMITS[field]

    def degrade(self, field: str, cell: int, offset_shift: float = 0.0, noise_factor: float = 1.0) -> None:
        """A sensor fault on one channel (a CELL_FIELDS field and cell, or "current_mA" with any cell): its
        offset shifted by offset_shift (in the ranges-file unit) and its noise rms times noise_factor; the
        defaults restore the drawn values."""
        n = self.n_cells
        index = len(CELL_CHANNELS) * n if field == "current_mA" else CELL_FIELDS.index(field) * n + cell
        self._bank.degrade(index, offset_shift, noise_factor)

    def fbg_calibration(self) -> FbgCoeffs:
        """The gratings' calibration sheet (a user knows it; it is not a hidden imperfection)."""
        d = self.drawn
        return FbgCoeffs(d["fbg_optics.lambda0_pm"], d["fbg_optics.ref_lambda0_pm"],
                         d["fbg_optics.temp_sens_pm_per_K"], d["fbg_optics.ref_temp_sens_pm_per_K"],
                         d["fbg_optics.strain_sens_pm_per_ue"])

    def _fill_features(self, truth: Truth) -> FloatArray:
        """Features of `truth` that need no sensor state (the lagged rows keep their last value)."""
        shape = (self.n_cells,)
        if not truth.voltage_V.shape == truth.temp_C.shape == truth.soc.shape == truth.soh.shape == shape:
            raise ValueError(f"truth arrays must have shape {shape}")
        f = self._features
        f[_F["voltage_V"]] = truth.voltage_V
        np.subtract(truth.temp_C, T_REF_C, out=f[_F["rise_K"]])
        f[_F["soc"]] = truth.soc
        np.subtract(1.0, truth.soh, out=f[_F["soh_loss"]])
        if truth.gas_mol is None:
            f[_F["gas_mol_K"]] = 0.0
        else:
            np.multiply(truth.gas_mol, truth.temp_C + KELVIN, out=f[_F["gas_mol_K"]])
        return f

    def can_strain_ue(self, truth: Truth) -> FloatArray:
        """True can hoop strain the strain grating sees, ue (swelling + thermal expansion + gas)."""
        strain: FloatArray = np.einsum("kn,kn->n", self._strain_map, self._fill_features(truth))
        return strain

    def sensor_inputs(self, truth: Truth) -> FloatArray:
        """Noiseless sensor inputs, (channel in CELL_CHANNELS order, cell), in ranges-file units; the
        lagged channels show the sensors' state (before the first read: in equilibrium with truth)."""
        f = self._fill_features(truth)
        if self._ntc_lag.state is None:
            f[_F["ntc_C"]] = truth.temp_C
            f[_F["gas_sensor_ppm"]] = self._at_gas_sensor_ppm(truth)
        inputs: FloatArray = np.einsum("ckn,kn->cn", self._map, f)
        return inputs

    def _at_gas_sensor_ppm(self, truth: Truth) -> FloatArray:
        baseline_ppm = self.drawn["gas.baseline_ppm"]
        return baseline_ppm if truth.gas_ppm is None else baseline_ppm + truth.gas_ppm

    def read(self, dt_s: float, truth: Truth) -> Readings:
        """Advance the sensors' state by dt_s under `truth` and sample every channel once."""
        if dt_s < 0:
            raise ValueError("dt_s must be >= 0")
        self.t_s += dt_s
        f = self._fill_features(truth)
        f[_F["ntc_C"]] = self._ntc_lag.step(dt_s, truth.temp_C)
        f[_F["gas_sensor_ppm"]] = self._gas_lag.step(dt_s, self._at_gas_sensor_ppm(truth))
        np.einsum("ckn,kn->cn", self._map, f, out=self._x_cells)
        # The current sensor's offset drifts with the temperature of its electronics.
        self._x[-1] = truth.current_A + self._current_offset_tc_A_per_K * (truth.electronics_C - T_REF_C)

        values, present = self._bank.sample(self._x, self.t_s / 3600.0)
        cells = values[:-1].reshape(len(CELL_CHANNELS), self.n_cells)
        cells_present = present[:-1].reshape(len(CELL_CHANNELS), self.n_cells)
        self.last = Readings(
            current_mA=int(values[-1]) if present[-1] else None,
            voltage_mV=cells[0], temp_dC=cells[1], pressure_Pa=cells[2], tof_ns=cells[3], amplitude_bp=cells[4],
            fbg_pm=cells[5], fbg_ref_pm=cells[6], gas_ppm=cells[7],
            present=dict(zip(CELL_FIELDS, cells_present, strict=True)))
        return self.last
