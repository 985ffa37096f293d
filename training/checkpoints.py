"""``<epoch>.pth`` files: write atomically, find the newest good one, load safely.

A checkpoint holds everything needed to continue training exactly where it stopped (model,
optimizer, scheduler, grad scaler, RNG states) plus what a reader needs to trust it (model name
and class, hyperparameters, metrics, format version). Only tensors and plain Python values go
in, so every file loads with ``torch.load(path, weights_only=True)``: opening a downloaded
checkpoint never runs code.

Writing goes to a hidden temporary file in the same folder, is fsynced, then renamed over the
final name, so a run killed mid-save leaves the previous checkpoints intact and no half-written
``<epoch>.pth``. Should the newest file still be unreadable (a disk error, a bad copy), resuming
("latest") warns and falls back to the previous readable one; asking for that epoch explicitly
is an error naming the file.
"""
from __future__ import annotations

import pickle
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.atomic import atomic_write
from common.errors import UserError

FORMAT_VERSION = 1
_NAME = re.compile(r"^(\d+)\.pth$")


@dataclass
class Checkpoint:
    """A loaded checkpoint: where it came from, its epoch, and its contents."""

    path: Path
    epoch: int
    state: dict[str, Any]


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / f"{epoch}.pth"


def available_epochs(run_dir: Path) -> list[int]:
    """Epochs with a ``<epoch>.pth`` in ``run_dir``, ascending (temporary files are ignored)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in run_dir.iterdir() if (m := _NAME.match(p.name)))


def save_checkpoint(run_dir: Path, epoch: int, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus the format version) as ``<run_dir>/<epoch>.pth`` atomically."""
    path = checkpoint_path(run_dir, epoch)
    contents = {"format_version": FORMAT_VERSION, "epoch": epoch, **state}
    atomic_write(path, lambda f: torch.save(contents, f))
    return path


def load_checkpoint(run_dir: Path, epoch: int | str = "latest") -> Checkpoint:
    """Load ``<epoch>.pth`` (an int) or the newest readable one ("latest") from ``run_dir``."""
    epochs = available_epochs(run_dir)
    if not epochs:
        raise UserError(f"{run_dir}: no checkpoints (<epoch>.pth) in this run folder; train this "
                        "configuration first, or check --save_dir and the hyperparameter flags")
    if epoch == "latest":
        for candidate in reversed(epochs):
            try:
                return _read(checkpoint_path(run_dir, candidate))
            except UserError as err:
                warnings.warn(f"{err}; falling back to the previous checkpoint", stacklevel=2)
        raise UserError(f"{run_dir}: none of the checkpoints {_listing(epochs)} can be read; "
                        "delete the folder to train from scratch")
    if epoch not in epochs:
        raise UserError(f"{checkpoint_path(run_dir, epoch)}: no checkpoint for epoch {epoch}; "
                        f"available epochs: {_listing(epochs)}")
    return _read(checkpoint_path(run_dir, int(epoch)))


def _listing(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs))


def _read(path: Path) -> Checkpoint:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():  # torch's refusal, before any object was built
            raise UserError(f"{path}: refused to load: it holds Python objects, not only weights, "
                            "and such a file can run code when opened (nothing in it was run); use a "
                            "checkpoint from a source you trust, or delete it") from err
        raise _corrupt(path, err) from err
    except Exception as err:  # any other zip/IO failure means the same thing to the user
        raise _corrupt(path, err) from err
    if not isinstance(state, dict) or "model" not in state or \
            not all(isinstance(state.get(key), int) for key in ("format_version", "epoch")):
        raise UserError(f"{path}: not a Snap Vision checkpoint (no model/format_version/epoch); "
                        "delete it or pick another epoch")
    if state["format_version"] > FORMAT_VERSION:
        raise UserError(f"{path}: written by a newer Snap Vision (format {state['format_version']}, "
                        f"this one reads up to {FORMAT_VERSION}); upgrade to load it")
    return Checkpoint(path=path, epoch=int(state["epoch"]), state=state)


def _corrupt(path: Path, err: Exception) -> UserError:
    return UserError(f"{path}: corrupt or unreadable checkpoint ({type(err).__name__}); delete it "
                     "or pick another epoch")


def load_model_state(model: nn.Module, checkpoint: Checkpoint, model_name: str) -> None:
    """Check that ``checkpoint`` holds a ``model_name`` of ``model``'s class, then load its weights."""
    found = (checkpoint.state.get("model_name"), checkpoint.state.get("model_class"))
    expected = (model_name, type(model).__name__)
    if found != expected:
        raise UserError(f"{checkpoint.path}: holds a {found[0]} ({found[1]}) model but {expected[0]} "
                        f"({expected[1]}) was requested; choose the matching --model or another "
                        "run folder")
    try:
        model.load_state_dict(checkpoint.state["model"])
    except RuntimeError as err:
        first_line = str(err).splitlines()[0]
        raise UserError(f"{checkpoint.path}: weights do not fit {expected[1]} ({first_line}); it was "
                        "trained with another version of the model") from err


def load_weights(model: nn.Module, run_dir: Path, model_name: str,
                 epoch: int | str = "latest") -> Checkpoint:
    """For evaluate.py: load a run's checkpoint into ``model`` and return it (epoch, metrics...)."""
    checkpoint = load_checkpoint(run_dir, epoch)
    load_model_state(model, checkpoint, model_name)
    return checkpoint


def rng_states() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as weights_only-loadable values."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of `rng_states`; CUDA states are restored only onto the same number of GPUs."""
    random.setstate(states["python"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
