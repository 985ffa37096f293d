"""Light photometric and geometric augmentation on a whole batch at once, on its device.

The random parameters (a few numbers per image) are drawn on the CPU from an explicit
``torch.Generator`` that the trainer seeds from (seed, epoch), so a resumed epoch gets the same
augmentation and the result does not depend on which device runs it. The pixels are transformed
with one ``grid_sample`` per batch: flip, zoom-in crop and shift are one affine map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_SCALE = 0.8          # crop side as a fraction of the image side (zoom-in up to 1.25x)
BRIGHTNESS = 0.1         # added to [0, 1] pixels, +-
CONTRAST = 0.1           # factor 1 +- this around each image's mean


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Randomly flip, crop-and-resize, shift and jitter (B, 3, S, S) images in [0, 1].

    Products are photographed at different positions, scales and lighting; these small changes
    make the embedding ignore them. Vertical flips and large rotations are left out: garments have
    a top and a bottom.
    """
    n = images.shape[0]
    scale = _uniform(n, MIN_SCALE, 1.0, generator)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - scale)[:, None]  # crop stays inside
    brightness = _uniform(n, -BRIGHTNESS, BRIGHTNESS, generator)
    contrast = _uniform(n, 1 - CONTRAST, 1 + CONTRAST, generator)

    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    brightness, contrast = (v.to(images.device)[:, None, None, None] for v in (brightness, contrast))
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)
