"""Faults in rig scenarios (hil.faults): each kind acts at its time and only then, on what it names and
only that, the truth records it, scenario files are checked, and one fault goes through the whole chain.

Most tests run a faulty module beside a healthy twin of the same seed and compare them sample by sample."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hil.faults import KINDS, PLATING_RISK_BELOW_C, Fault, plating_risk
from hil.physics.params import CellParams, load
from hil.profiles import ConstantCurrent, Segment
from hil.scenario import load_scenario
from hil.scenario_run import run_scenario
from hil.sensors.models import ABSENT, CELL_FIELDS, GAS_CONSTANT_J_PER_MOL_K, KELVIN
from hil.simulated import SimulatedModule

ROOT = Path(__file__).resolve().parents[2]
CELL = "models/cells/panasonic_ncr18650pf_25C.json"
PARAMS: CellParams = load(ROOT / CELL)
FIELDS = (*CELL_FIELDS, "current_mA")


def fault(kind: str, index: int = 0, at_s: float = 0.0, duration_s: float = math.inf, cell: int | None = None,
          channel: str | None = None, **value: float) -> Fault:
    return Fault(index, kind, at_s, duration_s, cell, channel, {**KINDS[kind][1], **value})


def run(faults: list[Fault], seconds: int, load_: list[Segment] | None = None, n_cells: int = 4, seed: int = 3,
        **kw: Any) -> tuple[SimulatedModule, dict[str, np.ndarray]]:
    """A module stepped at 1 Hz; its readings stacked per field as (sample, cell), ABSENT where absent."""
    module = SimulatedModule(PARAMS, n_cells, load_ or [ConstantCurrent(-1.0)], seed=seed, faults=faults, **kw)
    got: dict[str, list[Any]] = {f: [] for f in FIELDS}
    for _ in range(seconds):
        module.step(1.0)
        r = module._readings
        assert r is not None
        for f in CELL_FIELDS:
            got[f].append(getattr(r, f).copy())
        got["current_mA"].append([ABSENT if r.current_mA is None else r.current_mA])
    return module, {f: np.array(v) for f, v in got.items()}


def differs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per field, the (sample, cell) places where two runs' readings differ (only fields with any)."""
    return {f: a[f] != b[f] for f in FIELDS if np.any(a[f] != b[f])}


def window(seconds: int, at_s: float, duration_s: float) -> np.ndarray:
    """Samples at t = 1..seconds inside [at_s, at_s + duration_s)."""
    t = np.arange(1, seconds + 1)
    return (t >= at_s) & (t < at_s + duration_s)


# --- sensor faults -------------------------------------------------------------------------------

def test_stuck_sensor_holds_the_reading_before_onset_exactly_over_its_window() -> None:
    _, clean = run([], 40)
    _, stuck = run([fault("sensor_stuck", at_s=10, duration_s=20, cell=1, channel="voltage_mV")], 40)
    inside = window(40, 10, 20)
    assert list(differs(clean, stuck)) == ["voltage_mV"]  # nothing else moved
    assert np.all(stuck["voltage_mV"][inside, 1] == clean["voltage_mV"][8, 1])  # sample t=9, before onset
    assert np.array_equal(stuck["voltage_mV"][~inside], clean["voltage_mV"][~inside])
    assert len(set(clean["voltage_mV"][inside, 1])) > 5  # a 1C discharge: the true reading moved meanwhile


def test_stuck_current_sensor() -> None:
    _, clean = run([], 20)
    _, stuck = run([fault("sensor_stuck", at_s=5, duration_s=10, channel="current_mA")], 20)
    inside = window(20, 5, 10)
    assert np.all(stuck["current_mA"][inside] == clean["current_mA"][3])
    assert np.array_equal(stuck["current_mA"][~inside], clean["current_mA"][~inside])


