"""What `evaluate.py` searches: `--gallery all`, `eval`, or a folder / archive / URL of images.

`all` is every image of the dataset, trained items included, which is what a user searching their
catalogue wants; `eval` is the held-out split less any image the run trained on (or, for a
query/gallery layout, query -> gallery); a path is any other catalogue. Only `eval` may be called
held-out: the other two can hold images the model was trained on.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError
from data.cache import build_or_load_cache
from data.dataset import ImageSet
from data.identity import DIGESTS_FILE, DataIdentity, describe_change, read_digests, unseen_rows
from data.index import DatasetIndex
from data.sources import locate_dataset
from data.splits import Splits, describe_shared_items, describe_skipped, load_splits, subset
from evaluation.catalogue import index_catalogue
from evaluation.protocol import EvalTarget, QueryGallery, pick_target
from training.workflow import cache_dir

EVALUATE_SPLITS = ("test", "val", "eval")  # evaluate.py prefers test, else val (DESIGN.md)
GALLERY_CHOICES = ("all", "eval")


@dataclass
class Gallery:
    """The images to search or score, with a name for titles and index files."""

    target: EvalTarget   # an ImageSet, or query -> gallery for a query/gallery layout
    name: str            # "all", "eval" or the path the user gave
    scope: str           # what its items are, for the metrics header ("held-out items", ...)

    @property
    def images(self) -> ImageSet:
        """The images a photo is searched against."""
        return self.target.gallery if isinstance(self.target, QueryGallery) else self.target

    @property
    def file_key(self) -> str:
        """A file-name-safe name: the choice itself, or the path's name plus a hash of the path."""
        if self.name in GALLERY_CHOICES:
            return self.name
        where = hashlib.sha1(os.path.abspath(self.name).encode("utf-8", "surrogateescape")).hexdigest()[:8]
        return f"{re.sub(r'[^A-Za-z0-9_-]', '_', Path(self.name).name) or 'gallery'}-{where}"


def choose_gallery(args: argparse.Namespace, size: int, run_dir: Path | None,
                   recorded: dict | None) -> Gallery:
    """The gallery `--gallery` names (default `all` with --query, else `eval`), decoded at `size`.

    `run_dir` and `recorded` (the run's data identity) let `eval` leave out trained images.
    """
    name = args.gallery or ("all" if args.query else "eval")
    if name not in GALLERY_CHOICES:
        return Gallery(_catalogue(name, Path(args.dataset_dir), size), name,
                       f"items (gallery {name}: may hold trained items)")
    splits = dataset_splits(args, size)
    if name == "all":
        return Gallery(concat_sets(list(splits.sets.values()), splits.root), name,
                       "items (gallery all: includes trained items)")
    target = pick_target(splits, EVALUATE_SPLITS, args.split)
    scored = target.query if isinstance(target, QueryGallery) else target
    warning = describe_shared_items(splits, scored)
    if warning:
        print(warning)
    if isinstance(target, QueryGallery):
        return Gallery(target, name, "items (query -> gallery)")
    image_set, scope = held_out_gallery(run_dir, recorded, target, splits)
    return Gallery(image_set, name, scope)


def dataset_root(args: argparse.Namespace) -> Path:
    """The dataset folder the data flags name (fetched or generated when missing)."""
    return locate_dataset(args.dataset, Path(args.dataset_dir), seed=args.data_seed)


def dataset_splits(args: argparse.Namespace, size: int) -> Splits:
    """Every split of the dataset, decoded at `size`; unreadable files named in one warning."""
    splits = load_splits(dataset_root(args), size, cache_dir(args.dataset_dir),
                         eval_fraction=args.eval_fraction, split_seed=args.split_seed,
                         big_ims=args.big_ims)
    _warn_skipped(splits.skipped, splits.root)
    return splits


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


def _catalogue(where: str, dataset_dir: Path, size: int) -> ImageSet:
    """A gallery folder (or an archive / URL of one), decoded once into the image cache."""
    if "://" not in where and not Path(where).expanduser().exists():
        raise UserError(f"--gallery {where}: no such folder or archive; use all, eval, a folder of "
                        "images, an archive of them or its URL")
    root = locate_dataset(where, dataset_dir)
    cache = build_or_load_cache(index_catalogue(root), size, cache_dir(dataset_dir))
    _warn_skipped(cache.skipped, root)
    return ImageSet.from_cache(cache, np.arange(len(cache.index)))


def _warn_skipped(skipped: list[tuple[str, str]], root: Path) -> None:
    warning = describe_skipped(skipped, root)
    if warning:
        print(warning)


def concat_sets(sets: list[ImageSet], root: Path) -> ImageSet:
    """One ImageSet of several (the splits of a dataset), labelled by item name across them."""
    if len(sets) == 1:
        return sets[0]
    owners = [s.items[label] for s in sets for label in s.labels]
    items, labels = np.unique(np.asarray(owners), return_inverse=True)
    paths = [os.path.relpath(p, root) for s in sets for p in s.paths]
    offsets = np.cumsum([0] + [len(s) for s in sets])
    size = sets[0].size

    def load(rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), size, size, 3), dtype=np.uint8)
        part = np.searchsorted(offsets, rows, side="right") - 1
        for number, image_set in enumerate(sets):
            mask = part == number
            if mask.any():
                out[mask] = image_set.batch(rows[mask] - offsets[number])
        return out

    index = DatasetIndex(Path(root), paths, labels.astype(np.int64), [str(item) for item in items])
    return ImageSet(index, size, load)
