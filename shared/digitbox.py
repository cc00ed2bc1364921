"""From ink maps to the model's input: find the digit, crop it, fit it, centre it.

Works on stacks of same-size ink maps, (n, h, w), like `shared.inkmap`:

1. drop scan-border lines and specks away from the digit (connected components, found
   for the whole stack by one SciPy call);
2. crop to the ink, bring the pen width near MNIST's, fit in 20x20 keeping the aspect
   ratio and centre by centre of mass in 28x28, as MNIST was made.

Resizing is done as matrix products with the weights Pillow uses (box filter when
shrinking, as MNIST's anti-aliasing; bilinear when enlarging), so digits of every size
in a stack are resized together.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from shared.inkmap import NARROW_SHARE, filter3x3, narrow

CC_SIDE = 64  # connected components are found on a mask at most this large
DIGIT_SIDE = 40  # pen width is measured and corrected with the digit fitted in 40x40
# Pen width of MNIST digits as `_pen_widths` measures it at DIGIT_SIDE (median over the
# training digits); pens far thinner or thicker are brought towards it.
MNIST_PEN_WIDTH = 4.0
RIVAL_SHARE = 0.4  # a piece this big beside the digit is another digit, not a stray mark
BAR_SHAPE = 0.4  # an ink box whose short side is under this share of its long side is a bar
SIDE_CONTACT, SIDE_THIN = 0.9, 0.25  # a box side: on an edge along 90 % of it, a quarter deep
_PLANAR = np.zeros((3, 3, 3), bool)  # 8-connectivity within each page, none across pages
_PLANAR[1] = True


@dataclass
class Found:
    """What `find_digits` learnt about one page whose ink holds a digit."""

    crop: np.ndarray  # the kept ink, cropped to it: (h, w) float32 0..1
    ink_fraction: float  # share of the page's pixels that are ink
    clutter: float  # share of the ink dropped as specks or stray shapes
    pieces: int  # connected pieces kept as the digit
    several: bool = False  # another piece as big as a digit stands beside it: a number?


@dataclass
class _Piece:
    label: int
    area: int
    top: int
    left: int
    bottom: int  # inclusive
    right: int
    inside: int  # cells away from the image edge
    sides: int = 0  # image edges it lies on along SIDE_CONTACT of them
    core: int = 0  # cells more than SIDE_THIN of the short side from every edge


# --- which ink is the digit -----------------------------------------------------------------


def _is_border_line(p: _Piece, h: int, w: int, band: int) -> bool:
    """A scan border or page edge: long, lying along the image edge."""
    along = ((p.top < band or p.bottom >= h - band) and p.right - p.left + 1 >= 0.5 * w) or (
        (p.left < band or p.right >= w - band) and p.bottom - p.top + 1 >= 0.5 * h)
    return along and p.inside < 0.3 * p.area


def _is_box_side(p: _Piece, h: int, w: int) -> bool:
    """Printed sides of a form box: ink lying on an image edge along nearly all of it,
    either thin (one side, the cut reaching far beyond it: a digit cut tight spans it) or
    hugging the edges (sides that meet, a whole frame) with next to nothing in the middle."""
    thin = min((p.right - p.left + 1) / w, (p.bottom - p.top + 1) / h)
    return (p.sides >= 1 and thin <= SIDE_THIN) or (p.sides >= 2 and p.core < 0.05 * p.area)


def _beside(p: _Piece, main: _Piece) -> bool:
    """A piece of ink as big as a digit, wholly to the left or right of the main one: the
    image likely holds several digits (broken strokes of one digit overlap in columns)."""
    return p.area >= RIVAL_SHARE * main.area and (p.right < main.left or p.left > main.right)


def _select(pieces: list[_Piece], h: int, w: int, band: int
            ) -> tuple[list[_Piece], int, bool]:
    """The digit: the biggest piece plus the sizeable pieces near it. Returns it, the
    area of what was dropped as clutter (specks, stray marks), border lines excluded, and
    whether another digit-sized piece stands beside it."""
    def printed(p: _Piece) -> bool:
        return _is_border_line(p, h, w, band) or _is_box_side(p, h, w)

    if len(pieces) == 1 and not printed(pieces[0]):
        return pieces, 0, False  # the usual case: one stroke, nothing else
    candidates = [p for p in pieces if not printed(p)]
    if not candidates:
        return [], 0, False
    main = max(candidates, key=lambda p: p.area)
    top, left, bottom, right = main.top, main.left, main.bottom, main.right
    kept = [main]
    rest = sorted((p for p in candidates if p is not main), key=lambda p: -p.area)
    for p in rest:
        margin = 0.3 * max(bottom - top + 1, right - left + 1)
        near = (p.top <= bottom + margin and p.bottom >= top - margin
                and p.left <= right + margin and p.right >= left - margin)
        if near and p.area >= 0.06 * main.area:
            kept.append(p)
            top, left = min(top, p.top), min(left, p.left)
            bottom, right = max(bottom, p.bottom), max(right, p.right)
    dropped = sum(p.area for p in candidates) - sum(p.area for p in kept)
    return kept, dropped, any(_beside(p, main) for p in candidates if p is not main)


def _pieces_by_page(small: np.ndarray, band: int) -> tuple[np.ndarray, list[list[_Piece]]]:
    """Label the 8-connected pieces of every page of a boolean stack at once; `inside`
    counts the cells more than `band` from the edge."""
    n, h, w = small.shape
    labels, count = ndimage.label(small, structure=_PLANAR)
    areas = np.bincount(labels.ravel(), minlength=count + 1).tolist()
    inner = labels[:, band : h - band, band : w - band]
    inside = np.bincount(inner.ravel(), minlength=count + 1).tolist()
    deep = max(band, round(SIDE_THIN * min(h, w)))
    core = np.bincount(labels[:, deep : h - deep, deep : w - deep].ravel(),
                       minlength=count + 1).tolist()
    # Each piece's cells on each of the four edges, as a share of that edge's length.
    rims = [(labels[:, 0, :], w), (labels[:, -1, :], w), (labels[:, :, 0], h),
            (labels[:, :, -1], h)]
    shares = np.array([np.bincount(r.ravel(), minlength=count + 1) / size for r, size in rims])
    sides = (shares >= SIDE_CONTACT).sum(axis=0).tolist()
    pages: list[list[_Piece]] = [[] for _ in range(n)]
    for label, where in enumerate(ndimage.find_objects(labels), start=1):
        if where is not None:
            page, rows, cols = where
            pages[page.start].append(_Piece(label, areas[label], rows.start, cols.start,
                                            rows.stop - 1, cols.stop - 1, inside[label],
                                            sides[label], core[label]))
    return labels, pages


def _pool_any(mask: np.ndarray, factor: int) -> np.ndarray:
    """(n, h, w) -> (n, h/factor, w/factor): a cell is set when any of its pixels is."""
    n, h, w = mask.shape
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    if (hp, wp) != (h, w):
        padded = np.zeros((n, hp, wp), bool)
        padded[:, :h, :w] = mask
        mask = padded
    rows = mask[:, 0::factor].copy()  # OR of strided slices: far cheaper than .any() on 5D
    for i in range(1, factor):
        rows |= mask[:, i::factor]
    pooled = rows[:, :, 0::factor].copy()
    for i in range(1, factor):
        pooled |= rows[:, :, i::factor]
    return pooled


def _upsample(cells: np.ndarray, factor: int, h: int, w: int) -> np.ndarray:
    """Each cell back to its factor x factor pixels, cut to (h, w)."""
    if factor == 1:
        return cells
    return cells.repeat(factor, axis=1).repeat(factor, axis=2)[:, :h, :w]


def _bounds(on: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per page of a boolean stack: whether anything is set, and top, bottom, left, right
    (bottom and right exclusive)."""
    rows, cols = on.any(axis=2), on.any(axis=1)
    top, left = rows.argmax(axis=1), cols.argmax(axis=1)
    bottom = on.shape[1] - rows[:, ::-1].argmax(axis=1)
    right = on.shape[2] - cols[:, ::-1].argmax(axis=1)
    return rows.any(axis=1), top, bottom, left, right


