"""The reports folder of an evaluation: metrics, training curves and the embedding picture.

Written by `evaluate.py --reports_dir DIR` (the `evaluate` stage of dvc.yaml) so that one folder
holds what a person or `dvc metrics show` / `dvc plots show` needs to judge a run:

    DIR/metrics.json               final retrieval metrics in % (counts as integers)
    DIR/training_curves.csv        the run's training_stats.csv with tidy column names
    DIR/plots/training_curves.png  loss and evaluation score per epoch
    DIR/plots/embedding.png        eval embeddings in 2-D, coloured by item, with thumbnails
"""
from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from common.atomic import atomic_write_text
from evaluation.curves import plot_curves, write_curve_csv
from evaluation.embedding_plot import ImageSource, plot_embedding
from evaluation.report import in_percent
from training.curves import read_curve

DEFAULT_REPORTS_DIR = Path("reports")
METRICS_FILE = "metrics.json"
CURVES_CSV = "training_curves.csv"
PLOTS_DIR = "plots"
CURVES_PNG = "training_curves.png"
EMBEDDING_PNG = "embedding.png"


def write_reports(out_dir: Path, *, metrics: Mapping[str, Any], run_dir: Path | None,
                  embeddings: torch.Tensor | np.ndarray | None, image_set: ImageSource | None,
                  projection: str = "tsne", max_thumbnails: int = 60) -> dict[str, Path]:
    """Write the reports that have inputs and return {"metrics", "curves_csv", "curves_png",
    "embedding_png"} -> path for those written.

    ``metrics`` are fractions, as the metric functions return them; metrics.json holds them in
    percent, the scale of the console table and training_stats.csv.
    ``run_dir`` None (an untrained model such as `simple`) gives no training curves; embeddings
    or image_set None gives no embedding plot. metrics.json is always written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"metrics": write_metrics(in_percent(metrics), out_dir / METRICS_FILE)}
    if run_dir is not None:
        curve = read_curve(Path(run_dir))
        written["curves_csv"] = write_curve_csv(curve, out_dir / CURVES_CSV)
        written["curves_png"] = plot_curves({Path(run_dir).name: curve}, out_dir / PLOTS_DIR / CURVES_PNG,
                                            title=Path(run_dir).name)
    if embeddings is not None and image_set is not None:
        written["embedding_png"] = plot_embedding(embeddings, image_set, out_dir / PLOTS_DIR / EMBEDDING_PNG,
                                                  projection=projection, max_thumbnails=max_thumbnails)
    return written


def write_metrics(metrics: Mapping[str, Any], path: Path) -> Path:
    """metrics.json with plain JSON values (tensors and NumPy scalars converted, NaN as null),
    because `dvc metrics show`/`diff` and other tools read it as strict JSON."""
    atomic_write_text(path, json.dumps(_plain(metrics), indent=2, sort_keys=True) + "\n")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return _plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    return value if value is None or isinstance(value, str) else str(value)
