"""The run folder: its name, its hyperparameters file, its statistics file and its lock.

The folder name carries every hyperparameter that changes training, so "same folder" means
"same training" and re-running a command resumes it. It always starts with the original's
``<Model>_LR_<lr>_decay_<lrd>_BS_<bs>`` (``decay_cosine`` under the cosine schedule); every other
setting that differs from its fixed reference value (the original's setting, never today's
default: see TrainConfig's field declarations) is appended (``..._K_8_margin_0.3_mining_hard``).
So changing a default never renames an existing run: the original's settings still give
``SimpleNet_LR_0.0001_decay_0.95_BS_64``.
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import socket
from pathlib import Path
from typing import Any

from common.atomic import TEMP_SUFFIX, atomic_write_text
from common.errors import UserError
from data.identity import DIGESTS_FILE, DataIdentity, describe_change, read_digests, write_digests
from training.checkpoints import has_checkpoints
from training.config import TrainConfig, name_parts
from training.diagnostics import COLUMNS as DIAGNOSTICS_COLUMNS

STATS_FILE = "training_stats.csv"
HPARAMS_FILE = "hparams.json"
LOCK_FILE = ".lock"
STATS_COLUMNS = ("epoch", "mean training loss", "evaluation score", "precision@1", "map@r",
                 "triplets", *DIAGNOSTICS_COLUMNS, "lr", "seconds")

# augment "none" was the boolean augment=False before the levels existed: same name part.
_NAME_VALUES = {("augment", "none"): False}
# Reference input size per model class (the original sizes), for the "size" part.
REFERENCE_INPUT_SIZES = {"SimpleNet": 64, "BigNet": 96, "FaceNetInception": 96,
                         "EfficientNetB3Embedder": 128, "ResNet18Embedder": 128,
                         "ResNet50Embedder": 128}


def run_name(model_class: str, config: TrainConfig) -> str:
    """``<ModelClass>_LR_<lr>_decay_<lrd|cosine>_BS_<bs>`` plus `extra_name_parts`."""
    decay = config.lr_decay if config.lr_schedule == "exponential" else "cosine"
    name = f"{model_class}_LR_{config.learning_rate}_decay_{decay}_BS_{config.batch_size}"
    return name + "".join(f"_{label}_{value}" for label, value in extra_name_parts(model_class, config.to_dict()))


def extra_name_parts(model_class: str | None, hparams: dict[str, Any]) -> list[tuple[str, Any]]:
    """(label, value) of the hyperparameters that differ from their fixed reference values, in
    field order (the fields declared with a run-name label; epochs, device and the eval/save
    periods have none, so a run can be continued with more epochs or on another device). The
    warm-up is no part under the exponential schedule (which has none), and the input size is
    compared with the model's reference size. ``hparams`` may come from an older hparams.json:
    settings it does not hold are left out."""
    parts = []
    for field, (label, reference) in name_parts().items():
        if field not in hparams:
            continue
        value = hparams[field]
        if field == "image_size":  # None: the model's own size, unknown here
            reference = REFERENCE_INPUT_SIZES.get(model_class, value) if value else value
        if field == "warmup_steps" and hparams.get("lr_schedule", "exponential") == "exponential":
            continue
        if value != reference:
            parts.append((label, _NAME_VALUES.get((field, value), value)))
    return parts


def run_folder(save_dir: Path, model_class: str, config: TrainConfig, dataset: str | None) -> Path:
    """``<save_dir>/<dataset>/<run name>``: the same flags on another dataset get their own folder.

    ``dataset`` None (a library caller with no dataset identity, or a run from before runs were
    bound to their data) gives the old place, ``<save_dir>/<run name>``.
    """
    name = run_name(model_class, config)
    return Path(save_dir) / name if dataset is None else Path(save_dir) / dataset / name


def is_run_folder(folder: Path) -> bool:
    """A visible folder holding hparams.json, training_stats.csv or a checkpoint."""
    if not folder.is_dir() or folder.name.startswith("."):
        return False
    return (folder / HPARAMS_FILE).exists() or (folder / STATS_FILE).exists() or has_checkpoints(folder)


def find_run_folders(save_dir: Path) -> list[Path]:
    """Every run under ``save_dir``: ``<dataset>/<run>`` folders and, from before runs were bound
    to their dataset (or installed from a weights zip), ``<run>`` folders directly in it."""
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        return []
    found = []
    for folder in sorted(save_dir.iterdir()):
        if is_run_folder(folder):
            found.append(folder)
        elif folder.is_dir() and not folder.name.startswith("."):
            found.extend(sub for sub in sorted(folder.iterdir()) if is_run_folder(sub))
    return found


def read_hparams(run_dir: Path) -> dict[str, Any]:
    """hparams.json of a run folder ({} when it has none)."""
    path = Path(run_dir) / HPARAMS_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err}); delete or fix it") from err


def bind_data(run_dir: Path, data: DataIdentity, train_paths: list[str], *, accept_change: bool) -> None:
    """Check that ``run_dir`` was trained on ``data``, then record its training images' digests.

    The same dataset whose files changed is refused with one line saying what changed, unless
    ``accept_change`` (``--accept_changed_data``); a changed split is always refused, since items
    it held out would then be trained on. A run continued on new content keeps the digests of
    everything it trained on before, so evaluation still leaves all of it out.
    """
    recorded = read_hparams(run_dir).get("data")
    change = describe_change(recorded, data) if recorded else None
    if change and recorded.get("split") != data.split:
        raise UserError(f"{run_dir}: trained on {DataIdentity(**recorded).describe()}, now "
                        f"{data.describe()}: {change}; pass the split flags it was trained with "
                        "(--split_seed, --eval_fraction), or use another --save_dir")
    if change and not accept_change:
        raise UserError(f"{run_dir}: trained on {DataIdentity(**recorded).describe()}, but the data "
                        f"now has {change}; pass --accept_changed_data to continue training on the "
                        "new content, or use another --save_dir to start a new run")
    digests_path = run_dir / DIGESTS_FILE
    earlier = read_digests(digests_path)
    if earlier is None or change:
        write_digests(digests_path, train_paths, keep=earlier or set())


def remove_temp_files(run_dir: Path) -> None:
    """Delete half-written files of a killed run; only call while holding the run's lock."""
    for leftover in run_dir.glob(f".*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def write_hparams(run_dir: Path, model_name: str, model_class: str, config: TrainConfig,
                  data: DataIdentity | None = None) -> None:
    """hparams.json: what trained this folder (and on which data), for people and evaluate.py."""
    values = {"model_name": model_name, "model_class": model_class, **config.to_dict()}
    if data is not None:
        values["data"] = data.to_dict()
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
    """``.lock`` in the run folder, held with an OS lock (``fcntl.flock``) and naming ``<host> <pid>``.

    Two processes training one folder would overwrite each other's checkpoints, so the second one
    stops with a UserError. The OS releases the lock when its holder dies (even by SIGKILL), so a
    stale lock file is simply taken over, and two processes can never both take it over: the
    kernel grants the lock to one. The file is removed on exit; a process that locked a file
    just removed by its previous holder sees the path now names another file and tries again.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self.owner = f"{socket.gethostname()} {os.getpid()}"
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        for _ in range(10):
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UserError(f"{self.path}: another process ({self._read() or 'unknown'}) is "
                                "training this run folder; wait for it to finish") from None
            if self._is_current(fd):
                os.ftruncate(fd, 0)
                os.write(fd, self.owner.encode())
                self._fd = fd
                return self
            os.close(fd)  # the holder removed this file as we opened it: lock the new one
        raise UserError(f"{self.path}: could not take the lock; retry")

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still locked, so no one locks a removed file
            os.close(self._fd)
            self._fd = None

    def _is_current(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _read(self) -> str | None:
        try:
            return self.path.read_text().strip()
        except FileNotFoundError:
            return None
