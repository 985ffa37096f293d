"""The colour-statistics baseline: what retrieval scores with no learning at all.

Every trained model is compared with it; a network that does not beat it has learned nothing
beyond colour. The core is the original project's ``simple`` model (mean and mode of each RGB
channel); a coarse joint RGB histogram is added so that two-colour garments are told apart from
one-colour garments of the same average colour.
"""
from __future__ import annotations

import torch
from torch import nn

MODE_BINS = 32
JOINT_BINS = 4


class ColourStats(nn.Module):
    """(B, 3, S, S) in [0, 1] -> (B, 3 + 3 + 4**3) colour statistics, no parameters.

    Features: per-channel mean (3), per-channel mode (3, the centre of the fullest of 32 bins;
    ties go to the darker bin) and the normalised 4x4x4 joint RGB histogram (64, sums to 1). All
    are in [0, 1] units already, so no mean/std normalisation is applied: the model is deterministic
    and its distances are plain colour differences.
    """

    trainable = False

    def __init__(self, input_size: int = 64):
        super().__init__()
        self.input_size = input_size
        self.emb_dim = 6 + JOINT_BINS ** 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x.float().flatten(2).clamp(0.0, 1.0)            # (B, 3, S*S)
        return torch.cat([pixels.mean(dim=2), channel_modes(pixels), joint_histogram(pixels)], dim=1)


def _bin_index(pixels: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin of each value in [0, 1] among ``bins`` equal bins (1.0 falls into the last one)."""
    return (pixels * bins).long().clamp_(max=bins - 1)


def channel_modes(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, N) -> (B, 3): centre of each channel's most common bin (a histogram argmax).

    Binning first makes the mode robust to JPEG noise, which spreads one colour over neighbouring
    values; torch.argmax returns the first maximum, so ties resolve to the lower bin.
    """
    index = _bin_index(pixels, MODE_BINS)
    counts = torch.zeros(*pixels.shape[:2], MODE_BINS, device=pixels.device)
    counts.scatter_add_(2, index, torch.ones_like(pixels))
    return (counts.argmax(dim=2).float() + 0.5) / MODE_BINS


def joint_histogram(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, N) -> (B, JOINT_BINS**3): fraction of pixels in each coarse RGB cube."""
    index = _bin_index(pixels, JOINT_BINS)
    cell = (index[:, 0] * JOINT_BINS + index[:, 1]) * JOINT_BINS + index[:, 2]    # (B, N)
    counts = torch.zeros(pixels.shape[0], JOINT_BINS ** 3, device=pixels.device)
    counts.scatter_add_(1, cell, torch.ones_like(pixels[:, 0]))
    return counts / pixels.shape[2]
