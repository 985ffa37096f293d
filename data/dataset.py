"""`ImageSet`: the one object training and evaluation read images from."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from data.cache import ImageCache
from data.decode import UnreadableImage, decode_image
from data.index import DatasetIndex
from common.errors import UserError


class ImageSet:
    """Images of one split at one size, with item labels; `batch(rows)` returns uint8 pixels.

    Whether pixels come from the memory-mapped cache or from decoding files (`--big_ims`) is
    hidden behind `batch`, so the trainer and the evaluator never care.
    """

    def __init__(self, index: DatasetIndex, size: int, load: Callable[[np.ndarray], np.ndarray]):
        self.index = index
        self.labels = index.labels
        self.items = index.items
        self.paths = [str(index.root / p) for p in index.paths]
        self.size = size
        self._load = load

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """(B, S, S, 3) uint8 images at `rows` of this set."""
        return self._load(np.asarray(rows, dtype=np.int64))

    @classmethod
    def from_cache(cls, cache: ImageCache, rows: np.ndarray) -> "ImageSet":
        """A view of `rows` of a decoded cache; reading is a memmap gather, no decoding."""
        rows = np.asarray(rows, dtype=np.int64)
        images = cache.images
        return cls(cache.index.subset(rows), images.shape[1], lambda r: np.asarray(images[rows[r]]))

    @classmethod
    def from_files(cls, index: DatasetIndex, size: int) -> "ImageSet":
        """Decode files on every call (`--big_ims`): no cache, full-resolution sources."""
        def load(rows: np.ndarray) -> np.ndarray:
            return np.stack([_decode_or_fail(index.root / index.paths[r], size) for r in rows])
        return cls(index, size, load)


def _decode_or_fail(path: Path, size: int) -> np.ndarray:
    try:
        return decode_image(path, size)
    except UnreadableImage as err:
        raise UserError(f"{path}: cannot read image ({err}); remove it or run without --big_ims "
                        "so unreadable files are skipped") from err
