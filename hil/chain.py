"""One board's run through the whole chain (rig, MicroPython board, broker, host) for `hil run`, `hil replay`
and `soxbms run`: a fresh state every time, a progress bar, and what the board stored."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from hil.harness import BoardProcess, Fleet
from hil.rig import RigModule
from host.store import open_store


class ProgressBar:
    """`label [#####.....] done/total samples, N x real time` on one line of stderr, redrawn at each whole percent
    (a log file gets a hundred updates, not one per sample)."""

    WIDTH = 30

    def __init__(self, label: str, total: int, period_ms: int, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.total = total
        self.period_ms = period_ms
        self.stream = stream
        self._shown = -1
        self._started = time.monotonic()

    def show(self, done: int) -> None:
        percent = 100 * done // self.total if self.total else 100
        if percent == self._shown:
            return
        self._shown = percent
        filled = self.WIDTH * min(done, self.total) // self.total if self.total else self.WIDTH
        speed = done * self.period_ms / 1000 / max(time.monotonic() - self._started, 1e-9)
        print(f"\r  {self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{self.total} samples, "
              f"{speed:.0f}x real time ", end="", file=self.stream, flush=True)

    def close(self) -> None:
        print(file=self.stream, flush=True)


# A 16-cell board starts its estimators (EKF, SoH, SoS) from 176 KB of this 64-bit unix port's heap (at 168 KB it
# logs "estimation off: memory allocation failed"), and needs more with the NN fused (hil/bench_heap.py measures
# the bound): an estimating board gets room; one that does not keeps the board's 160 KB.
SOX_HEAP_KB = 256


@dataclass
class ChainRun:
    score: dict[str, Any]  # Fleet.score(): sent, stored, lost, duplicates, gaps, heap, ...
    # What the host stored from the board, in sequence order; with estimation each row goes on with the
    # estimate columns of SqlStore.samples(estimates=True): sos_level, sos_reasons, soc_bp, soc_sigma_bp, soh_bp.
    rows: list[tuple[Any, ...]]
    wall_s: float
    board: BoardProcess  # its log (board.log) and summaries


def run_chain(out_dir: Path, label: str, cells: int, samples: int, period_ms: int,
              module_factory: Callable[[int], RigModule], realtime: bool = False, realtime_s: float = 0.0,
              db_url: str | None = None, broker_prefer: str = "mosquitto",
              sox: dict[str, str] | None = None) -> ChainRun:
    """Run one board for `samples` samples against the module the factory makes. The board's boot counter
    and queue persist in out_dir/run, so that folder starts empty: sample k is then the k-th of boot 1.
    sox: the board config's "sox" section (hil.harness.sox_config): the board estimates; None: it does not."""
    shutil.rmtree(out_dir / "run", ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    estimating: dict[str, Any] = {} if sox is None else {"heap_kb": SOX_HEAP_KB, "board_extra": {"sox": sox}}
    fleet = Fleet(out_dir / "run", boards=1, cells=cells, samples=samples, pace_ms=0, period_ms=period_ms,
                  module_factory=module_factory, realtime=realtime, db_url=db_url, broker_prefer=broker_prefer,
                  **estimating)
    bar = ProgressBar(label, samples, period_ms)
    started = time.monotonic()
    try:
        fleet.start()
        fleet.wait_boards(timeout_s=120 + samples * 0.05 + (realtime_s if realtime else 0.0),
                          on_tick=lambda: bar.show(sum(r.counters.samples for r in fleet.rigs)))
    finally:
        bar.close()
        fleet.stop()
    wall_s = time.monotonic() - started
    store = open_store(fleet.db)
    try:
        rows = [r for r in store.samples(fleet.device_ids()[0], estimates=sox is not None) if r[0] == 1]
    finally:
        store.close()
    return ChainRun(fleet.score(), rows, wall_s, fleet.board_procs[0])
