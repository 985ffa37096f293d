"""Mining and loss against a brute-force enumeration of every (anchor, positive, negative)."""
import itertools

import pytest
import torch

from training.loss import pairwise_distances, triplet_loss
from training.xbm import CrossBatchMemory

MARGIN = 0.3


def brute_force(d: torch.Tensor, labels: list[int], mining: str,
                rows: list[int] | None = None, margin: float = MARGIN) -> tuple[torch.Tensor, int, int]:
    """Reference: enumerate triplets explicitly (B^3), as the definitions say. A pair of two
    batch positions holding the same dataset row is no positive."""
    b = len(labels)
    rows = rows or list(range(b))
    pairs = [(a, p) for a, p in itertools.permutations(range(b), 2)
             if labels[a] == labels[p] and rows[a] != rows[p]]
    negatives = {a: [n for n in range(b) if labels[n] != labels[a]] for a in range(b)}
    if mining == "semihard":
        losses = []
        for a, p in pairs:
            if not negatives[a]:
                continue
            farther = [n for n in negatives[a] if d[a, n] > d[a, p]]
            # TensorFlow's rule: the closest farther negative, else the farthest negative
            n = min(farther, key=lambda n: d[a, n].item()) if farther else \
                max(negatives[a], key=lambda n: d[a, n].item())
            losses.append(torch.relu(d[a, p] - d[a, n] + margin))
        kept = losses
    elif mining == "hard":
        losses = []
        for a in range(b):
            ps = [p for x, p in pairs if x == a]
            if ps and negatives[a]:
                hp = torch.stack([d[a, p] for p in ps]).max()
                hn = torch.stack([d[a, n] for n in negatives[a]]).min()
                losses.append(torch.relu(hp - hn + margin))
        kept = losses
    else:
        losses = [torch.relu(d[a, p] - d[a, n] + margin) for a, p in pairs for n in negatives[a]]
        kept = [x for x in losses if x > 0]
    active = sum(int(x > 0) for x in losses)
    loss = torch.stack(kept).mean() if kept else d.sum() * 0
    return loss, active, len(losses)


LABEL_SETS = {
    "pk": [i // 4 for i in range(24)],                       # P=6 items x K=4
    "uneven": [0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 4, 4, 5, 5, 5],  # sizes 2..5, one singleton
    "repeated_item": [0, 0, 1, 1, 0, 0, 2, 2, 3, 3],          # an item in two groups of a batch
}


@pytest.mark.parametrize("mining", ["semihard", "hard", "all"])
@pytest.mark.parametrize("labels_name", sorted(LABEL_SETS))
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force(mining: str, labels_name: str, seed: int) -> None:
    labels = LABEL_SETS[labels_name]
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(labels) + 1, 5, generator=gen) * 0.4
    emb = centres[labels] + torch.randn(len(labels), 5, generator=gen) * 0.3  # loose clusters
    emb_ref = emb.clone().requires_grad_(True)
    emb = emb.requires_grad_(True)

    out = triplet_loss(emb, torch.tensor(labels), MARGIN, mining)
    out.loss.backward()
    ref_loss, ref_active, ref_mined = brute_force(pairwise_distances(emb_ref), labels, mining)
    ref_loss.backward()

    assert ref_active > 0 and (mining == "hard" or ref_active < ref_mined), "want easy and hard triplets"
    assert out.loss.item() == pytest.approx(ref_loss.item(), rel=1e-5, abs=1e-6)
    assert (out.active.item(), out.mined.item()) == (ref_active, ref_mined)
    torch.testing.assert_close(emb.grad, emb_ref.grad, rtol=1e-4, atol=1e-6)


def fallback_pairs(d: torch.Tensor, labels: list[int]) -> int:
    """Anchor-positive pairs with no negative farther than the positive (semi-hard's fallback)."""
    return sum(1 for a, p in itertools.permutations(range(len(labels)), 2)
               if labels[a] == labels[p] and not any(d[a, n] > d[a, p] for n in range(len(labels))
                                                     if labels[n] != labels[a]))


