"""`soxbms run` (what `make run` calls): one bounded lockstep scenario through the whole chain, with
progress, a summary, and everything it started stopped again."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from hil.harness import Fleet


def run_demo(state_dir: Path, boards: int = 1, cells: int = 16, samples: int = 600, db_url: str | None = None,
             broker_prefer: str = "mosquitto") -> int:
    fleet = Fleet(state_dir, boards=boards, cells=cells, samples=samples, db_url=db_url,
                  broker_prefer=broker_prefer)
    started = time.monotonic()
    total = boards * samples
    last_shown = [-1]

    def progress() -> None:
        done = sum(r.counters.samples for r in fleet.rigs)
        if done != last_shown[0]:
            last_shown[0] = done
            width = 30
            filled = width * done // total if total else width
            print(f"\r  sampling [{'#' * filled}{'.' * (width - filled)}] {done}/{total} samples",
                  end="", file=sys.stderr, flush=True)

    try:
        print(f"soxbms run: {boards} board(s) x {cells} cells, {samples} samples each, lockstep", file=sys.stderr)
        fleet.start()
        assert fleet.broker is not None
        print(f"  broker: {fleet.broker.kind} {fleet.broker.version} on {fleet.broker.url}", file=sys.stderr)
        fleet.wait_boards(timeout_s=120 + samples * boards * 0.05, on_tick=progress)
        print(file=sys.stderr)
    finally:
        fleet.stop()
    score = fleet.score()
    score["wall_s"] = round(time.monotonic() - started, 1)
    score["simulated_s"] = samples * fleet.period_ms / 1000
    print(json.dumps(score, indent=1))
    print(f"sent {score['sent']}, stored {score['stored']}, lost {score['lost']}, duplicated {score['duplicates']},"
          f" gaps {score['gaps']}, board heap peak {score['heap_live_peak_bytes']} B;"
          f" {score['simulated_s']:.0f} s simulated in {score['wall_s']} s."
          f" Data: {score['db']} (soxbms --state {state_dir} status | export board-01)", file=sys.stderr)
    return 0 if score["lost"] == 0 and score["duplicates"] == 0 else 1