def test_open_sensor_is_absent_on_the_wire_over_its_window_only() -> None:
    module, clean = run([], 30)
    faulty, opened = run([fault("sensor_open", at_s=10, duration_s=5, cell=2, channel="voltage_mV")], 30)
    inside = window(30, 10, 5)
    assert list(differs(clean, opened)) == ["voltage_mV"]
    assert np.all(opened["voltage_mV"][inside, 2] == ABSENT)
    assert np.array_equal(opened["voltage_mV"][~inside], clean["voltage_mV"][~inside])
    assert faulty.reading()[1][2][0] is not None  # the last sample (t=30) is after the window
    faulty = SimulatedModule(PARAMS, 4, [ConstantCurrent(-1.0)], seed=3,
                             faults=[fault("sensor_open", at_s=1, cell=2, channel="voltage_mV")])
    faulty.step(1.0)
    assert faulty.reading()[1][2][0] is None and faulty.reading()[1][1][0] is not None


def test_noisy_sensor_noise_scales_by_its_factor() -> None:
    factor = 20.0
    module, clean = run([], 400, [ConstantCurrent(0.0)])
    _, noisy = run([fault("sensor_noisy", at_s=100, duration_s=200, cell=0, channel="temp_dC", factor=factor)], 400,
                   [ConstantCurrent(0.0)])
    inside = window(400, 100, 200)
    assert list(differs(clean, noisy)) == ["temp_dC"]
    assert np.array_equal(noisy["temp_dC"][~inside], clean["temp_dC"][~inside])
    # Same draws z: the faulty reading is x + factor·σ·z, the healthy x + σ·z; they differ by (factor − 1)·σ·z.
    sigma_dC = module.sensors.drawn["temperature.noise_K_rms"][0] * 10
    diff = (noisy["temp_dC"][inside, 0] - clean["temp_dC"][inside, 0]).astype(float)
    assert np.std(diff) == pytest.approx((factor - 1) * sigma_dC, rel=0.2)


def test_adc_spike_hits_one_sample_by_its_size() -> None:
    _, clean = run([], 20)
    _, spiked = run([fault("adc_spike", at_s=7.5, cell=3, channel="pressure_Pa", size=50000)], 20)
    changed = differs(clean, spiked)
    assert list(changed) == ["pressure_Pa"] and np.argwhere(changed["pressure_Pa"]).tolist() == [[7, 3]]  # t = 8 s
    assert spiked["pressure_Pa"][7, 3] - clean["pressure_Pa"][7, 3] == 50000


def test_current_offset_step_shifts_current_readings_by_the_offset() -> None:
    _, clean = run([], 60)
    _, shifted = run([fault("current_offset_step", at_s=30, offset_A=0.25)], 60)
    inside = window(60, 30, math.inf)
    assert list(differs(clean, shifted)) == ["current_mA"]
    assert np.array_equal(shifted["current_mA"][~inside], clean["current_mA"][~inside])
    # The offset adds after the gain and before quantisation (1 mA): exact up to rounding.
    assert np.all(np.abs(shifted["current_mA"][inside] - clean["current_mA"][inside] - 250) <= 1)


# --- cell and load faults ------------------------------------------------------------------------

def test_internal_short_drains_and_heats_its_cell_only() -> None:
    short_ohm, at_s = 5.0, 60
    clean, _ = run([], 600, [ConstantCurrent(-0.5)])
    faulty, _ = run([fault("internal_short", at_s=at_s, cell=2, short_ohm=short_ohm)], 600, [ConstantCurrent(-0.5)])
    before = at_s - 1  # sample t = at_s
    assert np.array_equal(faulty.truth[before].soc, clean.truth[before].soc)
    deficit = clean.truth[-1].soc - faulty.truth[-1].soc
    # The short's charge, ∫V/R dt with the cell's own voltage, over its capacity.
    expected = sum(float(t.voltage_V[2]) for t in faulty.truth[before:-1]) / short_ohm / (
        faulty.cells.capacity_Ah[2] * 3600)
    assert deficit[2] == pytest.approx(expected, rel=0.02)
    # The others lose nothing to it (1e-7: their ageing, warmer by the short's heat, shrinks their capacity).
    assert np.allclose(np.delete(deficit, 2), 0.0, atol=1e-5)
    warmer = faulty.truth[-1].temp_C - clean.truth[-1].temp_C
    assert warmer[2] > 1.0 and warmer[2] > 3 * np.max(np.delete(warmer, 2))  # heat stays mostly in the cell
    assert all((0 in t.faults) == (t.t_s >= at_s) for t in faulty.truth)


