"""`soxbms hil rig SCENARIO --port /dev/ttyUSB0`: the rig alone on a named serial port (pyserial), for a real
board on a bench. The board runs its `hil` HAL on that UART and talks to its own broker and host; the rig
answers its sample requests and commands for the scenario's samples (lockstep, or real time), shows progress,
and writes the truth: STATE/hil/<scenario>-rig/samples.csv (the board columns stay empty: the board's
readings are in its host's store) and score.json (link counters, faults, plant events)."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hil import faults
from hil.chain import ProgressBar
from hil.link import SerialLink
from hil.rig import Rig
from hil.scenario import load_scenario
from hil.scenario_run import build_module, write_outputs

POLL_S = 0.2


def serve_port(path: Path, state_dir: Path, port: str, baudrate: int = 921600, realtime: bool = False,
               cells: int | None = None, truth: str | None = None,
               stop: threading.Event | None = None) -> dict[str, Any]:
    """Serve until the scenario's samples are answered or `stop` is set (Ctrl-C from the CLI)."""
    scenario = load_scenario(path, cells)
    module = build_module(scenario, 0, truth or scenario.truth)
    out_dir = state_dir / "hil" / f"{scenario.name}-rig"
    out_dir.mkdir(parents=True, exist_ok=True)
    link = SerialLink(port, baudrate)
    rig = Rig(link, module, scenario.period_ms, realtime=realtime)
    stop = stop or threading.Event()
    bar = ProgressBar(f"{scenario.name} on {port}", scenario.samples, scenario.period_ms)
    rig.start()
    try:
        while rig.counters.samples < scenario.samples and not stop.wait(POLL_S):
            bar.show(rig.counters.samples)
        bar.show(rig.counters.samples)
    finally:
        bar.close()
        rig.stop()
        link.close()
    score: dict[str, Any] = {"scenario": scenario.name, "port": port, "baudrate": baudrate, "realtime": realtime,
                             "samples": scenario.samples, **asdict(rig.counters), "crc_errors": rig.crc_errors,
                             "simulated_s": rig.sim_ms / 1000,
                             "faults": faults.summary(scenario.faults, [(t.t_s, t.faults) for t in module.truth]),
                             "plant_events": [asdict(e) for e in module.plant.events], "outputs": str(out_dir)}
    write_outputs(out_dir, module, [], scenario.cells)
    (out_dir / "score.json").write_text(json.dumps(score, indent=1))
    return score
