"""The original's dom_colours baseline: dominant colours by coverage, computed by hand."""
import torch

from models import build_model


def test_dominant_colours_by_hand():
    image = torch.zeros(1, 3, 4, 4)
    image[0, 0, :, :2] = 1.0          # left half red (8 pixels)
    image[0, 2, :3, 2:] = 1.0         # 6 pixels blue, 2 pixels stay black
    out = build_model("dom_colours")(image)[0]
    colours, shares = out[:9].view(3, 3), out[9:]
    assert torch.allclose(colours, torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 0, 0]]))
    assert torch.allclose(shares, torch.tensor([0.5, 0.375, 0.125]))


def test_dom_colours_is_a_fixed_baseline_and_deterministic():
    model = build_model("dom_colours")
    x = torch.rand(2, 3, model.input_size, model.input_size)
    assert not model.trainable and sum(p.numel() for p in model.parameters()) == 0
    assert torch.equal(model(x), model(x)) and model(x).shape == (2, model.emb_dim)
