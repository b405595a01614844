"""Run a benchmark's --quick mode as a user would and return its JSON figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_quick(name: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, "-m", "host.cli", "--state", str(tmp_path), "bench", name, "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    assert result["quick"] is True
    return result
