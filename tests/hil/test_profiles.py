"""Load profiles: shapes, limits, reproducibility, and the US06 file against its source recording."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from hil import cycler, profiles
from tests.shared_data import data_file


@dataclass
class LinearCell:
    """V = 3.0 V + 1.2 V x SoC + R x I: enough to exercise the voltage-dependent segments."""

    capacity_Ah: float = 2.9
    soc: float = 0.5
    r_ohm: float = 0.05
    current_A: float = 0.0

    def max_cell_V(self) -> float:
        return 3.0 + 1.2 * self.soc + self.r_ohm * self.current_A

    def min_cell_V(self) -> float:
        return self.max_cell_V()

    def run(self, segment: profiles.Segment, limit_s: int = 20_000) -> list[float]:
        currents = []
        for t in range(limit_s):
            demand = segment.demand_A(float(t), self)
            if demand is None:
                return currents
            self.current_A = demand
            self.soc += demand / (self.capacity_Ah * 3600)
            currents.append(demand)
        raise AssertionError("segment never ended")


def test_constant_current_stops_at_its_duration_or_voltage() -> None:
    assert len(LinearCell().run(profiles.ConstantCurrent(-1.0, duration_s=60))) == 60
    cell = LinearCell(soc=0.2)
    cell.run(profiles.ConstantCurrent(-1.0, stop_V=3.0))
    assert cell.min_cell_V() <= 3.0 and cell.soc > 0.0


def test_cccv_holds_the_voltage_and_tapers() -> None:
    cell = LinearCell(soc=0.3)
    currents = cell.run(profiles.ConstantCurrentConstantVoltage(c_rate=1.0, voltage_V=4.1, taper_c_rate=0.05))
    assert currents[0] == pytest.approx(2.9)
    assert currents[-1] < 0.2 * 2.9 and min(currents) >= 0.05 * 2.9  # tapered, then done
    assert cell.max_cell_V() <= 4.1 + 0.02


def test_hppc_structure() -> None:
    segments = profiles.hppc(levels=3)
    pulses = [s for s in segments if isinstance(s, profiles.ConstantCurrent) and s.duration_s == 10]
    assert [p.c_rate for p in pulses] == [-0.5, -1, -2, -4, -6] * 3


def test_synthetic_drives_are_seeded_and_bounded() -> None:
    a, b, c = profiles.udds_like(1), profiles.udds_like(1), profiles.udds_like(2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(a) == 1369 and -2.5 <= a.min() < -0.5 and 0 < a.max() <= 1.0 and (a == 0).mean() > 0.1
    walk = profiles.random_walk(3, 3600)
    assert np.array_equal(walk, profiles.random_walk(3, 3600)) and walk.min() >= -3.0 and walk.max() <= 1.0


def test_us06_profile_peaks() -> None:
    c = profiles.us06()
    assert len(c) == profiles.US06_PERIOD_S
    assert -6.0 < c.min() < -4.0 and 1.5 < c.max() < 2.5  # about 6C discharge and 2C regen at 10 Hz


def test_us06_file_matches_the_recording() -> None:
    log = cycler.read_log(data_file("us06_25degC.mat"))
    derived = profiles.derive_us06(log.time_s, log.current_A, 2.9)
    assert np.allclose(profiles.us06(), derived, atol=1e-5), "regenerate with hil.profiles.derive_us06"


def test_csv_profile_errors_and_hold(tmp_path: Path) -> None:
    good = tmp_path / "p.csv"
    good.write_text("# a comment\ntime_s,current_A\n0,-2.9\n2.5,1.45\n")
    assert profiles.read_csv_profile(good, capacity_Ah=2.9).tolist() == [-1.0, -1.0, -1.0, 0.5]
    bad = tmp_path / "bad.csv"
    bad.write_text("t,current_A\n0,1\n")
    with pytest.raises(ValueError, match="needs the columns time_s and current_A"):
        profiles.read_csv_profile(bad, 2.9)
    back = tmp_path / "back.csv"
    back.write_text("time_s,current_A\n0,1\n2,1\n1,1\n")
    with pytest.raises(ValueError, match="must not decrease"):
        profiles.read_csv_profile(back, 2.9)
