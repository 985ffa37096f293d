"""A real-photo proxy dataset built offline from the sample photographs Python packages ship.

The pipeline will be judged on real product photos that are not in this repository; the built-in
set is drawn by code. This builder gives a second, photographic test: every *item* is a region of
a real photograph (a cup, a face, a tile of a rocket, a patch of flowers...), and each of its
*photos* is that region re-photographed by code of its own, written with PIL and unrelated to the
training augmentation (training/augment.py, torch): the framing moves and zooms, the item is
rotated and seen in perspective, pasted at a new scale and position over a new background (flat,
gradient, noise, or clutter cut from another photograph), relit (gamma, white balance), partly
covered by an occluder, blurred and saved as JPEG at a random quality. It is a proxy: items cut
from one photograph share its colours and texture, which makes it harder than products, and the
"re-photographs" are synthetic views of one image, not new shots.

Sources: scikit-learn's china.jpg and flower.jpg, matplotlib's grace_hopper.jpg and
Minduka_Present_Blue_Pack.png, and, when scikit-image is installed (`pip install scikit-image`,
for this benchmark only), its bundled photographs (astronaut, coffee, chelsea, rocket, ...).

    python bench/real_photos.py OUT_DIR [--photos_per_item 6] [--seed 0] [--size 512]
"""
from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUTPUT_SIZE = 512          # default pixels of every generated photo (square): a shop photo's size
GRID_ROWS = 3              # items per photo: rows of cells along the short side
MARKER = ".real_photos.json"
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                  "immunohistochemistry", "retina", "stereo_motorcycle", "camera", "coins",
                  "moon", "brick", "grass", "gravel", "cell")


def source_photos() -> dict[str, Image.Image]:
    """Every available offline photograph, as RGB PIL images, by a short name."""
    from matplotlib import cbook
    from sklearn.datasets import load_sample_image

    photos = {name: Image.fromarray(load_sample_image(f"{name}.jpg")) for name in ("china", "flower")}
    for file in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        with cbook.get_sample_data(file) as f:
            photos[Path(file).stem.lower()] = _rgb(Image.open(f))
    photos.update(_skimage_photos())
    return photos


def _skimage_photos() -> dict[str, Image.Image]:
    try:
        import skimage.data
    except ImportError:
        return {}
    photos = {}
    for name in SKIMAGE_PHOTOS:
        try:
            array = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001 - a photo that needs a download is simply left out
            continue
        array = array[0] if isinstance(array, tuple) else array
        photos[name] = _rgb(Image.fromarray(np.asarray(array)))
    return photos


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    if image.mode not in ("RGB", "L"):
        image = Image.fromarray(_to_uint8(np.asarray(image)))
    return image.convert("RGB")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float64)
    low, high = array.min(), array.max()
    return ((array - low) / max(high - low, 1e-9) * 255).astype(np.uint8)


def item_boxes(size: tuple[int, int]) -> list[tuple[float, float, float]]:
    """(centre x, centre y, side) of each item: square cells tiling the photo."""
    width, height = size
    side = min(width, height) / GRID_ROWS
    cols, rows = int(width // side), int(height // side)
    pad_x, pad_y = (width - cols * side) / 2, (height - rows * side) / 2
    return [(pad_x + (c + 0.5) * side, pad_y + (r + 0.5) * side, side)
            for r in range(rows) for c in range(cols)]


def rephotograph(source: Image.Image, box: tuple[float, float, float], clutter: Image.Image,
                 rng: np.random.Generator, size: int = OUTPUT_SIZE) -> bytes:
    """One new photo (JPEG file content) of the item at ``box`` of ``source``; see the module docstring."""
    item = _reframe(source, box, rng, size)
    item = _rotate_and_tilt(item, rng)
    photo = _paste_on_background(item, clutter, rng, size)
    photo = _relight(photo, rng)
    photo = _occlude(photo, rng, size)
    if rng.random() < 0.5:
        photo = photo.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2)) * size / 128))
    return _jpeg(photo, int(rng.integers(30, 91)))


def _reframe(source: Image.Image, box: tuple[float, float, float], rng: np.random.Generator,
             size: int) -> Image.Image:
    """The item's square, moved by up to 10 % and zoomed by 0.85-1.15 (kept inside the photo), as
    RGBA at the output size."""
    x, y, side = box
    width, height = source.size
    side = min(side * rng.uniform(0.85, 1.15), width, height)
    x = min(max(x + rng.uniform(-0.1, 0.1) * side, side / 2), width - side / 2)
    y = min(max(y + rng.uniform(-0.1, 0.1) * side, side / 2), height - side / 2)
    crop = source.crop((round(x - side / 2), round(y - side / 2), round(x + side / 2), round(y + side / 2)))
    return crop.resize((size, size), Image.BICUBIC).convert("RGBA")


