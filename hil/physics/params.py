"""Cell parameter files: load a JSON parameter set (schema in models/cells/SCHEMA.md) into a
frozen `CellParams`, rejecting malformed files with a ValueError that names the offending key."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Top-level keys every parameter file must carry, besides "name", "chemistry" and "sources".
SOC_TEMP_TABLES = ("OCV [V]", "R0 [Ohm]", "R1 [Ohm]", "C1 [F]", "R2 [Ohm]", "C2 [F]")
SOC_TABLES = ("OCV hysteresis [V]", "Entropic change [V/K]")
SCALARS = ("Nominal capacity [A.h]", "Lower voltage cut-off [V]", "Upper voltage cut-off [V]",
           "Hysteresis rate [1/(A.s)]", "Resistance activation energy [J/mol]", "Coulombic efficiency")
THERMAL_KEYS = ("Mass [kg]", "Specific heat capacity [J/(kg.K)]", "Heat transfer coefficient [W/(m2.K)]",
                "Surface area [m2]", "Neighbour conductance [W/K]")
AGEING_KEYS = ("Calendar fade [1/sqrt(s)]", "Cycle fade [1/A.h]", "Calendar resistance growth [1/sqrt(s)]",
               "Cycle resistance growth [1/A.h]", "Arrhenius activation energy [J/mol]",
               "Reference temperature [degC]")
# Optional keys (default when absent).
SELF_DISCHARGE = "Self-discharge current [A]"
CALENDAR_SOC = "Calendar SoC sensitivity"
# Charge-transfer element (see hil.physics.ecm): absent, the model is the linear two-RC circuit.
EXCHANGE_CURRENT = "Exchange current [A]"
EXCHANGE_ACTIVATION = "Exchange current activation energy [J/mol]"


def _frozen(values: Any, what: str) -> np.ndarray:
    try:
        array = np.array(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: not a numeric array ({exc})") from None
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: contains a non-finite value")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class SocTable:
    """A quantity tabulated over SoC only."""

    soc: np.ndarray
    values: np.ndarray


@dataclass(frozen=True, eq=False)
class Table:
    """A quantity tabulated over (temperature, SoC): values[i_temp, i_soc]."""

    soc: np.ndarray
    temp_C: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class ThermalParams:
    mass_kg: float
    cp_J_per_kgK: float
    h_W_per_m2K: float
    area_m2: float
    neighbour_W_per_K: float

    @property
    def heat_capacity_J_per_K(self) -> float:
        return self.mass_kg * self.cp_J_per_kgK

    @property
    def cooling_W_per_K(self) -> float:
        return self.h_W_per_m2K * self.area_m2


@dataclass(frozen=True)
class AgeingParams:
    calendar_fade_per_sqrt_s: float
    cycle_fade_per_Ah: float
    calendar_res_per_sqrt_s: float
    cycle_res_per_Ah: float
    activation_J_per_mol: float
    reference_temp_C: float
    # Calendar rates scale by exp(calendar_soc_sensitivity * (SoC - 0.5)).
    calendar_soc_sensitivity: float = 0.0


@dataclass(frozen=True, eq=False)
class CellParams:
    name: str
    chemistry: str
    sources: dict[str, str]
    nominal_capacity_Ah: float
    lower_cutoff_V: float
    upper_cutoff_V: float
    ocv_V: Table
    hysteresis_V: SocTable
    hysteresis_rate_per_As: float
    r0_ohm: Table
    r1_ohm: Table
    c1_F: Table
    r2_ohm: Table
    c2_F: Table
    resistance_activation_J_per_mol: float
    entropic_V_per_K: SocTable
    coulombic_efficiency: float
    thermal: ThermalParams
    ageing: AgeingParams
    self_discharge_A: float = 0.0
    # Exchange current I0(SoC, T) of the charge-transfer element, None = element off; its Arrhenius activation
    # energy (I0 rises with temperature) defaults to the resistance activation energy.
    exchange_current_A: Table | None = None
    exchange_activation_J_per_mol: float | None = None


def _require(doc: dict[str, Any], key: str, where: str = "") -> Any:
    if key not in doc:
        raise ValueError(f"missing key '{where}{key}'")
    return doc[key]


def _number(doc: dict[str, Any], key: str, where: str = "", minimum: float | None = None,
            positive: bool = False) -> float:
    value = _require(doc, key, where)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"'{where}{key}' must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"'{where}{key}' must be positive, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"'{where}{key}' must be >= {minimum}, got {value}")
    return float(value)


def _grid(raw: Any, what: str, lo: float = -math.inf, hi: float = math.inf) -> np.ndarray:
    grid = _frozen(raw, what)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"{what} must be a non-empty list")
    if np.any(np.diff(grid) <= 0):
        raise ValueError(f"{what} must be strictly ascending (non-monotone grid)")
    if grid[0] < lo or grid[-1] > hi:
        raise ValueError(f"{what} must lie within [{lo}, {hi}]")
    return grid


def _soc_table(doc: dict[str, Any], key: str) -> SocTable:
    raw = _require(doc, key)
    if not isinstance(raw, dict):
        raise ValueError(f"'{key}' must be an object with 'SoC' and 'values'")
    soc = _grid(_require(raw, "SoC", f"{key}."), f"'{key}'.SoC", 0.0, 1.0)
    values = _frozen(_require(raw, "values", f"{key}."), f"'{key}'.values")
    if values.shape != soc.shape:
        raise ValueError(f"'{key}': values has shape {values.shape}, expected {soc.shape} (one per SoC)")
    return SocTable(soc, values)


def _table(doc: dict[str, Any], key: str) -> Table:
    raw = _require(doc, key)
    if not isinstance(raw, dict):
        raise ValueError(f"'{key}' must be an object with 'SoC', 'Temperature [degC]' and 'values'")
    soc = _grid(_require(raw, "SoC", f"{key}."), f"'{key}'.SoC", 0.0, 1.0)
    temp_C = _grid(_require(raw, "Temperature [degC]", f"{key}."), f"'{key}'.Temperature [degC]", -273.15)
    values = _frozen(_require(raw, "values", f"{key}."), f"'{key}'.values")
    if values.shape != (temp_C.size, soc.size):
        raise ValueError(f"'{key}': values has shape {values.shape}, expected {(temp_C.size, soc.size)} "
                         "(one row per temperature, one entry per SoC)")
    return Table(soc, temp_C, values)


def _group(doc: dict[str, Any], key: str) -> dict[str, Any]:
    raw = _require(doc, key)
    if not isinstance(raw, dict):
        raise ValueError(f"'{key}' must be an object")
    return raw


def _check_sources(doc: dict[str, Any]) -> dict[str, str]:
    sources = _require(doc, "sources")
    if not isinstance(sources, dict) or not all(isinstance(v, str) and v for v in sources.values()):
        raise ValueError("'sources' must map parameter keys to non-empty citation strings")
    cited = set(sources)
    for key in (*SCALARS, *SOC_TEMP_TABLES, *SOC_TABLES, SELF_DISCHARGE, EXCHANGE_CURRENT, EXCHANGE_ACTIVATION):
        if key in doc and key not in cited:
            raise ValueError(f"'sources' has no citation for '{key}'")
    # A group is cited as a whole ("Thermal") or key by key ("Thermal.Mass [kg]").
    for group, keys in (("Thermal", THERMAL_KEYS), ("Ageing", (*AGEING_KEYS, CALENDAR_SOC))):
        for sub in keys:
            if sub in doc[group] and group not in cited and f"{group}.{sub}" not in cited:
                raise ValueError(f"'sources' has no citation for '{group}.{sub}'")
    return dict(sources)


def from_dict(doc: dict[str, Any]) -> CellParams:
    """Validate a parsed parameter document and build `CellParams`."""
    if not isinstance(doc, dict):
        raise ValueError("parameter file must hold a JSON object")
    name = _require(doc, "name")
    chemistry = _require(doc, "chemistry")
    if not isinstance(name, str) or not isinstance(chemistry, str):
        raise ValueError("'name' and 'chemistry' must be strings")
    capacity_Ah = _number(doc, "Nominal capacity [A.h]", positive=True)
    lower_V = _number(doc, "Lower voltage cut-off [V]", positive=True)
    upper_V = _number(doc, "Upper voltage cut-off [V]", positive=True)
    if lower_V >= upper_V:
        raise ValueError("'Lower voltage cut-off [V]' must be below 'Upper voltage cut-off [V]'")

    ocv = _table(doc, "OCV [V]")
    if np.any(np.diff(ocv.values, axis=1) <= 0):
        raise ValueError("'OCV [V]' must be strictly increasing in SoC at every temperature")
    tables = {key: _table(doc, key) for key in SOC_TEMP_TABLES[1:]}
    for key, table in tables.items():
        if np.any(table.values < 0):
            raise ValueError(f"'{key}' has negative values (negative resistance or capacitance)")
        if key != "R0 [Ohm]" and np.any(table.values == 0):
            raise ValueError(f"'{key}' must be positive (an RC branch needs R > 0 and C > 0)")
    hysteresis = _soc_table(doc, "OCV hysteresis [V]")
    if np.any(hysteresis.values < 0):
        raise ValueError("'OCV hysteresis [V]' is a half-width and cannot be negative")
    entropic = _soc_table(doc, "Entropic change [V/K]")
    exchange = _table(doc, EXCHANGE_CURRENT) if EXCHANGE_CURRENT in doc else None
    if exchange is not None and np.any(exchange.values <= 0):
        raise ValueError(f"'{EXCHANGE_CURRENT}' must be positive (the asinh overpotential needs I0 > 0: "
                         "no current flows at I0 = 0)")
    if EXCHANGE_ACTIVATION in doc and exchange is None:
        raise ValueError(f"'{EXCHANGE_ACTIVATION}' given without '{EXCHANGE_CURRENT}'")
    efficiency = _number(doc, "Coulombic efficiency", positive=True)
    if efficiency > 1:
        raise ValueError(f"'Coulombic efficiency' must be in (0, 1], got {efficiency}")

    th = _group(doc, "Thermal")
    thermal = ThermalParams(
        mass_kg=_number(th, "Mass [kg]", "Thermal.", positive=True),
        cp_J_per_kgK=_number(th, "Specific heat capacity [J/(kg.K)]", "Thermal.", positive=True),
        h_W_per_m2K=_number(th, "Heat transfer coefficient [W/(m2.K)]", "Thermal.", minimum=0.0),
        area_m2=_number(th, "Surface area [m2]", "Thermal.", minimum=0.0),
        neighbour_W_per_K=_number(th, "Neighbour conductance [W/K]", "Thermal.", minimum=0.0),
    )
    ag = _group(doc, "Ageing")
    ageing = AgeingParams(
        calendar_fade_per_sqrt_s=_number(ag, "Calendar fade [1/sqrt(s)]", "Ageing.", minimum=0.0),
        cycle_fade_per_Ah=_number(ag, "Cycle fade [1/A.h]", "Ageing.", minimum=0.0),
        calendar_res_per_sqrt_s=_number(ag, "Calendar resistance growth [1/sqrt(s)]", "Ageing.", minimum=0.0),
        cycle_res_per_Ah=_number(ag, "Cycle resistance growth [1/A.h]", "Ageing.", minimum=0.0),
        activation_J_per_mol=_number(ag, "Arrhenius activation energy [J/mol]", "Ageing.", minimum=0.0),
        reference_temp_C=_number(ag, "Reference temperature [degC]", "Ageing.", minimum=-273.15),
        calendar_soc_sensitivity=_number(ag, CALENDAR_SOC, "Ageing.") if CALENDAR_SOC in ag else 0.0,
    )
    return CellParams(
        name=name,
        chemistry=chemistry,
        sources=_check_sources(doc),
        nominal_capacity_Ah=capacity_Ah,
        lower_cutoff_V=lower_V,
        upper_cutoff_V=upper_V,
        ocv_V=ocv,
        hysteresis_V=hysteresis,
        hysteresis_rate_per_As=_number(doc, "Hysteresis rate [1/(A.s)]", minimum=0.0),
        r0_ohm=tables["R0 [Ohm]"],
        r1_ohm=tables["R1 [Ohm]"],
        c1_F=tables["C1 [F]"],
        r2_ohm=tables["R2 [Ohm]"],
        c2_F=tables["C2 [F]"],
        resistance_activation_J_per_mol=_number(doc, "Resistance activation energy [J/mol]", minimum=0.0),
        entropic_V_per_K=entropic,
        coulombic_efficiency=efficiency,
        thermal=thermal,
        ageing=ageing,
        self_discharge_A=_number(doc, SELF_DISCHARGE, minimum=0.0) if SELF_DISCHARGE in doc else 0.0,
        exchange_current_A=exchange,
        exchange_activation_J_per_mol=(_number(doc, EXCHANGE_ACTIVATION, minimum=0.0)
                                       if EXCHANGE_ACTIVATION in doc else None),
    )


def load(path: str | Path) -> CellParams:
    """Read and validate a parameter file; a ValueError names the file and the offending key."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    try:
        return from_dict(doc)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
