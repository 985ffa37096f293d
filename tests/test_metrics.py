"""Retrieval metrics on hand-computed cases and against a per-query loop; embedding a set."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from common.errors import UserError
from evaluation.embed import embed
from evaluation.metrics import evaluate_retrieval, metrics_from_neighbours, retrieval_metrics
from evaluation.report import format_metrics_table

# Six points on a line, three items (A=0, B=1, C=2). Ranking of the others, ties by lower index:
#   q0 @0 A: 1(1) 2(2) 3(4) 4(7) 5(9)  -> B A B C A   R=2
#   q1 @1 B: 0(1) 2(1) 3(3) 4(6) 5(8)  -> A A B C A   R=1   (0 and 2 tie)
#   q2 @2 A: 1(1) 0(2) 3(2) 4(5) 5(7)  -> B A B C A   R=2   (0 and 3 tie: 0 first)
#   q3 @4 B: 2(2) 1(3) 4(3) 0(4) 5(5)  -> A B C A A   R=1   (1 and 4 tie: 1 first)
#   q4 @7 C: no other C                                     unqueryable
#   q5 @9 A: 4(2) 3(5) 2(7) 1(8) 0(9)  -> C B A B A   R=2
LINE = torch.tensor([[0.0], [1.0], [2.0], [4.0], [7.0], [9.0]])
LINE_LABELS = np.array([0, 1, 0, 1, 2, 0])


def test_points_on_a_line_by_hand():
    m = retrieval_metrics(LINE, LINE_LABELS, k=3)
    assert m["num_queries"] == 5 and m["num_unqueryable"] == 1
    assert m["closest_1"] == 0.0 and m["precision@1"] == 0.0
    # closest[i] counts only queries with R >= i: closest[2] is of q0, q2, q5 (R=2)
    assert m["closest_2"] == pytest.approx(2 / 3)  # q0, q2 (q3, R=1, is not counted)
    assert "closest_3" not in m  # no query has 3 other images of its item
    assert m["in_any@3"] == pytest.approx(1.0)
    # R-precision: q0 1/2, q2 1/2, others 0. MAP@R: q0 and q2 hit at rank 2 only: P(2)/R = 1/4
    assert m["r_precision"] == pytest.approx(1 / 5)
    assert m["map@r"] == pytest.approx(1 / 10)
    assert retrieval_metrics(LINE, LINE_LABELS, k=2)["in_any@2"] == pytest.approx(3 / 5)


def test_metrics_from_neighbours_by_hand():
    neighbours = np.array([[1, 0, 1, 1, 0],   # R=3: hits at ranks 1, 3 -> MAP@R (1 + 2/3)/3, R-prec 2/3
                           [0, 2, 2, 0, 0],   # R=2: hit at rank 2 -> MAP@R (1/2)/2, R-prec 1/2
                           [0, 0, 0, 0, 0]])  # R=0: no partner, left out
    m = metrics_from_neighbours(neighbours, np.array([1, 2, 3]), np.array([3, 2, 0]), k=2)
    assert m == pytest.approx({"closest_1": 0.5, "closest_2": 0.5, "in_any@2": 1.0, "precision@1": 0.5,
                               "map@r": (5 / 9 + 1 / 4) / 2, "r_precision": (2 / 3 + 1 / 2) / 2,
                               "num_queries": 2, "num_unqueryable": 1})


def test_a_perfect_ranking_scores_100_at_every_rank_it_can_fill():
    # items of 2, 3 and 4 images, well apart: every query's R nearest are its own item
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    emb = torch.tensor(labels * 10.0 + np.arange(9) * 0.1, dtype=torch.float32)[:, None]
    m = retrieval_metrics(emb, labels, k=4)
    assert [m[f"closest_{i}"] for i in (1, 2, 3)] == [1.0, 1.0, 1.0]  # 9, 7 and 4 queries counted
    assert "closest_4" not in m  # nobody has 4 other images: "-" in the table, never 0.0
    assert format_metrics_table({"m": m}, 4).splitlines()[5].split() == ["closest[4]", "-"]


def test_duplicates_tie_and_lower_index_wins():
    # all four images identical: every query ranks the other three by index
    #   q0: 1 2 3 -> B A B   q1: 0 2 3 -> A A B   q2: 0 1 3 -> A B B   q3: 0 1 2 -> A B A
    m = retrieval_metrics(torch.zeros(4, 3), np.array([0, 1, 0, 1]), k=3)
    assert m["closest_1"] == pytest.approx(1 / 4)
    assert "closest_2" not in m and "closest_3" not in m  # no item has 2 other images
    assert m["in_any@3"] == 1.0 and m["map@r"] == m["r_precision"] == pytest.approx(1 / 4)


def test_k_larger_than_the_gallery():
    # positions 0, 1, 5, 6; items A A B B: each query's nearest is its partner, then the other two
    m = retrieval_metrics(torch.tensor([[0.0], [1.0], [5.0], [6.0]]), [0, 0, 1, 1], k=10)
    assert m["closest_1"] == 1.0  # each item has one other image: closest[2..10] are not counted
    assert not [key for key in m if key.startswith("closest_") and key != "closest_1"]
    assert m["in_any@10"] == 1.0 and m["map@r"] == 1.0 and m["r_precision"] == 1.0


def test_no_queryable_image_is_a_user_error():
    message = ("evaluation set: no item has 2 or more images, so no image can be queried; use a dataset "
               "(or a larger eval split, --eval_fraction) with several images per item")
    for emb, labels in ((torch.randn(3, 2), np.array([0, 1, 2])), (torch.zeros(0, 2), np.zeros(0))):
        with pytest.raises(UserError) as err:
            retrieval_metrics(emb, labels)
        assert str(err.value) == message
    with pytest.raises(UserError, match="at least 1"):
        retrieval_metrics(LINE, LINE_LABELS, k=0)


def loop_reference(emb: np.ndarray, labels: np.ndarray, k: int) -> dict[str, float]:
    """The definitions one query at a time, as the original computed them (without its defects)."""
    rows = []
    for q in range(len(emb)):
        others = [j for j in range(len(emb)) if j != q]
        dist = {j: float(np.sum((emb[q].astype(np.float64) - emb[j]) ** 2)) for j in others}
        ranked = sorted(others, key=lambda j: (dist[j], j))
        rel = [labels[j] == labels[q] for j in ranked]
        r = sum(rel)
        if r == 0:
            continue
        hits = rel[:r]
        ap = sum(sum(hits[:i + 1]) / (i + 1) for i in range(r) if hits[i]) / r
        closest = [(rel[i] if i < len(rel) else False) if i < r else np.nan for i in range(k)]
        rows.append(closest + [any(rel[:k]), ap, sum(hits) / r])
    table = np.nanmean(np.array(rows, dtype=np.float64), 0)
    out = {f"closest_{i + 1}": table[i] for i in range(k)}
    out.update({f"in_any@{k}": table[k], "map@r": table[k + 1], "r_precision": table[k + 2]})
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_random_sets_match_a_per_query_loop(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 25, size=120)  # uneven items, some singletons
    emb = (rng.normal(size=(25, 8))[labels] + rng.normal(size=(120, 8))).astype(np.float32)
    m = retrieval_metrics(torch.from_numpy(emb), torch.from_numpy(labels), k=5)
    assert {key: m[key] for key in loop_reference(emb, labels, 5)} == pytest.approx(loop_reference(emb, labels, 5))
    assert m["num_queries"] + m["num_unqueryable"] == 120


def test_results_are_plain_json_numbers():
    m = retrieval_metrics(LINE, LINE_LABELS, k=3)
    assert all(type(v) in (float, int) for v in m.values())
    assert json.loads(json.dumps(m)) == m
    assert all(0.0 <= v <= 1.0 for key, v in m.items() if not key.startswith("num_"))


class FakeImageSet:
    """The part of data.dataset.ImageSet that embedding reads."""

    def __init__(self, n: int, size: int = 8, seed: int = 0):
        self.images = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        self.labels = np.arange(n) // 2
        self.items = [f"item{i}" for i in range(n // 2 + 1)]
        self.paths = [f"{i}.jpg" for i in range(n)]
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices):
        return self.images[np.asarray(indices)]


class TinyNet(nn.Module):
    """Batch norm and dropout: outputs depend on the batch and on chance unless in eval mode."""

    emb_dim = 4

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(5, self.emb_dim))

    def forward(self, x):
        return self.head(self.features(x))


def test_embed_rows_follow_the_set_in_eval_mode():
    torch.manual_seed(0)
    model, images = TinyNet(), FakeImageSet(7)
    model.train()
    out = embed(model, images, batch_size=3)  # 3 + 3 + 1: the last batch is short
    assert out.shape == (7, 4) and out.dtype == torch.float32 and out.device.type == "cpu"
    model.eval()
    with torch.no_grad():
        one_by_one = torch.cat([model(torch.from_numpy(images.images[i:i + 1]).permute(0, 3, 1, 2).float() / 255)
                                for i in range(7)])
    torch.testing.assert_close(out, one_by_one)


def test_embed_restores_each_modules_mode():
    model = TinyNet()
    model.train()
    model.features[1].eval()  # e.g. a frozen backbone's batch norm kept in eval mode on purpose
    embed(model, FakeImageSet(4))
    assert model.training and model.head.training and not model.features[1].training
    model.eval()
    embed(model, FakeImageSet(4))
    assert not any(m.training for m in model.modules())


def test_embed_restores_mode_after_an_error():
    class Broken(FakeImageSet):
        def batch(self, indices):
            raise OSError("disk gone")

    model = TinyNet().train()
    with pytest.raises(OSError):
        embed(model, Broken(4))
    assert model.training


def test_embed_empty_set():
    assert embed(TinyNet(), FakeImageSet(0)).shape == (0, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_embed_on_cuda_matches_cpu():
    torch.manual_seed(0)
    model, images = TinyNet(), FakeImageSet(9)
    on_cpu = embed(model, images, batch_size=4)
    on_gpu = embed(model, images, batch_size=4, device="cuda")
    assert on_gpu.device.type == "cpu" and on_gpu.dtype == torch.float32
    torch.testing.assert_close(on_gpu, on_cpu, rtol=0.05, atol=0.05)  # autocast: bf16/fp16 inside


def test_defaults_are_the_original_evaluation_score_with_the_torch_backend():
    """No k: the original project's "evaluation score" is in_any@5, searched by the torch backend."""
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    emb = torch.from_numpy(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32))
    assert retrieval_metrics(emb, labels) == retrieval_metrics(emb, labels, k=5)
    assert "in_any@5" in evaluate_retrieval(emb, labels).metrics


