"""evaluate.py end to end: run lookup, checkpoint choice, figures, weights zips, photo queries."""
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
from common.cli import run_main
from evaluation.figures import DIFF_COLOUR, SAME_COLOUR
from tests.http_server import Route
from tests.pages import cell_colour, frame_colour, hex_rgb, page_layout


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
    figs = tmp_path.parent / data_dir / "files_to_gitignore" / "eval_figs"
    pages = sorted(figs.glob("simple_net/*_epoch2_nums_0-3-5/*.png"))
    assert [p.name for p in pages] == ["1.png", "2.png"]
    with Image.open(pages[0]) as first, Image.open(pages[1]) as second:
        assert first.width == second.width and first.height > second.height  # 2 rows vs 1 row


# Held-out greys per item, chosen so that with 3 neighbours some queries find their item only at
# the 2nd or 3rd neighbour and some never do: a filter on the first neighbour alone misfiles them.
GALLERY_GREYS = {"item_a": (10, 120), "item_b": (40, 230), "item_c": (75, 160), "item_d": (190, 215)}
FIGURE_K = 3


@pytest.fixture(scope="module")
def grey_shop(tmp_path_factory):
    """A pre-split shop of solid grey images and the expected neighbours of every held-out image.

    Returns (common args, greys, items, neighbours): per gallery row (evaluate.py's order, read
    back from --save_embeddings) its grey, its item and its FIGURE_K nearest other rows, found by
    brute force over the saved embeddings.
    """
    tmp = tmp_path_factory.mktemp("greys")
    shop = tmp / "shop"
    for split, greys in [("train", {"item_t": (128, 129)}), ("test", GALLERY_GREYS)]:
        for item, values in greys.items():
            (shop / split / item).mkdir(parents=True)
            for grey in values:
                Image.new("RGB", (24, 24), (grey,) * 3).save(shop / split / item / f"g{grey}.png")
    common = ["--model", "simple", "--dataset", str(shop), "--dataset_dir", str(tmp / "data"),
              "--save_dir", str(tmp / "models"), "--num_neighbours", str(FIGURE_K)]
    npz = tmp / "gallery.npz"
    assert run_main(evaluate.main, [*common, "--no_figures", "--save_embeddings", str(npz)]) == 0
    saved = np.load(npz)
    greys = np.array([int(Path(p).stem[1:]) for p in saved["paths"]])
    dist = np.linalg.norm(saved["embeddings"][:, None] - saved["embeddings"][None], axis=2)
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")
    gaps = np.diff(np.take_along_axis(dist, order, axis=1)[:, :FIGURE_K + 1], axis=1)
    assert gaps.min() > 1e-3, "gallery greys give tied neighbours; the expected order is ambiguous"
    return common, greys, saved["items"], order[:, :FIGURE_K], tmp / "data"


@pytest.mark.parametrize("case", ["pass", "fail", "both"])
def test_figure_pages_show_each_query_beside_its_true_neighbours(grey_shop, case, capsys):
    common, greys, items, neighbours, data_dir = grey_shop
    same = items[neighbours] == items[:, None]
    late_pass = same.any(axis=1) & ~same[:, 0]
    assert late_pass.any() and (~same.any(axis=1)).any()  # the greys make both kinds of query
    expected_rows = {"pass": np.flatnonzero(same.any(axis=1)),
                     "fail": np.flatnonzero(~same.any(axis=1)), "both": np.arange(len(items))}[case]
    argv = [*common, "--save_fig", "--show_case", case, "--num_disp", "2", "--num_pages", "0"]
    code, out, _ = run_evaluate(argv, capsys)
    assert code == 0, out
    pages = sorted((data_dir / "files_to_gitignore" / "eval_figs" / "simple" / f"untrained_{case}").glob("*.png"),
                   key=lambda p: int(p.stem))
    assert f"saved {len(pages)} figure page(s) of {len(expected_rows)} queries" in out
    shown = []
    for path in pages:
        with Image.open(path) as image:
            png = image.convert("RGB")
        layout = page_layout(png, cols=FIGURE_K + 1, max_rows=2)
        for r in range(layout.rows):
            cells = [_grey_row(png, layout, r, c, greys) for c in range(FIGURE_K + 1)]
            query = cells[0]
            shown.append(query)
            assert cells[1:] == list(neighbours[query]), (path, r)
            for c, neighbour in enumerate(cells[1:], 1):
                mark = SAME_COLOUR if items[neighbour] == items[query] else DIFF_COLOUR
                assert np.abs(frame_colour(png, layout, r, c) - hex_rgb(mark)).max() <= 8, (path, r, c)
    assert shown == list(expected_rows)


def _grey_row(png, layout, row, col, greys) -> int:
    """The gallery row whose grey is drawn in the cell (row, col) of a page."""
    value = cell_colour(png, layout, row, col)
    match = np.flatnonzero(np.abs(greys - value.mean()) <= 3)
    assert len(match) == 1 and np.ptp(value) <= 3, (row, col, value)
    return int(match[0])


def test_weights_zip_round_trip_over_http(trained, capsys, tmp_path, http_server):
    _, save_dir, common = trained
    out_zip = tmp_path / "weights.zip"
    code, out, _ = run_evaluate(["--model", "simple_net", "--export_weights", str(out_zip), *common], capsys)
    assert code == 0 and out_zip.exists()
    names = zipfile.ZipFile(out_zip).namelist()
    run = "SimpleNet_LR_0.001_decay_0.95_BS_8_K_2_augment_False"
    assert f"{run}/2.pth" in names and f"{run}/last.pth" not in names  # a copy of 2.pth: packed once
    assert json.loads(zipfile.ZipFile(out_zip).read(f"{run}/checkpoint_aliases.json"))["last.pth"] == "2.pth"
    server = http_server({"/weights.zip": Route(body=out_zip.read_bytes())})
    other_save = tmp_path / "fresh_models"
    fresh = [a if a != str(save_dir) else str(other_save) for a in common]
    argv = ["--model", "simple_net", "--download_weights", "--weights_url", server.url("/weights.zip"),
            "--no_figures", *fresh]
    code, out, err = run_evaluate(argv, capsys)
    assert code == 0, err
    installed = other_save / run
    assert "epoch 2 of" in out and (installed / "2.pth").read_bytes() == (installed / "last.pth").read_bytes()
    assert not (installed / "checkpoint_aliases.json").exists()
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
    run = next(save_dir.glob("shop/SimpleNet_*"))
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
    assert code == 0 and f"{photo}:" in out and "saved 1 query figure(s)" in out
    saved = np.load(npz)
    assert saved["embeddings"].shape[0] == len(saved["paths"]) == len(saved["items"])


def test_unreadable_query_photo_is_a_one_line_error(trained, capsys, tmp_path):
    _, _, common = trained
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"not a photo")
    code, _, err = run_evaluate(["--model", "simple", "--query", str(bad), *common], capsys)
    assert code == 2 and "--query" in err and str(bad) in err