def test_overcharge_drives_the_voltage_above_4V2_until_its_stop() -> None:
    faulty, _ = run([fault("overcharge", at_s=10, duration_s=3000, c_rate=1.0, until_V=4.3)], 1200,
                    [ConstantCurrent(0.0)], initial_soc=0.95)
    current_A = np.array([t.current_A for t in faulty.truth])
    max_V = np.array([np.max(t.voltage_V) for t in faulty.truth])
    on = np.array([0 in t.faults for t in faulty.truth])
    assert np.all(current_A[:9] == 0.0) and not np.any(on[:9])
    first, last = np.flatnonzero(on)[[0, -1]]
    assert faulty.truth[first].t_s == 10 and np.all(on[first:last + 1])
    # A sample's current is the one over the second before it: the charger drives from the sample after onset.
    assert current_A[first] == 0.0 and np.allclose(current_A[first + 1:last], PARAMS.nominal_capacity_Ah)
    assert max_V[last - 1] > 4.2 and max_V[last] >= 4.3  # stopped at until_V, long before 3010 s
    assert last < 1100 and np.all(current_A[last + 1:] == 0.0)  # the load (rest) resumes
    # Without a stop voltage it charges past full for its whole window.
    faulty, _ = run([fault("overcharge", at_s=10, duration_s=600, c_rate=1.0)], 700, [ConstantCurrent(0.0)],
                    initial_soc=0.95)
    assert [0 in t.faults for t in faulty.truth] == [10 <= t.t_s < 610 for t in faulty.truth]
    assert np.min(faulty.truth[609].soc) > 1.05 and np.min(faulty.truth[609].voltage_V) > 4.2


def test_cold_charge_flags_plating_risk_only_when_charging_cold() -> None:
    load_: list[Segment] = [ConstantCurrent(0.5, 200), ConstantCurrent(0.0, 600), ConstantCurrent(0.5, 300),
                            ConstantCurrent(-0.5, 100)]
    faulty, _ = run([fault("cold_charge", at_s=200, duration_s=1000, ambient_C=-10.0)], 1300, load_,
                    initial_soc=0.3)
    flags = np.array([t.plating_risk for t in faulty.truth])
    expected = [t.current_A > 0 and np.min(t.temp_C) < PLATING_RISK_BELOW_C for t in faulty.truth]
    assert np.array_equal(flags, expected)
    assert not np.any(flags[:200])  # charging at 25 degC: no risk
    assert np.all(flags[830:1100])  # charging after 600 s at -10 degC ambient
    assert not np.any(flags[1100:])  # discharging, cold or not
    assert faulty.cells.ambient_C == 25.0  # restored after the window
    assert plating_risk(1.0, np.array([20.0, 9.9])) and not plating_risk(0.0, np.array([0.0]))