def test_k_of_one_is_allowed():
    m = retrieval_metrics(LINE, LINE_LABELS, k=1)
    assert m["in_any@1"] == m["closest_1"] == 0.0


def test_neighbour_lists_returned_are_those_the_metrics_used():
    """evaluate.py draws these: each query's others nearest first, ties by lower index (see LINE)."""
    result = evaluate_retrieval(LINE, LINE_LABELS, k=3)
    assert result.indices[:, :3].tolist() == [[1, 2, 3], [0, 2, 3], [1, 0, 3], [2, 1, 4], [5, 3, 2], [4, 3, 2]]
    assert result.distances[0, :3].tolist() == [1.0, 2.0, 4.0]


def test_labels_as_a_column_give_the_same_metrics():
    column = torch.from_numpy(LINE_LABELS)[:, None]
    assert retrieval_metrics(LINE, column, k=3) == retrieval_metrics(LINE, LINE_LABELS, k=3)


def test_mismatched_inputs_are_programming_errors_naming_both_sizes():
    with pytest.raises(ValueError) as err:
        retrieval_metrics(LINE, LINE_LABELS[:5])
    assert str(err.value) == "6 embeddings but 5 labels"
    with pytest.raises(ValueError) as err:
        metrics_from_neighbours(np.zeros((2, 2)), np.zeros(2), np.array([3, 1]), k=2)
    assert str(err.value) == "2 neighbours per query, but R is up to 3"
