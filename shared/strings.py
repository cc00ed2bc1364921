"""Read fields of handwritten digits whole: strips (shared/fields.py), the string
network's column-by-column log-probabilities, and CTC's best path.

Torch-free: the network comes in as a callable taking the strips of a chunk, (32, W)
arrays, and giving each one's (W / 4, 11) log-probabilities (blank = 10). The worker
passes its batched model (worker/strings.py); tests can pass anything.

Greedy CTC decoding: the most likely class in each column, repeats merged, blanks
dropped. Each digit read keeps the columns it came from: its confidence is the highest
probability it had in them, its box those columns' ink, mapped back to the image.

A field the plain strip does not read surely is read in several more looks
(LOOK_WIDTHS: its ink narrower and wider) and the text most of them read wins; when no
text has a majority the plain strip's reading stands, flagged for review. A digit
squeezed against its neighbour in one look is apart in another (docs/strings.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from shared.fields import HEIGHT, STRIDE, Strip, field_strip, stretched
from shared.imaging import MAX_IMAGE_PIXELS, ImageError

MAX_DIGITS = 20  # a field holding more digits is refused
BLANK = 10
DEFAULT_REVIEW_THRESHOLD = 0.9  # a digit less sure than this sends its string to review
REACH = 4.5  # network columns (of 4 px in a 32-px strip) a digit's box reaches either side
LOOK_WIDTHS = (1.0, 0.9, 1.1, 0.8, 1.2)  # the ink's width in each look, the plain strip first
# A field whose plain look reads every digit at least this surely keeps that reading:
# it is what the other looks would vote for almost always (docs/strings.md), and a
# third of the fields need them.
LOOK_BELOW = 0.99


@dataclass
class StringDigit:
    digit: int
    confidence: float
    box: list[int]  # left, top, right, bottom (exclusive) in the image's pixels

    def as_dict(self) -> dict:
        return {"digit": self.digit, "confidence": round(self.confidence, 6),
                "box": self.box}


@dataclass
class Reading:
    status: str  # "done", "no_digit" or "failed"
    text: str | None = None
    digits: list[StringDigit] = field(default_factory=list)
    confidence: float | None = None  # the least sure digit's
    needs_review: bool = False
    error: str | None = None
    strip: np.ndarray | None = field(default=None, repr=False)  # what the network saw


def best_path(log_probs: np.ndarray) -> list[tuple[int, float, int, int]]:
    """(T, 11) log-probabilities -> the digits of CTC's greedy path: (digit, confidence,
    first column, one past the last column)."""
    if len(log_probs) == 0:
        return []
    best = log_probs.argmax(axis=1)
    peak = np.exp(log_probs.max(axis=1))
    out: list[tuple[int, float, int, int]] = []
    start = 0
    for t in range(1, len(best) + 1):
        if t == len(best) or best[t] != best[start]:
            if best[start] != BLANK:
                out.append((int(best[start]), float(peak[start:t].max()), start, t))
            start = t
    return out


def _box(strip: Strip, first: float, last: float) -> list[int]:
    """Columns first..last of the network's output -> the box of their ink in the image."""
    x0, x1 = max(0, round(first * STRIDE)), max(0, round(last * STRIDE))
    ink = strip.pixels[:, x0:x1] > 0.2
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size:
        y0, y1 = int(rows[0]), int(rows[-1]) + 1
        x0, x1 = x0 + int(cols[0]), x0 + int(cols[-1]) + 1
    else:
        y0, y1 = 0, HEIGHT
    return strip.to_source(x0, y0, x1, y1)


def reading(strip: Strip, log_probs: np.ndarray, review: float) -> Reading:
    found = best_path(log_probs)
    if not found:
        return Reading("no_digit", strip=strip.pixels)
    if len(found) > MAX_DIGITS:
        return Reading("failed", error=f"too_many_digits: the image holds {len(found)} "
                                       f"digits, more than the {MAX_DIGITS} a string may hold")
    # CTC's spikes are a column or two wide: a digit's box is the ink between the midpoints
    # to its neighbours' spikes, and at most about a wide digit's half-width from its own
    # (a comma or a dash after the last digit is not in its box).
    centres = [(a + b) / 2 for _, _, a, b in found]
    edges = [-np.inf, *((x + y) / 2 for x, y in pairwise(centres)), np.inf]
    digits = [StringDigit(d, p, _box(strip, max(edges[k], c - REACH), min(edges[k + 1], c + REACH)))
              for k, ((d, p, _, _), c) in enumerate(zip(found, centres, strict=True))]
    least = min(d.confidence for d in digits)
    return Reading("done", "".join(str(d.digit) for d in digits), digits, least,
                   needs_review=least < review, strip=strip.pixels)


def strips(images: list[bytes], max_pixels: int = MAX_IMAGE_PIXELS
           ) -> list[Strip | Reading]:
    """Each image's strip, or its Reading when there is nothing to read (no ink:
    no_digit; a bad image: failed, alone)."""
    out: list[Strip | Reading] = []
    for data in images:
        try:
            strip = field_strip(data, max_pixels)
        except ImageError as exc:
            out.append(Reading("failed", error=f"{exc.code}: {exc}"))
            continue
        except Exception as exc:  # a bug on one image must fail that image alone
            out.append(Reading("failed", error=f"corrupt: the image could not be "
                                                f"processed ({exc!r})"))
            continue
        out.append(Reading("no_digit") if strip is None else strip)
    return out


def _vote(looks: list[Reading]) -> Reading:
    """The reading of the text most looks agree on; the plain strip's (flagged for review)
    when none has a majority. It keeps the plain strip as what the network saw."""
    texts = Counter(r.text for r in looks if r.status == "done")
    text, votes = texts.most_common(1)[0] if texts else (None, 0)
    if votes * 2 > len(looks):
        chosen = next(r for r in looks if r.text == text)
    else:
        chosen = looks[0]
        if chosen.status == "done" and len(looks) > 1:
            chosen.needs_review = True
    chosen.strip = looks[0].strip
    return chosen


def read_fields(images: list[bytes],
                log_probs: Callable[[list[np.ndarray]], list[np.ndarray]],
                review: float = DEFAULT_REVIEW_THRESHOLD,
                max_pixels: int = MAX_IMAGE_PIXELS, looks: int = 1) -> list[Reading]:
    """Bytes of field images -> their readings, in order; a bad image fails alone. The
    plain strips of all the fields go through `log_probs` in one call, then the other
    `looks` of those not read surely (LOOK_BELOW) in another."""
    prepared = strips(images, max_pixels)
    todo = [p for p in prepared if isinstance(p, Strip)]
    outputs = iter(log_probs([s.pixels for s in todo]) if todo else [])
    plain = [reading(s, next(outputs), review) for s in todo]
    again = [k for k, r in enumerate(plain)
             if looks > 1 and (r.status != "done" or r.confidence < LOOK_BELOW)]
    views = [[stretched(todo[k], f) for f in LOOK_WIDTHS[1:looks]] for k in again]
    flat = [v for vs in views for v in vs]
    outputs = iter(log_probs([v.pixels for v in flat]) if flat else [])
    for k, vs in zip(again, views, strict=True):
        plain[k] = _vote([plain[k], *(reading(v, next(outputs), review) for v in vs)])
    readings = iter(plain)
    return [p if isinstance(p, Reading) else next(readings) for p in prepared]
