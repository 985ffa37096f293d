"""Index, decode, cache and split: the path from a folder of item folders to ImageSets."""

import shutil

import numpy as np
import pytest
from PIL import Image

from common.errors import UserError
from data.cache import build_or_load_cache
from data.index import index_folder
from data.splits import describe_skipped, load_splits, split_by_item
from data.stats import dataset_stats, format_stats
from tests.datasets import COLOURS, make_dataset


def test_index_ignores_non_images_hidden_files_and_outside_symlinks(tmp_path):
    root = make_dataset(tmp_path / "ds", num_items=3, per_item=2)
    (root / "item_000" / "notes.txt").write_text("not an image")
    (root / "item_000" / ".DS_Store").write_bytes(b"\0")
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    (root / "item_001" / "link.png").symlink_to(outside)
    index = index_folder(root)
    assert len(index) == 6
    assert index.items == ["item_000", "item_001", "item_002"]
    assert index.images_per_item().tolist() == [2, 2, 2]
    assert "item_001/link.png" in index.ignored and "item_000/notes.txt" in index.ignored


@pytest.mark.parametrize("setup, fragment", [
    (lambda p: p / "missing", "dataset folder not found"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no images found"),
])
def test_index_missing_or_empty_folder_is_a_clear_error(tmp_path, setup, fragment):
    with pytest.raises(UserError, match=fragment):
        index_folder(setup(tmp_path))


def test_split_is_by_item_seeded_and_disjoint(tmp_path):
    index = index_folder(make_dataset(tmp_path / "ds", num_items=40, per_item=2))
    train, evaluation = split_by_item(index, 0.2, seed=0)
    train_items = set(index.labels[train].tolist())
    eval_items = set(index.labels[evaluation].tolist())
    assert 3 <= len(eval_items) <= 14 and not train_items & eval_items
    assert len(train) + len(evaluation) == len(index)
    again, _ = split_by_item(index, 0.2, seed=0)
    other, _ = split_by_item(index, 0.2, seed=1)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def eval_items(root, seed=0):
    index = index_folder(root)
    return {index.items[label] for label in index.labels[split_by_item(index, 0.2, seed)[1]]}


def test_adding_or_removing_items_moves_no_other_item_across(tmp_path):
    root = make_dataset(tmp_path / "ds", num_items=60, per_item=2)
    before = eval_items(root)
    make_dataset(tmp_path / "more", num_items=61, per_item=2)
    (tmp_path / "more" / "item_060").rename(root / "item_060")  # one item folder added
    after = eval_items(root)
    assert after - {"item_060"} == before
    removed = set(sorted(before)[:2]) | {"item_001", "item_002"}  # eval and training items
    for name in removed:
        shutil.rmtree(root / name)
    assert eval_items(root) == after - removed


def test_tiny_dataset_still_gets_an_eval_item_and_two_training_items(tmp_path):
    index = index_folder(make_dataset(tmp_path / "ds", num_items=3, per_item=2))
    for seed in range(20):
        train, evaluation = split_by_item(index, 0.2, seed)
        assert len(set(index.labels[evaluation])) >= 1 and len(set(index.labels[train])) >= 2


def test_cache_holds_decoded_pixels_and_is_reused_until_the_source_changes(tmp_path):
    root = make_dataset(tmp_path / "ds", num_items=3, per_item=2)
    cache_dir = tmp_path / "cache"
    first = build_or_load_cache(index_folder(root), 16, cache_dir, progress=False)
    assert first.images.shape == (6, 16, 16, 3)
    assert tuple(first.images[0, 8, 8]) == COLOURS[0] and tuple(first.images[2, 8, 8]) == COLOURS[1]
    files = sorted(p.name for p in cache_dir.iterdir())
    second = build_or_load_cache(index_folder(root), 16, cache_dir, progress=False)
    assert isinstance(second.images, np.memmap) and sorted(p.name for p in cache_dir.iterdir()) == files
    Image.new("RGB", (40, 40), (0, 0, 0)).save(root / "item_000" / "item_000_9.png")
    third = build_or_load_cache(index_folder(root), 16, cache_dir, progress=False)
    assert third.images.shape[0] == 7
    assert len(list(cache_dir.glob("*.npy"))) == 1  # the stale cache was replaced
    build_or_load_cache(index_folder(root), 24, cache_dir, progress=False)
    assert len(list(cache_dir.glob("*.npy"))) == 2  # other sizes are kept


def test_unreadable_images_are_skipped_counted_and_named(tmp_path):
    root = make_dataset(tmp_path / "ds", num_items=3, per_item=3)
    (root / "item_001" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    splits = load_splits(root, 16, tmp_path / "cache", progress=False)
    assert sum(len(s) for s in splits.sets.values()) == 9
    assert [p for p, _ in splits.skipped] == ["item_001/broken.jpg"]
    message = describe_skipped(splits.skipped, root)
    assert "skipped 1 unreadable image" in message and "item_001/broken.jpg" in message


def test_load_splits_gives_disjoint_item_sets_with_matching_pixels(tmp_path):
    root = make_dataset(tmp_path / "ds", num_items=10, per_item=2)
    splits = load_splits(root, 16, tmp_path / "cache", split_seed=3, progress=False)
    train, evaluation = splits.sets["train"], splits.sets["eval"]
    assert not set(train.items) & set(evaluation.items)
    for image_set in (train, evaluation):
        pixels = image_set.batch(np.arange(len(image_set)))
        for row, label in enumerate(image_set.labels):
            item_number = int(image_set.items[label].split("_")[1])
            assert tuple(pixels[row, 8, 8]) == COLOURS[item_number % 5]


def test_big_ims_reads_files_per_batch_and_matches_the_cache(tmp_path):
    root = make_dataset(tmp_path / "ds", num_items=4, per_item=2)
    cached = load_splits(root, 16, tmp_path / "cache", progress=False).sets["train"]
    direct = load_splits(root, 16, tmp_path / "cache2", big_ims=True, progress=False).sets["train"]
    assert not (tmp_path / "cache2").exists()
    assert np.array_equal(cached.batch([0, 1]), direct.batch([0, 1]))


def test_pre_split_layout_keeps_its_split(tmp_path):
    make_dataset(tmp_path / "ds" / "train", num_items=3)
    make_dataset(tmp_path / "ds" / "test", num_items=2)
    splits = load_splits(tmp_path / "ds", 16, tmp_path / "cache", progress=False)
    assert sorted(splits.sets) == ["test", "train"]
    assert len(splits.pick_eval(("val", "test"))) == 6
    with pytest.raises(UserError, match="--split val"):
        splits.pick_eval(("val",), override="val")


def test_dataset_stats_report(tmp_path):
    root = make_dataset(tmp_path / "ds", num_items=3, per_item=2)
    (root / "solo").mkdir()
    Image.new("RGB", (10, 10)).save(root / "solo" / "only.jpg")
    stats = dataset_stats(index_folder(root), [("x/bad.jpg", "truncated")])
    assert stats["items"] == 4 and stats["images"] == 7
    assert stats["images_per_item"] == {"mean": 1.75, "mode": 2, "min": 1, "max": 2}
    assert stats["items_with_one_image"] == 1
    assert stats["file_types"] == {"png": 6, "jpg": 1}
    text = format_stats(stats)
    assert "x/bad.jpg (truncated)" in text and "single-image   1 item(s)" in text
