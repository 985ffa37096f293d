"""Model registry: ``build_model(name, **kwargs)`` for every name of ``--models_list``.

Each model takes float images (B, 3, S, S) in [0, 1] at ``model.input_size``, normalises them
itself, and returns (B, ``model.emb_dim``) float embeddings; ``model.trainable`` is False only for
the colour baseline. Modules are imported on first use, so that listing the names or building the
small models does not pay for importing torchvision.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch import nn

from misc.errors import UserError

# name -> (module, class). The class name also names the run folder of a trained model.
_REGISTRY: dict[str, tuple[str, str]] = {
    "simple": ("models.simple", "ColourStats"),
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

    Options a model does not take are dropped when they are unset (None or False), so a front end
    can pass e.g. ``pretrained_weights=args.pretrained_weights`` to every model; a set option that
    the model cannot use is a UserError rather than being silently ignored.
    """
    cls = model_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    for key, value in kwargs.items():
        if key not in accepted and value is not None and value is not False:
            raise UserError(f"--{key}: does not apply to model {name}; "
                            f"drop it or use a model that takes it")
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})
