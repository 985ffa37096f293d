"""Model size and cost: parameter count, FLOPs per image, measured training throughput.

These are the numbers of the README's model table (misc/model_table.py): they tell a user which
model trains in minutes on a laptop and which needs a GPU before they start a 50-epoch run.
"""
from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter values (all of them, or only those that receive gradients)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flops_per_image(model: nn.Module) -> int:
    """Forward FLOPs for one image at ``model.input_size``, counting 2 FLOPs per multiply-add.

    Counted by torch.utils.flop_counter, which covers convolutions and matrix products (the bulk of
    a CNN's work) and not element-wise layers (batch norm, ReLU, pooling): the colour baseline has
    none and counts 0.
    """
    was_training = model.training
    model.eval()
    image = torch.rand(1, 3, model.input_size, model.input_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(image)
    model.train(was_training)
    return int(counter.get_total_flops())


def images_per_second(model: nn.Module, batch_size: int = 32, steps: int = 3, warmup: int = 1) -> float:
    """Training throughput on the current device (CPU here): forward + backward per image.

    The backward pass runs on a stand-in loss (sum of the embeddings), which costs the same as the
    triplet loss's backward through the network. A model with nothing to train (the colour
    baseline) is timed forward only. The best of ``steps`` timed steps is kept: on a shared machine
    the fastest step is the one least disturbed by other processes.
    """
    was_training = model.training
    model.train(model.trainable)
    images = torch.rand(batch_size, 3, model.input_size, model.input_size)
    best = float("inf")
    for step in range(warmup + steps):
        start = time.perf_counter()
        _training_step(model, images)
        if step >= warmup:
            best = min(best, time.perf_counter() - start)
    model.train(was_training)
    return batch_size / best


def _training_step(model: nn.Module, images: torch.Tensor) -> None:
    if not model.trainable:
        with torch.no_grad():
            model(images)
        return
    model.zero_grad(set_to_none=True)
    model(images).sum().backward()
