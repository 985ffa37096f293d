"""pipeline.py end to end, run the way the README runs it: resuming by running the same command
again, and the stats file's "evaluation score" being evaluate.py's in_any@5."""
from __future__ import annotations

import csv
import re

import pytest
import torch

import evaluate
import pipeline
from common.cli import run_main
from tests.datasets import make_noise_dataset
from training.runs import find_run_folders

SHARED = ["--batch_size", "8", "-K", "2", "--device", "cpu"]   # both scripts take these
TRAIN = ["-m", "simple_net", "--eval_every", "1", "--save_every", "1", *SHARED]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared CPU, OpenMP threads waiting on each other are slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """`pipeline.py --epochs 2` in one go on a noise shop; returns (common args, run folder)."""
    tmp = tmp_path_factory.mktemp("straight")
    shop = make_noise_dataset(tmp / "shop")
    common = ["--dataset", str(shop), "--dataset_dir", str(tmp / "data")]
    argv = [*common, *TRAIN, "--save_dir", str(tmp / "models"), "--epochs", "2"]
    assert run_main(pipeline.main, argv) == 0
    (run_dir,) = find_run_folders(tmp / "models")
    return common, run_dir


def read_stats(run_dir):
    with open(run_dir / "training_stats.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_running_the_same_command_again_resumes_to_the_same_weights(straight, tmp_path, capsys):
    common, straight_dir = straight
    argv = [*common, *TRAIN, "--save_dir", str(tmp_path / "models")]
    assert run_main(pipeline.main, [*argv, "--epochs", "1"]) == 0
    assert run_main(pipeline.main, [*argv, "--epochs", "2"]) == 0
    (run_dir,) = find_run_folders(tmp_path / "models")
    assert run_dir.name == straight_dir.name
    resumed = torch.load(run_dir / "2.pth", weights_only=True)["model"]
    reference = torch.load(straight_dir / "2.pth", weights_only=True)["model"]
    for name, weights in reference.items():
        torch.testing.assert_close(resumed[name], weights, rtol=0, atol=1e-6)
    rows, expected = read_stats(run_dir), read_stats(straight_dir)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    for row, want in zip(rows, expected):
        assert row["evaluation score"] == want["evaluation score"], row["epoch"]


def test_stats_evaluation_score_is_evaluate_in_any_at_5(straight, capsys):
    common, run_dir = straight
    score = float(read_stats(run_dir)[-1]["evaluation score"])
    argv = [*common, *SHARED, "--model", "simple_net", "--run_dir", str(run_dir), "--no_figures"]
    in_any = {}
    for k in (3, 5):
        assert run_main(evaluate.main, [*argv, "--num_neighbours", str(k)]) == 0
        out = capsys.readouterr().out
        in_any[k] = float(re.search(rf"in_any@{k}\s+([\d.]+)", out).group(1))
    assert in_any[3] != in_any[5]   # the noise shop tells the two apart
    assert score == pytest.approx(in_any[5], abs=0.05)
