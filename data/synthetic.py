"""The built-in offline dataset: generated "product photos" of garment-like items.

Why it exists: the pipeline must run (and be tested) without any download. A dataset of plain
coloured blobs would be solved by colour statistics alone and so would say nothing about whether
a network learned anything. Here every item is a garment-like object (t-shirt, dress, trousers,
bag, shoe, skirt) with its own proportions, colours and pattern; every photo of it moves, scales,
rotates, re-lights, re-backgrounds and partly covers it. Colours and pattern kinds come from small
shared sets, so many items look alike by colour and only shape + pattern geometry + colour layout
tell them apart: a colour-statistics baseline stays weak while a small CNN trained with triplet
loss does clearly better.

Everything is drawn from `numpy.random.Generator`s seeded by `(seed, item)` (no global RNG), so
the same seed gives byte-identical files and an item looks the same whatever `num_items` is.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from common.errors import UserError

FORMAT_VERSION = 1         # bump when the drawing changes, so older generated datasets are replaced
MARKER = ".synthetic.json"
DEFAULT_NUM_ITEMS = 300
DEFAULT_PHOTOS_PER_ITEM = (4, 8)
DEFAULT_IMAGE_SIZE = 96

# A small shared palette: with ~10 colours many items share their main colour, so colour
# statistics alone cannot identify an item.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (178, 34, 34),    # red
    (25, 42, 86),     # navy
    (30, 30, 30),     # black
    (236, 236, 230),  # white
    (128, 128, 128),  # grey
    (214, 196, 160),  # beige
    (46, 110, 60),    # green
    (230, 190, 40),   # mustard
    (226, 140, 170),  # pink
    (120, 170, 220),  # light blue
)
KINDS = ("tshirt", "dress", "trousers", "bag", "shoe", "skirt")
PATTERNS = ("solid", "stripes", "dots", "checks")

SPRITE = 128          # side of the canonical item drawing, before per-photo transforms
SUPERSAMPLE = 2       # polygons are drawn this much larger and reduced, for smooth edges


@dataclass(frozen=True)
class ItemSpec:
    """Everything that makes an item recognisable across its photos."""

    kind: str
    shape: dict[str, float]        # a-d in [0, 1]: kind-specific proportions (see _OUTLINES)
    colours: tuple[int, int, int]  # palette indices: body, pattern, trim
    pattern: str
    frequency: float               # pattern repeats across the sprite
    angle: float                   # pattern orientation, radians
    fill: float                    # stripe width / dot diameter as a share of the period


# ---------------------------------------------------------------------------------- item specs

def item_spec(seed: int, index: int) -> ItemSpec:
    """The spec of item `index`; depends only on (seed, index) so items are stable."""
    return _draw_spec(_item_rng(seed, index))


def _item_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, 0x5EED])


def _draw_spec(rng: np.random.Generator) -> ItemSpec:
    """Colours are distinct within an item (so its layout shows) but come from the shared palette."""
    kind = KINDS[rng.integers(len(KINDS))]
    body, pattern_colour, trim = rng.choice(len(PALETTE), size=3, replace=False)
    pattern = PATTERNS[rng.integers(len(PATTERNS))]
    return ItemSpec(
        kind=kind,
        shape={name: float(rng.uniform()) for name in ("a", "b", "c", "d")},
        colours=(int(body), int(pattern_colour), int(trim)),
        pattern=pattern,
        frequency=float(rng.uniform(3.0, 9.0)),
        angle=float(rng.uniform(0.0, np.pi)),
        fill=float(rng.uniform(0.25, 0.6)),
    )


# ------------------------------------------------------------------------------------ outlines

Polygon = list[tuple[float, float]]


def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * t


def _outline(spec: ItemSpec) -> tuple[list[Polygon], list[Polygon]]:
    """(body polygons, trim polygons) in unit coordinates: x right, y down, all inside [0, 1]."""
    return _OUTLINES[spec.kind](spec.shape)


def _tshirt(s: dict[str, float]) -> tuple[list[Polygon], list[Polygon]]:
    half = _lerp(0.18, 0.26, s["a"])               # body half width
    bottom = _lerp(0.8, 0.95, s["b"])
    sleeve = _lerp(0.1, 0.19, s["c"])              # sleeve length: short to elbow
    drop = _lerp(0.05, 0.2, s["d"])                # how much sleeves hang down
    top, neck = 0.12, _lerp(0.07, 0.11, s["a"])
    body = [(0.5 - neck, top), (0.5 - half, top + 0.03), (0.5 - half - sleeve, top + 0.12 + drop),
            (0.5 - half - sleeve + 0.06, top + 0.22 + drop), (0.5 - half, top + 0.18),
            (0.5 - half, bottom), (0.5 + half, bottom), (0.5 + half, top + 0.18),
            (0.5 + half + sleeve - 0.06, top + 0.22 + drop), (0.5 + half + sleeve, top + 0.12 + drop),
            (0.5 + half, top + 0.03), (0.5 + neck, top), (0.5, top + _lerp(0.04, 0.12, s["b"]))]
    collar = [(0.5 - neck, top), (0.5, top + _lerp(0.04, 0.12, s["b"])), (0.5 + neck, top),
              (0.5 + neck - 0.02, top - 0.03), (0.5, top + 0.02), (0.5 - neck + 0.02, top - 0.03)]
    return [body], [collar]


def _dress(s: dict[str, float]) -> tuple[list[Polygon], list[Polygon]]:
    shoulder = _lerp(0.1, 0.18, s["a"])
    waist_y = _lerp(0.35, 0.5, s["b"])
    waist = _lerp(0.09, 0.15, s["a"])
    hem = _lerp(0.2, 0.42, s["c"])                 # A-line flare
    bottom = _lerp(0.82, 0.96, s["d"])
    body = [(0.5 - shoulder, 0.12), (0.5 - waist, waist_y), (0.5 - hem, bottom),
            (0.5 + hem, bottom), (0.5 + waist, waist_y), (0.5 + shoulder, 0.12),
            (0.5 + 0.05, 0.17), (0.5 - 0.05, 0.17)]
    belt = [(0.5 - waist - 0.01, waist_y - 0.02), (0.5 + waist + 0.01, waist_y - 0.02),
            (0.5 + waist + 0.012, waist_y + 0.025), (0.5 - waist - 0.012, waist_y + 0.025)]
    straps = [[(0.5 - shoulder, 0.12), (0.5 - shoulder + 0.03, 0.05), (0.5 - shoulder + 0.05, 0.05),
               (0.5 - shoulder + 0.04, 0.12)],
              [(0.5 + shoulder, 0.12), (0.5 + shoulder - 0.03, 0.05), (0.5 + shoulder - 0.05, 0.05),
               (0.5 + shoulder - 0.04, 0.12)]]
    return [body], [belt, *straps]


def _trousers(s: dict[str, float]) -> tuple[list[Polygon], list[Polygon]]:
    half = _lerp(0.14, 0.22, s["a"])
    crotch = _lerp(0.3, 0.45, s["b"])
    bottom = _lerp(0.78, 0.96, s["c"])
    flare = _lerp(-0.04, 0.06, s["d"])             # skinny to bell-bottom
    gap = 0.02
    left = [(0.5 - half, 0.12), (0.5, 0.12), (0.5, crotch), (0.5 - gap, bottom),
            (0.5 - half - flare - 0.02, bottom), (0.5 - half - 0.01, 0.5)]
    right = [(0.5, 0.12), (0.5 + half, 0.12), (0.5 + half + 0.01, 0.5),
             (0.5 + half + flare + 0.02, bottom), (0.5 + gap, bottom), (0.5, crotch)]
    waistband = [(0.5 - half, 0.08), (0.5 + half, 0.08), (0.5 + half, 0.13), (0.5 - half, 0.13)]
    return [left, right], [waistband]


def _bag(s: dict[str, float]) -> tuple[list[Polygon], list[Polygon]]:
    half = _lerp(0.22, 0.36, s["a"])
    top = _lerp(0.35, 0.5, s["b"])
    taper = _lerp(0.0, 0.08, s["c"])               # tote (straight) to trapezoid
    bottom = 0.9
    body = [(0.5 - half + taper, top), (0.5 + half - taper, top), (0.5 + half, bottom), (0.5 - half, bottom)]
    handle_w = _lerp(0.08, 0.2, s["d"])
    handle_top = top - _lerp(0.15, 0.3, s["c"])
    handle = [(0.5 - handle_w - 0.03, top), (0.5 - handle_w, handle_top), (0.5 + handle_w, handle_top),
              (0.5 + handle_w + 0.03, top), (0.5 + handle_w, top), (0.5 + handle_w - 0.02, handle_top + 0.04),
              (0.5 - handle_w + 0.02, handle_top + 0.04), (0.5 - handle_w, top)]
    flap = [(0.5 - half + taper, top), (0.5 + half - taper, top), (0.5, top + _lerp(0.12, 0.25, s["d"]))]
    return [body], [handle, flap]


def _shoe(s: dict[str, float]) -> tuple[list[Polygon], list[Polygon]]:
    heel = _lerp(0.0, 0.2, s["a"])                 # flat trainer to heeled shoe
    ankle = _lerp(0.3, 0.5, s["b"])                # low to high top
    toe = _lerp(0.08, 0.18, s["c"])
    sole = 0.8
    upper = [(0.1, sole - heel), (0.1, ankle), (0.3, ankle + 0.02), (0.45, _lerp(0.5, 0.6, s["d"])),
             (0.9 - toe, sole - 0.2), (0.92, sole - 0.08), (0.92, sole), (0.35, sole), (0.25, sole - heel)]
    sole_poly = [(0.08, sole - heel), (0.25, sole - heel), (0.35, sole), (0.94, sole),
                 (0.94, sole + 0.06), (0.3, sole + 0.06), (0.2, sole - heel + 0.05),
                 (0.18, sole + 0.06), (0.08, sole + 0.06)]
    return [upper], [sole_poly]


def _skirt(s: dict[str, float]) -> tuple[list[Polygon], list[Polygon]]:
    waist = _lerp(0.14, 0.22, s["a"])
    hem = _lerp(0.22, 0.44, s["b"])
    bottom = _lerp(0.6, 0.92, s["c"])
    pleats = 2 + int(s["d"] * 4)                   # zig-zag hem
    xs = np.linspace(0.5 + hem, 0.5 - hem, 2 * pleats + 1)
    hemline = [(float(x), bottom + (0.03 if i % 2 else 0.0)) for i, x in enumerate(xs)]
    body = [(0.5 - waist, 0.25), (0.5 + waist, 0.25), *hemline]
    band = [(0.5 - waist, 0.2), (0.5 + waist, 0.2), (0.5 + waist, 0.26), (0.5 - waist, 0.26)]
    return [body], [band]


_OUTLINES = {"tshirt": _tshirt, "dress": _dress, "trousers": _trousers, "bag": _bag,
             "shoe": _shoe, "skirt": _skirt}


# ------------------------------------------------------------------------------------- sprites

def _polygon_mask(polygons: list[list[tuple[float, float]]]) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of `polygons` on the SPRITE grid."""
    big = SPRITE * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    for polygon in polygons:
        draw.polygon([(x * big, y * big) for x, y in polygon], fill=255)
    return np.asarray(mask.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0


def _pattern_share(spec: ItemSpec) -> np.ndarray:
    """Share of the pattern colour per pixel: the item's pattern geometry on the sprite grid."""
    v, u = np.mgrid[0:SPRITE, 0:SPRITE].astype(np.float32) / SPRITE
    cos, sin = np.cos(spec.angle), np.sin(spec.angle)
    p, q = (u * cos + v * sin) * spec.frequency, (-u * sin + v * cos) * spec.frequency
    if spec.pattern == "stripes":
        return (np.mod(p, 1.0) < spec.fill).astype(np.float32)
    if spec.pattern == "dots":
        dist = np.hypot(np.mod(p, 1.0) - 0.5, np.mod(q, 1.0) - 0.5)
        return (dist < spec.fill * 0.5).astype(np.float32)
    if spec.pattern == "checks":
        return ((np.floor(p) + np.floor(q)) % 2).astype(np.float32)
    return np.zeros((SPRITE, SPRITE), np.float32)


def render_sprite(spec: ItemSpec) -> Image.Image:
    """The item drawn once, front view, as RGBA cropped to the object; every photo transforms it."""
    body_polys, trim_polys = _outline(spec)
    body, trim = _polygon_mask(body_polys), _polygon_mask(trim_polys)
    palette = np.asarray(PALETTE, np.float32)
    share = _pattern_share(spec)[..., None]
    fabric = palette[spec.colours[0]] * (1 - share) + palette[spec.colours[1]] * share
    rgb = fabric * (1 - trim[..., None]) + palette[spec.colours[2]] * trim[..., None]
    rgb *= _fold_shading()[..., None]
    alpha = np.maximum(body, trim)
    rgba = np.dstack([np.clip(rgb, 0, 255), alpha * 255]).astype(np.uint8)
    image = Image.fromarray(rgba, "RGBA")
    return image.crop(image.getbbox())


def _fold_shading() -> np.ndarray:
    """Slightly darker towards both sides, so flat polygons read as rounded cloth under a lamp."""
    x = np.linspace(-1.0, 1.0, SPRITE, dtype=np.float32)
    return np.broadcast_to(1.0 - 0.12 * x ** 2, (SPRITE, SPRITE))


# -------------------------------------------------------------------------------------- photos

_SHADOW_LUT = [round(a * 0.35) for a in range(256)]   # a soft drop shadow: 35% of the object's alpha

def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A studio backdrop: mostly light neutral tones (solid, gradient or fine texture), sometimes
    a coloured one, as in real shop photos."""
    base = _backdrop_colour(rng)
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(base, (size, size, 3)).copy()
    if kind == 1:
        other = _backdrop_colour(rng)
        angle = rng.uniform(0, 2 * np.pi)
        v, u = np.mgrid[0:size, 0:size].astype(np.float32) / size
        t = np.clip(0.5 + (u - 0.5) * np.cos(angle) + (v - 0.5) * np.sin(angle), 0, 1)[..., None]
        return base * (1 - t) + other * t
    noise = rng.normal(0, 1, size=(size // 4 + 1, size // 4 + 1)).astype(np.float32)
    grain = np.kron(noise, np.ones((4, 4), np.float32))[:size, :size]
    return base + grain[..., None] * rng.uniform(4, 14)


def _backdrop_colour(rng: np.random.Generator) -> np.ndarray:
    """Near-white/grey with a slight tint; one in ten a saturated colour."""
    if rng.uniform() < 0.1:
        return rng.uniform(90, 250, size=3).astype(np.float32)
    return (rng.uniform(190, 250) + rng.uniform(-10, 10, size=3)).astype(np.float32)


def _place(sprite: Image.Image, rng: np.random.Generator, size: int) -> tuple[Image.Image, tuple[int, int]]:
    """Mirror, rotate, scale and position the sprite: the camera and product moved between shots.

    The sprite is shrunk before it is rotated (rotating the small image is what keeps
    generation within seconds); the scale is chosen so the rotated object spans 70-100% of
    the photo, and up to an eighth of it may leave the frame.
    """
    angle = float(rng.uniform(-30, 30))
    cos, sin = abs(np.cos(np.radians(angle))), abs(np.sin(np.radians(angle)))
    w, h = sprite.size
    scale = size * rng.uniform(0.7, 1.0) / max(w * cos + h * sin, w * sin + h * cos)
    small = sprite.resize((max(4, round(w * scale)), max(4, round(h * scale))), Image.BILINEAR)
    if rng.uniform() < 0.5:
        small = small.transpose(Image.FLIP_LEFT_RIGHT)
    placed = small.rotate(angle, resample=Image.BILINEAR, expand=True)
    placed = placed.crop(placed.getbbox())
    x = int(rng.integers(-placed.width // 8, size - placed.width + placed.width // 8 + 1))
    y = int(rng.integers(-placed.height // 8, size - placed.height + placed.height // 8 + 1))
    return placed, (x, y)


def _occlude(photo: Image.Image, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    """Cover part of the object with a rectangle or blob (a tag, a hand, another product)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    ow, oh = w * rng.uniform(0.25, 0.5), h * rng.uniform(0.25, 0.5)
    cx, cy = x0 + rng.uniform(0, w), y0 + rng.uniform(0, h)
    shape = [cx - ow / 2, cy - oh / 2, cx + ow / 2, cy + oh / 2]
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    draw = ImageDraw.Draw(photo)
    (draw.rectangle if rng.uniform() < 0.5 else draw.ellipse)(shape, fill=colour)


def _relight(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, contrast, colour cast and a light gradient: a different lamp for every shot."""
    size = pixels.shape[0]
    mean = pixels.mean()
    pixels = (pixels - mean) * rng.uniform(0.9, 1.1) + mean * rng.uniform(0.93, 1.07)
    pixels *= rng.uniform(0.97, 1.03, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    light = 1.0 + rng.uniform(0.0, 0.15) * (ramp[None, :] * np.cos(angle) + ramp[:, None] * np.sin(angle))
    return np.clip(pixels * light[..., None], 0, 255)


def render_photo(sprite: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """One product photo of the sprite, all variation drawn from `rng`."""
    photo = Image.fromarray(np.clip(_background(rng, size), 0, 255).astype(np.uint8), "RGB")
    placed, (x, y) = _place(sprite, rng, size)
    shadow = placed.getchannel("A").point(_SHADOW_LUT).filter(ImageFilter.BoxBlur(2))
    photo.paste((0, 0, 0), (x + 2, y + 3, x + 2 + placed.width, y + 3 + placed.height), shadow)
    photo.paste(placed, (x, y), placed)
    if rng.uniform() < 0.7:
        _occlude(photo, (x, y, x + placed.width, y + placed.height), rng)
    pixels = _relight(np.asarray(photo, np.float32), rng)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


# ------------------------------------------------------------------------------------- writing

def _photo_range(photos_per_item: int | tuple[int, int]) -> tuple[int, int]:
    """A fixed count n is the range (n, n), so both spellings generate the same files."""
    if isinstance(photos_per_item, int):
        return photos_per_item, photos_per_item
    lo, hi = photos_per_item
    return int(lo), int(hi)


def _write_item(folder: Path, seed: int, index: int, photos: tuple[int, int], image_size: int) -> int:
    """Write all photos of item `index` into `folder`; returns how many."""
    rng = _item_rng(seed, index)
    spec = _draw_spec(rng)
    count = int(rng.integers(photos[0], photos[1] + 1))
    sprite = render_sprite(spec)
    folder.mkdir()
    for n in range(count):
        render_photo(sprite, rng, image_size).save(folder / f"{folder.name}_{n}.jpg", quality=90)
    return count


def _parameters(seed: int, num_items: int, photos: tuple[int, int], image_size: int) -> dict:
    """What the marker records: a dataset is reused only when all of these match."""
    return {"generator": "snap-vision synthetic", "version": FORMAT_VERSION, "seed": seed,
            "num_items": num_items, "photos_per_item": list(photos), "image_size": image_size}


def _check_arguments(seed: int, num_items: int, photos: tuple[int, int], image_size: int) -> None:
    """Reject values that would fail deep inside numpy/PIL with an unhelpful message."""
    if seed < 0:
        raise UserError(f"seed {seed}: must be >= 0 (it seeds numpy's SeedSequence)")
    if num_items < 1:
        raise UserError(f"num_items {num_items}: must be at least 1")
    if not 1 <= photos[0] <= photos[1]:
        raise UserError(f"photos_per_item {photos}: need 1 <= min <= max")
    if image_size < 16:
        raise UserError(f"image_size {image_size}: must be at least 16 pixels")


def read_marker(root: Path) -> dict | None:
    """The parameters a complete synthetic dataset at `root` was generated with, else None."""
    try:
        marker = json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _matches(marker: dict | None, params: dict) -> bool:
    return marker is not None and all(marker.get(k) == v for k, v in params.items())


def is_generated(root: Path, *, seed: int = 0) -> bool:
    """Whether `root` holds a complete dataset with these (default-sized) parameters, so that
    generate_synthetic would return at once; callers use it to announce the slow case."""
    params = _parameters(seed, DEFAULT_NUM_ITEMS, _photo_range(DEFAULT_PHOTOS_PER_ITEM), DEFAULT_IMAGE_SIZE)
    return _matches(read_marker(root), params)


def generate_synthetic(root: Path, *, seed: int = 0, num_items: int = DEFAULT_NUM_ITEMS,
                       photos_per_item: int | tuple[int, int] = DEFAULT_PHOTOS_PER_ITEM,
                       image_size: int = DEFAULT_IMAGE_SIZE) -> Path:
    """Write `<root>/item_XXXX/item_XXXX_<n>.jpg` plus `<root>/.synthetic.json`; return root.

    The dataset is built in a sibling `<root>.tmp-*` folder and renamed into place only when
    complete (the marker written last), so an interrupted run never leaves a half dataset that
    looks finished. A complete dataset with the same parameters is reused; one with other
    parameters is replaced; a folder that is not a synthetic dataset is never touched.
    `photos_per_item` is a count or an inclusive (min, max) range drawn per item.
    """
    root = Path(root)
    photos = _photo_range(photos_per_item)
    _check_arguments(seed, num_items, photos, image_size)
    params = _parameters(seed, num_items, photos, image_size)
    if _matches(read_marker(root), params):
        return root
    _refuse_foreign_folder(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
    try:
        total = sum(_write_item(tmp / f"item_{i:04d}", seed, i, photos, image_size)
                    for i in range(num_items))
        (tmp / MARKER).write_text(json.dumps({**params, "num_images": total}, indent=1))
        _swap_into_place(tmp, root, params)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _refuse_foreign_folder(root: Path) -> None:
    """Never overwrite a file or a non-empty folder that this generator did not write."""
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: exists and is not a folder; move it away or pick another --dataset_dir")
    if root.is_dir() and read_marker(root) is None and any(root.iterdir()):
        raise UserError(f"{root}: exists and is not a generated synthetic dataset (no {MARKER}); "
                        "move it away or pick another --dataset_dir")


def _swap_into_place(tmp: Path, root: Path, params: dict) -> None:
    """Rename `tmp` to `root`, replacing an older synthetic dataset; tolerate a concurrent twin.

    Under torchrun several processes may generate at once; whoever renames first wins and the
    others keep the winner's (identical) files.
    """
    old = None
    if root.is_dir():
        if _matches(read_marker(root), params):
            return
        old = root.parent / f"{tmp.name}.old"
        os.replace(root, old)
    try:
        os.replace(tmp, root)
    except OSError:
        if not _matches(read_marker(root), params):
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
