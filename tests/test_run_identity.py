"""Runs bound to their data: another dataset, a partial copy, best.pth, --data_seed, pre-split overlap.

(The rows of README's "What happens when" table about changed datasets, splits and legacy run
folders are in test_bad_inputs.py.)
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

import evaluate
import pipeline
from common.cli import run_main
from data.index import index_folder
from data.splits import split_by_item
from tests.datasets import make_dataset
from tests.tiny_run import RUN_NAME, TINY_FLAGS
from training.distributed import setup
from training.workflow import prepare_data

TINY = list(TINY_FLAGS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[str]]:
    """simple_net trained 4 epochs on 'shop' (12 items), evaluated every epoch."""
    tmp = tmp_path_factory.mktemp("identity")
    shop = make_dataset(tmp / "shop", num_items=12, per_item=4)
    common = ["--dataset", str(shop), "--dataset_dir", str(tmp / "data"), "--save_dir", str(tmp / "models"), *TINY]
    assert run_main(pipeline.main, ["-m", "simple_net", "--epochs", "4", "--eval_every", "1", *common]) == 0
    return tmp, common


def evaluate_out(argv: list[str], capsys) -> str:
    capsys.readouterr()
    code = run_main(evaluate.main, argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_run_records_its_dataset_split_and_training_images(trained) -> None:
    tmp, _ = trained
    run_dir = tmp / "models" / "shop" / RUN_NAME
    data = json.loads((run_dir / "hparams.json").read_text())["data"]
    assert data["name"] == "shop" and len(data["items"]) == 12
    assert data["split"] == {"eval_fraction": 0.2, "split_seed": 0}
    assert torch.load(run_dir / "last.pth", weights_only=True)["data"] == data
    digests = (run_dir / "train_images.sha1").read_text().splitlines()
    trained_items = {line.split()[1].split("/")[-2] for line in digests}
    assert len(digests) == 4 * len(trained_items) and 0 < len(trained_items) < 12


def test_partial_copy_evaluated_with_run_dir_leaves_out_trained_images(trained, capsys) -> None:
    """A 6-item copy of part of the run's dataset: the copies of trained images are not scored."""
    tmp, common = trained
    run_dir = tmp / "models" / "shop" / RUN_NAME
    part = tmp / "part"
    for item in [f"item_{i:03d}" for i in range(6)]:
        shutil.copytree(tmp / "shop" / item, part / item)
    copied = {line.split()[1].split("/")[-2] for line in (run_dir / "train_images.sha1").read_text().splitlines()}
    argv = [a if a != str(tmp / "shop") else str(part) for a in common]
    out = evaluate_out(["--run_dir", str(run_dir), "--no_figures", "--eval_fraction", "0.99", *argv], capsys)
    index = index_folder(part)
    eval_items = {index.items[label] for label in index.labels[split_by_item(index, 0.99)[1]]}
    seen = len(copied & eval_items)
    assert seen and "another dataset (shop -> part)" in out
    assert f"left out {4 * seen} of {4 * len(eval_items)} evaluation images" in out
    assert f"retrieval on {4 * (len(eval_items) - seen)} images of {len(eval_items) - seen} held-out items" in out


def test_checkpoint_best_loads_the_best_scoring_epoch(trained, capsys) -> None:
    tmp, common = trained
    run_dir = tmp / "models" / "shop" / RUN_NAME
    best = torch.load(run_dir / "best.pth", weights_only=True)
    with open(run_dir / "training_stats.csv") as f:
        rows = [line.split(",") for line in f.read().splitlines()[1:]]
    scores = {int(r[0]): float(r[2]) for r in rows if int(r[0]) > 0}
    assert best["epoch"] == max(scores, key=lambda e: (scores[e], -e))
    out = evaluate_out(["--checkpoint", "best", "--no_figures", *common], capsys)
    assert f"(epoch {best['epoch']} of" in out


def test_list_runs_shows_the_dataset_folder(trained, capsys) -> None:
    _, common = trained
    out = evaluate_out(["--list_runs", *common], capsys)
    assert f"shop/{RUN_NAME}" in out


def test_small_evaluation_sets_carry_a_warning(trained, capsys) -> None:
    _, common = trained
    out = evaluate_out(["--no_figures", *common], capsys)
    assert "too few for these numbers to mean much" in out


def test_seed_no_longer_changes_the_built_in_dataset(tmp_path, monkeypatch) -> None:
    seeds: list[int] = []
    monkeypatch.setattr("data.sources.generate_synthetic", lambda root, seed: seeds.append(seed) or root)
    ctx = setup("cpu")
    for extra in (["--seed", "3"], ["--data_seed", "2"]):
        args = pipeline.build_parser().parse_args(["--dataset_dir", str(tmp_path), *extra])
        prepare_data(args, ctx)
    assert seeds == [0, 2]


def test_pre_split_layout_sharing_item_names_is_reported(tmp_path, capsys) -> None:
    make_dataset(tmp_path / "ds" / "train", num_items=6)
    make_dataset(tmp_path / "ds" / "val", num_items=3)  # item_000..002 again
    argv = ["-m", "simple_net", "--prepare_only", "--dataset", str(tmp_path / "ds"),
            "--dataset_dir", str(tmp_path / "data")]
    assert run_main(pipeline.main, argv) == 0
    assert "3 item(s) are in both train/ and val/ (item_000, item_001, item_002)" in capsys.readouterr().out


def test_new_flags_are_front_end_options() -> None:
    """--accept_changed_data and --data_seed are pipeline flags (and --data_seed an evaluate one)."""
    args = pipeline.build_parser().parse_args(["--accept_changed_data", "--data_seed", "4"])
    assert isinstance(args, argparse.Namespace) and args.accept_changed_data and args.data_seed == 4
    assert evaluate.build_parser().parse_args(["--data_seed", "4"]).data_seed == 4


def test_training_beside_a_legacy_run_starts_a_bound_run_and_says_so(tmp_path, capsys) -> None:
    """A run folder directly in save_dir (from before runs recorded their data) is kept as it is."""
    shop = make_dataset(tmp_path / "shop", num_items=12, per_item=4)
    legacy = tmp_path / "models" / RUN_NAME
    legacy.mkdir(parents=True)
    (legacy / "10.pth").write_bytes(b"an old checkpoint")
    argv = ["-m", "simple_net", "--epochs", "1", "--dataset", str(shop), "--dataset_dir", str(tmp_path / "data"),
            "--save_dir", str(tmp_path / "models"), *TINY]
    assert run_main(pipeline.main, argv) == 0
    out = capsys.readouterr().out
    assert f"note: {legacy} was trained before runs recorded their dataset (dataset unknown)" in out
    assert (tmp_path / "models" / "shop" / RUN_NAME / "1.pth").exists()
    assert sorted(p.name for p in legacy.iterdir()) == ["10.pth"]
