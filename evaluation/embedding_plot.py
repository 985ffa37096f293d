"""The eval embeddings in 2-D, coloured by item, with thumbnails: where the model puts which image.

A retrieval score says how often neighbours match; this picture shows why. Points of one item
should sit together, and the thumbnails drawn over a spread-out sample of points let a person see
what the model groups (colour? shape? background?). The projection is t-SNE by default (clusters
clear, distances between clusters meaningless; about 2 s for the built-in dataset's 365 eval
images and 16 s for 2,000 on the shared 2-core machine) or PCA on request (distances along its
axes are real; each axis is labelled with its share of the variance), as the DVC variant's
reports/plots/embedding.png.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from threadpoolctl import threadpool_limits

from common.errors import UserError

PROJECTIONS = ("tsne", "pca")
LEGEND_MAX_ITEMS = 12   # beyond this a legend is a wall of text
THUMBNAIL_PX = 36       # drawn side of a thumbnail at the figure's dpi
POINT_SIZE = 36         # marker area in points^2: a 6-point dot, visible under the thumbnails


class ImageSource(Protocol):
    """What the plot needs from ``data.dataset.ImageSet``."""

    labels: np.ndarray
    items: list[str]

    def batch(self, rows: np.ndarray | list[int]) -> np.ndarray: ...


class Projection(NamedTuple):
    """2-D coordinates and what their axes mean."""

    points: np.ndarray              # (N, 2) float64
    axis_labels: tuple[str, str]


def project_2d(embeddings: torch.Tensor | np.ndarray, method: str = "tsne", seed: int = 0) -> Projection:
    """(N, D) embeddings -> (N, 2) coordinates by t-SNE or PCA (seeded, so reports repeat), with
    axis labels: PCA's say how much of the variance each axis holds, so a reader knows how much
    of the picture is missing."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    points = _as_array(embeddings)
    if method not in PROJECTIONS:
        raise UserError(f"--projection {method}: unknown; use one of {', '.join(PROJECTIONS)}")
    if points.ndim != 2 or len(points) < 3:
        raise UserError(f"embedding plot: need (N, D) embeddings of at least 3 images, got shape "
                        f"{points.shape}; evaluate on a larger set")
    if points.shape[1] < 2:  # a 1-d embedding is already a line: plot it against zero
        return Projection(np.column_stack([points[:, 0], np.zeros(len(points))]), ("embedding", ""))
    if method == "pca":
        pca = PCA(n_components=2, random_state=seed)
        coords = pca.fit_transform(points)
        share = pca.explained_variance_ratio_
        return Projection(coords, (f"PC1 ({share[0]:.0%} of the variance)", f"PC2 ({share[1]:.0%})"))
    # perplexity must stay below the number of points; 30 (the usual value) for real eval sets
    perplexity = min(30.0, (len(points) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    # One thread: scikit-learn's OpenMP runtime beside torch's spin-waits on a busy machine (a
    # 9-point t-SNE took 90 s on 2 cores); single-threaded, 2,000 points took 13 s there, not 28 s.
    with threadpool_limits(1):
        coords = tsne.fit_transform(points)
    return Projection(coords, ("t-SNE 1", "t-SNE 2"))


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
    return np.asarray([(*_PALETTE[label % len(_PALETTE)], 1.0) for label in np.asarray(labels)])


# tab20 pairs a dark and a light shade of each hue; all dark ones first keeps neighbours apart
_PALETTE = matplotlib.colormaps["tab20"].colors[0::2] + matplotlib.colormaps["tab20"].colors[1::2]


def plot_embedding(embeddings: torch.Tensor | np.ndarray, image_set: ImageSource, out: Path,
                   projection: str = "tsne", max_thumbnails: int = 60, seed: int = 0) -> Path:
    """Draw the projected embeddings coloured by item, thumbnails over a spread sample; save ``out``."""
    labels = np.asarray(image_set.labels)
    if len(labels) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings for {len(labels)} images")
    points, axis_labels = project_2d(embeddings, projection, seed)
    colours = item_colours(labels)
    fig = Figure(figsize=(11, 9), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(points[:, 0], points[:, 1], c=colours, s=POINT_SIZE, linewidths=0.4, edgecolors="white")
    _add_thumbnails(ax, points, image_set, colours, spread_sample(points, max_thumbnails), fig.dpi)
    _add_legend(ax, labels, image_set.items, colours)
    items = len(np.unique(labels))
    name = "t-SNE" if projection == "tsne" else "PCA"
    ax.set_title(f"{len(labels)} eval images of {items} items, {name} of the embeddings (colour = item)")
    ax.set(xlabel=axis_labels[0], ylabel=axis_labels[1])
    if projection == "tsne":  # t-SNE coordinates have no units worth reading
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
    """A legend of item names when they are few; else a note saying how to read the colours."""
    present = np.unique(labels)
    if len(present) > LEGEND_MAX_ITEMS:
        ax.text(0.01, 0.01, f"{len(present)} items, too many to name: colours repeat every "
                f"{len(_PALETTE)} items, so one colour is not one item; thumbnails (framed in their "
                "item's colour) show what each region holds", transform=ax.transAxes, fontsize="small",
                va="bottom", bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
        return
    first = {label: int(np.flatnonzero(labels == label)[0]) for label in present}
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[row], label=items[label])
               for label, row in first.items()]
    ax.legend(handles=handles, fontsize="small", loc="best", title="item")
