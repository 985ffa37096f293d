"""Training curves of one or more runs drawn side by side, and written as a tidy CSV.

Draws the two panels the original's misc/plot_nn_training.py drew (loss and evaluation score per
epoch) plus precision@1 and MAP@R, so runs with different hyperparameters can be compared at a
glance, and writes a tidy copy of the statistics (plain column names, one row per epoch) that
tools such as `dvc plots` read directly. The command line is `python -m misc.plot_training`.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Mapping

from matplotlib.figure import Figure

from common.atomic import atomic_write_text
from training.curves import LOSS, MAP_R, PRECISION, SCORE, TIDY_COLUMNS, Curve

# (stats column, y label, panel title) of the four panels
_PANELS = ((LOSS, "mean training loss", "training loss"),
           (SCORE, "evaluation score (in_any@5, %)", "evaluation score"),
           (PRECISION, "precision@1 (%)", "precision@1"),
           (MAP_R, "MAP@R (%)", "MAP@R"))


def write_curve_csv(curve: Curve, path: Path) -> Path:
    """Tidy CSV of a curve (header always, so an untrained run still gives a readable file)."""
    columns = list(dict.fromkeys([*TIDY_COLUMNS, *(k for row in curve for k in row)]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in curve:
        writer.writerow({k: _cell(k, row.get(k)) for k in columns})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buffer.getvalue())
    return path


def _cell(column: str, value: float | None) -> str:
    if value is None:
        return ""
    if column == "epoch":
        return str(int(value))
    return f"{value:.6g}"


def plot_curves(curves: Mapping[str, Curve], out: Path, title: str | None = None) -> Path:
    """Loss, evaluation score, precision@1 and MAP@R (all three in %) per epoch in 2 x 2 panels,
    one line per run, saved as ``out``. Precision@1 and MAP@R judge the ranking more strictly
    than in_any@5 (the original's score, which saturates early).

    Epochs without a value (epoch 0 has no loss; metrics exist only on evaluated epochs) are
    left out of that line instead of being drawn as zero.
    """
    fig = Figure(figsize=(12, 8), dpi=100, layout="constrained")
    axes = fig.subplots(2, 2).flatten()
    for name, curve in curves.items():
        for ax, (column, _, _) in zip(axes, _PANELS):
            points = [(row["epoch"], row[column]) for row in curve if row.get(column) is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=3, label=name)
    for ax, (_, ylabel, panel_title) in zip(axes, _PANELS):
        ax.set(xlabel="epoch", ylabel=ylabel, title=panel_title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out

