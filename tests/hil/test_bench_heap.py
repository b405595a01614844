"""hil/bench_heap.py: the heap bisection's test run with the estimators on, which must fail, not pass quietly, when
the board cannot load its estimators (it then runs on without them)."""

from __future__ import annotations

from pathlib import Path

from hil.bench_heap import CELL, _estimated, _module
from hil.bench_link import survives
from hil.firmware_build import cached_build


def test_a_run_counts_only_with_its_estimators(tmp_path: Path) -> None:
    firmware = cached_build()
    board = {"module_factory": _module, "sox_cell": CELL}
    assert survives(tmp_path, 320, 40, firmware, check=_estimated, **board)
    # In 128 KB the estimators do not fit: the board runs on and stores every sample, without estimates, which
    # does not count
    assert survives(tmp_path, 128, 40, firmware, **board)
    assert not survives(tmp_path, 128, 40, firmware, check=_estimated, **board)
