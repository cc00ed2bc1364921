"""A seeded set of scan-like images made from MNIST digits, and `digits evaluate --style scans`.

Each digit is drawn the way real inputs arrive: a pen of some width, a size from 10 to
over 1,000 pixels, somewhere on a page of some colour, lit unevenly, photographed or
scanned (blur, noise, JPEG), sometimes with a scan border or specks, saved in one of
the accepted formats and modes (16-bit, palette, transparent canvas, EXIF-rotated).
The bytes then go through `shared.imaging.prepare_many`, exactly as in the worker.

The evaluation draws from the MNIST *test* digits; calibration (training/calibrate.py)
draws from the validation part of the *training* digits with another seed, so nothing
fitted ever sees a test digit.
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from shared.imaging import Prepared, prepare_many
from shared.settings import get_settings

EVAL_SEED = 20_240_601
EVAL_SIZE = 10_000  # one variant per MNIST test digit: about a minute on 2 cores

# Families of inputs; each variant belongs to one, which sets its main difficulty, while
# colours, formats and mild noise vary across all of them. The weights keep the costly
# huge pages rare.
FAMILIES = {
    "scan": 0.14, "photo": 0.14, "light_on_dark": 0.10, "canvas_white": 0.07,
    "canvas_black": 0.07, "tiny": 0.07, "huge": 0.02, "off_centre": 0.08, "pens": 0.09,
    "rotated": 0.07, "border_speck": 0.07, "formats": 0.08,
}

PAPERS = [(255, 255, 255), (245, 240, 225), (250, 244, 210), (235, 235, 235), (225, 235, 245)]
INKS = [(10, 10, 10), (25, 40, 140), (20, 30, 90), (150, 20, 20), (60, 60, 60), (20, 90, 40)]
DARK_PAPERS = [(0, 0, 0), (20, 40, 30), (30, 30, 40), (15, 20, 60)]
LIGHT_INKS = [(255, 255, 255), (235, 235, 220), (250, 240, 120), (200, 230, 255)]


@dataclass
class Variant:
    data: bytes
    label: int
    family: str


# --- drawing a digit ------------------------------------------------------------------------


def _ink(digit: np.ndarray, height: int, rng: np.random.Generator, pen: float,
         angle: float) -> np.ndarray:
    """The digit's ink coverage (0..1) at the given height, pen and rotation."""
    ys, xs = np.nonzero(digit > 0)
    crop = Image.fromarray(digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    # Pen changes are made at a middle resolution: rank filters cost the square of their size.
    mid = 84
    scale = mid / crop.height
    img = crop.resize((max(1, round(crop.width * scale)), mid), Image.BICUBIC)
    img = img.crop((-12, -12, img.width + 12, img.height + 12))
    if pen > 1.2:
        img = img.filter(ImageFilter.MaxFilter(2 * round(pen) + 1))
    elif pen < 0.8:
        img = img.filter(ImageFilter.MinFilter(3))
        if pen < 0.5:  # a hairline: threshold the eroded strokes thin
            img = img.point(lambda v: 255 if v > 200 else 0)
    if angle:
        img = img.rotate(angle, resample=Image.BILINEAR, expand=True)
    factor = height / mid
    size = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
    img = img.resize(size, Image.BOX if factor < 1 else Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def _page(ink: np.ndarray, rng: np.random.Generator, spread: float) -> np.ndarray:
    """Place the ink on a larger page at a random position."""
    h, w = ink.shape
    ph, pw = round(h * spread), round(w * spread + (spread - 1) * h * 0.3)
    page = np.zeros((ph, pw), np.float32)
    top, left = rng.integers(0, ph - h + 1), rng.integers(0, pw - w + 1)
    page[top : top + h, left : left + w] = ink
    return page


def _lighting(shape: tuple[int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth multiplicative light field: a gradient plus a soft spot."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)  # photos are at most a few hundred wide
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(theta) * xx / max(w, 1) + np.sin(theta) * yy / max(h, 1))
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    spot = np.exp(-(((yy - cy) / h) ** 2 + ((xx - cx) / w) ** 2) * 2)
    return 1 - strength * (0.7 * ramp + 0.3 * (1 - spot))


def _specks(page: np.ndarray, rng: np.random.Generator, count: int, unit: float) -> None:
    h, w = page.shape
    for _ in range(count):
        r = max(1, round(unit * rng.uniform(0.3, 1.0)))
        y, x = rng.integers(0, h), rng.integers(0, w)
        page[max(0, y - r) : y + r, max(0, x - r) : x + r] = 1.0


def _border(page: np.ndarray, rng: np.random.Generator) -> None:
    """Dark scanner-lid edges along one or two sides."""
    h, w = page.shape
    t = max(1, round(0.02 * min(h, w) * rng.uniform(0.5, 2)))
    edges(page, rng.choice(4, size=rng.integers(1, 3), replace=False), t)


def edges(page: np.ndarray, sides, t: int) -> None:
    """Ink `t` pixels deep along the given sides (0 top, 1 bottom, 2 left, 3 right)."""
    for side in sides:
        if side == 0:
            page[:t] = 1
        elif side == 1:
            page[-t:] = 1
        elif side == 2:
            page[:, :t] = 1
        else:
            page[:, -t:] = 1


# --- colouring and saving -------------------------------------------------------------------


def _colour(page: np.ndarray, paper, ink, light: np.ndarray | None, noise: float,
            rng: np.random.Generator) -> np.ndarray:
    """Ink cover (0..1) -> RGB uint8 on the paper; float32 throughout, pages can be 2k wide."""
    paper = np.array(paper, np.float32)
    rgb = paper + page[..., None] * (np.array(ink, np.float32) - paper)
    if light is not None:
        rgb *= light[..., None]
    if noise:
        rgb += rng.standard_normal(page.shape, dtype=np.float32)[..., None] * (noise * 255)
    return np.clip(rgb, 0, 255, out=rgb).astype(np.uint8)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _save(rgb: np.ndarray, rng: np.random.Generator, fmt: str | None = None) -> bytes:
    img = Image.fromarray(rgb, "RGB")
    if rng.random() < 0.3:
        img = img.convert("L")
    fmt = fmt or str(rng.choice(["PNG", "JPEG", "JPEG", "WEBP", "TIFF", "BMP"]))
    if fmt == "JPEG":
        return _encode(img, "JPEG", quality=int(rng.integers(35, 95)))
    if fmt == "WEBP":
        return _encode(img, "WEBP", quality=int(rng.integers(50, 95)))
    return _encode(img, fmt)


def _special_format(rgb: np.ndarray, rng: np.random.Generator) -> bytes:
    """16-bit grey, palette PNG/GIF, EXIF-rotated JPEG, LA, multi-frame GIF."""
    kind = rng.integers(0, 5)
    if kind == 0:  # 16-bit grey PNG or TIFF
        grey = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16) * 257
        return _encode(Image.fromarray(grey), str(rng.choice(["PNG", "TIFF"])))
    if kind == 1:  # palette
        img = Image.fromarray(rgb).quantize(int(rng.choice([4, 16, 64])))
        return _encode(img, str(rng.choice(["PNG", "GIF"])))
    if kind == 2:  # EXIF orientation: stored sideways, tagged so a viewer turns it upright
        orientation, transpose = [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
                                  (3, Image.Transpose.ROTATE_180)][rng.integers(0, 3)]
        img = Image.fromarray(rgb).transpose(transpose)
        exif = Image.Exif()
        exif[0x0112] = orientation
        return _encode(img, "JPEG", quality=90, exif=exif)
    if kind == 3:  # grey with an opaque alpha channel
        return _encode(Image.fromarray(rgb).convert("LA"), "PNG")
    # Animated GIF: only the first frame is the digit.
    first = Image.fromarray(rgb).convert("P")
    other = Image.new("P", first.size, 0)
    return _encode(first, "GIF", save_all=True, append_images=[other], duration=100)


def _canvas(ink: np.ndarray, white: bool, rng: np.random.Generator) -> bytes:
    """A browser canvas export: strokes with antialiased alpha on a transparent background."""
    page = _page(ink, rng, rng.uniform(1.2, 1.8))
    value = 255 if white else 0
    rgba = np.zeros((*page.shape, 4), np.uint8)
    rgba[..., :3] = value
    rgba[..., 3] = np.round(page * 255).astype(np.uint8)
    return _encode(Image.fromarray(rgba, "RGBA"), "PNG")


def render(digit: np.ndarray, family: str, rng: np.random.Generator) -> bytes:
    """One MNIST digit (28x28, ink bright) drawn as an image file of the given family."""
    height = int(rng.integers(28, 160))
    pen, angle, spread, light, noise = 1.0, 0.0, rng.uniform(1.15, 1.6), None, 0.0
    paper, ink = PAPERS[rng.integers(len(PAPERS))], INKS[rng.integers(len(INKS))]
    if family == "tiny":
        height = int(rng.integers(10, 17))
    elif family == "huge":
        height, spread = int(rng.integers(1000, 1300)), rng.uniform(1.1, 1.3)
    elif family == "off_centre":
        height, spread = int(rng.integers(30, 90)), rng.uniform(2.0, 4.0)
    elif family == "pens":
        pen = float(rng.choice([0.4, 0.7, 2.0, 3.0, 4.0]))
    elif family == "rotated":
        angle = float(rng.uniform(-15, 15))
    elif family == "light_on_dark":
        paper, ink = DARK_PAPERS[rng.integers(len(DARK_PAPERS))], LIGHT_INKS[rng.integers(4)]
    if family in ("canvas_white", "canvas_black"):
        return _canvas(_ink(digit, int(rng.integers(40, 300)), rng, float(rng.choice([1, 2, 3])),
                           0.0), family == "canvas_white", rng)
    page = _page(_ink(digit, height, rng, pen, angle), rng, spread)
    if family == "border_speck":
        _border(page, rng)
        _specks(page, rng, int(rng.integers(1, 4)), 0.04 * height)
    if family == "photo":
        light, noise = _lighting(page.shape, rng, rng.uniform(0.2, 0.5)), rng.uniform(0, 0.04)
    elif family == "scan":
        noise = rng.uniform(0, 0.02)
    rgb = _colour(page, paper, ink, light, noise, rng)
    if family == "photo" and rng.random() < 0.7:
        blur = 0.02 * height * rng.uniform(0.5, 1.0)
        rgb = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(blur)))
    if family == "formats":
        return _special_format(rgb, rng)
    return _save(rgb, rng, "JPEG" if family == "photo" else None)


