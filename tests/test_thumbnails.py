"""The previews a worker stores with each result (shared.thumbnails): the source image
as browsers can draw it, at most 96 px, and the model's 28x28 input as a PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.thumbnails import THUMB_SIDE, model_input_png, model_input_pngs, png, thumbnail


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def opened(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def digit_page(width: int, height: int) -> np.ndarray:
    """A dark bar (a one) on light paper, uint8 (height, width)."""
    page = np.full((height, width), 235, np.uint8)
    page[height // 5: height - height // 5, width // 2 - max(1, width // 20): width // 2 + 2] = 20
    return page


def test_model_inputs_are_8_bit_greyscale_pngs_of_the_rounded_pixels():
    pixels = np.random.default_rng(0).random((5, 28, 28), dtype=np.float32)
    pixels[0] = 0.0
    pixels[1] = 1.0
    pngs = model_input_pngs(pixels)
    assert len(pngs) == 5
    for data, image in zip(pngs, pixels, strict=True):
        img = opened(data)
        assert (img.format, img.mode, img.size) == ("PNG", "L", (28, 28))
        assert np.array_equal(np.asarray(img), np.rint(image * 255).astype(np.uint8))
    assert model_input_png(pixels[2]) == pngs[2]
    assert model_input_pngs(np.zeros((0, 28, 28), np.float32)) == []


@pytest.mark.parametrize("shape", [(9, 7), (9, 7, 2), (9, 7, 3), (9, 7, 4)])
def test_png_writes_grey_grey_alpha_rgb_and_rgba(shape):
    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    img = opened(png(pixels))
    channels = shape[2] if len(shape) == 3 else 1
    assert img.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    assert img.size == (7, 9)
    assert np.array_equal(np.asarray(img), pixels)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_small_images_browsers_draw_are_kept_as_they_are(fmt):
    data = encode(Image.fromarray(digit_page(90, 60)), fmt)
    assert thumbnail(data) is data


@pytest.mark.parametrize("label, data, size", [
    ("28x28 TIFF", encode(Image.fromarray(digit_page(28, 28)), "TIFF"), (28, 28)),
    ("28x28 BMP", encode(Image.fromarray(digit_page(28, 28)), "BMP"), (28, 28)),
    ("16-bit TIFF", encode(Image.fromarray(digit_page(200, 120).astype(np.uint16) * 200),
                           "TIFF"), (96, 58)),
    ("big PNG", encode(Image.fromarray(digit_page(120, 300)), "PNG"), (38, 96)),
    ("big JPEG", encode(Image.fromarray(digit_page(1600, 1200)).convert("RGB"), "JPEG"),
     (96, 72)),
    ("CMYK JPEG", encode(Image.fromarray(digit_page(300, 300)).convert("CMYK"), "JPEG"),
     (96, 96)),
    ("1-bit TIFF", encode(Image.fromarray(digit_page(150, 150) > 128), "TIFF"), (96, 96)),
])
def test_other_images_become_small_8_bit_pngs(label, data, size):
    img = opened(thumbnail(data))
    assert img.format == "PNG", label
    assert img.size == size and max(img.size) <= THUMB_SIDE, label
    assert img.mode in ("L", "LA", "RGB", "RGBA"), label
    grey = np.asarray(img.convert("L"), np.float32)
    assert grey.min() < 100 < 180 < grey.max(), f"{label}: the ink and the paper survive"


def test_a_16_bit_scan_is_stretched_to_its_own_range():
    # 12-bit data in 16-bit pixels: shown as a plain 8-bit image would be black.
    page = (digit_page(100, 100).astype(np.uint16) * 16)
    img = opened(thumbnail(encode(Image.fromarray(page), "TIFF")))
    grey = np.asarray(img, np.float32)
    assert grey.max() > 200 and grey.min() < 60


def test_a_small_image_with_bulky_metadata_is_written_again():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 100_000, zip=False)
    data = encode(Image.fromarray(digit_page(28, 28)), "PNG", pnginfo=info)
    small = thumbnail(data)
    assert len(small) < 2_000 and opened(small).size == (28, 28)


def test_a_transparent_palette_gif_keeps_its_transparency():
    img = Image.fromarray(digit_page(200, 100)).convert("P")
    data = encode(img, "GIF", transparency=int(np.asarray(img)[0, 0]))
    out = opened(thumbnail(data))
    assert out.mode == "RGBA" and out.size == (96, 48)
    assert np.asarray(out)[0, 0, 3] == 0


def test_exif_orientation_is_applied():
    img = Image.fromarray(digit_page(200, 100)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: turn 90 degrees clockwise to show
    out = opened(thumbnail(encode(img, "JPEG", exif=exif.tobytes())))
    assert out.size == (48, 96)


def test_garbage_is_an_error_for_the_caller():
    with pytest.raises(OSError):  # PIL.UnidentifiedImageError
        thumbnail(b"not an image at all")


def test_classify_keeps_previews_of_the_images_that_decoded(shipped_model):
    from shared.imaging import prepare
    from tests.conftest import mnist_png_bytes
    from worker.inference import Predictor
    from worker.processing import classify

    digit = mnist_png_bytes(0, 1)[0][1]
    blank = encode(Image.new("L", (64, 64), 240), "PNG")
    tiff = encode(Image.fromarray(digit_page(200, 120)), "TIFF")
    predictor = Predictor(shipped_model, "cpu", 128, 1)
    done, no_digit, scan, failed = classify([digit, blank, tiff, b"junk"], predictor,
                                            previews=True)
    assert (done.status, no_digit.status, failed.status) == ("done", "no_digit", "failed")
    assert done.thumbnail == digit  # a small PNG is its own thumbnail
    expected = np.rint(prepare(digit).pixels * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(opened(done.model_input)), expected)
    assert opened(no_digit.thumbnail).size == (64, 64)
    assert opened(no_digit.model_input).size == (28, 28)
    assert opened(scan.thumbnail).format == "PNG" and opened(scan.thumbnail).size == (96, 58)
    assert failed.thumbnail is None and failed.model_input is None
    # What /predict answers (as_dict) carries no bytes; without previews there are none.
    assert "thumbnail" not in done.as_dict() and "model_input" not in done.as_dict()
    plain = classify([digit], predictor)[0]
    assert plain.thumbnail is None and plain.model_input is None
