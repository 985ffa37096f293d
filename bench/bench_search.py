"""Photo search speed: gallery index build, one query and 100 queries, one photo end to end.

Prints three tables:
1. index build: gallery images embedded and saved per second (simple_net, 64 px, random pixels);
2. search: 1 and 100 queries against galleries of random unit vectors (10k and 100k by default),
   exact torch (evaluation.knn.Searcher) vs faiss IndexFlatL2 when installed, on one thread and on
   all cores; "prepare" is the once-per-command gallery setup (reading the memory map included);
3. one photo end to end, in-process, after the model and the memory-mapped index are loaded:
   decode a JPEG + embed it + search (the target is <= 50 ms against 100k on a 2-core CPU),
   and the wall time of the whole `evaluate.py --model simple --query` command on the built-in
   dataset with its index already saved.

    nice -n 5 python bench/bench_search.py [--sizes 10000 100000] [--dim 64] [--repeats 20]

Times are the median of --repeats runs after a warm-up (best in brackets): on a shared machine the
median is what a user sees, the best what the code costs.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.dataset import ImageSet  # noqa: E402
from data.decode import decode_image  # noqa: E402
from data.index import DatasetIndex  # noqa: E402
from evaluation.embed import embed_photos  # noqa: E402
from evaluation.gallery_index import load_or_build  # noqa: E402
from evaluation.knn import Searcher  # noqa: E402
from models import build_model  # noqa: E402

K = 5
THREADS = sorted({1, os.cpu_count() or 1})


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, best) seconds of `repeats` calls after one warm-up."""
    fn()
    runs = timeit.repeat(fn, number=1, repeat=repeats)
    return statistics.median(runs), min(runs)


def ms(pair: tuple[float, float]) -> str:
    return f"{pair[0] * 1e3:8.2f} ({pair[1] * 1e3:.2f})"


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_gallery(n: int, size: int) -> ImageSet:
    """n random images held in memory, as an ImageSet (paths are never opened: fingerprint only)."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    index = DatasetIndex(Path(__file__).parent, [Path(__file__).name] * n,
                         np.arange(n, dtype=np.int64), [f"item{i}" for i in range(n)])
    return ImageSet(index, size, lambda rows: pixels[rows])


def bench_build(n: int, out_dir: Path) -> list[tuple[int, float]]:
    """Images per second of building (embed + save) a gallery index of n images."""
    model = build_model("simple_net")
    gallery = random_gallery(n, model.input_size)
    rows = []
    for threads in THREADS:
        torch.set_num_threads(threads)
        folder = out_dir / f"build{threads}"
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # its "built index of ..." line
            load_or_build(model, gallery, folder, "bench")
        rows.append((threads, n / (time.perf_counter() - start)))
    return rows


def faiss_index(gallery: np.ndarray) -> object | None:
    try:
        import faiss
    except ImportError:
        return None
    flat = faiss.IndexFlatL2(gallery.shape[1])
    flat.add(gallery)
    return flat


def bench_search(n: int, dim: int, repeats: int, folder: Path) -> list[str]:
    """Table rows for one gallery size: prepare, 1 query, 100 queries, per backend and threads."""
    path = folder / f"gallery{n}.npy"
    np.save(path, unit_vectors(n, dim, seed=n))
    gallery = np.load(path, mmap_mode="c")
    one, hundred = (torch.from_numpy(unit_vectors(q, dim, seed=q)) for q in (1, 100))
    backends = {"torch": None, "faiss": faiss_index(np.ascontiguousarray(gallery))}
    lines = []
    for name, index in backends.items():
        if name == "faiss" and index is None:
            lines.append(f"{n:>7} {'faiss':>6}  not installed (pip install faiss-cpu)")
            continue
        for threads in THREADS:
            torch.set_num_threads(threads)
            if index is not None:
                index_threads(threads)
            prepare = timed(lambda: Searcher(torch.from_numpy(gallery), faiss_index=index), repeats)
            searcher = Searcher(torch.from_numpy(gallery), faiss_index=index)
            q1 = timed(lambda: searcher.search(one, K), repeats)
            q100 = timed(lambda: searcher.search(hundred, K), max(3, repeats // 4))
            lines.append(f"{n:>7} {name:>6} {threads:>7}  {ms(prepare):>18} {ms(q1):>18} {ms(q100):>18}")
    return lines


def index_threads(threads: int) -> None:
    import faiss
    faiss.omp_set_num_threads(threads)


def bench_one_photo(n: int, dim: int, repeats: int, folder: Path) -> tuple[float, float]:
    """decode + embed + search of one JPEG against an n-image memory-mapped index (64-d)."""
    model = build_model("simple_net").eval()
    photo = folder / "photo.jpg"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(photo)
    path = folder / f"gallery{n}.npy"
    if not path.exists():
        np.save(path, unit_vectors(n, dim, seed=n))
    searcher = Searcher(torch.from_numpy(np.load(path, mmap_mode="c")))

    def one_query() -> None:
        pixels = decode_image(photo, model.input_size)[None]
        searcher.search(embed_photos(model, pixels), K)
    return timed(one_query, repeats)


def bench_command(folder: Path) -> tuple[float, int]:
    """Wall seconds of `evaluate.py --model simple --query` with its index already saved."""
    photo = folder / "photo.jpg"
    argv = [sys.executable, str(ROOT / "evaluate.py"), "--model", "simple", "--query", str(photo),
            "--no_figures", "--dataset_dir", str(folder / "data")]
    first = subprocess.run(argv, capture_output=True, text=True, check=True)  # generates + indexes
    start = time.perf_counter()
    second = subprocess.run(argv, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    loaded = [line for line in second.stdout.splitlines() if line.startswith("loaded index of")]
    if not loaded or "built index of" not in first.stdout:
        raise SystemExit(f"the second command did not load the saved index:\n{second.stdout}")
    return seconds, int(loaded[0].split()[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=64, help="embedding size (simple_net: 64)")
    parser.add_argument("--build", type=int, default=1024, help="images in the index-build test")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"CPU cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; times in ms: median (best)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"\nindex build, simple_net, {args.build} images at 64 px")
        print(f"{'threads':>7} {'images/s':>9}")
        for threads, rate in bench_build(args.build, folder):
            print(f"{threads:>7} {rate:>9.0f}")
        print(f"\nsearch, k={K}, d={args.dim}, random unit vectors")
        print(f"{'N':>7} {'method':>6} {'threads':>7}  {'prepare ms':>18} {'1 query ms':>18} {'100 queries ms':>18}")
        for n in args.sizes:
            for line in bench_search(n, args.dim, args.repeats, folder):
                print(line)
        largest = max(args.sizes)
        print(f"\none 640x480 JPEG, decode + embed (simple_net) + search, against N = {largest}")
        print(f"{'threads':>7} {'ms':>18}")
        for threads in THREADS:
            torch.set_num_threads(threads)
            print(f"{threads:>7} {ms(bench_one_photo(largest, args.dim, args.repeats, folder)):>18}")
        seconds, count = bench_command(folder)
        print(f"\nwhole command `evaluate.py --model simple --query photo.jpg` (index of {count} images "
              f"saved): {seconds:.2f} s wall")


if __name__ == "__main__":
    main()
