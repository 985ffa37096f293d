"""The learning rate of every optimizer step, as a pure function of the run's step counter.

Computing the rate from (configuration, step) instead of keeping a scheduler object means a
resumed run needs nothing but its epoch number to continue at exactly the right rate: checkpoints
are only ever written at the end of an epoch, so the step counter is ``epoch x steps_per_epoch``.

- ``cosine`` (default): linear warm-up over ``warmup_steps`` steps (from ``lr / warmup_steps`` up
  to ``lr``), then a half cosine from ``lr`` at the end of the warm-up down to 0 after the last
  step of ``epochs``. The warm-up is counted in steps, so it lasts as many updates whatever the
  dataset's size; the cosine spans the run, so a 5-minute CPU run and a long GPU run both anneal
  fully. Raising ``--epochs`` of a finished run stretches the cosine over the new length (the
  rate rises again to where the longer cosine would be).
- ``exponential``: ``lr x lr_decay**epoch``, constant within an epoch and no warm-up: exactly the
  previous versions' ``ExponentialLR`` stepped after every epoch, so runs that set ``-lrd``
  train as they did.
"""
from __future__ import annotations

import math

from training.config import TrainConfig


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The rate for optimizer step ``step`` (0-based, counted over the whole run)."""
    if config.lr_schedule == "exponential":
        return config.learning_rate * config.lr_decay ** (step // steps_per_epoch)
    warmup = config.warmup_steps
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    total = config.epochs * steps_per_epoch
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))
