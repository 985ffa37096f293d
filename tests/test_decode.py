"""data/decode.py: every file a shop might hold becomes the same (S, S, 3) uint8 picture.

Checked pixel by pixel, since a wrong conversion still gives the right shape: transparency shows
as white, 16-bit images keep their tones, the aspect ratio is kept with padding in the border
colour, EXIF rotation is applied and CMYK comes out in the colour it was saved in.
"""
import numpy as np
import pytest
from PIL import Image, ImageOps

from data.decode import MAX_PIXELS, UnreadableImage, decode_image

RED, BLUE, WHITE = (220, 20, 20), (20, 20, 220), (255, 255, 255)


def _save(img: Image.Image, path, **kwargs):
    img.save(path, **kwargs)
    return path


def test_transparent_pixels_show_as_white_and_half_transparent_ones_blend(tmp_path):
    img = Image.new("RGBA", (30, 30), (0, 0, 0, 0))         # fully transparent black
    img.paste((200, 0, 0, 255), (0, 0, 10, 30))               # opaque red stripe on the left
    img.paste((0, 0, 200, 128), (20, 0, 30, 30))              # half-transparent blue on the right
    out = decode_image(_save(img, tmp_path / "a.png"), 30)
    assert tuple(out[15, 5]) == (200, 0, 0)
    assert tuple(out[15, 15]) == WHITE
    assert np.abs(out[15, 25].astype(int) - (127, 127, 227)).max() <= 2


@pytest.mark.parametrize("mode", ["LA", "P"])
def test_transparency_of_grey_and_palette_images_is_white_too(tmp_path, mode):
    if mode == "LA":
        img = Image.new("LA", (20, 20), (0, 0))
        img.paste((60, 255), (0, 0, 10, 20))
        path = _save(img, tmp_path / "la.png")
    else:
        img = Image.new("P", (20, 20), 0)
        img.putpalette([0, 0, 0, 60, 60, 60] + [0] * 762)
        img.paste(1, (0, 0, 10, 20))
        path = _save(img, tmp_path / "p.png", transparency=0)   # palette entry 0 is transparent
    out = decode_image(path, 20)
    assert tuple(out[10, 4]) == (60, 60, 60) and tuple(out[10, 15]) == WHITE


@pytest.mark.parametrize("dtype, suffix", [(np.uint16, ".png"), (">u2", ".tif"), (np.int32, ".tif")])
def test_16_bit_images_are_scaled_to_8_bits_keeping_their_tones(tmp_path, dtype, suffix):
    values = np.full((20, 20), 20000, dtype=dtype)             # PIL modes I;16, I;16B and I
    values[:, 10:] = 40000                                     # the right half twice as bright
    out = decode_image(_save(Image.fromarray(values), tmp_path / f"deep{suffix}"), 20)
    left, right = int(out[10, 4, 0]), int(out[10, 15, 0])
    assert right == 255 and abs(left - 127.5) <= 1             # brightest maps to white, ratio kept
    assert (out[10, 4] == left).all()                          # still grey


def test_16_bit_mask_of_zeros_and_ones_comes_out_black_and_white(tmp_path):
    mask = np.zeros((20, 20), dtype=np.uint16)                # a segmentation mask: 0 and 1 only
    mask[:, 10:] = 1
    out = decode_image(_save(Image.fromarray(mask), tmp_path / "mask.png"), 20)
    assert (out[:, :10] == 0).all() and (out[:, 10:] == 255).all()
    black = decode_image(_save(Image.fromarray(mask * 0), tmp_path / "black.png"), 20)
    assert (black == 0).all()                                  # no division by zero, no noise


@pytest.mark.parametrize("resize", ["letterbox", "stretch"])
def test_resizing_is_pil_bilinear_as_exported_models_expect(tmp_path, resize):
    noise = np.random.default_rng(0).integers(0, 256, (40, 80, 3), dtype=np.uint8)
    img = Image.fromarray(noise)                                # 80 x 40: detail that resamplers differ on
    out = decode_image(_save(img, tmp_path / "noise.png"), 20, resize)
    if resize == "stretch":                                     # the original's networks: squashed, no padding
        assert np.array_equal(out, np.asarray(img.resize((20, 20), Image.Resampling.BILINEAR)))
    else:                                                       # 20 x 10 in the middle rows
        assert np.array_equal(out[5:15], np.asarray(img.resize((20, 10), Image.Resampling.BILINEAR)))


