"""The built-in synthetic dataset: deterministic, well-formed, varied, and written atomically."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import data.synthetic as synthetic
from common.errors import UserError
from data.synthetic import MARKER, generate_synthetic, item_spec, read_marker

SMALL = {"num_items": 6, "photos_per_item": (2, 4), "image_size": 48}


def file_digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path):
    a = file_digests(generate_synthetic(tmp_path / "a", seed=3, **SMALL))
    b = file_digests(generate_synthetic(tmp_path / "b", seed=3, **SMALL))
    assert a == b and len(a) > SMALL["num_items"]


def test_different_seeds_differ(tmp_path):
    a = file_digests(generate_synthetic(tmp_path / "a", seed=0, **SMALL))
    b = file_digests(generate_synthetic(tmp_path / "b", seed=1, **SMALL))
    shared = set(a) & set(b) - {MARKER}
    assert shared and all(a[name] != b[name] for name in shared)


def test_layout_names_counts_and_marker(tmp_path):
    root = generate_synthetic(tmp_path / "ds", seed=0, **SMALL)
    items = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert items == [f"item_{i:04d}" for i in range(6)]
    total = 0
    for item in items:
        photos = sorted(p.name for p in (root / item).iterdir())
        assert 2 <= len(photos) <= 4
        assert photos == [f"{item}_{n}.jpg" for n in range(len(photos))]
        total += len(photos)
    marker = read_marker(root)
    assert marker["seed"] == 0 and marker["num_items"] == 6 and marker["num_images"] == total
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]          # no temporary folder left


def test_fixed_photo_count(tmp_path):
    root = generate_synthetic(tmp_path / "ds", num_items=3, photos_per_item=5, image_size=32)
    assert [len(list(d.glob("*.jpg"))) for d in sorted(root.iterdir()) if d.is_dir()] == [5, 5, 5]


def test_images_are_rgb_at_requested_size(tmp_path):
    root = generate_synthetic(tmp_path / "ds", **SMALL)
    for path in root.rglob("*.jpg"):
        with Image.open(path) as image:
            assert image.mode == "RGB" and image.size == (48, 48)


def test_photos_of_one_item_differ(tmp_path):
    root = generate_synthetic(tmp_path / "ds", num_items=2, photos_per_item=4, image_size=64)
    for item in ("item_0000", "item_0001"):
        photos = [np.asarray(Image.open(p), np.float32) for p in sorted((root / item).glob("*.jpg"))]
        for i in range(len(photos)):
            for j in range(i + 1, len(photos)):
                assert np.abs(photos[i] - photos[j]).mean() > 5.0


def test_items_share_colours_and_patterns_but_not_whole_looks():
    specs = [item_spec(0, i) for i in range(40)]
    body_colours = [s.colours[0] for s in specs]
    assert len(set(body_colours)) < len(body_colours) / 2       # many items share a main colour
    assert len({s.pattern for s in specs}) == len(synthetic.PATTERNS)
    looks = {(s.kind, s.colours, s.pattern, round(s.frequency, 3), round(s.angle, 3)) for s in specs}
    assert len(looks) == len(specs)                              # yet every item is its own


def test_item_does_not_depend_on_dataset_size(tmp_path):
    small = generate_synthetic(tmp_path / "small", num_items=2, photos_per_item=3, image_size=32)
    large = generate_synthetic(tmp_path / "large", num_items=4, photos_per_item=3, image_size=32)
    assert file_digests(small / "item_0001") == file_digests(large / "item_0001")


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    real_write_item = synthetic._write_item

    def fail_on_third(folder, seed, index, *args):
        if index == 2:
            raise KeyboardInterrupt
        return real_write_item(folder, seed, index, *args)

    monkeypatch.setattr(synthetic, "_write_item", fail_on_third)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(tmp_path / "ds", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_complete_dataset_is_reused_and_stale_one_replaced(tmp_path, monkeypatch):
    root = generate_synthetic(tmp_path / "ds", seed=0, **SMALL)
    monkeypatch.setattr(synthetic, "_write_item", lambda *a: pytest.fail("regenerated"))
    assert generate_synthetic(root, seed=0, **SMALL) == root
    monkeypatch.undo()
    generate_synthetic(root, seed=5, **SMALL)
    assert read_marker(root)["seed"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_foreign_folder_is_never_overwritten(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(UserError, match="not a generated synthetic dataset"):
        generate_synthetic(root, **SMALL)
    assert (root / "holiday.jpg").read_bytes() == b"precious"


def test_corrupt_marker_counts_as_foreign(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / MARKER).write_text(json.dumps(["not", "a", "dict"]))
    with pytest.raises(UserError):
        generate_synthetic(root, **SMALL)


@pytest.mark.parametrize("bad", [{"seed": -1}, {"num_items": 0}, {"photos_per_item": (3, 2)},
                                 {"photos_per_item": 0}, {"image_size": 8}])
def test_bad_arguments_are_user_errors(tmp_path, bad):
    with pytest.raises(UserError):
        generate_synthetic(tmp_path / "ds", **{**SMALL, **bad})
    assert not (tmp_path / "ds").exists()
