"""Plot loss, evaluation score, precision@1 and MAP@R per epoch of chosen run folders on one figure.

    python -m misc.plot_training RUN_DIR [RUN_DIR ...] --out curves.png
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from common.cli import run_main
from evaluation.curves import plot_curves
from training.curves import read_curve


def plot_run_dirs(run_dirs: Sequence[Path], out: Path) -> Path:
    """`plot_curves` of run folders, each labelled by its folder name (the hyperparameters)."""
    return plot_curves({Path(d).name: read_curve(Path(d)) for d in run_dirs}, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Plot loss and evaluation score per epoch of run folders.",
                                     allow_abbrev=False)
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run folders holding training_stats.csv")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    args = parser.parse_args(argv)
    print(f"wrote {plot_run_dirs(args.run_dirs, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
