"""evaluate.py end to end: run lookup, checkpoint choice, figures, weights zips, photo queries."""
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import pipeline
from misc.cli import run_main
from tests.datasets import make_dataset
from tests.http_server import Route

TINY = ["--batch_size", "8", "-K", "2", "--no_augment", "-lrd", "0.95"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A simple_net trained 2 epochs on a tiny dataset; returns (dataset, save_dir, common args)."""
    tmp = tmp_path_factory.mktemp("eval")
    dataset = make_dataset(tmp / "shop", num_items=12, per_item=4)
    save_dir = tmp / "models"
    common = ["--dataset", str(dataset), "--dataset_dir", str(tmp / "data"), "--save_dir", str(save_dir),
              *TINY]
    assert pipeline.main(["-m", "simple_net", "--epochs", "2", "--save_every", "1", *common]) == 0
    return dataset, save_dir, common


def run_evaluate(argv, capsys):
    code = run_main(evaluate.main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_latest_and_numbered_checkpoint(trained, capsys):
    _, save_dir, common = trained
    code, out, _ = run_evaluate(["--model", "simple_net", "--no_figures", *common], capsys)
    assert code == 0 and "epoch 2 of" in out and "precision@1" in out and "MAP@R" in out
    code, out, _ = run_evaluate(["--model", "simple_net", "--checkpoint", "1", "--no_figures", *common], capsys)
    assert code == 0 and "epoch 1 of" in out


def test_missing_epoch_lists_the_available_ones(trained, capsys):
    _, _, common = trained
    code, _, err = run_evaluate(["--model", "simple_net", "--checkpoint", "7", *common], capsys)
    assert code == 2 and "epoch 7" in err and "1, 2" in err and "Traceback" not in err


def test_no_matching_run_names_the_folder_and_the_runs_that_exist(trained, capsys):
    _, _, common = trained
    code, _, err = run_evaluate(["--model", "simple_net", "-lr", "0.5", *common], capsys)
    assert code == 2 and "SimpleNet_LR_0.5_decay_0.95_BS_8" in err and "SimpleNet_LR_0.001_decay" in err


def test_simple_needs_no_checkpoint(trained, capsys):
    _, _, common = trained
    code, out, _ = run_evaluate(["--model", "simple", "--no_figures", *common], capsys)
    assert code == 0 and "in_any@5" in out


def test_saved_figure_pages_hold_the_requested_queries(trained, capsys, tmp_path):
    _, _, common = trained
    argv = ["--model", "simple_net", "--save_fig", "--num_disp", "2", "--show_nums", "0", "3", "5",
            "--num_pages", "0", *common]
    code, out, _ = run_evaluate(argv, capsys)
    assert code == 0 and "saved 2 figure page(s) of 3 queries" in out
    data_dir = common[common.index("--dataset_dir") + 1]
    pages = sorted((tmp_path.parent / data_dir).glob("files_to_gitignore/eval_figs/simple_net_both/*.png"))
    assert [p.name for p in pages] == ["1.png", "2.png"]
    first, second = (Image.open(p) for p in pages)
    assert first.width == second.width and first.height > second.height  # 2 rows vs 1 row


def test_fail_case_shows_only_queries_without_a_same_item_neighbour(trained, capsys):
    _, _, common = trained
    code, out, _ = run_evaluate(["--model", "simple", "--show_case", "fail", "--save_fig", *common], capsys)
    assert code == 0 and ("saved 1 figure page(s)" in out or "no query matches" in out)


def test_weights_zip_round_trip_over_http(trained, capsys, tmp_path, http_server):
    _, save_dir, common = trained
    out_zip = tmp_path / "weights.zip"
    code, out, _ = run_evaluate(["--model", "simple_net", "--export_weights", str(out_zip), *common], capsys)
    assert code == 0 and out_zip.exists()
    names = zipfile.ZipFile(out_zip).namelist()
    assert "SimpleNet_LR_0.001_decay_0.95_BS_8_K_2_augment_False/2.pth" in names
    server = http_server({"/weights.zip": Route(body=out_zip.read_bytes())})
    other_save = tmp_path / "fresh_models"
    fresh = [a if a != str(save_dir) else str(other_save) for a in common]
    argv = ["--model", "simple_net", "--download_weights", "--weights_url", server.url("/weights.zip"),
            "--no_figures", *fresh]
    code, out, err = run_evaluate(argv, capsys)
    assert code == 0, err
    assert "epoch 2 of" in out and (other_save / "SimpleNet_LR_0.001_decay_0.95_BS_8_K_2_augment_False" / "2.pth").exists()
    again_code, _, _ = run_evaluate(argv, capsys)  # identical run already installed: reused
    assert again_code == 0


def test_weights_zip_without_a_run_is_a_clear_error(trained, capsys, tmp_path, http_server):
    _, _, common = trained
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.txt", "no checkpoints here")
    server = http_server({"/empty.zip": Route(body=empty.read_bytes())})
    argv = ["--model", "simple_net", "--download_weights", "--weights_url", server.url("/empty.zip"),
            "--save_dir", str(tmp_path / "m"), *common[:4]]
    code, _, err = run_evaluate(argv, capsys)
    assert code == 2 and "holds no run folder" in err


def test_weights_zip_of_an_unknown_architecture_is_refused(trained, capsys, tmp_path, http_server):
    _, save_dir, common = trained
    run = next(save_dir.glob("SimpleNet_*"))
    state = torch.load(run / "2.pth", weights_only=True)
    state["model_name"] = "mystery_net"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        buffer = tmp_path / "2.pth"
        torch.save(state, buffer)
        archive.write(buffer, "Mystery_run/2.pth")
    server = http_server({"/bad.zip": Route(body=bad.read_bytes())})
    argv = ["--model", "simple_net", "--download_weights", "--weights_url", server.url("/bad.zip"),
            "--save_dir", str(tmp_path / "m"), *common[:4]]
    code, _, err = run_evaluate(argv, capsys)
    assert code == 2 and "unknown model 'mystery_net'" in err


def test_photo_query_and_saved_embeddings(trained, capsys, tmp_path):
    dataset, _, common = trained
    photo = next((dataset / "item_002").iterdir())
    npz = tmp_path / "gallery.npz"
    argv = ["--model", "simple", "--query", str(photo), "--save_fig", "--save_embeddings", str(npz), *common]
    code, out, _ = run_evaluate(argv, capsys)
    assert code == 0 and f"{photo}:" in out and "saved the query figure" in out
    saved = np.load(npz)
    assert saved["embeddings"].shape[0] == len(saved["paths"]) == len(saved["items"])


def test_unreadable_query_photo_is_a_one_line_error(trained, capsys, tmp_path):
    _, _, common = trained
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"not a photo")
    code, _, err = run_evaluate(["--model", "simple", "--query", str(bad), *common], capsys)
    assert code == 2 and "--query" in err and str(bad) in err
