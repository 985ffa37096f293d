"""What `python evaluate.py` does: find and load a run, index the gallery, search or score it.

Kept out of evaluate.py so tests call it with an argparse Namespace instead of going through argv.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.errors import UserError
from data.dataset import ImageSet
from data.decode import LETTERBOX
from data.identity import safe_name
from data.settings import DATA_SETTINGS
from evaluation.embed import embed
from evaluation.export import export_model
from evaluation.figures import PhotoFiles, check_show_nums, render_pages, select_queries
from evaluation.gallery import Gallery, choose_gallery, concat_sets, dataset_root
from evaluation.gallery_index import GalleryIndex, embed_unsaved, load_or_build
from evaluation.metrics import Retrieval, evaluate_retrieval
from evaluation.original_runs import PROVENANCE_UNKNOWN, load_run, original_folder_name, serves_request
from evaluation.protocol import QueryGallery, query_gallery_retrieval
from evaluation.report import format_metrics_table
from evaluation.reports import write_reports
from evaluation.results import results_format
from evaluation.search import run_search
from evaluation.weights import fetch_run, pack_run, pick_run
from models import MODEL_NAMES, build_model
from models.original_nets import ORIGINAL_NAMES, OriginalNet
from training.distributed import pick_device
from training.options import config_from_args, model_kwargs
from training.run_list import format_runs_table, list_runs
from training.runs import find_run_folders, read_hparams, run_folder
from training.workflow import cache_dir

# Inside the run folder, hidden: weights zips (--export_weights) and run comparisons skip it.
INDEX_FOLDER = ".index"


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
                        "--run_dir" + _only_run_hint(args, save_dir, runs, type(model).__name__))
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


def _only_run_hint(args: argparse.Namespace, save_dir: Path, runs: list[str], model_class: str) -> str:
    """When the model has exactly one run, the command that evaluates it, ready to paste."""
    mine = [name for name in runs if Path(name).name.startswith(f"{model_class}_LR_")]
    if len(mine) != 1:
        return ""
    command = ["python", "evaluate.py", "--model", args.model, "--run_dir", str(save_dir / mine[0])]
    for setting in DATA_SETTINGS:  # the same images to evaluate on
        value = getattr(args, setting.name)
        if value != setting.default:
            command += [setting.flags[-1]] if setting.is_switch else [setting.flags[-1], str(value)]
    return f"; to evaluate the one {args.model} run: {shlex.join(command)}"


def run_evaluation(args: argparse.Namespace) -> dict[str, float]:
    """Load the model (and checkpoint), then search --query photos or score the gallery."""
    if args.list_runs:
        print(format_runs_table(list_runs(Path(args.save_dir))))
        return {}
    if args.results and not args.query:
        raise UserError(f"--results {args.results}: search results exist only with --query; add "
                        "--query PHOTO, or use --reports_dir for the metrics")
    if args.results:
        results_format(Path(args.results))
    device = pick_device(args.device)
    model = build_model(args.model, **model_kwargs(args)) if args.model in MODEL_NAMES else None
    label, run_label, run_dir, recorded, epoch = args.model, args.model, None, None, None
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
        epoch = checkpoint.epoch
        label = f"{args.model} (epoch {epoch} of {run_dir})"
        run_label = f"{run_dir.name}, epoch {epoch}"
    if args.export_model:
        written = export_model(model, Path(args.export_model))
        print(f"exported {label} to {', '.join(map(str, written))}: {model.input_size} px input, "
              f"{model.emb_dim}-d embeddings (see the README's 'Export for serving')")
        return {}
    model.to(device)
    gallery = model_gallery(args, model, run_dir, recorded)
    if args.show_nums is not None and not (args.no_figures or args.query):
        target = gallery.target
        check_show_nums(args.show_nums, len(target.query if isinstance(target, QueryGallery) else target))
    if args.query:  # metrics write no index: a run folder (a DVC stage's input) stays unchanged
        index_dir = run_dir / INDEX_FOLDER if run_dir else cache_dir(args.dataset_dir) / "index"
        index = load_or_build(model, gallery.images, index_dir, gallery.file_key, device)
    else:
        index = embed_unsaved(model, gallery.images, device)
    if args.save_embeddings:
        save_embeddings(Path(args.save_embeddings), index)
    if args.query:
        run_search(args, model, device, gallery, index, run_label, figure_dir(args, "query"))
        return {}
    return score_gallery(args, model, device, gallery, index, label, run_dir, epoch)


def model_gallery(args: argparse.Namespace, model: nn.Module, run_dir: Path | None,
                  recorded: dict | None) -> Gallery:
    """The gallery, decoded as `model` expects (the original's networks: stretched).

    An original run's split leaked items and recorded no data, so its eval items are labelled
    provenance unknown rather than checked against training images it never listed.
    """
    original = isinstance(model, OriginalNet)
    gallery = choose_gallery(args, model.input_size, None if original else run_dir, recorded,
                             resize=getattr(model, "resize", LETTERBOX))
    return dataclasses.replace(gallery, scope=PROVENANCE_UNKNOWN) if original and gallery.name == "eval" \
        else gallery


def score_gallery(args: argparse.Namespace, model: nn.Module, device: torch.device, gallery: Gallery,
                  index: GalleryIndex, label: str, run_dir: Path | None,
                  epoch: int | None = None) -> dict[str, float]:
    """Metrics of the gallery (query -> gallery for that layout), then reports and figures."""
    k, target = args.num_neighbours, gallery.target
    if isinstance(target, QueryGallery):
        retrieval = query_gallery_retrieval(embed(model, target.query, device=device), index.tensor(),
                                            target.query_labels(), target.gallery.labels, k)
        print(f"{label}: {len(target.query)} query images against {len(target.gallery)} gallery "
              f"images ({len(target.items)} items)")
    else:
        retrieval = evaluate_retrieval(index.tensor(), target.labels, k=k, backend=args.knn_backend)
        print(f"{label}: retrieval on {len(target)} images of {len(target.items)} {gallery.scope}")
    metrics = retrieval.metrics
    print(format_metrics_table({args.model: metrics}, k, num_items=len(target.items)))
    if args.reports_dir:
        written = write_reports(Path(args.reports_dir), metrics=metrics, run_dir=run_dir,
                                embeddings=index.tensor(), image_set=gallery.images,
                                projection=args.projection)
        print(f"reports written: {', '.join(str(p) for p in written.values())}")
    if args.no_figures:
        return metrics
    if isinstance(target, QueryGallery):
        both = concat_sets([target.query, target.gallery], target.query.index.root.parent)
        show_figures(args, both, retrieval, run_dir, epoch, gallery_start=len(target.query))
    else:
        show_figures(args, target, retrieval, run_dir, epoch)
    return metrics


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


def show_figures(args: argparse.Namespace, images: ImageSet, retrieval: Retrieval,
                 run_dir: Path | None, epoch: int | None, gallery_start: int = 0) -> None:
    """Pages of queries beside their nearest images, filtered by --show_case / --show_nums.

    `gallery_start` 0: every image queries the others (leave-one-out). Otherwise rows before it
    are the queries and rows from it the gallery that `retrieval`'s indices point into. Each
    image is read from its photo file at the page's display size (PhotoFiles), not from the
    model-input-size cache, which at 64 px looks blurred on a page.
    """
    k = args.num_neighbours  # the metrics' search went at least this deep
    dists = retrieval.distances[:, :k].cpu().numpy()
    idx = retrieval.indices[:, :k].cpu().numpy() + gallery_start
    labels = np.asarray(images.labels)
    query_labels = labels[:gallery_start or len(labels)]
    in_gallery = np.bincount(labels[gallery_start:], minlength=len(images.items))[query_labels]
    queryable = in_gallery >= (1 if gallery_start else 2)  # another image of its item to find
    limit = None if args.num_pages == 0 else args.num_disp * args.num_pages
    rows = select_queries(labels[idx], query_labels, args.show_case, args.show_nums, limit, queryable)
    if len(rows) == 0:
        print(f"no query matches --show_case {args.show_case}; nothing to draw")
        return
    out = pages_dir(args, run_dir, epoch)
    source = f"{run_dir.name}, epoch {epoch}" if run_dir is not None else "untrained"
    case = "chosen queries" if args.show_nums is not None else f"{args.show_case} cases"
    pages = render_pages(PhotoFiles(images), rows, idx[rows], dists[rows], rows_per_page=args.num_disp,
                         out_dir=out if args.save_fig else None, fallback_dir=out,
                         title=f"{args.model} ({source}): {case}")
    if args.save_fig:
        print(f"saved {len(pages)} figure page(s) of {len(rows)} queries to {out}/")


def save_embeddings(path: Path, index: GalleryIndex) -> None:
    """An .npz with embeddings (N, D), the image paths and their item names, for reuse elsewhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, embeddings=np.asarray(index.embeddings), paths=np.asarray(index.paths),
             items=np.asarray(index.items))
    print(f"saved {len(index)} embeddings to {path}")
