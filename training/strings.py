"""Digit strings: the generated set made from MNIST test digits, and string evaluation.

The generated set (`generated_strings`), fixed by its seed: strings of MIX lengths, each
digit a different MNIST *test* digit (never a training one, never used twice in a set),
cropped to its ink, set on a common baseline with +-2 px of jitter. Each pair of
neighbours is, independently, with these odds:

- apart (1/2): the nearest ink of the two 3 to 6 px apart;
- touching (1/4): slid together until their ink meets (0 to 1 px into each other);
- overlapping (1/4): slid 1 to 3 px further (at most a quarter of the narrower digit),
  the strokes running into each other.

So half the neighbours touch or overlap. Dark ink on white, 4 px margins, PNG.

Scoring (`score_strings`): a string is right when every digit is, in order, and no digit
is missing or added; the digit error rate is the edit distance (substitutions, missing
and extra digits) over the true digits. Rates with 95 % Wilson intervals.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from training.realeval import _rate

SEED = 16
# Strings per length: about 9,500 of the 10,000 test digits, each used once.
MIX = {2: 200, 3: 200, 4: 200, 5: 1000, 6: 200, 7: 100, 8: 100}
KINDS = ("apart", "touching", "overlapping")
MARGIN = 4


@dataclass
class StringSet:
    name: str
    files: list[str]
    blobs: list[bytes]
    labels: list[str]
    kinds: list[str]  # the closest kind of neighbours in each string ("apart" if all are)


def _crop(digit: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(digit.max(axis=1) > 25)
    cols = np.flatnonzero(digit.max(axis=0) > 25)
    return digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def neighbour_kinds(count: int, rng: np.random.Generator) -> list[str]:
    """How each of `count` pairs of neighbours sits: apart 1/2, touching 1/4,
    overlapping 1/4 (KINDS)."""
    return [KINDS[int(c)] for c in rng.choice(3, size=count, p=[0.5, 0.25, 0.25])]


def _touch_offset(canvas: np.ndarray, digit: np.ndarray, top: int) -> int:
    """The smallest x at which `digit`, its top at `top`, does not overlap the ink
    already on `canvas` row by row; placed there, the two touch (8-connected)."""
    h = digit.shape[0]
    mine = digit > 127
    theirs = canvas[top : top + h] > 127
    # Per row: the rightmost ink already there within a row (diagonal neighbours touch
    # too), and this digit's leftmost ink; -1 where a row has none.
    right = np.where(theirs.any(axis=1), theirs.shape[1] - 1 - np.argmax(theirs[:, ::-1], 1), -1)
    near = right.copy()
    near[1:] = np.maximum(near[1:], right[:-1])
    near[:-1] = np.maximum(near[:-1], right[1:])
    rows = mine.any(axis=1) & (near >= 0)
    best = int((near[rows] - np.argmax(mine[rows], 1)).max()) + 1 if rows.any() else None
    if best is None:  # no shared rows: bounding boxes side by side
        cols = np.flatnonzero(theirs.any(axis=0) if theirs.any() else canvas.any(axis=0))
        best = int(cols[-1]) + 1 if cols.size else MARGIN
    return best


def render(digits: list[np.ndarray], kinds: list[str], rng: np.random.Generator) -> np.ndarray:
    """MNIST digits (ink bright) -> one string, dark ink on white (uint8)."""
    crops = [_crop(d) for d in digits]
    height = max(c.shape[0] for c in crops) + 4 + 2 * MARGIN
    width = sum(c.shape[1] for c in crops) + 8 * len(crops) + 2 * MARGIN
    canvas = np.zeros((height, width), np.uint8)
    x = MARGIN
    for i, crop in enumerate(crops):
        h, w = crop.shape
        top = height - MARGIN - 2 - h + int(rng.integers(-2, 3))
        if i:
            touch = _touch_offset(canvas, crop, top)
            kind = kinds[i - 1]
            if kind == "apart":
                x = touch + int(rng.integers(3, 7)) - 1
            elif kind == "touching":
                x = touch - int(rng.integers(0, 2))
            else:
                narrow = min(w, crops[i - 1].shape[1])
                x = touch - min(int(rng.integers(1, 4)), max(1, narrow // 4))
            x = max(x, 0)
        region = canvas[top : top + h, x : x + w]
        np.maximum(region, crop[:, : region.shape[1]], out=region)
    cols = np.flatnonzero(canvas.max(axis=0) > 0)
    canvas = canvas[:, : cols[-1] + 1 + MARGIN]
    return 255 - canvas


# --- marks between and before the digits: dates, amounts -------------------------------------

SEPARATORS = ("/", ".", ",", "-", " ")  # between groups of digits: dates, thousands
CURRENCIES = ("$", "€")  # before the digits of an amount
_MARK_WIDTH = {"/": (0.5, 0.85), ".": (0.15, 0.2), ",": (0.15, 0.2), "-": (0.35, 0.6),
               " ": (0.25, 0.5), "$": (0.45, 0.65), "€": (0.5, 0.7)}  # of the digits' height


def mark(kind: str, height: int, rng: np.random.Generator) -> np.ndarray:
    """A mark drawn with a pen as wide as MNIST's, dark ink on white (uint8), `height`
    rows high with its foot on the baseline where `render` puts the digits' (about 20 px
    tall): a slash, full stop, comma, dash or space between digits, or a currency sign."""
    dh = rng.uniform(16, 22)
    base = height - MARGIN - 2 + int(rng.integers(-1, 2))
    top = round(base - dh * rng.uniform(0.85, 1.1))
    pen = int(rng.integers(2, 4))
    low, high = _MARK_WIDTH[kind]
    w = max(4, round(dh * rng.uniform(low, high))) + 4
    img = Image.new("L", (w, height), 255)
    draw = ImageDraw.Draw(img)
    if kind == "/":
        draw.line((2, base, w - 3, top), fill=0, width=pen)
    elif kind == ".":
        draw.ellipse((1, base - pen - 1, 2 + pen, base), fill=0)
    elif kind == ",":
        draw.line((w - 2, base - 3, 1, min(height - 1, base + int(rng.integers(2, 6)))),
                  fill=0, width=pen)
    elif kind == "-":
        y = round((top + base) / 2 + rng.uniform(-2, 2))
        draw.line((2, y, w - 3, y + int(rng.integers(-1, 2))), fill=0, width=pen)
    elif kind == "$":
        mid = (top + base) // 2
        draw.arc((2, top + 2, w - 3, mid + 1), 90, 330, fill=0, width=pen)
        draw.arc((2, mid - 1, w - 3, base - 1), -90, 150, fill=0, width=pen)
        x = w // 2 + int(rng.integers(-1, 2))
        draw.line((x, top - int(rng.integers(0, 4)), x, base + int(rng.integers(0, 4))),
                  fill=0, width=max(1, pen - 1))
    elif kind == "€":
        draw.arc((2, top, w + (base - top) // 3, base), 55, 305, fill=0, width=pen)
        for share in (0.4, 0.62):
            y = round(top + share * (base - top))
            draw.line((0, y, round(w * rng.uniform(0.5, 0.7)), y), fill=0,
                      width=max(1, pen - 1))
    if kind != " ":
        img = img.rotate(rng.uniform(-8, 8), Image.BILINEAR, fillcolor=255)
    return np.asarray(img)


def joined(groups: list[np.ndarray], separators: list[str], currency: str | None,
           rng: np.random.Generator) -> np.ndarray:
    """Strings of digits (`render`'s, dark on white) in one line, on one baseline, with a
    mark between each two and a currency sign before them if given."""
    height = max(g.shape[0] for g in groups)
    lined = [np.vstack([np.full((height - g.shape[0], g.shape[1]), 255, np.uint8), g])
             for g in groups]
    parts = [mark(currency, height, rng)] if currency else []
    for k, group in enumerate(lined):
        # render's margins are 4 px of paper on either side: marks sit 0-4 px from the ink
        parts.append(group[:, int(rng.integers(0, MARGIN + 1)) if parts else 0 :])
        if k < len(separators):
            parts.append(mark(separators[k], height, rng))
    return np.hstack(parts)


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, "L").save(out, "PNG")
    return out.getvalue()


def generated_strings(data_dir, seed: int = SEED, mix: dict[int, int] | None = None
                      ) -> StringSet:
    """The generated string set (see the module's docstring), the same for a seed."""
    from shared.mnist import load_split

    mix = mix or MIX
    test = load_split(data_dir, "test")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(test.labels))
    needed = sum(n * length for length, n in mix.items())
    if needed > len(order):
        raise ValueError(f"{needed} digits asked for, the test set has {len(order)}")
    files, blobs, labels, kinds = [], [], [], []
    used = 0
    for length, count in sorted(mix.items()):
        for k in range(count):
            idx = order[used : used + length]
            used += length
            pairs = neighbour_kinds(length - 1, rng)
            image = render([test.images[i] for i in idx], pairs, rng)
            files.append(f"len{length}-{k:04d}.png")
            blobs.append(_png(image))
            labels.append("".join(str(int(test.labels[i])) for i in idx))
            kinds.append(max(pairs, key=KINDS.index) if pairs else "apart")
    return StringSet(f"generated-strings-seed{seed}", files, blobs, labels, kinds)


MARKED_SEED = 17
# Fields with marks to pass over, 200 of each: (groups of digits, marks between, currency).
MARKED_STYLES = {
    "date 12/05/26": ((2, 2, 2), "//", None),
    "date 12.05.2026": ((2, 2, 4), "..", None),
    "date 12-05-26": ((2, 2, 2), "--", None),
    "amount $1,250.00": ((1, 3, 2), ",.", "$"),
    "amount €125": ((3,), "", "€"),
    "code 123 456": ((3, 3), " ", None),
}


def marked_strings(data_dir, seed: int = MARKED_SEED, count: int = 200) -> StringSet:
    """Dates, amounts and codes written with their marks (`MARKED_STYLES`), `count` of
    each, from MNIST test digits (each used once; neighbours within a group as in the
    generated set); `kinds` names each field's style."""
    from shared.mnist import load_split

    test = load_split(data_dir, "test")
    rng = np.random.default_rng(seed)
    order = iter(rng.permutation(len(test.labels)).tolist())
    files, blobs, labels, kinds = [], [], [], []
    for style, (sizes, separators, currency) in MARKED_STYLES.items():
        for _ in range(count):
            groups, text = [], ""
            for size in sizes:
                idx = [next(order) for _ in range(size)]
                groups.append(render([test.images[i] for i in idx],
                                     neighbour_kinds(size - 1, rng), rng))
                text += "".join(str(int(test.labels[i])) for i in idx)
            files.append(f"{style.split()[0]}-{len(files):04d}.png")
            blobs.append(_png(joined(groups, list(separators), currency, rng)))
            labels.append(text)
            kinds.append(style)
    return StringSet(f"marked-strings-seed{seed}", files, blobs, labels, kinds)


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def score_strings(labels: list[str], readings: list, groups: dict[str, list[str]] | None = None
                  ) -> dict:
    """String and digit error rates of readings (`shared.strings.Reading`), overall and
    per group (e.g. by length, by kind of neighbours)."""
    texts = [r.text or "" for r in readings]

    def figures(idx: list[int]) -> dict:
        right = sum(texts[i] == labels[i] for i in idx)
        digits = sum(len(labels[i]) for i in idx)
        errors = sum(edit_distance(texts[i], labels[i]) for i in idx)
        # Extra digits can make the edit distance exceed the digits (a rate over 100 %).
        return {"strings": _rate(right, len(idx)), "digit_errors": _rate(min(errors, digits),
                                                                         digits),
                "needs_review": sum(bool(readings[i].needs_review) for i in idx),
                "right_among_unflagged": _rate(
                    sum(texts[i] == labels[i] for i in idx if not readings[i].needs_review),
                    sum(1 for i in idx if not readings[i].needs_review))}

    report = {"n": len(labels), "all": figures(list(range(len(labels)))),
              "failed": sum(r.status == "failed" for r in readings),
              "no_digit": sum(r.status == "no_digit" for r in readings)}
    for name, keys in (groups or {}).items():
        values = sorted(set(keys), key=lambda v: (len(v), v))
        report[name] = {v: figures([i for i, k in enumerate(keys) if k == v]) for v in values}
    return report


def read_all(blobs: list[bytes], read: Callable[[list[bytes]], list], chunk: int = 256
             ) -> tuple[list, float]:
    """Readings of every blob, chunk by chunk as a worker reads them; with the seconds."""
    start = time.perf_counter()
    out = []
    for i in range(0, len(blobs), chunk):
        out += read(blobs[i : i + chunk])
    return out, time.perf_counter() - start


def format_strings(report: dict, title: str) -> str:
    def line(name: str, f: dict) -> str:
        s, d = f["strings"], f["digit_errors"]
        return (f"  {name:<26} strings right {s['rate']:7.2%} ({s['count']} of {s['n']}; "
                f"95 % CI {s['ci95'][0]:.2%} - {s['ci95'][1]:.2%})   digit error rate "
                f"{d['rate']:6.2%}   flagged {f['needs_review']}")

    lines = [title, line("all", report["all"])]
    for group in ("length", "neighbours", "style", "fold", "part"):
        for key, figures in report.get(group, {}).items():
            lines.append(line(f"{group} {key}", figures))
    if report["failed"] or report["no_digit"]:
        lines.append(f"  failed {report['failed']}, no_digit {report['no_digit']}")
    return "\n".join(lines)


def by_field_fold(files: list[str]) -> list[str]:
    """Each ORAND-CAR-A field's fold (field number % 5), as the digit model's split uses."""
    from training.labelled import field_fold

    return [str(field_fold(f)) for f in files]


def evaluate(files: list[str], blobs: list[bytes], labels: list[str],
             read: Callable[[list[bytes]], list], groups: dict[str, list[str]],
             chunk: int = 256) -> dict:
    """Read every field chunk by chunk as a worker does, and score the readings."""
    readings, seconds = read_all(blobs, read, chunk)
    report = score_strings(labels, readings, groups)
    report["seconds"] = round(seconds, 1)
    report["strings_per_second"] = round(len(blobs) / max(seconds, 1e-9), 1)
    return report
