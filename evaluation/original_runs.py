"""Run folders of the original Snap Vision: recognise them by their contents and load them.

The original saved ``torch.save(model.state_dict())``: a bare dict of tensors, with no epoch, no
model name and no format version. Its run folders are named after the model class, and our own
facenet class shares the name ``FaceNetInception``, so the folder name cannot tell: a run is an
original one when its checkpoint is a bare state_dict whose keys and shapes are exactly those of
one of the three re-implemented networks (models.original_nets). Files load with
``weights_only=True``, so opening a downloaded checkpoint never runs code.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from common.errors import UserError
from models.original_nets import ORIGINAL_NETS, OriginalNet, expected_shapes
from training.checkpoints import Checkpoint, available_epochs, checkpoint_path, load_weights

# What their metrics are, instead of "held-out": the original split rows, not items, so its
# runs were trained on images of most items, and nobody knows which.
PROVENANCE_UNKNOWN = ("items, provenance unknown (an original project's run: its split leaked items, so it "
                      "may have trained on these)")


def original_folder_name(model_name: str, learning_rate: float, lr_decay: float, batch_size: int) -> str:
    """The original's run folder name, ``<Class>_LR_<lr>_decay_<lrd>_BS_<bs>``, for an original model."""
    cls = ORIGINAL_NETS[model_name].original_class
    return f"{cls}_LR_{learning_rate}_decay_{lr_decay}_BS_{batch_size}"


def serves_request(run_model: str, requested: str) -> bool:
    """Whether a run of ``run_model`` answers ``--model requested``: its own name, or for an original
    network the name of our model of the same role (``--model simple_net`` finds a toy_network run,
    as the original's own evaluate.py command did)."""
    original = ORIGINAL_NETS.get(run_model)
    return run_model == requested or (original is not None and original.ours == requested)


def original_model_of(run_dir: Path) -> str | None:
    """``original_simple_net`` / ``original_big_net`` / ``original_facenet`` for an original run
    folder (judged by its newest checkpoint), None for a Snap Vision run; a bare state_dict that
    fits none of the three is a UserError naming the file. An unreadable newest file also gives
    None: the Snap Vision loader then reports it, or falls back to an earlier checkpoint."""
    epochs = available_epochs(run_dir)
    if not epochs:
        return None
    path = checkpoint_path(run_dir, epochs[-1])
    try:
        state = read_state(path)
    except UserError:
        return None
    return identify(state, path)


def load_run(model: nn.Module | None, run_dir: Path, model_name: str,
             epoch: int | str = "latest") -> tuple[nn.Module, Checkpoint]:
    """Load a run folder for evaluate.py: ours into `model`, or an original run into a new network.

    `model` is our model for `--model model_name`, None when that names an original network.
    Returns the loaded model and its checkpoint (an original one records nothing but weights).
    """
    original = original_model_of(run_dir)
    if original is not None and serves_request(original, model_name):
        network, chosen = load_original(run_dir, original, epoch)
        return network, Checkpoint(path=checkpoint_path(run_dir, chosen), epoch=chosen, state={})
    if original is not None:
        raise UserError(f"{run_dir}: holds the original project's {ORIGINAL_NETS[original].original_class}, "
                        f"not a {model_name} run; pass --model {original}")
    if model is None:
        raise UserError(f"{run_dir}: not a run of the original project, which --model {model_name} "
                        f"evaluates; pass --model {ORIGINAL_NETS[model_name].ours} for Snap Vision runs")
    return model, load_weights(model, run_dir, model_name, epoch)


def load_original(run_dir: Path, model_name: str, epoch: int | str = "latest") -> tuple[OriginalNet, int]:
    """Build ``model_name`` and load ``<epoch>.pth`` ("latest" = the highest number) into it."""
    epochs = available_epochs(run_dir)
    chosen = (epochs[-1] if epochs else None) if epoch == "latest" else epoch
    if chosen not in epochs:  # also "best": the original kept numbered checkpoints only
        raise UserError(f"{run_dir}: no checkpoint for epoch {epoch}; available epochs: "
                        f"{', '.join(map(str, epochs)) or 'none'}")
    path = checkpoint_path(run_dir, chosen)
    state = read_state(path)
    if identify(state, path) != model_name:
        raise UserError(f"{path}: not a {model_name} checkpoint, unlike the newest one of its run; "
                        "pick another --checkpoint")
    model = ORIGINAL_NETS[model_name]()
    model.load_state_dict(state)
    return model.eval(), chosen


def read_state(path: Path) -> object:
    """``torch.load(weights_only=True)``; memory-mapped when possible, so that recognising a
    488 MB toy_network checkpoint reads only its header."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:  # noqa: BLE001 - unreadable for whatever reason: the same user problem
        raise UserError(f"{path}: cannot be read as a PyTorch checkpoint ({type(err).__name__}); "
                        "the download may be damaged: delete it and run again") from err


def identify(state: object, path: Path) -> str | None:
    """Which original network a bare state_dict is; None when ``state`` is not a bare state_dict."""
    if not _is_bare_state_dict(state):
        return None
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    for name in ORIGINAL_NETS:
        if shapes == expected_shapes(name):
            return name
    closest = max(ORIGINAL_NETS, key=lambda name: len(shapes.keys() & expected_shapes(name).keys()))
    raise UserError(f"{path}: a bare state_dict that fits none of the original's networks (closest: "
                    f"{ORIGINAL_NETS[closest].original_class}, {_first_difference(shapes, closest)}); "
                    "it is neither an original Snap Vision nor a Snap Vision checkpoint")


def _is_bare_state_dict(state: object) -> bool:
    return isinstance(state, dict) and bool(state) and "format_version" not in state and \
        all(isinstance(value, torch.Tensor) for value in state.values())


def _first_difference(shapes: dict[str, tuple[int, ...]], name: str) -> str:
    expected = expected_shapes(name)
    unknown = sorted(shapes.keys() - expected.keys())
    if unknown:
        return f"{len(unknown)} unknown key(s), first {unknown[0]}"
    missing = sorted(expected.keys() - shapes.keys())
    if missing:
        return f"{len(missing)} missing key(s), first {missing[0]}"
    key = next(k for k in expected if shapes[k] != expected[k])
    return f"{key} has shape {list(shapes[key])}, expected {list(expected[key])}"
