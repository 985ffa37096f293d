"""Exact k nearest neighbours of every embedding among all the others (leave-one-out retrieval).

The original fitted a scikit-learn classifier once per query: O(N) fits of O(N) each, minutes for
a few thousand images. Here the squared distances come from matrix products,
``||a||^2 + ||b||^2 - 2 a.b``, a block of query rows at a time, so the work is one N x N x D
product and the memory is bounded for any N.

Determinism: ``torch.topk`` does not say which of several equal values it returns, and duplicate
photos give equal distances. Results are therefore defined as the k smallest distances ordered by
(distance, gallery index): ``topk`` fetches one candidate more than asked, a row whose k-th and
(k+1)-th candidates differ has a unique answer that only needs sorting, and the rare row with a
tie across that boundary is redone with an exact composite (distance bits, index) integer key.

Precision: float32 products leave an absolute error of about 1e-7 x ||x||^2 on squared distances
(the data are centred first to keep norms small), so a duplicate's distance comes out as ~1e-3 x
||x|| rather than 0; rankings change only among distances that close.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from common.errors import UserError

BACKENDS = ("torch", "faiss")
BLOCK_BYTES = 256 * 2**20  # bound on the memory of one block of query rows x the gallery
BYTES_PER_PAIR = 20  # float32 block + its tied rows redone as int64 keys, at worst every row


def knn(emb: torch.Tensor, k: int, *, chunk_size: int | None = None,
        backend: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distances (N, k) float32 and indices (N, k) int64 of each row's k nearest rows.

    The query itself is never among its neighbours, even when a duplicate is at distance 0. `k` is
    clipped to N - 1 (a gallery cannot give more). `chunk_size` is the number of query rows per
    block (default: as many as fit in BLOCK_BYTES). Results are on `emb`'s device; distances are
    computed in float32 whatever `emb`'s dtype, so half-precision embeddings lose no ranking.
    """
    x = _as_float32(emb)
    k = _clip_k(k, x.shape[0])
    if k == 0:
        return x.new_zeros(x.shape[0], 0), torch.zeros(x.shape[0], 0, dtype=torch.int64, device=x.device)
    gallery = _Gallery.of(x)
    rows_per_chunk = _chunk_rows(x.shape[0], chunk_size)
    if backend == "torch":
        sq_dists, indices = _torch_knn(gallery, k, rows_per_chunk)
    elif backend == "faiss":
        sq_dists, indices = _faiss_knn(gallery, k, rows_per_chunk)
    else:
        raise UserError(f"--knn_backend {backend!r}: unknown kNN backend; use one of {', '.join(BACKENDS)}")
    return sq_dists.sqrt(), indices


def _as_float32(emb: torch.Tensor) -> torch.Tensor:
    if emb.dim() != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {tuple(emb.shape)}")
    return emb.detach().float()


@dataclass(frozen=True)
class _Gallery:
    """The embeddings as ``[a, 1]`` query rows and ``[-2 b, ||b||^2]`` gallery columns.

    One product of the two gives ``||b||^2 - 2 a.b`` for a block of queries without an extra pass
    over the block; that ranks a query's neighbours like the squared distance (it lacks only the
    query's constant ``||a||^2``, added to the few candidates kept).
    """

    points: torch.Tensor  # (N, D), centred
    sq_norms: torch.Tensor  # (N,)
    query_rows: torch.Tensor  # (N, D + 1)
    gallery_columns: torch.Tensor  # (D + 1, N)

    @classmethod
    def of(cls, x: torch.Tensor) -> "_Gallery":
        points = _centred(x)
        sq_norms = points.square().sum(1)
        if not bool(torch.isfinite(sq_norms).all()):  # finite only if the whole row is, unoverflowed
            raise UserError("embeddings contain NaN or inf: the model's weights have diverged; evaluate "
                            "an earlier checkpoint or retrain with a lower --learning_rate")
        query_rows = torch.cat([points, points.new_ones(len(points), 1)], 1)
        gallery_columns = torch.cat([-2.0 * points, sq_norms[:, None]], 1).T
        return cls(points, sq_norms, query_rows, gallery_columns)


