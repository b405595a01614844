"""Sensor models of the HIL rig: true cell physics -> imperfect integer wire readings (see models.py)."""

from hil.sensors.models import (
    ABSENT,
    CELL_FIELDS,
    DEFAULT_RANGES_PATH,
    FbgCoeffs,
    Readings,
    SensorSuite,
    Truth,
    fbg_forward,
    load_ranges,
    separate,
)

__all__ = ["ABSENT", "CELL_FIELDS", "DEFAULT_RANGES_PATH", "FbgCoeffs", "Readings", "SensorSuite", "Truth",
           "fbg_forward", "load_ranges", "separate"]
