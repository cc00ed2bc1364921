"""shared.imaging: every input family reaches the MNIST form; bad files are refused alone;
shared.verdict: blank pages and noise are no_digit; thresholds as fitted."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from shared.formats import sniff_format
from shared.imaging import ImageError, Prepared, decode, prepare
from shared.settings import get_settings
from shared.verdict import PROBE_MEASURES, Verdict, judge, probe_features, softmax

# The shipped model (models/digits-cnn.safetensors unless DIGITS_MODEL_PATH says otherwise).
MODEL = Path(get_settings().model_path)


@pytest.fixture(scope="module")
def digits(mnist_test):
    images, labels = mnist_test
    return images[:300], labels[:300]


@pytest.fixture(scope="module")
def shipped():
    if not MODEL.is_file():
        pytest.skip(f"the shipped model {MODEL} is absent (run `digits train`, then "
                    "`digits calibrate`)")
    from shared import artifact

    return artifact.load(MODEL)


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def page(digit: np.ndarray, height: int, paper=(255, 255, 255), ink=(0, 0, 0),
         spread: float = 1.5, offset=(0.5, 0.5)) -> np.ndarray:
    """An MNIST digit drawn `height` pixels tall in colour on a page, as RGB uint8."""
    ys, xs = np.nonzero(digit)
    crop = Image.fromarray(digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    scale = height / crop.height
    big = crop.resize((max(1, round(crop.width * scale)), height), Image.BILINEAR)
    a = np.asarray(big, dtype=np.float32) / 255
    ph, pw = round(height * spread), round(height * spread)
    top, left = round((ph - a.shape[0]) * offset[0]), round((pw - a.shape[1]) * offset[1])
    cover = np.zeros((ph, pw), np.float32)
    cover[top : top + a.shape[0], left : left + a.shape[1]] = a
    rgb = (1 - cover[..., None]) * np.array(paper) + cover[..., None] * np.array(ink)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def similarity(prepared: Prepared, digit: np.ndarray) -> float:
    """Correlation between the prepared pixels and the MNIST original."""
    return float(np.corrcoef(prepared.pixels.ravel(), digit.ravel().astype(np.float32))[0, 1])


def assert_like(data: bytes, digit: np.ndarray, least: float = 0.8) -> Prepared:
    p = prepare(data)
    assert p.has_ink
    assert p.pixels.shape == (28, 28) and p.pixels.dtype == np.float32
    assert p.pixels.min() >= 0 and p.pixels.max() <= 1
    assert similarity(p, digit) > least, similarity(p, digit)
    return p


# --- formats and modes ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"])
def test_each_accepted_format(digits, fmt):
    digit = digits[0][0]
    data = encode(Image.fromarray(page(digit, 80, (245, 240, 225), (25, 40, 140))), fmt)
    assert sniff_format(data) == fmt
    assert_like(data, digit)


@pytest.mark.parametrize("mode", ["L", "RGB", "1", "CMYK"])
def test_plain_modes(digits, mode):
    digit = digits[0][1]
    img = Image.fromarray(page(digit, 60)).convert(mode)
    assert_like(encode(img, "TIFF" if mode == "CMYK" else "PNG"), digit, 0.75)


def test_both_polarities_give_the_same_digit(digits):
    digit = digits[0][2]
    dark_on_light = prepare(encode(Image.fromarray(page(digit, 70))))
    light_on_dark = prepare(encode(Image.fromarray(page(digit, 70, (0, 0, 0), (255, 255, 255)))))
    assert np.abs(dark_on_light.pixels - light_on_dark.pixels).mean() < 0.01
    assert similarity(dark_on_light, digit) > 0.85


@pytest.mark.parametrize("stroke", [255, 0], ids=["white_strokes", "black_strokes"])
def test_canvas_png_with_transparent_background(digits, stroke):
    digit = digits[0][3]
    cover = page(digit, 200)[..., 0]  # white page, black ink: ink cover is 255 - value
    rgba = np.zeros((*cover.shape, 4), np.uint8)
    rgba[..., :3] = stroke
    rgba[..., 3] = 255 - cover
    assert_like(encode(Image.fromarray(rgba, "RGBA")), digit, 0.85)


def test_grey_with_alpha_and_palette_with_transparency(digits):
    digit = digits[0][4]
    la = Image.fromarray(page(digit, 50)).convert("LA")
    assert_like(encode(la), digit)
    pal = Image.fromarray(page(digit, 50, (250, 244, 210), (150, 20, 20))).quantize(16)
    pal.info["transparency"] = int(np.bincount(np.asarray(pal).ravel()).argmax())  # the paper
    assert_like(encode(pal), digit)


def test_sixteen_bit(digits):
    digit = digits[0][5]
    grey = np.asarray(Image.fromarray(page(digit, 90)).convert("L"), dtype=np.uint16) * 257
    img = Image.fromarray(grey)
    assert img.mode.startswith("I;16")
    assert_like(encode(img), digit)
    assert_like(encode(img, "TIFF"), digit)


def test_exif_orientation_is_applied(digits):
    digit = digits[0][6]
    stored = Image.fromarray(page(digit, 80)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view": undoes the ROTATE_90 above
    data = encode(stored, "JPEG", quality=92, exif=exif)
    assert decode(data).size == (stored.height, stored.width)
    assert_like(data, digit)


def test_gif_first_frame_only(digits):
    digit = digits[0][7]
    first = Image.fromarray(page(digit, 60)).convert("P")
    other = Image.new("P", first.size, 0)
    data = encode(first, "GIF", save_all=True, append_images=[other])
    assert_like(data, digit)


# --- sizes, placement, lighting, pens, noise ---------------------------------------------------


def test_tiny_digit_ten_pixels_tall(digits):
    digit = digits[0][8]
    assert_like(encode(Image.fromarray(page(digit, 10))), digit, 0.7)


def test_huge_digit_over_a_thousand_pixels(digits):
    digit = digits[0][9]
    data = encode(Image.fromarray(page(digit, 1100, spread=1.2)).convert("L"), "JPEG", quality=80)
    assert_like(data, digit)


def test_off_centre_on_a_big_page(digits):
    digit = digits[0][10]
    assert_like(encode(Image.fromarray(page(digit, 40, spread=5, offset=(0.1, 0.9)))), digit)


def test_uneven_lighting_blur_and_jpeg(digits):
    digit = digits[0][11]
    rgb = page(digit, 120, (245, 240, 225), (20, 30, 90)).astype(np.float32)
    h, w = rgb.shape[:2]
    light = np.linspace(0.45, 1.0, w)[None, :, None] * np.linspace(0.8, 1.0, h)[:, None, None]
    img = Image.fromarray(np.clip(rgb * light, 0, 255).astype(np.uint8))
    from PIL import ImageFilter

    data = encode(img.filter(ImageFilter.GaussianBlur(1.5)), "JPEG", quality=40)
    assert_like(data, digit)


def test_scan_border_and_stray_speck_are_ignored(digits):
    digit = digits[0][12]
    clean = prepare(encode(Image.fromarray(page(digit, 100, spread=2))))
    rgb = page(digit, 100, spread=2)
    rgb[:, :6] = 0  # a dark scanner edge
    rgb[-5:, :] = 0
    rgb[20:26, 170:176] = 0  # a speck far from the digit
    dirty = prepare(encode(Image.fromarray(rgb)))
    assert np.abs(dirty.pixels - clean.pixels).mean() < 0.03
    assert similarity(dirty, digit) > 0.85
    assert dirty.clutter > 0


@pytest.mark.parametrize("pen", ["MaxFilter", "MinFilter"], ids=["thick", "thin"])
def test_thick_and_thin_pens(digits, pen):
    from PIL import ImageFilter

    digit = digits[0][13]
    img = Image.fromarray(page(digit, 200)).convert("L")
    img = img.filter(getattr(ImageFilter, pen)(9))
    assert_like(encode(img), digit, 0.75)


# --- refusals ---------------------------------------------------------------------------------


def refused(data: bytes, **kw) -> str:
    with pytest.raises(ImageError) as info:
        prepare(data, **kw)
    assert str(info.value)
    return info.value.code


def test_zero_bytes():
    assert refused(b"") == "empty"


def test_truncated_files(digits):
    png = encode(Image.fromarray(page(digits[0][0], 60)))
    jpeg = encode(Image.fromarray(page(digits[0][0], 60)), "JPEG")
    assert refused(png[: len(png) // 2]) == "corrupt"
    assert refused(jpeg[:200]) == "corrupt"


def test_decompression_bomb():
    bomb = encode(Image.new("1", (10_000, 9_000)))  # 90 megapixels in a few kilobytes
    assert len(bomb) < 100_000
    assert refused(bomb) == "too_large"
    assert refused(encode(Image.new("L", (300, 300))), max_pixels=10_000) == "too_large"


def test_formats_outside_the_allowlist():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert refused(eps) == "unsupported_format"
    assert refused(encode(Image.new("RGB", (20, 20)), "PPM")) == "unsupported_format"
    assert refused(b"just some text, not an image") == "unsupported_format"


# --- the model: MNIST round trip, no digit, thresholds -----------------------------------------


def predict(model, pixels: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(pixels.astype(np.float32)).unsqueeze(1)).numpy()


def test_mnist_reencoded_as_png_keeps_its_predictions(digits, shipped):
    model, _ = shipped
    images, _ = digits
    prepared = np.stack([prepare(encode(Image.fromarray(255 - im))).pixels for im in images])
    before = predict(model, images / 255.0).argmax(1)
    after = predict(model, prepared).argmax(1)
    assert (before == after).mean() >= 0.99


def no_digit_pages() -> list[bytes]:
    rng = np.random.default_rng(0)
    gradient = np.linspace(120, 250, 200)[None, :] * np.ones((150, 1))
    return [
        encode(Image.new("RGB", (300, 200), (245, 240, 225))),
        encode(Image.fromarray(gradient.astype(np.uint8)), "JPEG"),
        encode(Image.fromarray(rng.integers(0, 256, (120, 120), dtype=np.uint8))),
        encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "WEBP"),
        encode(Image.new("RGBA", (280, 280), (0, 0, 0, 0))),  # an empty canvas
    ]


def verdict(model, meta, data: bytes) -> Verdict:
    p = prepare(data)
    return judge(p, softmax(predict(model, p.pixels[None])[0], meta["temperature"]), meta)


def test_blank_pages_and_noise_are_no_digit(shipped):
    model, meta = shipped
    for data in no_digit_pages():
        v = verdict(model, meta, data)
        assert v.status == "no_digit" and v.digit is None


def test_real_digits_are_done(digits, shipped):
    model, meta = shipped
    images, labels = digits
    results = [verdict(model, meta, encode(Image.fromarray(page(im, 60)), "JPEG"))
               for im in images[:40]]
    assert all(v.status == "done" for v in results)
    assert np.mean([v.digit == y for v, y in zip(results, labels, strict=False)]) >= 0.95


def test_shipped_metadata_carries_fitted_thresholds(shipped):
    _, meta = shipped
    for key in ("review_threshold", "no_digit_threshold", "no_digit_max_clutter",
                "no_digit_max_ink_fraction", "no_digit_max_pen", "no_digit_max_block",
                "no_digit_min_pen", "no_digit_probe"):
        assert key in meta, f"run `digits calibrate`: {key} missing"
    assert len(meta["no_digit_probe"]["weights"]) == 10 + len(PROBE_MEASURES)
    assert 0 < meta["no_digit_threshold"] <= meta["review_threshold"] < 1


def test_judge_applies_the_thresholds():
    meta = {"review_threshold": 0.95, "no_digit_threshold": 0.4, "no_digit_max_clutter": 0.3,
            "no_digit_max_ink_fraction": 0.4}
    digit = Prepared(np.zeros((28, 28), np.float32), 0.1, True, 0.8, 0.0, 1, 1.0)
    probs = np.full(10, 0.01)
    probs[3] = 0.91
    assert judge(digit, probs, meta) == Verdict("done", 3, 0.91, True)
    probs[3], probs[4] = 0.99, 0.0
    assert judge(digit, probs, meta).needs_review is False
    probs = np.full(10, 0.1)
    assert judge(digit, probs, meta).status == "no_digit"
    cluttered = Prepared(digit.pixels, 0.1, True, 0.8, 0.5, 3, 1.0)
    assert judge(cluttered, np.eye(10)[2], meta).status == "no_digit"
    blob = Prepared(digit.pixels, 0.1, True, 0.8, 0.0, 1, 9.0)
    assert judge(blob, np.eye(10)[2], {**meta, "no_digit_max_pen": 3.0}).status == "no_digit"
    blank = Prepared(digit.pixels, 0.0, False)
    assert judge(blank, np.eye(10)[2], meta).status == "no_digit"


def test_review_threshold_meets_its_target():
    from training.calibrate import review_threshold

    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.5, 1.0, 5000)
    correct = rng.uniform(0, 1, 5000) < confidence  # less confident, more often wrong
    t = review_threshold(confidence, correct, 0.01)
    kept = confidence >= t
    assert (~correct[kept]).mean() <= 0.01
    assert 0.5 < t < 1.0


def test_generated_set_is_seeded(digits):
    from training.scans import generate

    images, labels = digits
    first = [v.data for v in generate(images[:12], labels[:12], 5)]
    again = [v.data for v in generate(images[:12], labels[:12], 5)]
    other = [v.data for v in generate(images[:12], labels[:12], 6)]
    assert first == again and first != other


@pytest.mark.parametrize("width", [8, 16, 28])
def test_a_straight_vertical_stroke_is_a_one(shipped, width):
    """A finger-drawn 1 on a canvas is often perfectly straight: its crop is all ink from
    side to side, which once made it look like a blob."""
    model, meta = shipped
    canvas = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).line([(140, 40), (140, 240)], fill=(255, 255, 255, 255), width=width)
    result = verdict(model, meta, encode(canvas))
    assert (result.status, result.digit) == ("done", 1)


def _median_case(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        x = rng.normal(size=n)
    elif kind == "ties":
        x = rng.integers(0, 4, n)
    elif kind == "eight_bit":
        x = rng.integers(200, 256, n) / 255
    elif kind == "half_zero":
        x = np.r_[np.zeros(n // 2), rng.random(n - n // 2)]
    else:
        x = np.sort(rng.random(n))[::-1]
    return x.astype(np.float32)


@pytest.mark.parametrize("kind", ["normal", "ties", "eight_bit", "half_zero", "sorted"])
def test_fast_median_is_exact(kind):
    """prepare's medians select a band first: the result must still be np.median's."""
    from shared.inkmap import median as _median

    rng = np.random.default_rng(3)
    for n in [1, 2, 7, 4096, 4097, 5000, 16384, 25001]:
        x = _median_case(kind, n, rng)
        assert _median(x) == pytest.approx(float(np.median(x.astype(np.float64))), abs=1e-7)


@pytest.mark.parametrize("size", [(1, 1), (1, 500), (500, 1), (2, 2), (3, 1)])
def test_degenerate_sizes_are_blank_not_errors(size):
    """One-pixel-wide images once crashed the noise estimate (an empty median)."""
    for fill in (0, 255):
        assert prepare(encode(Image.new("L", size, fill))).has_ink is False


def test_scatter_of_blobs_and_faint_textures_are_no_digit():
    meta = {"review_threshold": 0.9, "no_digit_threshold": 0.3, "no_digit_max_pieces": 6,
            "no_digit_min_contrast": 0.08}
    probs = np.eye(10)[4]
    digit = Prepared(np.zeros((28, 28), np.float32), 0.2, True, 0.5, 0.0, 2, 1.0)
    assert judge(digit, probs, meta).status == "done"
    blobs = Prepared(digit.pixels, 0.2, True, 0.5, 0.0, 7, 1.0)
    assert judge(blobs, probs, meta).status == "no_digit"
    faint = Prepared(digit.pixels, 0.2, True, 0.05, 0.0, 1, 1.0)
    assert judge(faint, probs, meta).status == "no_digit"


def test_a_smear_with_no_stroke_is_no_digit():
    """A stroke is at least 2 px wide, so a digit's pen is at least half MNIST's; a shape
    none of whose pixels reaches half the ink level measures 0 (a band of noise)."""
    meta = {"review_threshold": 0.9, "no_digit_threshold": 0.3, "no_digit_min_pen": 0.4}
    smear = Prepared(np.zeros((28, 28), np.float32), 0.13, True, 0.1, 0.0, 2, 0.0)
    assert judge(smear, np.eye(10)[1], meta).status == "no_digit"
    thin = Prepared(smear.pixels, 0.13, True, 0.1, 0.0, 2, 0.5)
    assert judge(thin, np.eye(10)[1], meta).status == "done"


def test_the_no_digit_probe_weighs_the_answer_and_the_measures():
    """score = weights . (log-probabilities, measures) + bias; over its threshold, no digit.
    Here it weighs the log-probability of a 4 against low contrast."""
    weights = np.zeros(10 + len(PROBE_MEASURES))
    weights[4] = -1.0
    weights[10 + PROBE_MEASURES.index("contrast")] = -10.0
    meta = {"review_threshold": 0.9, "no_digit_threshold": 0.1,
            "no_digit_probe": {"weights": weights.tolist(), "bias": 0.0, "threshold": -4.0}}
    sure = np.full(10, 0.01)
    sure[4] = 0.91
    digit = Prepared(np.zeros((28, 28), np.float32), 0.2, True, 0.5, 0.0, 1, 1.0)
    assert probe_features(digit, sure).shape == weights.shape
    assert judge(digit, sure, meta).status == "done"  # 0.09 - 5 < -4
    faint = Prepared(digit.pixels, 0.2, True, 0.25, 0.0, 1, 1.0)
    assert judge(faint, sure, meta).status == "no_digit"  # 0.09 - 2.5 > -4
    unsure = np.full(10, 0.8 / 9)
    unsure[4] = 0.2
    assert judge(digit, unsure, meta).status == "no_digit"  # 1.61 - 5 > -4
    assert judge(digit, unsure, {**meta, "no_digit_probe": None}).status == "done"


def test_a_filled_box_is_no_digit_and_a_bar_or_a_ring_is_not():
    """A filled rectangle (a patch of patterned cheque paper taken for ink, a box read
    inside out) is not a digit. A "1" cut tight to its box fills the box too, but is a
    bar; a "0" leaves most of its box empty."""
    meta = {"review_threshold": 0.9, "no_digit_threshold": 0.3, "no_digit_max_block": 0.9}
    patch = Image.new("L", (40, 30), 255)
    ImageDraw.Draw(patch).rectangle((6, 5, 33, 24), fill=0)
    filled = prepare(encode(patch.convert("1")))
    assert filled.has_ink and filled.block > 0.9
    assert judge(filled, np.eye(10)[7], meta).status == "no_digit"
    bar = Image.new("L", (7, 24), 20)  # a "1" cut at no margin: all ink
    bar.paste(230, (0, 0, 1, 24))
    assert prepare(encode(bar)).block == 0.0
    ring = Image.new("L", (24, 30), 255)
    ImageDraw.Draw(ring).ellipse((2, 2, 21, 27), outline=0, width=3)
    drawn = prepare(encode(ring))
    assert 0 < drawn.block < 0.8 and judge(drawn, np.eye(10)[0], meta).status == "done"


@pytest.mark.parametrize("sides", [(0, 1, 2, 3), (0, 2, 3), (1, 2)], ids=["four", "three", "L"])
def test_printed_box_sides_are_not_ink_and_the_digit_inside_is(sides):
    """Thick printed sides are most of a small box's rim: read as the paper, they turned
    the box inside out (a filled bar, a "1"). They are a frame: the paper is read inside
    it, and the sides, lying along the edges, are dropped as border lines are."""
    def box(digit: bool) -> bytes:
        img = Image.new("L", (30, 40), 240)
        draw = ImageDraw.Draw(img)
        for side in sides:
            draw.rectangle([(0, 0, 29, 2), (0, 37, 29, 39), (0, 0, 2, 39), (27, 0, 29, 39)][side],
                           fill=50)
        if digit:
            draw.line((15, 10, 15, 30), fill=30, width=3)
        return encode(img)

    assert not prepare(box(False)).has_ink
    one = prepare(box(True))
    assert one.has_ink and _ink_box(one.pixels)[0] == 20 and _ink_box(one.pixels)[1] <= 5


def _ink_box(pixels: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero((pixels > 0.5).any(1)), np.flatnonzero((pixels > 0.5).any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_a_printed_rule_through_a_cut_is_taken_out_and_a_digits_bar_is_not():
    """A cheque's printed line crosses the whole cut, thinner than the pen: it goes, and
    the "1" it crossed is a bar again. A "7" cut tight keeps its own bar, as thick as its
    stem, though that bar too runs from edge to edge."""
    one = Image.new("L", (30, 36), 235)
    draw = ImageDraw.Draw(one)
    draw.line((15, 3, 15, 32), fill=20, width=5)
    draw.line((0, 20, 29, 20), fill=60, width=1)
    height, width = _ink_box(prepare(encode(one)).pixels)
    assert height == 20 and width <= 6  # the stroke alone, fitted in 20x20
    seven = Image.new("L", (24, 36), 235)
    draw = ImageDraw.Draw(seven)
    draw.line((0, 2, 23, 2), fill=20, width=5)
    draw.line((21, 2, 8, 35), fill=20, width=5)
    height, width = _ink_box(prepare(encode(seven)).pixels)
    assert width >= 12  # the bar is still there


def _ring(h: int, w: int, paper: int, ink: int, blur: float, tight: bool) -> bytes:
    """A "0": cut tight (the ring hugs all four edges, so the page's rim is mostly ink),
    or a fat one filled in but for a small hole, covering most of its page."""
    from PIL import ImageFilter

    img = Image.new("L", (w, h), paper)
    draw = ImageDraw.Draw(img)
    if tight:
        draw.ellipse((-1, -1, w, h), outline=ink, width=5)
    else:
        draw.ellipse((1, 1, w - 2, h - 2), fill=ink)
        draw.ellipse((w // 2 - 3, h // 2 - 5, w // 2 + 3, h // 2 + 5), fill=paper)
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    return encode(img)


@pytest.mark.parametrize("paper, ink, blur, tight", [(205, 60, 1.0, True), (0, 255, 0.0, False)],
                         ids=["tight-grey-scan", "fat-white-bitmap"])
def test_a_zero_whose_ink_covers_its_rim_or_its_page_is_read_as_a_ring(shipped, paper, ink,
                                                                       blur, tight):
    """A dark "0" cut tight on a grey scan puts more ink than paper on the rim: the page
    is read inside out, then turned (shared.inkmap._turned). A fat white "0" on a black
    bitmap also has lighter ink over most of its page, but its rim is paper: bitmaps are
    left as found."""
    p = prepare(_ring(34, 24, paper, ink, blur, tight))
    # Read inside out, the hole would be the ink: bright in the middle, little else.
    assert p.pixels[12:16, 12:16].mean() < (0.2 if tight else 0.5), "the hole is paper"
    assert p.pixels.max() > 0.9 and (p.pixels > 0.5).mean() > (0.1 if tight else 0.2)
    model, _ = shipped
    import torch

    with torch.no_grad():
        logits = model(torch.from_numpy(p.pixels[None, None]))
    assert int(logits.argmax()) == 0
