"""The original Snap Vision's three networks, re-implemented to evaluate its published runs.

Written from the architecture facts in shared/ORIGINAL.md; module names reproduce the original's
``state_dict`` keys and shapes exactly, so its bare ``<epoch>.pth`` files load unchanged. They
are evaluated as the original did: images stretched (not letterboxed) to ``input_size``, RGB in
[0, 1] with no mean/std normalisation, eval mode (dropout off). Only ``FaceNetInception`` L2-normalises
its output. They are never trained here: our own simple_net/big_net/facenet fix their defects.

Names: ``original_simple_net`` (class ``toy_network``), ``original_big_net`` (``network``),
``original_facenet`` (``FaceNetInception``), so a user can tell their metrics from ours.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

STRETCH = "stretch"  # the original's resize: both sides to input_size, aspect ratio not kept


class OriginalNet(nn.Module):
    """What the three share: their names, input size, embedding size and resize mode."""

    name: str             # our name for it, e.g. original_simple_net
    original_class: str   # the class name in the original code, which named its run folders
    ours: str             # our model of the same role (simple_net, big_net, facenet)
    input_size: int
    emb_dim: int
    resize = STRETCH
    trainable = True      # has weights to load (the colour baselines have none)


def _conv_stage(n_in: int, n_out: int, kernel: int, pool: int, pool_stride: int) -> nn.Sequential:
    """Conv -> PReLU -> MaxPool -> Dropout(0.3): keys ``.0`` (conv) and ``.1`` (PReLU)."""
    return nn.Sequential(nn.Conv2d(n_in, n_out, kernel), nn.PReLU(), nn.MaxPool2d(pool, pool_stride),
                         nn.Dropout(0.3))


def _fc(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.PReLU(), nn.Linear(hidden, n_out))


class ToyNetwork(OriginalNet):
    """``toy_network`` (simple_net): two conv stages, flatten 64x61x61 = 238144, 512, 64-d."""

    name, original_class, ours, input_size, emb_dim = "original_simple_net", "toy_network", "simple_net", 256, 64
    flat_features = 64 * 61 * 61

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(*_conv_stage(3, 32, 5, 2, 2), *_conv_stage(32, 64, 5, 2, 2))
        self.fc = _fc(self.flat_features, 512, self.emb_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(x), 1))


class Network(OriginalNet):
    """``network`` (big_net): four conv stages at 512 px, flatten 128x28x28 = 100352, 256, 128-d."""

    name, original_class, ours, input_size, emb_dim = "original_big_net", "network", "big_net", 512, 128
    flat_features = 128 * 28 * 28

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _conv_stage(3, 16, 7, 2, 2)
        self.conv2 = _conv_stage(16, 32, 5, 4, 2)
        self.conv3 = _conv_stage(32, 64, 5, 2, 2)
        self.conv4 = _conv_stage(64, 128, 3, 2, 2)
        self.fc = _fc(self.flat_features, 256, self.emb_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        return self.fc(torch.flatten(x, 1))


class ConvBlock(nn.Module):
    """Conv2d (with bias) -> BatchNorm2d -> ReLU, keys ``conv`` and ``bn``."""

    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out, kernel, stride, padding)
        self.bn = nn.BatchNorm2d(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """GoogLeNet block: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | maxpool -> 1x1, concatenated in that order."""

    def __init__(self, n_in: int, one: int, three_red: int, three: int, five_red: int, five: int,
                 pool: int):
        super().__init__()
        self.one_by_one = ConvBlock(n_in, one, 1)
        self.tree_by_three_red = ConvBlock(n_in, three_red, 1)
        self.tree_by_three = ConvBlock(three_red, three, 3, padding=1)
        self.five_by_five_red = ConvBlock(n_in, five_red, 1)
        self.five_by_five = ConvBlock(five_red, five, 5, padding=2)
        self.pool_proj = ConvBlock(n_in, pool, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.one_by_one(x),
                          self.tree_by_three(self.tree_by_three_red(x)),
                          self.five_by_five(self.five_by_five_red(x)),
                          self.pool_proj(F.max_pool2d(x, 3, 1, 1))], dim=1)


# (name, in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection), in forward order
_INCEPTIONS = (
    ("inception3a", 192, 64, 96, 128, 16, 32, 32), ("inception3b", 256, 128, 128, 192, 32, 96, 64),
    ("inception4a", 480, 192, 96, 208, 16, 48, 64), ("inception4b", 512, 160, 112, 224, 24, 64, 64),
    ("inception4c", 512, 128, 128, 256, 24, 64, 64), ("inception4d", 512, 112, 144, 288, 32, 64, 64),
    ("inception4e", 528, 256, 160, 320, 32, 128, 128),
    ("inception5a", 832, 256, 160, 320, 32, 128, 128), ("inception5b", 832, 384, 192, 384, 48, 128, 128),
)
_POOL_BEFORE = ("inception4a", "inception5a")  # a stride-2 max pool precedes these stages


class FaceNetInception(OriginalNet):
    """``FaceNetInception`` (facenet): GoogLeNet at 224 px, 1024 -> 128-d, L2-normalised."""

    name, original_class, ours, input_size, emb_dim = "original_facenet", "FaceNetInception", "facenet", 224, 128
    flat_features = 1024

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBlock(3, 64, 7, stride=2, padding=3)
        self.conv2 = ConvBlock(64, 192, 3, padding=1)
        self.linear = nn.Linear(self.flat_features, self.emb_dim)  # declared here in the original too
        for name, *widths in _INCEPTIONS:
            setattr(self, name, Inception(*widths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(F.max_pool2d(self.conv1(x), 3, 2, 1), dim=1)
        x = F.max_pool2d(F.normalize(self.conv2(x), dim=1), 3, 2, 1)
        for name, *_ in _INCEPTIONS:
            if name in _POOL_BEFORE:
                x = F.max_pool2d(x, 3, 2, 1)
            x = getattr(self, name)(x)
        x = torch.flatten(F.avg_pool2d(x, 7, 1), 1)
        return F.normalize(self.linear(x), dim=1)


ORIGINAL_NETS: dict[str, type[OriginalNet]] = {cls.name: cls for cls in (ToyNetwork, Network, FaceNetInception)}
ORIGINAL_NAMES: tuple[str, ...] = tuple(ORIGINAL_NETS)


@functools.lru_cache(maxsize=None)
def expected_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Every state_dict key of network ``name`` and its shape, measured on the meta device.

    No memory is allocated, so toy_network's 122 M parameters (488 MB) cost nothing here.
    """
    with torch.device("meta"):
        model = ORIGINAL_NETS[name]()
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}
