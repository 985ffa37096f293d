"""What a held-out evaluation measures: leave-one-out over one set, or queries against a gallery.

A dataset laid out as `query/<item>/…` + `gallery/<item>/…` (DeepFashion In-Shop) is scored the
In-Shop way: each query image searches the gallery only, and is relevant-matched against the
gallery's images of its own item (R = how many there are). Queries whose item has no gallery image
cannot be scored: they are counted (`num_unqueryable`) and excluded. Everything else is scored
leave-one-out (evaluation.metrics). Training and evaluate.py both go through `score`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from common.errors import UserError
from data.dataset import ImageSet
from data.splits import Splits
from evaluation.embed import embed
from evaluation.knn import search
from evaluation.metrics import Retrieval, metrics_from_neighbours, retrieval_metrics


@dataclass
class QueryGallery:
    """The query and gallery sets of a query/gallery layout, scored query -> gallery."""

    query: ImageSet
    gallery: ImageSet

    def __len__(self) -> int:
        return len(self.query) + len(self.gallery)

    @property
    def items(self) -> list[str]:
        """Every item of either set, sorted."""
        return sorted(set(self.query.items) | set(self.gallery.items))

    def query_labels(self) -> np.ndarray:
        """Each query's item as a gallery label, -1 where the gallery has no image of it."""
        position = {item: label for label, item in enumerate(self.gallery.items)}
        return np.asarray([position.get(self.query.items[label], -1) for label in self.query.labels],
                          dtype=np.int64)


EvalTarget = ImageSet | QueryGallery


def pick_target(splits: Splits, preferred: tuple[str, ...], override: str | None = None) -> EvalTarget:
    """The query/gallery pair of a query/gallery layout (unless --split names a set), else the
    evaluation split that `Splits.pick_eval` chooses."""
    if override is None and {"query", "gallery"} <= set(splits.sets):
        return QueryGallery(splits.sets["query"], splits.sets["gallery"])
    return splits.pick_eval(preferred, override)


def score(model: nn.Module, target: EvalTarget, k: int, device: torch.device | str = "cpu",
          batch_size: int = 256) -> dict[str, float]:
    """Retrieval metrics of `model` on `target` (see the module docstring for which protocol)."""
    if isinstance(target, QueryGallery):
        return query_gallery_metrics(embed(model, target.query, batch_size, device),
                                     embed(model, target.gallery, batch_size, device),
                                     target.query_labels(), target.gallery.labels, k)
    return retrieval_metrics(embed(model, target, batch_size, device), target.labels, k=k)


def query_gallery_metrics(queries: torch.Tensor, gallery: torch.Tensor, query_labels: np.ndarray,
                          gallery_labels: np.ndarray, k: int) -> dict[str, float]:
    """R, MAP@R, R-precision, precision@1, closest_i and in_any@k of queries against a gallery."""
    return query_gallery_retrieval(queries, gallery, query_labels, gallery_labels, k).metrics


def query_gallery_retrieval(queries: torch.Tensor, gallery: torch.Tensor, query_labels: np.ndarray,
                            gallery_labels: np.ndarray, k: int) -> Retrieval:
    """The metrics and each query's gallery neighbours behind them, from one search.

    `query_labels` are in the gallery's label space (-1: no gallery image of that item). R of a
    query is the number of gallery images of its item; the search goes max(k, largest R) deep.
    """
    if k < 1:
        raise UserError(f"k={k}: the number of neighbours must be at least 1 (--num_neighbours)")
    gallery_labels = np.asarray(gallery_labels, dtype=np.int64)
    query_labels = np.asarray(query_labels, dtype=np.int64)
    counts = np.bincount(gallery_labels, minlength=1)
    r_counts = np.where(query_labels >= 0, counts[np.clip(query_labels, 0, None)], 0)
    if not (r_counts > 0).any():
        raise UserError("query/gallery layout: no query's item has an image in gallery/, so nothing "
                        "can be scored; put each item's photos in both query/<item>/ and gallery/<item>/")
    distances, indices = search(queries, gallery, max(k, int(r_counts.max())))
    metrics = metrics_from_neighbours(gallery_labels[indices.numpy()], query_labels, r_counts, k)
    return Retrieval(metrics, distances, indices)