def test_gas_raises_pressure_then_vents_to_the_gas_sensor_of_its_cell_only() -> None:
    rate = 2.0  # umol/s
    clean, healthy = run([], 900, [ConstantCurrent(0.0)])
    faulty, gassy = run([fault("gas_pressure_rise", at_s=100, cell=1, rate_umol_per_s=rate)], 900,
                        [ConstantCurrent(0.0)])
    assert set(differs(healthy, gassy)) <= {"pressure_Pa", "gas_ppm", "fbg_pm"}  # fbg: can strain from pressure
    for f in ("pressure_Pa", "gas_ppm"):
        assert np.array_equal(gassy[f][:, [0, 2, 3]], healthy[f][:, [0, 2, 3]])
        assert np.array_equal(gassy[f][:99], healthy[f][:99])
    rise_Pa = gassy["pressure_Pa"][:, 1] - healthy["pressure_Pa"][:, 1]
    free_m3 = faulty.sensors.drawn["mechanics.free_volume_mL"][1] * 1e-6
    vent_s = 100 + 1e6 * free_m3 / (GAS_CONSTANT_J_PER_MOL_K * (25 + KELVIN)) / (rate * 1e-6)  # n = p V / R T
    # Until the vent opens: p = n R T / V with n = rate·(t − at_s), read through the sensor's gain.
    t_check = int(vent_s) - 20
    n_mol = rate * 1e-6 * (t_check - 100)
    assert rise_Pa[t_check - 1] == pytest.approx(n_mol * GAS_CONSTANT_J_PER_MOL_K * (25 + KELVIN) / free_m3, rel=0.02)
    assert np.all(gassy["gas_ppm"][: int(vent_s) - 2, 1] == healthy["gas_ppm"][: int(vent_s) - 2, 1])
    # After it: the can's pressure is back, the gas at the sensor rises by thousands of ppm.
    assert abs(rise_Pa[-1]) < 1000
    assert gassy["gas_ppm"][-1, 1] - healthy["gas_ppm"][-1, 1] > 10000
    assert faulty.truth[-1].faults == (0,)


def test_gas_self_heating_warms_its_cell() -> None:
    clean, _ = run([], 300, [ConstantCurrent(0.0)])
    faulty, _ = run([fault("gas_pressure_rise", at_s=0, cell=0, rate_umol_per_s=0.0, heat_W=1.0)], 300,
                    [ConstantCurrent(0.0)])
    warmer = faulty.truth[-1].temp_C - clean.truth[-1].temp_C
    assert warmer[0] > 2.0 and warmer[0] > 3 * warmer[1]


def test_imbalance_offsets_the_initial_soc() -> None:
    clean, _ = run([], 1, [ConstantCurrent(0.0)], initial_soc=0.5)
    faulty, _ = run([fault("imbalance", cell=1, soc_offset=-0.1)], 1, [ConstantCurrent(0.0)], initial_soc=0.5)
    offset = faulty.truth[0].soc - clean.truth[0].soc
    assert offset[1] == pytest.approx(-0.1, abs=1e-9) and np.allclose(np.delete(offset, 1), 0.0, atol=1e-12)
    assert faulty.truth[0].faults == (0,)


def test_link_down_exactly_over_its_window() -> None:
    module = SimulatedModule(PARAMS, 2, [ConstantCurrent(0.0)], faults=[fault("link_loss", at_s=5, duration_s=3)])
    assert not module.link_down()
    down = []
    for _ in range(12):
        module.step(1.0)
        down.append(module.link_down())
        assert (0 in module.truth[-1].faults) == down[-1]
    assert down == [5 <= t < 8 for t in range(1, 13)]
    half = SimulatedModule(PARAMS, 2, [ConstantCurrent(0.0)], faults=[fault("link_loss", at_s=5, duration_s=3)])
    half.step(4.999)
    assert not half.link_down()
    half.step(0.001)
    assert half.link_down()


def test_truth_rows_the_rig_never_read_are_not_paired_with_board_samples() -> None:
    module = SimulatedModule(PARAMS, 2, [ConstantCurrent(0.0)], faults=[fault("link_loss", at_s=3, duration_s=2)])
    for _ in range(8):
        module.step(1.0)
        if not module.link_down():  # as the rig: no reply while the link is cut
            module.reading()
            module.reading()  # a repeated request is answered from the rig's cache, not a new sample
    assert module.sent == [0, 1, 4, 5, 6, 7]  # samples at t = 1, 2, 5, 6, 7, 8 s


