"""The run folder: its name, its hyperparameters file, its statistics file and its lock.

The folder name carries every hyperparameter that changes training, so "same folder" means
"same training" and re-running a command resumes it. It always starts with the original's
``<Model>_LR_<lr>_decay_<lrd>_BS_<bs>`` (``decay_cosine`` under the cosine schedule); every other
setting that differs from a fixed table of reference values (the original's settings, never
today's defaults) is appended (``..._K_8_margin_0.3_mining_hard``). So changing a default never
renames an existing run: the original's settings still give ``SimpleNet_LR_0.0001_decay_0.95_BS_64``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import socket
from pathlib import Path
from typing import Any

from misc.atomic import TEMP_SUFFIX, atomic_write_text
from misc.errors import UserError
from training.config import TrainConfig
from training.diagnostics import COLUMNS as DIAGNOSTICS_COLUMNS

STATS_FILE = "training_stats.csv"
HPARAMS_FILE = "hparams.json"
LOCK_FILE = ".lock"
STATS_COLUMNS = ("epoch", "mean training loss", "evaluation score", "precision@1", "map@r",
                 "triplets", *DIAGNOSTICS_COLUMNS, "lr", "seconds")

# Name parts beyond the original LR/decay/BS, in name order: field -> (short label, reference
# value). Every TrainConfig field that changes what training produces is here, with the value the
# original project (or the first version that had the setting) used; a part is written only when
# the run's value differs from that reference. epochs, device, amp, num_workers and the eval/save
# periods are not here, so a run can be continued with more epochs or on another device.
_EXTRA_NAME_PARTS: dict[str, tuple[str, object]] = {
    "warmup_steps": ("warmup", 0), "images_per_item": ("K", 4), "margin": ("margin", 0.2),
    "mining": ("mining", "semihard"), "seed": ("seed", 0), "augment": ("augment", "light"),
    "xbm": ("xbm", 0), "embedding_size": ("emb", None), "image_size": ("size", None),
    "pretrained": ("pretrained", False), "freeze_backbone": ("frozen", False)}
# augment "none" was the boolean augment=False before the levels existed: same name part.
_NAME_VALUES = {("augment", "none"): False}
# Reference input size per model class (the original sizes), for the "size" part.
REFERENCE_INPUT_SIZES = {"SimpleNet": 64, "BigNet": 96, "FaceNetInception": 96,
                         "EfficientNetB3Embedder": 128, "ResNet18Embedder": 128,
                         "ResNet50Embedder": 128}


def run_name(model_class: str, config: TrainConfig) -> str:
    """``<ModelClass>_LR_<lr>_decay_<lrd|cosine>_BS_<bs>`` plus settings that differ from the
    reference table (see the module docstring)."""
    decay = config.lr_decay if config.lr_schedule == "exponential" else "cosine"
    name = f"{model_class}_LR_{config.learning_rate}_decay_{decay}_BS_{config.batch_size}"
    for field, (label, reference) in _EXTRA_NAME_PARTS.items():
        value = getattr(config, field)
        if field == "image_size":  # None: the model's own size, unknown here
            reference = REFERENCE_INPUT_SIZES.get(model_class, value) if value else value
        if field == "warmup_steps" and config.lr_schedule == "exponential":
            continue  # the exponential schedule has no warm-up
        if value != reference:
            name += f"_{label}_{_NAME_VALUES.get((field, value), value)}"
    return name


def remove_temp_files(run_dir: Path) -> None:
    """Delete half-written files of a killed run; only call while holding the run's lock."""
    for leftover in run_dir.glob(f".*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def write_hparams(run_dir: Path, model_name: str, model_class: str, config: TrainConfig) -> None:
    """hparams.json: what trained this folder, for people and for evaluate.py."""
    values = {"model_name": model_name, "model_class": model_class, **config.to_dict()}
    atomic_write_text(run_dir / HPARAMS_FILE, json.dumps(values, indent=2) + "\n")


class StatsFile:
    """training_stats.csv, rewritten whole (atomically) on every change: it is a few KB.

    Rewriting rather than appending is what lets a resumed run drop rows written after its
    checkpoint (a kill between the CSV write and the checkpoint) instead of duplicating epochs.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, str]] = []
        if path.exists():
            self.rows = _read_stats(path)

    def epochs(self) -> list[int]:
        return [int(row["epoch"]) for row in self.rows]

    def truncate(self, last_epoch: int) -> None:
        """Forget rows after ``last_epoch`` (epochs the checkpoint being resumed does not contain)."""
        kept = [row for row in self.rows if int(row["epoch"]) <= last_epoch]
        if len(kept) != len(self.rows):
            self.rows = kept
            self._write()

    def add(self, values: dict[str, Any]) -> None:
        """Append one epoch's row; missing columns (no evaluation this epoch) stay empty."""
        self.rows.append({c: _format(values.get(c)) for c in STATS_COLUMNS})
        self._write()

    def _write(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=STATS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())


def _read_stats(path: Path) -> list[dict[str, str]]:
    """The rows of an existing stats file; one that cannot be understood is the user's to fix,
    never silently replaced (it is the run's only record of the epochs before its checkpoints)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for number, row in enumerate(rows, start=2):
            if not (row.get("epoch") or "").isdigit():
                raise ValueError(f"line {number} has no epoch number")
    except (UnicodeDecodeError, csv.Error, ValueError) as err:
        raise UserError(f"{path}: not a training stats file this version can continue ({err}); "
                        "repair it, or move it away to start a new one (checkpoints are "
                        "unaffected)") from err
    return rows


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class RunLock:
    """``.lock`` in the run folder, created with O_EXCL, holding ``<host> <pid>``.

    Two processes training one folder would overwrite each other's checkpoints, so the second one
    stops with a UserError. A lock left by a process that died on this host is taken over.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self.owner = f"{socket.gethostname()} {os.getpid()}"

    def __enter__(self) -> "RunLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._holder_alive():
                    raise UserError(f"{self.path}: another process ({self._read()}) is training this run "
                                    "folder; wait for it to finish, or delete the lock file if it is "
                                    "not running") from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.owner)
            return self
        raise UserError(f"{self.path}: could not take the lock; delete the file and retry")

    def __exit__(self, *exc: object) -> None:
        if self._read() == self.owner:
            self.path.unlink(missing_ok=True)

    def _read(self) -> str | None:
        try:
            return self.path.read_text().strip()
        except FileNotFoundError:
            return None

    def _holder_alive(self) -> bool:
        """True unless the lock is gone or its holder is a process on this host that has died."""
        holder = self._read()
        if holder is None:
            return False
        host, _, pid = holder.rpartition(" ")
        if host != socket.gethostname() or not pid.isdigit():
            return True  # another host's lock, or one being written right now
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
