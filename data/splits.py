"""Index, split by item and decode a dataset root into named ImageSets.

A plain `<root>/<item>/...` folder is split by item, never by image, so evaluation measures
retrieval of products the network has never seen (the original split rows 80/20 and leaked items
across the split). Each item's side comes from a hash of its own name and the split seed, so
adding or removing items never moves another item across. A folder already laid out as `train/`
plus `val|eval|test/` (split-folders style), or as `query/` + `gallery/` (DeepFashion In-Shop
style, optionally with `train/`), keeps its split.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import hashlib

import numpy as np
from PIL import Image

from data.cache import build_or_load_cache
from data.dataset import ImageSet
from data.decode import check_pixels
from data.identity import DataIdentity, dataset_identity, split_identity
from data.index import DatasetIndex, index_folder
from common.errors import UserError

EVAL_SPLIT_NAMES = ("val", "eval", "test")
QUERY_GALLERY_NAMES = ("query", "gallery")


@dataclass
class Splits:
    """Decoded image sets by split name ('train' and at least one of val/eval/test)."""

    sets: dict[str, ImageSet]
    root: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)
    indexes: dict[str, DatasetIndex] = field(default_factory=dict)
    identity: DataIdentity | None = None

    def shared_items(self, eval_name: str) -> list[str]:
        """Item names a pre-split layout has in both train/ and ``eval_name``/ (seen items)."""
        if "train" not in self.indexes or eval_name not in self.indexes:
            return []
        return sorted(set(self.indexes["train"].items) & set(self.indexes[eval_name].items))

    def pick_eval(self, preferred: tuple[str, ...], override: str | None = None) -> ImageSet:
        """The evaluation set: `override` (--split) if given, else the first preferred present."""
        names = (override,) if override else preferred
        for name in names:
            if name in self.sets:
                return self.sets[name]
        raise UserError(f"--split {override}: no such split in {self.root}; "
                        f"available: {', '.join(sorted(self.sets))}")


def is_split_root(folder: Path) -> bool:
    """True for a `train/` + `val|eval|test/` layout or a `query/` + `gallery/` one."""
    return ((folder / "train").is_dir() and any((folder / n).is_dir() for n in EVAL_SPLIT_NAMES)) \
        or all((folder / n).is_dir() for n in QUERY_GALLERY_NAMES)


def load_splits(root: Path, size: int, cache_dir: Path, *, eval_fraction: float = 0.2,
                split_seed: int = 0, big_ims: bool = False, progress: bool = True) -> Splits:
    """Index, split by item and decode `root`; a pre-split layout (see the module docstring) is kept."""
    if is_split_root(root):
        parts = [n for n in ("train",) + EVAL_SPLIT_NAMES + QUERY_GALLERY_NAMES if (root / n).is_dir()]
        loaded = {n: _load_folder(root / n, size, cache_dir, big_ims, progress) for n in parts}
        sets = {n: s for n, (s, _, _) in loaded.items()}
        skipped = [(f"{n}/{p}", why) for n, (_, _, sk) in loaded.items() for p, why in sk]
        indexes = {n: idx for n, (_, idx, _) in loaded.items()}
        return Splits(sets, root, skipped, indexes,
                      dataset_identity(root, indexes, split_identity(True, eval_fraction, split_seed)))
    whole, index, skipped = _load_folder(root, size, cache_dir, big_ims, progress)
    train_rows, eval_rows = split_by_item(whole.index, eval_fraction, split_seed)
    sets = {"train": subset(whole, train_rows), "eval": subset(whole, eval_rows)}
    return Splits(sets, root, skipped, {"all": index},
                  dataset_identity(root, {"all": index}, split_identity(False, eval_fraction, split_seed)))


def split_by_item(index: DatasetIndex, eval_fraction: float = 0.2,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the train and eval images: an item is held out when the hash of (seed, its name),
    read as a number in [0, 1), is below ``eval_fraction``.

    A property of each item, not of its position: adding or removing items leaves every other
    item on its side. Only a tiny dataset whose hashes give no eval item (or fewer than 2
    training items) is topped up, from the items with the lowest (highest) hashes.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise UserError(f"--eval_fraction {eval_fraction}: must be between 0 and 1 (e.g. 0.2)")
    num_items = len(index.items)
    if num_items < 3:
        raise UserError(f"{index.root}: only {num_items} item folder(s) with readable images; at "
                        "least 3 are needed to train on some items and evaluate on others")
    position = np.array([item_hash(seed, name) for name in index.items])
    is_eval = position < eval_fraction
    if not is_eval.any():
        is_eval[np.argmin(position)] = True
    while (~is_eval).sum() < 2:
        is_eval[np.argmax(np.where(is_eval, position, -1.0))] = False
    image_is_eval = is_eval[index.labels]
    return np.flatnonzero(~image_is_eval), np.flatnonzero(image_is_eval)


def item_hash(seed: int, name: str) -> float:
    """A uniform number in [0, 1) from (seed, item name), the same on every machine and run."""
    digest = hashlib.blake2b(f"{seed}\0{name}".encode("utf-8", "surrogateescape"), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2.0 ** 64


def _load_folder(folder: Path, size: int, cache_dir: Path, big_ims: bool,
                 progress: bool) -> tuple[ImageSet, DatasetIndex, list[tuple[str, str]]]:
    index = index_folder(folder)
    if big_ims:
        readable, skipped = _check_headers(index)
        image_set = ImageSet.from_files(index.subset(readable), size)
    else:
        cache = build_or_load_cache(index, size, cache_dir, progress=progress)
        image_set, skipped = ImageSet.from_cache(cache, np.arange(len(cache.index))), cache.skipped
    if len(image_set) == 0:
        path, why = skipped[0]
        raise UserError(f"{folder}: none of its {len(index)} image files can be read (e.g. {path}: "
                        f"{why}); check that they are images and not damaged")
    return image_set, index, skipped


def subset(image_set: ImageSet, rows: np.ndarray) -> ImageSet:
    """Rows of an ImageSet, reading through the parent's loader."""
    parent = image_set
    return ImageSet(parent.index.subset(rows), parent.size, lambda r: parent.batch(rows[r]))