RULE_MIN_HEIGHT = 24  # pages at least this high are looked at for printed rules


def _along(ndim: int, axis: int) -> np.ndarray:
    """A structuring element that joins cells along `axis` only (so never across pages)."""
    structure = np.zeros((3,) * ndim, bool)
    centre: list = [1] * ndim
    centre[axis] = slice(None)
    structure[tuple(centre)] = True
    return structure


def runs(mask: np.ndarray, axis: int) -> np.ndarray:
    """A label for each run of set cells along `axis` (a row: the last axis; a column:
    the one before), 0 off the runs, for a page or each page of a stack."""
    return ndimage.label(mask, structure=_along(mask.ndim, axis))[0]


def run_lengths(mask: np.ndarray, axis: int) -> np.ndarray:
    """Length of the run of set cells along `axis` (`runs`) that each cell belongs to."""
    labels = runs(mask, axis)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return sizes[labels]


def rule_pixels(mask: np.ndarray, long: np.ndarray, thin: np.ndarray) -> np.ndarray:
    """The pixels of a rule: the `long` horizontal runs where the ink is `thin` top to
    bottom, grown a pixel up and down for their soft edges, but not into a thick stroke
    that crosses them (it stays, as the digit's)."""
    grown = ndimage.binary_dilation(long & thin, structure=_along(mask.ndim, mask.ndim - 2))
    return grown & ~(mask & ~thin)


