"""Checkpoint files (``last.pth``, ``best.pth``, ``<epoch>.pth``): save policy, atomic writes, safe loads.

A checkpoint holds everything needed to continue training exactly where it stopped (model,
optimizer, grad scaler, RNG states; the learning rate follows from the epoch) plus what a
reader needs to trust it (model name and class, hyperparameters, metrics, format version). Only
tensors and plain Python values go in, so every file loads with
``torch.load(path, weights_only=True)``: opening a downloaded checkpoint never runs code.

Writing goes to a hidden temporary file in the same folder, is fsynced, then renamed over the
final name, so a run killed mid-save leaves the previous checkpoints intact and no half-written
file. Should the newest file still be unreadable (a disk error, a bad copy), resuming
("latest") warns and falls back to the previous readable one; asking for that epoch explicitly
is an error naming the file.
"""
from __future__ import annotations

import io
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


LAST = "last.pth"   # rolling resume point, rewritten after every epoch
BEST = "best.pth"   # the epoch with the highest evaluation score so far (ties: the earlier one)


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / f"{epoch}.pth"


def available_epochs(run_dir: Path) -> list[int]:
    """Epochs with a numbered ``<epoch>.pth`` in ``run_dir``, ascending (temporary files, last.pth
    and best.pth are not counted)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in run_dir.iterdir() if (m := _NAME.match(p.name)))


def has_checkpoints(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds any checkpoint (numbered, last.pth or best.pth)."""
    run_dir = Path(run_dir)
    return bool(available_epochs(run_dir)) or (run_dir / LAST).is_file() or (run_dir / BEST).is_file()


class CheckpointSaver:
    """The save policy of one run folder, and what ``--checkpoint latest|best|N`` means in it.

    After every epoch ``last.pth`` is rewritten (a kill loses at most the epoch in progress);
    ``<epoch>.pth`` is kept every ``save_every`` epochs and at the end; ``best.pth`` whenever the
    evaluation score beats every earlier one. The state is serialised once and the same bytes go
    to each file, each written atomically (common.atomic), so a kill mid-save leaves every file
    either old or new. The best score so far travels inside each checkpoint, so a resumed run
    keeps comparing against it.
    """

    def __init__(self, run_dir: Path, save_every: int = 0):
        self.run_dir = Path(run_dir)
        self.save_every = save_every
        self.best_score: float | None = None
        self.best_epoch: int | None = None

    def save(self, epoch: int, state: dict[str, Any], *, final: bool = False,
             score: float | None = None) -> list[Path]:
        """Write the files the policy asks for at ``epoch``; return them (last.pth always last,
        so a kill mid-save resumes from an epoch whose files are all complete)."""
        targets = []
        if final or (self.save_every and epoch % self.save_every == 0):
            targets.append(checkpoint_path(self.run_dir, epoch))
        if score is not None and (self.best_score is None or score > self.best_score):
            self.best_score, self.best_epoch = score, epoch
            targets.append(self.run_dir / BEST)
        targets.append(self.run_dir / LAST)
        contents = {"format_version": FORMAT_VERSION, "epoch": epoch, **state,
                    "best": {"score": self.best_score, "epoch": self.best_epoch}}
        buffer = io.BytesIO()
        torch.save(contents, buffer)
        data = buffer.getbuffer()
        for path in targets:
            atomic_write(path, lambda f: f.write(data))
        return targets

    def resume(self) -> Checkpoint | None:
        """The newest readable checkpoint (None in a fresh folder), with the best score restored."""
        if not has_checkpoints(self.run_dir):
            return None
        checkpoint = self.load("latest")
        best = checkpoint.state.get("best") or {}
        self.best_score, self.best_epoch = best.get("score"), best.get("epoch")
        return checkpoint

    def load(self, which: int | str = "latest") -> Checkpoint:
        """``latest`` (newest readable, falling back with a warning), ``best``, or an epoch number."""
        if not has_checkpoints(self.run_dir):
            raise UserError(f"{self.run_dir}: no checkpoints (<epoch>.pth, last.pth) in this run "
                            "folder; train this configuration first, or check --save_dir and the "
                            "hyperparameter flags")
        if which == "latest":
            return self._latest()
        if which == "best":
            if not (self.run_dir / BEST).is_file():
                raise UserError(f"{self.run_dir / BEST}: no best checkpoint (the run was trained "
                                "before best.pth existed, or never evaluated); use --checkpoint "
                                f"latest or one of the epochs {self.listing()}")
            return _read(self.run_dir / BEST)
        paths = self._paths_of_epoch(int(which))
        if paths:
            return _read(paths[0])
        raise UserError(f"{checkpoint_path(self.run_dir, int(which))}: no checkpoint for epoch "
                        f"{which}; available epochs: {self.listing()}")

    def nearest(self, epoch: int) -> Checkpoint:
        """The checkpoint of ``epoch``, else the newest one saved before it, else the earliest."""
        epochs = self.epochs()
        before = [e for e in epochs if e <= epoch]
        return self.load(max(before) if before else min(epochs))

    def epochs(self) -> list[int]:
        """Every epoch some checkpoint file holds (numbered, last.pth, best.pth), ascending."""
        return sorted(set(available_epochs(self.run_dir)) | set(self._aliases().values()))

    def listing(self) -> str:
        """``2, 4; last.pth: 5; best.pth: 4``: what can be loaded, for messages."""
        numbered = ", ".join(map(str, available_epochs(self.run_dir))) or "none numbered"
        return "; ".join([numbered] + [f"{name}: {epoch}" for name, epoch in self._aliases().items()])

    def _aliases(self) -> dict[str, int]:
        """Epochs of last.pth and best.pth that can be read (peeked without loading the tensors)."""
        found = {}
        for name in (LAST, BEST):
            epoch = _peek_epoch(self.run_dir / name)
            if epoch is not None:
                found[name] = epoch
        return found

    def _paths_of_epoch(self, epoch: int) -> list[Path]:
        numbered = checkpoint_path(self.run_dir, epoch)
        if numbered.is_file():
            return [numbered]
        return [self.run_dir / name for name, e in self._aliases().items() if e == epoch]

    def _latest(self) -> Checkpoint:
        """Newest readable checkpoint: last.pth (or a numbered one, if newer), then older ones."""
        candidates = [(e, checkpoint_path(self.run_dir, e)) for e in available_epochs(self.run_dir)]
        last = _peek_epoch(self.run_dir / LAST)
        if (self.run_dir / LAST).is_file():
            candidates.append((last if last is not None else 1 << 62, self.run_dir / LAST))
        for _, path in sorted(candidates, key=lambda c: c[0], reverse=True):
            try:
                return _read(path)
            except UserError as err:
                warnings.warn(f"{err}; falling back to the previous checkpoint", stacklevel=3)
        raise UserError(f"{self.run_dir}: none of the checkpoints ({self.listing()}) can be read; "
                        "delete the folder to train from scratch")


def _peek_epoch(path: Path) -> int | None:
    """The epoch stored in ``path``, memory-mapped so the weights are not read; None if unreadable."""
    if not path.is_file():
        return None
    try:
        epoch = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("epoch")
    except Exception:  # a damaged file is reported when it is actually loaded
        return None
    return epoch if isinstance(epoch, int) else None


def load_checkpoint(run_dir: Path, epoch: int | str = "latest") -> Checkpoint:
    """Load ``latest``, ``best`` or an epoch number from ``run_dir`` (see `CheckpointSaver.load`)."""
    return CheckpointSaver(run_dir).load(epoch)


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
