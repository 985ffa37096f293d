"""Trainer: exact resume, run folder contents, finished runs, lock, divergence, checkpoint errors.

A tiny CNN on 8x8 generated images keeps every training run well under a second on a CPU.
"""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from common.errors import UserError
from training.augment import augment
from training.checkpoints import available_epochs, load_checkpoint, load_weights
from training.config import TrainConfig
from training.runs import STATS_COLUMNS, RunLock, run_name
from training.trainer import train


class FakeImageSet:
    """`data.dataset.ImageSet` stand-in: each item a colour, its images noisy copies of it."""

    def __init__(self, items: int = 12, per_item: int = 4, size: int = 8, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.labels = np.repeat(np.arange(items), per_item).astype(np.int64)
        self.items = [f"item{i}" for i in range(items)]
        self.paths = [f"item{label}/{n}.jpg" for n, label in enumerate(self.labels)]
        self.size = size
        colours = rng.integers(40, 215, (items, 1, 1, 3))
        noise = rng.integers(-40, 40, (len(self.labels), size, size, 3))
        self.images = np.clip(colours[self.labels] + noise, 0, 255).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows: np.ndarray | list[int]) -> np.ndarray:
        return self.images[np.asarray(rows)]


class TinyNet(nn.Module):
    """A model as models/ builds them (input_size, emb_dim, trainable), with dropout so that
    restoring the RNG state on resume matters."""

    input_size, emb_dim, trainable = 8, 4, True

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(6, self.emb_dim))
        self.poisoned = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(x - 0.5)).mean(dim=(2, 3))
        embedding = nn.functional.normalize(self.head(features), dim=1)
        return embedding * float("nan") if self.poisoned else embedding


def tiny_config(**overrides) -> TrainConfig:
    """The previous versions' schedule and augmentation, so the run names stay the original's."""
    values = dict(model="tiny", epochs=2, batch_size=8, images_per_item=4, learning_rate=1e-2,
                  lr_schedule="exponential", augment="light", device="cpu", num_workers=0,
                  eval_every=1, save_every=2)
    return TrainConfig(**{**values, **overrides})


def fresh_model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


def run(tmp: Path, config: TrainConfig, model: nn.Module | None = None, eval_set=None, **kwargs):
    return train(config, model or fresh_model(), FakeImageSet(), eval_set, tmp,
                 **{"log": lambda _: None, **kwargs})


