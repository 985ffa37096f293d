"""Photometric and geometric augmentation on a whole batch at once, on its device.

The random parameters (a few numbers per image) are drawn on the CPU from an explicit
``torch.Generator`` that the trainer seeds from (seed, epoch), so a resumed epoch gets the same
augmentation and the result does not depend on which device runs it. The pixels move with one
``grid_sample`` per batch: every geometric change of an image is one 3x3 matrix.

Levels (``--augment``):

- ``light``: horizontal flip, zoom-in crop to 80-100 % of the side with a shift, brightness and
  contrast +-10 %. The previous versions' only augmentation: the same random draws and the same
  transformation (to float rounding).
- ``strong`` (for product photos): horizontal flip, random resized crop (25-100 % of the area,
  aspect 3:4 to 4:3, anywhere in the image), rotation +-15 degrees, perspective (corners moved up
  to 8 % of the side), brightness +-20 %, contrast and saturation x0.7-1.3, hue +-0.03 of a turn
  (colour identifies a product, so the hue barely moves), a blur (about sigma 1.5 px at 64 px, scaled
  with the size) on 30 % of the images, and random erasing (a rectangle of 2-20 %
  of the area filled with one random colour) on half of them.
- ``none``: the images as they are.

Vertical flips and large rotations are left out: products have a top and a bottom.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_SCALE = 0.8          # light: crop side as a fraction of the image side (zoom-in up to 1.25x)
BRIGHTNESS = 0.1         # light: added to [0, 1] pixels, +-
CONTRAST = 0.1           # light: factor 1 +- this around each image's mean

STRONG_AREA = (0.25, 1.0)          # crop area as a fraction of the image
STRONG_LOG_ASPECT = math.log(4 / 3)
STRONG_ROTATION = math.radians(15)
STRONG_PERSPECTIVE = 0.08          # corner displacement, fraction of the side
STRONG_BRIGHTNESS = 0.2
STRONG_CONTRAST = STRONG_SATURATION = 0.3
STRONG_HUE = 0.03                  # fraction of a full turn of the hue circle
BLUR_PROBABILITY, BLUR_MAX_SIGMA = 0.3, 1.5   # sigma in pixels at 64 px
ERASE_PROBABILITY, ERASE_AREA = 0.5, (0.02, 0.2)

LEVELS = ("none", "light", "strong")


def augment(images: Tensor, generator: torch.Generator, level: str = "light") -> Tensor:
    """``images`` (B, 3, S, S) in [0, 1], augmented at ``level`` (see the module docstring)."""
    if level == "none":
        return images
    if level == "light":
        return _light(images, generator)
    if level == "strong":
        return _strong(images, generator)
    raise ValueError(f"unknown augmentation level {level!r}; choose one of {', '.join(LEVELS)}")


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _light(images: Tensor, generator: torch.Generator) -> Tensor:
    """Randomly flip, crop-and-resize, shift and jitter: the small changes of a studio shoot.

    With no rotation the sampling grid is separable (x' depends on x alone, y' on y), so it is
    built from two (n, side) rows instead of ``affine_grid``'s batched matrix product, and the
    colour jitter is one fused multiply-add: together 5x cheaper on a CPU than the general path,
    which keeps augmentation a few percent of a training step.
    """
    n, _, h, w = images.shape
    scale = _uniform(n, MIN_SCALE, 1.0, generator)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - scale)[:, None]  # crop stays inside
    brightness = _uniform(n, -BRIGHTNESS, BRIGHTNESS, generator)
    contrast = _uniform(n, 1 - CONTRAST, 1 + CONTRAST, generator)

    grid_x = (scale * flip)[:, None] * _pixel_centres(w) + shift[:, 0:1]   # (n, w)
    grid_y = scale[:, None] * _pixel_centres(h) + shift[:, 1:2]            # (n, h)
    grid = torch.stack([grid_x[:, None, :].expand(n, h, w), grid_y[:, :, None].expand(n, h, w)], dim=-1)
    out = F.grid_sample(images, grid.to(images.device), mode="bilinear", padding_mode="border",
                        align_corners=False)

    brightness, contrast = (v.to(images.device)[:, None, None, None] for v in (brightness, contrast))
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    # (out - mean) * contrast + mean + brightness, in one pass over the pixels
    return torch.addcmul(mean * (1 - contrast) + brightness, out, contrast).clamp_(0.0, 1.0)


def _pixel_centres(size: int) -> Tensor:
    """The ``size`` pixel centres of a side in grid_sample's [-1, 1] coordinates (align_corners=False)."""
    return (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1


def _strong(images: Tensor, generator: torch.Generator) -> Tensor:
    """Geometry (one homography per image), then colour, blur and erasing; see the docstring."""
    out = _warp(images, _homographies(images.shape[0], generator))
    out = _colour(out, generator)
    out = _blur(out, generator)
    return _erase(out, generator)


def _homographies(n: int, generator: torch.Generator) -> Tensor:
    """(n, 3, 3) maps from output to input coordinates (both in [-1, 1]).

    Crop (scale and aspect, placed anywhere it fits) x rotation x flip, then a perspective
    component from jittering the four corners.
    """
    area = _uniform(n, *STRONG_AREA, generator)
    aspect = torch.exp(_uniform(n, -STRONG_LOG_ASPECT, STRONG_LOG_ASPECT, generator))
    half_w = (area * aspect).sqrt().clamp(max=1.0)
    half_h = (area / aspect).sqrt().clamp(max=1.0)
    centre = (torch.rand(n, 2, generator=generator) * 2 - 1) * torch.stack([1 - half_w, 1 - half_h], 1)
    angle = _uniform(n, -STRONG_ROTATION, STRONG_ROTATION, generator)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = angle.cos(), angle.sin()
    matrix = torch.zeros(n, 3, 3)
    matrix[:, 0, 0], matrix[:, 0, 1] = half_w * cos * flip, -half_h * sin
    matrix[:, 1, 0], matrix[:, 1, 1] = half_w * sin * flip, half_h * cos
    matrix[:, :2, 2] = centre
    matrix[:, 2, 2] = 1.0
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    moved = corners + (torch.rand(n, 4, 2, generator=generator) * 2 - 1) * STRONG_PERSPECTIVE * 2
    return matrix @ _corner_homography(corners, moved)


def _corner_homography(src: Tensor, dst: Tensor) -> Tensor:
    """(n, 3, 3) homographies taking the 4 ``src`` corners to the (n, 4, 2) ``dst`` corners."""
    n = dst.shape[0]
    rows = []
    for i in range(4):
        x, y = src[i, 0].expand(n), src[i, 1].expand(n)
        u, v = dst[:, i, 0], dst[:, i, 1]
        zero, one = torch.zeros(n), torch.ones(n)
        rows.append(torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], 1))
        rows.append(torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], 1))
    a = torch.stack(rows, 1)
    b = dst.reshape(n, 8)
    h = torch.linalg.solve(a, b)
    return torch.cat([h, torch.ones(n, 1)], 1).reshape(n, 3, 3)


