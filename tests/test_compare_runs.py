"""training/run_list.py and misc/compare_runs.py: every run folder of a save_dir in one table and one figure."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.cli import run_main
from common.errors import UserError
from data.identity import DataIdentity
from misc.compare_runs import main, plot_runs
from training.config import TrainConfig
from training.run_list import format_runs_table, list_runs
from training.runs import STATS_FILE, StatsFile, run_name, write_hparams

REPO = Path(__file__).resolve().parents[1]
DATA = DataIdentity("synthetic", "0123456789abcdef", ["a", "b", "c"], {"eval_fraction": 0.2, "split_seed": 0})


def make_run(save_dir: Path, scores: dict[int, float], checkpoints: list[int], **hparams) -> Path:
    """A run folder as training leaves it: hparams.json (with its dataset), training_stats.csv,
    <epoch>.pth files, in save_dir/<dataset>/; the original's settings unless ``hparams`` says."""
    original = {"learning_rate": 1e-4, "lr_schedule": "exponential", "augment": "light"}
    config = TrainConfig(model="simple_net", **{**original, **hparams})
    run_dir = save_dir / "synthetic" / run_name("SimpleNet", config)
    run_dir.mkdir(parents=True)
    write_hparams(run_dir, "simple_net", "SimpleNet", config, DATA)
    stats = StatsFile(run_dir / STATS_FILE)
    for epoch in range(max(scores) + 1):
        row = {"epoch": epoch, "mean training loss": 1.0 / (epoch + 1) if epoch else None}
        if epoch in scores:
            row |= {"evaluation score": scores[epoch], "precision@1": scores[epoch] / 2}  # both in %
        stats.add(row)
    for epoch in checkpoints:
        (run_dir / f"{epoch}.pth").write_bytes(b"")
    return run_dir


@pytest.fixture
def save_dir(tmp_path) -> Path:
    save_dir = tmp_path / "models"
    make_run(save_dir, {0: 30.0, 2: 70.0, 4: 65.0}, [2, 4])
    make_run(save_dir, {0: 30.0, 2: 80.0, 4: 80.0}, [4], learning_rate=0.001, images_per_item=8, mining="hard")
    original = save_dir / "SimpleNet_LR_0.01_decay_0.9_BS_32"  # the original's runs: weights only
    original.mkdir()
    (original / "20.pth").write_bytes(b"")
    (save_dir / "notes").mkdir()           # not a run: skipped
    (save_dir / "notes" / "todo.txt").write_text("try facenet")
    (save_dir / ".partial").mkdir()        # hidden: skipped
    (save_dir / "README.txt").write_text("runs")
    return save_dir


def test_list_runs_reads_every_run_folder_best_first(save_dir):
    runs = list_runs(save_dir)
    assert [r["name"] for r in runs] == ["synthetic/SimpleNet_LR_0.001_decay_0.95_BS_64_K_8_mining_hard",
                                         "synthetic/SimpleNet_LR_0.0001_decay_0.95_BS_64",
                                         "SimpleNet_LR_0.01_decay_0.9_BS_32 (dataset unknown)"]
    best, default, original = runs
    assert (best["model"], best["lr"], best["lr_decay"], best["batch_size"]) == ("simple_net", 0.001, 0.95, 64)
    assert best["other"]["images_per_item"] == 8 and best["other"]["mining"] == "hard"
    assert (best["dataset"], original["dataset"]) == ("synthetic", None)
    assert (best["best_score"], best["best_score_epoch"], best["best_precision_at_1"]) == (80.0, 2, 40.0)
    assert (best["last_checkpoint"], best["last_epoch"]) == (4, 4)
    assert (default["best_score"], default["best_score_epoch"], default["last_checkpoint"]) == (70.0, 2, 4)
    # no hparams.json: the folder name still gives the model class and the hyperparameters
    assert (original["model_class"], original["lr"], original["lr_decay"], original["batch_size"]) == \
           ("SimpleNet", 0.01, 0.9, 32)
    assert (original["best_score"], original["last_checkpoint"], original["last_epoch"]) == (None, 20, None)


def test_table_shows_hyperparameters_and_best_scores(save_dir):
    table = format_runs_table(list_runs(save_dir))
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["model", "lr", "decay", "BS"] and set(lines[1]) == {"-"}
    assert "K=8 mining=hard" in lines[2] and "80.0%" in lines[2] and "40.0%" in lines[2]
    assert lines[2].endswith("synthetic/SimpleNet_LR_0.001_decay_0.95_BS_64_K_8_mining_hard")
    assert "70.0%" in lines[3] and lines[4].split()[:2] == ["SimpleNet", "0.01"]
    assert format_runs_table([]) == "no runs"


def test_plot_runs_writes_one_figure(save_dir, tmp_path):
    out = plot_runs(list_runs(save_dir), tmp_path / "runs.png")
    assert out.exists() and out.stat().st_size > 10_000


def test_missing_save_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--save_dir .*nowhere: no such folder"):
        list_runs(tmp_path / "nowhere")


def test_script_prints_the_table_and_plots(save_dir, tmp_path):
    out = tmp_path / "runs.png"
    result = subprocess.run([sys.executable, "-m", "misc.compare_runs", "--save_dir", str(save_dir),
                             "--plot", str(out)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "SimpleNet_LR_0.001_decay_0.95_BS_64_K_8_mining_hard" in result.stdout and out.exists()


def test_script_reports_a_missing_save_dir_in_one_line(tmp_path, capsys):
    assert run_main(main, ["--save_dir", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("error: --save_dir")
