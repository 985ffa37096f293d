"""Images/s: batches read from the decoded cache vs decoding + resizing JPEGs per sample.

The original project opened, decoded and resized a 512x512 JPEG every time a sample was used.
This script builds a folder of such JPEGs, then measures both ways side by side in one run:

    python bench/bench_data.py [--images 600] [--size 64] [--batch 64]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.cache import build_or_load_cache  # noqa: E402
from data.dataset import ImageSet  # noqa: E402
from data.index import index_folder  # noqa: E402
from data.tensors import to_tensor  # noqa: E402


def make_jpegs(root: Path, num_images: int, side: int = 512, per_item: int = 5) -> None:
    """Textured 512x512 JPEGs (noise compresses like photos do, unlike flat colour)."""
    rng = np.random.default_rng(0)
    for n in range(num_images):
        folder = root / f"item_{n // per_item:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (side // 8, side // 8, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((side, side), Image.Resampling.BICUBIC)
        image.save(folder / f"{n}.jpg", quality=90)


def original_way(paths: list[Path], size: int, batches: list[np.ndarray]) -> float:
    """Seconds to serve `batches` by decoding and resizing each file per sample."""
    start = time.perf_counter()
    for rows in batches:
        pixels = [np.asarray(Image.open(paths[r]).convert("RGB").resize((size, size))) for r in rows]
        to_tensor(np.stack(pixels))
    return time.perf_counter() - start


def cached_way(image_set: ImageSet, batches: list[np.ndarray]) -> float:
    """Seconds to serve `batches` from the memory-mapped cache."""
    start = time.perf_counter()
    for rows in batches:
        to_tensor(image_set.batch(rows))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--size", type=int, default=64, help="model input size")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "jpegs"
        make_jpegs(root, args.images)
        index = index_folder(root)
        start = time.perf_counter()
        cache = build_or_load_cache(index, args.size, Path(tmp) / "cache", progress=False)
        build_s = time.perf_counter() - start
        image_set = ImageSet.from_cache(cache, np.arange(len(cache.index)))
        order = np.random.default_rng(1).permutation(len(index))
        batches = [order[i:i + args.batch] for i in range(0, len(order), args.batch)]
        paths = [index.root / p for p in index.paths]
        cached_way(image_set, batches)  # warm the page cache, as every epoch after the first is
        rows = [("decode + resize per sample (original)", original_way(paths, args.size, batches)),
                ("memmap cache batches (ours)", cached_way(image_set, batches))]
    print(f"{len(order)} images of 512x512 JPEG -> {args.size}px, batches of {args.batch}; "
          f"one-off cache build {build_s:.2f} s ({len(order) / build_s:,.0f} img/s)\n")
    print(f"| {'method':<38} | {'seconds':>8} | {'images/s':>10} | {'ratio':>7} |")
    print(f"|{'-' * 40}|{'-' * 10}|{'-' * 12}|{'-' * 9}|")
    base = rows[0][1]
    for name, seconds in rows:
        print(f"| {name:<38} | {seconds:>8.3f} | {len(order) / seconds:>10,.0f} | {base / seconds:>6.1f}x |")


if __name__ == "__main__":
    main()
