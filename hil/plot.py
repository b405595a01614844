"""The PNGs of the rig: stacked panels over time. `hil run`: pack current, cell voltages, temperatures, SoC (the
truth, and the board's estimate when it estimated) and the sensor channels, truth beside what the board reported
(samples.csv); `hil replay` draws its own panels (hil.replay) with new_figure/save_figure."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from hil.soc_score import CONVERGED_WITHIN  # noqa: E402


def new_figure(n_panels: int, panel_height_in: float = 2.0) -> tuple[Figure, list[Axes]]:
    fig, axes = plt.subplots(n_panels, 1, figsize=(10, panel_height_in * n_panels), sharex=True, squeeze=False)
    return fig, list(axes[:, 0])


def save_figure(fig: Figure, axes: list[Axes], title: str, xlabel: str, out_png: Path) -> Path:
    for ax in axes:
        ax.tick_params(labelsize=7)
    axes[0].set_title(title, fontsize=9)
    axes[-1].set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


def _column(rows: list[dict[str, str]], key: str, scale: float = 1.0) -> list[float]:
    return [float(r[key]) * scale if r[key] not in ("", "None") else float("nan") for r in rows]


def plot_run(samples_csv: Path, out_png: Path, title: str) -> Path:
    with open(samples_csv, newline="") as f:
        by_cell: dict[str, list[dict[str, str]]] = defaultdict(list)
        reader = csv.DictReader(f)
        for row in reader:
            by_cell[row["cell"]].append(row)
        columns = set(reader.fieldnames or ())
    estimated = "board_soc" in columns  # a run without estimation has no estimate columns
    # label, truth column and scale, board column and scale, and a column the board's values are taken against
    # (scaled as the board's): the SoC error panel, with the 2 % band of the convergence rule (hil.soc_score).
    panels: list[tuple[str, str | None, float, str | None, float, str | None]] = [
        ("pack current [A]", "true_current_A", 1.0, "board_current_mA", 1e-3, None),
        ("cell voltage [V]", "true_voltage_V", 1.0, "board_voltage_mV", 1e-3, None),
        ("cell temperature [°C]", "true_temp_C", 1.0, "board_temp_dC", 0.1, None),
        ("SoC [-]" if estimated else "true SoC [-]", "true_soc", 1.0, "board_soc" if estimated else None, 1.0, None),
        *([("board − true SoC [%]", None, 1.0, "board_soc", 100.0, "true_soc")] if estimated else []),
        ("pressure [kPa]", None, 1.0, "board_pressure_Pa", 1e-3, None),
        ("ultrasonic ToF [ns]", None, 1.0, "board_tof_ns", 1.0, None),
        ("FBG shift [pm]", None, 1.0, "board_fbg_pm", 1.0, None),
    ]
    fig, axes = new_figure(len(panels))
    for ax, (label, truth_key, truth_scale, board_key, board_scale, against_key) in zip(axes, panels, strict=True):
        cells = ["0"] if label == "pack current [A]" else sorted(by_cell, key=int)
        for cell in cells:
            rows = by_cell[cell]
            t_s = _column(rows, "t_s")
            if truth_key:
                ax.plot(t_s, _column(rows, truth_key, truth_scale), lw=0.8, color="black", alpha=0.6)
            if board_key:
                values = _column(rows, board_key, board_scale)
                if board_key == "board_fbg_pm":
                    values = [v - values[0] for v in values]  # shift from the start, per grating
                if against_key:
                    values = [v - a for v, a in zip(values, _column(rows, against_key, board_scale), strict=True)]
                ax.plot(t_s, values, lw=0.6, alpha=0.7)
        if against_key:
            for band in (-CONVERGED_WITHIN * 100, CONVERGED_WITHIN * 100):
                ax.axhline(band, color="black", lw=0.6, ls=":")
        ax.set_ylabel(label, fontsize=8)
    return save_figure(fig, axes, f"{title}: truth (black) and board readings (colours, one per cell)",
                       "simulated time [s]", out_png)
