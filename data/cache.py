"""Decode a dataset once into a memory-mapped uint8 array that every epoch reads.

The original decoded and resized each JPEG on every access. Here `build_or_load_cache` decodes
each image once; the result `<key>.npy` (N, S, S, 3) plus `<key>.json` (paths, labels, skipped
files) is keyed by a fingerprint of the source files (names, sizes, mtimes) and the size, so an
unchanged dataset opens instantly and a changed one is rebuilt.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent first builds are not guarded there
    fcntl = None

import numpy as np
from tqdm import tqdm

from data.decode import UnreadableImage, decode_image
from data.index import DatasetIndex
from common.atomic import atomic_write_text
from common.errors import UserError

CACHE_VERSION = 1
TEMP_SUFFIX = ".tmp"


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
    """Open the cache for (index, size) if it is current, otherwise decode everything into it.

    Building holds a lock on the key, so two runs started together on a new dataset decode it
    once between them instead of writing over each other's files. A cache that cannot be read
    (a deleted or damaged file) is derived data: it is rebuilt, with a warning.
    """
    source = _source_id(index.root)
    key = f"{source}_{size}px_{fingerprint(index, size)}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{cache_dir}: cannot create the image cache folder ({err.strerror or err}); "
                        "choose another --dataset_dir") from err
    array_path, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    with _build_lock(cache_dir / f"{key}.lock"):
        cache = _open(index, size, array_path, meta_path) if meta_path.exists() else None
        if cache is None:
            cache = _build_cleanly(index, size, array_path, meta_path, progress)
            _remove_stale(cache_dir, f"{source}_{size}px_", keep=key)
    return cache


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (released by the OS if the process dies); none on Windows."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _source_id(root: Path) -> str:
    """Readable folder name plus a hash of its absolute path: two `train/` folders never collide."""
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in root.name) or "dataset"
    where = hashlib.sha1(str(root.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{name}-{where}"


def _open(index: DatasetIndex, size: int, array_path: Path, meta_path: Path) -> ImageCache | None:
    """The cache on disk, or None (with a warning) when it is missing, damaged or inconsistent."""
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(array_path, mmap_mode="r")
        kept = np.asarray(meta["rows"], dtype=np.int64)
        skipped = [(path, why) for path, why in meta["skipped"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(f"{array_path}: image cache is unreadable ({type(err).__name__}); "
                      "rebuilding it", stacklevel=3)
        return None
    if images.shape != (len(kept), size, size, 3) or images.dtype != np.uint8 or \
            (len(kept) and not 0 <= kept.min() <= kept.max() < len(index)):
        warnings.warn(f"{array_path}: image cache does not match its dataset; rebuilding it",
                      stacklevel=3)
        return None
    return ImageCache(images, index.subset(kept), skipped)


def _build_cleanly(index: DatasetIndex, size: int, array_path: Path, meta_path: Path,
                   progress: bool) -> ImageCache:
    """`_build`, turning a full disk into a one-line error and never leaving temporary files.

    Called under the key's lock, so any temporary file of this key is a leftover of a killed
    build (or of this one, on failure) and can go.
    """
    try:
        return _build(index, size, array_path, meta_path, progress)
    except OSError as err:
        needed = len(index) * size * size * 3 / 2**20
        raise UserError(f"{array_path.parent}: cannot write the image cache ({err.strerror or err}); "
                        f"it needs about {needed:,.1f} MB: free disk space or choose another "
                        "--dataset_dir") from err
    finally:
        for leftover in array_path.parent.glob(f"{array_path.stem}.*{TEMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)


def _build(index: DatasetIndex, size: int, array_path: Path, meta_path: Path,
           progress: bool) -> ImageCache:
    """Decode with a thread pool (PIL releases the GIL) straight into a temporary memmap.

    The progress bar shows only on a terminal (tqdm's disable=None), so logs stay clean.
    """
    tmp_array = _temp_name(array_path, 1)
    images = _reserved_memmap(tmp_array, (len(index), size, size, 3))
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
    # ASCII JSON: non-UTF-8 file names (lone surrogates) are written as \\udcXX escapes and read
    # back exactly, so skipped-file names survive the round trip.
    atomic_write_text(meta_path, json.dumps(meta, ensure_ascii=True))
    return ImageCache(compact, index.subset(rows), sorted(skipped))


def _compact(images: np.ndarray, rows: np.ndarray, tmp_array: Path, array_path: Path) -> np.ndarray:
    """Drop the rows of skipped images and move the array to its final name."""
    if len(rows) < len(images):
        tmp_final = _temp_name(array_path, 2)
        final = _reserved_memmap(tmp_final, (len(rows),) + images.shape[1:])
        final[:] = images[rows]
        final.flush()
        del images, final
        tmp_array.unlink()
        os.replace(tmp_final, array_path)
    else:
        images.flush()
        del images
        os.replace(tmp_array, array_path)
    return np.load(array_path, mmap_mode="r")


def _temp_name(path: Path, number: int) -> Path:
    """``<key>.npy.<n>.tmp``: the key's prefix, so `_remove_stale` and `_build_cleanly` find it."""
    return path.with_name(f"{path.stem}.{path.suffix.lstrip('.')}.{number}{TEMP_SUFFIX}")


def _reserved_memmap(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A new uint8 .npy memmap whose disk blocks are allocated up front.

    A memmap over a sparse file that the disk cannot fill kills the process with SIGBUS at some
    write; reserving the space first turns a full disk into an ordinary OSError (ENOSPC) here.
    """
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as handle:
            try:
                os.posix_fallocate(handle.fileno(), 0, path.stat().st_size)
            except OSError as err:
                if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # cannot reserve: go unreserved
                    raise
    return images


def _remove_stale(cache_dir: Path, prefix: str, keep: str) -> None:
    """Delete older caches of the same source and size so they do not pile up on disk."""
    for path in cache_dir.glob(f"{prefix}*"):
        if not path.name.startswith(keep):
            path.unlink(missing_ok=True)
