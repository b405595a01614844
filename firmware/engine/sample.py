# One sample of the cell module, and the board's estimates of it, in preallocated integer buffers
# (the sampling path allocates nothing). Cell values are stored cell-major: cells[c * CELL_FIELDS + k],
# k in wire.CELL_QUANTITIES order (voltage_mV, temp_dC, pressure_Pa, tof_ns, amplitude_bp, fbg_pm).

from array import array

from soxcommon import wire
from soxcommon.frame import ABSENT, CELL_FIELDS

ESTIMATE_FIELDS = len(wire.ESTIMATE_QUANTITIES)  # soc_bp, soc_sigma_bp, soh_bp
MAX_REASONS = wire.SOS_MAX_REASONS


class Sample:
    def __init__(self, n_cells):
        self.n_cells = n_cells
        self.t_ms = 0  # sample time: the rig's simulated time in lockstep, board ticks otherwise
        self.current_mA = 0
        self.flags = 0  # frame.F_*: the front-end's outputs as they really are
        self.cells = array("i", [0] * (n_cells * CELL_FIELDS))

    def cell(self, c, k):
        return self.cells[c * CELL_FIELDS + k]


class Estimate:
    """The board's estimates of one sample, as wire integers: per cell values[c * ESTIMATE_FIELDS + k]
    (ABSENT: not estimated), the pack's state-of-safety level (ABSENT: no estimation) and up to
    MAX_REASONS reason codes (wire.reason)."""

    def __init__(self, n_cells):
        self.n_cells = n_cells
        self.values = array("i", [ABSENT] * (n_cells * ESTIMATE_FIELDS))
        self.level = ABSENT
        self.reasons = array("i", [0] * MAX_REASONS)
        self.n_reasons = 0
