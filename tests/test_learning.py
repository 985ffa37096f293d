"""A network that trains must learn: on held-out items it beats its untrained self and `simple`."""
import csv

import pytest

import pipeline
from data.synthetic import generate_synthetic
from training.workflow import run_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_simple_net_learns_held_out_items(tmp_path):
    root = generate_synthetic(tmp_path / "synthetic", num_items=100, image_size=64)
    args = pipeline.build_parser().parse_args([
        "-m", "simple", "simple_net", "--dataset", str(root), "--dataset_dir", str(tmp_path / "data"),
        "--save_dir", str(tmp_path / "models"), "--epochs", "8", "--batch_size", "32", "--warmup_steps", "10",
        "--eval_every", "100"])
    results = run_pipeline(args)
    run_dir = next((tmp_path / "models").glob("*/SimpleNet_*"))  # <save_dir>/<dataset>/<run>
    with open(run_dir / "training_stats.csv") as f:
        rows = list(csv.DictReader(f))
    untrained = float(rows[0]["precision@1"]) / 100  # the CSV is in %, the results are fractions
    trained = results["simple_net"]["precision@1"]
    baseline = results["simple"]["precision@1"]
    assert [r["epoch"] for r in rows] == [str(e) for e in range(9)]
    assert abs(float(rows[-1]["precision@1"]) / 100 - trained) < 1e-5  # the run's last row is what we report
    assert trained >= untrained + 0.25, (untrained, trained)
    assert trained >= baseline + 0.20, (baseline, trained)
