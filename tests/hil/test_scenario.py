"""`soxbms hil run`: scenario files, and a short scenario through the whole chain with the
simulated module (ECM physics + sensors) as truth."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from hil.scenario import load_scenario
from hil.scenario_run import run_scenario
from hil.sensors.models import DEFAULT_RANGES_PATH
from host.cli import main

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_shipped_scenarios_load() -> None:
    for path in sorted((ROOT / "scenarios").glob("*.toml")):
        scenario = load_scenario(path)
        assert scenario.segments() and scenario.samples > 0, path


@pytest.mark.parametrize("text, message", [
    ('cell = "models/cells/panasonic_ncr18650pf_25C.json"\n[[load]]\nprofile = "warp"\n', "'warp' is not one of"),
    ('cell = "models/cells/panasonic_ncr18650pf_25C.json"\n[[load]]\nprofile = "cc"\n', "needs 'c_rate'"),
    ('[[load]]\nprofile = "us06"\n', "missing 'cell'"),
    ('cell = "nowhere.json"\n[[load]]\nprofile = "us06"\n', "nowhere.json not found"),
    ('cell = "models/cells/panasonic_ncr18650pf_25C.json"\ncolour = 1\n[[load]]\nprofile = "us06"\n',
     "unknown keys ['colour']"),
    ("cells = [", "cannot read scenario"),
])
def test_scenario_errors_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_scenario(write(tmp_path, text))


def test_short_drive_through_the_whole_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = write(tmp_path, """
name = "short"
cells = 3
cell = "models/cells/panasonic_ncr18650pf_25C.json"
duration_s = 120
[[load]]
profile = "cc"
c_rate = -2.0
""")
    assert main(["--state", str(tmp_path), "hil", "run", str(scenario)]) == 0
    score = json.loads(capsys.readouterr().out)
    assert (score["sent"], score["stored"], score["lost"], score["duplicates"]) == (120, 120, 0, 0)
    # 2C for 120 s takes 2 x 120 / 3600 = 6.7 % of the charge (the cell holds 3.0 Ah against 2.9 nominal).
    assert 0.055 < score["true_soc_start"] - score["true_soc_end"] < 0.075
    assert score["voltage_reading_rms_error_mV"] < 20 and score["temp_reading_rms_error_K"] < 1.5
    assert Path(score["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((Path(score["outputs"]) / "samples.csv").read_text().splitlines()))
    assert len(rows) == 120 * 3
    last = rows[-1]
    assert float(last["true_current_A"]) == pytest.approx(-2.0 * 2.9974, rel=1e-3)
    assert abs(int(last["board_current_mA"]) / 1000 - float(last["true_current_A"])) < 0.1


def test_run_scenario_cells_override(tmp_path: Path) -> None:
    score = run_scenario(ROOT / "scenarios" / "us06_short.toml", tmp_path, cells=2)
    assert score["cells"] == 2 and score["lost"] == 0 and score["samples"] == 600


def test_soxbms_run_twice_in_one_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`soxbms run` (what `make run` calls) with a scenario; a second run into the same state starts afresh
    (the board's boot counter persists in its folder: the first run's rows must not be taken for the second's)."""
    for c_rate in (-1.0, 1.0):  # same name, so the same output folder; opposite currents
        scenario = write(tmp_path, f"""
name = "again"
cells = 2
cell = "models/cells/panasonic_ncr18650pf_25C.json"
duration_s = 30
initial_soc = 0.5
[[load]]
profile = "cc"
c_rate = {c_rate}
""")
        assert main(["--state", str(tmp_path), "run", str(scenario)]) == 0
        score = json.loads(capsys.readouterr().out)
        assert (score["sent"], score["stored"], score["lost"], score["duplicates"]) == (30, 30, 0, 0)
        rows = list(csv.DictReader((Path(score["outputs"]) / "samples.csv").read_text().splitlines()))
        assert len(rows) == 60
        for row in rows:  # this run's readings beside this run's truth
            assert abs(int(row["board_current_mA"]) / 1000 - float(row["true_current_A"])) < 0.1


def test_a_swapped_sensor_ranges_file_is_drawn_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A reviewer's ranges file replaces ours: here one with a perfect voltage sensor (quantisation only)."""
    ranges = json.loads(DEFAULT_RANGES_PATH.read_text())
    for key, entry in ranges["voltage"].items():
        if isinstance(entry, dict) and key != "quant_mV":
            entry["min"] = entry["max"] = 0.0
    perfect = tmp_path / "perfect_voltage.json"
    perfect.write_text(json.dumps(ranges))
    scenario = write(tmp_path, """
name = "ranges"
cells = 2
cell = "models/cells/panasonic_ncr18650pf_25C.json"
duration_s = 60
[[load]]
profile = "cc"
c_rate = -1.0
""")
    assert main(["--state", str(tmp_path), "hil", "run", str(scenario), "--sensor-ranges", str(perfect)]) == 0
    score = json.loads(capsys.readouterr().out)
    assert score["sensor_ranges"] == str(perfect)
    assert score["voltage_reading_rms_error_mV"] < 0.35  # 1 mV steps: sqrt(1/12) = 0.29 mV
    scenario.write_text(scenario.read_text().replace('cells = 2', f'cells = 2\nsensor_ranges = "{perfect}"'))
    assert load_scenario(scenario).sensor_ranges == perfect


AGED = """
name = "aged"
cells = 3
cell = "models/cells/panasonic_ncr18650pf_25C.json"
duration_s = 10
[[load]]
profile = "rest"
duration_s = 10
"""


def test_a_scenario_starts_from_an_aged_state(tmp_path: Path) -> None:
    from hil.physics.module import CellModule
    from hil.scenario_run import build_module

    scenario = load_scenario(write(tmp_path, AGED + "[aged]\ncycles = 800\ndod = 0.9\n"))
    module = build_module(scenario, 0, "ecm")
    reference = CellModule(scenario.params, 3, seed=scenario.seed, initial_soc=1.0)
    reference.fast_forward(cycles=800, dod=0.9, c_rate=1.0, temp_C=25.0, cycle_duration_s=3 * 3600.0)
    module.step(1.0)
    np.testing.assert_allclose(module.truth[0].soh, reference.capacity_Ah / reference.fresh_capacity_Ah)
    assert np.all(module.truth[0].soh < 0.99) and module.truth[0].t_s == 1.0  # aged, and the run's clock at 0

    scenario = load_scenario(write(tmp_path, AGED + "[aged]\ncapacity_factor = 0.85\nresistance_factor = 1.4\n"))
    module = build_module(scenario, 0, "ecm")
    module.step(1.0)
    np.testing.assert_allclose(module.truth[0].soh, 0.85)


@pytest.mark.parametrize(("table", "message"), [
    ("cycles = 10\ncapacity_factor = 0.9\n", "either cycles or capacity_factor"),
    ("years = 3\n", "unknown keys ['years']"),
    ("capacity_factor = 'old'\n", "values must be numbers"),
])
def test_aged_table_errors(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        load_scenario(write(tmp_path, AGED + "[aged]\n" + table))
    with pytest.raises(ValueError, match="needs the ECM truth"):
        load_scenario(write(tmp_path, AGED.replace('cells = 3', 'cells = 3\ntruth = "spme"') +
                            "[aged]\ncapacity_factor = 0.9\n"))
