"""Digits cut out of forms and cheques, and the empty boxes and lines around them.

The scan-like families in `training/scans.py` put a digit somewhere on a page. Most
real collections cut each digit tight to its box instead: the ink touches the edges,
the box is stretched to fill a fixed size, binarised, tiny (16x16 postal scans), or
lies on the textured, ruled paper of a cheque. Each family here has fixed settings,
documented beside it, and is drawn from an MNIST digit with a generator of its own:

| family         | what                                                          |
| -------------- | ------------------------------------------------------------- |
| `tight`        | cut at 0-1 px around the ink, 20-64 px high, grey ink         |
| `stretched`    | cut at 0 px and stretched to fill a 16-40 px square           |
| `res16`        | cut at 0 px, fitted in 16x16 (aspect kept), like postal scans |
| `res32`        | the same in 32x32                                             |
| `res8`         | the same in 8x8 (reported only: too little is left)           |
| `binarised`    | cut at 0-2 px, 16-48 px high, 1-bit, either polarity          |
| `cheque`       | cut at 0-2 px, 24-44 px high, on textured, ruled paper; half  |
|                | of them crossed by a printed line                             |
| `low_contrast` | on a page, ink only 12-25 % darker than the paper             |

Non-digits: `ruled_line` (a ruled line or two across a blank cut), `box_border` (an
empty form box cut with its printed border), `empty_box` (a cheque background with
its lines and no ink), beside `blank`, `noise` and `texture` from `training/scans.py`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from training.scans import INKS, PAPERS, _colour, _encode, _page, _save, edges

DIGIT_FAMILIES = ("tight", "stretched", "res16", "res32", "res8", "binarised", "cheque",
                  "low_contrast")
REPORT_ONLY = ("res8",)  # too small to keep a digit legible: reported, not a target
NON_DIGIT_KINDS = ("ruled_line", "box_border", "empty_box")


def _cut(digit: np.ndarray, margin: int) -> np.ndarray:
    """The digit's ink (0..1) cut at `margin` pixels around its bounding box."""
    ys, xs = np.nonzero(digit > 0)
    ink = digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32) / 255
    return np.pad(ink, margin) if margin else ink


