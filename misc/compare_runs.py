"""Compare the training runs kept under a save_dir: one table, and optionally one figure.

    python -m misc.compare_runs --save_dir data/files_to_gitignore/models [--plot runs.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from common.cli import run_main
from evaluation.curves import plot_curves
from training.curves import read_curve
from training.options import DEFAULT_SAVE_DIR
from training.run_list import format_runs_table, list_runs
from training.runs import STATS_FILE


def plot_runs(runs: Sequence[dict[str, Any]], out: Path) -> Path:
    """Loss and evaluation score per epoch of every run with statistics, on one figure."""
    curves = {run["name"]: read_curve(run["path"]) for run in runs if (run["path"] / STATS_FILE).exists()}
    return plot_curves(curves, out, title=f"{len(curves)} runs")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare the training runs kept under a save_dir.",
                                     allow_abbrev=False)
    parser.add_argument("--save_dir", type=Path, default=Path(DEFAULT_SAVE_DIR),
                        help=f"folder holding the run folders (default: {DEFAULT_SAVE_DIR})")
    parser.add_argument("--plot", type=Path, metavar="FILE", default=None,
                        help="also draw every run's loss and evaluation score into this PNG")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    args = parser.parse_args(argv)
    runs = list_runs(args.save_dir)
    print(format_runs_table(runs) if runs else f"no run folders in {args.save_dir}")
    if args.plot is not None and runs:
        print(f"wrote {plot_runs(runs, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
