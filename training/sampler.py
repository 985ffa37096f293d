"""P x K batches: P items, K images each, so every batch holds positives and negatives for mining.

An epoch is every image of every usable item once, in groups of K images of one item, shuffled
and packed P groups to a batch. The order depends on (seed, epoch) only, so a resumed epoch sees
exactly the batches it would have seen, and under DDP every rank computes the same epoch plan
and takes its own disjoint share of it.
"""
from __future__ import annotations

import numpy as np

from common.errors import UserError


class PKSampler:
    """Index batches of ``P * K`` images for one rank of a (possibly distributed) run.

    Items with fewer than 2 images are left out: they cannot give an anchor-positive pair.
    Items with fewer than K images (or whose count is not a multiple of K) fill their last group
    by repeating their own images cyclically, so repeats are as rare as possible; augmentation
    makes the repeated copies differ. Batches are groups of consecutive shuffled groups; an item
    can, rarely, fill two groups of one batch, which is harmless: mining uses labels, and the
    trainer passes each image's dataset row so a repeated image is never its own positive.
    """

    def __init__(self, labels: np.ndarray, items_per_batch: int, images_per_item: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        labels = np.asarray(labels, dtype=np.int64)
        self.p, self.k, self.seed = items_per_batch, images_per_item, seed
        self.rank, self.world_size = rank, world_size
        order = np.argsort(labels, kind="stable")
        starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
        groups = np.split(order, starts[1:]) if len(order) else []
        self.item_images = [g for g in groups if len(g) >= 2]
        self.excluded_items = len(groups) - len(self.item_images)
        num_groups = sum(-(-len(g) // self.k) for g in self.item_images)
        self.num_batches = num_groups // self.p // world_size
        if self.num_batches == 0:
            raise UserError(
                f"training set: {len(self.item_images)} items with >= 2 images make {num_groups} "
                f"groups of K={self.k}, fewer than the {self.p} items x {world_size} process(es) "
                "one step needs; lower --batch_size or --images_per_item, or use more data")

    def __len__(self) -> int:
        return self.num_batches

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches of ``epoch``: ``len(self)`` int64 arrays of P*K dataset rows."""
        rng = np.random.default_rng([self.seed, epoch])
        groups = [np.resize(rng.permutation(images), -(-len(images) // self.k) * self.k)
                  .reshape(-1, self.k) for images in self.item_images]
        groups = np.concatenate(groups)[rng.permutation(sum(len(g) for g in groups))]
        usable = self.num_batches * self.world_size * self.p
        epoch_batches = groups[:usable].reshape(-1, self.p * self.k)
        return list(epoch_batches[self.rank::self.world_size])
