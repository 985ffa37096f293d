"""Decode any image file into a square RGB uint8 array of a given size.

Product photos arrive as JPEG with EXIF rotation, PNG with alpha, palette GIFs, 16-bit or CMYK
TIFFs. Everything is turned into the same thing here, once, so the rest of the pipeline only
ever sees (S, S, 3) uint8.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

MAX_PIXELS = 120_000_000  # refuse decompression bombs before decoding a single pixel
# `check_pixels` enforces the limit and reports each refused file, so PIL's own warning (from
# 89 M pixels, printed per file from decoding threads) would only repeat it as noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class UnreadableImage(Exception):
    """The file is not a decodable image; the message says why (for the skipped-files report)."""


LETTERBOX, STRETCH = "letterbox", "stretch"
RESIZE_MODES = (LETTERBOX, STRETCH)


def decode_image(path: Path, size: int, resize: str = LETTERBOX) -> np.ndarray:
    """Read `path` and return it letterboxed (or stretched) to (size, size, 3) uint8.

    Letterbox, ours: the aspect ratio is kept (a garment squashed to a square is a different
    shape) and the image is padded with its own mean border colour so the padding adds no new
    colour cue. Stretch: both sides resized to `size`, what the original project's networks saw.
    """
    try:
        with Image.open(path) as img:
            check_pixels(img)
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
            rgb = _to_rgb(ImageOps.exif_transpose(img))
            return _letterbox(rgb, size) if resize == LETTERBOX else _stretch(rgb, size)
    except UnreadableImage:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UnreadableImage(str(err) or type(err).__name__) from err


def check_pixels(img: Image.Image) -> None:
    """Refuse a decompression bomb from its header alone, before a single pixel is decoded."""
    if img.width * img.height > MAX_PIXELS:
        raise UnreadableImage(f"{img.width}x{img.height} pixels exceeds the {MAX_PIXELS:,} limit")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited on white like a product page."""
    if img.mode.startswith("I"):  # 16- or 32-bit integer grey: I;16, I;16B, I;16L, I
        arr = np.asarray(img)
        top = max(float(arr.max()), 1.0)
        img = Image.fromarray(np.rint(arr * (255.0 / top)).astype(np.uint8))  # 254.99.. is 255
    if img.mode in ("RGBA", "LA", "P"):  # a palette may mark an entry transparent
        rgba = img.convert("RGBA")
        background = Image.new("RGB", img.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _stretch(img: Image.Image, size: int) -> np.ndarray:
    """Both sides to `size`; PIL's bilinear filter widens with the scale, so downscaling is anti-aliased."""
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))


def _letterbox(img: Image.Image, size: int) -> np.ndarray:
    """Fit the longer side to `size` and pad the shorter one with the mean border colour.

    The colour is taken from the border of the resized image, so that an exported model
    (evaluation.export) can pad a resized photo itself and give the very same pixels.
    """
    fitted = ImageOps.contain(img, (size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(fitted)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).mean(axis=0)
    fill = tuple(int(round(c)) for c in border)
    return np.asarray(ImageOps.pad(fitted, (size, size), color=fill))  # fits already: pads only
