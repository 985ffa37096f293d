"""A gallery's embeddings saved once per (model weights, gallery content, input size) and reloaded.

Searching a catalogue with a photo should cost one forward pass, not one per gallery image. The
first search embeds the gallery and saves `<gallery>_<size>px_<key>.npy` (float32, opened
memory-mapped) plus `.json` (paths, item names), and, the first time `--knn_backend faiss` asks
for it with faiss installed, a `.faiss` flat index beside them. The key hashes the model's
weights (not a file's name or date, so the same checkpoint copied elsewhere still matches) and
the gallery's files (paths, sizes, mtimes): new weights or a changed gallery give a new key, and
older indexes of that gallery are removed.
An index that cannot be read is derived data: it is rebuilt with a one-line notice.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.atomic import atomic_write, atomic_write_text
from data.dataset import ImageSet
from evaluation.embed import embed

INDEX_VERSION = 1


@dataclass
class GalleryIndex:
    """Embeddings (N, D) float32, memory-mapped once saved, row i for gallery image i."""

    embeddings: np.ndarray
    paths: list[str]
    items: list[str]
    faiss_path: Path | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def faiss_index(self) -> object | None:
        """A faiss flat index of the embeddings (saved beside them), or None without faiss."""
        return None if self.faiss_path is None else _faiss_index(self.faiss_path, self.embeddings)

    def tensor(self) -> torch.Tensor:
        """The embeddings as a CPU tensor sharing the memory map (copy-on-write, no copy)."""
        return torch.from_numpy(self.embeddings)


def model_digest(model: nn.Module) -> str:
    """A hash of the model's class, input size and every weight: the checkpoint's identity."""
    digest = hashlib.sha256(f"{type(model).__name__}:{getattr(model, 'input_size', '')}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def gallery_digest(gallery: ImageSet) -> str:
    """A hash of the gallery's files (path, size, mtime) in order, with their item names."""
    digest = hashlib.sha256(f"v{INDEX_VERSION}:{gallery.size}".encode())
    for path, label in zip(gallery.paths, gallery.labels):
        st = os.stat(path)
        line = f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{gallery.items[label]}\n"
        digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def load_or_build(model: nn.Module, gallery: ImageSet, folder: Path, name: str,
                  device: torch.device | str = "cpu") -> GalleryIndex:
    """The saved index of (model, gallery) in `folder`, embedding and saving it when missing."""
    prefix = f"{name}_{gallery.size}px_"
    stem = folder / f"{prefix}{model_digest(model)}_{gallery_digest(gallery)}"
    index = _load(stem, gallery) if stem.with_suffix(".json").exists() else None
    if index is not None:
        print(f"loaded index of {len(index)} images from {stem.with_suffix('.npy')}")
        return index
    embeddings = embed(model, gallery, device=device).numpy()
    _save(stem, embeddings, gallery)
    for stale in folder.glob(f"{prefix}*"):
        if not stale.name.startswith(stem.name):
            stale.unlink(missing_ok=True)
    print(f"built index of {len(gallery)} images in {stem.with_suffix('.npy')}")
    return GalleryIndex(np.load(stem.with_suffix(".npy"), mmap_mode="c"), list(gallery.paths),
                        _item_names(gallery), stem.with_suffix(".faiss"))


def embed_unsaved(model: nn.Module, gallery: ImageSet, device: torch.device | str = "cpu") -> GalleryIndex:
    """The gallery embedded now and kept in memory only (for metrics, see evaluation.workflow)."""
    return GalleryIndex(embed(model, gallery, device=device).numpy(), list(gallery.paths),
                        _item_names(gallery))


def _item_names(gallery: ImageSet) -> list[str]:
    return [gallery.items[label] for label in gallery.labels]


def _save(stem: Path, embeddings: np.ndarray, gallery: ImageSet) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".faiss").unlink(missing_ok=True)  # made again from these embeddings on demand
    atomic_write(stem.with_suffix(".npy"), lambda f: np.save(f, embeddings.astype(np.float32)))
    meta = {"version": INDEX_VERSION, "count": len(gallery), "dim": int(embeddings.shape[1]),
            "paths": list(gallery.paths), "items": _item_names(gallery)}
    atomic_write_text(stem.with_suffix(".json"), json.dumps(meta, ensure_ascii=True))


def _load(stem: Path, gallery: ImageSet) -> GalleryIndex | None:
    """The index at `stem`, or None with a notice when it is damaged or does not fit `gallery`."""
    npy = stem.with_suffix(".npy")
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
        embeddings = np.load(npy, mmap_mode="c")
        fits = (meta["version"] == INDEX_VERSION and meta["paths"] == list(gallery.paths)
                and embeddings.dtype == np.float32 and embeddings.shape == (meta["count"], meta["dim"]))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        print(f"notice: {npy}: saved gallery index is damaged ({type(err).__name__}); rebuilding it")
        return None
    if not fits:
        print(f"notice: {npy}: saved gallery index does not match the gallery; rebuilding it")
        return None
    return GalleryIndex(embeddings, meta["paths"], meta["items"], stem.with_suffix(".faiss"))


def _faiss_index(path: Path, embeddings: np.ndarray) -> object | None:
    """The faiss index saved at `path`, made and saved first if missing (faiss installed after the
    index was built); None when faiss is not installed."""
    faiss = _faiss()
    if faiss is None:
        return None
    if path.exists():
        try:
            return faiss.deserialize_index(np.frombuffer(path.read_bytes(), dtype=np.uint8))
        except (OSError, RuntimeError) as err:
            print(f"notice: {path}: saved faiss index is damaged ({type(err).__name__}); rebuilding it")
    flat = faiss.IndexFlatL2(embeddings.shape[1])
    flat.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    atomic_write(path, lambda f: f.write(faiss.serialize_index(flat).tobytes()))
    return flat


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss
