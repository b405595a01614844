"""The real cycler recordings in ../shared/data (next to the checkout): a test that needs one skips
with the reason where they are absent, and fails under CI, which always has them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PANASONIC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "panasonic-18650pf"


def data_file(name: str) -> Path:
    path = PANASONIC / name
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is required under CI (the shared Panasonic 18650PF data)")
        pytest.skip(f"{path} absent: the shared Panasonic 18650PF data is not next to this checkout")
    return path