def _without_rules(ink: np.ndarray, has_ink: np.ndarray) -> np.ndarray:
    """A printed rule across the whole cut (a cheque's or a form's line through the digit)
    taken out where it is thin, so that a 1 crossed by it is not read as a 7 or a 4; a
    stroke crossing the rule stays. Only on cuts at least RULE_MIN_HEIGHT high: on
    smaller ones a digit's own bar is as thin as any rule."""
    _, h, w = ink.shape
    if h < RULE_MIN_HEIGHT:
        return ink
    mask = (ink > 0.35) & has_ink[:, None, None]
    full = mask.all(axis=2).any(axis=1)  # a row inked from edge to edge
    if not full.any():
        return ink
    pages = np.flatnonzero(full)
    sub = mask[pages]
    across = run_lengths(sub, 2)
    long = across >= w
    # The pen's width: how wide the strokes are where they are not the rule (the median
    # run along a row); a rule must be well under it, or it is a digit's own bar.
    pen = np.array([np.median(a[m & (a < w)]) if (m & (a < w)).any() else 0.0
                    for a, m in zip(across, sub, strict=True)])
    limit = np.minimum(max(2, 0.08 * h), 0.6 * pen)[:, None, None]
    thin = run_lengths(sub, 1) <= limit
    out = ink.copy()
    out[pages] = np.where(rule_pixels(sub, long, thin), 0.0, ink[pages])
    return out


