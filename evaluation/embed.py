"""Embed every image of a set, in order, for retrieval metrics and figures."""
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
    embedding does not depend on its batch) without autograd, in bf16/fp16 autocast on CUDA. The
    model is moved to `device`; each module's train/eval mode is restored afterwards, because
    training evaluates between epochs and a frozen backbone may sit in eval mode on purpose.
    uint8 pixels travel to the device and become floats there (a quarter of the transfer), and
    outputs stay there until the end, so the CPU reads the next batch while the GPU works.
    """
    device = torch.device(device)
    model.to(device)
    chunks = []
    with _eval_mode(model), torch.inference_mode(), _autocast(device):
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


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Half-precision autocast on CUDA (bf16 where supported); full precision elsewhere."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)
