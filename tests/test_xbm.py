"""Cross-batch memory: what it remembers, the triplets it adds, and exact resume with it on."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from tests.test_training import fresh_model, run, tiny_config
from training.loss import triplet_loss
from training.xbm import CrossBatchMemory


def test_memory_keeps_the_most_recent_embeddings() -> None:
    memory = CrossBatchMemory(size=5)
    assert memory.loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 1]), 0.2, "semihard") is None
    for start in range(0, 8, 2):
        ids = torch.tensor([start, start + 1])
        memory.add(torch.full((2, 3), float(start)), ids, ids)
    assert memory.filled == 5
    assert sorted(memory.labels.tolist()) == [3, 4, 5, 6, 7]
    memory.reset()
    assert memory.loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 1]), 0.2, "semihard") is None


def test_memory_triplets_are_the_batch_mined_against_what_it_remembers() -> None:
    """Anchors of the batch with positives and negatives from the memory: with batch-hard mining,
    the loss equals batch-hard on (batch + memory) restricted to those anchors and partners."""
    torch.manual_seed(0)
    old, new = F.normalize(torch.randn(8, 4), dim=1), F.normalize(torch.randn(6, 4), dim=1)
    old_labels, new_labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.tensor([0, 1, 2, 3, 4, 4])
    memory = CrossBatchMemory(size=16)
    memory.add(old, old_labels, torch.arange(8))
    out = memory.loss(new, new_labels, torch.arange(8, 14), 0.5, "hard")
    d = torch.cdist(new, old)
    same = new_labels[:, None] == old_labels[None]
    has_pos = same.any(1)
    expected = torch.relu(d.masked_fill(~same, -1).max(1).values
                          - d.masked_fill(same, 9).min(1).values + 0.5)[has_pos].mean()
    torch.testing.assert_close(out.loss, expected)
    assert int(out.mined) == int(has_pos.sum()) == 4  # item 4 has no positive in the memory
    assert triplet_loss(new, new_labels, 0.5, "hard").loss.shape == out.loss.shape


def test_training_with_the_memory_resumes_exactly(tmp_path: Path) -> None:
    straight = fresh_model()
    run(tmp_path / "a", tiny_config(epochs=4, xbm=16), straight)
    first = run(tmp_path / "b", tiny_config(epochs=2, xbm=16))
    resumed = fresh_model(seed=5)
    result = run(tmp_path / "b", tiny_config(epochs=4, xbm=16), resumed)
    assert result.run_dir == first.run_dir and result.run_dir.name.endswith("_xbm_16")
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_a_remembered_copy_of_the_anchors_own_image_is_no_positive() -> None:
    """The sampler repeats images, so the memory can hold the anchor's own image (same dataset
    row) from an earlier batch: at distance ~0 it would be a free positive."""
    memory = CrossBatchMemory(size=8)
    image = torch.tensor([[1.0, 0.0]])
    memory.add(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]), torch.tensor([0, 0, 1]),
               torch.tensor([7, 8, 9]))
    out = memory.loss(image, torch.tensor([0]), torch.tensor([7]), 0.2, "all")
    assert int(out.mined) == 1  # (row 8, row 9) only; the copy of row 7 would make it 2
