"""What `python evaluate.py` does: find and load a run, embed the gallery, metrics, figures.

Kept out of evaluate.py so tests call it with an argparse Namespace instead of going through argv.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.errors import UserError
from data.dataset import ImageSet
from data.decode import LETTERBOX, UnreadableImage, decode_image
from data.identity import DIGESTS_FILE, DataIdentity, describe_change, read_digests, safe_name, unseen_rows
from data.index import printable
from data.sources import locate_dataset
from data.splits import Splits, describe_shared_items, describe_skipped, load_splits, subset
from data.tensors import to_tensor
from evaluation.embed import embed
from evaluation.export import export_model
from evaluation.figures import render_pages, render_query_page, select_queries
from evaluation.metrics import Retrieval, evaluate_retrieval
from evaluation.original_runs import PROVENANCE_UNKNOWN, load_run, original_folder_name, serves_request
from evaluation.report import format_metrics_table
from evaluation.reports import write_reports
from evaluation.weights import fetch_run, pack_run, pick_run
from models import MODEL_NAMES, build_model
from models.original_nets import ORIGINAL_NAMES, OriginalNet
from training.distributed import pick_device
from training.options import config_from_args, model_kwargs
from training.run_list import format_runs_table, list_runs
from training.runs import find_run_folders, read_hparams, run_folder
from training.workflow import cache_dir

EVALUATE_SPLITS = ("test", "val", "eval")  # evaluate.py prefers test, else val (DESIGN.md)


def find_run_dir(args: argparse.Namespace, model: nn.Module | None) -> Path:
    """The run folder: --run_dir, a downloaded run, or the one the dataset and hyperparameter
    flags name (see `named_run_dirs`). `model` is None for the original project's networks."""
    save_dir = Path(args.save_dir)
    if args.download_weights:
        return downloaded_run(args, model)
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        candidates = named_run_dirs(args, model)
        run_dir = next((path for path in candidates if path.is_dir()), candidates[0])
    if not run_dir.is_dir():
        runs = [p.relative_to(save_dir).as_posix() for p in find_run_folders(save_dir)]
        listing = ", ".join(runs) if runs else "none"
        raise UserError(f"{run_dir}: no such run folder (runs in {save_dir}: {listing}); train it with "
                        "pipeline.py, pass the dataset and hyperparameters it was trained with, or "
                        "--run_dir")
    return run_dir


def named_run_dirs(args: argparse.Namespace, model: nn.Module | None) -> list[Path]:
    """The run folders the flags name, in order of preference: ours, ``<save_dir>/<dataset>/<run>``
    then a run from before runs were bound to their dataset, ``<save_dir>/<run>``; then the
    original project's ``<save_dir>/<Class>_LR_<lr>_decay_<lrd>_BS_<bs>`` (an installed download)."""
    save_dir, folders = Path(args.save_dir), []
    if model is not None:
        config = config_from_args(args, args.model, model)
        dataset = safe_name(dataset_root(args).resolve().name)
        folders = [run_folder(save_dir, type(model).__name__, config, dataset),
                   run_folder(save_dir, type(model).__name__, config, None)]
    original = next((name for name in ORIGINAL_NAMES if serves_request(name, args.model)), None)
    if original is not None:
        folders.append(save_dir / original_folder_name(original, args.learning_rate, args.lr_decay,
                                                       args.batch_size))
    return folders


def downloaded_run(args: argparse.Namespace, model: nn.Module | None) -> Path:
    """Fetch and install --weights_url, say where each run went, and pick the one to evaluate."""
    runs = fetch_run(args.weights_url, Path(args.save_dir))
    for run in runs:
        print(f"downloaded {args.weights_url} -> installed {run.path}" if run.new
              else f"already installed {run.path}")
    return pick_run(runs, args.model, {path.name for path in named_run_dirs(args, model)}).path


def run_evaluation(args: argparse.Namespace) -> dict[str, float]:
    """Load the model (and checkpoint), evaluate on the held-out set, then the figures asked for."""
    if args.list_runs:
        print(format_runs_table(list_runs(Path(args.save_dir))))
        return {}
    device = pick_device(args.device)
    model = build_model(args.model, **model_kwargs(args)) if args.model in MODEL_NAMES else None
    label, run_dir, recorded = args.model, None, None
    if model is None or model.trainable or args.download_weights or args.export_weights:
        run_dir = find_run_dir(args, model)
        if args.export_weights:
            print(f"packed {run_dir} into {pack_run(run_dir, Path(args.export_weights))}")
            return {}
        model, checkpoint = load_run(model, run_dir, args.model, args.checkpoint)
        if isinstance(model, OriginalNet):  # from here on, --model names the network evaluated
            args = argparse.Namespace(**{**vars(args), "model": model.name})
        else:
            recorded = checkpoint.state.get("data") or read_hparams(run_dir).get("data")
        label = f"{args.model} (epoch {checkpoint.epoch} of {run_dir})"
    if args.export_model:
        written = export_model(model, Path(args.export_model))
        print(f"exported {label} to {', '.join(map(str, written))}: {model.input_size} px input, "
              f"{model.emb_dim}-d embeddings (see the README's 'Export for serving')")
        return {}
    model.to(device)
    gallery, splits = load_gallery(args, model.input_size, getattr(model, "resize", LETTERBOX))
    gallery, scope = (gallery, PROVENANCE_UNKNOWN) if isinstance(model, OriginalNet) else \
        held_out_gallery(run_dir, recorded, gallery, splits)
    embeddings = embed(model, gallery, device=device)
    if args.save_embeddings:
        save_embeddings(Path(args.save_embeddings), embeddings, gallery)
    if args.query:
        show_query_results(args, model, device, gallery, embeddings)
        return {}
    retrieval = evaluate_retrieval(embeddings, gallery.labels, k=args.num_neighbours,
                                   backend=args.knn_backend)
    metrics = retrieval.metrics
    print(f"{label}: retrieval on {len(gallery)} images of {len(gallery.items)} {scope}")
    print(format_metrics_table({args.model: metrics}, args.num_neighbours, num_items=len(gallery.items)))
    if args.reports_dir:
        written = write_reports(Path(args.reports_dir), metrics=metrics, run_dir=run_dir,
                                embeddings=embeddings, image_set=gallery, projection=args.projection)
        print(f"reports written to {args.reports_dir}/: {', '.join(p.name for p in written.values())}")
    if not args.no_figures:
        show_figures(args, gallery, retrieval)
    return metrics


