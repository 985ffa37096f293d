"""Index a catalogue folder to search: item folders, loose images, or both.

A catalogue is what `evaluate.py --gallery PATH` searches. Unlike a training dataset it may be a
flat folder of product photos: each loose image is then its own entry, named by its file stem.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import UserError
from data.index import IMAGE_SUFFIXES, DatasetIndex, index_folder, printable


def index_catalogue(root: Path) -> DatasetIndex:
    """`<root>/<item>/<image>` images labelled by folder, plus `<root>/<image>` labelled by stem."""
    root = Path(root)
    loose = _loose_images(root)
    has_folders = any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir())
    if not has_folders:
        if not loose:
            raise UserError(f"{root}: no images found; a gallery is a folder of images, or of "
                            f"<item>/<image> folders (image types: {', '.join(sorted(IMAGE_SUFFIXES))})")
        paths, owners = [], []
    else:
        try:
            nested = index_folder(root)
        except UserError:
            if not loose:
                raise
            nested = DatasetIndex(root, [], np.zeros(0, dtype=np.int64), [])
        paths, owners = list(nested.paths), [nested.items[label] for label in nested.labels]
    paths += [f.name for f in loose]
    owners += [printable(f.stem) for f in loose]
    items, labels = np.unique(np.asarray(owners), return_inverse=True)
    return DatasetIndex(root, paths, labels.astype(np.int64), [str(item) for item in items])


def _loose_images(root: Path) -> list[Path]:
    """Image files directly in `root` (not hidden, not links), sorted."""
    return sorted(f for f in root.iterdir() if not f.name.startswith(".") and not f.is_symlink()
                  and f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
