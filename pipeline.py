"""Snap Vision pipeline: get the data, train each model of --models_list, report retrieval metrics.

    python pipeline.py                      # built-in dataset, simple baseline vs simple_net
    python pipeline.py -m facenet --epochs 100 --batch_size 64 -lr 0.0001
    torchrun --nproc_per_node=2 pipeline.py -m simple_net

Re-running the same command on the same data resumes the run from its last finished epoch.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from misc.cli import run_main
from misc.params import parse_with_params
from misc.options import add_shared_options, non_negative_int, positive_int

DEFAULT_MODELS = ["simple", "simple_net"]


def build_parser() -> argparse.ArgumentParser:
    """All of the original pipeline's flags, plus data, mining and run-control options."""
    from models import MODEL_NAMES
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-m", "--models_list", nargs="+", choices=MODEL_NAMES, default=DEFAULT_MODELS,
                        metavar="MODEL", help=f"models to train and compare: {', '.join(MODEL_NAMES)}")
    parser.add_argument("--epochs", type=positive_int, default=50, help="train up to this epoch")
    parser.add_argument("--dataset_stats", action="store_true",
                        help="print dataset statistics (items, images per item, types, sizes, skipped)")
    parser.add_argument("--eval_every", type=positive_int, default=2, help="evaluate every N epochs")
    parser.add_argument("--save_every", type=non_negative_int, default=10,
                        help="keep a numbered <epoch>.pth every N epochs (and always at the end; 0 = only "
                             "at the end); last.pth is rewritten after every epoch")
    parser.add_argument("--num_workers", type=non_negative_int, default=1,
                        help="threads reading the next batches ahead of the training step "
                             "(more help with --big_ims; 0 = read in the loop)")
    parser.add_argument("--num_neighbours", type=positive_int, default=5,
                        help="k of in_any@k and closest[1..k] in the final table")
    parser.add_argument("--accept_changed_data", action="store_true",
                        help="continue a run whose dataset gained or lost items since it was "
                             "trained (otherwise refused, naming what changed)")
    parser.add_argument("--prepare_only", action="store_true",
                        help="fetch/generate the dataset and build its caches, then stop (dvc's prepare stage)")
    add_shared_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, then run data -> train -> evaluate for each model and print the comparison."""
    from training.workflow import run_pipeline
    run_pipeline(parse_with_params(build_parser(), argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
