"""The eval embeddings in 2-D, coloured by item, with thumbnails: where the model puts which image.

A retrieval score says how often neighbours match; this picture shows why. Points of one item
should sit together, and the thumbnails drawn over a spread-out sample of points let a person see
what the model groups (colour? shape? background?). The projection is PCA by default (fast,
deterministic, distances along its axes are real) or t-SNE on request (clusters clearer, global
distances meaningless), as the DVC variant's reports/plots/embedding.png.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from threadpoolctl import threadpool_limits

from common.errors import UserError

PROJECTIONS = ("pca", "tsne")
LEGEND_MAX_ITEMS = 12   # beyond this a legend is a wall of text
THUMBNAIL_PX = 36       # drawn side of a thumbnail at the figure's dpi


class ImageSource(Protocol):
    """What the plot needs from ``data.dataset.ImageSet``."""

    labels: np.ndarray
    items: list[str]

    def batch(self, rows: np.ndarray | list[int]) -> np.ndarray: ...


def project_2d(embeddings: torch.Tensor | np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) embeddings -> (N, 2) float64 coordinates by PCA or t-SNE (seeded, so reports repeat)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    points = _as_array(embeddings)
    if method not in PROJECTIONS:
        raise UserError(f"--projection {method}: unknown; use one of {', '.join(PROJECTIONS)}")
    if points.ndim != 2 or len(points) < 3:
        raise UserError(f"embedding plot: need (N, D) embeddings of at least 3 images, got shape "
                        f"{points.shape}; evaluate on a larger set")
    if points.shape[1] < 2:  # a 1-d embedding is already a line: plot it against zero
        return np.column_stack([points[:, 0], np.zeros(len(points))])
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(points)
    # perplexity must stay below the number of points; 30 (the usual value) for real eval sets
    perplexity = min(30.0, (len(points) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    # One thread: scikit-learn's OpenMP runtime beside torch's spin-waits on a busy machine (a
    # 9-point t-SNE took 90 s on 2 cores); single-threaded, 2,000 points took 13 s there, not 28 s.
    with threadpool_limits(1):
        return tsne.fit_transform(points)


def _as_array(embeddings: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().float().numpy()
    return np.asarray(embeddings, dtype=np.float64)


def spread_sample(points: np.ndarray, count: int) -> np.ndarray:
    """Indices of up to ``count`` points chosen far from each other (farthest-point sampling).

    A random sample piles thumbnails on the dense clusters and hides them under each other;
    spreading them out shows every region of the plot once.
    """
    count = min(count, len(points))
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    chosen = [int(np.argmin(points[:, 0]))]  # start from an edge, deterministically
    nearest = np.linalg.norm(points - points[chosen[0]], axis=1)
    for _ in range(count - 1):
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return np.asarray(chosen, dtype=np.int64)


def item_colours(labels: np.ndarray) -> np.ndarray:
    """(N, 4) RGBA per point: a qualitative colormap cycled over items (there are many of them)."""
    # tab20 pairs a dark and a light shade of each hue; all dark ones first keeps neighbours apart
    colours = matplotlib.colormaps["tab20"].colors
    palette = colours[0::2] + colours[1::2]
    return np.asarray([(*palette[label % len(palette)], 1.0) for label in np.asarray(labels)])


def plot_embedding(embeddings: torch.Tensor | np.ndarray, image_set: ImageSource, out: Path,
                   projection: str = "pca", max_thumbnails: int = 60, seed: int = 0) -> Path:
    """Draw the projected embeddings coloured by item, thumbnails over a spread sample; save ``out``."""
    labels = np.asarray(image_set.labels)
    if len(labels) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings for {len(labels)} images")
    points = project_2d(embeddings, projection, seed)
    colours = item_colours(labels)
    fig = Figure(figsize=(11, 9), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(points[:, 0], points[:, 1], c=colours, s=14, linewidths=0)
    _add_thumbnails(ax, points, image_set, colours, spread_sample(points, max_thumbnails), fig.dpi)
    _add_legend(ax, labels, image_set.items, colours)
    items = len(np.unique(labels))
    ax.set_title(f"{len(labels)} eval images of {items} items, {projection.upper()} of the embeddings "
                 "(colour = item)")
    ax.set_xticks([])
    ax.set_yticks([])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def _add_thumbnails(ax, points: np.ndarray, image_set: ImageSource, colours: np.ndarray,
                    rows: np.ndarray, dpi: float) -> None:
    """Each sampled image at its point, framed in its item's colour."""
    if len(rows) == 0:
        return
    images = image_set.batch(rows)
    zoom = THUMBNAIL_PX / images.shape[1] * 72 / dpi  # OffsetImage scales pixels by dpi/72
    for row, image in zip(rows, images):
        box = AnnotationBbox(OffsetImage(image, zoom=zoom), points[row], frameon=True, pad=0.15,
                             bboxprops={"edgecolor": colours[row], "linewidth": 1.5})
        ax.add_artist(box)


def _add_legend(ax, labels: np.ndarray, items: list[str], colours: np.ndarray) -> None:
    present = np.unique(labels)
    if len(present) > LEGEND_MAX_ITEMS:
        return
    first = {label: int(np.flatnonzero(labels == label)[0]) for label in present}
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[row], label=items[label])
               for label, row in first.items()]
    ax.legend(handles=handles, fontsize="small", loc="best", title="item")
