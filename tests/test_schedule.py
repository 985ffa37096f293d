"""The learning-rate schedule: warm-up then cosine decay, -lrd's exponential schedule, exact resume."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pipeline
from tests.test_training import fresh_model, read_stats, run, tiny_config
from training.config import TrainConfig
from training.options import config_from_args
from training.schedule import learning_rate


def test_cosine_warms_up_linearly_then_decays_to_zero() -> None:
    config = TrainConfig(model="m", epochs=10, learning_rate=1e-3, warmup_steps=20)
    rates = [learning_rate(config, step, steps_per_epoch=30) for step in range(300)]
    assert rates[0] == pytest.approx(1e-3 / 20) and rates[19] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(rates[:20], rates[1:20]))          # rising during warm-up
    assert all(a >= b for a, b in zip(rates[19:], rates[20:]))          # never rising after it
    halfway = 20 + (300 - 20) // 2
    assert rates[halfway] == pytest.approx(0.5e-3, rel=0.01)            # half way down the cosine
    assert rates[-1] < 1e-3 * 1e-3


def test_the_warm_up_is_counted_in_steps_whatever_the_epoch_size() -> None:
    config = TrainConfig(model="m", epochs=4, warmup_steps=50)
    for steps_per_epoch in (20, 100):
        rates = [learning_rate(config, step, steps_per_epoch) for step in range(4 * steps_per_epoch)]
        assert max(range(len(rates)), key=rates.__getitem__) == 49


def test_exponential_is_the_previous_per_epoch_decay() -> None:
    config = TrainConfig(model="m", learning_rate=1e-4, lr_schedule="exponential", lr_decay=0.9)
    assert [learning_rate(config, step, steps_per_epoch=5) for step in (0, 4, 5, 12)] == \
        pytest.approx([1e-4, 1e-4, 0.9e-4, 0.81e-4])


def test_lrd_on_the_command_line_selects_the_exponential_schedule_without_warm_up() -> None:
    def run_fields(argv: list[str]) -> dict:
        return config_from_args(pipeline.build_parser().parse_args(argv), "simple_net", None).to_dict()

    default = run_fields([])
    assert (default["lr_schedule"], default["warmup_steps"]) == ("cosine", TrainConfig.warmup_steps)
    old = run_fields(["-lr", "0.0001", "-lrd", "0.95"])
    assert (old["lr_schedule"], old["lr_decay"], old["warmup_steps"]) == ("exponential", 0.95, 0)
    explicit = run_fields(["--lr_schedule", "cosine", "-lrd", "0.9", "--warmup_steps", "7"])
    assert (explicit["lr_schedule"], explicit["warmup_steps"]) == ("cosine", 7)


def test_a_killed_cosine_run_resumes_at_the_right_step(tmp_path: Path) -> None:
    config = tiny_config(epochs=4, lr_schedule="cosine", warmup_steps=2, save_every=1)
    straight = fresh_model()
    run(tmp_path / "a", config, straight)

    killed = run(tmp_path / "b", config).run_dir
    for name in ("3.pth", "4.pth", "last.pth", "best.pth"):  # killed during epoch 3: only the
        (killed / name).unlink(missing_ok=True)               # checkpoints of epochs 1-2 exist
    resumed = fresh_model(seed=7)
    assert run(tmp_path / "b", config, resumed).epochs_trained == 2

    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    steps = 6  # 12 items x 4 images in batches of 2 items x 4 images
    logged = [float(row["lr"]) for row in read_stats(killed)[1:]]
    assert logged == pytest.approx([learning_rate(config, e * steps, steps) for e in range(4)], rel=1e-5)
    assert logged[0] < logged[1] and logged[1] > logged[2] > logged[3] > 0
