"""A loaded model as one TorchScript file for serving: using it needs torch, not Snap Vision.

The file takes what a photo library gives, and does the rest the way evaluation does:
  - one photo as uint8 (H, W, 3) resized so that its longer side is ``input_size`` (PIL's
    ``ImageOps.contain``): it is letterboxed to a square inside the model, with the mean colour of
    its border, exactly as data.decode does;
  - or a batch of ready squares: uint8 (B, S, S, 3) or (B, 3, S, S), or float (B, 3, S, S) in [0, 1].
It returns (B, emb_dim) embeddings, L2-normalised for every Snap Vision model (the original
project's simple_net and big_net were not normalised, and are exported as they are). The model's
``input_size``, ``emb_dim`` and ``resize`` ("letterbox", or "stretch" for the original's networks,
whose photos are resized to S x S without padding) are attributes of the loaded file.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn

from common.atomic import atomic_write
from common.errors import UserError
from data.decode import LETTERBOX


def _centre_offset(gap: int) -> int:
    """``round(gap / 2)`` as Python rounds (half to even), which is where PIL's pad centres."""
    offset = gap // 2
    if gap % 2 == 1 and offset % 2 == 1:
        offset += 1
    return offset


class ServingModel(nn.Module):
    """Input checks, letterboxing and uint8 -> [0, 1] around a traced embedding model."""

    def __init__(self, embedder: nn.Module, input_size: int, emb_dim: int, resize: str):
        super().__init__()
        self.embedder = embedder
        self.input_size = input_size
        self.emb_dim = emb_dim
        self.resize = resize

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = self.letterbox(images).unsqueeze(0)
        if images.dim() != 4:
            raise ValueError("expected one (H, W, 3) photo or a batch of (B, S, S, 3) or (B, 3, S, S) images")
        if images.shape[1] != 3:
            images = images.permute(0, 3, 1, 2)
        if images.shape[2] != self.input_size or images.shape[3] != self.input_size:
            raise ValueError("images must be input_size x input_size; resize the photo first (see the README)")
        pixels = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return self.embedder(pixels.contiguous())

    def letterbox(self, photo: torch.Tensor) -> torch.Tensor:
        """Pad a uint8 (H, W, 3) photo whose longer side is input_size to a square, as data.decode does."""
        size = self.input_size
        height, width = photo.shape[0], photo.shape[1]
        if height == size and width == size:
            return photo
        if self.resize != "letterbox" or max(height, width) != size or photo.dtype != torch.uint8:
            raise ValueError("a single photo must be uint8 (H, W, 3) with its longer side resized to "
                             "input_size (letterbox models), or input_size x input_size")
        border = torch.cat([photo[0], photo[-1], photo[:, 0], photo[:, -1]]).double().mean(0)
        canvas = torch.round(border).to(torch.uint8).view(1, 1, 3).repeat(size, size, 1)
        top, left = _centre_offset(size - height), _centre_offset(size - width)
        canvas[top:top + height, left:left + width] = photo
        return canvas


def export_model(model: nn.Module, path: Path) -> list[Path]:
    """Write ``model`` as TorchScript to ``path`` (and ONNX beside it when onnx is installed)."""
    if not getattr(model, "trainable", False):
        raise UserError("--export_model: only trained networks can be exported; the colour baselines "
                        "(simple, dom_colours) have no network to export")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--export_model {path}: is a folder; give the file to write, e.g. {path / 'model.pt'}")
    model = model.cpu().eval()
    size = int(model.input_size)
    example = torch.rand(2, 3, size, size)
    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.9 marks TorchScript deprecated; it is still what loads anywhere with torch alone
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        traced = torch.jit.trace(model, example)
        served = torch.jit.script(ServingModel(traced, size, int(model.emb_dim),
                                               getattr(model, "resize", LETTERBOX)))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: torch.jit.save(served, handle))
    written = [path]
    if importlib.util.find_spec("onnx") is not None:
        written.append(_export_onnx(model, example, path.with_suffix(".onnx")))
    return written


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Float (B, 3, S, S) in [0, 1] -> embeddings; the letterboxing is the caller's in ONNX."""
    torch.onnx.export(model, (example,), str(path), input_names=["images"], output_names=["embeddings"],
                      dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}}, dynamo=False)
    return path
