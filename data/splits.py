"""Index, split by item and decode a dataset root into named ImageSets.

A plain `<root>/<item>/...` folder is split by item (seeded); a folder already laid out as
`train/` plus `val|eval|test/` (split-folders style), or as `query/` + `gallery/` (DeepFashion
In-Shop style, optionally with `train/`), keeps its split.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from data.cache import build_or_load_cache
from data.dataset import ImageSet
from data.decode import check_pixels
from data.index import DatasetIndex, index_folder, split_by_item
from misc.errors import UserError

EVAL_SPLIT_NAMES = ("val", "eval", "test")
QUERY_GALLERY_NAMES = ("query", "gallery")


@dataclass
class Splits:
    """Decoded image sets by split name ('train' and at least one of val/eval/test)."""

    sets: dict[str, ImageSet]
    root: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)
    indexes: dict[str, DatasetIndex] = field(default_factory=dict)

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
        return Splits(sets, root, skipped, {n: idx for n, (_, idx, _) in loaded.items()})
    whole, index, skipped = _load_folder(root, size, cache_dir, big_ims, progress)
    train_rows, eval_rows = split_by_item(whole.index, eval_fraction, split_seed)
    sets = {"train": _subset(whole, train_rows), "eval": _subset(whole, eval_rows)}
    return Splits(sets, root, skipped, {"all": index})


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


def _subset(image_set: ImageSet, rows: np.ndarray) -> ImageSet:
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
