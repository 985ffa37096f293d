"""Searching a catalogue with photos through evaluate.py: gallery choice, saved index, results,
figures; and the query/gallery evaluation protocol, checked against hand-computed metrics."""
import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import pipeline
from common.cli import run_main
from common.params import parse_with_params
from data.splits import load_splits
from evaluation.embed import embed_photos
from evaluation.figures import PageLayout
from evaluation.gallery_index import model_digest
from evaluation.knn import Searcher, search
from evaluation.protocol import query_gallery_metrics
from evaluation.workflow import run_evaluation
from models.simple_net import SimpleNet
from tests.datasets import make_dataset
from training.options import ALL_SETTINGS
from training.workflow import run_pipeline

TINY = ["--batch_size", "8", "-K", "2", "--no_augment"]
COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (230, 200, 30), (30, 190, 200), (200, 40, 200),
           (120, 60, 20), (240, 240, 240)]


def make_shop(root, num_items=8, per_item=4):
    """Items of distinct colours with a seeded speckle, so colour statistics tell items apart."""
    rng = np.random.default_rng(0)
    for i in range(num_items):
        folder = root / f"item_{i:03d}"
        folder.mkdir(parents=True)
        for n in range(per_item):
            pixels = np.full((48 + 4 * n, 48, 3), COLOURS[i], np.uint8)
            speckle = rng.random(pixels.shape[:2]) < 0.05
            pixels[speckle] = 255 - pixels[speckle]
            Image.fromarray(pixels).save(folder / f"photo_{n}.png")
    return root


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A dataset, a simple_net run trained on it (1 epoch), and the common flags."""
    tmp = tmp_path_factory.mktemp("search")
    dataset = make_shop(tmp / "shop")
    common = ["--dataset", str(dataset), "--dataset_dir", str(tmp / "data"),
              "--save_dir", str(tmp / "models"), *TINY]
    assert pipeline.main(["-m", "simple_net", "--epochs", "1", *common]) == 0
    return dataset, common


def run_evaluate(argv, capsys):
    code = run_main(evaluate.main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def a_trained_item(dataset, common):
    data_dir = common[common.index("--dataset_dir") + 1]
    splits = load_splits(dataset, 64, tmp_cache(data_dir), progress=False)
    return splits.sets["train"].items[0]


def tmp_cache(data_dir):
    from training.workflow import cache_dir
    return cache_dir(data_dir)


def cropped_jpeg(source, target):
    """A re-encoded, slightly cropped copy of a photo: a new file, not the gallery's bytes."""
    with Image.open(source) as image:
        image.crop((2, 2, image.width - 2, image.height - 2)).convert("RGB").save(target, quality=85)
    return target


def test_a_copy_of_a_trained_photo_finds_its_item_in_gallery_all(shop, capsys, tmp_path):
    dataset, common = shop
    item = a_trained_item(dataset, common)
    original = dataset / item / "photo_1.png"
    photo = cropped_jpeg(original, tmp_path / "my_photo.jpg")
    code, out, err = run_evaluate(["--model", "simple", "--query", str(photo), "--no_figures", *common], capsys)
    assert code == 0, err
    assert "built index of 32 images" in out or "loaded index of 32 images" in out
    lines = out.splitlines()
    first = lines[lines.index(f"{photo}:") + 1].split()
    assert first[0] == "1" and first[1] == item and first[3].startswith(str(dataset / item))


def test_the_second_query_loads_the_saved_index(shop, capsys, tmp_path, monkeypatch):
    dataset, common = shop
    calls = []
    forward = SimpleNet.forward
    monkeypatch.setattr(SimpleNet, "forward", lambda self, x: calls.append(len(x)) or forward(self, x))
    photo = cropped_jpeg(dataset / "item_002" / "photo_0.png", tmp_path / "q.jpg")
    argv = ["--model", "simple_net", "--query", str(photo), "--no_figures", *common]
    code, first_out, err = run_evaluate(argv, capsys)
    assert code == 0, err
    first_calls, calls[:] = list(calls), []
    code, second_out, err = run_evaluate(argv, capsys)
    assert code == 0, err
    assert sum(first_calls) == 32 + 1 and "built index of 32 images" in first_out
    assert calls == [1] and "loaded index of 32 images" in second_out  # only the photo is embedded
    assert first_out.split("images", 1)[1].split("\n", 1)[1] == second_out.split("images", 1)[1].split("\n", 1)[1]


