"""Rig scenarios in TOML files: cell count and parameters, start state, load profile, duration.

    name = "us06-25C"
    cells = 16
    cell = "models/cells/panasonic_ncr18650pf_25C.json"   # from the repository root, or the file's folder
    period_ms = 1000          # 1 Hz (100 for 10 Hz)
    duration_s = 3600
    ambient_C = 25.0
    seed = 1
    initial_soc = 1.0         # full after CC-CV unless stated
    truth = "ecm"             # ecm (the cell file) | spme (PyBaMM) | dfn (PyBaMM, 1 cell)
    pybamm_parameters = "Chen2020"   # the PyBaMM truth's set: Chen2020 | ORegan2022 (temperature-dependent, cold runs)
    sensor_ranges = "hil/sensors/ranges.json"  # the sensor coefficient ranges each cell draws from (swap for a
                              # draw nobody tuned on)
    [aged]                    # optional, ECM truth: start from an aged module, either by fast-forward ageing ...
    cycles = 1000             # ... whole cycles (hil.physics.ageing) of dod (0.8), c_rate (1.0), temp_C (25.0) and
                              # cycle_duration_s (10800) from full, then rested at initial_soc; or directly (not both):
                              # capacity_factor = 0.9, resistance_factor = 1.3 (relative to fresh)
    [[load]]
    profile = "us06"          # cc | cccv | rest | hppc | us06 | udds_like | random | csv
    # cc: c_rate, duration_s, stop_V; rest: duration_s; cccv: c_rate, voltage_V, taper_c_rate;
    # us06 / udds_like / random / csv: repeat (true), stop_V (2.5); csv: path, capacity_Ah
    [[fault]]                 # any number; see hil.faults for every kind and its keys
    kind = "sensor_stuck"     # sensor_stuck | sensor_open | sensor_noisy | adc_spike | current_offset_step |
                              # internal_short | overcharge | cold_charge | gas_pressure_rise | imbalance | link_loss
    channel = "voltage_mV"    # sensor faults: a hil.sensors.models.CELL_FIELDS field or "current_mA"
    cell = 3                  # 0-based
    at_s = 120                # onset (default 0); duration_s: default to the end
    duration_s = 60
    # sensor_noisy: factor; adc_spike: size; current_offset_step: offset_A; internal_short: short_ohm;
    # overcharge: c_rate, until_V; cold_charge: ambient_C; gas_pressure_rise: rate_umol_per_s, heat_W, vent_kPa,
    # enclosure_L; imbalance: soc_offset
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil import profiles
from hil.faults import Fault, parse_faults
from hil.physics import PYBAMM_PARAMETER_SETS
from hil.physics.params import CellParams, load
from hil.sensors.models import DEFAULT_RANGES_PATH

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Scenario:
    name: str
    cells: int
    params: CellParams
    load: list[dict[str, Any]]
    period_ms: int = 1000
    duration_s: float = 600.0
    ambient_C: float = 25.0
    seed: int = 1
    initial_soc: float = 1.0
    truth: str = "ecm"  # one of TRUTHS
    pybamm_parameters: str = "Chen2020"
    sensor_ranges: Path = DEFAULT_RANGES_PATH
    source: Path = field(default_factory=Path)
    faults: list[Fault] = field(default_factory=list)
    aged: dict[str, float] = field(default_factory=dict)  # the [aged] table, checked (_aged)

    @property
    def samples(self) -> int:
        return int(self.duration_s * 1000 // self.period_ms)

    def segments(self) -> list[profiles.Segment]:
        """Fresh load segments (they hold state, e.g. the CV phase's current)."""
        return [seg for spec in self.load for seg in _segments(spec, self)]


def _table(values: Any, spec: dict[str, Any]) -> list[profiles.Segment]:
    return [profiles.Table(values, repeat=bool(spec.get("repeat", True)), stop_V=spec.get("stop_V", 2.5))]


BUILDERS: dict[str, Callable[[dict[str, Any], Scenario], list[profiles.Segment]]] = {
    "cc": lambda s, sc: [profiles.ConstantCurrent(float(s["c_rate"]), float(s.get("duration_s", float("inf"))),
                                                  s.get("stop_V"))],
    "rest": lambda s, sc: [profiles.ConstantCurrent(0.0, float(s["duration_s"]))],
    "cccv": lambda s, sc: [profiles.ConstantCurrentConstantVoltage(float(s.get("c_rate", 1.0)),
                                                                   float(s.get("voltage_V", 4.2)),
                                                                   float(s.get("taper_c_rate", 0.02)))],
    "hppc": lambda s, sc: profiles.hppc(levels=int(s.get("levels", 9))),
    "us06": lambda s, sc: _table(profiles.us06(), s),
    "udds_like": lambda s, sc: _table(profiles.udds_like(sc.seed), s),
    "random": lambda s, sc: _table(profiles.random_walk(sc.seed, int(sc.duration_s)), s),
    "csv": lambda s, sc: _table(profiles.read_csv_profile(
        _resolve(s["path"], sc.source), float(s.get("capacity_Ah", sc.params.nominal_capacity_Ah))), s),
}


def _segments(spec: dict[str, Any], scenario: Scenario) -> list[profiles.Segment]:
    kind = spec.get("profile")
    if kind not in BUILDERS:
        raise ValueError(f"{scenario.source}: load profile {kind!r} is not one of {', '.join(BUILDERS)}")
    try:
        return BUILDERS[kind](spec, scenario)
    except KeyError as e:
        raise ValueError(f"{scenario.source}: load profile {kind!r} needs {e.args[0]!r}") from None


def _resolve(path: str, source: Path) -> Path:
    for base in (source.parent, ROOT):
        if (base / path).exists():
            return base / path
    raise ValueError(f"{source}: {path} not found (relative to the scenario or the repository)")


KNOWN = {"name", "cells", "cell", "period_ms", "duration_s", "ambient_C", "seed", "initial_soc", "load", "fault",
         "truth", "pybamm_parameters", "sensor_ranges", "aged"}
AGED_CYCLE_DEFAULTS = {"dod": 0.8, "c_rate": 1.0, "temp_C": 25.0, "cycle_duration_s": 3 * 3600.0}  # with "cycles"
AGED_STATE_KEYS = ("capacity_factor", "resistance_factor")
TRUTHS = ("ecm", "spme", "dfn")


def _aged(table: Any, path: Path, truth: str) -> dict[str, float]:
    """The [aged] table: fast-forward cycles (defaults filled in) or a state; either, not both."""
    if not isinstance(table, dict) or not table:
        if table:
            raise ValueError(f"{path}: [aged] must be a table")
        return {}
    unknown = set(table) - {"cycles", *AGED_CYCLE_DEFAULTS, *AGED_STATE_KEYS}
    if unknown:
        raise ValueError(f"{path}: [aged] has unknown keys {sorted(unknown)}")
    if ("cycles" in table) == any(k in table for k in AGED_STATE_KEYS):
        raise ValueError(f"{path}: [aged] takes either cycles or capacity_factor/resistance_factor")
    if truth != "ecm":
        raise ValueError(f"{path}: [aged] needs the ECM truth (the PyBaMM truth has no ageing)")
    try:
        if "cycles" in table:
            return {"cycles": float(table["cycles"]),
                    **{k: float(table.get(k, default)) for k, default in AGED_CYCLE_DEFAULTS.items()}}
        return {k: float(table[k]) for k in AGED_STATE_KEYS if k in table}
    except (TypeError, ValueError):
        raise ValueError(f"{path}: [aged] values must be numbers") from None


def load_scenario(path: Path, cells: int | None = None) -> Scenario:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"cannot read scenario {path}: {e}") from None
    unknown = set(raw) - KNOWN
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    for key in ("cell", "load"):
        if key not in raw:
            raise ValueError(f"{path}: missing {key!r}")
    scenario = Scenario(
        name=str(raw.get("name", path.stem)), cells=int(cells or raw.get("cells", 16)),
        params=load(_resolve(raw["cell"], path)), load=list(raw["load"]),
        period_ms=int(raw.get("period_ms", 1000)), duration_s=float(raw.get("duration_s", 600)),
        ambient_C=float(raw.get("ambient_C", 25.0)), seed=int(raw.get("seed", 1)),
        initial_soc=float(raw.get("initial_soc", 1.0)), truth=str(raw.get("truth", "ecm")),
        pybamm_parameters=str(raw.get("pybamm_parameters", "Chen2020")), source=path)
    if "sensor_ranges" in raw:
        scenario.sensor_ranges = _resolve(raw["sensor_ranges"], path)
    if scenario.truth not in TRUTHS:
        raise ValueError(f"{path}: truth must be one of {', '.join(TRUTHS)}, got {scenario.truth!r}")
    if scenario.pybamm_parameters not in PYBAMM_PARAMETER_SETS:
        raise ValueError(f"{path}: pybamm_parameters must be one of {', '.join(PYBAMM_PARAMETER_SETS)}, "
                         f"got {scenario.pybamm_parameters!r}")
    if not 1 <= scenario.cells <= 32 or scenario.period_ms <= 0 or scenario.duration_s <= 0:
        raise ValueError(f"{path}: cells must be 1..32, period_ms and duration_s > 0")
    scenario.aged = _aged(raw.get("aged", {}), path, scenario.truth)
    scenario.segments()  # every load entry is checked now, not mid-run
    scenario.faults = parse_faults(raw.get("fault", []), path, scenario.cells)
    return scenario
