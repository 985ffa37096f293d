"""Leave-one-out retrieval metrics: every image queries all the other images of its set.

An image is relevant to a query when it shows the same item. R, the number of *other* images of
the query's item, is how many relevant images exist. Images whose item has no other image
(R = 0) cannot be queried: they stay in the gallery but are left out of every average, and are
counted in ``num_unqueryable`` so a report says what the fractions are of.

- ``closest_i``: fraction of queries whose i-th nearest image is relevant (i = 1..k), counted
  only over queries with at least i other images of their item (R >= i). For the others a
  perfect ranking has already used up the item's images before rank i, so counting them would
  pull a perfect model below 100% (to 0 when every item has i images or fewer). When no query
  has R >= i, ``closest_i`` is left out (a table shows "-").
- ``in_any@k``: fraction with a relevant image among the k nearest, the original project's
  "evaluation score". With k at least the gallery size it is 1 (every queryable image has a
  partner somewhere).
- ``precision@1`` = ``closest_1``.
- ``r_precision`` and ``map@r`` follow Musgrave et al. 2020, "A Metric Learning Reality Check":
  R-precision = relevant among the R nearest / R; MAP@R = (1/R) sum_{i<=R} P(i) rel(i), with P(i)
  the precision among the i nearest. Unlike in_any@k they reward ranking *all* of an item's
  images first, and do not saturate.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from common.errors import UserError
from evaluation.knn import knn


class Retrieval(NamedTuple):
    """Metrics plus the neighbours they were computed from, for callers that also draw them."""

    metrics: dict[str, float]
    distances: torch.Tensor  # (N, depth) nearest first; depth = max(k, largest R), clipped to N-1
    indices: torch.Tensor    # (N, depth) int64


def retrieval_metrics(emb: torch.Tensor, labels: np.ndarray | torch.Tensor, k: int = 5, *,
                      backend: str = "torch") -> dict[str, float]:
    """All the metrics above for embeddings (N, D) with item labels (N,), as plain floats/ints."""
    return evaluate_retrieval(emb, labels, k, backend=backend).metrics


def evaluate_retrieval(emb: torch.Tensor, labels: np.ndarray | torch.Tensor, k: int = 5, *,
                       backend: str = "torch") -> Retrieval:
    """The metrics and the neighbour lists behind them, from one kNN search.

    Neighbours are fetched up to max(k, largest R) so the R-based metrics see every rank they need;
    exact Euclidean, ties broken by gallery index (see evaluation.knn), so the first j columns are
    exactly the j nearest for any j <= depth.
    """
    labels = _as_labels(labels)
    if emb.shape[0] != labels.shape[0]:
        raise ValueError(f"{emb.shape[0]} embeddings but {labels.shape[0]} labels")
    if k < 1:
        raise UserError(f"k={k}: the number of neighbours must be at least 1 (--num_neighbours)")
    r_counts = _other_images_of_same_item(labels)
    depth = max(k, int(r_counts.max(initial=0)))
    distances, indices = knn(emb, depth, backend=backend)
    metrics = metrics_from_neighbours(labels[indices.cpu().numpy()], labels, r_counts, k)
    return Retrieval(metrics, distances, indices)


def metrics_from_neighbours(neighbour_labels: np.ndarray, query_labels: np.ndarray,
                            r_counts: np.ndarray, k: int) -> dict[str, float]:
    """Metrics from each query's neighbours' labels (Q, m), nearest first.

    `r_counts` (Q,) is each query's R. The m columns must hold the min(depth, gallery - 1) nearest
    images with depth >= max(k, max R); ranks past m count as not relevant (they do not exist).
    """
    r_counts = np.asarray(r_counts, dtype=np.int64)
    queryable = r_counts > 0
    if not queryable.any():  # checked first: an empty set has no neighbour columns to reshape
        raise UserError("evaluation set: no item has 2 or more images, so no image can be queried; "
                        "use a dataset (or a larger eval split, --eval_fraction) with several images per item")
    neighbour_labels = np.asarray(neighbour_labels).reshape(len(query_labels), -1)
    if neighbour_labels.shape[1] < r_counts.max():
        raise ValueError(f"{neighbour_labels.shape[1]} neighbours per query, but R is up to {r_counts.max()}")
    relevant = neighbour_labels[queryable] == np.asarray(query_labels)[queryable, None]
    r = r_counts[queryable]
    metrics: dict[str, float] = {}
    metrics.update(_closest(_pad_columns(relevant[:, :k], k), r))
    metrics[f"in_any@{k}"] = float(relevant[:, :k].any(1).mean())
    metrics["precision@1"] = metrics["closest_1"]
    metrics.update(_r_metrics(relevant, r))
    metrics["num_queries"] = int(queryable.sum())
    metrics["num_unqueryable"] = int((~queryable).sum())
    return metrics


def _closest(relevant: np.ndarray, r: np.ndarray) -> dict[str, float]:
    """closest_i over the queries that have an i-th relevant image to find (R >= i)."""
    out = {}
    for i in range(1, relevant.shape[1] + 1):
        possible = r >= i
        if possible.any():
            out[f"closest_{i}"] = float(relevant[possible, i - 1].mean())
    return out


def _r_metrics(relevant: np.ndarray, r: np.ndarray) -> dict[str, float]:
    """MAP@R and R-precision: only each query's R nearest count, so columns past R are masked."""
    ranks = np.arange(1, relevant.shape[1] + 1)
    hits = relevant & (ranks[None, :] <= r[:, None])
    precision_at_i = np.cumsum(hits, 1) / ranks[None, :]
    return {"map@r": float(((precision_at_i * hits).sum(1) / r).mean()),
            "r_precision": float((hits.sum(1) / r).mean())}


def _other_images_of_same_item(labels: np.ndarray) -> np.ndarray:
    """R per image: how many other images share its label."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return counts[inverse] - 1


def _pad_columns(relevant: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) relevance, ranks the gallery cannot fill set to False."""
    return np.pad(relevant, ((0, 0), (0, k - relevant.shape[1])))


def _as_labels(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.cpu().numpy()
    return np.asarray(labels).reshape(-1)