def find_digits(ink: np.ndarray, has_ink: np.ndarray) -> list[Found | float | None]:
    """For each page of an ink stack: the digit found (`Found`), the ink fraction of a page
    whose ink is only border lines or too faint to crop (float), or None for no ink."""
    n, h, w = ink.shape
    ink = _without_rules(ink, has_ink)
    mask = (ink > 0.5) & has_ink[:, None, None]
    # A narrow page (a 1 cut to its ink) is mostly ink: its share is counted over a page
    # as wide as a digit's, or the limit for pages covered in ink would refuse it.
    area = h * w if not narrow(h, w) else max(h, w) * max(min(h, w), NARROW_SHARE * max(h, w))
    ink_fraction = (np.count_nonzero(mask, axis=(1, 2)) / area).tolist()
    # Components on a mask at most CC_SIDE large: specks and lines are found just as well.
    factor = max(1, -(-max(h, w) // CC_SIDE))
    small = _pool_any(mask, factor) if factor > 1 else mask
    band = max(1, round(0.08 * min(small.shape[1:])))  # how near the edge a border line lies
    labels, pages = _pieces_by_page(small, band)
    keep = np.zeros(int(labels.max()) + 1, bool)
    out: list[Found | float | None] = [None] * n
    chosen: dict[int, tuple[int, int, bool]] = {}  # page -> (dropped area, pieces, several)
    for i, pieces in enumerate(pages):
        if not has_ink[i]:
            continue
        kept, dropped, several = _select(pieces, small.shape[1], small.shape[2], band)
        if kept:
            keep[[p.label for p in kept]] = True
            chosen[i] = dropped, len(kept), several
        else:
            out[i] = ink_fraction[i]
    if not chosen:
        return out
    # The kept pieces, grown by one cell so the soft edges of kept strokes are not cut off.
    grown = filter3x3(keep[labels], np.maximum)
    kept_ink = ink * _upsample(grown, factor, h, w)
    found, top, bottom, left, right = _bounds(kept_ink > 0.1)
    cells = np.count_nonzero(small, axis=(1, 2)).tolist()
    for i, (dropped, count, several) in chosen.items():
        if not found[i]:
            out[i] = ink_fraction[i]
            continue
        out[i] = Found(kept_ink[i, top[i] : bottom[i], left[i] : right[i]], ink_fraction[i],
                       dropped / max(1, cells[i]), count, several)
    return out


# --- the digit box --------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _weights(size: int, out: int, shrink: bool) -> np.ndarray:
    """(out, size) resampling weights, computed as Pillow's `resize` computes them: a box
    filter (area average) or a triangle (bilinear), widened by the scale when shrinking."""
    scale = size / out
    filterscale = max(scale, 1.0)
    support = (0.5 if shrink else 1.0) * filterscale
    centre = (np.arange(out) + 0.5)[:, None] * scale
    lo = np.maximum((centre - support + 0.5).astype(int), 0)  # truncated, as in C
    hi = np.minimum((centre + support + 0.5).astype(int), size)
    x = np.arange(size)[None, :]
    t = (x - centre + 0.5) / filterscale
    k = ((t >= -0.5) & (t < 0.5)).astype(np.float64) if shrink else np.maximum(0, 1 - abs(t))
    k *= (x >= lo) & (x < hi)
    total = k.sum(axis=1, keepdims=True)
    weights = (k / np.where(total > 0, total, 1)).astype(np.float32)
    weights.setflags(write=False)  # shared by every caller through the cache
    return weights


@lru_cache(maxsize=4096)
def _resampler(size: int, out: int, shrink: bool, side: int, span: int, across: bool):
    """`_weights` in the top-left of a (side, span) matrix, or transposed in a (span, side)
    one: the form `_fit` stacks, cached (crop sizes repeat)."""
    matrix = np.zeros((side, span), np.float32)
    matrix[:out, :size] = _weights(size, out, shrink)
    if across:
        matrix = np.ascontiguousarray(matrix.T)
    matrix.setflags(write=False)
    return matrix


def _fit(crops: list[np.ndarray], side: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Resize each crop so its longer side is `side`, keeping the aspect ratio; area-average
    when shrinking, bilinear when enlarging. Returns them top-left in (n, side, side) zeros,
    and their sizes. Crops are padded to a power of two and resized together by size class:
    one 250-pixel crop does not make a hundred 20-pixel ones cost as much."""
    fitted = np.zeros((len(crops), side, side), np.float32)
    sizes: list[tuple[int, int]] = [(0, 0)] * len(crops)
    classes: dict[int, list[int]] = {}
    for i, crop in enumerate(crops):
        classes.setdefault(max(8, 1 << (max(crop.shape) - 1).bit_length()), []).append(i)
    for span, members in classes.items():
        src = np.zeros((len(members), span, span), np.float32)
        down, across = [], []
        for j, i in enumerate(members):
            h, w = crops[i].shape
            scale = side / max(h, w)
            oh, ow = max(1, round(h * scale)), max(1, round(w * scale))
            src[j, :h, :w] = crops[i]
            down.append(_resampler(h, oh, scale < 1, side, span, False))
            across.append(_resampler(w, ow, scale < 1, side, span, True))
            sizes[i] = (oh, ow)
        fitted[members] = np.stack(down) @ src @ np.stack(across)
    return fitted, sizes


def _valid(sizes: list[tuple[int, int]], side: int) -> np.ndarray:
    """(n, side, side) masks of each image's own area within its canvas."""
    h, w = np.array(sizes).T
    span = np.arange(side)
    return (span[None, :, None] < h[:, None, None]) & (span[None, None, :] < w[:, None, None])


def _pen_widths(digits: np.ndarray) -> np.ndarray:
    """Pen width in pixels from how much ink one 3x3 erosion removes: a stroke w pixels wide
    keeps (w - 2) / w of its area. The crop touches the ink on every side and a straight
    "1" filling its box must still lose its edges: pixels on the edge never survive."""
    mask = digits > 0.5
    area = np.count_nonzero(mask, axis=(1, 2))
    rows = mask[:, :, :-2] & mask[:, :, 1:-1]
    rows &= mask[:, :, 2:]
    core = rows[:, :-2] & rows[:, 1:-1]
    core &= rows[:, 2:]
    kept = np.count_nonzero(core, axis=(1, 2)) / np.maximum(area, 1)
    return np.where(area > 0, 2.0 / np.maximum(1.0 - kept, 0.05), 0.0)


def _even_pens(digits: np.ndarray, valid: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Indices of the digits whose pen was brought nearer MNIST's: hairlines dilated,
    marker strokes thinned, in place (up to three 3x3 steps each). Digits within MNIST's
    own range are left alone."""
    thin = np.flatnonzero(widths < 0.55 * MNIST_PEN_WIDTH)
    if thin.size:
        steps = np.clip(np.round((MNIST_PEN_WIDTH - widths[thin]) / 2), 1, 3)
        for step in range(1, 4):
            todo = thin[steps >= step]
            if todo.size:
                digits[todo] = filter3x3(digits[todo], np.maximum) * valid[todo]
    thick = np.flatnonzero(widths > 2.2 * MNIST_PEN_WIDTH)
    if thick.size:
        steps = np.clip(np.round((widths[thick] - MNIST_PEN_WIDTH) / 2), 1, 3)
        going = np.ones(thick.size, bool)
        for step in range(1, 4):
            todo = thick[going & (steps >= step)]
            if not todo.size:
                break
            # Paper outside a digit's own area must not eat its edges: fill it with ink.
            thinner = filter3x3(np.where(valid[todo], digits[todo], 1.0), np.minimum)
            thinner *= valid[todo]
            # Stop before eroding breaks the strokes apart.
            holds = (np.count_nonzero(thinner > 0.5, axis=(1, 2))
                     >= 0.35 * np.count_nonzero(digits[todo] > 0.5, axis=(1, 2)))
            digits[todo[holds]] = thinner[holds]
            going[np.isin(thick, todo[~holds])] = False
    return np.concatenate([thin, thick])


def _centre(boxes: np.ndarray, sizes: list[tuple[int, int]]) -> np.ndarray:
    """Place each 20x20-fitted digit in 28x28 with its centre of mass on pixel (14, 14), by
    whole pixels, as MNIST did."""
    n, side, _ = boxes.shape
    span = np.arange(side, dtype=np.float32)
    total = np.maximum(boxes.sum(axis=(1, 2)), 1e-12)
    cy = (boxes.sum(axis=2) @ span) / total
    cx = (boxes.sum(axis=1) @ span) / total
    h, w = np.array(sizes).T
    top = np.clip(np.round(14 - cy).astype(int), 0, 28 - h).tolist()
    left = np.clip(np.round(14 - cx).astype(int), 0, 28 - w).tolist()
    canvas = np.zeros((n, 28 + side, 28 + side), np.float32)  # room for a box at any offset
    for i in range(n):
        canvas[i, top[i] : top[i] + side, left[i] : left[i] + side] = boxes[i]
    return np.ascontiguousarray(canvas[:, :28, :28])


def digit_pixels(crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cropped ink maps (0..1) -> the model's inputs, (n, 28, 28), each pen width relative
    to MNIST's, (n,), and how much of each digit's box its ink fills (`block_shares`)."""
    digits, sizes = _fit(crops, DIGIT_SIDE)
    widths = _pen_widths(digits)
    valid = _valid(sizes, DIGIT_SIDE)
    corrected = _even_pens(digits, valid, widths).tolist()
    sources = list(crops)  # unchanged pens: fit the crop itself, not a resized copy
    if corrected:
        found, top, bottom, left, right = _bounds(digits[corrected] > 0.1)
        for j, i in enumerate(corrected):
            h, w = sizes[i]
            if found[j]:
                sources[i] = digits[i, top[j] : bottom[j], left[j] : right[j]]
            else:
                sources[i] = digits[i, :h, :w]
    boxes, box_sizes = _fit(sources, 20)
    peak = boxes.max(axis=(1, 2))
    boxes /= np.where(peak > 0, peak, 1.0)[:, None, None].astype(np.float32)
    pixels = _centre(boxes, box_sizes)
    return pixels, np.where(peak > 0, widths / MNIST_PEN_WIDTH, 0.0), block_shares(pixels)


def block_shares(pixels: np.ndarray) -> np.ndarray:
    """(n, 28, 28) -> (n,): the share of each digit's ink box that is ink, for shapes wider
    than a bar (0 for a bar: a "1" cut tight to its box fills it). Strokes leave most of a
    digit's box empty (at most 0.80 in any calibration group); a filled rectangle fills
    it: an empty form box with thick sides on all four edges, read as paper framed by ink,
    or a patch of patterned cheque paper taken for ink."""
    on = pixels > 0.5
    found, top, bottom, left, right = _bounds(on)
    h, w = bottom - top, right - left
    area = np.maximum(h * w, 1)
    wide = found & (np.minimum(h, w) >= BAR_SHAPE * np.maximum(h, w))
    return np.where(wide, np.count_nonzero(on, axis=(1, 2)) / area, 0.0)
