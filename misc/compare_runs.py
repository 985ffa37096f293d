"""Every run under a save_dir side by side: hyperparameters, last checkpoint, best scores, curves.

Run folders accumulate as hyperparameters are tried (each setting gets its own folder, see
training/runs.py); this answers "which one was best, and is it still improving?" without opening
each training_stats.csv.

    python misc/compare_runs.py --save_dir data/files_to_gitignore/models [--plot runs.png]
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
from dataclasses import fields  # noqa: E402
from typing import Any, Sequence  # noqa: E402

from misc.errors import UserError  # noqa: E402
from misc.options import DEFAULT_SAVE_DIR  # noqa: E402
from misc.plot_training import SCORE, Curve, plot_curves, read_curve  # noqa: E402
from training.checkpoints import available_epochs  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.runs import HPARAMS_FILE, STATS_FILE  # noqa: E402

# Shown in the table's "other" column when they differ from their defaults (they name runs too).
OTHER_SHOWN = {"lr_schedule": "schedule", "warmup_steps": "warmup", "images_per_item": "K",
               "margin": "margin", "mining": "mining", "seed": "seed", "augment": "augment",
               "xbm": "xbm", "image_size": "size"}
_MAIN_KEYS = ("model_name", "model_class", "learning_rate", "lr_decay", "batch_size")
# Folder names of runs without hparams.json (the original's, or downloaded weights).
_NAME = re.compile(r"^(?P<model_class>.+?)_LR_(?P<learning_rate>[^_]+)_decay_(?P<lr_decay>[^_]+)"
                   r"_BS_(?P<batch_size>\d+)")


def list_runs(save_dir: Path) -> list[dict[str, Any]]:
    """One dict per run folder under ``save_dir``, best evaluation score first.

    Keys: name, path, model, model_class, lr, lr_decay, batch_size, other (the remaining
    hyperparameters), last_checkpoint, last_epoch (last row of the stats), best_score and
    best_score_epoch (in_any@5 in %), best_precision_at_1. Values a run does not have are None.
    A folder is a run when it holds hparams.json, training_stats.csv or an <epoch>.pth.
    """
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        raise UserError(f"--save_dir {save_dir}: no such folder; train a model first "
                        "(python pipeline.py) or point --save_dir at the folder holding the runs")
    runs = [_describe(folder) for folder in sorted(save_dir.iterdir()) if _is_run(folder)]
    return sorted(runs, key=lambda run: (run["best_score"] is None, -(run["best_score"] or 0), run["name"]))


def _is_run(folder: Path) -> bool:
    if not folder.is_dir() or folder.name.startswith("."):
        return False
    return (folder / HPARAMS_FILE).exists() or (folder / STATS_FILE).exists() or bool(available_epochs(folder))


def _describe(folder: Path) -> dict[str, Any]:
    hparams = _hparams(folder)
    curve = read_curve(folder) if (folder / STATS_FILE).exists() else []
    epochs = available_epochs(folder)
    best_epoch, best_score = _best(curve, SCORE)
    return {
        "name": folder.name,
        "path": folder,
        "model": hparams.get("model_name"),
        "model_class": hparams.get("model_class"),
        "lr": hparams.get("learning_rate"),
        "lr_decay": hparams.get("lr_decay"),
        "batch_size": hparams.get("batch_size"),
        "other": {k: v for k, v in hparams.items() if k not in _MAIN_KEYS},
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
            _text(run["best_precision_at_1"], "{:.3f}"), run["name"])


def _other(hparams: dict[str, Any]) -> str:
    """The name-changing hyperparameters that differ from their defaults, e.g. 'K=8 mining=hard'."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    parts = [f"{label}={hparams[key]}" for key, label in OTHER_SHOWN.items()
             if key in hparams and hparams[key] != defaults[key]]
    return " ".join(parts) or "-"


def _text(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def plot_runs(runs: Sequence[dict[str, Any]], out: Path) -> Path:
    """Loss and evaluation score per epoch of every run with statistics, on one figure."""
    curves = {run["name"]: read_curve(run["path"]) for run in runs if (run["path"] / STATS_FILE).exists()}
    return plot_curves(curves, out, title=f"{len(curves)} runs")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare the training runs kept under a save_dir.")
    parser.add_argument("--save_dir", type=Path, default=Path(DEFAULT_SAVE_DIR),
                        help=f"folder holding the run folders (default: {DEFAULT_SAVE_DIR})")
    parser.add_argument("--plot", type=Path, metavar="FILE", default=None,
                        help="also draw every run's loss and evaluation score into this PNG")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    args = parser.parse_args(argv)
    runs = list_runs(args.save_dir)
    print(format_runs_table(runs) if runs else f"no run folders in {args.save_dir}")
    if args.plot is not None and runs:
        print(f"wrote {plot_runs(runs, args.plot)}")
    return 0


if __name__ == "__main__":
    from misc.cli import run_main
    raise SystemExit(run_main(main))