def dataset_root(args: argparse.Namespace) -> Path:
    """The dataset folder the data flags name (fetched or generated when missing)."""
    return locate_dataset(args.dataset, Path(args.dataset_dir), seed=args.data_seed)


def load_gallery(args: argparse.Namespace, size: int,
                 resize: str = LETTERBOX) -> tuple[ImageSet, Splits]:
    """The evaluation split of the dataset, decoded at the model's input size, and all splits."""
    splits = load_splits(dataset_root(args), size, cache_dir(args.dataset_dir),
                         eval_fraction=args.eval_fraction, split_seed=args.split_seed,
                         big_ims=args.big_ims, resize=resize)
    gallery = splits.pick_eval(EVALUATE_SPLITS, args.split)
    for warning in (describe_skipped(splits.skipped, splits.root), describe_shared_items(splits, gallery)):
        if warning:
            print(warning)
    return gallery, splits


def held_out_gallery(run_dir: Path | None, recorded: dict | None, gallery: ImageSet,
                     splits: Splits) -> tuple[ImageSet, str]:
    """The gallery without any image the run trained on, and how to describe what is left.

    The run's ``train_images.sha1`` names its training images by content, so this holds on
    another split, another dataset, or a copy of part of the training data: whatever is left was
    never trained on. A run that recorded no data (trained before runs did) cannot be checked:
    its items are not called held-out.
    """
    if run_dir is None:
        return gallery, "held-out items"
    digests = read_digests(run_dir / DIGESTS_FILE)
    if recorded is None or digests is None:
        print(f"warning: {run_dir}: dataset unknown (the run recorded neither its data nor its "
              "training images); cannot tell which of these images it trained on")
        return gallery, "items (dataset unknown: not known to be held out)"
    change = describe_change(recorded, splits.identity)
    if change:
        print(f"note: {run_dir} was trained on {DataIdentity(**recorded).describe()}; evaluating "
              f"{splits.identity.describe()} ({change})")
    rows = unseen_rows(gallery.paths, digests)
    if len(rows) < len(gallery):
        print(f"left out {len(gallery) - len(rows)} of {len(gallery)} evaluation images: the run "
              "trained on images with the same content")
    if not rows:
        raise UserError(f"{run_dir}: every evaluation image of {splits.root} was trained on by this "
                        "run; evaluate it on data it has not seen")
    return (gallery if len(rows) == len(gallery) else subset(gallery, np.asarray(rows))), "held-out items"


def figure_dir(args: argparse.Namespace, case: str) -> Path:
    return Path(args.dataset_dir) / "files_to_gitignore" / "eval_figs" / f"{args.model}_{case}"


def show_figures(args: argparse.Namespace, gallery: ImageSet, retrieval: Retrieval) -> None:
    """Pages of queries beside their nearest images, filtered by --show_case / --show_nums."""
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
    out = figure_dir(args, args.show_case)
    pages = render_pages(gallery, rows, idx[rows], dists[rows], rows_per_page=args.num_disp,
                         out_dir=out if args.save_fig else None, fallback_dir=out,
                         title=f"{args.model}: {args.show_case} cases")
    if args.save_fig:
        print(f"saved {len(pages)} figure page(s) of {len(rows)} queries to {out}/")


def show_query_results(args: argparse.Namespace, model: nn.Module, device: torch.device,
                       gallery: ImageSet, embeddings: torch.Tensor) -> None:
    """Embed the user's photos and show their nearest gallery images."""
    photos = np.stack([_read_photo(Path(p), model.input_size, getattr(model, "resize", LETTERBOX))
                       for p in args.query])
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


def _read_photo(path: Path, size: int, resize: str) -> np.ndarray:
    try:
        return decode_image(path, size, resize)
    except UnreadableImage as err:
        raise UserError(f"--query {path}: not a readable image ({err})") from err


def save_embeddings(path: Path, embeddings: torch.Tensor, gallery: ImageSet) -> None:
    """An .npz with embeddings (N, D), the image paths and their item names, for reuse elsewhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    items = np.asarray([gallery.items[label] for label in gallery.labels])
    np.savez(path, embeddings=embeddings.numpy(), paths=np.asarray(gallery.paths), items=items)
    print(f"saved {len(gallery)} embeddings to {path}")