def test_a_changed_gallery_folder_is_indexed_again(shop, capsys, tmp_path):
    dataset, common = shop
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    for n, item in enumerate(["item_000", "item_003", "item_005"]):
        shutil.copy(dataset / item / "photo_0.png", catalogue / f"product_{n}.png")  # loose images
    photo = dataset / "item_003" / "photo_0.png"
    argv = ["--model", "simple", "--query", str(photo), "--gallery", str(catalogue), "--no_figures", *common]
    code, out, _ = run_evaluate(argv, capsys)
    assert code == 0 and "built index of 3 images" in out
    assert out.count("product_1") == 2  # item named by file stem, and its path
    assert "<- identical image" in out  # same pixels, another file: distance 0
    assert run_evaluate(argv, capsys)[1].count("loaded index of 3 images") == 1
    shutil.copy(dataset / "item_006" / "photo_0.png", catalogue / "product_3.png")
    code, out, _ = run_evaluate(argv, capsys)
    assert code == 0 and "built index of 4 images" in out


def test_a_damaged_index_is_rebuilt_with_a_notice(shop, capsys, tmp_path):
    dataset, common = shop
    photo = dataset / "item_001" / "photo_0.png"
    argv = ["--model", "simple", "--query", str(photo), "--no_figures", *common]
    assert run_evaluate(argv, capsys)[0] == 0
    data_dir = common[common.index("--dataset_dir") + 1]
    for saved in tmp_cache(data_dir).joinpath("index").glob("all_*.npy"):
        saved.write_bytes(b"\x93NUMPY garbage")
    code, out, _ = run_evaluate(argv, capsys)
    assert code == 0 and "damaged" in out and "built index of 32 images" in out
    assert "<- the query's own file" in out  # the photo is itself in gallery all


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_results_file_has_one_row_per_query_and_rank(shop, capsys, tmp_path, suffix):
    dataset, common = shop
    photos = [dataset / "item_004" / "photo_2.png", cropped_jpeg(dataset / "item_007" / "photo_0.png",
                                                                  tmp_path / "white.jpg")]
    out_file = tmp_path / f"hits{suffix}"
    argv = ["--model", "simple", "--query", *map(str, photos), "--num_neighbours", "3",
            "--results", str(out_file), "--no_figures", *common]
    code, out, err = run_evaluate(argv, capsys)
    assert code == 0, err
    if suffix == ".csv":
        with open(out_file, newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = json.loads(out_file.read_text())
    assert list(rows[0]) == ["query", "rank", "item", "distance", "path", "same"]
    assert [(r["query"], int(r["rank"])) for r in rows] == [(str(p), k) for p in photos for k in (1, 2, 3)]
    assert rows[0]["same"] == "file" and rows[0]["path"] == str(photos[0]) and float(rows[0]["distance"]) == 0
    assert rows[3]["item"] == "item_007" and rows[3]["same"] == ""
    assert f"wrote 6 result rows (2 queries) to {out_file}" in out


def test_results_with_an_unknown_suffix_is_refused_before_any_work(shop, capsys, tmp_path):
    dataset, common = shop
    argv = ["--model", "simple", "--query", str(dataset / "item_000"), "--results", str(tmp_path / "r.txt"), *common]
    code, _, err = run_evaluate(argv, capsys)
    assert code == 2 and "--results" in err and ".csv or .json" in err


def test_results_without_a_query_is_refused(shop, capsys, tmp_path):
    _, common = shop
    code, _, err = run_evaluate(["--model", "simple", "--results", str(tmp_path / "r.csv"), *common], capsys)
    assert code == 2 and "--results" in err and "--query" in err


def test_a_gallery_that_does_not_exist_is_a_one_line_error(shop, capsys, tmp_path):
    dataset, common = shop
    argv = ["--model", "simple", "--query", str(dataset / "item_000"), "--gallery", "evl", *common]
    code, _, err = run_evaluate(argv, capsys)
    assert code == 2 and err.startswith("error: --gallery evl: no such folder") and "Traceback" not in err


def test_two_queries_leave_two_figure_files(shop, capsys, tmp_path):
    dataset, common = shop
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    photos = [cropped_jpeg(dataset / "item_001" / "photo_0.png", tmp_path / "a" / "photo.jpg"),
              cropped_jpeg(dataset / "item_005" / "photo_0.png", tmp_path / "b" / "photo.jpg")]
    argv = ["--model", "simple_net", "--query", *map(str, photos), "--save_fig", *common]
    code, out, err = run_evaluate(argv, capsys)
    assert code == 0, err
    data_dir = common[common.index("--dataset_dir") + 1]
    figures = sorted((tmp_path.parent / data_dir).glob("files_to_gitignore/eval_figs/simple_net_query/*.png"))
    assert len(figures) == 2 and all(f.name.startswith("photo-") for f in figures)
    assert "saved 2 query figure(s)" in out


def test_query_folders_are_searched_and_unreadable_files_named(shop, capsys, tmp_path):
    dataset, common = shop
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    cropped_jpeg(dataset / "item_002" / "photo_0.png", folder / "sub" / "one.jpg")
    cropped_jpeg(dataset / "item_006" / "photo_0.png", folder / "two.jpg")
    (folder / "broken.jpg").write_bytes(b"not an image")
    argv = ["--model", "simple", "--query", str(folder), "--no_figures", *common]
    code, out, err = run_evaluate(argv, capsys)
    assert code == 0, err
    assert f"{folder / 'sub' / 'one.jpg'}:" in out and f"{folder / 'two.jpg'}:" in out
    warning = [line for line in out.splitlines() if line.startswith("warning: --query")]
    assert len(warning) == 1 and "skipped 1" in warning[0] and "broken.jpg" in warning[0]


def test_metrics_of_gallery_all_are_not_called_held_out(shop, capsys):
    _, common = shop
    code, out, _ = run_evaluate(["--model", "simple", "--gallery", "all", "--no_figures", *common], capsys)
    assert code == 0 and "held-out" not in out and "32 images of 8 items (gallery all: includes trained" in out


# --- the query/gallery protocol ---------------------------------------------------------------

def test_query_gallery_metrics_by_hand():
    """Gallery a a b c; queries of a, b, d. Embeddings on a line, so the order is plain."""
    gallery = torch.tensor([[0.0], [3.0], [1.0], [10.0]])      # labels a, a, b, c
    gallery_labels = np.array([0, 0, 1, 2])
    queries = torch.tensor([[0.2], [9.0], [5.0]])              # a, b, and d (not in the gallery)
    query_labels = np.array([0, 1, -1])
    metrics = query_gallery_metrics(queries, gallery, query_labels, gallery_labels, k=2)
    # a: order 0 (a), 1 (b), 3 (a) -> rel 1 0 1, R = 2: P@1 1, R-precision 1/2, MAP@R (1 + 0)/2
    # b: order c, a(3.0), b, a -> rel 0 0 1 0, R = 1: P@1 0, R-precision 0, MAP@R 0, not in top 2
    assert metrics["precision@1"] == 0.5 and metrics["closest_2"] == 0.0
    assert metrics["in_any@2"] == 0.5
    assert metrics["r_precision"] == pytest.approx(0.25) and metrics["map@r"] == pytest.approx(0.25)
    assert metrics["num_queries"] == 2 and metrics["num_unqueryable"] == 1


def solid(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40), colour).save(path)


