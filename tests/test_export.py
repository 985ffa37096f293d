"""evaluate.py --export_model: a TorchScript file whose README recipe embeds photos like --query."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import pipeline
from common.cli import run_main

ROOT = Path(__file__).resolve().parents[1]
# on CPU, where evaluation embeds in float32 (CUDA autocast would round the gallery to bf16)
TINY = ["--batch_size", "8", "-K", "2", "--no_augment", "--eval_fraction", "0.5", "--device", "cpu"]


def _photo(path: Path, width: int, height: int, seed: int) -> None:
    """A non-square JPEG with texture, so that resizing and padding show in the pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 256, 3)
    pixels = (base + 60 * np.sin(x[..., None] / (7 + seed % 5)) + 40 * np.cos(y[..., None] / 11)) % 256
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """simple_net trained 1 epoch on non-square photos, its gallery embeddings, and its export."""
    tmp = tmp_path_factory.mktemp("export")
    for item in range(6):
        (tmp / "shop" / f"item_{item}").mkdir(parents=True)
        for n, (w, h) in enumerate([(300, 200), (200, 300), (150, 90)]):
            _photo(tmp / "shop" / f"item_{item}" / f"{n}.jpg", w, h, seed=item * 3 + n)
    common = ["--dataset", tmp / "shop", "--dataset_dir", tmp / "data", "--save_dir", tmp / "models", *TINY]
    common = [str(a) for a in common]
    assert pipeline.main(["-m", "simple_net", "--epochs", "1", *common]) == 0
    assert evaluate.main(["--model", "simple_net", "--no_figures", "--save_embeddings",
                          str(tmp / "gallery.npz"), *common]) == 0
    assert evaluate.main(["--model", "simple_net", "--export_model", str(tmp / "model.pt"), *common]) == 0
    return tmp, common, np.load(tmp / "gallery.npz")


def _readme_recipe() -> str:
    section = (ROOT / "README.md").read_text().split("### Export for serving", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _readme_embedding(model_file: Path, photo: str) -> np.ndarray:
    code = _readme_recipe().replace('"model.pt"', repr(str(model_file))).replace('"photo.jpg"', repr(photo))
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the README's own lines, as a user would paste them
    return scope["embedding"].detach().numpy()[0]


def test_readme_lines_give_the_embedding_evaluate_gives(exported, capsys, tmp_path):
    tmp, common, gallery = exported
    for row in (0, 1, 2):  # a wide, a tall and a small photo
        photo = gallery["paths"][row]
        with Image.open(photo) as image:
            assert image.width != image.height
        np.testing.assert_allclose(_readme_embedding(tmp / "model.pt", photo), gallery["embeddings"][row],
                                   atol=1e-5)
    embedding = _readme_embedding(tmp / "model.pt", photo)
    hits = tmp_path / "hits.json"
    assert run_main(evaluate.main, ["--model", "simple_net", "--query", photo, "--gallery", "eval",
                                    "--results", str(hits), "--no_figures", *common]) == 0
    rows = json.loads(hits.read_text())
    assert rows[0]["path"] == photo and rows[0]["distance"] < 1e-5  # --query's embedding: the same
    where = {path: number for number, path in enumerate(gallery["paths"])}
    for hit in rows:  # and at the same distance from every neighbour as the README's embedding
        expected = np.linalg.norm(embedding - gallery["embeddings"][where[hit["path"]]])
        assert abs(hit["distance"] - expected) < 1e-5


def test_exported_file_takes_batches_of_squares_and_refuses_other_sizes(exported):
    tmp, _, _ = exported
    model = torch.jit.load(str(tmp / "model.pt"))
    size = model.input_size
    batch = torch.randint(0, 256, (3, size, size, 3), dtype=torch.uint8)
    channels_first = batch.permute(0, 3, 1, 2)
    out = model(batch)
    assert out.shape == (3, model.emb_dim)
    torch.testing.assert_close(model(channels_first), out)
    torch.testing.assert_close(model(channels_first.float() / 255), out)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    with pytest.raises(Exception, match="input_size x input_size"):
        model(torch.zeros(1, 3, size + 1, size + 1))


def test_colour_baseline_cannot_be_exported(exported, capsys):
    tmp, common, _ = exported
    assert run_main(evaluate.main, ["--model", "simple", "--export_model", str(tmp / "s.pt"), *common]) == 2
    assert "only trained networks can be exported" in capsys.readouterr().err
