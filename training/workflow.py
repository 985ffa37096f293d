"""What `python pipeline.py` does: data -> train each model -> evaluate -> comparison table.

Kept out of pipeline.py so tests call it with an argparse Namespace instead of going through argv.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from data.dataset import ImageSet
from data.sources import locate_dataset
from data.splits import Splits, describe_skipped, load_splits
from data.stats import dataset_stats, format_stats
from evaluation.embed import embed
from evaluation.metrics import retrieval_metrics
from evaluation.report import format_metrics_table
from misc.options import run_fields
from misc.params import write_effective_params
from models import build_model
from training.config import TrainConfig
from training.distributed import DistContext, setup
from training.trainer import train

TRAIN_EVAL_SPLITS = ("val", "eval", "test")  # training evaluates on val, else test (DESIGN.md)


def cache_dir(dataset_dir: str | Path) -> Path:
    """Decoded-image caches live with the other git-ignored outputs."""
    return Path(dataset_dir) / "files_to_gitignore" / "cache"


def run_config(args: argparse.Namespace, model_name: str, model: nn.Module | None,
               **extra) -> TrainConfig:
    """The TrainConfig whose run folder this model and command line train into (or load from)."""
    return TrainConfig(model=model_name, pretrained=bool(getattr(model, "pretrained", False)),
                       image_size=getattr(model, "input_size", None), **run_fields(args), **extra)


def train_config(args: argparse.Namespace, model_name: str, model: nn.Module | None) -> TrainConfig:
    """The full TrainConfig of one model from the parsed command line."""
    return run_config(args, model_name, model, epochs=args.epochs, device=args.device,
                      num_workers=args.num_workers, eval_every=args.eval_every,
                      save_every=args.save_every)


def model_kwargs(args: argparse.Namespace) -> dict:
    """Constructor options from the command line; build_model drops those a model does not take."""
    chosen = {"emb_dim": args.embedding_size, "input_size": args.image_size,
              "pretrained_weights": args.pretrained_weights, "freeze_backbone": args.freeze_backbone}
    return {key: value for key, value in chosen.items() if value not in (None, False)}


def prepare_data(args: argparse.Namespace, ctx: DistContext) -> Path:
    """Locate (fetch/generate) the dataset on rank 0 first, so processes never race on it."""
    if not ctx.is_main:
        ctx.barrier()
    root = locate_dataset(args.dataset, Path(args.dataset_dir), seed=args.seed, progress=ctx.is_main)
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


def evaluate_model(model: nn.Module, eval_set: ImageSet, k: int, device: torch.device) -> dict[str, float]:
    """Retrieval metrics of `model` on the held-out set."""
    return retrieval_metrics(embed(model, eval_set, device=device), eval_set.labels, k=k)


def run_pipeline(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Train every model of ``args.models_list`` and return (and print) their eval metrics."""
    ctx = setup(args.device)
    for name in args.models_list:  # bad hyperparameters fail now, not after a download
        train_config(args, name, model=None)
    root = prepare_data(args, ctx)
    results: dict[str, dict[str, float]] = {}
    for number, name in enumerate(args.models_list):
        torch.manual_seed(args.seed)  # the same command starts from the same initial weights
        model = build_model(name, **model_kwargs(args))
        splits = load_model_splits(root, model.input_size, args, ctx)
        if ctx.is_main:
            _report_data(splits, args.dataset_stats and number == 0)
        eval_set = splits.pick_eval(TRAIN_EVAL_SPLITS, args.split)
        if args.prepare_only:
            continue
        if model.trainable:
            result = train(train_config(args, name, model), model, splits.sets["train"], eval_set,
                           Path(args.save_dir))
            if ctx.is_main:
                write_effective_params(args, result.run_dir, model=name)
        if ctx.is_main:
            results[name] = evaluate_model(model, eval_set, args.num_neighbours, ctx.device)
    if ctx.is_main and results:
        print(f"\nretrieval on {len(eval_set)} held-out images of {len(eval_set.items)} items "
              f"({root}):")
        print(format_metrics_table(results, args.num_neighbours))
    return results


def _report_data(splits: Splits, with_stats: bool) -> None:
    warning = describe_skipped(splits.skipped, splits.root)
    if warning:
        print(warning)
    if with_stats:
        for index in splits.indexes.values():
            print(format_stats(dataset_stats(index, splits.skipped)))
