"""What `python evaluate.py` does: find and load a run, embed the gallery, metrics, figures.

Kept out of evaluate.py so tests call it with an argparse Namespace instead of going through argv.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.errors import UserError
from data.dataset import ImageSet
from data.decode import UnreadableImage, decode_image
from data.index import printable
from data.settings import DATA_SETTINGS
from data.sources import locate_dataset
from data.splits import describe_skipped, load_splits
from data.tensors import to_tensor
from evaluation.embed import embed
from evaluation.figures import PhotoFiles, check_show_nums, render_pages, render_query_page, select_queries
from evaluation.metrics import Retrieval, evaluate_retrieval
from evaluation.report import format_metrics_table
from evaluation.reports import write_reports
from evaluation.weights import fetch_run, pack_run
from models import build_model
from training.checkpoints import load_weights
from training.distributed import pick_device
from training.options import config_from_args, model_kwargs
from training.run_list import format_runs_table, list_runs
from training.runs import run_name
from training.workflow import cache_dir

EVALUATE_SPLITS = ("test", "val", "eval")  # evaluate.py prefers test, else val (DESIGN.md)


def find_run_dir(args: argparse.Namespace, model: nn.Module) -> Path:
    """The run folder: --run_dir, a downloaded run, or the one the hyperparameter flags name."""
    save_dir = Path(args.save_dir)
    if args.download_weights:
        return fetch_run(args.weights_url, save_dir)
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        run_dir = save_dir / run_name(type(model).__name__, config_from_args(args, args.model, model))
    if not run_dir.is_dir():
        runs = sorted(p.name for p in save_dir.glob("*_LR_*") if p.is_dir()) if save_dir.is_dir() else []
        listing = ", ".join(runs) if runs else "none"
        raise UserError(f"{run_dir}: no such run folder (runs in {save_dir}: {listing}); train it with "
                        "pipeline.py, pass the hyperparameters it was trained with, or --run_dir"
                        + _only_run_hint(args, save_dir, runs, type(model).__name__))
    return run_dir


def _only_run_hint(args: argparse.Namespace, save_dir: Path, runs: list[str], model_class: str) -> str:
    """When the model has exactly one run, the command that evaluates it, ready to paste."""
    mine = [name for name in runs if name.startswith(f"{model_class}_LR_")]
    if len(mine) != 1:
        return ""
    command = ["python", "evaluate.py", "--model", args.model, "--run_dir", str(save_dir / mine[0])]
    for setting in DATA_SETTINGS:  # the same images to evaluate on
        value = getattr(args, setting.name)
        if value != setting.default:
            command += [setting.flags[-1]] if setting.is_switch else [setting.flags[-1], str(value)]
    return f"; to evaluate the one {args.model} run: {shlex.join(command)}"


def run_evaluation(args: argparse.Namespace) -> dict[str, float]:
    """Load the model (and checkpoint), evaluate on the held-out set, then the figures asked for."""
    if args.list_runs:
        print(format_runs_table(list_runs(Path(args.save_dir))))
        return {}
    device = pick_device(args.device)
    model = build_model(args.model, **model_kwargs(args))
    label, run_dir, epoch = args.model, None, None
    if model.trainable or args.download_weights or args.export_weights:
        run_dir = find_run_dir(args, model)
        if args.export_weights:
            print(f"packed {run_dir} into {pack_run(run_dir, Path(args.export_weights))}")
            return {}
        epoch = load_weights(model, run_dir, args.model, args.checkpoint).epoch
        label = f"{args.model} (epoch {epoch} of {run_dir})"
    model.to(device)
    gallery = load_gallery(args, model.input_size)
    if args.show_nums is not None and not (args.no_figures or args.query):
        check_show_nums(args.show_nums, len(gallery))
    embeddings = embed(model, gallery, device=device)
    if args.save_embeddings:
        save_embeddings(Path(args.save_embeddings), embeddings, gallery)
    if args.query:
        show_query_results(args, model, device, gallery, embeddings)
        return {}
    retrieval = evaluate_retrieval(embeddings, gallery.labels, k=args.num_neighbours,
                                   backend=args.knn_backend)
    metrics = retrieval.metrics
    print(f"{label}: retrieval on {len(gallery)} images of {len(gallery.items)} held-out items")
    print(format_metrics_table({args.model: metrics}, args.num_neighbours))
    if args.reports_dir:
        written = write_reports(Path(args.reports_dir), metrics=metrics, run_dir=run_dir,
                                embeddings=embeddings, image_set=gallery, projection=args.projection)
        print(f"reports written: {', '.join(str(p) for p in written.values())}")
    if not args.no_figures:
        show_figures(args, gallery, retrieval, run_dir, epoch)
    return metrics


def load_gallery(args: argparse.Namespace, size: int) -> ImageSet:
    """The evaluation split of the dataset, decoded at the model's input size."""
    root = locate_dataset(args.dataset, Path(args.dataset_dir), seed=args.seed)
    splits = load_splits(root, size, cache_dir(args.dataset_dir), eval_fraction=args.eval_fraction,
                         split_seed=args.split_seed, big_ims=args.big_ims)
    warning = describe_skipped(splits.skipped, splits.root)
    if warning:
        print(warning)
    return splits.pick_eval(EVALUATE_SPLITS, args.split)


