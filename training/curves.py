"""A run's training_stats.csv read back as curves: one dict of numbers per epoch.

The stats file is written by training/runs.py's StatsFile; run listings, reports and plots read
it through here, with tidy column names (``evaluation score`` -> ``evaluation_score``).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from common.errors import UserError
from training.runs import STATS_COLUMNS, STATS_FILE

Curve = list[dict[str, float | None]]  # one dict per epoch, tidy column names

LOSS, SCORE, PRECISION, MAP_R = "loss", "evaluation_score", "precision_at_1", "map_at_r"
_RENAMED = {"mean training loss": LOSS}


def tidy_name(column: str) -> str:
    """A stats column as a plain identifier: 'evaluation score' -> evaluation_score, map@r -> map_at_r."""
    return _RENAMED.get(column) or re.sub(r"\W+", "_", column.replace("@", "_at_")).strip("_")


TIDY_COLUMNS = tuple(tidy_name(c) for c in STATS_COLUMNS)


def read_curve(run_dir: Path) -> Curve:
    """The run's per-epoch statistics, numbers as floats and empty cells (no evaluation) as None."""
    path = Path(run_dir) / STATS_FILE
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise UserError(f"{path}: no training statistics; is {run_dir} a run folder "
                        f"(<save_dir>/<Model>_LR_...)?") from None
    try:
        return [{tidy_name(k): _number(v) for k, v in row.items() if k} for row in rows]
    except ValueError as err:
        raise UserError(f"{path}: not a training statistics file ({err}); delete or fix it") from err


def _number(text: str | None) -> float | None:
    return None if text in (None, "") else float(text)