def pick_family(rng: np.random.Generator) -> str:
    names = list(FAMILIES)
    weights = np.array([FAMILIES[k] for k in names])
    return names[rng.choice(len(names), p=weights / weights.sum())]


def variant(digit: np.ndarray, label: int, seed: int, index: int) -> Variant:
    """Variant `index` has its own generator seeded by (seed, index), so it is the same
    whatever the size of the set."""
    rng = np.random.default_rng((seed, index))
    family = pick_family(rng)
    return Variant(render(digit, family, rng), int(label), family)


def generate(images: np.ndarray, labels: np.ndarray, seed: int):
    """Yield one `Variant` per digit, seeded: the same seed gives the same bytes."""
    for i, (digit, label) in enumerate(zip(images, labels, strict=True)):
        yield variant(digit, label, seed, i)


# --- images that hold no digit --------------------------------------------------------------


def render_non_digit(kind: str, rng: np.random.Generator) -> bytes:
    """A blank page, pure noise, or a photo-like texture, in the same formats."""
    h, w = int(rng.integers(28, 400)), int(rng.integers(28, 400))
    paper = np.array(PAPERS[rng.integers(len(PAPERS))], np.float32)
    if kind == "blank":
        light = _lighting((h, w), rng, rng.uniform(0, 0.4))
        rgb = paper * light[..., None] + rng.normal(0, rng.uniform(0, 0.02) * 255, (h, w, 1))
    elif kind == "noise":
        rgb = rng.uniform(0, 255, (h, w, 1)) * np.ones(3)
        if rng.random() < 0.5:
            rgb = rng.uniform(0, 255, (h, w, 3))
    else:  # texture: smooth random blobs at a few scales, like foliage or fabric
        field = np.zeros((h, w), np.float32)
        for cells in (4, 8, 16):
            small = Image.fromarray(rng.uniform(0, 1, (cells, cells)).astype(np.float32), "F")
            field += np.asarray(small.resize((w, h), Image.BICUBIC)) / cells ** 0.5
        field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
        tint = rng.uniform(40, 255, 3)
        rgb = field[..., None] * tint + (1 - field[..., None]) * rng.uniform(0, 120, 3)
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    return _save(rgb, rng)


