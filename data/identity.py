"""What data a run was trained on: the dataset's identity, its split, and its training images.

A run folder used to be found by hyperparameters alone, so a run's results could silently belong
to other data. Every run now records:

- the dataset's *name* (its folder's name: ``synthetic``, ``uob_image_set``, ``mydata``...), which
  also names the folder its runs live in;
- a *fingerprint* of its content, built from relative paths and byte sizes (not modification
  times, so a re-extracted or copied dataset is the same dataset) and its *items*, so a change can
  be described ("3 items added: a, b, c");
- its *split*: the pre-split layout, or the eval fraction and split seed;
- a SHA-1 digest per training image (``train_images.sha1``, in ``sha1sum`` format), so evaluating
  on any data can leave out exactly the images the run trained on.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from data.index import DatasetIndex, printable
from common.atomic import atomic_write_text
from common.digest import file_hexdigest

DIGESTS_FILE = "train_images.sha1"
_SHOWN = 5  # item names shown in a change description


@dataclass(frozen=True)
class DataIdentity:
    """A dataset and split as recorded in hparams.json and in every checkpoint (plain values)."""

    name: str
    fingerprint: str
    items: list[str]
    split: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """``synthetic (300 items, split seed 0, 20% held out)`` for messages."""
        return f"{self.name} ({len(self.items)} items, {describe_split(self.split)})"


def dataset_identity(root: Path, indexes: dict[str, DatasetIndex],
                     split: dict[str, Any]) -> DataIdentity:
    """The identity of the dataset at ``root`` whose image files ``indexes`` list.

    ``indexes`` maps a split folder (``train``, ``val``...) or ``all`` (a plain layout) to its
    index; in a pre-split layout items are named ``<split>/<item>``.
    """
    digest = hashlib.sha256()
    items: set[str] = set()
    for part, index in sorted(indexes.items()):
        prefix = "" if part == "all" else f"{part}/"
        items.update(prefix + item for item in index.items)
        for rel in index.paths:
            size = os.stat(index.root / rel).st_size
            digest.update(f"{prefix}{rel}\0{size}\n".encode("utf-8", "surrogateescape"))
    return DataIdentity(name=safe_name(Path(root).resolve().name), fingerprint=digest.hexdigest()[:16],
                        items=sorted(items), split=split)


def safe_name(name: str) -> str:
    """A folder name for ``name``: letters, digits, ``._-``; anything else becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "dataset"


def split_identity(pre_split: bool, eval_fraction: float, split_seed: int) -> dict[str, Any]:
    """The split part of an identity: a kept ``train/`` + ``val|test`` layout, or fraction + seed."""
    if pre_split:
        return {"layout": "pre-split"}
    return {"eval_fraction": eval_fraction, "split_seed": split_seed}


def describe_split(split: dict[str, Any]) -> str:
    if split.get("layout") == "pre-split":
        return "its own train/val split"
    return f"split seed {split.get('split_seed')}, {100 * split.get('eval_fraction', 0):g}% held out"


def describe_change(recorded: dict[str, Any], current: DataIdentity) -> str | None:
    """What differs between a run's recorded identity and the data now (None: the same).

    Example: ``2 items added (item_300, item_301), 1 removed (item_007)``.
    """
    parts = []
    if recorded.get("name") != current.name:
        parts.append(f"another dataset ({recorded.get('name')} -> {current.name})")
    if recorded.get("fingerprint") != current.fingerprint:
        before, now = set(recorded.get("items", [])), set(current.items)
        added, removed = sorted(now - before), sorted(before - now)
        if added:
            parts.append(f"{len(added)} item(s) added ({_names(added)})")
        if removed:
            parts.append(f"{len(removed)} item(s) removed ({_names(removed)})")
        if not added and not removed:
            parts.append("image files added, removed or changed within the same items")
    if recorded.get("split") != current.split:
        parts.append(f"another split ({describe_split(recorded.get('split') or {})} -> "
                     f"{describe_split(current.split)})")
    return ", ".join(parts) or None


def _names(names: list[str]) -> str:
    more = f", ... {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def file_digest(path: str | Path) -> str:
    """SHA-1 of a file's bytes (identifies a copy of an image, whatever its name)."""
    return file_hexdigest(path, "sha1")


def write_digests(path: Path, files: Iterable[str | Path], keep: set[str] = frozenset()) -> None:
    """``<sha1>  <file>`` lines (sha1sum format) of ``files``, plus digests already in ``keep``."""
    lines = {file_digest(f): printable(str(f)) for f in files}
    lines.update({digest: "(trained on earlier data)" for digest in keep - lines.keys()})
    atomic_write_text(path, "".join(f"{d}  {f}\n" for d, f in sorted(lines.items())))


def read_digests(path: Path) -> set[str] | None:
    """The digests of a ``train_images.sha1`` file, or None when the run has none."""
    if not path.is_file():
        return None
    return {line.split(maxsplit=1)[0] for line in path.read_text(encoding="utf-8",
                                                                 errors="replace").splitlines() if line}


def unseen_rows(paths: list[str], digests: set[str]) -> list[int]:
    """Rows of ``paths`` whose content is none of the training images ``digests`` name."""
    return [row for row, path in enumerate(paths) if file_digest(path) not in digests]