def test_faults_start_inside_a_long_sample() -> None:
    """A 10 s sample: the short starts at 3 s and ends at 7 s inside it (the sub-steps are split there)."""
    clean = SimulatedModule(PARAMS, 2, [ConstantCurrent(0.0)], initial_soc=0.5)
    faulty = SimulatedModule(PARAMS, 2, [ConstantCurrent(0.0)], initial_soc=0.5,
                             faults=[fault("internal_short", at_s=3, duration_s=4, cell=0, short_ohm=1.0)])
    clean.step(10.0)
    faulty.step(10.0)
    drawn_As = (clean.truth[0].soc[0] - faulty.truth[0].soc[0]) * faulty.cells.capacity_Ah[0] * 3600
    assert drawn_As == pytest.approx(4 * float(faulty.truth[0].voltage_V[0]), rel=0.01)  # 4 s at V/1 ohm
    assert faulty.truth[0].faults == ()


def test_same_seed_same_run() -> None:
    faults = [fault("sensor_noisy", cell=0, channel="voltage_mV", factor=5.0),
              fault("gas_pressure_rise", 1, at_s=5, cell=1, rate_umol_per_s=5.0, heat_W=0.5)]
    a, ra = run(faults, 50)
    b, rb = run(faults, 50)
    assert not differs(ra, rb)
    assert all(np.array_equal(x.temp_C, y.temp_C) and x.faults == y.faults
               for x, y in zip(a.truth, b.truth, strict=True))
    _, other = run(faults, 50, seed=4)
    assert "voltage_mV" in differs(ra, other)


def test_without_faults_nothing_is_recorded() -> None:
    module, _ = run([], 5)
    assert module.faults is None and not module.link_down()
    assert all(t.faults == () and not t.plating_risk for t in module.truth)


# --- scenario files --------------------------------------------------------------------------------

def write(tmp_path: Path, faults: str, cells: int = 4) -> Path:
    path = tmp_path / "f.toml"
    path.write_text(f'cells = {cells}\ncell = "{CELL}"\n[[load]]\nprofile = "rest"\nduration_s = 60\n'
                    f'[[fault]]\nkind = "link_loss"\nat_s = 1\nduration_s = 2\n' + faults)
    return path


@pytest.mark.parametrize("text, message", [
    ('kind = "gremlin"', "fault 1: kind 'gremlin' is not one of"),
    ('kind = "internal_short"\ncell = 1', r"fault 1 \(internal_short\): missing 'short_ohm'"),
    ('kind = "internal_short"\ncell = 4\nshort_ohm = 1',
     r"fault 1 \(internal_short\): cell 4 is not a cell index 0\.\.3"),
    ('kind = "internal_short"\ncell = -1\nshort_ohm = 1', "fault 1 .*cell -1 is not a cell index"),
    ('kind = "internal_short"\ncell = 1\nshort_ohm = 0', "fault 1 .*short_ohm must be > 0"),
    ('kind = "sensor_open"\nchannel = "colour_nm"\ncell = 0', "fault 1 .*channel 'colour_nm' is not one of"),
    ('kind = "sensor_open"\ncell = 0', "fault 1 .*missing 'channel'"),
    ('kind = "sensor_open"\nchannel = "current_mA"\ncell = 0', r"fault 1 .*unknown keys \['cell'\]"),
    ('kind = "adc_spike"\nchannel = "temp_dC"\ncell = 0\nsize = 5\nduration_s = 3',
     r"fault 1 .*unknown keys \['duration_s'\]"),
    ('kind = "imbalance"\ncell = 0\nsoc_offset = 0.1\nat_s = 3', r"fault 1 .*unknown keys \['at_s'\]"),
    ('kind = "overcharge"\nc_rate = "lots"', "fault 1 .*c_rate must be a number"),
    ('kind = "link_loss"\nat_s = 5', "fault 1 .*missing 'duration_s'"),
    ('kind = "cold_charge"\nambient_C = 0\nat_s = -1', "fault 1 .*at_s must be >= 0"),
])
def test_fault_errors_name_the_file_and_the_fault(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, f"[[fault]]\n{text}\n")
    with pytest.raises(ValueError, match=f"^{path}: {message}"):
        load_scenario(path)


