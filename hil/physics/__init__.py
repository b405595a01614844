"""Cell-module physics for the hardware-in-the-loop rig: a series string of cells, each a 2-RC
equivalent circuit with hysteresis, a lumped thermal node in a 1-D chain, and calendar/cycle ageing,
parameterised by a JSON cell file (models/cells/SCHEMA.md). Current > 0 charges."""

from hil.physics.module import NO_SPREAD, CellModule, CellSpread
from hil.physics.params import CellParams, load

__all__ = ["NO_SPREAD", "CellModule", "CellParams", "CellSpread", "load"]
