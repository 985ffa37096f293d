"""evaluation.knn against a float64 full-matrix reference with a stable sort (ties by index)."""
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

import evaluation.knn as knn_module
from common.errors import UserError
from evaluation.knn import Searcher, knn, search

HAS_FAISS = importlib.util.find_spec("faiss") is not None


def reference_knn(emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pairwise distance in float64, self excluded, stable argsort: ties go to the lower index."""
    x = emb.astype(np.float64)
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(sq, np.inf)
    order = np.argsort(sq, axis=1, kind="stable")[:, :k]
    return np.sqrt(np.take_along_axis(sq, order, 1)), order


def assert_matches_reference(emb: np.ndarray, k: int, atol: float = 1e-5, **kwargs) -> None:
    dists, idx = knn(torch.from_numpy(emb), k, **kwargs)
    ref_d, ref_i = reference_knn(emb, k)
    np.testing.assert_array_equal(idx.numpy(), ref_i)
    np.testing.assert_allclose(dists.numpy(), ref_d, rtol=1e-5, atol=atol)


def random_embeddings(n: int = 200, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def integer_embeddings(n: int = 240, d: int = 3, seed: int = 0) -> np.ndarray:
    """Small integers: float32 arithmetic on them is exact, so equal distances are exact ties (many)."""
    return np.random.default_rng(seed).integers(-2, 3, size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64, 200, 10_000])
def test_random_data_matches_reference_for_any_chunk_size(chunk_size):
    assert_matches_reference(random_embeddings(), 6, chunk_size=chunk_size)


@pytest.mark.parametrize("chunk_size", [None, 1, 13])
@pytest.mark.parametrize("k", [1, 4, 30])
def test_exact_ties_are_broken_by_lower_index(chunk_size, k):
    assert_matches_reference(integer_embeddings(), k, chunk_size=chunk_size)


def test_points_on_a_line_by_hand():
    # positions 0, 1, -1, 2: from 0, images 1 and 2 tie at distance 1; the lower index comes first
    emb = torch.tensor([[0.0], [1.0], [-1.0], [2.0]])
    dists, idx = knn(emb, 2)
    assert idx.tolist() == [[1, 2], [0, 3], [0, 1], [1, 0]]
    assert dists.tolist() == [[1.0, 1.0], [1.0, 1.0], [1.0, 2.0], [1.0, 2.0]]
    _, idx1 = knn(emb, 1)
    assert idx1.flatten().tolist() == [1, 0, 0, 1]


def test_duplicates_come_first_by_index_and_never_the_query_itself():
    base = random_embeddings(20, 8)
    emb = np.concatenate([base, base, base])  # image i duplicated at i + 20 and i + 40
    dists, idx = knn(torch.from_numpy(emb), 3)
    for row in range(60):
        copies = sorted({row % 20, row % 20 + 20, row % 20 + 40} - {row})
        assert idx[row, :2].tolist() == copies
        assert row not in idx[row].tolist()
    # ~1e-3 x norm, not 0: the precision of a.a + b.b - 2 a.b in float32 (see evaluation/knn.py)
    assert dists[:, :2].max().item() < 3e-3
    assert_matches_reference(emb, 5, atol=3e-3, chunk_size=9)


def test_a_large_common_offset_does_not_blur_distances():
    emb = random_embeddings(300, 6) * 20 + 128  # like colour statistics in 0..255
    emb = np.concatenate([emb, emb[:30]])
    assert_matches_reference(emb, 5, atol=0.05)


def test_identical_embeddings_list_all_others_in_index_order():
    dists, idx = knn(torch.ones(6, 4), 10)
    assert idx.tolist() == [[j for j in range(6) if j != i] for i in range(6)]
    assert dists.abs().max().item() == 0.0


def test_k_is_clipped_to_the_gallery():
    dists, idx = knn(torch.from_numpy(random_embeddings(5, 3)), 100)
    assert dists.shape == idx.shape == (5, 4)
    assert [sorted(row) for row in idx.tolist()] == [[j for j in range(5) if j != i] for i in range(5)]
    dists, idx = knn(torch.zeros(1, 3), 5)
    assert dists.shape == idx.shape == (1, 0)


def test_result_types_and_sorted_distances():
    dists, idx = knn(torch.from_numpy(random_embeddings()), 8)
    assert dists.dtype == torch.float32 and idx.dtype == torch.int64
    assert bool((dists[:, 1:] >= dists[:, :-1]).all())


def test_half_precision_input_is_ranked_in_float32():
    emb = torch.from_numpy(random_embeddings()).half()
    dists, idx = knn(emb, 5)
    ref_d, ref_i = knn(emb.float(), 5)
    assert torch.equal(idx, ref_i) and dists.dtype == torch.float32
    torch.testing.assert_close(dists, ref_d)


def test_default_chunking_bounds_memory(monkeypatch):
    n = 300
    assert knn_module._chunk_rows(10**6, None) * 10**6 * knn_module.BYTES_PER_PAIR <= knn_module.BLOCK_BYTES
    monkeypatch.setattr(knn_module, "BLOCK_BYTES", 4 * n * knn_module.BYTES_PER_PAIR)
    assert knn_module._chunk_rows(n, None) == 4
    calls = []
    topk = torch.Tensor.topk
    monkeypatch.setattr(torch.Tensor, "topk", lambda t, *a, **kw: calls.append(t.shape) or topk(t, *a, **kw))
    assert_matches_reference(integer_embeddings(n), 5)
    assert max(shape[0] for shape in calls) == 4 and len(calls) >= n // 4


def test_repeated_calls_give_identical_results():
    emb = torch.from_numpy(integer_embeddings())
    first = knn(emb, 7, chunk_size=17)
    second = knn(emb, 7)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_bad_inputs_raise_clear_errors():
    emb = torch.from_numpy(random_embeddings(10, 2))
    with pytest.raises(UserError, match="at least 1"):
        knn(emb, 0)
    with pytest.raises(UserError) as err:
        knn(emb, 2, backend="annoy")
    assert str(err.value) == "--knn_backend 'annoy': unknown kNN backend; use one of torch, faiss"
    bad = emb.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(UserError) as err:
        knn(bad, 2)
    assert str(err.value) == ("embeddings contain NaN or inf: the model's weights have diverged; evaluate "
                              "an earlier checkpoint or retrain with a lower --learning_rate")
    with pytest.raises(ValueError, match="chunk_size"):
        knn(emb, 2, chunk_size=0)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        knn(emb[0], 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    emb = torch.from_numpy(integer_embeddings(500, 4))
    dists, idx = knn(emb.cuda(), 6, chunk_size=100)
    assert idx.device.type == "cuda"
    ref_d, ref_i = knn(emb, 6)
    assert torch.equal(idx.cpu(), ref_i)
    torch.testing.assert_close(dists.cpu(), ref_d)


@pytest.mark.skipif(HAS_FAISS, reason="faiss is installed")
def test_faiss_backend_missing_says_how_to_install():
    with pytest.raises(UserError) as err:
        knn(torch.from_numpy(random_embeddings(10, 2)), 2, backend="faiss")
    assert str(err.value) == ("--knn_backend faiss: faiss is not installed; `pip install faiss-cpu` or use "
                              "--knn_backend torch (same results)")


@pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed (optional: pip install faiss-cpu)")
@pytest.mark.parametrize("make", [random_embeddings, integer_embeddings])
def test_faiss_backend_matches_torch(make):
    emb = torch.from_numpy(make())
    for k in (1, 5, 250):
        dists, idx = knn(emb, k, backend="faiss")
        ref_d, ref_i = knn(emb, k)
        assert torch.equal(idx, ref_i)
        torch.testing.assert_close(dists, ref_d, rtol=1e-4, atol=1e-4)


class FakeFaiss(types.ModuleType):
    """faiss's exhaustive index in numpy, for machines without faiss: exact squared distances,
    with tied candidates listed highest index first (faiss's order among ties is its own), so the
    backend's re-ranking of tied rows, which queries only those rows, runs on every machine."""

    def __init__(self) -> None:
        super().__init__("faiss")

    class IndexFlatL2:
        def __init__(self, dim: int) -> None:
            self.data = np.empty((0, dim))

        def add(self, data: np.ndarray) -> None:
            self.data = data.astype(np.float64)

        def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            sq = ((queries.astype(np.float64)[:, None] - self.data[None]) ** 2).sum(-1)
            high_first = np.broadcast_to(-np.arange(len(self.data)), sq.shape)
            order = np.lexsort((high_first, sq), axis=-1)[:, :k]
            return np.take_along_axis(sq, order, 1).astype(np.float32), order.astype(np.int64)


@pytest.mark.parametrize("make", [random_embeddings, integer_embeddings])
def test_faiss_backend_reranks_ties_without_returning_the_query(make, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", FakeFaiss())
    for k in (1, 5, 199):  # up to every other row
        assert_matches_reference(make(), k, backend="faiss", atol=1e-4)


def test_a_single_row_has_no_neighbours_as_an_empty_int64_result():
    dists, idx = knn(torch.ones(1, 3), 4)
    assert dists.shape == idx.shape == (1, 0) and idx.dtype == torch.int64


def brute_search(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> np.ndarray:
    """Gallery rows by float64 distance, ties by lower index (no query is excluded)."""
    sq = ((queries.double()[:, None] - gallery.double()[None]) ** 2).sum(-1).numpy()
    return np.argsort(sq, axis=1, kind="stable")[:, :k]


def test_searcher_edge_cases_return_empty_results_of_the_right_shape_and_type():
    gallery = torch.from_numpy(integer_embeddings(30, 3))
    for got, shape in ((Searcher(gallery).search(torch.zeros(0, 3), 4), (0, 4)),
                       (Searcher(gallery).search(gallery[:2], 0), (2, 0)),
                       (Searcher(torch.zeros(0, 3)).search(gallery[:2], 4), (2, 0))):
        assert got[0].shape == got[1].shape == shape
        assert (got[0].dtype, got[1].dtype) == (torch.float32, torch.int64)


def test_searcher_finds_the_single_nearest_of_a_single_query():
    gallery = torch.from_numpy(random_embeddings(40, 4))
    dists, idx = search(gallery[7:8] + 0.01, gallery, 1)
    assert idx.tolist() == [[7]] and dists.shape == (1, 1)


def test_searcher_blocks_of_queries_cover_every_query(monkeypatch):
    """More queries than dimensions, one query per block: every block is searched."""
    gallery, queries = torch.from_numpy(random_embeddings(50, 2)), torch.from_numpy(random_embeddings(9, 2, 1))
    monkeypatch.setattr(knn_module, "BLOCK_BYTES", 50 * knn_module.BYTES_PER_PAIR)
    assert np.array_equal(search(queries, gallery, 3)[1].numpy(), brute_search(queries, gallery, 3))


def test_searcher_through_a_faiss_index_gives_the_exact_answer():
    """Candidates from a faiss flat index (FakeFaiss here), re-ranked by exact distance and index."""
    gallery = torch.from_numpy(integer_embeddings(60, 3))
    queries = torch.from_numpy(integer_embeddings(12, 3, seed=1))
    index = FakeFaiss.IndexFlatL2(3)
    index.add(gallery.numpy())
    dists, idx = Searcher(gallery, faiss_index=index).search(queries, 5)
    assert np.array_equal(idx.numpy(), brute_search(queries, gallery, 5))
    assert idx.dtype == torch.int64 and torch.equal(dists, search(queries, gallery, 5)[0])