def _rotate_and_tilt(item: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotation by up to 25 degrees and a perspective view (corners moved up to 12 %)."""
    item = item.rotate(float(rng.uniform(-25, 25)), resample=Image.BICUBIC, expand=True)
    w, h = item.size
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    seen = corners + rng.uniform(-0.12, 0.12, (4, 2)) * [w, h]
    coefficients = _perspective_coefficients(seen, corners)
    return item.transform((w, h), Image.PERSPECTIVE, coefficients, resample=Image.BICUBIC)


def _perspective_coefficients(output: np.ndarray, source: np.ndarray) -> list[float]:
    """PIL's 8 PERSPECTIVE coefficients mapping ``output`` corners to ``source`` corners."""
    a, b = [], []
    for (u, v), (x, y) in zip(output, source):
        a.append([u, v, 1, 0, 0, 0, -x * u, -x * v])
        a.append([0, 0, 0, u, v, 1, -y * u, -y * v])
        b += [x, y]
    return list(np.linalg.solve(np.array(a), np.array(b)))


def _paste_on_background(item: Image.Image, clutter: Image.Image, rng: np.random.Generator,
                         size: int) -> Image.Image:
    """The item at 55-95 % of the frame, anywhere it fits, over one of four kinds of background."""
    background = _background(clutter, rng, size)
    side = int(size * rng.uniform(0.55, 0.95))
    item = item.resize((side, side), Image.BICUBIC)
    left, top = (int(rng.integers(0, size - side + 1)) for _ in range(2))
    background.paste(item, (left, top), item)
    return background.convert("RGB")


def _background(clutter: Image.Image, rng: np.random.Generator, side: int) -> Image.Image:
    kind = rng.integers(4)
    size = (side, side)
    if kind == 0:
        return Image.new("RGBA", size, tuple(int(v) for v in rng.integers(0, 256, 3)) + (255,))
    if kind == 1:
        start, end = rng.integers(0, 256, (2, 3))
        ramp = np.linspace(0, 1, side)[:, None, None]
        gradient = start + (end - start) * ramp * np.ones((1, side, 1))
        return Image.fromarray(gradient.astype(np.uint8)).rotate(float(rng.uniform(0, 360))).convert("RGBA")
    if kind == 2:
        noise = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        return Image.fromarray(noise).resize(size, Image.BICUBIC).convert("RGBA")
    w, h = clutter.size
    side = int(min(w, h) * rng.uniform(0.3, 0.8))
    x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    return clutter.crop((x, y, x + side, y + side)).resize(size, Image.BICUBIC).convert("RGBA")


def _relight(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gamma 0.7-1.4, white balance +-15 % per channel, exposure +-15 %."""
    pixels = np.asarray(photo, dtype=np.float64) / 255
    pixels = pixels ** rng.uniform(0.7, 1.4) * rng.uniform(0.85, 1.15, 3) * rng.uniform(0.85, 1.15)
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))


def _occlude(photo: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """With probability 0.4, an ellipse or rectangle of one colour over 5-15 % of the photo."""
    if rng.random() >= 0.4:
        return photo
    side = size * math.sqrt(rng.uniform(0.05, 0.15))
    x, y = rng.uniform(0, size - side, 2)
    shape = [x, y, x + side * rng.uniform(0.6, 1.4), y + side * rng.uniform(0.6, 1.4)]
    draw = ImageDraw.Draw(photo)
    fill = tuple(int(v) for v in rng.integers(0, 256, 3))
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(shape, fill=fill)
    return photo


def _jpeg(photo: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def build_real_photos(out_dir: Path, photos_per_item: int = 6, seed: int = 0, size: int = OUTPUT_SIZE,
                      progress: Callable[[str], None] = print) -> Path:
    """Write ``out_dir/<photo>_<n>/<k>.jpg``; skipped when a marker says it is already built."""
    out_dir = Path(out_dir)
    sources = source_photos()
    settings = {"sources": sorted(sources), "photos_per_item": photos_per_item, "seed": seed,
                "size": size, "grid_rows": GRID_ROWS}
    marker = out_dir / MARKER
    if marker.exists() and json.loads(marker.read_text()) == settings:
        return out_dir
    names = sorted(sources)
    rng = np.random.default_rng(seed)
    count = 0
    for index, name in enumerate(names):
        clutter = sources[names[(index + 1) % len(names)]]
        for number, box in enumerate(item_boxes(sources[name].size)):
            folder = out_dir / f"{name}_{number:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(photos_per_item):
                (folder / f"{k}.jpg").write_bytes(rephotograph(sources[name], box, clutter, rng, size))
            count += 1
    marker.write_text(json.dumps(settings))
    progress(f"{out_dir}: {count} items x {photos_per_item} photos from {len(names)} photographs "
             f"({', '.join(names)})")
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--photos_per_item", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=OUTPUT_SIZE, help="photo side in pixels (default 512)")
    args = parser.parse_args()
    build_real_photos(args.out_dir, args.photos_per_item, args.seed, args.size)


if __name__ == "__main__":
    main()
