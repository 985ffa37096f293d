"""Tests for evaluation/figures.py: which queries are chosen, how they are paged, and that the
saved pages hold the right images in the right cells (checked pixel by pixel on solid colours)."""
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from common.errors import UserError
from evaluation import figures
from evaluation.figures import (
    DIFF_COLOUR,
    SAME_COLOUR,
    PageLayout,
    can_show,
    photo_rows,
    render_pages,
    render_query_page,
    result_rows,
    select_queries,
)
from tests.pages import cell_colour, frame_colour, hex_rgb

SIZE = 16


def _colour(i: int) -> np.ndarray:
    """A colour per image index, at least 50 apart per channel from every other index's."""
    return np.array([30 + 50 * (i % 4), 30 + 50 * (i // 4 % 4), 30 + 50 * (i // 16 % 4)], np.uint8)


class ColourSet:
    """Stand-in for data.dataset.ImageSet whose image i is a solid square of ``_colour(i)``."""

    def __init__(self, labels: list[int]):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.items = [f"item_{n:04d}" for n in range(self.labels.max() + 1)]
        self.paths = [f"{self.items[lab]}/{i}.jpg" for i, lab in enumerate(self.labels)]
        self.size = SIZE

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices) -> np.ndarray:
        colours = np.stack([_colour(int(i)) for i in np.asarray(indices).ravel()])
        return np.broadcast_to(colours[:, None, None, :], (len(colours), SIZE, SIZE, 3)).copy()


@pytest.fixture
def image_set() -> ColourSet:
    # 12 images, 4 items of 3 images each.
    return ColourSet([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])


def _assert_cells(path: Path, expected: np.ndarray) -> None:
    """The page at ``path`` has ``expected`` (rows, cols) image indices in its cells."""
    layout = PageLayout(rows=expected.shape[0], cols=expected.shape[1])
    png = Image.open(path).convert("RGB")
    assert png.size == layout.pixel_size
    for r, c in np.ndindex(*expected.shape):
        got = cell_colour(png, layout, r, c)
        assert np.abs(got - _colour(int(expected[r, c]))).max() <= 3, (path, r, c, got)


# --- select_queries ---------------------------------------------------------------------------

NEIGHBOUR_LABELS = np.array([[0, 1], [2, 2], [1, 2], [3, 0]])
QUERY_LABELS = np.array([0, 1, 2, 3])  # query 0 and 2 and 3 pass, query 1 fails


@pytest.mark.parametrize("case, expected", [("pass", [0, 2, 3]), ("fail", [1]), ("both", [0, 1, 2, 3])])
def test_select_queries_by_case(case, expected):
    assert select_queries(NEIGHBOUR_LABELS, QUERY_LABELS, case).tolist() == expected


def test_select_queries_limit_keeps_first_in_order():
    assert select_queries(NEIGHBOUR_LABELS, QUERY_LABELS, "pass", limit=2).tolist() == [0, 2]
    assert select_queries(NEIGHBOUR_LABELS, QUERY_LABELS, "both", limit=10).tolist() == [0, 1, 2, 3]


def test_select_queries_skips_unqueryable():
    queryable = np.array([True, False, True, False])
    assert select_queries(NEIGHBOUR_LABELS, QUERY_LABELS, "both", queryable=queryable).tolist() == [0, 2]


def test_show_nums_override_case_and_keep_order():
    got = select_queries(NEIGHBOUR_LABELS, QUERY_LABELS, "fail", show_nums=[3, 0], limit=1)
    assert got.tolist() == [3, 0]


@pytest.mark.parametrize("nums", [[4], [-1], [0, 7]])
def test_show_nums_out_of_range_names_flag_and_range(nums):
    with pytest.raises(UserError, match=r"--show_nums: .*valid numbers are 0 to 3"):
        select_queries(NEIGHBOUR_LABELS, QUERY_LABELS, show_nums=nums)


def test_unknown_case_is_a_user_error():
    with pytest.raises(UserError, match="--show_case"):
        select_queries(NEIGHBOUR_LABELS, QUERY_LABELS, "maybe")


# --- cells --------------------------------------------------------------------------------------

def test_result_rows_captions_mark_same_and_diff(image_set):
    rows = result_rows(image_set, np.array([0]), np.array([[1, 4]]), np.array([[0.414, 2.5]]))
    query, same, diff = rows[0]
    assert query.caption == "query\nitem_0000"
    assert same.caption == "item_0000\nd=0.41 same" and same.colour == SAME_COLOUR
    assert diff.caption == "item_0001\nd=2.50 diff" and diff.colour == DIFF_COLOUR
    assert np.array_equal(same.image[0, 0], _colour(1))


def test_photo_rows_have_no_same_or_diff(image_set):
    photos = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    rows = photo_rows(photos, ["me.jpg"], image_set, np.array([[5, 0]]), np.array([[1.0, 2.0]]))
    assert [cell.caption for cell in rows[0]] == ["query\nme.jpg", "item_0001\nd=1.00", "item_0000\nd=2.00"]


# --- pages --------------------------------------------------------------------------------------

def test_pages_hold_the_right_images_in_the_right_cells(image_set, tmp_path):
    rng = np.random.default_rng(0)
    query_idx = np.array([11, 0, 5, 7, 2, 9, 3])
    neighbour_idx = np.stack([rng.choice(np.delete(np.arange(12), q), 4, replace=False) for q in query_idx])
    dists = np.sort(rng.random(neighbour_idx.shape), axis=1)
    paths = render_pages(image_set, query_idx, neighbour_idx, dists, rows_per_page=3,
                         out_dir=tmp_path / "figs", title="test")
    assert paths == [tmp_path / "figs" / f"{n}.png" for n in (1, 2, 3)]  # ceil(7 / 3) pages
    expected = np.concatenate([query_idx[:, None], neighbour_idx], axis=1)
    for page, path in enumerate(paths):
        _assert_cells(path, expected[3 * page: 3 * page + 3])
    assert plt.get_fignums() == []  # every page closed after saving


def test_page_height_grows_with_rows_and_width_with_columns(image_set, tmp_path):
    neighbours = np.tile([1, 2, 3, 4], (5, 1))
    dists = np.ones((5, 4))
    paths = render_pages(image_set, np.zeros(5, int), neighbours, dists, rows_per_page=4,
                         out_dir=tmp_path, title="t")
    (w1, h1), (w2, h2) = (Image.open(p).size for p in paths)
    assert w1 == w2 and h1 > h2
    narrow = render_pages(image_set, [0], neighbours[:1, :2], dists[:1, :2], rows_per_page=1,
                          out_dir=tmp_path / "narrow", title="t")
    assert Image.open(narrow[0]).size[0] < w2


def test_frames_are_green_for_same_item_and_red_for_others(image_set, tmp_path):
    [path] = render_pages(image_set, [0], np.array([[1, 4]]), np.array([[0.5, 1.0]]),
                          rows_per_page=1, out_dir=tmp_path, title="t")
    layout, png = PageLayout(rows=1, cols=3), Image.open(path).convert("RGB")
    for col, colour in [(1, SAME_COLOUR), (2, DIFF_COLOUR)]:
        frame = frame_colour(png, layout, 0, col)
        assert np.abs(frame - hex_rgb(colour)).max() <= 8, (col, frame)


def test_zero_rows_per_page_is_a_user_error(image_set, tmp_path):
    with pytest.raises(UserError, match="--num_disp"):
        render_pages(image_set, [0], np.array([[1]]), np.array([[0.1]]), rows_per_page=0,
                     out_dir=tmp_path, title="t")


def test_mismatched_rows_are_rejected(image_set, tmp_path):
    with pytest.raises(ValueError):
        render_pages(image_set, [0, 1], np.array([[1]]), np.array([[0.1]]), rows_per_page=1,
                     out_dir=tmp_path, title="t")


def test_query_page_shows_photos_beside_their_neighbours(image_set, tmp_path):
    photos = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    photos[0], photos[1] = (250, 0, 0), (0, 0, 250)
    neighbours = np.array([[3, 4, 8], [6, 0, 1]])
    out = render_query_page(photos, ["a.jpg", "b.jpg"], image_set, neighbours, np.ones((2, 3)),
                            out_path=tmp_path / "q" / "mine.png")
    assert out == tmp_path / "q" / "mine.png"
    layout, png = PageLayout(rows=2, cols=4), Image.open(out).convert("RGB")
    assert png.size == layout.pixel_size
    for r in range(2):
        assert np.abs(cell_colour(png, layout, r, 0) - photos[r, 0, 0]).max() <= 3
        for c in range(3):
            got = cell_colour(png, layout, r, c + 1)
            assert np.abs(got - _colour(int(neighbours[r, c]))).max() <= 3
    assert plt.get_fignums() == []


# --- showing or falling back to files -------------------------------------------------------------

def test_headless_saves_to_fallback_folder_and_says_where(image_set, tmp_path, capsys):
    assert matplotlib.get_backend().lower() == "agg" and not can_show()
    paths = render_pages(image_set, [0, 3], np.array([[1], [4]]), np.array([[0.1], [0.2]]),
                         rows_per_page=1, out_dir=None, title="t", fallback_dir=tmp_path / "fb")
    assert paths == [tmp_path / "fb" / "1.png", tmp_path / "fb" / "2.png"]
    assert all(p.is_file() for p in paths)
    message = capsys.readouterr().out
    assert "no display" in message and str(tmp_path / "fb") in message


def test_headless_query_page_falls_back_too(image_set, tmp_path, capsys):
    out = render_query_page(np.zeros((1, SIZE, SIZE, 3), np.uint8), ["x"], image_set,
                            np.array([[1]]), np.array([[0.3]]), out_path=None, fallback_dir=tmp_path)
    assert out == tmp_path / "queries.png" and out.is_file()
    assert str(tmp_path) in capsys.readouterr().out


def test_with_a_display_pages_are_shown_then_closed(image_set, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(figures, "can_show", lambda: True)
    monkeypatch.setattr(plt, "show", lambda: shown.append(len(plt.get_fignums())))
    paths = render_pages(image_set, [0, 3, 6], np.array([[1], [4], [7]]), np.ones((3, 1)),
                         rows_per_page=2, out_dir=None, title="t", fallback_dir=tmp_path)
    assert paths == [] and shown == [2] and plt.get_fignums() == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend, display, expected", [
    ("agg", ":0", False),
    ("pdf", ":0", False),
    ("TkAgg", None, False),
    ("TkAgg", ":0", True),
    ("module://matplotlib_inline.backend_inline", None, True),
])
def test_can_show(monkeypatch, backend, display, expected):
    monkeypatch.setattr(figures.sys, "platform", "linux")
    monkeypatch.setattr(matplotlib, "get_backend", lambda: backend)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if display is None:
        monkeypatch.delenv("DISPLAY", raising=False)
    else:
        monkeypatch.setenv("DISPLAY", display)
    assert can_show() is expected
