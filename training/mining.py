"""Online triplet mining inside a batch, in O(B^2) memory.

All three strategies work on the (B, B) Euclidean distance matrix ``d`` and label masks. The
trick that avoids any (B, B, B) tensor: sort each anchor's negative distances once; then for an
anchor-positive pair, "the closest negative farther than the positive" is one ``searchsorted``,
and "the summed loss over all negatives within the margin" is a count times ``d_ap + margin``
minus a prefix sum of the sorted negative distances. Every function returns
``(loss, active, mined)``: the loss, the number of triplets with a positive loss (the ones that
give a gradient) and the number of triplets considered; the counts stay tensors so the training
loop never waits for the device.
"""
from __future__ import annotations

import torch
from torch import Tensor


def label_masks(labels: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(positive, negative) boolean (B, B) masks: same label but another image / other label.

    ``rows`` are the dataset rows of the batch: the sampler repeats an image when its item has
    fewer than K images, and an item can fill two groups of one batch, so two batch positions may
    hold the same image. Such a pair is not a positive (its distance says nothing about
    similarity, only about augmentation); without ``rows`` only the diagonal is excluded.
    """
    same = labels[:, None] == labels[None, :]
    ids = rows if rows is not None else torch.arange(len(labels), device=labels.device)
    return same & (ids[:, None] != ids[None, :]), ~same


def _sorted_negatives(d: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    """Each anchor's negative distances in ascending order (``inf`` after the last), and order."""
    return d.masked_fill(~neg, float("inf")).sort(dim=1)


def semihard(d: Tensor, pos: Tensor, neg: Tensor, margin: float) -> tuple[Tensor, Tensor, Tensor]:
    """FaceNet semi-hard: per anchor-positive pair the closest negative farther than the positive.

    When no negative is farther than the positive, the farthest negative is used (the one
    closest to the semi-hard band from below), as TensorFlow's ``triplet_semihard_loss`` does:
    falling back to the hardest negative instead pulls in the worst outliers and collapses
    training. The loss is the mean over all anchor-positive pairs (zero-loss ones included).
    """
    sorted_neg, order = _sorted_negatives(d, neg)
    num_neg = neg.sum(dim=1, keepdim=True)
    with torch.no_grad():
        first_farther = torch.searchsorted(sorted_neg.contiguous(), d.contiguous(), right=True)
        pick = torch.where(first_farther < num_neg, first_farther, (num_neg - 1).clamp_min(0))
        neg_column = order.gather(1, pick)
    valid = pos & (num_neg > 0)
    losses = torch.relu(d - d.gather(1, neg_column) + margin)[valid]
    mined = valid.sum()
    return losses.sum() / mined.clamp_min(1), (losses > 0).sum(), mined


def hard(d: Tensor, pos: Tensor, neg: Tensor, margin: float) -> tuple[Tensor, Tensor, Tensor]:
    """Batch-hard: per anchor its farthest positive against its closest negative."""
    hardest_pos = d.masked_fill(~pos, float("-inf")).max(dim=1).values
    hardest_neg = d.masked_fill(~neg, float("inf")).min(dim=1).values
    valid = pos.any(dim=1) & neg.any(dim=1)
    losses = torch.relu(hardest_pos - hardest_neg + margin)[valid]
    mined = valid.sum()
    return losses.sum() / mined.clamp_min(1), (losses > 0).sum(), mined


def batch_all(d: Tensor, pos: Tensor, neg: Tensor, margin: float) -> tuple[Tensor, Tensor, Tensor]:
    """Batch-all: every valid triplet, loss averaged over those with a positive loss.

    For a pair (a, p) the negatives with a positive loss are those with d_an < d_ap + margin: the
    first ``c`` of a's sorted negatives. Their summed loss is c * (d_ap + margin) - (sum of those
    c distances), a prefix sum; so no (B, B, B) tensor is ever built.
    """
    sorted_neg, _ = _sorted_negatives(d, neg)
    finite = torch.where(torch.isinf(sorted_neg), torch.zeros_like(sorted_neg), sorted_neg)
    prefix = torch.cat([finite.new_zeros(len(d), 1), finite.cumsum(dim=1)], dim=1)
    with torch.no_grad():
        within = torch.searchsorted(sorted_neg.contiguous(), (d + margin).contiguous(), right=False)
    pair_loss = within * (d + margin) - prefix.gather(1, within)
    active = within[pos].sum()
    mined = (pos.long() * neg.sum(dim=1, keepdim=True)).sum()
    return pair_loss[pos].sum() / active.clamp_min(1), active, mined


STRATEGIES = {"semihard": semihard, "hard": hard, "all": batch_all}