def test_decoder_error_without_a_message_is_reported_by_its_kind(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError()
    monkeypatch.setattr(Image, "open", fail)
    with pytest.raises(UnreadableImage, match="^OSError$"):
        decode_image(tmp_path / "x.jpg", 16)


def test_wide_image_is_letterboxed_not_squashed(tmp_path):
    img = Image.new("RGB", (80, 40), WHITE)
    img.paste((0, 0, 0), (30, 10, 50, 30))                     # a 20 x 20 black square, centred
    out = decode_image(_save(img, tmp_path / "wide.png"), 40)
    dark = out[..., 0] < 128
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    assert list(rows) == list(cols) == list(range(15, 25))     # still a square, at half size
    assert (out[:10] == 255).all() and (out[-10:] == 255).all()  # white border: white padding


def test_letterbox_padding_is_the_mean_border_colour(tmp_path):
    img = Image.new("RGB", (20, 40), RED)                      # tall: padded left and right
    img.paste(BLUE, (0, 20, 20, 40))                           # bottom half blue
    out = decode_image(_save(img, tmp_path / "tall.png"), 20)
    pad = np.array(RED) * 0.5 + np.array(BLUE) * 0.5
    assert np.abs(out[:, :4].reshape(-1, 3) - pad).max() <= 1  # 5 pixels of padding each side
    assert np.abs(out[:, -4:].reshape(-1, 3) - pad).max() <= 1
    assert tuple(out[3, 10]) == RED and tuple(out[16, 10]) == BLUE


def test_letterbox_padding_takes_the_outermost_pixels_only(tmp_path):
    # The border colour is read from the resized image (so an exported model, which pads a resized
    # photo itself, gives the same pixels): a frame 4 px wide is still 2 px of pure black at half size.
    img = Image.new("RGB", (20, 40), WHITE)
    ImageOps.expand(img.crop((4, 4, 16, 36)), border=4, fill=(0, 0, 0)).save(tmp_path / "f.png")
    out = decode_image(tmp_path / "f.png", 20)                 # a black frame, white inside
    assert (out[:, :4] == 0).all() and (out[:, -4:] == 0).all()
    assert (out[8:12, 8:12] == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))                     # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6                                           # shown rotated 90 degrees clockwise
    out = decode_image(_save(img, tmp_path / "rot.jpg", exif=exif, quality=95), 40)
    assert out[2, 20, 2] > 150 and out[-3, 20, 0] > 150        # blue on top, red at the bottom
    assert np.abs(out[:, :8].astype(int) - (127, 0, 127)).max() <= 3  # now tall: padded at the
    assert np.abs(out[:, -8:].astype(int) - (127, 0, 127)).max() <= 3  # sides in the border mean


@pytest.mark.parametrize("suffix", [".tif", ".jpg"])
def test_cmyk_comes_out_in_its_rgb_colour(tmp_path, suffix):
    colour = (200, 120, 40)
    cmyk = Image.new("RGB", (16, 16), colour).convert("CMYK")
    out = decode_image(_save(cmyk, tmp_path / f"c{suffix}"), 16)
    assert np.abs(out[8, 8].astype(int) - colour).max() <= (1 if suffix == ".tif" else 6)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "I;16", "CMYK", "1", "F"])
def test_any_mode_gives_square_rgb_uint8(tmp_path, mode):
    img = Image.new("RGB", (30, 20), (120, 60, 200)).convert("L" if mode == "I;16" else mode)
    if mode == "I;16":
        img = Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16))
    suffix = {"CMYK": ".jpg", "F": ".tif"}.get(mode, ".png")
    out = decode_image(_save(img, tmp_path / f"img{suffix}"), 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


def test_truncated_and_zero_byte_files_are_unreadable_and_say_why(tmp_path):
    good = _save(Image.new("RGB", (64, 64), (10, 20, 30)), tmp_path / "good.jpg")
    (tmp_path / "half.jpg").write_bytes(good.read_bytes()[:100])
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name, why in (("half.jpg", "Truncated File Read"), ("empty.jpg", "cannot identify image file")):
        with pytest.raises(UnreadableImage, match=why):   # the words of the skipped-files report
            decode_image(tmp_path / name, 16)


def test_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    monkeypatch.setattr("data.decode.MAX_PIXELS", 30 * 30 - 1)
    path = _save(Image.new("RGB", (30, 30)), tmp_path / "big.png")
    with pytest.raises(UnreadableImage, match=f"30x30 pixels exceeds the {30 * 30 - 1:,} limit"):
        decode_image(path, 16)
    monkeypatch.setattr("data.decode.MAX_PIXELS", 30 * 30)
    assert decode_image(path, 16).shape == (16, 16, 3)          # exactly at the limit is fine
    assert MAX_PIXELS > 100_000_000
