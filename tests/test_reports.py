"""reports/: metrics.json, tidy training curves, their plot, and the embedding plot with thumbnails."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import UserError
from evaluation.embedding_plot import plot_embedding, project_2d, spread_sample
from evaluation.reports import write_reports
from training.curves import read_curve
from training.runs import STATS_FILE, StatsFile

REPO = Path(__file__).resolve().parents[1]
MAGENTA = (255, 0, 255)  # thumbnail colour that no part of the plot itself uses


class FakeImageSet:
    """`data.dataset.ImageSet` stand-in: plain magenta images, so thumbnails can be found by colour."""

    def __init__(self, items: int, per_item: int, size: int = 12):
        self.labels = np.repeat(np.arange(items), per_item).astype(np.int64)
        self.items = [f"item_{i:04d}" for i in range(items)]
        self.paths = [f"{self.items[label]}/{n}.jpg" for n, label in enumerate(self.labels)]
        self.size = size

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows):
        return np.full((len(rows), self.size, self.size, 3), MAGENTA, dtype=np.uint8)


def clustered_embeddings(image_set: FakeImageSet, dim: int = 8) -> torch.Tensor:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(image_set.items), dim))
    return torch.from_numpy(centres[image_set.labels] + 0.05 * rng.normal(size=(len(image_set), dim))).float()


def make_run(folder: Path) -> Path:
    """A run folder with the stats a 4-epoch training writes (epoch 0 and even epochs evaluated)."""
    folder.mkdir(parents=True)
    stats = StatsFile(folder / STATS_FILE)
    stats.add({"epoch": 0, "evaluation score": 40.0, "precision@1": 0.2, "map@r": 0.1, "lr": 1e-3})
    for epoch, loss in ((1, 0.5), (2, 0.3), (3, 0.25), (4, 0.2)):
        row = {"epoch": epoch, "mean training loss": loss, "triplets": 10.0, "lr": 1e-3, "seconds": 1.5}
        if epoch % 2 == 0:
            row |= {"evaluation score": 40.0 + 10 * epoch, "precision@1": 0.1 * epoch, "map@r": 0.05 * epoch}
        stats.add(row)
    return folder


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def magenta_pixels(path: Path) -> int:
    return int(np.all(png(path) == MAGENTA, axis=-1).sum())


def test_write_reports_writes_every_file(tmp_path):
    image_set = FakeImageSet(items=6, per_item=4)
    metrics = {"precision@1": np.float32(0.5), "map@r": torch.tensor(0.25), "num_queries": np.int64(24),
               "in_any@5": 0.75, "broken": float("nan")}
    written = write_reports(tmp_path / "reports", metrics=metrics, run_dir=make_run(tmp_path / "run"),
                            embeddings=clustered_embeddings(image_set), image_set=image_set)

    assert set(written) == {"metrics", "curves_csv", "curves_png", "embedding_png"}
    assert written["metrics"] == tmp_path / "reports" / "metrics.json"
    assert written["curves_png"].parent == written["embedding_png"].parent == tmp_path / "reports" / "plots"
    assert json.loads(written["metrics"].read_text()) == {  # in %, as the console table; counts as counts
        "precision@1": 50.0, "map@r": 25.0, "num_queries": 24, "in_any@5": 75.0, "broken": None}

    with open(written["curves_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:5] == ["epoch", "loss", "evaluation_score", "precision_at_1", "map_at_r"]
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert rows[0]["loss"] == "" and rows[1]["evaluation_score"] == "" and rows[4]["evaluation_score"] == "80"

    curves = png(written["curves_png"])
    assert curves.shape == (800, 1200, 3) and curves.std() > 10  # drawn, not blank
    assert png(written["embedding_png"]).shape == (900, 1100, 3)
    assert magenta_pixels(written["embedding_png"]) > 0


def test_reports_without_a_run_or_embeddings_hold_the_metrics_only(tmp_path):
    written = write_reports(tmp_path, metrics={"precision@1": 0.1}, run_dir=None, embeddings=None, image_set=None)
    assert list(written) == ["metrics"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_thumbnails_are_drawn_for_the_sample_only(tmp_path):
    image_set = FakeImageSet(items=20, per_item=3)
    emb = clustered_embeddings(image_set)
    none = plot_embedding(emb, image_set, tmp_path / "none.png", max_thumbnails=0)
    few = plot_embedding(emb, image_set, tmp_path / "few.png", max_thumbnails=3)
    many = plot_embedding(emb, image_set, tmp_path / "many.png", max_thumbnails=30)
    assert magenta_pixels(none) == 0 < magenta_pixels(few) < magenta_pixels(many)


def test_tsne_projection_on_tiny_data(tmp_path):
    image_set = FakeImageSet(items=3, per_item=3)
    emb = clustered_embeddings(image_set, dim=5)
    points, axes = project_2d(emb, "tsne")
    assert points.shape == (9, 2) and np.isfinite(points).all() and axes == ("t-SNE 1", "t-SNE 2")
    assert plot_embedding(emb, image_set, tmp_path / "tsne.png", projection="tsne").stat().st_size > 10_000


def test_projection_edge_cases():
    assert project_2d(np.arange(4.0).reshape(4, 1)).points.shape == (4, 2)
    with pytest.raises(UserError, match="--projection umap"):
        project_2d(np.zeros((5, 3)), "umap")
    with pytest.raises(UserError, match="at least 3 images"):
        project_2d(np.zeros((2, 3)))


def test_pca_axes_say_how_much_variance_they_hold():
    signs = np.array([[1, 1, 1], [1, 1, -1], [1, -1, 1], [1, -1, -1],
                      [-1, 1, 1], [-1, 1, -1], [-1, -1, 1], [-1, -1, -1]], dtype=float)
    emb = signs * np.array([4.0, 2.0, 1.0])  # centred, orthogonal columns: variances 16 : 4 : 1
    _, (x_label, y_label) = project_2d(emb, "pca")
    assert (x_label, y_label) == ("PC1 (76% of the variance)", "PC2 (19%)")  # 16/21, 4/21


def test_spread_sample_picks_distinct_far_apart_points():
    points = np.array([[0, 0], [0.1, 0], [10, 0], [10, 0.1], [5, 5]], dtype=float)
    chosen = set(spread_sample(points, 3).tolist())
    assert len(chosen) == 3 and all(chosen & cluster for cluster in ({0, 1}, {2, 3}, {4}))
    assert sorted(spread_sample(points, 10).tolist()) == [0, 1, 2, 3, 4]


def test_missing_stats_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="training_stats.csv: no training statistics"):
        read_curve(tmp_path)


def test_plot_training_script_draws_several_runs(tmp_path):
    runs = [make_run(tmp_path / "A_LR_0.001"), make_run(tmp_path / "B_LR_0.01")]
    out = tmp_path / "plots" / "curves.png"
    result = subprocess.run([sys.executable, "-m", "misc.plot_training", *map(str, runs), "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert out.exists() and png(out).shape == (800, 1200, 3)
