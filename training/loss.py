"""Triplet margin loss with online mining over one batch of embeddings.

Distances and the loss are computed in float32 with autocast off: under mixed precision the
embeddings arrive in float16, where ``|a|^2 + |b|^2 - 2ab`` loses the small differences that
decide which negative is semi-hard.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from training.mining import STRATEGIES, label_masks


class TripletLoss(NamedTuple):
    """The loss to backpropagate and two triplet counts (0-d tensors, to read once per epoch)."""

    loss: Tensor
    active: Tensor   # triplets with a positive loss: the ones that produce a gradient
    mined: Tensor    # triplets the loss was taken over (pairs, anchors or all valid triplets)


def pairwise_distances(embeddings: Tensor) -> Tensor:
    """(B, B) Euclidean distances, with a gradient that stays finite at zero distance.

    Clamping the squared distance before the square root keeps d/dx sqrt(x) finite on the
    diagonal, which would otherwise put NaN into the gradient even though it is masked out.
    """
    squared = embeddings.pow(2).sum(dim=1)
    d2 = squared[:, None] + squared[None, :] - 2.0 * embeddings @ embeddings.T
    return d2.clamp_min(1e-12).sqrt()


def triplet_loss(embeddings: Tensor, labels: Tensor, margin: float, mining: str,
                 rows: Tensor | None = None) -> TripletLoss:
    """Mine triplets in the batch with ``mining`` ("semihard", "hard", "all") and return the loss.

    ``rows``: the dataset row of each embedding, so a repeated image is never its own positive.
    """
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        d = pairwise_distances(embeddings.float())
        pos, neg = label_masks(labels.to(embeddings.device),
                               None if rows is None else rows.to(embeddings.device))
        return TripletLoss(*STRATEGIES[mining](d, pos, neg, margin))
