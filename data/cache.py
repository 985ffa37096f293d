"""Decode a dataset once into a memory-mapped uint8 array that every epoch reads.

The original decoded and resized each JPEG on every access. Here `build_or_load_cache` decodes
each image once; the result `<key>.npy` (N, S, S, 3) plus `<key>.json` (paths, labels, skipped
files) is keyed by a fingerprint of the source files (names, sizes, mtimes) and the size, so an
unchanged dataset opens instantly and a changed one is rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.decode import UnreadableImage, decode_image
from data.index import DatasetIndex
from misc.errors import UserError

CACHE_VERSION = 1


@dataclass
class ImageCache:
    """Decoded images of a whole dataset folder, in index order, minus skipped files."""

    images: np.ndarray               # (N, S, S, 3) uint8, memory-mapped
    index: DatasetIndex              # the N images that decoded, labels over index.items
    skipped: list[tuple[str, str]]   # (relative path, reason) of files that did not decode


def fingerprint(index: DatasetIndex, size: int) -> str:
    """A short hash of every file's name, size and mtime, the image size and the cache version."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}:{size}".encode())
    for rel in index.paths:
        st = (index.root / rel).stat()
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def build_or_load_cache(index: DatasetIndex, size: int, cache_dir: Path,
                        *, progress: bool = True) -> ImageCache:
    """Open the cache for (index, size) if it is current, otherwise decode everything into it."""
    source = _source_id(index.root)
    key = f"{source}_{size}px_{fingerprint(index, size)}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta_path = cache_dir / f"{key}.json"
    if meta_path.exists():
        return _open(index, cache_dir / f"{key}.npy", meta_path)
    cache = _build(index, size, cache_dir / f"{key}.npy", meta_path, progress)
    _remove_stale(cache_dir, f"{source}_{size}px_", keep=key)
    return cache


def _source_id(root: Path) -> str:
    """Readable folder name plus a hash of its absolute path: two `train/` folders never collide."""
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in root.name) or "dataset"
    where = hashlib.sha1(str(root.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{name}-{where}"


def _open(index: DatasetIndex, array_path: Path, meta_path: Path) -> ImageCache:
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise UserError(f"{array_path}: image cache is unreadable ({err}); delete it and re-run "
                        "to rebuild") from err
    kept = np.asarray(meta["rows"], dtype=np.int64)
    return ImageCache(images, index.subset(kept), [tuple(s) for s in meta["skipped"]])


def _build(index: DatasetIndex, size: int, array_path: Path, meta_path: Path,
           progress: bool) -> ImageCache:
    """Decode with a thread pool (PIL releases the GIL) straight into a temporary memmap.

    The progress bar shows only on a terminal (tqdm's disable=None), so logs stay clean.
    """
    tmp_array = array_path.with_suffix(".npy.tmp")
    images = np.lib.format.open_memmap(tmp_array, mode="w+", dtype=np.uint8,
                                       shape=(len(index), size, size, 3))
    ok = np.zeros(len(index), dtype=bool)
    skipped: list[tuple[str, str]] = []

    def decode_row(row: int) -> None:
        try:
            images[row] = decode_image(index.root / index.paths[row], size)
            ok[row] = True
        except UnreadableImage as err:
            skipped.append((index.paths[row], str(err)))

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        list(tqdm(pool.map(decode_row, range(len(index))), total=len(index), disable=None if progress else True,
                  desc=f"caching {index.root.name} at {size}px", unit="img", leave=False))
    rows = np.flatnonzero(ok)
    compact = _compact(images, rows, tmp_array, array_path)
    meta = {"version": CACHE_VERSION, "rows": rows.tolist(), "skipped": sorted(skipped)}
    _write_json_atomic(meta_path, meta)
    return ImageCache(compact, index.subset(rows), sorted(skipped))


def _compact(images: np.ndarray, rows: np.ndarray, tmp_array: Path, array_path: Path) -> np.ndarray:
    """Drop the rows of skipped images and move the array to its final name."""
    if len(rows) < len(images):
        final = np.lib.format.open_memmap(array_path.with_suffix(".npy.tmp2"), mode="w+",
                                          dtype=np.uint8, shape=(len(rows),) + images.shape[1:])
        final[:] = images[rows]
        final.flush()
        del images
        tmp_array.unlink()
        os.replace(array_path.with_suffix(".npy.tmp2"), array_path)
    else:
        images.flush()
        del images
        os.replace(tmp_array, array_path)
    return np.load(array_path, mmap_mode="r")


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def _remove_stale(cache_dir: Path, prefix: str, keep: str) -> None:
    """Delete older caches of the same source and size so they do not pile up on disk."""
    for path in cache_dir.glob(f"{prefix}*"):
        if not path.name.startswith(keep):
            path.unlink(missing_ok=True)
