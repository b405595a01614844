"""`soxbms bench hil --quick`: runs and writes sane figures (loose checks; the full run reports the bounds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_hil_quick(tmp_path: Path) -> None:
    out = tmp_path / "hil.json"
    proc = subprocess.run([sys.executable, "-m", "host.cli", "--state", str(tmp_path), "bench", "hil", "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["chain_lost"] == 0 and r["chain_ecm_x_realtime"] > 5
    assert r["rig_ecm_x_realtime"] > 50 and r["ageing_cell_cycles_per_min"] > 100
    assert r["samples_decoded"] == 150 and r["frames_sent"] > 150
    assert r["corrupt_frames_injected"] > 0 and r["corrupt_frames_undetected"] == 0
    assert r["chain_spme_x_realtime"] is None and "PyBaMM" in r["not_measured"]
    assert r["bounds"]["corrupt_frames_undetected == 0"] is True
