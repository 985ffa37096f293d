"""SimpleNet: a small CNN that trains in minutes on a laptop CPU.

The original ``toy_network`` flattened a 256x256 feature map into one 122-million-parameter linear
layer (488 MB checkpoints). Here four conv blocks shrink a 64x64 image to a 4x4x128 map quickly
(stride-2 first convolution, then max pooling), global average pooling replaces the flatten, and
the whole network has about 0.25 M parameters.
"""
from __future__ import annotations

from torch import nn

from models.layers import EmbeddingNet, conv_bn, global_pool


class SimpleNet(EmbeddingNet):
    """64x64 image -> 64-d unit vector. Blocks: 32 (stride 2) - 64 - 128 - 128 channels."""

    def __init__(self, emb_dim: int = 64, input_size: int = 64):
        features = nn.Sequential(
            conv_bn(3, 32, stride=2), nn.MaxPool2d(2),          # 64 -> 16
            conv_bn(32, 64), nn.MaxPool2d(2),                   # 16 -> 8
            conv_bn(64, 128), nn.MaxPool2d(2),                  # 8 -> 4
            conv_bn(128, 128),
            global_pool(),
        )
        super().__init__(features, nn.Linear(128, emb_dim), input_size, emb_dim)