def test_fault_must_be_an_array_of_tables(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_text(f'cell = "{CELL}"\nfault = 3\n[[load]]\nprofile = "rest"\nduration_s = 60\n')
    with pytest.raises(ValueError, match="'fault' must be an array of tables"):
        load_scenario(path)


def test_fault_cells_checked_against_a_cells_override(tmp_path: Path) -> None:
    path = write(tmp_path, '[[fault]]\nkind = "imbalance"\ncell = 3\nsoc_offset = 0.1\n')
    assert [f.kind for f in load_scenario(path).faults] == ["link_loss", "imbalance"]
    with pytest.raises(ValueError, match="cell 3 is not a cell index 0..1"):
        load_scenario(path, cells=2)


def test_shipped_fault_scenarios_cover_every_kind() -> None:
    kinds = {f.kind for path in (ROOT / "scenarios").glob("*.toml") for f in load_scenario(path).faults}
    assert kinds == set(KINDS)


# --- through the whole chain -----------------------------------------------------------------------

def test_open_voltage_wire_through_the_whole_chain(tmp_path: Path) -> None:
    path = tmp_path / "open.toml"
    path.write_text(f"""
name = "open-wire"
cells = 3
cell = "{CELL}"
duration_s = 40
[[load]]
profile = "cc"
c_rate = -1.0
[[fault]]
kind = "sensor_open"
channel = "voltage_mV"
cell = 1
at_s = 10
duration_s = 15
""")
    score = run_scenario(path, tmp_path)
    assert score["lost"] == 0 and score["stored"] == 40
    assert score["faults"] == [{"index": 0, "kind": "sensor_open", "cell": 1, "channel": "voltage_mV",
                                "onset_s": 10.0, "end_s": 24.0, "samples": 15}]
    rows = list(csv.DictReader((Path(score["outputs"]) / "samples.csv").read_text().splitlines()))
    assert len(rows) == 40 * 3
    absent_elsewhere = 0
    for row in rows:
        t_s, cell = float(row["t_s"]), int(row["cell"])
        faulted = 10 <= t_s < 25
        assert row["active_faults"] == ("0" if faulted else "")
        # What the board stored: NULL (an empty CSV field) for the open wire; elsewhere a value but for a rare
        # random dropout (probability <= 1e-3 per reading).
        if faulted and cell == 1:
            assert row["board_voltage_mV"] == "", row
        else:
            absent_elsewhere += row["board_voltage_mV"] == ""
    assert absent_elsewhere <= 1
    assert json.loads((Path(score["outputs"]) / "score.json").read_text())["faults"][0]["samples"] == 15


def test_link_loss_through_the_whole_chain(tmp_path: Path) -> None:
    """The rig swallows every request inside the window; the board's retries keep lockstep time moving,
    so the samples of the outage exist in the truth but never reach the board, and nothing sent is lost."""
    path = tmp_path / "loss.toml"
    path.write_text(f"""
name = "link-loss"
cells = 2
cell = "{CELL}"
duration_s = 30
[[load]]
profile = "cc"
c_rate = -0.5
[[fault]]
kind = "link_loss"
at_s = 10
duration_s = 4
""")
    score = run_scenario(path, tmp_path)
    assert score["lost"] == 0 and score["duplicates"] == 0 and score["stored"] == 30
    rows = list(csv.DictReader((Path(score["outputs"]) / "samples.csv").read_text().splitlines()))
    unanswered = {float(r["t_s"]) for r in rows if r["board_voltage_mV"] == "" and r["active_faults"] == "0"}
    assert unanswered == {10.0, 11.0, 12.0, 13.0}
    assert all(r["board_voltage_mV"] != "" for r in rows if float(r["t_s"]) >= 14)
