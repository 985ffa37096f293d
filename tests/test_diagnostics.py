"""Diagnostics: collapse is visible in the per-epoch numbers, and the curves show p@1 and MAP@R."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from misc.plot_training import plot_curves
from training.diagnostics import COLUMNS, batch_diagnostics, epoch_diagnostics


def test_collapsed_embeddings_show_zero_spread_and_distances() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    collapsed = F.normalize(torch.ones(6, 4), dim=1)
    d_ap, d_an, spread = batch_diagnostics(collapsed, labels).tolist()
    assert spread == pytest.approx(0, abs=1e-6) and d_an == pytest.approx(0, abs=1e-5)

    separated = torch.eye(4)[[0, 0, 1, 1, 2, 2]]
    d_ap, d_an, spread = batch_diagnostics(separated, labels).tolist()
    assert d_ap == pytest.approx(0, abs=1e-5) and d_an == pytest.approx(2 ** 0.5) and spread > 0.3


def test_epoch_diagnostics_average_the_steps_and_share_the_active_triplets() -> None:
    sums = torch.tensor([1.0, 3.0, 0.2])  # two steps
    values = epoch_diagnostics(sums, steps=2, active=30, mined=120)
    assert list(values) == list(COLUMNS)
    assert values == pytest.approx({"d_ap": 0.5, "d_an": 1.5, "active share": 0.25, "emb std": 0.1})


def test_training_curves_plot_precision_at_1_and_map_at_r(tmp_path: Path, monkeypatch) -> None:
    drawn: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: drawn.append(fig))
    curve = [{"epoch": 0.0, "evaluation_score": 30.0, "precision_at_1": 10.0, "map_at_r": 5.0},   # in %, as
             {"epoch": 1.0, "loss": 0.2, "evaluation_score": 60.0, "precision_at_1": 50.0, "map_at_r": 30.0}]  # stored
    plot_curves({"run": curve}, tmp_path / "curves.png")
    axes = {ax.get_title(): ax for ax in drawn[0].axes}
    assert {"training loss", "evaluation score", "precision@1", "MAP@R"} <= set(axes)
    assert list(axes["precision@1"].lines[0].get_ydata()) == pytest.approx([10, 50])
    assert list(axes["MAP@R"].lines[0].get_ydata()) == pytest.approx([5, 30])