def test_query_gallery_layout_through_evaluate(tmp_path, capsys):
    """Solid colours under the colour baseline: equal colours at distance 0, the rest ordered by
    colour difference, so every rank below is known by hand."""
    root = tmp_path / "inshop"
    red, green, blue = (200, 30, 30), (30, 200, 30), (30, 30, 200)
    solid(root / "gallery" / "A" / "1.png", red)
    solid(root / "gallery" / "A" / "2.png", red)
    solid(root / "gallery" / "B" / "1.png", green)
    solid(root / "gallery" / "C" / "1.png", blue)
    solid(root / "query" / "A" / "q.png", red)             # -> A, A: R = 2, both found first
    solid(root / "query" / "B" / "q.png", (30, 60, 200))   # bluish -> C first, then B (green)
    solid(root / "query" / "D" / "q.png", red)             # no gallery image of D: not scored
    argv = ["--model", "simple", "--dataset", str(root), "--dataset_dir", str(tmp_path / "data"),
            "--num_neighbours", "2", "--no_figures"]
    metrics = run_evaluation(parse_with_params(evaluate.build_parser(), argv, ALL_SETTINGS))
    assert metrics["precision@1"] == 0.5 and metrics["closest_2"] == 1.0 and metrics["in_any@2"] == 1.0
    assert metrics["r_precision"] == 0.5 and metrics["map@r"] == 0.5
    assert metrics["num_queries"] == 2 and metrics["num_unqueryable"] == 1
    assert "3 query images against 4 gallery images" in capsys.readouterr().out
    figures = tmp_path / "data" / "files_to_gitignore" / "eval_figs" / "simple" / "untrained_both"
    code, out, err = run_evaluate(argv[:-1] + ["--save_fig", "--num_disp", "5"], capsys)
    assert code == 0, err
    assert "saved 1 figure page(s) of 2 queries" in out  # D's query has nothing to find: not drawn
    page = Image.open(figures / "1.png").convert("RGB")
    layout = PageLayout(rows=2, cols=3)
    assert page.size == layout.pixel_size
    expected = [[(200, 30, 30)] * 3, [(30, 60, 200), (30, 30, 200), (30, 200, 30)]]  # query, then 2 nearest
    for row, colours in enumerate(expected):
        for col, colour in enumerate(colours):
            got = np.asarray(page.getpixel(layout.cell_centre_px(row, col)))
            assert np.abs(got - colour).max() <= 3, (row, col, got)


