"""Small generated datasets for tests: solid-colour items whose pixels are easy to check."""
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]


def make_dataset(root: Path, num_items: int = 5, per_item: int = 3, size: int = 40) -> Path:
    """Item i's images are solid COLOURS[i % 5] so decoded pixels can be checked; one corner pixel
    differs per item, so no two items' files are byte-identical copies of each other (evaluation
    leaves out images whose content a run trained on)."""
    for i in range(num_items):
        folder = root / f"item_{i:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_item):
            image = Image.new("RGB", (size, size + 8 * n), COLOURS[i % len(COLOURS)])
            image.putpixel((0, 0), (i % 256, i // 256 % 256, 7))
            image.save(folder / f"item_{i:03d}_{n}.png")
    return root


def make_noise_dataset(root: Path, num_items: int = 20, per_item: int = 3, size: int = 24,
                       seed: int = 0) -> Path:
    """Every image random pixels: held-out items cannot be told apart, so retrieval scores sit
    well below 100 % and differ between k = 3 and k = 5, which solid colours never do."""
    rng = np.random.default_rng(seed)
    for i in range(num_items):
        folder = root / f"item_{i:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_item):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"item_{i:03d}_{n}.png")
    return root

# Flags of a tiny, fast training run (batches of 4 items x 2 images, no augmentation).
TINY = ["--batch_size", "8", "-K", "2", "--no_augment"]