def _resize(ink: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """Ink resized to `height` (and `width`, else keeping the aspect ratio)."""
    h, w = ink.shape
    width = width or max(1, round(w * height / h))
    resample = Image.BOX if height < h else Image.BILINEAR
    img = Image.fromarray(ink, "F").resize((width, height), resample)
    return np.clip(np.asarray(img, dtype=np.float32), 0, 1)


def _fit_square(ink: np.ndarray, side: int) -> np.ndarray:
    """Fitted in side x side keeping the aspect ratio, centred."""
    h, w = ink.shape
    scale = side / max(h, w)
    small = _resize(ink, max(1, round(h * scale)), max(1, round(w * scale)))
    out = np.zeros((side, side), np.float32)
    top, left = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out


def _grey(page: np.ndarray, rng: np.random.Generator, noise: float = 0.01) -> bytes:
    paper, ink = PAPERS[rng.integers(len(PAPERS))], INKS[rng.integers(len(INKS))]
    return _save(_colour(page, paper, ink, None, noise, rng), rng, "PNG")


# --- cheque paper -----------------------------------------------------------------------------


def cheque_paper(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A cheque's background as darkness 0..1: a guilloche of fine waves or a grainy
    texture, faint ruled lines, an uneven tone."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dark = np.full((h, w), rng.uniform(0.05, 0.25), np.float32)
    if rng.random() < 0.6:  # guilloche: crossing families of thin waves
        for _ in range(int(rng.integers(1, 3))):
            period, amp = rng.uniform(2.5, 5.0), rng.uniform(2, 8)
            phase = rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * (yy + amp * np.sin(xx / rng.uniform(6, 20) + phase))
                          / period)
            dark += rng.uniform(0.05, 0.15) * (wave > 0.6)
    else:  # grain
        dark += rng.normal(0, rng.uniform(0.03, 0.08), (h, w)).astype(np.float32)
    if rng.random() < 0.7:  # ruled lines across the field
        step = int(rng.integers(3, 7))
        dark[int(rng.integers(0, step)) :: step] += rng.uniform(0.05, 0.15)
    return np.clip(dark, 0, 1)


def _printed_line(page: np.ndarray, rng: np.random.Generator, row: int) -> None:
    """A printed rule across the whole width, 1-2 px thick, darker than the paper."""
    t = int(rng.integers(1, 3))
    page[max(0, row) : row + t] = np.maximum(page[max(0, row) : row + t],
                                             rng.uniform(0.5, 0.9))


def _cheque(ink: np.ndarray, rng: np.random.Generator, crossed: bool) -> bytes:
    h, w = ink.shape
    dark = cheque_paper(h, w, rng)
    if crossed:
        _printed_line(dark, rng, int(rng.integers(h // 3, h - 2)))
    level = rng.uniform(0.7, 0.95)
    grey = np.maximum(dark, level * ink)
    img = Image.fromarray(np.round(255 * (1 - grey)).astype(np.uint8), "L")
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7)))
    return _encode(img, "PNG")


# --- the families -----------------------------------------------------------------------------


def render_crop(digit: np.ndarray, family: str, rng: np.random.Generator) -> bytes:
    """One MNIST digit (28x28, ink bright) cut and saved the way `family` says."""
    if family == "tight":
        ink = _resize(_cut(digit, int(rng.integers(0, 2))), int(rng.integers(20, 65)))
        return _grey(ink, rng)
    if family == "stretched":
        side = int(rng.integers(16, 41))
        return _grey(_resize(_cut(digit, 0), side, side), rng)
    if family in ("res16", "res32", "res8"):
        return _grey(_fit_square(_cut(digit, 0), int(family[3:])), rng, 0.0)
    if family == "binarised":
        ink = _resize(_cut(digit, int(rng.integers(0, 3))), int(rng.integers(16, 49))) > 0.5
        # Half dark ink on white paper, half white ink on black (as optdigits is stored).
        return _encode(Image.fromarray(~ink if rng.random() < 0.5 else ink), "PNG")
    if family == "cheque":
        ink = _resize(_cut(digit, int(rng.integers(0, 3))), int(rng.integers(24, 45)))
        return _cheque(ink, rng, crossed=rng.random() < 0.5)
    if family == "low_contrast":
        page = _page(_resize(_cut(digit, 0), int(rng.integers(28, 90))), rng,
                     rng.uniform(1.2, 1.6))
        paper = np.array(PAPERS[rng.integers(len(PAPERS))], np.float32)
        ink_colour = paper * (1 - rng.uniform(0.12, 0.25))
        return _save(_colour(page, paper, ink_colour, None, rng.uniform(0, 0.01), rng), rng,
                     "PNG")
    raise ValueError(f"unknown family {family!r}")


def render_empty(kind: str, rng: np.random.Generator) -> bytes:
    """A cut that holds no digit: ruled lines, an empty form box, an empty cheque box."""
    h, w = int(rng.integers(20, 80)), int(rng.integers(16, 80))
    if kind == "ruled_line":
        page = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(1, 3))):
            _printed_line(page, rng, int(rng.integers(1, h - 2)))
        page = np.minimum(1, page / page.max())
        return _grey(page, rng)
    if kind == "box_border":
        page = np.zeros((h, w), np.float32)
        t = int(rng.integers(1, 4))
        edges(page, rng.choice(4, size=int(rng.integers(1, 5)), replace=False), t)
        return _grey(page, rng)
    if kind == "empty_box":
        dark = cheque_paper(h, w, rng)
        if rng.random() < 0.5:
            _printed_line(dark, rng, int(rng.integers(h // 3, h - 2)))
        return _encode(Image.fromarray(np.round(255 * (1 - dark)).astype(np.uint8), "L"), "PNG")
    raise ValueError(f"unknown kind {kind!r}")


# --- evaluation -------------------------------------------------------------------------------

FAMILY_SIZE = 1_000  # test digits per family: family k draws digits k*1000 .. k*1000+999
NON_DIGIT_SIZE = 300  # per kind of non-digit


def _scored(model, meta: dict, blobs: list[bytes]):
    from training.scans import _verdicts, predict, prepare_all

    prepared, _ = prepare_all(blobs)
    probs = predict(model, prepared, float(meta.get("temperature", 1.0)))
    return probs, _verdicts(prepared, probs, meta)


def evaluate_forms(model, meta: dict, images: np.ndarray, labels: np.ndarray,
                   seed: int) -> dict:
    """Per family: accuracy of the model's digit, the share given back right (not refused),
    `no_digit` and `needs_review`; per kind of non-digit: the share refused."""
    from training.scans import NON_DIGIT_KINDS as PAGE_KINDS
    from training.scans import render_non_digit

    families = {}
    for k, family in enumerate(DIGIT_FAMILIES):
        idx = np.arange(k * FAMILY_SIZE, (k + 1) * FAMILY_SIZE) % len(labels)
        rng = np.random.default_rng((seed, k))
        probs, verdicts = _scored(model, meta, [render_crop(images[i], family, rng)
                                                for i in idx])
        truth = labels[idx]
        done = np.array([v is not None and v.status == "done" for v in verdicts])
        flagged = np.array([v is not None and v.needs_review for v in verdicts])
        right = probs.argmax(1) == truth
        families[family] = {
            "n": len(idx), "accuracy": round(float(right.mean()), 4),
            "answered_right": round(float((right & done).mean()), 4),
            "no_digit": round(float((~done).mean()), 4),
            "needs_review": round(float(flagged.mean()), 4),
            "report_only": family in REPORT_ONLY,
        }
    refused = {}
    for k, kind in enumerate((*PAGE_KINDS, *NON_DIGIT_KINDS)):
        rng = np.random.default_rng((seed, 100 + k))
        make = render_empty if kind in NON_DIGIT_KINDS else render_non_digit
        _, verdicts = _scored(model, meta, [make(kind, rng) for _ in range(NON_DIGIT_SIZE)])
        refused[kind] = round(float(np.mean([v is None or v.status == "no_digit"
                                             for v in verdicts])), 4)
    return {"families": families, "non_digits_refused": refused}


def format_forms(r: dict, clean_accuracy: float) -> list[str]:
    lines = ["form and cheque cuts (training/forms.py), 1,000 test digits each:",
             f"  {'family':<14} {'accuracy':>9} {'right+kept':>11} {'no_digit':>9} "
             f"{'review':>7}  gap to clean MNIST"]
    for name, f in r["families"].items():
        gap = (clean_accuracy - f["answered_right"]) * 100
        note = " (reported only)" if f["report_only"] else ""
        lines.append(f"  {name:<14} {f['accuracy']:>9.2%} {f['answered_right']:>11.2%} "
                     f"{f['no_digit']:>9.2%} {f['needs_review']:>7.2%}  {gap:.2f} pp{note}")
    lines.append("non-digits refused as no_digit: " + ", ".join(
        f"{k} {v:.1%}" for k, v in r["non_digits_refused"].items()))
    return lines