def test_training_on_a_query_gallery_layout_evaluates_query_to_gallery(tmp_path):
    root = tmp_path / "inshop"
    make_dataset(root / "train", num_items=6, per_item=3)
    for split in ("query", "gallery"):
        for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
            solid(root / split / f"new_{i}" / f"{split}.png", colour)
    argv = ["-m", "simple_net", "--epochs", "1", "--dataset", str(root), "--dataset_dir",
            str(tmp_path / "data"), "--save_dir", str(tmp_path / "models"), *TINY]
    results = run_pipeline(parse_with_params(pipeline.build_parser(), argv, ALL_SETTINGS))
    assert results["simple_net"]["num_queries"] == 3
    stats = next((tmp_path / "models").rglob("training_stats.csv")).read_text()
    assert "evaluation score" in stats


# --- the search itself ------------------------------------------------------------------------

def brute_force(queries, gallery, k):
    """float64 distances, ordered by (distance, index): the reference answer."""
    dists = torch.cdist(queries.double(), gallery.double())
    order = np.lexsort((np.broadcast_to(np.arange(gallery.shape[0]), dists.shape), dists.numpy()), axis=1)
    return order[:, :k]


def test_search_is_exact_with_duplicates_ordered_by_index():
    gen = torch.Generator().manual_seed(0)
    gallery = torch.randn(500, 8, generator=gen) + 3.0
    gallery[250:260] = gallery[0]  # ten duplicates of row 0, all at the same distance
    queries = torch.cat([gallery[:1], torch.randn(20, 8, generator=gen) + 3.0])
    dists, indices = search(queries, gallery, 12)
    assert np.array_equal(indices.numpy(), brute_force(queries, gallery, 12))
    assert dists[0, :11].eq(0).all()  # the query's own pixels: distance 0 exactly


def test_search_through_a_faiss_index_gives_the_same_answer():
    faiss = pytest.importorskip("faiss", reason="faiss not installed (optional: pip install faiss-cpu)")
    gen = torch.Generator().manual_seed(1)
    gallery, queries = torch.randn(300, 16, generator=gen), torch.randn(10, 16, generator=gen)
    flat = faiss.IndexFlatL2(16)
    flat.add(gallery.numpy())
    got = Searcher(gallery, faiss_index=flat).search(queries, 5)
    expected = search(queries, gallery, 5)
    assert torch.equal(got[1], expected[1]) and torch.allclose(got[0], expected[0])


def test_knn_backend_faiss_gives_the_torch_results_or_a_clear_error(shop, capsys, tmp_path):
    dataset, common = shop
    photo = cropped_jpeg(dataset / "item_005" / "photo_1.png", tmp_path / "p.jpg")
    argv = ["--model", "simple", "--query", str(photo), "--no_figures", *common]
    code, torch_out, _ = run_evaluate(argv, capsys)
    code, faiss_out, err = run_evaluate(argv + ["--knn_backend", "faiss"], capsys)
    try:
        import faiss  # noqa: F401
    except ImportError:
        assert code == 2 and "faiss is not installed" in err
        return
    assert code == 0 and faiss_out.split(f"{photo}:")[1] == torch_out.split(f"{photo}:")[1]


def test_embeddings_are_float32_even_inside_autocast():
    model = SimpleNet().eval()
    photos = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    plain = embed_photos(model, photos)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = embed_photos(model, photos)
    assert inside.dtype == torch.float32 and torch.equal(inside, plain)


def test_other_weights_give_another_index_key():
    model = SimpleNet()
    before = model_digest(model)
    with torch.no_grad():
        weight = next(model.parameters())
        weight[(0,) * weight.dim()] += 1e-3
    assert model_digest(model) != before and model_digest(SimpleNet()) != before  # new random init
