"""torchvision backbones (EfficientNet-B3, ResNet-18, ResNet-50) with an MLP embedding head.

Nothing is ever downloaded: pretrained ImageNet weights come from a local file
(``pretrained_weights``) or, failing that, from torchvision's own cache
(``<torch.hub.get_dir()>/checkpoints/<standard file name>``) when it is already there. Without
either, the backbone starts from random weights (trains from scratch) and a one-line notice says
so. ``freeze_backbone`` trains the head only (the DVC variant's setup), which only makes sense on
top of pretrained weights.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from common.errors import UserError
from models.layers import EmbeddingNet

log = logging.getLogger(__name__)


def mlp_head(widths: tuple[int, ...]) -> nn.Sequential:
    """Linear layers through ``widths`` with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        if i:
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def hub_weights(file_prefix: str) -> Path | None:
    """torchvision's cached ImageNet weights ``<prefix>-<hash>.pth``, if some earlier download left them."""
    found = sorted((Path(torch.hub.get_dir()) / "checkpoints").glob(f"{file_prefix}-*.pth"))
    return found[0] if found else None


def load_backbone_weights(backbone: nn.Module, path: Path) -> None:
    """Load a state_dict file into ``backbone``, ignoring the ImageNet classifier it may contain.

    Every backbone tensor must be present with the right shape: a partial load would silently
    leave random layers inside a "pretrained" model.
    """
    if not path.is_file():
        raise UserError(f"--pretrained_weights {path}: no such file; pass a torchvision state_dict .pth file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user problem
        raise UserError(f"--pretrained_weights {path}: cannot be read as a PyTorch state_dict ({err}); "
                        "pass the torchvision weights file for this model") from err
    expected = backbone.state_dict()
    if not isinstance(state, dict):
        raise UserError(f"--pretrained_weights {path}: holds a {type(state).__name__}, not a state_dict; "
                        "pass the torchvision weights file for this model")
    wrong = sorted(k for k in expected if k not in state or state[k].shape != expected[k].shape)
    if wrong:
        raise UserError(f"--pretrained_weights {path}: {len(wrong)} backbone tensors missing or of the wrong "
                        f"shape (first: {wrong[0]}); pass the weights of {type(backbone).__name__}")
    backbone.load_state_dict({k: state[k] for k in expected})


class TorchvisionEmbedder(EmbeddingNet):
    """A torchvision classifier with its last layer removed, followed by an MLP to ``emb_dim``.

    Subclasses name the architecture; each is its own class so that run folders, which are named
    after the model class, never mix two architectures.
    """

    architecture: str           # torchvision.models function name
    weights_file_prefix: str    # torchvision's cache file name before "-<hash>.pth"
    classifier_attr: str        # the attribute holding the ImageNet classifier
    feature_dim: int
    default_input_size: int

    def __init__(self, input_size: int | None = None, emb_dim: int = 64,
                 pretrained_weights: str | Path | None = None, freeze_backbone: bool = False):
        backbone = getattr(torchvision.models, self.architecture)(weights=None)
        setattr(backbone, self.classifier_attr, nn.Identity())
        source = Path(pretrained_weights) if pretrained_weights else hub_weights(self.weights_file_prefix)
        if source is not None:
            load_backbone_weights(backbone, source)
        elif freeze_backbone:
            raise UserError("--freeze_backbone needs pretrained weights; pass --pretrained_weights FILE "
                            f"(the torchvision {self.architecture} ImageNet state_dict)")
        else:
            log.warning("%s: no pretrained weights (no --pretrained_weights, none in %s); "
                        "the backbone starts from random weights", self.architecture,
                        Path(torch.hub.get_dir()) / "checkpoints")
        super().__init__(backbone, self.make_head(emb_dim), input_size or self.default_input_size, emb_dim)
        self.pretrained = source is not None
        self.frozen = freeze_backbone
        self.features.requires_grad_(not freeze_backbone)
        self.train()

    def make_head(self, emb_dim: int) -> nn.Sequential:
        return mlp_head((self.feature_dim, 256, emb_dim))

    def train(self, mode: bool = True) -> "TorchvisionEmbedder":
        """Like nn.Module.train, but a frozen backbone stays in eval mode.

        Otherwise its batch-norm running statistics would drift towards the product photos while
        its weights stay fixed, which spoils the pretrained features the head is learning on.
        """
        super().train(mode)
        if self.frozen:
            self.features.eval()
        return self


class EfficientNetB3Embedder(TorchvisionEmbedder):
    """EfficientNet-B3 -> 1536 -> 712 -> 256 -> 64, the DVC variant's head.

    EfficientNet-B3 is designed for 300x300; the default 128x128 costs about 1/5 of that per image
    so that it can train on a CPU. Pass ``input_size=300`` on a GPU.
    """

    architecture = "efficientnet_b3"
    weights_file_prefix = "efficientnet_b3_rwightman"
    classifier_attr = "classifier"
    feature_dim = 1536
    default_input_size = 128

    def make_head(self, emb_dim: int) -> nn.Sequential:
        return mlp_head((self.feature_dim, 712, 256, emb_dim))


class ResNet18Embedder(TorchvisionEmbedder):
    """ResNet-18 -> 512 -> 256 -> 64 at 128x128 (ImageNet's 224 costs 3x more per image)."""

    architecture = "resnet18"
    weights_file_prefix = "resnet18"
    classifier_attr = "fc"
    feature_dim = 512
    default_input_size = 128


class ResNet50Embedder(TorchvisionEmbedder):
    """ResNet-50 -> 2048 -> 256 -> 64 at 128x128."""

    architecture = "resnet50"
    weights_file_prefix = "resnet50"
    classifier_attr = "fc"
    feature_dim = 2048
    default_input_size = 128
