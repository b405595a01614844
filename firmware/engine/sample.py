# One sample of the cell module, in preallocated integer buffers (the sampling path allocates
# nothing). Cell values are stored cell-major: cells[c * CELL_FIELDS + k], k in
# wire.CELL_QUANTITIES order (voltage_mV, temp_dC, pressure_Pa, tof_ns, amplitude_bp, fbg_pm).

from array import array

from soxcommon.frame import CELL_FIELDS


class Sample:
    def __init__(self, n_cells):
        self.n_cells = n_cells
        self.t_ms = 0  # sample time: the rig's simulated time in lockstep, board ticks otherwise
        self.current_mA = 0
        self.flags = 0  # frame.F_*: the front-end's outputs as they really are
        self.cells = array("i", [0] * (n_cells * CELL_FIELDS))

    def cell(self, c, k):
        return self.cells[c * CELL_FIELDS + k]