def _centred(x: torch.Tensor) -> torch.Tensor:
    """`x` less its mean rounded to integers: the same distances, computed more precisely.

    The error of ``||a||^2 + ||b||^2 - 2 a.b`` grows with the norms, so a common offset (colour
    statistics in 0..255, say) would blur small distances. Rounding keeps integer-valued data, and
    with it exact ties, exact.
    """
    return x - x.mean(0).round()


def _clip_k(k: int, n: int) -> int:
    if k < 1:
        raise UserError(f"k={k}: the number of neighbours must be at least 1 (--num_neighbours)")
    return min(k, max(n - 1, 0))


def _chunk_rows(n: int, chunk_size: int | None) -> int:
    """Query rows per block: the caller's choice, or as many as keep a block under BLOCK_BYTES."""
    if chunk_size is None:
        return max(1, BLOCK_BYTES // (BYTES_PER_PAIR * n))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    return chunk_size


def _torch_knn(g: _Gallery, k: int, rows_per_chunk: int,
               queries: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances and indices of the k nearest of each query (all rows by default).

    Adding the query's ``||a||^2`` and clamping at 0 keep the order of ``||b||^2 - 2 a.b``, so
    the block is ranked as it comes out of the product and only the candidates pay for them.
    """
    n, device = len(g.points), g.points.device
    queries = torch.arange(n, device=device) if queries is None else queries
    out_d = g.points.new_empty(len(queries), k)
    out_i = torch.empty(len(queries), k, dtype=torch.int64, device=device)
    for start in range(0, len(queries), rows_per_chunk):
        rows = queries[start:start + rows_per_chunk]
        partial = g.query_rows[rows] @ g.gallery_columns
        partial[torch.arange(len(rows), device=device), rows] = float("inf")  # the query itself
        row_sq = g.sq_norms[rows, None]
        values, indices = partial.topk(_num_candidates(k, n), dim=1, largest=False)
        sq_dists, indices, tied = _order_candidates(_to_sq_dist(values, row_sq), indices, k)
        if len(tied):
            sq_dists[tied], indices[tied] = _exact_topk(_to_sq_dist(partial[tied], row_sq[tied]), k)
        out_d[start:start + len(rows)], out_i[start:start + len(rows)] = sq_dists, indices
    return out_d, out_i


def _faiss_knn(g: _Gallery, k: int, rows_per_chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same answer as the torch backend, from a faiss exhaustive (flat) L2 index."""
    try:
        import faiss
    except ImportError as err:
        raise UserError("--knn_backend faiss: faiss is not installed; `pip install faiss-cpu` or use "
                        "--knn_backend torch (same results)") from err
    data = g.points.cpu().numpy()
    index = faiss.IndexFlatL2(data.shape[1])
    index.add(data)
    found_d, found_i = index.search(data, _num_candidates(k, len(data)) + 1)  # + the query itself
    sq_dists, indices = _drop_self(torch.from_numpy(found_d), torch.from_numpy(found_i))
    sq_dists, indices, tied = _order_candidates(sq_dists.clamp_(min=0.0), indices, k)
    device = g.points.device
    sq_dists, indices, tied = sq_dists.to(device), indices.to(device), tied.to(device)
    if len(tied):  # faiss's order among equal distances is its own: redo those rows here
        sq_dists[tied], indices[tied] = _torch_knn(g, k, rows_per_chunk, queries=tied)
    return sq_dists, indices


def _drop_self(sq_dists: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove each row's own index from its results (the last column where it is absent).

    The query is not always first: duplicates are at distance 0 too, and so may precede it.
    """
    is_self = indices == torch.arange(indices.shape[0])[:, None]
    is_self[:, -1] |= ~is_self.any(1)
    width = indices.shape[1] - 1
    return sq_dists[~is_self].view(-1, width), indices[~is_self].view(-1, width)


def _num_candidates(k: int, n: int) -> int:
    """k plus one spare, which shows whether a tie crosses the k-th place; at most all others."""
    return min(k + 1, n - 1)


def _to_sq_dist(partial: torch.Tensor, row_sq: torch.Tensor) -> torch.Tensor:
    """``max(0, ||a||^2 + partial)``: rounding can make a tiny squared distance negative."""
    return (partial + row_sq).clamp_(min=0.0)


def _order_candidates(sq_dists: torch.Tensor, indices: torch.Tensor,
                      k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k nearest per row ordered by (distance, index), and the rows where that is ambiguous.

    Candidates are each row's k (+1 spare) smallest distances, equal ones in no particular order.
    Sorting them by the exact (distance, index) key fixes the order. Where the spare ties the k-th,
    which of the tied images belong to the k nearest is not known from the candidates: those rows
    are returned (third value) for the caller to redo over all distances.
    """
    sq_dists, indices = _unpack(_pack(sq_dists, indices).sort(dim=1).values)
    tied = torch.zeros(0, dtype=torch.int64, device=indices.device)
    if sq_dists.shape[1] > k:
        tied = (sq_dists[:, k] == sq_dists[:, k - 1]).nonzero().flatten()
    return sq_dists[:, :k].contiguous(), indices[:, :k].contiguous(), tied


def _exact_topk(sq_dists: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest of full rows of distances by (distance, index), ties resolved exactly."""
    gallery = torch.arange(sq_dists.shape[1], device=sq_dists.device).expand_as(sq_dists)
    return _unpack(_pack(sq_dists, gallery).topk(k, dim=1, largest=False).values)


def _pack(sq_dists: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """int64 keys that order exactly as (distance, index).

    A non-negative float32's bit pattern, read as an integer, orders like the float; it goes in
    the high 32 bits, the index (< 2^31) in the low ones. Adding +0.0 turns a -0.0 into +0.0.
    """
    keys = (sq_dists + 0.0).view(torch.int32).to(torch.int64)
    return keys.bitwise_left_shift_(32).bitwise_or_(indices)


def _unpack(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (keys >> 32).to(torch.int32).view(torch.float32), keys & 0xFFFFFFFF


def search(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`Searcher(gallery).search(queries, k)`, for a gallery searched once."""
    return Searcher(gallery).search(queries, k)


REFINE_SPARE = 8  # extra candidates per query whose exact distances may reorder the top k


class Searcher:
    """Exact k nearest gallery rows of queries that are not in the gallery (photo search, the
    query/gallery protocol), so nothing is excluded.

    The gallery side of the matrix-product form is prepared once, so each later query costs one
    (Q, D+1) x (D+1, N) product and a top-k. Candidates (REFINE_SPARE more than asked, or from
    `faiss_index`, a faiss index over the same gallery) then get their distances recomputed
    directly as ||q - g|| and are sorted by (distance, gallery index): an identical image is at
    distance 0.0 exactly and ties are broken by index, as in `knn`.
    """

    def __init__(self, gallery: torch.Tensor, faiss_index: object | None = None):
        self.gallery = _as_float32(gallery)
        self.faiss_index = faiss_index
        self._offset = self.gallery.mean(0).round() if len(self.gallery) else None  # as `_centred`
        self._columns = None if faiss_index is not None or self._offset is None else self._prepare()

    def _prepare(self) -> torch.Tensor:
        centred = self.gallery - self._offset
        return torch.cat([-2.0 * centred, centred.square().sum(1, keepdim=True)], 1).T.contiguous()

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances (Q, k) and gallery indices (Q, k) of each query's k nearest, k clipped to N."""
        q, n = _as_float32(queries), self.gallery.shape[0]
        k = min(k, n)
        if k < 1 or q.shape[0] == 0:
            return q.new_zeros(q.shape[0], max(k, 0)), torch.zeros(q.shape[0], max(k, 0), dtype=torch.int64)
        depth = min(k + REFINE_SPARE, n)
        if self.faiss_index is not None:
            candidates = torch.from_numpy(self.faiss_index.search(q.cpu().numpy(), depth)[1]).to(torch.int64)
        else:
            candidates = self._candidates(q, depth)
        exact = (q[:, None, :] - self.gallery[candidates]).norm(dim=2)
        dists, indices = _unpack(_pack(exact, candidates).sort(dim=1).values)
        return dists[:, :k].contiguous(), indices[:, :k].contiguous()

    def _candidates(self, q: torch.Tensor, depth: int) -> torch.Tensor:
        """Each query's `depth` nearest by the matrix-product form, a block of queries at a time."""
        rows_per_chunk = _chunk_rows(self.gallery.shape[0], None)
        found = []
        for start in range(0, q.shape[0], rows_per_chunk):
            block = q[start:start + rows_per_chunk] - self._offset
            partial = torch.cat([block, block.new_ones(len(block), 1)], 1) @ self._columns
            found.append(partial.topk(depth, dim=1, largest=False).indices)
        return torch.cat(found)