NON_DIGIT_KINDS = ("blank", "noise", "texture")


def generate_non_digits(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = NON_DIGIT_KINDS[i % len(NON_DIGIT_KINDS)]
        yield kind, render_non_digit(kind, rng)


# --- evaluation -----------------------------------------------------------------------------


def prepare_all(blobs) -> tuple[list[Prepared | None], float]:
    """`prepare_many` on chunks of images, as the worker does; None where it refused the
    image. Also returns the time spent per image."""
    blobs, chunk = list(blobs), get_settings().chunk_size
    out: list[Prepared | None] = []
    start = time.perf_counter()
    for i in range(0, len(blobs), chunk):
        out += [p if isinstance(p, Prepared) else None
                for p in prepare_many(blobs[i : i + chunk])]
    return out, (time.perf_counter() - start) / max(1, len(out))


def predict(model, prepared: list[Prepared | None], temperature: float) -> np.ndarray:
    """Calibrated probabilities, (n, 10); refused images get zero pixels."""
    import torch

    from shared.verdict import softmax

    x = np.stack([p.pixels if p is not None else np.zeros((28, 28), np.float32)
                  for p in prepared])
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i : i + 1000]).unsqueeze(1))
                            for i in range(0, len(x), 1000)]).numpy()
    return softmax(logits.astype(np.float64), temperature)


