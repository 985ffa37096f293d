"""P x K sampler: batch shape, determinism by (seed, epoch), coverage, DDP shares, bad sizes."""
import numpy as np
import pytest

from common.errors import UserError
from training.config import TrainConfig
from training.sampler import PKSampler


def labels_of(sizes: list[int]) -> np.ndarray:
    """Labels for items with the given image counts, shuffled so rows are not grouped by item."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return labels[np.random.default_rng(9).permutation(len(labels))]


def test_batches_are_p_groups_of_k_images_of_one_item() -> None:
    labels = labels_of([4] * 8 + [6, 7, 9])
    sampler = PKSampler(labels, items_per_batch=3, images_per_item=4, seed=0)
    batches = sampler.batches(epoch=1)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        assert batch.shape == (12,) and batch.dtype == np.int64
        groups = labels[batch].reshape(3, 4)
        assert (groups == groups[:, :1]).all()


def test_epoch_covers_every_image_once_when_groups_fill_batches() -> None:
    labels = labels_of([4] * 8)
    batches = PKSampler(labels, 4, 4, seed=3).batches(epoch=5)
    assert sorted(np.concatenate(batches)) == list(range(32))


def test_order_depends_on_seed_and_epoch_only() -> None:
    labels = labels_of([5, 3, 8, 4, 4, 6, 2, 7])
    a = PKSampler(labels, 2, 4, seed=1)
    b = PKSampler(labels, 2, 4, seed=1)
    assert all((x == y).all() for x, y in zip(a.batches(3), b.batches(3)))
    assert any((x != y).any() for x, y in zip(a.batches(3), a.batches(4)))
    assert any((x != y).any() for x, y in zip(a.batches(3), PKSampler(labels, 2, 4, seed=2).batches(3)))


def test_singletons_are_excluded_and_small_items_repeat_their_own_images() -> None:
    labels = labels_of([1, 1, 3, 2, 4])
    sampler = PKSampler(labels, 3, 4, seed=0)
    assert sampler.excluded_items == 2
    batch = sampler.batches(1)[0]
    singletons = np.flatnonzero(np.isin(labels, [0, 1]))
    assert not np.isin(batch, singletons).any()
    for group in batch.reshape(3, 4):
        item_rows = np.flatnonzero(labels == labels[group[0]])
        assert set(group) == set(item_rows)  # all of its images, repeats only to fill K


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_disjoint_equal_shares_of_the_same_epoch(world_size: int) -> None:
    labels = labels_of([4] * 26)
    single = PKSampler(labels, 2, 4, seed=0).batches(2)
    shares = [PKSampler(labels, 2, 4, seed=0, rank=r, world_size=world_size).batches(2)
              for r in range(world_size)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == 13 // world_size
    rows = np.concatenate([np.concatenate(s) for s in shares])
    assert len(np.unique(rows)) == len(rows)
    assert set(rows) <= set(np.concatenate(single))


def test_too_little_data_for_one_step_is_a_user_error() -> None:
    with pytest.raises(UserError) as err:
        PKSampler(labels_of([4, 4, 1]), 3, 4, seed=0, world_size=1)
    assert str(err.value) == ("training set: 2 items with >= 2 images make 2 groups of K=4, fewer than "
                              "the 3 items x 1 process(es) one step needs; lower --batch_size or "
                              "--images_per_item, or use more data")


@pytest.mark.parametrize("batch_size,k", [(30, 4), (4, 4), (10, 1)])
def test_batch_size_must_be_p_times_k(batch_size: int, k: int) -> None:
    flag = "--images_per_item" if k < 2 else "--batch_size"
    with pytest.raises(UserError, match=flag):
        TrainConfig(model="simple_net", batch_size=batch_size, images_per_item=k)


def test_default_batch_is_16_items_of_4_images() -> None:
    assert TrainConfig(model="simple_net").items_per_batch == 16