def _check_headers(index: DatasetIndex) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """With --big_ims nothing is decoded up front, so at least skip files whose header is bad
    or that declare more pixels than `decode_image` accepts (a decompression bomb)."""
    ok, skipped = [], []
    for row, rel in enumerate(index.paths):
        try:
            with Image.open(index.root / rel) as img:
                check_pixels(img)
                img.verify()
            ok.append(row)
        except Exception as err:  # PIL raises many types for broken files
            skipped.append((rel, str(err) or type(err).__name__))
    return np.asarray(ok, dtype=np.int64), skipped


def describe_skipped(skipped: list[tuple[str, str]], root: Path, limit: int = 5) -> str | None:
    """One warning line naming the files that could not be read (the first few, then a count)."""
    if not skipped:
        return None
    named = ", ".join(f"{p} ({why})" for p, why in skipped[:limit])
    more = f" and {len(skipped) - limit} more" if len(skipped) > limit else ""
    return f"warning: skipped {len(skipped)} unreadable image(s) in {root}: {named}{more}"


def describe_shared_items(splits: Splits, eval_set: ImageSet) -> str | None:
    """A warning when a pre-split layout's train/ and evaluation folder share item names."""
    eval_name = next(name for name, image_set in splits.sets.items() if image_set is eval_set)
    shared = splits.shared_items(eval_name)
    if not shared:
        return None
    named = ", ".join(shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
    return (f"warning: {splits.root}: {len(shared)} item(s) are in both train/ and {eval_name}/ "
            f"({named}); their {eval_name} scores are of items seen in training")
