"""Conversion between the cache's uint8 images and the float tensors models take."""
import numpy as np
import torch


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1].

    Models normalise their own input (see models/), so this is the only conversion and
    normalisation is never applied twice.
    """
    batch = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    return batch.permute(0, 3, 1, 2).float().div_(255.0)
