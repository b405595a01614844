"""Cell-module physics for the hardware-in-the-loop rig: a series string of cells, each a 2-RC
equivalent circuit with hysteresis, a lumped thermal node in a 1-D chain, and calendar/cycle ageing,
parameterised by a JSON cell file (models/cells/SCHEMA.md). Current > 0 charges."""

from hil.physics.module import NO_SPREAD, CellModule, CellSpread
from hil.physics.params import CellParams, load

# The PyBaMM truth's parameter sets (hil.physics.pybamm_cells), named here so that a scenario is checked without
# importing PyBaMM: Chen2020 (LG M50), ORegan2022 (the same cell, temperature-dependent).
PYBAMM_PARAMETER_SETS = ("Chen2020", "ORegan2022")

__all__ = ["NO_SPREAD", "PYBAMM_PARAMETER_SETS", "CellModule", "CellParams", "CellSpread", "load"]
