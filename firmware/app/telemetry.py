# Payloads of the board's topics, built from queue records (wire definition: soxcommon.wire).

import json

from soxcommon import wire
from soxcommon.frame import ABSENT

FIRMWARE_VERSION = "0.1.0"
COMPACT = (",", ":")  # no blanks: a 16-cell data message with estimates is ~15 % shorter, in flight and in RAM

_CELL_ALIASES = [q[0] for q in wire.CELL_QUANTITIES]
_ESTIMATE_ALIASES = [q[0] for q in wire.ESTIMATE_QUANTITIES]


def birth(boot, bd_seq, n_cells, queued, dropped):
    return json.dumps({
        "pv": wire.PROTOCOL_VERSION,
        "b": boot,
        "bd": bd_seq,
        "n": n_cells,
        "fw": FIRMWARE_VERSION,
        "al": wire.alias_table(),
        "q": queued,
        "d": dropped,
    }, separators=COMPACT)


def death(bd_seq):
    return json.dumps({"bd": bd_seq}, separators=COMPACT)


def _present(value):
    return None if value == ABSENT else value


def data(queue, low_seq):
    """Data message of the record loaded in `queue` (RingQueue.read)."""
    t_s, t_ms, relative = queue.record_time()
    msg = {
        "b": queue.record_boot(),
        "s": queue.record_seq(),
        "lo": low_seq,
        "d": queue.dropped,
        "t": t_s,
        "tm": t_ms,
        "tr": relative,
        "i": _present(queue.record_current()),
    }
    n = queue.n_cells
    for k in range(len(_CELL_ALIASES)):
        msg[_CELL_ALIASES[k]] = [_present(queue.record_cell(c, k)) for c in range(n)]
    level = queue.record_level()
    if level != ABSENT:  # the board's estimates: all of them or none (wire.check_data)
        for k in range(len(_ESTIMATE_ALIASES)):
            msg[_ESTIMATE_ALIASES[k]] = [_present(queue.record_estimate(c, k)) for c in range(n)]
        msg[wire.SOS_LEVEL[0]] = level
        msg[wire.SOS_REASONS[0]] = [queue.record_reason(i) for i in range(queue.record_reasons())]
    return json.dumps(msg, separators=COMPACT)
