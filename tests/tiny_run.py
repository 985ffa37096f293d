"""The finished training run that several test modules evaluate, export or damage a copy of.

Training it takes a few seconds, so it is trained once per test session (the `tiny_run` fixture
in conftest.py) and shared read-only; a test that changes a run copies it first.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pipeline
from common.cli import run_main
from tests.datasets import make_dataset

# The hyperparameter flags it was trained with: evaluate.py finds the run folder from them.
# -lrd selects the exponential schedule: the run name keeps the original's form.
TINY_FLAGS = ("--batch_size", "8", "-K", "2", "--no_augment", "-lrd", "0.95", "--device", "cpu")
RUN_NAME = "SimpleNet_LR_0.001_decay_0.95_BS_8_K_2_augment_False"


@dataclass(frozen=True)
class TinyRun:
    """simple_net trained 2 epochs (checkpoints 1 and 2) on a 12-item solid-colour shop."""

    dataset: Path
    dataset_dir: Path
    save_dir: Path

    @property
    def flags(self) -> list[str]:
        """Dataset, folders and hyperparameters: what both front ends need to find this run."""
        return ["--dataset", str(self.dataset), "--dataset_dir", str(self.dataset_dir),
                "--save_dir", str(self.save_dir), *TINY_FLAGS]


def train_tiny_run(folder: Path) -> TinyRun:
    """Train the run under ``folder`` with pipeline.py, as a user would."""
    run = TinyRun(make_dataset(folder / "shop", num_items=12, per_item=4), folder / "data",
                  folder / "models")
    argv = ["-m", "simple_net", "--epochs", "2", "--save_every", "1", *run.flags]
    assert run_main(pipeline.main, argv) == 0
    assert (run.save_dir / run.dataset.name / RUN_NAME / "2.pth").is_file()
    return run
