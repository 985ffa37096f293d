"""--image_size: a model trains and is evaluated at another input size, named in its run folder."""
from __future__ import annotations

import evaluate
import pipeline
from common.cli import run_main
from tests.datasets import make_dataset
from training.runs import find_run_folders


def test_a_run_at_another_size_is_named_by_it_and_found_again(tmp_path, capsys):
    dataset = make_dataset(tmp_path / "shop", num_items=8, per_item=4)
    common = ["--dataset", str(dataset), "--dataset_dir", str(tmp_path / "data"),
              "--save_dir", str(tmp_path / "models"), "--batch_size", "8", "-K", "2",
              "--augment", "strong", "--image_size", "32"]
    assert pipeline.main(["-m", "simple_net", "--epochs", "1", *common]) == 0
    (run_dir,) = find_run_folders(tmp_path / "models")
    assert run_dir.name.endswith("_size_32")
    assert any(p.name.startswith("shop") and "_32px_" in p.name
               for p in (tmp_path / "data" / "files_to_gitignore" / "cache").iterdir())
    capsys.readouterr()
    assert run_main(evaluate.main, ["--model", "simple_net", "--no_figures", *common]) == 0
    assert "epoch 1 of" in capsys.readouterr().out
