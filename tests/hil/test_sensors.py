"""HIL sensor models: coefficients drawn inside their cited ranges, readings inside the wire ranges,
imperfections with the drawn statistics, sensor dynamics, FBG separation, acoustic trends, absent
readings flagged (never 0), reproducibility, and the ranges file as the only source of coefficients."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hil.sensors import ABSENT, CELL_FIELDS, DEFAULT_RANGES_PATH, SensorSuite, Truth, fbg_forward, separate
from hil.sensors.models import CELL_CHANNELS, IMPERFECTION_KEYS, T_REF_C, load_ranges, range_entries, sections
from soxcommon import wire

WIRE_LIMITS = {q[1]: (q[4], q[5]) for q in wire.CELL_QUANTITIES + wire.PACK_QUANTITIES}
CHANNEL = {c[0]: c for c in CELL_CHANNELS}  # field -> (field, section, unit, wire units per unit)


def truth(n: int, current_A: float = 2.0, voltage_V: float = 3.7, temp_C: float = 25.0, soc: float = 0.5,
          soh: float = 0.95, **kw: Any) -> Truth:
    return Truth(current_A=current_A, voltage_V=np.full(n, voltage_V), temp_C=np.full(n, temp_C),
                 soc=np.full(n, soc), soh=np.full(n, soh), **kw)


def write_ranges(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    ranges = json.loads(DEFAULT_RANGES_PATH.read_text())
    edit(ranges)
    path = tmp_path / "ranges.json"
    path.write_text(json.dumps(ranges))
    return path


def fix(section: dict[str, Any], key: str, value: float) -> None:
    section[key] = {**section[key], "min": value, "max": value}


def no_faults(ranges: dict[str, Any]) -> None:
    for section in sections(ranges).values():
        if "spike_prob" in section:
            fix(section, "spike_prob", 0.0)
            fix(section, "dropout_prob", 0.0)


def ideal(section: dict[str, Any]) -> None:
    """A channel with no offset, gain error, noise or drift (it keeps its quantisation)."""
    unit = section["unit"]
    for generic in ("offset", "gain_error", "noise_rms", "drift_per_h"):
        fix(section, IMPERFECTION_KEYS[generic].format(u=unit), 0.0)


def coeff(suite: SensorSuite, section: str, generic: str) -> np.ndarray:
    unit = sections(suite.ranges)[section]["unit"]
    return suite.drawn[f"{section}.{IMPERFECTION_KEYS[generic].format(u=unit)}"]


def read_many(suite: SensorSuite, t: Truth, n: int, dt_s: float = 0.01) -> tuple[dict[str, np.ndarray], ...]:
    """(values by field, present by field) stacked over n reads; the pack current under "current_mA"."""
    values: dict[str, list[Any]] = {f: [] for f in (*CELL_FIELDS, "current_mA")}
    present: dict[str, list[Any]] = {f: [] for f in values}
    for _ in range(n):
        r = suite.read(dt_s, t)
        for f in CELL_FIELDS:
            values[f].append(getattr(r, f))
            present[f].append(r.present[f])
        values["current_mA"].append([ABSENT if r.current_mA is None else r.current_mA])
        present["current_mA"].append([r.current_mA is not None])
    return {f: np.array(v) for f, v in values.items()}, {f: np.array(p) for f, p in present.items()}


# --- the ranges file -----------------------------------------------------------------------------

def test_every_range_cites_a_known_source() -> None:
    ranges = load_ranges()
    assert ranges["current"]["sensor"] in ("shunt", "hall")
    for name, section in sections(ranges).items():
        entries = range_entries(section)
        assert entries, name
        for key, entry in entries.items():
            assert entry["min"] <= entry["max"], (name, key)
            assert entry["source"] and all(s in ranges["sources"] for s in entry["source"]), (name, key)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drawn_coefficients_lie_inside_their_ranges(seed: int) -> None:
    suite = SensorSuite(wire.MAX_CELLS, seed)
    expected = {f"{name}.{key}": entry for name, section in sections(suite.ranges).items()
                for key, entry in range_entries(section).items()}
    assert set(suite.drawn) == set(expected)
    for key, values in suite.drawn.items():
        assert values.shape == ((1,) if key.startswith("current.") else (wire.MAX_CELLS,)), key
        assert np.all((expected[key]["min"] <= values) & (values <= expected[key]["max"])), key


def test_a_bad_ranges_file_is_refused(tmp_path: Path) -> None:
    path = write_ranges(tmp_path, lambda r: r["voltage"]["offset_mV"].update(min=1.0, max=-1.0))
    with pytest.raises(ValueError, match="min > max"):
        SensorSuite(4, 0, path)
    path = write_ranges(tmp_path, lambda r: r["tof"]["noise_ns_rms"].update(source=["nobody2099"]))
    with pytest.raises(ValueError, match="source"):
        SensorSuite(4, 0, path)


def test_the_ranges_file_is_the_only_source_of_coefficients(tmp_path: Path) -> None:
    def edit(r: dict[str, Any]) -> None:
        no_faults(r)
        ideal(r["voltage"])
        fix(r["voltage"], "offset_mV", 123.0)
        r["current"]["sensor"] = "hall"

    suite = SensorSuite(8, 5, write_ranges(tmp_path, edit))
    assert np.all(suite.drawn["voltage.offset_mV"] == 123.0)
    assert np.all(suite.drawn["current.quant_A"] == suite.ranges["current"]["hall"]["quant_A"]["min"])
    r = suite.read(0.1, truth(8, voltage_V=3.7))
    assert np.all(r.voltage_mV == 3700 + 123)


# --- readings ------------------------------------------------------------------------------------

@pytest.mark.parametrize("state", [
    dict(current_A=5000.0, voltage_V=12.0, temp_C=300.0, soc=1.0, soh=0.0, gas_mol=np.full(32, 1.0),
         gas_ppm=np.full(32, 1e6), electronics_C=120.0),
    dict(current_A=-5000.0, voltage_V=-1.0, temp_C=-80.0, soc=0.0, soh=1.0, electronics_C=-40.0),
    dict(current_A=1.0, voltage_V=3.6, temp_C=30.0, soc=0.5, soh=0.9),
])
def test_every_reading_is_inside_the_wire_ranges(state: dict[str, Any]) -> None:
    suite = SensorSuite(wire.MAX_CELLS, 3)
    values, present = read_many(suite, truth(wire.MAX_CELLS, **state), 300)
    limits = WIRE_LIMITS | {"fbg_ref_pm": WIRE_LIMITS["fbg_pm"], "gas_ppm": (0, 40000)}
    for field, (lo, hi) in limits.items():
        v = values[field][present[field]]
        assert v.dtype == np.int64
        assert np.all((lo <= v) & (v <= hi)), field


def test_constant_truth_gives_mean_error_offset_and_std_noise(tmp_path: Path) -> None:
    n_cells, n_reads, dt_s = 16, 20_000, 0.01
    suite = SensorSuite(n_cells, 11, write_ranges(tmp_path, no_faults))
    t = truth(n_cells, electronics_C=40.0, gas_ppm=np.full(n_cells, 500.0))
    inputs = suite.sensor_inputs(t)
    values, _ = read_many(suite, t, n_reads, dt_s)
    mean_t_h = dt_s * (n_reads + 1) / 2 / 3600
    current_x = t.current_A + suite.drawn["current.offset_tc_A_per_K"] * (t.electronics_C - T_REF_C)
    channels = [(f, s, inputs[i], per_unit) for i, (f, s, _, per_unit) in enumerate(CELL_CHANNELS)]
    checked = 0
    for field, section, x, per_unit in [*channels, ("current_mA", "current", current_x, 1000.0)]:
        gain, offset = coeff(suite, section, "gain_error"), coeff(suite, section, "offset")
        pivot = T_REF_C if section == "temperature" else 0.0
        drift = coeff(suite, section, "drift_per_h") * mean_t_h
        expected = per_unit * (pivot + (x - pivot) * (1 + gain) + offset + drift)
        noise, quant = per_unit * coeff(suite, section, "noise_rms"), per_unit * coeff(suite, section, "quant")
        error, std = values[field].mean(axis=0) - expected, values[field].std(axis=0)
        # Noise of a step or more hides the quantiser's bias; below that the mean is only good to a step.
        dithered = noise >= quant
        assert np.all(np.abs(error[dithered]) < (5 * noise / math.sqrt(n_reads) + 0.02 * quant)[dithered]), field
        assert np.all(np.abs(error[~dithered]) <= quant[~dithered]), field
        # Sheppard: a quantiser of step q adds q^2/12 to the variance of a dithered signal.
        expected_std = np.sqrt(noise**2 + quant**2 / 12)
        assert np.allclose(std[dithered], expected_std[dithered], rtol=0.05), field
        checked += int(dithered.sum())
    assert checked >= 4 * n_cells  # pressure, ToF, amplitude, gas and current at least


def test_quantisation_steps_are_visible(tmp_path: Path) -> None:
    def edit(r: dict[str, Any]) -> None:
        no_faults(r)
        ideal(r["voltage"])
        fix(r["voltage"], "quant_mV", 5.0)

    suite = SensorSuite(2, 0, write_ranges(tmp_path, edit))
    ramp_V = np.linspace(3.600, 3.650, 501)
    mv = np.array([suite.read(0.01, truth(2, voltage_V=v)).voltage_mV[0] for v in ramp_V])
    assert np.all(mv % 5 == 0)
    assert set(np.diff(mv)) == {0, 5}
    assert np.array_equal(mv, np.rint(ramp_V * 1000 / 5) * 5)
    # The shipped quantisers show through too: the Hall sensor's 36.6 mA step.
    hall = SensorSuite(2, 0, write_ranges(tmp_path, lambda r: r["current"].update(sensor="hall")))
    currents = [hall.read(0.01, truth(2, current_A=a)).current_mA for a in np.linspace(0, 1, 200)]
    ma = np.array([c for c in currents if c is not None], dtype=float)
    assert len(set(ma)) > 5 and np.array_equal(ma, np.rint(np.rint(ma / 36.6) * 36.6))


@pytest.mark.parametrize("section, step", [("temperature", dict(temp_C=35.0)),
                                           ("gas", dict(gas_ppm=np.full(3, 2000.0)))])
def test_sensor_lag_reaches_63_percent_at_tau(tmp_path: Path, section: str, step: dict[str, Any]) -> None:
    tau_s = 10.0 if section == "temperature" else 60.0

    def edit(r: dict[str, Any]) -> None:
        no_faults(r)
        ideal(r[section])
        fix(r[section], "tau_s", tau_s)

    suite = SensorSuite(3, 0, write_ranges(tmp_path, edit))
    row = [c[1] for c in CELL_CHANNELS].index(section)
    field, per_unit = CELL_CHANNELS[row][0], CELL_CHANNELS[row][3]
    before, after = truth(3), truth(3, **step)
    start = suite.sensor_inputs(before)[row]
    suite.read(0.0, before)  # in equilibrium at the start
    end = np.full(3, 35.0) if section == "temperature" else suite.drawn["gas.baseline_ppm"] + 2000.0
    dt_s = tau_s / 100
    for k in range(1, 301):
        r = suite.read(dt_s, after)
        state = suite.sensor_inputs(after)[row]
        if k == 100:  # t = tau
            assert np.allclose((state - start) / (end - start), 1 - math.exp(-1), atol=1e-9)  # 63.2 %
        want = end + (start - end) * math.exp(-k * dt_s / tau_s)
        assert np.allclose(state, want, rtol=1e-9)
        assert np.all(np.abs(getattr(r, field) - want * per_unit) <= 0.5 + 1e-9)


def test_gas_generation_raises_pressure_and_can_strain() -> None:
    suite = SensorSuite(4, 2)
    calm, abused = truth(4, temp_C=60.0), truth(4, temp_C=60.0, gas_mol=np.full(4, 1e-3))
    row = [c[1] for c in CELL_CHANNELS].index("pressure")
    rise_Pa = suite.sensor_inputs(abused)[row] - suite.sensor_inputs(calm)[row]
    # p = n R T / V in the free headspace.
    expected_Pa = 1e-3 * 8.314462618 * (60.0 + 273.15) / (suite.drawn["mechanics.free_volume_mL"] * 1e-6)
    assert np.allclose(rise_Pa, expected_Pa)
    assert np.allclose(suite.can_strain_ue(abused) - suite.can_strain_ue(calm),
                       suite.drawn["mechanics.can_hoop_ue_per_MPa"] * expected_Pa / 1e6)


# --- FBG -----------------------------------------------------------------------------------------

def test_separate_inverts_the_forward_model_within_interrogator_resolution() -> None:
    coeffs = SensorSuite(16, 4).fbg_calibration()
    rng = np.random.default_rng(0)
    for _ in range(50):
        temp_C, strain_ue = rng.uniform(-20, 60, 16), rng.uniform(-200, 1000, 16)
        fbg_pm, ref_pm = fbg_forward(coeffs, temp_C, strain_ue)
        delta_T_K, got_ue = separate(np.rint(fbg_pm), np.rint(ref_pm), coeffs)  # 1 pm interrogator resolution
        half_pm = 0.5
        assert np.all(np.abs(delta_T_K - (temp_C - T_REF_C)) <= half_pm / coeffs.ref_temp_sens_pm_per_K)
        strain_bound = (half_pm + coeffs.temp_sens_pm_per_K * half_pm / coeffs.ref_temp_sens_pm_per_K)
        assert np.all(np.abs(got_ue - strain_ue) <= strain_bound / coeffs.strain_sens_pm_per_ue)


def test_suite_fbg_readings_separate_into_temperature_and_strain(tmp_path: Path) -> None:
    n_cells, n_reads, dt_s = 8, 400, 0.01
    suite = SensorSuite(n_cells, 9, write_ranges(tmp_path, no_faults))
    t = truth(n_cells, temp_C=41.0, soc=0.8)
    values, _ = read_many(suite, t, n_reads, dt_s)
    delta_T_K, strain_ue = separate(values["fbg_pm"].mean(axis=0), values["fbg_ref_pm"].mean(axis=0),
                                    suite.fbg_calibration())
    coeffs = suite.fbg_calibration()

    def error_pm(section: str, wavelength_pm: np.ndarray) -> np.ndarray:
        """What the interrogator may add to a mean wavelength: offset, gain, drift, rounding, noise."""
        return (np.abs(coeff(suite, section, "offset")) + np.abs(coeff(suite, section, "gain_error")) * wavelength_pm
                + np.abs(coeff(suite, section, "drift_per_h")) * n_reads * dt_s / 3600 + 0.5
                + 5 * coeff(suite, section, "noise_rms") / math.sqrt(n_reads))

    ref_err = error_pm("fbg_ref", values["fbg_ref_pm"].mean(axis=0)) / coeffs.ref_temp_sens_pm_per_K
    assert np.all(np.abs(delta_T_K - (41.0 - T_REF_C)) <= ref_err)
    strain_err = (error_pm("fbg", values["fbg_pm"].mean(axis=0)) + coeffs.temp_sens_pm_per_K * ref_err)
    assert np.all(np.abs(strain_ue - suite.can_strain_ue(t)) <= strain_err / coeffs.strain_sens_pm_per_ue)


# --- ultrasound ----------------------------------------------------------------------------------

def test_tof_shortens_with_soc_and_amplitude_falls_with_ageing() -> None:
    """Hsieh et al. 2015: the time of flight DEcreases as the cell charges (stiffer lithiated graphite);
    the amplitude rises a few percent with charge and falls as the cell ages (SoH down)."""
    n = 16
    suite = SensorSuite(n, 6)

    def median(field: str, **state: Any) -> np.ndarray:
        values, present = read_many(suite, truth(n, **state), 200)
        return np.array([np.median(values[field][present[field][:, i], i]) for i in range(n)])

    assert np.all(median("tof_ns", soc=0.9) < median("tof_ns", soc=0.1))
    assert np.all(median("amplitude_bp", soc=0.9) > median("amplitude_bp", soc=0.1))
    assert np.all(median("amplitude_bp", soh=0.7) < median("amplitude_bp", soh=1.0))
    assert np.all(median("tof_ns", soh=0.7) > median("tof_ns", soh=1.0))


# --- faults --------------------------------------------------------------------------------------

def test_dropouts_are_flagged_absent_never_zero() -> None:
    n_cells, n_reads = 16, 5000
    suite = SensorSuite(n_cells, 12)
    t = truth(n_cells)
    absent_seen = 0
    counts = {f: 0 for f in (*CELL_FIELDS, "current_mA")}
    for _ in range(n_reads):
        r = suite.read(0.01, t)
        rows = r.wire_rows()
        for f in CELL_FIELDS:
            values, present = getattr(r, f), r.present[f]
            assert np.all(values[~present] == ABSENT) and np.all(values[present] != ABSENT)
            assert np.all(values != 0)
            counts[f] += int((~present).sum())
        counts["current_mA"] += r.current_mA is None
        for cell, row in enumerate(rows):
            for f, value in zip([q[1] for q in wire.CELL_QUANTITIES], row, strict=True):
                assert (value is None) == (not r.present[f][cell])
                absent_seen += value is None
    assert absent_seen > 0
    for f, count in counts.items():
        section = "current" if f == "current_mA" else CHANNEL[f][1]
        expected = float(coeff(suite, section, "dropout_prob").sum()) * n_reads
        assert abs(count - expected) < 5 * math.sqrt(expected) + 3, (f, count, expected)


def test_spikes_occur_at_the_configured_rate() -> None:
    n_cells, n_reads = 16, 20_000
    suite = SensorSuite(n_cells, 13)
    values, present = read_many(suite, truth(n_cells, gas_ppm=np.full(n_cells, 2000.0)), n_reads)
    total_seen = total_expected = 0.0
    for field in (*CELL_FIELDS, "current_mA"):
        section, per_unit = ("current", 1000.0) if field == "current_mA" else (CHANNEL[field][1], CHANNEL[field][3])
        spike, noise = per_unit * coeff(suite, section, "spike"), per_unit * coeff(suite, section, "noise_rms")
        assert np.all(spike / 2 > 6 * noise + per_unit * coeff(suite, section, "quant")), field
        v = np.where(present[field], values[field], 0).astype(float)
        center = np.array([np.median(values[field][present[field][:, i], i]) for i in range(v.shape[1])])
        seen = int((present[field] & (np.abs(v - center) > spike / 2)).sum())
        expected = float((coeff(suite, section, "spike_prob") * present[field].sum(axis=0)).sum())
        assert abs(seen - expected) < 5 * math.sqrt(expected) + 3, (field, seen, expected)
        total_seen, total_expected = total_seen + seen, total_expected + expected
    assert total_seen > 0
    assert abs(total_seen - total_expected) < 4 * math.sqrt(total_expected)


# --- seeds and speed -----------------------------------------------------------------------------

def test_same_seed_same_readings_other_seed_other_readings() -> None:
    def run(seed: int) -> list[Any]:
        suite = SensorSuite(8, seed)
        out = []
        for k in range(300):
            r = suite.read(0.1, truth(8, soc=0.2 + k / 1000, temp_C=25 + k / 100))
            out.append((r.current_mA, *(getattr(r, f).tolist() for f in CELL_FIELDS),
                        *(r.present[f].tolist() for f in CELL_FIELDS)))
        return out

    assert run(21) == run(21)
    assert run(21) != run(22)
    a, b = SensorSuite(8, 21), SensorSuite(8, 22)
    assert all(np.array_equal(a.drawn[k], SensorSuite(8, 21).drawn[k]) for k in a.drawn)
    assert any(not np.array_equal(a.drawn[k], b.drawn[k]) for k in a.drawn if "_prob" not in k)


def test_sixteen_cells_read_fast() -> None:
    suite = SensorSuite(16, 0)
    t = truth(16)
    suite.read(0.01, t)
    best_s = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(2000):
            suite.read(0.01, t)
        best_s = min(best_s, time.perf_counter() - start)
    rate = 2000 / best_s
    print(f"SensorSuite(16 cells): {rate:,.0f} reads/s")
    assert rate >= 2000
