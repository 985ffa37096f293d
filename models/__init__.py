"""Model registry: ``build_model(name, **kwargs)`` for every name of ``--models_list``.

Each model takes float images (B, 3, S, S) in [0, 1] at ``model.input_size``, normalises them
itself, and returns (B, ``model.emb_dim``) float embeddings; ``model.trainable`` is False only for
the colour baseline. Modules are imported on first use, so that listing the names or building the
small models does not pay for importing torchvision.
"""
from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any

from torch import nn

from common.errors import UserError

log = logging.getLogger(__name__)

# name -> (module, class). The class name also names the run folder of a trained model.
_REGISTRY: dict[str, tuple[str, str]] = {
    "simple": ("models.simple", "ColourStats"),
    "dom_colours": ("models.dom_colours", "DominantColours"),
    "simple_net": ("models.simple_net", "SimpleNet"),
    "big_net": ("models.big_net", "BigNet"),
    "facenet": ("models.facenet", "FaceNetInception"),
    "efficientnet_b3": ("models.torchvision_nets", "EfficientNetB3Embedder"),
    "resnet18": ("models.torchvision_nets", "ResNet18Embedder"),
    "resnet50": ("models.torchvision_nets", "ResNet50Embedder"),
}
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def model_class(name: str) -> type[nn.Module]:
    """The class behind ``name``, without building it (e.g. to find its run folder)."""
    if name not in _REGISTRY:
        raise UserError(f"model {name!r}: unknown; choose one of {', '.join(MODEL_NAMES)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name``; kwargs go to its constructor.

    Options the model does not take are dropped, with a one-line notice when they were set: one
    command can train several models (``-m simple_net resnet18 --pretrained_weights FILE``) and
    the backbone options concern only some of them.
    """
    cls = model_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    for key, value in kwargs.items():
        if key not in accepted and value is not None and value is not False:
            log.warning("--%s does not apply to model %s; ignored for it", key, name)
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})
