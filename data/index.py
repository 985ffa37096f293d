"""Find every image of every item in a dataset folder.

A dataset is `<root>/<item>/<image>`: the folder is the label (data.splits splits by item).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import UserError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclass
class DatasetIndex:
    """The images of a dataset: parallel lists of paths and item labels."""

    root: Path
    paths: list[str]                 # relative to root, posix separators
    labels: np.ndarray               # (N,) int64 index into items
    items: list[str]                 # item (folder) names, sorted, `printable`
    ignored: list[str] = field(default_factory=list)  # non-image or unsafe files, relative

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, rows: np.ndarray) -> "DatasetIndex":
        """The images at `rows`, with labels renumbered over the items they contain."""
        rows = np.asarray(rows, dtype=np.int64)
        kept_items, new_labels = np.unique(self.labels[rows], return_inverse=True)
        return DatasetIndex(
            root=self.root,
            paths=[self.paths[i] for i in rows],
            labels=new_labels.astype(np.int64),
            items=[self.items[i] for i in kept_items],
        )

    def images_per_item(self) -> np.ndarray:
        """Count of images of each item, in item order."""
        return np.bincount(self.labels, minlength=len(self.items))


def index_folder(root: Path) -> DatasetIndex:
    """Index `<root>/<item>/...` images. Missing or empty folders are a `UserError`.

    Hidden files (.DS_Store), non-image files and symlinks that point outside the dataset are
    ignored, so a stray file never becomes a training sample or escapes the folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found; pass --dataset_dir/--dataset pointing "
                        "at a folder of item folders, or use --dataset synthetic")
    real_root = root.resolve()
    paths: list[str] = []
    owners: list[str] = []
    ignored: list[str] = []
    for item_dir in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if not item_dir.is_dir() or not _inside(item_dir, real_root):
            ignored.append(item_dir.name)
            continue
        for file in _walk_files(item_dir):
            rel = file.relative_to(root).as_posix()
            if _is_safe_image(file, real_root):
                paths.append(rel)
                owners.append(item_dir.name)
            else:
                ignored.append(rel)
    if not paths:
        raise UserError(f"{root}: no images found; expected <root>/<item>/<image>.jpg "
                        f"(image types: {', '.join(sorted(IMAGE_SUFFIXES))})")
    items, labels = np.unique(np.array(owners), return_inverse=True)
    names = [printable(str(item)) for item in items]
    return DatasetIndex(root, paths, labels.astype(np.int64), names, ignored)


def printable(name: str) -> str:
    """``name`` with any undecodable byte shown as ``\\udcXX``.

    A file name that is not valid UTF-8 reaches Python with lone surrogates in it: fine for
    opening the file, but matplotlib, strict terminals and UTF-8 encoders refuse to draw or
    write it. Item names are only ever shown, so they are kept in this form; paths keep theirs.
    """
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _walk_files(folder: Path) -> list[Path]:
    """All non-hidden files under `folder`, sorted, so indexing is deterministic."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return found


def _is_safe_image(file: Path, real_root: Path) -> bool:
    """An existing image file by suffix whose real location lies inside the dataset
    (a dangling link is no image; a link out of the dataset is not part of it)."""
    return file.suffix.lower() in IMAGE_SUFFIXES and file.is_file() and _inside(file, real_root)


def _inside(path: Path, real_root: Path) -> bool:
    """Whether ``path``, after following symlinks, lies inside ``real_root``."""
    return not path.is_symlink() or path.resolve().is_relative_to(real_root)