def _verdicts(prepared, probs, meta):
    from shared.verdict import judge

    return [judge(p, pr, meta) if p is not None else None
            for p, pr in zip(prepared, probs, strict=True)]


def _prepare_chunk(job) -> tuple[list[Variant], list[Prepared | None], float]:
    """Generate and prepare one slice of the set (runs in a worker process); the image
    bytes stay in the worker."""
    images, labels, seed, start = job
    variants = [variant(d, y, seed, start + i)
                for i, (d, y) in enumerate(zip(images, labels, strict=True))]
    prepared, per_image = prepare_all(v.data for v in variants)
    return [Variant(b"", v.label, v.family) for v in variants], prepared, per_image


def generate_and_prepare(images, labels, seed: int, workers: int | None = None):
    """The set, prepared, using every core: generating it costs more than preparing it."""
    import os

    from training.pools import spawned_pool

    workers = workers or os.cpu_count() or 1
    step = -(-len(labels) // (workers * 4))
    jobs = [(images[i : i + step], labels[i : i + step], seed, i)
            for i in range(0, len(labels), step)]
    variants, prepared, costs = [], [], []
    with spawned_pool(workers) as pool:
        for v, p, c in pool.map(_prepare_chunk, jobs):
            variants += v
            prepared += p
            costs.append(c)
    return variants, prepared, float(np.mean(costs))


def evaluate_scans(model, meta: dict, data_dir, size: int = EVAL_SIZE,
                   seed: int = EVAL_SEED) -> dict:
    """Accuracy of `model` on the generated scan-like set versus on the clean test digits,
    plus the share flagged for review or refused as no digit. Returns a dict with `text`."""
    from shared.mnist import load_split

    test = load_split(data_dir, "test")
    images, labels = test.images[:size], test.labels[:size]
    start = time.perf_counter()
    variants, prepared, per_image = generate_and_prepare(images, labels, seed)
    probs = predict(model, prepared, float(meta.get("temperature", 1.0)))
    clean = predict(model, [Prepared(im.astype(np.float32) / 255, 0.0, True) for im in images],
                    1.0)
    verdicts = _verdicts(prepared, probs, meta)
    report = summarise(variants, probs, verdicts, labels, clean)
    from training.forms import evaluate_forms

    report["forms"] = evaluate_forms(model, meta, test.images, test.labels, seed)
    report.update(n=len(variants), seed=seed, model_version=meta.get("version"),
                  prepare_ms=round(per_image * 1000, 3),
                  seconds=round(time.perf_counter() - start, 1))
    report["text"] = format_report(report)
    return report


def summarise(variants, probs, verdicts, labels, clean) -> dict:
    predicted = probs.argmax(1)
    correct = predicted == labels
    refused = np.array([v is None for v in verdicts])
    no_digit = np.array([v is not None and v.status == "no_digit" for v in verdicts])
    flagged = np.array([v is not None and v.needs_review for v in verdicts])
    accepted = ~refused & ~no_digit & ~flagged
    per_family = defaultdict(list)
    for v, ok, nd, fl in zip(variants, correct, no_digit, flagged, strict=True):
        per_family[v.family].append((bool(ok), bool(nd), bool(fl)))
    return {
        "accuracy": float(correct.mean()),
        "errors": int((~correct).sum()),
        "clean_accuracy": float((clean.argmax(1) == labels).mean()),
        "clean_errors": int((clean.argmax(1) != labels).sum()),
        "flagged_share": float(flagged.mean()),
        "no_digit_share": float(no_digit.mean()),
        "refused": int(refused.sum()),
        "unflagged_share": float(accepted.mean()),
        "unflagged_error_rate": float((~correct[accepted]).mean()) if accepted.any() else 0.0,
        "per_family": {k: {"n": len(v), "accuracy": round(float(np.mean([o[0] for o in v])), 4),
                           "no_digit": round(float(np.mean([o[1] for o in v])), 4),
                           "needs_review": round(float(np.mean([o[2] for o in v])), 4)}
                       for k, v in sorted(per_family.items())},
    }


def format_report(r: dict) -> str:
    lines = [
        f"generated scan-like set: {r['n']} images from the MNIST test digits (seed {r['seed']})",
        f"accuracy {r['accuracy']:.2%} ({r['errors']} errors); same model on the clean digits "
        f"{r['clean_accuracy']:.2%} ({r['clean_errors']} errors); gap "
        f"{(r['clean_accuracy'] - r['accuracy']) * 100:.2f} pp",
        f"flagged needs_review {r['flagged_share']:.2%}; no_digit {r['no_digit_share']:.2%}; "
        f"error rate among unflagged results {r['unflagged_error_rate']:.3%}",
        f"prepare {r['prepare_ms']:.2f} ms per image; {r['seconds']:.0f} s in all",
        "per family:",
    ]
    for name, f in r["per_family"].items():
        lines.append(f"  {name:<14} {f['n']:>5}  {f['accuracy']:.2%}  no_digit "
                     f"{f['no_digit']:.2%}  review {f['needs_review']:.2%}")
    if "forms" in r:
        from training.forms import format_forms

        lines += format_forms(r["forms"], r["clean_accuracy"])
    return "\n".join(lines)
