"""Figures of retrieval results: each query in a row beside its nearest gallery images.

A metric says how often retrieval works; these pages show *how* it works and fails, which is what
one looks at to judge a model. ``select_queries`` picks which queries to show (passes, failures or
both, or numbers the user asked for), ``render_pages`` draws them a page of rows at a time, and
``render_query_page`` does the same for the user's own photos, which belong to no item.

Every image sits in an axes at a fixed position given in figure fractions by ``PageLayout`` (no
tight bounding boxes, no automatic layout), so a saved PNG has a predictable size and a test can
compute where each image lies and check that the right picture is in the right place.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from common.errors import UserError
from data.decode import UnreadableImage, decode_image

CASES = ("pass", "fail", "both")
DEFAULT_FIG_DIR = Path("data/files_to_gitignore/eval_figs")

SAME_COLOUR = "#1a9641"
DIFF_COLOUR = "#d7191c"
QUERY_COLOUR = "#2b83ba"
PLAIN_COLOUR = "#555555"

# Backends that only write files; plt.show() with them returns at once and shows nothing.
_NON_INTERACTIVE = frozenset({"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"})
_BROWSER_BACKENDS = frozenset({"webagg", "nbagg", "notebook"})
_CAPTION_CHARS = 20


class ImageSource(Protocol):
    """What the figures need from ``data.dataset.ImageSet`` (kept structural so tests can fake it)."""

    labels: np.ndarray
    items: list[str]

    def batch(self, indices: np.ndarray | list[int]) -> np.ndarray: ...


class PhotoSource(ImageSource, Protocol):
    """An ImageSource that also knows each image's photo file."""

    paths: list[str]


# ---------------------------------------------------------------------------------------------
# Choosing the queries
# ---------------------------------------------------------------------------------------------

