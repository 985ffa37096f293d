"""Snap Vision pipeline: get the data, train each model of --models_list, report retrieval metrics.

    python pipeline.py                      # built-in dataset, simple baseline vs simple_net
    python pipeline.py -m facenet --epochs 100 --batch_size 64 -lr 0.0001
    torchrun --nproc_per_node=2 pipeline.py -m simple_net

Re-running the same command on the same data resumes the run from its last finished epoch.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from common.cli import run_main
from common.params import parse_with_params


def build_parser() -> argparse.ArgumentParser:
    """All of the original pipeline's flags, plus data, mining and run-control options."""
    from training.options import new_parser
    parser = new_parser(__doc__.split("\n")[0], "pipeline")
    parser.add_argument("--dataset_stats", action="store_true",
                        help="print dataset statistics (items, images per item, types, sizes, skipped "
                             "files, the train/eval split), then run; with --prepare_only, the statistics alone")
    parser.add_argument("--accept_changed_data", action="store_true",
                        help="continue a run whose dataset gained or lost items since it was "
                             "trained (otherwise refused, naming what changed)")
    parser.add_argument("--prepare_only", action="store_true",
                        help="fetch/generate the dataset and build its caches, then stop (dvc's prepare stage)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, then run data -> train -> evaluate for each model and print the comparison."""
    from training.options import ALL_SETTINGS
    from training.workflow import run_pipeline
    run_pipeline(parse_with_params(build_parser(), argv, ALL_SETTINGS))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
