"""Reading saved figure pages back: which colour sits in a cell and in its frame.

Both the renderer's own tests and the evaluate.py end-to-end tests check pages this way: images
are solid colours, so the colour at a cell's centre names the image drawn there, and the colour
just inside the cell's left edge is its frame (green same item, red another item).
"""
from __future__ import annotations

import matplotlib
import numpy as np
from PIL import Image

from evaluation.figures import PageLayout


def hex_rgb(colour: str) -> np.ndarray:
    """A matplotlib colour as 0-255 RGB floats."""
    return np.array(matplotlib.colors.to_rgb(colour)) * 255


def pixel(png: Image.Image, xy: tuple[float, float]) -> np.ndarray:
    """RGB floats of the pixel at ``xy`` (x, y from the top-left corner)."""
    return np.array(png.getpixel((int(xy[0]), int(xy[1]))), dtype=float)[:3]


def cell_colour(png: Image.Image, layout: PageLayout, row: int, col: int) -> np.ndarray:
    """The colour at the centre of the image in (row, col)."""
    return pixel(png, layout.cell_centre_px(row, col))


def frame_colour(png: Image.Image, layout: PageLayout, row: int, col: int) -> np.ndarray:
    """The colour of the frame drawn around the image in (row, col), halfway down its left edge."""
    left, top, _, bottom = layout.image_box_px(row, col)
    return pixel(png, (left + 1, (top + bottom) / 2))


def page_layout(png: Image.Image, cols: int, max_rows: int) -> PageLayout:
    """The layout of a saved page with ``cols`` columns, found from its pixel size."""
    for rows in range(1, max_rows + 1):
        layout = PageLayout(rows=rows, cols=cols)
        if png.size == layout.pixel_size:
            return layout
    raise AssertionError(f"page of {png.size} pixels matches no layout of 1 to {max_rows} rows")