def select_queries(
    neighbour_labels: np.ndarray,
    query_labels: np.ndarray,
    case: str = "both",
    show_nums: Sequence[int] | None = None,
    limit: int | None = None,
    queryable: np.ndarray | None = None,
) -> np.ndarray:
    """Return the row numbers (into ``neighbour_labels``) of the queries to draw, in order.

    ``case`` "pass" keeps queries with at least one same-item image among their shown neighbours,
    "fail" those with none, "both" all of them. ``queryable`` (bool per query) drops queries whose
    item has no other image: they can never pass, so showing them as failures would mislead.
    ``limit`` caps the count (the CLI passes rows per page x pages). ``show_nums`` overrides all
    of that: the user asked for those queries by number, so they are shown as given.
    """
    neighbour_labels = np.asarray(neighbour_labels)
    query_labels = np.asarray(query_labels)
    if neighbour_labels.ndim != 2 or len(neighbour_labels) != len(query_labels):
        raise ValueError(f"neighbour_labels {neighbour_labels.shape} must be (Q, k) "
                         f"with Q = len(query_labels) = {len(query_labels)}")
    if show_nums is not None:
        return check_show_nums(show_nums, len(query_labels))
    if case not in CASES:
        raise UserError(f"--show_case: unknown case {case!r}; use one of {', '.join(CASES)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    keep = _case_mask(neighbour_labels == query_labels[:, None], case)
    if queryable is not None:
        keep &= np.asarray(queryable, dtype=bool)
    chosen = np.flatnonzero(keep)
    return chosen if limit is None else chosen[:limit]


def _case_mask(same: np.ndarray, case: str) -> np.ndarray:
    """Per query: does it belong to ``case``, given its (Q, k) same-item matrix."""
    passed = same.any(axis=1)
    return {"pass": passed, "fail": ~passed, "both": np.ones_like(passed)}[case]


def check_show_nums(show_nums: Sequence[int], num_queries: int) -> np.ndarray:
    """The requested query numbers as an index array, or a UserError naming the valid range.

    evaluate.py calls it as soon as the gallery is known, so a typo stops the run before any
    metric is computed or printed."""
    nums = np.asarray(list(show_nums), dtype=np.int64)
    bad = nums[(nums < 0) | (nums >= num_queries)]
    if len(bad) == 0:
        return nums
    if num_queries == 0:
        raise UserError("--show_nums: there are no queries to show; leave out --show_nums")
    raise UserError(f"--show_nums: query number(s) {', '.join(map(str, bad[:5]))} out of range; "
                    f"valid numbers are 0 to {num_queries - 1}")


# ---------------------------------------------------------------------------------------------
# Layout: fixed positions so that pages have a known size and known cell positions
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PageLayout:
    """Where every image of a page lies. Sizes in inches; the defaults are exact binary fractions
    so that inches x dpi gives whole pixels and the saved PNG is exactly ``pixel_size``.

    Column 0 holds the query; a wider ``gap_in`` separates it from the neighbours. Each row is an
    image ``cell_in`` square with ``caption_in`` of text space below it; the title sits on top.
    """

    rows: int
    cols: int
    dpi: int = 100
    cell_in: float = 1.5
    pad_in: float = 0.125
    gap_in: float = 0.25
    caption_in: float = 0.5
    title_in: float = 0.5
    margin_in: float = 0.125

    @property
    def figsize(self) -> tuple[float, float]:
        """Figure size in inches: grows with the number of columns and rows."""
        width = 2 * self.margin_in + self.cols * self.cell_in + (self.cols - 1) * self.pad_in + self.gap_in
        height = self.title_in + self.rows * (self.cell_in + self.caption_in) + self.margin_in
        return width, height

    @property
    def cell_px(self) -> int:
        """Side of one image on the saved page, in pixels: the resolution worth decoding at."""
        return round(self.cell_in * self.dpi)

    @property
    def pixel_size(self) -> tuple[int, int]:
        """(width, height) of the saved PNG, computed the way the Agg renderer does."""
        width, height = self.figsize
        return int(width * self.dpi), int(height * self.dpi)

    def image_box_in(self, row: int, col: int) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of an image in inches from the figure's top-left corner."""
        left = self.margin_in + col * (self.cell_in + self.pad_in) + (self.gap_in if col > 0 else 0.0)
        top = self.title_in + row * (self.cell_in + self.caption_in)
        return left, top, left + self.cell_in, top + self.cell_in

    def axes_rect(self, row: int, col: int) -> tuple[float, float, float, float]:
        """The image's [left, bottom, width, height] in figure fractions, for ``fig.add_axes``."""
        width, height = self.figsize
        left, top, _, bottom = self.image_box_in(row, col)
        return left / width, 1 - bottom / height, self.cell_in / width, self.cell_in / height

    def image_box_px(self, row: int, col: int) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of an image in pixels of the saved PNG (origin top-left)."""
        return tuple(v * self.dpi for v in self.image_box_in(row, col))  # type: ignore[return-value]

    def cell_centre_px(self, row: int, col: int) -> tuple[int, int]:
        """The pixel at the centre of an image, for tests that check what was drawn where."""
        left, top, right, bottom = self.image_box_px(row, col)
        return int((left + right) / 2), int((top + bottom) / 2)


class PhotoFiles:
    """An image set seen at display resolution: each image decoded from its own photo file at
    ``size`` px (a page cell), instead of the model-input-size cache that a page would have to
    blow up (64 px looks blurred at 150). A file that cannot be read any more (moved, deleted
    since the cache was built) falls back to the cached image, enlarged."""

    def __init__(self, image_set: PhotoSource, size: int = PageLayout(rows=1, cols=1).cell_px):
        self.labels = image_set.labels
        self.items = image_set.items
        self.paths = image_set.paths
        self.size = size
        self._cached = image_set

    def batch(self, indices: np.ndarray | list[int]) -> np.ndarray:
        rows = np.asarray(indices, dtype=np.int64).ravel()
        out = np.empty((len(rows), self.size, self.size, 3), dtype=np.uint8)
        for n, row in enumerate(rows):
            out[n] = self._read(int(row))
        return out

    def _read(self, row: int) -> np.ndarray:
        try:
            return decode_image(Path(self.paths[row]), self.size)
        except (UnreadableImage, OSError):
            cached = Image.fromarray(self._cached.batch([row])[0])
            return np.asarray(cached.resize((self.size, self.size), Image.Resampling.BICUBIC))


# ---------------------------------------------------------------------------------------------
# What goes in each cell
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One image of a row with its caption; ``colour`` tints both the frame and the caption."""

    image: np.ndarray
    caption: str
    colour: str
    frame_width: float


def _short(name: str) -> str:
    """Cut long names so captions of neighbouring cells do not overlap."""
    return name if len(name) <= _CAPTION_CHARS else name[: _CAPTION_CHARS - 1] + "…"


def _query_cell(image: np.ndarray, name: str) -> Cell:
    return Cell(image, f"query\n{_short(name)}", QUERY_COLOUR, 2.0)


def _neighbour_cell(image: np.ndarray, item: str, dist: float, same: bool | None) -> Cell:
    """A neighbour labelled with its item and distance; ``same`` None means nothing to compare to."""
    if same is None:
        return Cell(image, f"{_short(item)}\nd={dist:.2f}", PLAIN_COLOUR, 1.0)
    verdict, colour = ("same", SAME_COLOUR) if same else ("diff", DIFF_COLOUR)
    return Cell(image, f"{_short(item)}\nd={dist:.2f} {verdict}", colour, 4.0)


def _neighbour_images(image_set: ImageSource, neighbour_idx: np.ndarray) -> np.ndarray:
    """(R, k, S, S, 3) images of the neighbours, read in one batch call."""
    images = image_set.batch(neighbour_idx.ravel())
    return images.reshape(*neighbour_idx.shape, *images.shape[1:])


def result_rows(image_set: ImageSource, query_idx: np.ndarray, neighbour_idx: np.ndarray,
                neighbour_dist: np.ndarray) -> list[list[Cell]]:
    """Cells of evaluation rows: the query (an image of ``image_set``) then its neighbours,
    each marked same item or not."""
    labels = np.asarray(image_set.labels)
    query_images = image_set.batch(query_idx)
    rows = []
    for q, q_image, n_idx, n_dist, n_images in zip(
            query_idx, query_images, neighbour_idx, neighbour_dist,
            _neighbour_images(image_set, neighbour_idx)):
        row = [_query_cell(q_image, image_set.items[labels[q]])]
        row += [_neighbour_cell(im, image_set.items[labels[j]], float(d), bool(labels[j] == labels[q]))
                for im, j, d in zip(n_images, n_idx, n_dist)]
        rows.append(row)
    return rows


def photo_rows(query_images: np.ndarray, query_names: Sequence[str], image_set: ImageSource,
               neighbour_idx: np.ndarray, neighbour_dist: np.ndarray) -> list[list[Cell]]:
    """Cells of rows for the user's own photos: no item to compare with, so no same/diff mark."""
    labels = np.asarray(image_set.labels)
    rows = []
    for q_image, name, n_idx, n_dist, n_images in zip(
            query_images, query_names, neighbour_idx, neighbour_dist,
            _neighbour_images(image_set, neighbour_idx)):
        row = [_query_cell(q_image, name)]
        row += [_neighbour_cell(im, image_set.items[labels[j]], float(d), None)
                for im, j, d in zip(n_images, n_idx, n_dist)]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Drawing and delivering pages
# ---------------------------------------------------------------------------------------------

def draw_page(rows: Sequence[Sequence[Cell]], title: str) -> Figure:
    """A figure with one row per query, every image at the position ``PageLayout`` gives."""
    layout = PageLayout(rows=len(rows), cols=max(len(row) for row in rows))
    fig = plt.figure(figsize=layout.figsize, dpi=layout.dpi, facecolor="white")
    fig.text(0.5, 1 - layout.title_in / 2 / layout.figsize[1], title, ha="center", va="center",
             fontsize=11)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            _draw_cell(fig, layout.axes_rect(r, c), cell)
    return fig


def _draw_cell(fig: Figure, rect: tuple[float, float, float, float], cell: Cell) -> None:
    ax = fig.add_axes(rect)
    ax.imshow(cell.image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(cell.colour)
        spine.set_linewidth(cell.frame_width)
    ax.text(0.5, -0.03, cell.caption, transform=ax.transAxes, ha="center", va="top",
            fontsize=8, color=cell.colour, linespacing=1.2)


def can_show() -> bool:
    """Whether ``plt.show()`` would put a window (or notebook output) in front of the user.

    False for file-only backends such as Agg, and for desktop backends on a Unix machine with no
    display server, where showing would fail or silently do nothing.
    """
    backend = matplotlib.get_backend().lower()
    if backend in _NON_INTERACTIVE:
        return False
    if backend.startswith("module://") or backend in _BROWSER_BACKENDS:
        return True
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


PageBuilder = tuple[str, Callable[[], Figure]]


def _deliver(pages: Sequence[PageBuilder], out_dir: Path | None, fallback_dir: Path) -> list[Path]:
    """Save the pages into ``out_dir``, or show them when it is None and a display exists, else
    save them into ``fallback_dir`` and say where. Returns the saved paths ([] when shown).

    Pages are built lazily and closed once saved, so many pages never pile up in memory.
    """
    if out_dir is None and can_show():
        _show([build() for _, build in pages])
        return []
    target = fallback_dir if out_dir is None else out_dir
    paths = [_save(build(), target / name) for name, build in pages]
    _remove_stale_pages(target, {path.name for path in paths})
    if out_dir is None and paths:
        print(f"figures: no display to show them on (matplotlib backend "
              f"{matplotlib.get_backend()!r}); saved {len(paths)} page(s) to {target}")
    return paths


def _remove_stale_pages(folder: Path, kept: set[str]) -> None:
    """Delete the numbered pages (``<n>.png``) of ``folder`` that this call did not write: they
    are an earlier run's leftovers. Other files, such as a query's figure, are never touched."""
    for path in folder.glob("*.png"):
        if path.stem.isdigit() and path.name not in kept:
            path.unlink()


def _show(figures: list[Figure]) -> None:
    try:
        plt.show()
    finally:
        for fig in figures:
            plt.close(fig)


def _save(fig: Figure, path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi="figure", facecolor="white")
    finally:
        plt.close(fig)
    return path


def _page_title(title: str, page: int, num_pages: int) -> str:
    return title if num_pages == 1 else f"{title} (page {page}/{num_pages})"


def _check_rows(query_count: int, neighbour_idx: np.ndarray, neighbour_dist: np.ndarray) -> None:
    if neighbour_idx.ndim != 2 or neighbour_idx.shape != neighbour_dist.shape \
            or len(neighbour_idx) != query_count:
        raise ValueError(f"neighbour_idx {neighbour_idx.shape} and neighbour_dist "
                         f"{neighbour_dist.shape} must both be ({query_count}, k)")


def render_pages(
    image_set: ImageSource,
    query_idx: np.ndarray | Sequence[int],
    neighbour_idx: np.ndarray,
    neighbour_dist: np.ndarray,
    *,
    rows_per_page: int,
    out_dir: Path | None,
    title: str,
    fallback_dir: Path = DEFAULT_FIG_DIR,
) -> list[Path]:
    """Draw each query (an index into ``image_set``) beside its neighbours, ``rows_per_page``
    rows a page, saved as ``out_dir/1.png, 2.png, ...``; row i uses ``neighbour_idx[i]`` and
    ``neighbour_dist[i]``. Each page's title ends with its query numbers (what --show_nums
    takes). Numbered pages left in the folder by an earlier, longer run of the same evaluation
    are removed, so the folder holds exactly this run's pages. With ``out_dir`` None the pages are shown, or saved into
    ``fallback_dir`` when there is no display. Returns the saved paths.
    """
    query_idx = np.asarray(query_idx, dtype=np.int64)
    neighbour_idx, neighbour_dist = np.asarray(neighbour_idx), np.asarray(neighbour_dist)
    _check_rows(len(query_idx), neighbour_idx, neighbour_dist)
    if rows_per_page < 1:
        raise UserError(f"--num_disp: rows per figure must be at least 1, got {rows_per_page}")
    starts = range(0, len(query_idx), rows_per_page)

    def builder(page: int, start: int) -> Callable[[], Figure]:
        part = slice(start, start + rows_per_page)
        numbers = ", ".join(map(str, query_idx[part]))
        return lambda: draw_page(
            result_rows(image_set, query_idx[part], neighbour_idx[part], neighbour_dist[part]),
            _page_title(f"{title}; queries {numbers}", page, len(starts)))

    pages = [(f"{page}.png", builder(page, start)) for page, start in enumerate(starts, 1)]
    return _deliver(pages, out_dir, fallback_dir)


def render_query_page(
    query_images: np.ndarray,
    query_names: Sequence[str],
    image_set: ImageSource,
    neighbour_idx: np.ndarray,
    neighbour_dist: np.ndarray,
    *,
    out_path: Path | None,
    title: str = "Closest images to your photos",
    fallback_dir: Path = DEFAULT_FIG_DIR,
    fallback_name: str = "queries.png",
) -> Path | None:
    """One page for the user's own photos ((Q, S, S, 3) uint8): each beside its closest gallery
    images, labelled with item and distance. Saved to ``out_path``, or shown when it is None
    (saved as ``fallback_dir/fallback_name`` without a display). Returns the saved path or None.
    """
    neighbour_idx, neighbour_dist = np.asarray(neighbour_idx), np.asarray(neighbour_dist)
    _check_rows(len(query_images), neighbour_idx, neighbour_dist)
    if len(query_names) != len(query_images):
        raise ValueError(f"{len(query_names)} names for {len(query_images)} query images")
    if len(query_images) == 0:
        return None
    name = fallback_name if out_path is None else out_path.name
    page = (name, lambda: draw_page(
        photo_rows(query_images, query_names, image_set, neighbour_idx, neighbour_dist), title))
    paths = _deliver([page], None if out_path is None else out_path.parent, fallback_dir)
    return paths[0] if paths else None
