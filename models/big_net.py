"""BigNet: a deeper residual CNN, the step up from SimpleNet that still trains on a CPU.

The original ``network`` took 512x512 images; 96x96 keeps garment shape and pattern while costing
about 1/28 of the pixels. Residual blocks (He et al., 2016) let the deeper stack train with the
same learning rate as SimpleNet, and global average pooling keeps the head at 256x128 weights.
"""
from __future__ import annotations

import torch
from torch import nn

from models.layers import EmbeddingNet, conv_bn, global_pool

# (channels, blocks) per stage; each stage starts with a stride-2 block.
STAGES = ((64, 1), (128, 2), (256, 2))


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a skip connection, then ReLU (ResNet's basic block).

    When the block changes resolution or width, the skip is a strided 1x1 conv-BN so that the
    two branches can be added.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.branch = nn.Sequential(conv_bn(in_channels, out_channels, stride=stride),
                                    conv_bn(out_channels, out_channels, relu=False))
        reshape = stride != 1 or in_channels != out_channels
        self.skip = conv_bn(in_channels, out_channels, 1, stride, relu=False) if reshape else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.branch(x) + self.skip(x))


def residual_stages(in_channels: int, stages: tuple[tuple[int, int], ...]) -> nn.Sequential:
    """Stack the stages: the first block of each halves the resolution and sets the width."""
    blocks: list[nn.Module] = []
    for channels, count in stages:
        blocks.append(ResidualBlock(in_channels, channels, stride=2))
        blocks.extend(ResidualBlock(channels, channels) for _ in range(count - 1))
        in_channels = channels
    return nn.Sequential(*blocks)


class BigNet(EmbeddingNet):
    """96x96 image -> 128-d unit vector: a stride-2 stem, then residual stages 64-128-256."""

    def __init__(self, emb_dim: int = 128, input_size: int = 96):
        features = nn.Sequential(
            conv_bn(3, 32, stride=2),                           # 96 -> 48
            residual_stages(32, STAGES),                        # 48 -> 6
            global_pool(),
        )
        super().__init__(features, nn.Linear(STAGES[-1][0], emb_dim), input_size, emb_dim)
