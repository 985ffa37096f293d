"""Models: registry, output contract, normalisation once, colour baseline, pretrained weights."""
from __future__ import annotations

import logging

import pytest
import torch
import torchvision

from common.errors import UserError
from models import MODEL_NAMES, build_model, model_class
from models.facenet import FaceNetInception, Inception
from models.layers import IMAGENET_MEAN, IMAGENET_STD
from models.profile import count_parameters, flops_per_image, images_per_second
from models.simple import ColourStats

# The torchvision models are tested at a small input: their contract does not depend on size.
LIGHT_SIZE = {"efficientnet_b3": 32, "resnet18": 32, "resnet50": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    """Point torchvision's weight cache at an empty folder, so tests never see real weights."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def _build(name: str, **kwargs):
    if name in LIGHT_SIZE:
        kwargs.setdefault("input_size", LIGHT_SIZE[name])
    return build_model(name, **kwargs)


def _images(model, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, model.input_size, model.input_size, generator=generator)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_contract(name):
    torch.manual_seed(0)
    model = _build(name).eval()
    assert isinstance(model.input_size, int) and isinstance(model.emb_dim, int)
    with torch.no_grad():
        emb = model(_images(model))
    assert emb.shape == (2, model.emb_dim) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all()
    if model.trainable:
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    assert type(model) is model_class(name)


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n not in ("simple", "dom_colours")])
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = _build(name).train()
    assert model.trainable
    emb = model(_images(model, batch=4))
    (emb[:, 0] - emb[:, 1]).pow(2).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]


def test_first_layer_receives_gradient():
    model = build_model("simple_net")
    model(_images(model, batch=4)).sum(dim=0)[0].backward()
    first_conv = model.features[0][0]
    assert first_conv.weight.grad.abs().sum() > 0


def test_simple_has_no_parameters_and_is_deterministic():
    model = build_model("simple")
    assert model.trainable is False and count_parameters(model) == 0
    images = _images(model, batch=3)
    torch.testing.assert_close(model(images), model(images.clone()), rtol=0, atol=0)


def test_simple_features_by_hand():
    """A half red, half blue image: mean purple, modes at the bin centres, two histogram cells."""
    image = torch.zeros(1, 3, 4, 4)
    image[0, 0, :, :2] = 1.0     # red left half
    image[0, 2, :, 2:] = 1.0     # blue right half
    image[0, 0, 0, 0] = 0.6      # one odd pixel, not the mode
    emb = ColourStats(input_size=4)(image)[0]
    torch.testing.assert_close(emb[:3], torch.tensor([7.6 / 16, 0.0, 0.5]))
    # red: 8 zeros beat 7 ones; green: all zeros; blue: 8 zeros tie 8 ones -> the lower bin
    torch.testing.assert_close(emb[3:6], torch.full((3,), 0.5 / 32))
    hist = emb[6:]
    assert hist.sum().item() == pytest.approx(1.0)
    red_cell, blue_cell, odd_cell = 3 * 16, 3, 2 * 16
    assert hist[red_cell].item() == pytest.approx(7 / 16)
    assert hist[blue_cell].item() == pytest.approx(8 / 16)
    assert hist[odd_cell].item() == pytest.approx(1 / 16)


def test_simple_mode_prefers_fullest_bin():
    image = torch.full((1, 3, 2, 5), 0.9)
    image[0, :, 0, :4] = 0.1     # 4 pixels at 0.1, 6 at 0.9: the mode is 0.9's bin, not the mean's
    emb = ColourStats(input_size=5)(image)[0]
    expected_mode = (int(0.9 * 32) + 0.5) / 32
    torch.testing.assert_close(emb[3:6], torch.full((3,), expected_mode))


def test_normalisation_applied_exactly_once():
    """Feeding features the hand-normalised image must give the same embedding as the model."""
    model = build_model("simple_net").eval()
    images = _images(model)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        by_hand = torch.nn.functional.normalize(model.head(model.features((images - mean) / std)), dim=1)
        torch.testing.assert_close(model(images), by_hand)
        # A constant grey at the ImageNet mean is all zeros after normalisation.
        grey = mean.expand(1, 3, model.input_size, model.input_size)
        assert model.normalise(grey).abs().max() < 1e-6


def test_normalisation_constants_are_not_checkpointed():
    model = build_model("simple_net")
    assert not any("normalise" in key for key in model.state_dict())
    assert model.normalise.mean.device == model.features[0][0].weight.device


def test_facenet_follows_table_2_at_full_width():
    """NN2 (width 1, 224x224): table 2's output widths per inception block and 7.5 M parameters."""
    model = FaceNetInception(width=1.0, input_size=224)
    widths = [block.out_channels for block in model.features if isinstance(block, Inception)]
    assert widths == [256, 320, 640, 640, 640, 640, 640, 1024, 1024, 1024]
    assert 7.4e6 < count_parameters(model) < 7.5e6


def test_unknown_model_lists_valid_names():
    with pytest.raises(UserError, match="model 'no_such_net': unknown; choose one of simple, dom_colours, simple_net"):
        build_model("no_such_net")


def test_options_a_model_does_not_take_are_dropped_with_a_notice(caplog):
    with caplog.at_level(logging.WARNING, logger="models"):
        build_model("simple_net", pretrained_weights=None, freeze_backbone=False)
        assert not caplog.records
        model = build_model("simple_net", pretrained_weights="resnet18.pth")
    assert model.emb_dim == 64
    assert [r.getMessage() for r in caplog.records] == [
        "--pretrained_weights does not apply to model simple_net; ignored for it"]


def test_freeze_backbone_without_weights_is_a_user_error():
    with pytest.raises(UserError, match="--freeze_backbone needs pretrained weights; pass --pretrained_weights"):
        build_model("resnet18", freeze_backbone=True)


def test_no_weights_trains_from_scratch_with_a_notice(caplog):
    with caplog.at_level(logging.WARNING, logger="models"):
        model = _build("resnet18")
    assert model.pretrained is False
    assert "backbone starts from random weights" in caplog.text and len(caplog.records) == 1


def test_pretrained_weights_loaded_from_local_file(tmp_path):
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None)     # full state_dict, ImageNet fc included
    path = tmp_path / "resnet18_weights.pth"
    torch.save(source.state_dict(), path)
    model = _build("resnet18", pretrained_weights=str(path), freeze_backbone=True)
    assert model.pretrained
    torch.testing.assert_close(model.features.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(model.features.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert count_parameters(model, trainable_only=True) == sum(p.numel() for p in model.head.parameters())
    model.train()
    assert model.training and not model.features.training      # frozen batch norm keeps its statistics


def test_pretrained_weights_found_in_torch_hub_cache(tmp_path):
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    source = torchvision.models.resnet18(weights=None)
    torch.save(source.state_dict(), checkpoints / "resnet18-0123abcd.pth")
    model = _build("resnet18")
    assert model.pretrained
    torch.testing.assert_close(model.features.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("text", "cannot be read as a PyTorch state_dict"),
    ({"conv1.weight": torch.zeros(1)}, "backbone tensors missing or of the wrong shape"),
])
def test_bad_pretrained_weights_file(tmp_path, content, message):
    path = tmp_path / "weights.pth"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(UserError, match=message):
        _build("resnet18", pretrained_weights=path)


def test_profile_numbers():
    model = build_model("simple_net")
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    first_conv_flops = 2 * 32 * 32 * 32 * 3 * 3 * 3          # 32x32 outputs, 32 channels, 3x3x3 taps
    assert flops_per_image(model) > first_conv_flops
    assert flops_per_image(build_model("simple")) == 0
    assert images_per_second(model, batch_size=4, steps=1) > 0
    assert model.training
