"""Embed every image of a set, in order, for retrieval metrics, galleries and photo queries.

Every embedding that is compared with another one (metrics, a saved gallery index, a query photo)
comes from `embed`, in float32 with TF32 off, so one checkpoint gives the same neighbours on every
device and a query is never compared with a gallery embedded at another precision.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Protocol

import numpy as np
import torch
from torch import nn

from data.tensors import to_tensor


class ImageBatches(Protocol):
    """What embedding needs of `data.dataset.ImageSet`."""

    def __len__(self) -> int: ...

    def batch(self, indices: np.ndarray | list[int]) -> np.ndarray: ...


def embed(model: nn.Module, image_set: ImageBatches, batch_size: int = 256,
          device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, emb_dim) float32 CPU embeddings of the set's images, row i for image i.

    Runs in eval mode (batch norm uses its running statistics, dropout is off, so an image's
    embedding does not depend on its batch) without autograd, in float32 on every device (no
    autocast, TF32 off even where training enabled it). The
    model is moved to `device`; each module's train/eval mode is restored afterwards, because
    training evaluates between epochs and a frozen backbone may sit in eval mode on purpose.
    uint8 pixels travel to the device and become floats there (a quarter of the transfer), and
    outputs stay there until the end, so the CPU reads the next batch while the GPU works.
    """
    device = torch.device(device)
    model.to(device)
    chunks = []
    with _eval_mode(model), torch.inference_mode(), _full_precision():
        for rows in _batches(len(image_set), batch_size):
            pixels = torch.from_numpy(np.ascontiguousarray(image_set.batch(rows)))
            chunks.append(model(to_tensor(pixels.to(device, non_blocking=True))).float())
    if not chunks:
        return torch.zeros(0, int(model.emb_dim))
    return torch.cat(chunks).cpu()


def _batches(n: int, batch_size: int) -> Iterator[np.ndarray]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield np.arange(start, min(start + batch_size, n))


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside, each submodule's own previous mode after (even on error)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _full_precision() -> Iterator[None]:
    """float32 maths inside: autocast off and TF32 off for matmuls and cuDNN, restored after."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def embed_photos(model: nn.Module, photos: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(Q, emb_dim) float32 embeddings of decoded photos ((Q, S, S, 3) uint8), through `embed`."""
    return embed(model, _Photos(photos), device=device)


class _Photos:
    """Decoded photos seen as an `ImageBatches`."""

    def __init__(self, photos: np.ndarray):
        self._photos = photos

    def __len__(self) -> int:
        return len(self._photos)

    def batch(self, indices: np.ndarray | list[int]) -> np.ndarray:
        return self._photos[np.asarray(indices, dtype=np.int64)]