def read_stats(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "training_stats.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_resume_gives_the_same_weights_as_training_straight(tmp_path: Path) -> None:
    straight = fresh_model()
    run(tmp_path / "a", tiny_config(epochs=4), straight)

    first = run(tmp_path / "b", tiny_config(epochs=2, num_workers=2))
    resumed = fresh_model(seed=123)  # a new process would build a differently initialised model
    result = run(tmp_path / "b", tiny_config(epochs=4), resumed)

    assert (result.last_epoch, result.epochs_trained) == (4, 2) and first.run_dir == result.run_dir
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert [row["epoch"] for row in read_stats(result.run_dir)] == ["0", "1", "2", "3", "4"]


def test_run_folder_holds_checkpoints_stats_and_hparams(tmp_path: Path) -> None:
    result = run(tmp_path, tiny_config(epochs=3, eval_every=2), eval_set=FakeImageSet(seed=1))

    assert result.run_dir == tmp_path / "TinyNet_LR_0.01_decay_0.95_BS_8"
    assert available_epochs(result.run_dir) == [2, 3]
    assert (result.run_dir / "hparams.json").exists() and not (result.run_dir / ".lock").exists()
    rows = read_stats(result.run_dir)
    assert list(rows[0]) == list(STATS_COLUMNS)
    assert [row["epoch"] for row in rows] == ["0", "1", "2", "3"]
    assert rows[0]["evaluation score"] and not rows[0]["mean training loss"]
    for row in rows[1:]:  # diagnostics: distances, active share and spread of every epoch
        assert 0 < float(row["d_ap"]) < float(row["d_an"]) <= 2
        assert 0 <= float(row["active share"]) <= 1 and float(row["emb std"]) > 0
    assert not rows[1]["evaluation score"] and rows[2]["evaluation score"] and rows[3]["map@r"]
    assert float(rows[2]["lr"]) == pytest.approx(1e-2 * 0.95)
    assert set(result.metrics) == {"evaluation score", "precision@1", "map@r"}

    state = torch.load(result.run_dir / "3.pth", weights_only=True)
    assert {"model", "optimizer", "grad_scaler", "rng", "hparams", "metrics", "epoch",
            "model_name", "model_class", "format_version"} <= set(state)
    assert (state["model_name"], state["model_class"], state["epoch"]) == ("tiny", "TinyNet", 3)
    assert state["hparams"]["batch_size"] == 8 and state["metrics"] == result.metrics


def test_run_name_is_built_against_the_original_settings_not_todays_defaults() -> None:
    original = TrainConfig(model="simple_net", learning_rate=1e-4, lr_schedule="exponential",
                           lr_decay=0.95, batch_size=64, augment="light", image_size=64)
    assert run_name("SimpleNet", original) == "SimpleNet_LR_0.0001_decay_0.95_BS_64"
    changed = TrainConfig(model="simple_net", learning_rate=1e-4, lr_schedule="exponential",
                          augment="none", images_per_item=8, margin=0.3, mining="hard", seed=1,
                          epochs=7, device="cpu", num_workers=0, warmup_steps=50)
    assert run_name("SimpleNet", changed) == \
        "SimpleNet_LR_0.0001_decay_0.95_BS_64_K_8_margin_0.3_mining_hard_seed_1_augment_False"
    today = TrainConfig(model="simple_net", image_size=96)
    assert run_name("SimpleNet", today) == "SimpleNet_LR_0.001_decay_cosine_BS_64_warmup_100_size_96"
    strong = TrainConfig(model="simple_net", augment="strong")
    assert run_name("SimpleNet", strong) == "SimpleNet_LR_0.001_decay_cosine_BS_64_warmup_100_augment_strong"


def test_finished_run_trains_nothing_and_says_so(tmp_path: Path) -> None:
    config = tiny_config()
    result = run(tmp_path, config)
    before = (result.run_dir / "2.pth").stat().st_mtime_ns
    lines: list[str] = []
    again = train(config, fresh_model(), FakeImageSet(), None, tmp_path, log=lines.append)
    assert again.epochs_trained == 0 and (again.run_dir / "2.pth").stat().st_mtime_ns == before
    assert any("already trained to epoch 2; raise --epochs to continue" in line for line in lines)


def test_a_run_killed_mid_save_resumes_from_the_last_finished_epoch(tmp_path: Path) -> None:
    """Killed after writing epoch 3's CSV row and 3.pth but mid-save of last.pth (left at epoch 2,
    a temp file beside it): the next run redoes epoch 3 once, without a duplicate row."""
    first = run(tmp_path, tiny_config(epochs=2, save_every=0))
    at_epoch_2 = (first.run_dir / "last.pth").read_bytes()
    run(tmp_path, tiny_config(epochs=3, save_every=0))
    (first.run_dir / "last.pth").write_bytes(at_epoch_2)
    (first.run_dir / "3.pth").unlink()
    half_written = first.run_dir / ".last.pth.4242.tmp"
    half_written.write_bytes(b"partial")

    assert run(tmp_path, tiny_config(epochs=3)).epochs_trained == 1
    assert [row["epoch"] for row in read_stats(first.run_dir)] == ["0", "1", "2", "3"]
    assert load_checkpoint(first.run_dir).epoch == 3 and not half_written.exists()


def test_last_pth_after_every_epoch_numbered_every_save_every_best_by_score(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run(tmp_path, tiny_config(epochs=5, save_every=2, eval_every=1), eval_set=FakeImageSet(seed=1),
                 log=lines.append)
    scores = {int(r["epoch"]): float(r["evaluation score"]) for r in read_stats(result.run_dir)}
    best_epoch = max(range(1, 6), key=lambda e: (scores[e], -e))  # ties go to the earlier epoch
    assert available_epochs(result.run_dir) == [2, 4, 5]
    assert load_checkpoint(result.run_dir, "latest").epoch == 5
    assert torch.load(result.run_dir / "last.pth", weights_only=True)["epoch"] == 5
    assert load_checkpoint(result.run_dir, "best").epoch == best_epoch
    assert f"best {scores[best_epoch]:.2f}% at epoch {best_epoch}" in lines[-1]
    assert lines[-1].startswith(f"saved {result.run_dir}: epochs 1-5")


def test_resume_says_where_it_starts(tmp_path: Path) -> None:
    run(tmp_path, tiny_config(epochs=3, save_every=0))
    lines: list[str] = []
    result = run(tmp_path, tiny_config(epochs=4), log=lines.append)
    assert f"resuming {result.run_dir} from epoch 3" in lines


def test_fewer_epochs_than_reached_use_that_epoch_or_say_which(tmp_path: Path) -> None:
    run(tmp_path, tiny_config(epochs=5, save_every=2))
    lines: list[str] = []
    model = fresh_model(seed=9)
    result = run(tmp_path, tiny_config(epochs=4), model, log=lines.append)
    assert result.last_epoch == 4 and result.epochs_trained == 0
    expected = load_checkpoint(result.run_dir, 4).state["model"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.values()))
    assert "uses epoch 4 (4.pth): its checkpoint" in lines[0]

    lines.clear()
    assert run(tmp_path, tiny_config(epochs=3), log=lines.append).last_epoch == 2
    assert "--epochs 3 uses epoch 2 (2.pth): no checkpoint of epoch 3 was kept" in lines[0]


def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    result = run(tmp_path, tiny_config(epochs=2))
    poisoned = fresh_model()
    poisoned.poisoned = True
    with pytest.raises(UserError, match="diverged in epoch 3.*--learning_rate"):
        run(tmp_path, tiny_config(epochs=4), poisoned)
    assert available_epochs(result.run_dir) == [2]
    assert [row["epoch"] for row in read_stats(result.run_dir)] == ["0", "1", "2"]
    assert not (result.run_dir / ".lock").exists()


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    result = run(tmp_path, tiny_config())
    with pytest.raises(UserError, match=r"2\.pth: holds a tiny \(TinyNet\) model but other \(TinyNet\)"):
        load_weights(fresh_model(), result.run_dir, "other")


def test_checkpoint_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    run_dir = run(tmp_path, tiny_config(epochs=4)).run_dir
    with pytest.raises(UserError, match="no checkpoint for epoch 3; available epochs: 2, 4"):
        load_checkpoint(run_dir, 3)
    (run_dir / "4.pth").write_bytes(b"truncated")
    (run_dir / "last.pth").write_bytes(b"truncated")
    with pytest.raises(UserError, match=r"4\.pth: corrupt"):
        load_checkpoint(run_dir, 4)
    with pytest.warns(UserWarning, match=r"last\.pth: corrupt"):
        assert load_checkpoint(run_dir).epoch == 2
    with pytest.raises(UserError, match="no checkpoints"):
        load_checkpoint(tmp_path / "missing")


def test_a_second_trainer_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        with pytest.raises(UserError, match=r"\.lock: another process .* is training this run folder"):
            RunLock(tmp_path).__enter__()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    """The OS releases a SIGKILLed holder's lock; the file it leaves is taken over."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, '.');"
                               "from pathlib import Path; from training.runs import RunLock;"
                               f"RunLock(Path({str(tmp_path)!r})).__enter__(); print('locked', flush=True);"
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match=f"another process .*{holder.pid}"):
        RunLock(tmp_path).__enter__()
    holder.kill()
    holder.wait()
    lock = RunLock(tmp_path)
    assert lock.path.exists()  # left behind by the killed process
    with lock:
        assert lock.path.read_text() == lock.owner
    assert not lock.path.exists()


def test_each_epoch_augments_differently_and_a_resume_repeats_it(tmp_path: Path,
                                                                  monkeypatch) -> None:
    """Augmentation draws from a generator seeded by (seed, epoch): every epoch must transform
    the images anew, yet a resumed epoch must transform them as the straight run did."""
    probe = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def run_recording(folder: Path, epochs: int) -> list[torch.Tensor]:
        """The transform each step's generator would apply to ``probe``, step by step."""
        seen = []

        def spy(x: torch.Tensor, generator: torch.Generator, level: str) -> torch.Tensor:
            twin = torch.Generator().set_state(generator.get_state())
            seen.append(augment(probe, twin, level))
            return augment(x, generator, level)
        monkeypatch.setattr("training.trainer.augment", spy)
        run(folder, tiny_config(epochs=epochs, augment="light"))
        return seen

    straight = run_recording(tmp_path / "a", 2)
    steps = len(straight) // 2
    assert not torch.equal(straight[0], straight[steps])          # epoch 2 is not epoch 1 again
    run_recording(tmp_path / "b", 1)
    resumed = run_recording(tmp_path / "b", 2)
    assert len(resumed) == steps and all(map(torch.equal, resumed, straight[steps:]))


def test_augmentation_is_light_and_reproducible() -> None:
    images = torch.rand(6, 3, 16, 16)
    a = augment(images, torch.Generator().manual_seed(5))
    b = augment(images, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == images.shape
    assert 0 <= a.min() and a.max() <= 1 and not torch.equal(a, images)
    assert (a - images).abs().mean() < 0.3
