"""Small generated datasets for tests: solid-colour items whose pixels are easy to check."""
from pathlib import Path

from PIL import Image

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]


def make_dataset(root: Path, num_items: int = 5, per_item: int = 3, size: int = 40) -> Path:
    """Item i's images are solid COLOURS[i % 5] so decoded pixels can be checked."""
    for i in range(num_items):
        folder = root / f"item_{i:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_item):
            Image.new("RGB", (size, size + 8 * n), COLOURS[i % len(COLOURS)]).save(folder / f"item_{i:03d}_{n}.png")
    return root

# Flags of a tiny, fast training run (batches of 4 items x 2 images, no augmentation).
TINY = ["--batch_size", "8", "-K", "2", "--no_augment"]
