"""Training curves of one or more runs: loss, evaluation score, precision@1 and MAP@R per epoch.

Reads each run folder's training_stats.csv (see training/runs.py) and draws the two panels the
original's misc/plot_nn_training.py drew (loss, evaluation score) plus precision@1 and MAP@R,
which judge the ranking more strictly than in_any@5, so runs with different hyperparameters can
be compared at a glance. Also writes a tidy copy of the statistics (plain column names, one row per epoch)
that tools such as `dvc plots` read directly.

    python misc/plot_training.py RUN_DIR [RUN_DIR ...] --out curves.png
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402
from typing import Mapping, Sequence  # noqa: E402

from matplotlib.figure import Figure  # noqa: E402

from misc.atomic import atomic_write_text  # noqa: E402
from misc.errors import UserError  # noqa: E402
from training.runs import STATS_COLUMNS, STATS_FILE  # noqa: E402

Curve = list[dict[str, float | None]]  # one dict per epoch, tidy column names

LOSS, SCORE, PRECISION, MAP_R = "loss", "evaluation_score", "precision_at_1", "map_at_r"
# (column, y label, panel title); precision@1 and MAP@R are fractions, drawn in %
_PANELS = ((LOSS, "mean training loss", "training loss"),
           (SCORE, "evaluation score (in_any@5, %)", "evaluation score"),
           (PRECISION, "precision@1 (%)", "precision@1"),
           (MAP_R, "MAP@R (%)", "MAP@R"))
_PERCENT = {PRECISION, MAP_R}
_RENAMED = {"mean training loss": LOSS}


def tidy_name(column: str) -> str:
    """A stats column as a plain identifier: 'evaluation score' -> evaluation_score, map@r -> map_at_r."""
    return _RENAMED.get(column) or re.sub(r"\W+", "_", column.replace("@", "_at_")).strip("_")


TIDY_COLUMNS = tuple(tidy_name(c) for c in STATS_COLUMNS)


def read_curve(run_dir: Path) -> Curve:
    """The run's per-epoch statistics, numbers as floats and empty cells (no evaluation) as None."""
    path = Path(run_dir) / STATS_FILE
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise UserError(f"{path}: no training statistics; is {run_dir} a run folder "
                        f"(<save_dir>/<Model>_LR_...)?") from None
    try:
        return [{tidy_name(k): _number(v) for k, v in row.items() if k} for row in rows]
    except ValueError as err:
        raise UserError(f"{path}: not a training statistics file ({err}); delete or fix it") from err


def _number(text: str | None) -> float | None:
    return None if text in (None, "") else float(text)


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
    """Loss, evaluation score, precision@1 and MAP@R per epoch (2 x 2 panels), one line per run,
    saved as ``out``.

    Epochs without a value (epoch 0 has no loss; metrics exist only on evaluated epochs) are
    left out of that line instead of being drawn as zero.
    """
    fig = Figure(figsize=(12, 8), dpi=100, layout="constrained")
    axes = fig.subplots(2, 2).flatten()
    for name, curve in curves.items():
        for ax, (column, _, _) in zip(axes, _PANELS):
            scale = 100 if column in _PERCENT else 1
            points = [(row["epoch"], scale * row[column]) for row in curve if row.get(column) is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=3, label=name)
    for ax, (_, ylabel, title) in zip(axes, _PANELS):
        ax.set(xlabel="epoch", ylabel=ylabel, title=title)
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


def plot_runs_dirs(run_dirs: Sequence[Path], out: Path) -> Path:
    """`plot_curves` of run folders, each labelled by its folder name (the hyperparameters)."""
    return plot_curves({Path(d).name: read_curve(Path(d)) for d in run_dirs}, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Plot loss, evaluation score, precision@1 and MAP@R "
                                                 "per epoch of run folders.")
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run folders holding training_stats.csv")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    args = parser.parse_args(argv)
    print(f"wrote {plot_runs_dirs(args.run_dirs, args.out)}")
    return 0


if __name__ == "__main__":
    from misc.cli import run_main
    raise SystemExit(run_main(main))
