"""What `python pipeline.py` does: data -> train each model -> evaluate -> comparison table.

Kept out of pipeline.py so tests call it with an argparse Namespace instead of going through argv.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from common.errors import UserError
from data.sources import locate_dataset
from data.splits import Splits, describe_shared_items, describe_skipped, load_splits
from data.stats import dataset_stats, format_split, format_stats
from evaluation.protocol import EvalTarget, QueryGallery, pick_target, score
from evaluation.report import format_metrics_table
from models import build_model
from training.curves import SCORE, read_curve
from training.distributed import DistContext, setup
from training.options import config_from_args, model_kwargs, save_effective_params
from training.trainer import EVAL_K, train

TRAIN_EVAL_SPLITS = ("val", "eval", "test")  # training evaluates on val, else test (DESIGN.md)


def cache_dir(dataset_dir: str | Path) -> Path:
    """Decoded-image caches live with the other git-ignored outputs."""
    return Path(dataset_dir) / "files_to_gitignore" / "cache"


def prepare_data(args: argparse.Namespace, ctx: DistContext) -> Path:
    """Locate (fetch/generate) the dataset on rank 0 first, so processes never race on it."""
    if not ctx.is_main:
        ctx.barrier()
    root = locate_dataset(args.dataset, Path(args.dataset_dir), seed=args.data_seed,
                          progress=ctx.is_main)
    if ctx.is_main:
        ctx.barrier()
    return root


def load_model_splits(root: Path, size: int, args: argparse.Namespace, ctx: DistContext) -> Splits:
    """Decode (or open the cache of) the dataset at `size`; rank 0 builds, the others then open it."""
    def load() -> Splits:
        return load_splits(root, size, cache_dir(args.dataset_dir), eval_fraction=args.eval_fraction,
                           split_seed=args.split_seed, big_ims=args.big_ims, progress=ctx.is_main)
    if not ctx.is_main:
        ctx.barrier()
        return load()
    splits = load()
    ctx.barrier()
    return splits


def evaluate_model(model: nn.Module, eval_set: EvalTarget, k: int, device: torch.device) -> dict[str, float]:
    """Retrieval metrics of `model` on the held-out set (or query -> gallery)."""
    return score(model, eval_set, k, device)


def run_pipeline(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Train every model of ``args.models_list`` and return (and print) their eval metrics."""
    ctx = setup(args.device)
    for name in args.models_list:  # bad hyperparameters fail now, not after a download
        config_from_args(args, name, model=None)
    root = prepare_data(args, ctx)
    results: dict[str, dict[str, float]] = {}
    shown: dict[str, dict[str, float]] = {}  # results plus each trained model's untrained row
    for number, name in enumerate(args.models_list):
        torch.manual_seed(args.seed)  # the same command starts from the same initial weights
        model = build_model(name, **model_kwargs(args))
        splits = load_model_splits(root, model.input_size, args, ctx)
        eval_set = pick_target(splits, TRAIN_EVAL_SPLITS, args.split)
        if ctx.is_main:
            _report_data(splits, eval_set, args.dataset_stats and number == 0)
        if args.prepare_only:
            continue
        if model.trainable:
            _check_trainable(splits)
            result = train(config_from_args(args, name, model), model, splits.sets["train"], eval_set,
                           Path(args.save_dir), data=splits.identity,
                           accept_changed_data=args.accept_changed_data)
            if ctx.is_main:
                save_effective_params(args, result.run_dir, name)
                shown.update(_untrained_row(name, result.run_dir))
        if ctx.is_main:
            results[name] = shown[name] = evaluate_model(model, eval_set, args.num_neighbours, ctx.device)
    if ctx.is_main and results:
        print(f"\nretrieval on {len(eval_set)} held-out images of {len(eval_set.items)} items "
              f"({root}):")
        print(format_metrics_table(shown, args.num_neighbours, num_items=len(eval_set.items)))
    return results


def _untrained_row(name: str, run_dir: Path) -> dict[str, dict[str, float]]:
    """``{"<name> untrained": metrics}`` from the run's epoch-0 statistics (its initial weights,
    evaluated before the first step), so the table shows what training added; {} without them.
    The stats file holds in_any@5, precision@1 and MAP@R only, in %; the table takes fractions."""
    first = next((row for row in read_curve(run_dir) if row.get("epoch") == 0), None)
    if first is None or first.get(SCORE) is None:
        return {}
    return {f"{name} untrained": {f"in_any@{EVAL_K}": first[SCORE] / 100,
                                  "precision@1": first["precision_at_1"] / 100,
                                  "closest_1": first["precision_at_1"] / 100,
                                  "map@r": first["map_at_r"] / 100}}


def _check_trainable(splits: Splits) -> None:
    """A query/gallery layout without train/ can be evaluated (e.g. --model simple), not trained."""
    if "train" not in splits.sets:
        raise UserError(f"{splits.root}: has query/ and gallery/ but no train/ folder, so there is "
                        "nothing to train on; add train/<item>/<image> or evaluate with --model simple")


def _report_data(splits: Splits, eval_set: EvalTarget, with_stats: bool) -> None:
    scored = eval_set.query if isinstance(eval_set, QueryGallery) else eval_set  # its items' scores
    for warning in (describe_skipped(splits.skipped, splits.root), describe_shared_items(splits, scored)):
        if warning:
            print(warning)
    if with_stats:
        for index in splits.indexes.values():
            print(format_stats(dataset_stats(index, splits.skipped)))
        print(format_split(splits.sets))
