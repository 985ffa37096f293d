"""Seconds for leave-one-out retrieval metrics: the original per-query classifier vs ours.

The original fitted a scikit-learn KNeighborsClassifier on all other embeddings once per query and
asked it for the query's neighbours: N fits of N rows each. Ours (evaluation.metrics) is one
chunked N x N x D matrix product and a top-k. A bare ``emb @ emb.T`` is printed as the floor no
exact method can beat. The original is timed on a subset of queries and extrapolated linearly
to N (median seconds per query x N: every query costs the same, one fit on N - 1 rows); both
methods' metrics are compared on that subset, so the table only reports a speed-up between
methods that agree.

    python bench/bench_knn.py [--sizes 1000 2000 4000] [--dim 128] [--subset 100]

On a busy machine, prefix OMP_NUM_THREADS=1: both sides then run on one core, and OpenMP threads
stalled by other processes no longer swamp the timings.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.neighbors import KNeighborsClassifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.knn import knn  # noqa: E402
from evaluation.metrics import metrics_from_neighbours, retrieval_metrics  # noqa: E402

K = 5
IMAGES_PER_ITEM = 5


def make_embeddings(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Items as noisy clusters, ~5 images each, so that the metrics are neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) // IMAGES_PER_ITEM
    centres = rng.normal(size=(labels.max() + 1, dim))
    emb = centres[labels] + rng.normal(scale=1.8, size=(n, dim))
    return emb.astype(np.float32), labels


def original_neighbours(emb: np.ndarray, labels: np.ndarray,
                        queries: np.ndarray) -> tuple[np.ndarray, float]:
    """(Q, K) neighbour indices the original's way, a classifier fitted per query on the others,
    and the median seconds per query (robust to the spikes of a shared machine)."""
    out = np.empty((len(queries), K), dtype=np.int64)
    seconds = []
    everyone = np.arange(len(emb))
    for row, q in enumerate(queries):
        start = time.perf_counter()
        others = everyone[everyone != q]
        model = KNeighborsClassifier(n_neighbors=K).fit(emb[others], labels[others])
        out[row] = others[model.kneighbors(emb[q:q + 1], return_distance=False)[0]]
        seconds.append(time.perf_counter() - start)
    return out, float(np.median(seconds))


def subset_metrics(neighbours: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """closest_1..K and in_any@K of `queries`, every one of which has a partner here."""
    r_counts = np.full(len(queries), IMAGES_PER_ITEM - 1)
    m = metrics_from_neighbours(labels[neighbours], labels[queries], r_counts, K)
    return {key: m[key] for key in [f"closest_{i}" for i in range(1, K + 1)] + [f"in_any@{K}"]}


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` runs after one warm-up: the machine may be shared, noise only adds."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_size(n: int, dim: int, subset: int) -> dict[str, float]:
    """One row of the table; raises if the two methods disagree on the subset."""
    emb, labels = make_embeddings(n, dim)
    queries = np.random.default_rng(1).choice(n, size=min(subset, n), replace=False)
    original, per_query_s = original_neighbours(emb, labels, queries)
    original_s = per_query_s * n

    tensor = torch.from_numpy(emb)
    ours = knn(tensor, K)[1].numpy()[queries]
    expected, got = subset_metrics(original, labels, queries), subset_metrics(ours, labels, queries)
    if expected != got:
        raise SystemExit(f"N={n}: metrics differ on the subset: original {expected}, ours {got}")
    ours_s = best_seconds(lambda: retrieval_metrics(tensor, labels, k=K), repeats=5)
    matmul_s = best_seconds(lambda: tensor @ tensor.T, repeats=5)
    return {"n": n, "original": original_s, "ours": ours_s, "matmul": matmul_s,
            "same_neighbours": float((original == ours).mean()), "in_any": got[f"in_any@{K}"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--subset", type=int, default=100, help="queries timed the original way")
    args = parser.parse_args()
    print(f"d={args.dim}, k={K}, {IMAGES_PER_ITEM} images per item, torch threads "
          f"{torch.get_num_threads()}; original: median of {args.subset} queries x N (extrapolated); "
          "ours and matmul: best of 5")
    print(f"{'N':>6} {'original s (extrap.)':>21} {'ours s':>9} {'speed-up':>10} {'matmul s':>9} "
          f"{'ours/matmul':>12} {'same nbrs':>10} {'in_any@5':>9}")
    for n in args.sizes:
        row = bench_size(n, args.dim, args.subset)
        print(f"{row['n']:>6} {row['original']:>21.2f} {row['ours']:>9.4f} "
              f"{row['original'] / row['ours']:>9.0f}x {row['matmul']:>9.4f} "
              f"{row['ours'] / row['matmul']:>11.1f}x {row['same_neighbours']:>10.1%} {row['in_any']:>9.3f}")


if __name__ == "__main__":
    main()
