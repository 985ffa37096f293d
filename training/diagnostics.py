"""Per-step numbers that show what the embedding is doing, averaged into each epoch's stats row.

A triplet loss can fall for bad reasons: every embedding collapsing onto one point makes all
distances 0 and the loss exactly the margin, and easy batches make no triplet active. The stats
file therefore records, per epoch, the mean anchor-positive and anchor-negative distances, the
share of mined triplets that were active (gave a gradient), and the spread of the embeddings
(mean over dimensions of the per-dimension standard deviation in the batch; it falls towards 0
as the embeddings collapse).
"""
from __future__ import annotations

import torch
from torch import Tensor

from training.loss import pairwise_distances

# stats-file columns, in the order `batch_diagnostics` returns them (then "active share")
DISTANCE_COLUMNS = ("d_ap", "d_an", "emb std")
COLUMNS = ("d_ap", "d_an", "active share", "emb std")


@torch.no_grad()
def batch_diagnostics(embeddings: Tensor, labels: Tensor) -> Tensor:
    """(mean anchor-positive distance, mean anchor-negative distance, mean per-dimension std)."""
    embeddings = embeddings.detach().float()
    d = pairwise_distances(embeddings)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    d_ap = (d * pos).sum() / pos.sum().clamp_min(1)
    d_an = (d * ~same).sum() / (~same).sum().clamp_min(1)
    return torch.stack([d_ap, d_an, embeddings.std(dim=0).mean()])


def epoch_diagnostics(sums: Tensor, steps: int, active: float, mined: float) -> dict[str, float]:
    """The stats-row values from the summed per-step diagnostics and triplet counts of an epoch."""
    means = (sums / max(steps, 1)).tolist()
    values = dict(zip(DISTANCE_COLUMNS, means))
    values["active share"] = active / mined if mined else 0.0
    return {column: values[column] for column in COLUMNS}
