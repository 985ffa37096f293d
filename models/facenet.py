"""FaceNetInception: the NN2 Inception network of FaceNet (Schroff et al., 2015, table 2).

The block structure and the per-branch widths are the paper's table, row for row:
``FaceNetInception(width=1.0, input_size=224)`` has 7.46 M parameters and 1.60 G multiply-adds
per image, table 2's 7.5 M and 1.6 B. Two changes make the default trainable on a CPU:
- a width multiplier (default 0.5) scales every channel count, and the input is 96x96 (the input
  size of the paper's NN4) instead of 224x224; together they cut the cost per image about 20-fold.
- batch normalisation in every convolution replaces the paper's local response normalisation, as
  in Inception-v2 and OpenFace's nn4: it trains faster and from a higher learning rate.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import EmbeddingNet, conv_bn, global_pool


@dataclass(frozen=True)
class InceptionSpec:
    """One inception row of table 2: branch widths, pooling kind and stride.

    ``pool_proj == 0`` means the pooled input passes through unprojected (the stride-2 blocks 3c
    and 4e), so the block's output width includes its input width.
    """

    n1x1: int
    n3x3_reduce: int
    n3x3: int
    n5x5_reduce: int
    n5x5: int
    pool: str           # "max" or "l2"
    pool_proj: int
    stride: int = 1


# FaceNet NN2, table 2 (inception 3a ... 5b), at width 1.0.
NN2_BLOCKS: dict[str, InceptionSpec] = {
    "3a": InceptionSpec(64, 96, 128, 16, 32, "max", 32),
    "3b": InceptionSpec(64, 96, 128, 32, 64, "l2", 64),
    "3c": InceptionSpec(0, 128, 256, 32, 64, "max", 0, stride=2),
    "4a": InceptionSpec(256, 96, 192, 32, 64, "l2", 128),
    "4b": InceptionSpec(224, 112, 224, 32, 64, "l2", 128),
    "4c": InceptionSpec(192, 128, 256, 32, 64, "l2", 128),
    "4d": InceptionSpec(160, 144, 288, 32, 64, "l2", 128),
    "4e": InceptionSpec(0, 160, 256, 64, 128, "max", 0, stride=2),
    "5a": InceptionSpec(384, 192, 384, 48, 128, "l2", 128),
    "5b": InceptionSpec(384, 192, 384, 48, 128, "max", 128),
}


class L2Pool(nn.Module):
    """3x3 L2 pooling, sqrt(sum of squares) over the window, size-preserving (stride 1).

    A small epsilon keeps the square root's gradient finite where a window is all zeros, which
    happens often after ReLU (nn.LPPool2d returns NaN gradients there).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = F.avg_pool2d(x * x, 3, stride=1, padding=1, count_include_pad=True)
        return torch.sqrt(mean_square * 9.0 + 1e-6)


def _pool(kind: str, stride: int) -> nn.Module:
    return nn.MaxPool2d(3, stride, padding=1) if kind == "max" else L2Pool()


class Inception(nn.Module):
    """Parallel 1x1, 1x1->3x3, 1x1->5x5 and pool(->1x1) branches, concatenated along channels."""

    def __init__(self, in_channels: int, spec: InceptionSpec):
        super().__init__()
        s = spec.stride
        branches: list[nn.Module] = []
        if spec.n1x1:
            branches.append(conv_bn(in_channels, spec.n1x1, 1))
        branches.append(nn.Sequential(conv_bn(in_channels, spec.n3x3_reduce, 1),
                                      conv_bn(spec.n3x3_reduce, spec.n3x3, 3, s)))
        branches.append(nn.Sequential(conv_bn(in_channels, spec.n5x5_reduce, 1),
                                      conv_bn(spec.n5x5_reduce, spec.n5x5, 5, s)))
        pool = _pool(spec.pool, s)
        branches.append(nn.Sequential(pool, conv_bn(in_channels, spec.pool_proj, 1)) if spec.pool_proj else pool)
        self.branches = nn.ModuleList(branches)
        self.out_channels = spec.n1x1 + spec.n3x3 + spec.n5x5 + (spec.pool_proj or in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def scale_spec(spec: InceptionSpec, width: float) -> InceptionSpec:
    """Multiply every channel count by ``width`` (rounded to a multiple of 8; 0 stays 0)."""
    def scaled(channels: int) -> int:
        return scale_channels(channels, width) if channels else 0
    return InceptionSpec(scaled(spec.n1x1), scaled(spec.n3x3_reduce), scaled(spec.n3x3),
                         scaled(spec.n5x5_reduce), scaled(spec.n5x5), spec.pool,
                         scaled(spec.pool_proj), spec.stride)


def scale_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded to a multiple of 8 (at least 8), which vectorised kernels like."""
    return max(8, round(channels * width / 8) * 8)


class FaceNetInception(EmbeddingNet):
    """Image -> 128-d unit vector through conv1, conv2, inception 3a-5b, avg pool, FC, L2 norm."""

    def __init__(self, emb_dim: int = 128, input_size: int = 96, width: float = 0.5):
        c64, c192 = scale_channels(64, width), scale_channels(192, width)
        layers: list[nn.Module] = [
            conv_bn(3, c64, 7, stride=2), nn.MaxPool2d(3, 2, padding=1),     # conv1, max pool
            conv_bn(c64, c64, 1), conv_bn(c64, c192, 3),                     # inception (2)
            nn.MaxPool2d(3, 2, padding=1),
        ]
        channels = c192
        for spec in NN2_BLOCKS.values():
            block = Inception(channels, scale_spec(spec, width))
            layers.append(block)
            channels = block.out_channels
        layers.append(global_pool())
        super().__init__(nn.Sequential(*layers), nn.Linear(channels, emb_dim), input_size, emb_dim)
