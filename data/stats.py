"""`--dataset_stats`: what is in a dataset folder, before anything is trained on it."""
from __future__ import annotations

from collections import Counter
from typing import Mapping

import numpy as np
from PIL import Image

from data.dataset import ImageSet
from data.index import DatasetIndex


def dataset_stats(index: DatasetIndex, skipped: list[tuple[str, str]],
                  max_size_probe: int = 2000) -> dict:
    """Items, images per item, file types, image sizes (header reads only) and skipped files.

    Sizes come from image headers (no decoding), sampled evenly when there are many files, so
    this stays fast on large datasets.
    """
    per_item = index.images_per_item()
    counts = Counter(per_item.tolist())
    probe = np.linspace(0, len(index) - 1, min(len(index), max_size_probe)).astype(int)
    sizes = Counter(_header_size(index, row) for row in np.unique(probe))
    return {
        "root": str(index.root),
        "items": len(index.items),
        "images": len(index),
        "images_per_item": {"mean": float(per_item.mean()), "mode": counts.most_common(1)[0][0],
                            "min": int(per_item.min()), "max": int(per_item.max())},
        "items_with_one_image": int((per_item < 2).sum()),
        "file_types": dict(Counter(p.rsplit(".", 1)[-1].lower() for p in index.paths).most_common()),
        "image_sizes": {f"{w}x{h}": n for (w, h), n in sizes.most_common(5)},
        "ignored_files": len(index.ignored),
        "skipped_files": [f"{p} ({why})" for p, why in skipped],
    }


def format_split(sets: Mapping[str, ImageSet]) -> str:
    """One line per split (items, images, single-image items), so a user sees what training
    sees and what the held-out numbers are measured on before anything is trained."""
    lines = []
    for name, image_set in sets.items():
        per_item = np.bincount(np.asarray(image_set.labels))
        per_item = per_item[per_item > 0]
        lines.append(f"split {name:<8} {len(per_item):,} items, {len(image_set):,} images, "
                     f"{int((per_item == 1).sum())} single-image item(s)")
    return "\n".join(lines)


def _header_size(index: DatasetIndex, row: int) -> tuple[int, int]:
    try:
        with Image.open(index.root / index.paths[row]) as img:
            return img.size
    except Exception:  # unreadable files are reported as skipped, not here
        return (0, 0)


def format_stats(stats: dict) -> str:
    """The stats as an aligned, human-readable block."""
    ipi = stats["images_per_item"]
    lines = [
        f"dataset        {stats['root']}",
        f"items          {stats['items']}",
        f"images         {stats['images']}",
        f"images/item    mean {ipi['mean']:.2f}, mode {ipi['mode']}, min {ipi['min']}, max {ipi['max']}",
        f"single-image   {stats['items_with_one_image']} item(s) (never used as queries)",
        "file types     " + ", ".join(f"{k}: {v}" for k, v in stats["file_types"].items()),
        "image sizes    " + ", ".join(f"{k}: {v}" for k, v in stats["image_sizes"].items()),
        f"ignored        {stats['ignored_files']} non-image file(s)",
        f"skipped        {len(stats['skipped_files'])} unreadable image(s)",
    ]
    lines += [f"  - {s}" for s in stats["skipped_files"][:20]]
    return "\n".join(lines)
