"""--pretrained: torchvision's ImageNet weights downloaded, verified by name, cached, and trained on."""
import hashlib
import io

import pytest
import torch
import torchvision

import pipeline
from common.cli import run_main
from models.pretrained import URL_ENV
from tests.datasets import make_dataset

# EfficientNet-B3 is slow on a CPU: 3 training items, 2 evaluation items, one step of 4 images
TINY = ["--batch_size", "4", "-K", "2", "--no_augment", "--epochs", "1", "--eval_fraction", "0.4"]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache, so nothing on this machine is found or touched."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def _served(state: dict, name: str, sha: str | None = None) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    body = buffer.getvalue()
    return body, f"/{name}-{(sha or hashlib.sha256(body).hexdigest())[:8]}.pth"


def _pipeline(tmp_path, capsys, *argv):
    dataset = make_dataset(tmp_path / "shop", num_items=5, per_item=2)
    code = run_main(pipeline.main, [*argv, "--dataset", str(dataset), "--dataset_dir", str(tmp_path / "data"),
                                    "--save_dir", str(tmp_path / "models"), *TINY])
    return code, *capsys.readouterr()


@pytest.fixture(scope="module")
def efficientnet_file():
    torch.manual_seed(3)
    return _served(torchvision.models.efficientnet_b3(weights=None).state_dict(), "efficientnet_b3_rwightman")


def test_dvc_recipe_downloads_weights_and_trains_only_the_head(efficientnet_file, hub, tmp_path, capsys,
                                                               http_server, monkeypatch):
    body, path = efficientnet_file
    server = http_server({path: body})
    monkeypatch.setenv(URL_ENV, server.url(path))
    code, out, err = _pipeline(tmp_path, capsys, "-m", "efficientnet_b3", "--pretrained", "--freeze_backbone")
    assert code == 0, err
    assert sorted(p.name for p in hub.iterdir()) == [path.lstrip("/")]  # verified, renamed, no leftovers
    served = torch.load(hub / path.lstrip("/"), weights_only=True)
    run = next((tmp_path / "models").glob("*/EfficientNetB3Embedder_*"))
    trained = torch.load(run / "1.pth", weights_only=True)
    backbone = {k.removeprefix("features."): v for k, v in trained["model"].items() if k.startswith("features.")}
    assert backbone.keys() == {k for k in served if not k.startswith("classifier.")}
    changed = [k for k, v in backbone.items() if not torch.equal(v, served[k])]
    assert changed == []  # weights and batch-norm statistics: the frozen backbone stayed in eval mode
    head = [v.shape for k, v in trained["model"].items() if k.startswith("head.") and k.endswith("weight")]
    assert head == [(712, 1536), (256, 712), (64, 256)]
    assert len(trained["optimizer"]["state"]) == 6  # Adam stepped the head's 3 weights and 3 biases only
    code, _, err = _pipeline(tmp_path / "again", capsys, "-m", "efficientnet_b3", "--pretrained", "--prepare_only")
    assert code == 0 and len(server.requests_for(path)) == 1, err  # second use: from the hub cache


def test_a_file_whose_hash_does_not_match_its_name_is_not_kept(hub, tmp_path, capsys, http_server, monkeypatch):
    body, path = _served({"w": torch.zeros(2)}, "resnet18", sha="0123abcd")
    server = http_server({path: body})
    monkeypatch.setenv(URL_ENV, server.url(path))
    code, _, err = _pipeline(tmp_path, capsys, "-m", "resnet18", "--pretrained")
    assert code == 2 and err.count("\n") == 1 and "not 0123abcd as its name says; it was deleted" in err
    assert list(hub.iterdir()) == []


def test_offline_names_the_url_and_the_alternatives(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("data.download.time.sleep", lambda seconds: None)
    url = "http://127.0.0.1:9/resnet18-f37072fd.pth"  # the discard port: nothing listens there
    monkeypatch.setenv(URL_ENV, url)
    code, _, err = _pipeline(tmp_path, capsys, "-m", "resnet18", "--pretrained")
    assert code == 2 and err.count("\n") == 1 and url in err
    assert f"pass --pretrained_weights FILE, or put resnet18-f37072fd.pth in {hub}" in err


def test_the_default_url_is_torchvisions(monkeypatch):
    from models.pretrained import weights_url
    monkeypatch.delenv(URL_ENV, raising=False)
    assert weights_url("resnet18") == torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