def figure_root(args: argparse.Namespace) -> Path:
    return Path(args.dataset_dir) / "files_to_gitignore" / "eval_figs"


def figure_dir(args: argparse.Namespace, case: str) -> Path:
    return figure_root(args) / f"{args.model}_{case}"


def pages_dir(args: argparse.Namespace, run_dir: Path | None, epoch: int | None) -> Path:
    """``eval_figs/<model>/<run>_epoch<N>_<case>/``: one folder per evaluation, so re-running it
    replaces its own pages and never another run's, checkpoint's, case's or a query's."""
    source = f"{run_dir.name}_epoch{epoch}" if run_dir is not None else "untrained"
    return figure_root(args) / args.model / f"{source}_{_case_label(args)}"


def _case_label(args: argparse.Namespace) -> str:
    if args.show_nums is None:
        return args.show_case
    nums = "-".join(map(str, args.show_nums[:8]))
    return f"nums_{nums}" + (f"_and_{len(args.show_nums) - 8}_more" if len(args.show_nums) > 8 else "")


def show_figures(args: argparse.Namespace, gallery: ImageSet, retrieval: Retrieval,
                 run_dir: Path | None, epoch: int | None) -> None:
    """Pages of queries beside their nearest images, filtered by --show_case / --show_nums.

    Each image is read from its photo file at the page's display size (PhotoFiles), not from
    the model-input-size cache, which at 64 px looks blurred on a page."""
    k = args.num_neighbours  # the metrics' search went at least this deep
    dists = retrieval.distances[:, :k].cpu().numpy()
    idx = retrieval.indices[:, :k].cpu().numpy()
    labels = np.asarray(gallery.labels)
    queryable = np.bincount(labels)[labels] >= 2
    limit = None if args.num_pages == 0 else args.num_disp * args.num_pages
    rows = select_queries(labels[idx], labels, args.show_case, args.show_nums, limit, queryable)
    if len(rows) == 0:
        print(f"no query matches --show_case {args.show_case}; nothing to draw")
        return
    out = pages_dir(args, run_dir, epoch)
    source = f"{run_dir.name}, epoch {epoch}" if run_dir is not None else "untrained"
    case = "chosen queries" if args.show_nums is not None else f"{args.show_case} cases"
    pages = render_pages(PhotoFiles(gallery), rows, idx[rows], dists[rows], rows_per_page=args.num_disp,
                         out_dir=out if args.save_fig else None, fallback_dir=out,
                         title=f"{args.model} ({source}): {case}")
    if args.save_fig:
        print(f"saved {len(pages)} figure page(s) of {len(rows)} queries to {out}/")


def show_query_results(args: argparse.Namespace, model: nn.Module, device: torch.device,
                       gallery: ImageSet, embeddings: torch.Tensor) -> None:
    """Embed the user's photos and show their nearest gallery images."""
    photos = np.stack([_read_photo(Path(p), model.input_size) for p in args.query])
    with torch.inference_mode():
        model.eval()
        queries = model(to_tensor(photos).to(device)).float().cpu()
    dists, idx = nearest(queries, embeddings, args.num_neighbours)
    for path, d, i in zip(args.query, dists, idx):
        closest = ", ".join(f"{gallery.items[gallery.labels[j]]} ({dist:.3f})" for j, dist in zip(i, d))
        print(f"{path}: {closest}")
    out = figure_dir(args, "query") / "queries.png"
    names = [printable(Path(p).name) for p in args.query]
    saved = render_query_page(photos, names, gallery, idx, dists,
                              out_path=out if args.save_fig else None, fallback_dir=out.parent)
    if args.save_fig:
        print(f"saved the query figure to {saved}")


def nearest(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest gallery rows of a few query embeddings, ties broken by gallery index."""
    dists = torch.cdist(queries.float(), gallery.float())
    order = np.argsort(dists.numpy(), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dists.numpy(), order, axis=1), order


def _read_photo(path: Path, size: int) -> np.ndarray:
    try:
        return decode_image(path, size)
    except UnreadableImage as err:
        raise UserError(f"--query {path}: not a readable image ({err})") from err


def save_embeddings(path: Path, embeddings: torch.Tensor, gallery: ImageSet) -> None:
    """An .npz with embeddings (N, D), the image paths and their item names, for reuse elsewhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    items = np.asarray([gallery.items[label] for label in gallery.labels])
    np.savez(path, embeddings=embeddings.numpy(), paths=np.asarray(gallery.paths), items=items)
    print(f"saved {len(gallery)} embeddings to {path}")
