"""Cycler log reader: the Panasonic 18650PF files against the figures measured in shared/data/README.md, CSV
mappings, time-axis quirks, missing-column errors, and the coulomb-counted reference SoC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hil.cycler import CsvMapping, CyclerFormatError, CyclerLog, coulomb_soc, cumulative_charge_Ah, read_csv, read_log
from tests.shared_data import data_file


def charge_moved_Ah(log: CyclerLog) -> tuple[float, float]:
    """(discharged, charged) Ah, each a trapezoid over the clipped current."""
    dt = np.diff(log.time_s)
    dis = np.minimum(log.current_A, 0.0)
    chg = np.maximum(log.current_A, 0.0)
    return float(-np.sum(0.5 * (dis[1:] + dis[:-1]) * dt)) / 3600, float(np.sum(0.5 * (chg[1:] + chg[:-1]) * dt)) / 3600


# README figures are given to 4 decimals in Ah and 0.1 s: half a unit of the last digit, plus float noise.
AH_TOL = 0.00051
S_TOL = 0.051


def test_us06_matches_readme() -> None:
    log = read_log(data_file("us06_25degC.mat"))
    assert len(log) == 48_061
    assert log.duration_s == pytest.approx(4818.9, abs=S_TOL)
    dt = np.diff(log.time_s)
    assert np.count_nonzero(dt == 0) == 1 and np.count_nonzero(dt > 0.5) == 7
    discharged, charged = charge_moved_Ah(log)
    assert discharged == pytest.approx(3.2137, abs=AH_TOL)
    assert charged == pytest.approx(0.6274, abs=AH_TOL)
    q = cumulative_charge_Ah(log)
    assert q[-1] == pytest.approx(-2.5863, abs=AH_TOL)  # net removed, so negative with charge positive
    assert log.ah is not None and log.ah[-1] == pytest.approx(-2.5860, abs=0.00005)
    assert np.max(np.abs(q - log.ah)) <= 0.0012 + 1e-6  # README: integral tracks the Ah column within 0.0012 Ah
    # Sign: positive is charge, i.e. the regenerative pulses.
    assert log.current_A.min() == pytest.approx(-20.82, abs=0.005)
    assert log.current_A.max() == pytest.approx(7.57, abs=0.005)
    assert np.count_nonzero(log.current_A > 0.01) == 10_264  # README counts rows above a 10 mA rest threshold
    assert log.voltage_V[0] == pytest.approx(4.1780, abs=5e-5)
    assert log.temp_C is not None and log.temp_C.max() == pytest.approx(32.97, abs=0.005)
    assert log.source["start"] == "3/20/2017 1:43:49 AM"
    assert log.source["sha256"] == "c12a57f8fa2bfcb7fcd30f243781390e1567acb369da647e6bdc08885deb0ac4"


def test_hppc_matches_readme() -> None:
    log = read_log(data_file("hppc_5pulse_25degC.mat"))
    assert len(log) == 102_800
    assert log.duration_s == pytest.approx(97_599.4, abs=S_TOL)
    assert np.count_nonzero(np.diff(log.time_s) == 0) == 153
    assert log.current_A.max() == 0.0 and log.current_A.min() == pytest.approx(-17.40, abs=0.005)
    # The CC discharges between pulse sets are not logged: only the tester's Ah counter holds them.
    assert cumulative_charge_Ah(log)[-1] == pytest.approx(-1.339, abs=0.0005)
    assert log.ah is not None and log.ah.min() == pytest.approx(-2.7728, abs=0.00005)


def test_c20_matches_readme() -> None:
    log = read_log(data_file("c20_ocv_25degC.mat"))
    assert len(log) == 2_453
    assert log.duration_s == pytest.approx(195_824.5, abs=S_TOL)
    discharged, charged = charge_moved_Ah(log)
    assert discharged == pytest.approx(2.9974, abs=AH_TOL)
    assert charged == pytest.approx(2.6163, abs=AH_TOL)
    assert log.ah is not None
    assert (log.ah[0], log.ah.min(), log.ah[-1]) == pytest.approx((0.0296, -2.9677, -0.3514), abs=0.00005)
    q = cumulative_charge_Ah(log)
    assert np.max(np.abs(q - (log.ah - log.ah[0]))) <= 0.0015 + 1e-6


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_bdf_defaults_keep_duplicate_timestamps(tmp_path: Path) -> None:
    csv = write(tmp_path / "bdf.csv", "Test Time / s,Voltage / V,Current / A,Temperature T1 / degC\n"
                "10.0,4.10,0.0,25.0\n10.5,4.05,-2.0,25.1\n10.5,4.04,-2.0,25.1\n13.0,4.00,-2.0,\n")
    log = read_csv(csv)
    assert log.time_s.tolist() == [0.0, 0.5, 0.5, 3.0]  # order kept, one zero step, irregular spacing
    assert log.current_A.tolist() == [0.0, -2.0, -2.0, -2.0]  # BDF counts charge as positive: unchanged
    assert log.temp_C is not None and np.isnan(log.temp_C[-1]) and log.temp_C[0] == 25.0
    assert log.ah is None
    # Discharge: 2 A for 2.5 s plus the ramp's half step over 0.5 s.
    assert cumulative_charge_Ah(log)[-1] == pytest.approx(-(0.5 * 2.0 * 0.5 + 2.0 * 2.5) / 3600)


def test_csv_custom_mapping_units_and_sign(tmp_path: Path) -> None:
    csv = write(tmp_path / "tester.csv", "t_ms;U_mV;I_mA;Q_mAh;T\n0;4100;0;0;24.0\n1000;4000;1500;0.2;24.5\n"
                "2000;3990;1500;0.8;25.0\n")
    mapping = CsvMapping(time="t_ms", voltage="U_mV", current="I_mA", ah="Q_mAh", temperature="T", time_unit="ms",
                         voltage_scale=1e-3, current_scale=1e-3, ah_scale=1e-3, charge_positive=False, delimiter=";")
    log = read_csv(csv, mapping)
    assert log.time_s.tolist() == [0.0, 1.0, 2.0]
    assert log.voltage_V.tolist() == pytest.approx([4.1, 4.0, 3.99])
    assert log.current_A.tolist() == pytest.approx([0.0, -1.5, -1.5])  # file's positive discharge, flipped
    assert log.ah is not None and log.ah.tolist() == pytest.approx([0.0, -0.0002, -0.0008])
    assert log.source["format"] == "csv" and "negative" in log.source["sign"]


def test_csv_datetime_time_column(tmp_path: Path) -> None:
    csv = write(tmp_path / "dt.csv", "When,Voltage / V,Current / A\n2017-03-20 01:43:49,4.1,0\n"
                "2017-03-20 01:43:49,4.1,-1\n2017-03-20 01:44:50,4.0,-1\n")
    log = read_csv(csv, CsvMapping(time="When", time_unit="%Y-%m-%d %H:%M:%S"))
    assert log.time_s.tolist() == [0.0, 0.0, 61.0]


def test_missing_column_is_named(tmp_path: Path) -> None:
    csv = write(tmp_path / "no_current.csv", "Test Time / s,Voltage / V\n0,3.7\n1,3.6\n")
    with pytest.raises(CyclerFormatError, match=r"current column 'Current / A' not found"):
        read_csv(csv)
    with pytest.raises(CyclerFormatError, match=r"temperature column 'Cell T' not found"):
        read_csv(write(tmp_path / "ok.csv", "Test Time / s,Voltage / V,Current / A\n0,3.7,0\n1,3.6,0\n"),
                 CsvMapping(temperature="Cell T"))


def test_time_going_backwards_is_rejected(tmp_path: Path) -> None:
    csv = write(tmp_path / "back.csv", "Test Time / s,Voltage / V,Current / A\n0,3.7,0\n2,3.6,0\n1,3.6,0\n")
    with pytest.raises(CyclerFormatError, match="time goes backwards at row 2"):
        read_csv(csv)


def test_unknown_suffix_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(CyclerFormatError, match="unknown log format"):
        read_log(write(tmp_path / "log.xlsx", ""))


def test_coulomb_soc_of_constant_current_is_exact() -> None:
    # Irregular steps and a duplicated timestamp; 1.5 A discharge of a 3 Ah cell: SoC = 1 - 1.5 A * t / 3 Ah.
    t = np.array([0.0, 0.1, 0.1, 0.35, 1.0, 60.0, 61.7, 3600.0])
    log = CyclerLog(time_s=t, voltage_V=np.full_like(t, 3.7), current_A=np.full_like(t, -1.5))
    assert coulomb_soc(log, 3.0) == pytest.approx(1.0 - 1.5 * t / 3600 / 3.0, rel=0, abs=1e-15)
    # Full at a later row, counted both ways from there.
    soc = coulomb_soc(log, 3.0, full_at_index=5, soc0=0.9)
    assert soc[5] == 0.9 and soc == pytest.approx(0.9 - 1.5 * (t - 60.0) / 3600 / 3.0, rel=0, abs=1e-15)
    with pytest.raises(ValueError, match="capacity"):
        coulomb_soc(log, 0.0)
