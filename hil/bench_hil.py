"""`soxbms bench hil`: how fast the rig and the whole chain run, and whether line errors get through.

- chain_ecm_x_realtime: a 16-cell US06 scenario at 1 Hz through the whole chain (simulated module,
  rig, MicroPython board, Mosquitto, host), simulated time over wall time, start-up included.
- rig_ecm_x_realtime: the rig alone with the same module, framing and the pty included, asked for
  samples as fast as a client can.
- ageing_cell_cycles_per_min: fast-forward ageing of 16 cells, cell-cycles per wall minute.
- frames_sent / corrupt_frames_injected / corrupt_frames_undetected: a fixed count of samples at a
  bit-error rate of 1e-4 both ways between the rig and the board's HAL under MicroPython; undetected
  = a request the rig accepted although corrupted, plus a sample the board decoded differently
  from what the rig meant (from the rig's side channel).
- chain_spme_x_realtime: the same chain with PyBaMM SPMe truth (hil.physics.pybamm_cells, Chen2020, one
  simulation per cell, lumped thermal), start-up (model build, C/20 capacities) included.
- ecm_vs_spme_voltage_rmse_mV: the two-RC model fitted to SPMe C/20 and HPPC tests (hil.spme_fit) against SPMe on
  a US06 drive from full to 2.5 V. Full: fitted afresh; quick: the stored fit (models/cells/chen2020_spme_fit.json)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.harness import environment_versions, micropython_binary
from hil.link import PtyLink
from hil.physics.module import CellModule
from hil.profiles import Table, us06
from hil.rig import Rig
from hil.scenario import ROOT, load_scenario
from hil.scenario_run import run_scenario
from hil.simulated import SimulatedModule
from soxcommon import frame

SCENARIO = ROOT / "scenarios" / "us06_short.toml"


@dataclass(frozen=True)
class Plan:
    chain_s: int  # simulated seconds of the whole-chain run
    rig_samples: int
    ageing_cycles: int
    ber_samples: int
    spme_chain_s: int
    spme_cells: int
    spme_refit: bool  # fit the ECM to SPMe afresh, else replay the stored fit


FULL = Plan(chain_s=3600, rig_samples=20_000, ageing_cycles=2000, ber_samples=3000, spme_chain_s=3600, spme_cells=16,
            spme_refit=True)
QUICK = Plan(chain_s=120, rig_samples=1000, ageing_cycles=100, ber_samples=150, spme_chain_s=60, spme_cells=4,
             spme_refit=False)
SPME_FIT = ROOT / "models" / "cells" / "chen2020_spme_fit.json"


def chain_x_realtime(state: Path, seconds: int) -> dict[str, Any]:
    scenario = state / "chain.toml"
    scenario.write_text(SCENARIO.read_text().replace("duration_s = 600", f"duration_s = {seconds}"))
    score = run_scenario(scenario, state)
    return {"chain_ecm_x_realtime": score["x_realtime"], "chain_lost": score["lost"],
            "chain_voltage_reading_rms_error_mV": score["voltage_reading_rms_error_mV"]}


def chain_spme_x_realtime(state: Path, seconds: int, cells: int) -> dict[str, Any]:
    scenario = state / "chain_spme.toml"
    scenario.write_text(SCENARIO.read_text().replace("duration_s = 600", f"duration_s = {seconds}")
                        .replace('name = "us06_short"', 'name = "us06_short_spme"'))
    score = run_scenario(scenario, state, cells=cells, truth="spme")
    return {"chain_spme_x_realtime": score["x_realtime"], "chain_spme_cells": cells, "chain_spme_s": seconds,
            "chain_spme_lost": score["lost"]}


def ecm_vs_spme_rmse_mV(refit: bool) -> float:
    from hil import spme_fit  # imports PyBaMM

    if refit:
        card = spme_fit.run()
        return float(card["validation"]["voltage RMSE [mV]"])
    params = json.loads(SPME_FIT.read_text())
    return float(spme_fit.compare(params, spme_fit.drive_log())["voltage RMSE [mV]"])


def _read_reply(port: int, size: int) -> bytes:
    """A reply of known size, CRC-checked with zlib (a byte-at-a-time parser here would time the
    client, not the rig)."""
    data = b""
    deadline = time.monotonic() + 5
    while len(data) < size:
        if time.monotonic() > deadline:
            raise TimeoutError("the rig did not answer")
        if select.select([port], [], [], 1.0)[0]:
            data += os.read(port, size - len(data))
    if zlib.crc32(data[2:]) != frame.CRC_RESIDUE:
        raise ValueError("corrupt reply from the rig")
    return data


def rig_x_realtime(samples: int) -> float:
    scenario = load_scenario(SCENARIO)
    module = SimulatedModule(scenario.params, 16, scenario.segments(), seed=1)
    link = PtyLink()
    rig = Rig(link, module, period_ms=1000)
    rig.start()
    port = os.open(link.slave_path, os.O_RDWR | os.O_NOCTTY)
    tx = frame.Codec(0)
    size = frame.OVERHEAD_BYTES + frame.sample_payload_bytes(16)
    try:
        started = time.monotonic()
        for seq in range(1, samples + 1):
            os.write(port, bytes(tx.buf[:tx.encode(frame.T_SAMPLE_REQ, seq, 0)]))
            _read_reply(port, size)
        wall_s = time.monotonic() - started
    finally:
        os.close(port)
        rig.stop()
        link.close()
    return samples / wall_s  # one simulated second a sample


def ageing_cycles_per_min(cycles: int) -> float:
    module = CellModule(load_scenario(SCENARIO).params, 16, seed=1, initial_soc=1.0)
    started = time.monotonic()
    module.fast_forward(cycles=cycles, dod=0.8, c_rate=1.0, temp_C=25.0, cycle_duration_s=3 * 3600)
    return cycles * 16 / ((time.monotonic() - started) / 60)


def bit_errors(samples: int, ber: float = 1e-4) -> dict[str, Any]:
    params = load_scenario(SCENARIO).params
    module = SimulatedModule(params, 16, [Table(us06())], seed=2)
    link = PtyLink()
    rig = Rig(link, module, period_ms=1000, ber=ber, seed=3)
    rig.start()
    code = (
        "import sys, json\n"
        f"sys.path.insert(0, {str(ROOT / 'firmware')!r})\n"
        "from drivers.hil_hal import HilHal\nfrom engine.sample import Sample\n"
        f"hal = HilHal({link.slave_path!r}, 16, timeout_ms=100, retries=50)\ns = Sample(16)\n"
        f"for _ in range({samples}):\n"
        "    hal.read(s)\n    print(json.dumps([s.t_ms, s.current_mA] + list(s.cells)))\n"
    )
    try:
        out = subprocess.run([micropython_binary(), "-X", "heapsize=160k", "-c", code], capture_output=True,
                             text=True, check=True, timeout=600).stdout
    finally:
        rig.stop()
        link.close()
    undetected = rig.counters.corrupt_requests_undetected
    for line in out.splitlines():
        t_ms, current_mA, *cells = json.loads(line)
        rx = frame.Codec(frame.sample_payload_bytes(16))
        assert any(rx.feed(b) for b in rig.sent_replies[t_ms])
        head = frame.HEADER_BYTES + frame.SAMPLE_HEAD_BYTES
        meant = [frame.get_i32(rx.buf, head + 4 * k) for k in range(16 * frame.CELL_FIELDS)]
        undetected += (current_mA, cells) != (frame.get_i32(rx.buf, frame.HEADER_BYTES + 6), meant)
    return {"bit_error_rate": ber, "samples_decoded": len(out.splitlines()), "frames_sent": rig.counters.frames_sent,
            "corrupt_frames_injected": rig.counters.corrupt_frames_injected,
            "corrupt_frames_undetected": undetected}


def run(out: Path | None, quick: bool, state: Path) -> dict[str, Any]:
    started = time.monotonic()
    state.mkdir(parents=True, exist_ok=True)
    plan = QUICK if quick else FULL
    result: dict[str, Any] = {"quick": quick}
    result.update(chain_x_realtime(state, plan.chain_s))
    result["rig_ecm_x_realtime"] = round(rig_x_realtime(plan.rig_samples), 1)
    result["ageing_cell_cycles_per_min"] = round(ageing_cycles_per_min(plan.ageing_cycles))
    result.update(bit_errors(plan.ber_samples))
    result.update(chain_spme_x_realtime(state, plan.spme_chain_s, plan.spme_cells))
    result["ecm_vs_spme_voltage_rmse_mV"] = ecm_vs_spme_rmse_mV(plan.spme_refit)
    result["versions"] = environment_versions()
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["bounds"] = {
        "chain_ecm_x_realtime >= 100": result["chain_ecm_x_realtime"] >= 100,
        "rig_ecm_x_realtime >= 2000": result["rig_ecm_x_realtime"] >= 2000,
        "ageing_cell_cycles_per_min >= 1000": result["ageing_cell_cycles_per_min"] >= 1000,
        "corrupt_frames_undetected == 0": result["corrupt_frames_undetected"] == 0,
        "chain_spme_x_realtime >= 20": result["chain_spme_x_realtime"] >= 20,
        "ecm_vs_spme_voltage_rmse_mV <= 15": result["ecm_vs_spme_voltage_rmse_mV"] <= 15,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    return result
