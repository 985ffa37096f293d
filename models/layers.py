"""Pieces every trained model shares: input normalisation, the conv block, the embedding wrapper.

All trained models are ``normalise -> features -> head -> L2 normalise``. Keeping that order in one
class (``EmbeddingNet``) is what guarantees that images are normalised exactly once, inside the
model, whichever front end feeds it, and that every trained embedding lies on the unit sphere where
the triplet margin (0.2 by default) is meaningful.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ImageNet channel statistics: what torchvision's pretrained backbones expect, and a reasonable
# standardisation of natural photos for the networks trained from scratch.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalise(nn.Module):
    """``(x - mean) / std`` per channel for float images in [0, 1].

    mean and std are buffers so that they follow the model to its device, but not persistent ones:
    they are constants of the code, not learned state, so checkpoints do not carry them.
    """

    def __init__(self, mean: tuple[float, float, float] = IMAGENET_MEAN,
                 std: tuple[float, float, float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
            relu: bool = True) -> nn.Sequential:
    """Conv (no bias: batch norm's shift replaces it) -> BatchNorm -> optional ReLU, 'same' padding.

    The one convolution block of SimpleNet, BigNet and FaceNetInception. ``relu=False`` is for the
    last convolution of a residual branch, whose ReLU comes after the skip connection is added.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class EmbeddingNet(nn.Module):
    """A trained embedding model: normalise -> ``features`` -> ``head`` -> L2 normalise.

    features: maps normalised (B, 3, S, S) images to (B, F) vectors (pooling included).
    head: maps (B, F) to (B, emb_dim).
    The embedding is returned as float32 even under mixed precision, because the triplet loss and
    the nearest-neighbour search compare small distance differences.

    Weights are stored channels-last: on CPU (oneDNN) this makes batch norm and convolution
    backward about 2-3x faster for these small networks, and on CUDA it suits tensor cores.
    """

    trainable = True

    def __init__(self, features: nn.Module, head: nn.Module, input_size: int, emb_dim: int):
        super().__init__()
        self.input_size = input_size
        self.emb_dim = emb_dim
        self.normalise = Normalise()
        self.features = features
        self.head = head
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.head(self.features(self.normalise(x)))
        return F.normalize(emb.float(), dim=1)


def global_pool() -> nn.Sequential:
    """Global average pooling to a flat (B, C) vector: makes the head independent of input size."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
