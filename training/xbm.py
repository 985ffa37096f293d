"""Cross-batch memory (XBM, Wang et al. 2020): mine triplets beyond the current batch.

A P x K batch offers each anchor only P - 1 other items as negatives. The memory keeps the
(detached) embeddings and labels of the most recent batches, and each anchor of the current
batch is also mined against them with the same strategy and margin: many more negatives, for
the cost of a (B, M) distance matrix. Memory embeddings carry no gradient and come from
slightly older weights; that drift is small when the memory holds only recent steps.

The memory is emptied at the start of every epoch, so an epoch's steps depend only on the
checkpoint it starts from and resumed runs stay exact (the memory is not saved).
"""
from __future__ import annotations

import torch
from torch import Tensor

from training.loss import TripletLoss
from training.mining import STRATEGIES


class CrossBatchMemory:
    """A ring buffer of the last ``size`` embeddings and their labels."""

    def __init__(self, size: int):
        self.size = size
        self.embeddings: Tensor | None = None
        self.labels: Tensor | None = None
        self.rows: Tensor | None = None
        self.filled = 0
        self.next = 0

    def reset(self) -> None:
        """Forget everything (start of an epoch)."""
        self.filled = self.next = 0

    def loss(self, embeddings: Tensor, labels: Tensor, rows: Tensor, margin: float,
             mining: str) -> TripletLoss | None:
        """Triplets with anchors in the batch and positives/negatives in the memory; None if empty.
        A remembered copy of the anchor's own image (same dataset row) is no positive."""
        if self.filled == 0:
            return None
        # a copy: `add` overwrites the buffer before backward needs these values
        memory, memory_labels = self.embeddings[:self.filled].clone(), self.labels[:self.filled]
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            anchors = embeddings.float()
            d2 = anchors.pow(2).sum(1)[:, None] + memory.pow(2).sum(1)[None] - 2 * anchors @ memory.T
            d = d2.clamp_min(1e-12).sqrt()
            same = labels[:, None] == memory_labels[None, :]
            other_image = rows[:, None] != self.rows[None, :self.filled]
            return TripletLoss(*STRATEGIES[mining](d, same & other_image, ~same, margin))

    def add(self, embeddings: Tensor, labels: Tensor, rows: Tensor) -> None:
        """Remember a batch (detached), overwriting the oldest entries when full."""
        embeddings, labels, rows = embeddings.detach().float()[-self.size:], labels[-self.size:], rows[-self.size:]
        if self.embeddings is None:
            self.embeddings = embeddings.new_zeros(self.size, embeddings.shape[1])
            self.labels = labels.new_full((self.size,), -1)
            self.rows = rows.new_full((self.size,), -1)
        slots = (self.next + torch.arange(len(labels), device=labels.device)) % self.size
        self.embeddings[slots] = embeddings
        self.labels[slots] = labels
        self.rows[slots] = rows
        self.next = (self.next + len(labels)) % self.size
        self.filled = min(self.size, self.filled + len(labels))