@pytest.mark.parametrize("seed", range(5))
def test_semihard_fallback_is_the_farthest_negative_on_random_batches(seed: int) -> None:
    """Wide clusters put some positives beyond every negative; those pairs must use the farthest
    negative (TensorFlow's semi-hard rule), not the hardest one."""
    gen = torch.Generator().manual_seed(seed)
    labels = [i // 4 for i in range(16)]
    emb = (torch.randn(4, 3, generator=gen) * 0.3)[labels] + torch.randn(16, 3, generator=gen)
    emb_ref = emb.clone().requires_grad_(True)
    emb.requires_grad_(True)
    out = triplet_loss(emb, torch.tensor(labels), MARGIN, "semihard")
    ref_loss, ref_active, _ = brute_force(pairwise_distances(emb_ref), labels, "semihard")
    assert fallback_pairs(pairwise_distances(emb_ref).detach(), labels) > 0, "batch must hold fallback pairs"
    assert out.loss.item() == pytest.approx(ref_loss.item(), rel=1e-5, abs=1e-6)
    assert out.active.item() == ref_active
    out.loss.backward()
    ref_loss.backward()
    torch.testing.assert_close(emb.grad, emb_ref.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mining", ["semihard", "hard", "all"])
def test_a_repeated_row_is_not_its_own_positive(mining: str) -> None:
    """The sampler repeats images of small items (rows 0 and 1 appear twice here): the two copies
    are identical, distance ~0, and must not count as an anchor-positive pair."""
    rows = [0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    gen = torch.Generator().manual_seed(7)
    images = torch.randn(10, 5, generator=gen)
    emb = images[rows].clone().requires_grad_(True)
    emb_ref = emb.detach().clone().requires_grad_(True)
    out = triplet_loss(emb, torch.tensor(labels), MARGIN, mining, torch.tensor(rows))
    ref_loss, ref_active, ref_mined = brute_force(pairwise_distances(emb_ref), labels, mining, rows)
    without_rows = triplet_loss(emb.detach(), torch.tensor(labels), MARGIN, mining)
    assert (out.active.item(), out.mined.item()) == (ref_active, ref_mined)
    assert out.loss.item() == pytest.approx(ref_loss.item(), rel=1e-5, abs=1e-6)
    if mining != "hard":  # batch-hard looks at the farthest positive only: copies never win it
        assert without_rows.mined.item() > ref_mined, "ignoring rows would count the copies as pairs"
    out.loss.backward()
    ref_loss.backward()
    # the copies tie exactly, so which copy gets a gradient is arbitrary: compare per image
    per_image = [torch.zeros(10, 5).index_add_(0, torch.tensor(rows), g) for g in (emb.grad, emb_ref.grad)]
    torch.testing.assert_close(*per_image, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mining", ["semihard", "hard", "all"])
def test_exact_ties_follow_the_definitions(mining: str) -> None:
    """Points on a line at whole-number positions have exact distances, so some negatives lie
    exactly as far as the positive (semi-hard wants strictly farther) and some exactly at
    positive + margin (zero loss: not an active triplet)."""
    positions = [0, 2, -2, 3, 5, 7]
    labels = [0, 0, 1, 2, 2, 1]
    emb = torch.tensor([[float(x), 0.0] for x in positions])
    out = triplet_loss(emb, torch.tensor(labels), 1.0, mining)
    ref_loss, ref_active, ref_mined = brute_force(pairwise_distances(emb), labels, mining, margin=1.0)
    assert out.loss.item() == pytest.approx(ref_loss.item(), abs=1e-6)
    assert (out.active.item(), out.mined.item()) == (ref_active, ref_mined)


@pytest.mark.parametrize("mining", ["semihard", "hard", "all"])
def test_anchors_with_a_single_negative_are_mined(mining: str) -> None:
    labels = [0, 0, 0, 0, 1]          # items 0's images each have exactly one negative
    emb = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 0.4], [0.3, 0.3], [0.2, 0.1]])
    out = triplet_loss(emb, torch.tensor(labels), MARGIN, mining)
    ref_loss, ref_active, ref_mined = brute_force(pairwise_distances(emb), labels, mining)
    assert ref_active > 0
    assert out.loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    assert (out.active.item(), out.mined.item()) == (ref_active, ref_mined)


def test_pairwise_distances_are_euclidean_with_finite_gradient() -> None:
    emb = torch.randn(10, 7, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    d = pairwise_distances(emb)
    torch.testing.assert_close(d.fill_diagonal_(0), torch.cdist(emb, emb), atol=1e-5, rtol=1e-5)
    pairwise_distances(emb).sum().backward()
    assert torch.isfinite(emb.grad).all()


@pytest.mark.parametrize("mining", ["semihard", "hard", "all"])
def test_loss_is_float32_under_autocast(mining: str) -> None:
    emb = torch.randn(16, 8).bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = triplet_loss(emb, torch.arange(16) // 4, MARGIN, mining)
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert torch.isfinite(emb.grad.float()).all()


@pytest.mark.parametrize("mining", ["semihard", "all"])
def test_large_batch_needs_no_cubic_memory(mining: str) -> None:
    """B=1024 would need 1.1e9 entries (4 GB) as a B^3 tensor; O(B^2) runs in well under a second."""
    emb = torch.randn(1024, 16, requires_grad=True)
    out = triplet_loss(emb, torch.arange(1024) // 4, MARGIN, mining)
    out.loss.backward()
    assert out.mined.item() > 0 and torch.isfinite(emb.grad).all()


def test_single_item_batch_gives_zero_loss_with_gradient_graph() -> None:
    emb = torch.randn(4, 3, requires_grad=True)
    for mining in ("semihard", "hard", "all"):
        out = triplet_loss(emb, torch.zeros(4, dtype=torch.long), MARGIN, mining)
        out.loss.backward()
        assert out.loss.item() == 0 and out.mined.item() == 0


def test_batch_all_with_a_single_active_triplet_gives_that_triplets_loss() -> None:
    """Hand-computed: a = (0, 0), p = (1, 0) of one item; n1 = (0, -1.1), n2 = (0, -1.4) of another.
    Only (a, p, n1) is inside the margin: 1 + 0.3 - 1.1 = 0.2, and batch-all averages over the
    active triplets, so the loss is 0.2 itself."""
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, -1.1], [0.0, -1.4]])
    out = triplet_loss(emb, torch.tensor([0, 0, 1, 1]), MARGIN, "all")
    assert int(out.active) == 1 and int(out.mined) == 8
    assert out.loss.item() == pytest.approx(0.2, abs=1e-5)


@pytest.mark.parametrize("mining", ["semihard", "all"])
def test_mining_against_a_memory_as_large_as_the_batch_uses_each_anchors_own_negatives(mining: str) -> None:
    """The cross-batch memory mines a (batch x memory) distance matrix. When the memory holds as
    many embeddings as the batch, the matrix is square but its rows and columns are different
    images, so each anchor's negative count must come from its own row (items of unequal sizes
    make the counts differ)."""
    gen = torch.Generator().manual_seed(0)
    batch_labels, memory_labels = [0, 0, 1, 2, 2, 2], [0, 1, 1, 1, 2, 3]
    batch, remembered = torch.randn(6, 3, generator=gen), torch.randn(6, 3, generator=gen)
    memory = CrossBatchMemory(size=6)
    memory.add(remembered, torch.tensor(memory_labels), torch.arange(6, 12))
    out = memory.loss(batch, torch.tensor(batch_labels), torch.arange(6), MARGIN, mining)

    d = torch.cdist(batch, remembered)
    losses = []
    for a, p in itertools.product(range(6), range(6)):
        if batch_labels[a] != memory_labels[p]:
            continue
        negatives = [d[a, n] for n in range(6) if memory_labels[n] != batch_labels[a]]
        if mining == "semihard":
            farther = [x for x in negatives if x > d[a, p]]
            losses.append(torch.relu(d[a, p] - (min(farther) if farther else max(negatives)) + MARGIN))
        else:
            losses += [torch.relu(d[a, p] - x + MARGIN) for x in negatives]
    active = [x for x in losses if x > 0]
    expected = torch.stack(losses).mean() if mining == "semihard" else torch.stack(active).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert (int(out.active), int(out.mined)) == (len(active), len(losses))
