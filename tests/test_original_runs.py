"""The original project's published runs: its three networks re-implemented, its zips evaluated."""
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
from common.cli import run_main
from common.errors import UserError
from data.splits import load_splits
from evaluation.embed import embed
from evaluation.original_runs import identify
from evaluation.weights import DEFAULT_WEIGHTS_URL, InstalledRun, pick_run
from models.original_nets import ORIGINAL_NETS, FaceNetInception, Network, ToyNetwork, expected_shapes
from tests.datasets import make_dataset
from tests.http_server import Route

FACTS_FILE = Path(__file__).resolve().parents[2] / "shared" / "original_state_dicts.json"
FACTS = json.loads(FACTS_FILE.read_text()) if FACTS_FILE.exists() else None
RUN = "FaceNetInception_LR_0.0001_decay_0.95_BS_64"


def run_evaluate(argv, capsys):
    code = run_main(evaluate.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.skipif(FACTS is None, reason="shared/original_state_dicts.json is not beside this checkout")
@pytest.mark.parametrize("name", list(ORIGINAL_NETS))
def test_keys_shapes_and_sizes_are_the_originals(name):
    cls = ORIGINAL_NETS[name]
    facts = FACTS[cls.original_class]
    assert list(expected_shapes(name).items()) == [(k, tuple(v)) for k, v in facts["state_dict"].items()]
    assert (cls.input_size, cls.emb_dim) == (facts["input_size"], facts["emb_dim"])
    with torch.device("meta"):
        model = cls()
    assert sum(p.numel() for p in model.parameters()) == facts["parameters"]


def test_flatten_sizes_on_the_meta_device():
    """toy_network's 238144-wide layer is checked without allocating its 488 MB."""
    seen = {}
    with torch.device("meta"):
        for cls, layer in ((ToyNetwork, "fc"), (Network, "fc"), (FaceNetInception, "linear")):
            model = cls()
            getattr(model, layer).register_forward_pre_hook(lambda m, a, c=cls: seen.update({c: a[0].shape}))
            out = model(torch.zeros(2, 3, cls.input_size, cls.input_size))
            assert tuple(out.shape) == (2, cls.emb_dim)
    assert {c.__name__: s[1] for c, s in seen.items()} == \
        {"ToyNetwork": 238144, "Network": 100352, "FaceNetInception": 1024}


def test_a_toy_network_state_dict_is_recognised_by_its_shapes():
    with torch.device("meta"):
        state = ToyNetwork().state_dict()
    assert identify(state, Path("1.pth")) == "original_simple_net"
    assert identify({"format_version": 1, "model": {}}, Path("1.pth")) is None  # ours: not original


def test_eval_mode_turns_dropout_off():
    torch.manual_seed(0)
    model = Network()
    images = np.random.default_rng(0).integers(0, 256, (2, 512, 512, 3), dtype=np.uint8)

    class Images:
        def __len__(self):
            return 2

        def batch(self, rows):
            return images[rows]

    assert torch.equal(embed(model, Images()), embed(model, Images()))
    with torch.no_grad():  # the test can fail: in training mode dropout changes every pass
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        assert not torch.equal(model.train()(pixels), model(pixels))


def _original_zip(path: Path, state: dict, epochs=(2, 4), run: str = RUN) -> Path:
    """A zip laid out like the original's published one: <run>/<epoch>.pth bare state_dicts."""
    with zipfile.ZipFile(path, "w") as archive:
        for epoch in epochs:
            buffer = path.with_name(f"{epoch}.pth")
            torch.save(state, buffer)
            archive.write(buffer, f"{run}/{epoch}.pth")
        archive.writestr(f"{run}/training_stats.csv", "epoch,mean training loss,evaluation score\n2,0.5,40\n")
    return path


@pytest.fixture(scope="module")
def facenet_state():
    torch.manual_seed(0)
    return FaceNetInception().state_dict()


@pytest.fixture
def shop(tmp_path):
    dataset = make_dataset(tmp_path / "shop", num_items=6, per_item=2)
    return ["--dataset", dataset, "--dataset_dir", tmp_path / "data", "--save_dir", tmp_path / "models",
            "--eval_fraction", "0.5"]


def test_original_facenet_zip_over_http_gives_metrics(facenet_state, shop, tmp_path, capsys, http_server):
    server = http_server({"/w.zip": _original_zip(tmp_path / "w.zip", facenet_state).read_bytes()})
    argv = ["--model", "facenet", "--download_weights", "--weights_url", server.url("/w.zip"),
            "--no_figures", "--save_embeddings", tmp_path / "a.npz", *shop]
    code, out, err = run_evaluate(argv, capsys)
    assert code == 0, err
    run_dir = tmp_path / "models" / RUN
    assert f"downloaded {server.url('/w.zip')} -> installed {run_dir}" in out
    assert f"original_facenet (epoch 4 of {run_dir})" in out
    assert "provenance unknown" in out and "held-out" not in out and "precision@1" in out
    argv[argv.index(tmp_path / "a.npz")] = tmp_path / "b.npz"
    code, out, err = run_evaluate(argv, capsys)  # second pass: reuses the install, same embeddings
    assert code == 0 and f"already installed {run_dir}" in out and "downloaded" not in out
    first, second = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(first["embeddings"], second["embeddings"])
    norms = np.linalg.norm(first["embeddings"], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)  # FaceNetInception L2-normalises


def test_original_run_is_evaluated_with_the_stretch_decoding(facenet_state, shop, tmp_path, capsys):
    _original_zip(tmp_path / "w.zip", facenet_state)
    argv = ["--model", "original_facenet", "--download_weights", "--weights_url", (tmp_path / "w.zip").as_uri(),
            "--no_figures", "--checkpoint", "2", *shop]
    code, out, err = run_evaluate(argv, capsys)
    assert code == 0 and "original_facenet (epoch 2 of" in out, err
    caches = sorted(p.name for p in (tmp_path / "data" / "files_to_gitignore" / "cache").glob("*.npy"))
    assert len(caches) == 1 and "_224px_stretch_" in caches[0]


def test_cache_keys_keep_stretch_and_letterbox_apart(tmp_path):
    for item in range(3):
        (tmp_path / "shop" / f"item_{item}").mkdir(parents=True)
        for n in range(2):  # 40 x 20, left half black, right half white
            pixels = np.zeros((20, 40, 3), np.uint8)
            pixels[:, 20:] = 255
            Image.fromarray(pixels).save(tmp_path / "shop" / f"item_{item}" / f"{n}.png")
    cache = tmp_path / "cache"
    letterboxed = load_splits(tmp_path / "shop", 32, cache, eval_fraction=0.5)
    stretched = load_splits(tmp_path / "shop", 32, cache, eval_fraction=0.5, resize="stretch")
    assert len(list(cache.glob("*.npy"))) == 2  # the second did not reuse the first's cache
    a, b = letterboxed.sets["train"].batch([0])[0], stretched.sets["train"].batch([0])[0]
    assert (b[0, 0] == 0).all() and (b[-1, -1] == 255).all()  # stretched: the image fills the square
    assert (a[0, 0] == a[-1, -1]).all() and 100 < a[0, 0, 0] < 156  # letterboxed: grey padding bands


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update({"linear.weight": torch.zeros(64, 1024)}),
     "linear.weight has shape [64, 1024], expected [128, 1024]"),
    (lambda s: s.update({"extra.weight": torch.zeros(3)}), "1 unknown key(s), first extra.weight"),
])
def test_a_state_dict_that_fits_no_original_network_is_a_clear_error(facenet_state, shop, tmp_path, capsys,
                                                                    change, message):
    state = dict(facenet_state)
    change(state)
    archive = _original_zip(tmp_path / "bad.zip", state, epochs=(1,))
    code, out, err = run_evaluate(["--model", "facenet", "--download_weights", "--weights_url", archive.as_uri(),
                                   *shop], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{RUN}/1.pth: a bare state_dict that fits none of the original's networks" in err and message in err


def test_a_downloaded_file_that_is_not_a_zip_is_deleted(facenet_state, shop, tmp_path, capsys, http_server):
    server = http_server({"/w.zip": b"PK but not really a zip" * 10})
    argv = ["--model", "facenet", "--download_weights", "--weights_url", server.url("/w.zip"), "--no_figures", *shop]
    code, _, err = run_evaluate(argv, capsys)
    assert code == 2 and "not a zip archive" in err and err.count("\n") == 1
    assert list((tmp_path / "models" / "downloads").iterdir()) == []  # not reused next time
    server.routes["/w.zip"] = Route(body=_original_zip(tmp_path / "w.zip", facenet_state).read_bytes())
    code, out, err = run_evaluate(argv, capsys)
    assert code == 0 and "downloaded" in out, err


def test_a_different_run_of_the_same_name_is_never_reused(facenet_state, shop, tmp_path, capsys):
    first = _original_zip(tmp_path / "first.zip", facenet_state, epochs=(2,))
    other = {k: v + 1 if v.is_floating_point() else v for k, v in facenet_state.items()}
    (tmp_path / "second").mkdir()
    second = _original_zip(tmp_path / "second" / "w.zip", other, epochs=(2,))
    installed = tmp_path / "models" / RUN / "2.pth"
    code, _, err = run_evaluate(["--model", "facenet", "--download_weights", "--weights_url", first.as_uri(),
                                 "--export_weights", tmp_path / "packed.zip", *shop], capsys)
    assert code == 0 and installed.exists(), err
    before = installed.read_bytes()
    code, out, err = run_evaluate(["--model", "facenet", "--download_weights", "--weights_url", second.as_uri(),
                                   "--no_figures", *shop], capsys)
    assert code == 2 and "a different run with this name already exists" in err and "precision@1" not in out
    assert installed.read_bytes() == before


def _runs(*specs):
    return [InstalledRun(Path("m") / name, model, True) for name, model in specs]


def test_pick_run_by_model_then_by_hyperparameters():
    runs = _runs(("toy_network_LR_0.0001_decay_0.95_BS_64", "original_simple_net"),
                 ("toy_network_LR_0.001_decay_0.95_BS_64", "original_simple_net"),
                 ("network_LR_0.0001_decay_0.95_BS_64", "original_big_net"))
    assert pick_run(runs, "big_net", set()).path.name == "network_LR_0.0001_decay_0.95_BS_64"
    wanted = {"SimpleNet_LR_0.001_decay_0.95_BS_64", "toy_network_LR_0.001_decay_0.95_BS_64"}
    assert pick_run(runs, "simple_net", wanted).path.name == "toy_network_LR_0.001_decay_0.95_BS_64"
    with pytest.raises(UserError, match="holds several such runs"):
        pick_run(runs, "simple_net", {"toy_network_LR_0.5_decay_0.95_BS_64"})
    with pytest.raises(UserError, match=r"holds no such run .*network_LR_0.0001_decay_0.95_BS_64 \(original_big_net\)"):
        pick_run(runs, "facenet", set())


def test_default_weights_url_is_the_original_projects():
    parser = evaluate.build_parser()
    assert parser.parse_args(["--download_weights"]).weights_url == DEFAULT_WEIGHTS_URL
    assert "1bTp1vVcAyi4dhTxr_WGKPqTVPrTIM0gB" in DEFAULT_WEIGHTS_URL


def test_original_runs_have_numbered_checkpoints_only(facenet_state, shop, tmp_path, capsys):
    archive = _original_zip(tmp_path / "w.zip", facenet_state)
    code, _, err = run_evaluate(["--model", "facenet", "--download_weights", "--weights_url", archive.as_uri(),
                                 "--checkpoint", "best", *shop], capsys)
    assert code == 2 and f"{RUN}: no checkpoint for epoch best; available epochs: 2, 4" in err
