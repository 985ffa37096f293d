"""`dom_colours`: the original project's second no-training baseline, dominant colours.

Kept so `--models_list dom_colours` still works. A photo is summarised by its few most common
colours and how much of the picture each covers; unlike mean colour, a red-and-white striped
shirt is not confused with a pink one.
"""
from __future__ import annotations

import torch
from torch import nn

LEVELS = 8  # quantisation per channel: 8**3 = 512 colour cells
NUM_COLOURS = 3


class DominantColours(nn.Module):
    """(B, 3, S, S) in [0, 1] -> (B, 4 * NUM_COLOURS): the k most common colour cells.

    For each of the k fullest cells of an 8x8x8 RGB quantisation, in order of coverage: the mean
    colour of its pixels (3 numbers) and the fraction of the image it covers (1). Ties between
    equally full cells go to the lower cell index, so the output is deterministic.
    """

    trainable = False

    def __init__(self, input_size: int = 64):
        super().__init__()
        self.input_size = input_size
        self.emb_dim = 4 * NUM_COLOURS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x.float().flatten(2).clamp(0.0, 1.0)                         # (B, 3, N)
        levels = (pixels * LEVELS).long().clamp_(max=LEVELS - 1)
        cell = (levels[:, 0] * LEVELS + levels[:, 1]) * LEVELS + levels[:, 2]   # (B, N)
        batch, cells = pixels.shape[0], LEVELS ** 3
        ones = torch.ones_like(cell, dtype=torch.float)
        counts = torch.zeros(batch, cells, device=x.device).scatter_add_(1, cell, ones)
        sums = torch.zeros(batch, 3, cells, device=x.device)
        sums.scatter_add_(2, cell[:, None].expand(-1, 3, -1), pixels)
        # Stable descending sort: equal counts keep cell order, unlike topk.
        top = torch.sort(counts, dim=1, descending=True, stable=True).indices[:, :NUM_COLOURS]
        top_counts = counts.gather(1, top)
        colours = sums.gather(2, top[:, None].expand(-1, 3, -1)) / top_counts.clamp(min=1)[:, None]
        shares = top_counts / pixels.shape[2]
        return torch.cat([colours.transpose(1, 2).flatten(1), shares], dim=1)
