"""Augmentation levels: shapes, value ranges, determinism per seed, and how far each one goes."""
from __future__ import annotations

import pytest
import torch

from training.augment import LEVELS, augment


def images(n: int = 8, size: int = 32) -> torch.Tensor:
    """Smooth images with structure, so geometric changes show up in the pixels."""
    ramp = torch.linspace(0, 1, size)
    base = torch.stack([ramp[None].expand(size, size), ramp[:, None].expand(size, size),
                        (ramp[None] * ramp[:, None])])
    return (base[None] * torch.linspace(0.5, 1, n)[:, None, None, None]).contiguous()


@pytest.mark.parametrize("level", LEVELS)
def test_each_level_keeps_shape_range_and_is_deterministic_per_seed(level: str) -> None:
    x = images()
    a = augment(x, torch.Generator().manual_seed(3), level)
    b = augment(x, torch.Generator().manual_seed(3), level)
    c = augment(x, torch.Generator().manual_seed(4), level)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert 0 <= a.min() and a.max() <= 1 and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert torch.equal(a, x) == (level == "none") and torch.equal(a, c) == (level == "none")


def test_strong_changes_images_more_than_light_and_keeps_the_batch_apart() -> None:
    x = images(32)
    light = augment(x, torch.Generator().manual_seed(0), "light")
    strong = augment(x, torch.Generator().manual_seed(0), "strong")
    assert (strong - x).abs().mean() > (light - x).abs().mean()
    assert (strong - x).abs().mean() < 0.35  # the item is still there, not noise
    per_image = (strong - x).abs().mean(dim=(1, 2, 3))
    assert per_image.std() > 0  # every image gets its own parameters


def test_strong_turns_the_hue_by_at_most_three_hundredths_of_a_turn() -> None:
    """Colour identifies products: a flat colour keeps its hue within +-0.03 turn."""
    flat = torch.zeros(32, 3, 16, 16)
    flat[:, 0], flat[:, 1], flat[:, 2] = 0.6, 0.35, 0.3
    out = augment(flat, torch.Generator().manual_seed(1), "strong")
    r, g, b = out.flatten(2).median(dim=2).values.T  # the median ignores an occluder (<= 20 %)
    hue_turns = torch.atan2(3 ** 0.5 * (g - b), 2 * r - g - b) / (2 * torch.pi)
    before = torch.atan2(torch.tensor(3 ** 0.5 * 0.05), torch.tensor(0.5)) / (2 * torch.pi)
    assert (hue_turns - before).abs().max() <= 0.031
    assert (hue_turns - before).abs().max() > 0.005  # it does turn


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown augmentation level 'heavy'"):
        augment(images(), torch.Generator(), "heavy")
