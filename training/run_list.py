"""Every run under a save_dir side by side: hyperparameters, last checkpoint, best scores, curves.

Run folders accumulate as hyperparameters are tried (each setting gets its own folder, see
training/runs.py); this answers "which one was best, and is it still improving?" without opening
each training_stats.csv. `evaluate.py --list_runs` prints it; `python -m misc.compare_runs` also
plots the runs' curves.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from common.errors import UserError
from training.checkpoints import CheckpointSaver
from training.curves import SCORE, Curve, read_curve
from training.runs import HPARAMS_FILE, STATS_FILE, extra_name_parts, find_run_folders

_MAIN_KEYS = ("model_name", "model_class", "learning_rate", "lr_decay", "batch_size")
# Folder names of runs without hparams.json (the original's, or downloaded weights).
_NAME = re.compile(r"^(?P<model_class>.+?)_LR_(?P<learning_rate>[^_]+)_decay_(?P<lr_decay>[^_]+)"
                   r"_BS_(?P<batch_size>\d+)")


def list_runs(save_dir: Path) -> list[dict[str, Any]]:
    """One dict per run folder under ``save_dir``, best evaluation score first.

    Keys: name (the folder under save_dir, "(dataset unknown)" when it records no dataset),
    dataset, path, model, model_class, lr, lr_decay, batch_size, other (the remaining
    hyperparameters), last_checkpoint, last_epoch (last row of the stats), best_score and
    best_score_epoch (in_any@5 in %), best_precision_at_1 (in %). Values a run does not have are None.
    A folder is a run when it holds hparams.json, training_stats.csv or a checkpoint; runs are
    found in save_dir/<dataset>/ and, from before runs were bound to their data, in save_dir.
    """
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        raise UserError(f"--save_dir {save_dir}: no such folder; train a model first "
                        "(python pipeline.py) or point --save_dir at the folder holding the runs")
    runs = [_describe(folder, save_dir) for folder in find_run_folders(save_dir)]
    return sorted(runs, key=lambda run: (run["best_score"] is None, -(run["best_score"] or 0), run["name"]))


def _describe(folder: Path, save_dir: Path) -> dict[str, Any]:
    hparams = _hparams(folder)
    curve = read_curve(folder) if (folder / STATS_FILE).exists() else []
    epochs = CheckpointSaver(folder).epochs()
    best_epoch, best_score = _best(curve, SCORE)
    data = hparams.get("data")
    return {
        "name": folder.relative_to(save_dir).as_posix() + ("" if data else " (dataset unknown)"),
        "dataset": data["name"] if data else None,
        "path": folder,
        "model": hparams.get("model_name"),
        "model_class": hparams.get("model_class"),
        "lr": hparams.get("learning_rate"),
        "lr_decay": "cosine" if hparams.get("lr_schedule") == "cosine" else hparams.get("lr_decay"),
        "batch_size": hparams.get("batch_size"),
        "other": {k: v for k, v in hparams.items() if k not in _MAIN_KEYS + ("data",)},
        "last_checkpoint": epochs[-1] if epochs else None,
        "last_epoch": int(curve[-1]["epoch"]) if curve else None,
        "best_score": best_score,
        "best_score_epoch": best_epoch,
        "best_precision_at_1": _best(curve, "precision_at_1")[1],
    }


def _hparams(folder: Path) -> dict[str, Any]:
    """hparams.json, else what the folder name says (model class, lr, decay, batch size)."""
    path = folder / HPARAMS_FILE
    if path.exists():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: not valid JSON ({err}); delete or fix it") from err
    match = _NAME.match(folder.name)
    if not match:
        return {}
    values = match.groupdict()
    return {"model_class": values["model_class"], "learning_rate": float(values["learning_rate"]),
            "lr_decay": float(values["lr_decay"]), "batch_size": int(values["batch_size"])}


def _best(curve: Curve, column: str) -> tuple[int | None, float | None]:
    """(epoch, value) of the highest value of ``column``; the earliest epoch wins ties."""
    scored = [(row[column], -row["epoch"]) for row in curve if row.get(column) is not None]
    if not scored:
        return None, None
    value, negative_epoch = max(scored)
    return int(-negative_epoch), value


def format_runs_table(runs: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table, one run per line; the run folder last since its name is long."""
    if not runs:
        return "no runs"
    header = ("model", "lr", "decay", "BS", "other", "ckpt", "best score", "at epoch", "best p@1", "run folder")
    rows = [header] + [_table_row(run) for run in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _table_row(run: dict[str, Any]) -> tuple[str, ...]:
    return (_text(run["model"] or run["model_class"]), _text(run["lr"]), _text(run["lr_decay"]),
            _text(run["batch_size"]), _other(run["other"]), _text(run["last_checkpoint"]),
            _text(run["best_score"], "{:.1f}%"), _text(run["best_score_epoch"]),
            _text(run["best_precision_at_1"], "{:.1f}%"), run["name"])


def _other(hparams: dict[str, Any]) -> str:
    """The hyperparameters that name the run beyond LR/decay/BS, e.g. 'K=8 mining=hard'."""
    parts = extra_name_parts(hparams.get("model_class"), hparams)
    return " ".join(f"{label}={value}" for label, value in parts) or "-"


def _text(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)

