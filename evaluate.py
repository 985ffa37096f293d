"""Snap Vision evaluation: load a run, print retrieval metrics, show or save nearest-neighbour figures.

    python evaluate.py                                   # default model, latest checkpoint
    python evaluate.py --show_case fail --num_disp 10 --save_fig
    python evaluate.py --model simple_net --checkpoint 20
    python evaluate.py --download_weights [--weights_url URL]
    python evaluate.py --query my_photo.jpg --save_fig   # your own photos against the whole dataset
    python evaluate.py --query photos/ --gallery catalogue/ --results hits.csv
"""
from __future__ import annotations

import argparse
from typing import Sequence

from common.argtypes import non_negative_int, positive_int
from common.cli import run_main
from common.params import parse_with_params


def checkpoint_arg(text: str) -> int | str:
    """argparse type for --checkpoint: 'latest', 'best' or an epoch number."""
    if text in ("latest", "best"):
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: use 'latest', 'best' or an epoch number such as 20")


def build_parser() -> argparse.ArgumentParser:
    """The original evaluate.py flags, plus queries with your own photos, export and kNN backend."""
    from evaluation.figures import CASES
    from evaluation.weights import DEFAULT_WEIGHTS_URL
    from training.options import new_parser
    parser = new_parser(__doc__.split("\n")[0], "evaluate")
    parser.add_argument("--checkpoint", type=checkpoint_arg, default="latest",
                        help="'latest' (last.pth), 'best' (best.pth: highest evaluation score) or an epoch number")
    parser.add_argument("--run_dir", default=None,
                        help="evaluate this run folder instead of the one the hyperparameters name")
    parser.add_argument("--download_weights", action="store_true",
                        help="download a zipped run from --weights_url into --save_dir and evaluate it")
    parser.add_argument("--weights_url", default=DEFAULT_WEIGHTS_URL, help="where --download_weights fetches from")
    parser.add_argument("--export_weights", metavar="ZIP", default=None,
                        help="pack the selected run folder into ZIP (the --download_weights format) and exit")
    parser.add_argument("-sc", "--show_case", choices=CASES, default="both",
                        help="figures of queries whose neighbours include the same item (pass), none (fail), or both")
    parser.add_argument("--num_disp", type=positive_int, default=1, help="query rows per figure page")
    parser.add_argument("--num_pages", type=non_negative_int, default=1,
                        help="figure pages to make (0 = every matching query)")
    parser.add_argument("--save_fig", action="store_true",
                        help="save figures as numbered PNGs under data/files_to_gitignore/eval_figs/")
    parser.add_argument("--show_nums", type=int, nargs="+", default=None, metavar="N",
                        help="show these query numbers (rows of the eval set) instead of filtering by case")
    parser.add_argument("--no_figures", action="store_true", help="print metrics only")
    parser.add_argument("--query", nargs="+", default=None, metavar="PHOTO",
                        help="photos and/or folders of photos (searched recursively) to search the gallery with")
    parser.add_argument("--gallery", default=None, metavar="all|eval|PATH",
                        help="what is searched or scored: all (every image of the dataset; the default "
                             "with --query), eval (the held-out items; the default without --query), "
                             "or a folder / archive / URL of <item>/<image> folders or loose images")
    parser.add_argument("--results", metavar="FILE", default=None,
                        help="with --query: write one row per (query, rank) to FILE (.csv or .json)")
    parser.add_argument("--save_embeddings", metavar="FILE", default=None,
                        help="write the gallery embeddings with their paths and items to FILE (.npz)")
    parser.add_argument("--knn_backend", choices=("torch", "faiss"), default="torch",
                        help="exact kNN with chunked torch matrix products, or faiss when installed")
    parser.add_argument("--list_runs", action="store_true",
                        help="print every run under --save_dir (hyperparameters, last epoch, best score) and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, then run the evaluation the flags ask for."""
    from evaluation.workflow import run_evaluation
    from training.options import ALL_SETTINGS
    run_evaluation(parse_with_params(build_parser(), argv, ALL_SETTINGS))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