def _warp(images: Tensor, homographies: Tensor) -> Tensor:
    """Resample each image at its homography's image of the output pixel grid (one grid_sample).

    The projective map is written out as broadcast multiply-adds: a batched (HW x 3) @ (3 x 3)
    product is several times slower on a CPU.
    """
    n, _, h, w = images.shape
    ys = _pixel_centres(h).to(images.device)[None, :, None]
    xs = _pixel_centres(w).to(images.device)[None, None, :]
    m = homographies.to(images.device)[:, :, :, None, None]  # (n, 3, 3, 1, 1)
    depth = (m[:, 2, 0] * xs + m[:, 2, 1] * ys + m[:, 2, 2]).clamp_min(1e-6)
    grid = torch.stack([(m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]) / depth,
                        (m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]) / depth], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _colour(images: Tensor, generator: torch.Generator) -> Tensor:
    """Brightness, contrast, saturation and a small hue rotation as one 3x3 colour matrix + offset.

    The hue turns about the grey axis (1, 1, 1)/sqrt(3), so greys stay grey.
    """
    n = images.shape[0]
    brightness = _uniform(n, -STRONG_BRIGHTNESS, STRONG_BRIGHTNESS, generator)
    contrast = _uniform(n, 1 - STRONG_CONTRAST, 1 + STRONG_CONTRAST, generator)
    saturation = _uniform(n, 1 - STRONG_SATURATION, 1 + STRONG_SATURATION, generator)
    hue = _uniform(n, -STRONG_HUE, STRONG_HUE, generator) * 2 * math.pi
    grey = torch.full((3, 3), 1 / 3)
    eye = torch.eye(3)
    saturate = grey + saturation[:, None, None] * (eye - grey)
    k = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / math.sqrt(3)
    rotate = eye + hue.sin()[:, None, None] * k + (1 - hue.cos())[:, None, None] * (k @ k)
    matrix = (contrast[:, None, None] * rotate @ saturate).to(images.device)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    out = torch.bmm(matrix, (images - mean).flatten(2)).view_as(images)
    offset = (mean + brightness.to(images.device)[:, None, None, None])
    return (out + offset).clamp_(0.0, 1.0)


def _blur(images: Tensor, generator: torch.Generator) -> Tensor:
    """Blend each chosen image with a blurred copy (box-averaged at 1/k resolution and scaled back
    bilinearly: about a Gaussian of sigma ~k/2 px), by a random weight.

    Blending stands in for a per-image sigma, and pooling + interpolation costs a fraction of a
    convolution on a CPU.
    """
    n, _, h, w = images.shape
    weight = torch.rand(n, generator=generator)
    chosen = torch.nonzero(torch.rand(n, generator=generator) < BLUR_PROBABILITY).flatten()
    if len(chosen) == 0:
        return images
    chosen = chosen.to(images.device)
    sharp = images[chosen]
    k = max(2, round(2 * BLUR_MAX_SIGMA * h / 64))
    blurred = F.interpolate(F.avg_pool2d(sharp, k, ceil_mode=True), size=(h, w), mode="bilinear",
                            align_corners=False)
    weight = weight.to(images.device)[chosen, None, None, None]
    return images.index_copy(0, chosen, sharp + weight * (blurred - sharp))


def _erase(images: Tensor, generator: torch.Generator) -> Tensor:
    """Fill one random rectangle of each chosen image with one random colour (an occluder)."""
    n, _, h, w = images.shape
    chosen = torch.rand(n, generator=generator) < ERASE_PROBABILITY
    area = _uniform(n, *ERASE_AREA, generator)
    aspect = torch.exp(_uniform(n, -math.log(3), math.log(3), generator))
    eh = ((area / aspect).sqrt() * h).clamp(1, h)
    ew = ((area * aspect).sqrt() * w).clamp(1, w)
    top = torch.rand(n, generator=generator) * (h - eh)
    left = torch.rand(n, generator=generator) * (w - ew)
    colour = torch.rand(n, 3, generator=generator)
    rows = torch.arange(h, dtype=torch.float32)
    cols = torch.arange(w, dtype=torch.float32)
    inside_rows = (rows[None] >= top[:, None]) & (rows[None] < (top + eh)[:, None])
    inside_cols = (cols[None] >= left[:, None]) & (cols[None] < (left + ew)[:, None])
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :] & chosen[:, None, None])[:, None]
    mask, colour = mask.to(images.device), colour.to(images.device)[:, :, None, None]
    return torch.where(mask, colour, images)
