"""Ink maps for stacks of same-size pages: paper ~0, ink ~1, whatever the colours.

Every function here takes (n, h, w) float32 stacks, one per colour channel, and works
on all n pages at once. A worker's chunk of 128 small scans then costs a few dozen numpy
calls instead of a few thousand: for 28x28 images numpy's per-call overhead, not the
arithmetic, was nearly all of the cost. One page is a stack of one.

1. "Inkness": the projection of each pixel's colour onto the paper->ink colour direction,
   so blue on cream, white on black and black on white all give paper ~0, ink ~1;
2. a coarse background is subtracted (uneven lighting), the noise is estimated, and a
   page with no ink standing out of it is reported blank.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

MIN_CONTRAST = 0.06  # ink must differ from paper by this much (0..1 scale) to count
MIN_SNR = 3.5  # ... and stand this many noise deviations above the background
# A grey scan whose "ink" is lighter than its paper and covers more than this share of
# the page is read the other way round (`_turned`); a page with fewer pixels than
# GREY_SHARE between paper and ink is a bitmap, whose polarity is left as found.
TURN_SHARE = 0.5
GREY_SHARE = 0.02
# A printed frame: up to FRAME_LINES lines along a side, each of one colour (90 % of it
# within FRAME_TOLERANCE of its median), at least FRAME_CONTRAST from the line inside it.
FRAME_LINES, FRAME_TOLERANCE, FRAME_CONTRAST = 3, 0.1, 0.2
# A page whose short side is at most NARROW_SIDE pixels and under NARROW_SHARE of its long
# side is a tight crop of a thin digit (a "1" 4 px wide): its rim can be half ink.
NARROW_SIDE, NARROW_SHARE = 12, 0.4
TWO_TONES = 0.5  # ... whose paper is found by shape where half of it is near one of two tones
_SORT_LIMIT = 4096  # rows longer than this take the per-row median with a cheaper bracket


def median(x: np.ndarray) -> float:
    """np.median of all of `x`, with one partition and none of np.median's overhead."""
    flat = x.ravel()
    n = flat.size
    if n == 0:  # e.g. neighbour steps of a one-pixel-wide image: nothing to measure
        return 0.0
    k = n // 2
    if n > _SORT_LIMIT:
        # Exact, but cheaper: a sorted subsample brackets the median, and only the values
        # inside that bracket (about a tenth of them) are partitioned.
        probe = np.sort(flat[:: n // 1024])
        lo, hi = probe[len(probe) * 9 // 20], probe[len(probe) * 11 // 20]
        below = int(np.count_nonzero(flat < lo))
        if lo == hi:  # ties, common with 8-bit sources: no partition needed at all
            if below < k < below + int(np.count_nonzero(flat == lo)):
                return float(lo)
        else:
            band = flat[(flat >= lo) & (flat <= hi)]
            if below < k and below + band.size > k:
                flat, k = band, k - below
    if flat.size <= _SORT_LIMIT:
        # Small: sort. numpy's partition degrades badly on many tied values (a page of
        # paper at exactly 0 took 10x a sort of the same 784 values); the sort does not.
        part = np.sort(flat)
        if n % 2:
            return float(part[k])
        return (float(part[k - 1]) + float(part[k])) / 2
    part = np.partition(flat, k)
    if n % 2:
        return float(part[k])
    return (float(part[:k].max()) + float(part[k])) / 2


def medians(rows: np.ndarray) -> np.ndarray:
    """The exact median of each row of a 2-D array, as float64 (0 for empty rows)."""
    n, m = rows.shape
    if m == 0:
        return np.zeros(n)
    if m > _SORT_LIMIT:  # big pages: one at a time, each with the bracketing shortcut
        return np.array([median(r) for r in rows])
    ordered = np.sort(rows, axis=1)
    k = m // 2
    if m % 2:
        return ordered[:, k].astype(np.float64)
    return (ordered[:, k - 1].astype(np.float64) + ordered[:, k]) / 2


def masked_medians(rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The median of the kept values of each row, as float64 (0 where none is kept)."""
    n, m = rows.shape
    if m == 0:
        return np.zeros(n)
    if m > _SORT_LIMIT:
        return np.array([median(r[k]) for r, k in zip(rows, keep, strict=True)])
    ordered = np.sort(np.where(keep, rows, np.inf), axis=1)  # the kept values come first
    count = np.count_nonzero(keep, axis=1)
    k = count // 2
    upper = np.take_along_axis(ordered, np.minimum(k, m - 1)[:, None], 1)[:, 0]
    lower = np.take_along_axis(ordered, np.maximum(k - 1, 0)[:, None], 1)[:, 0]
    upper, lower = upper.astype(np.float64), lower.astype(np.float64)
    with np.errstate(invalid="ignore"):  # rows with nothing kept average infinities
        middle = np.where(count % 2 == 1, upper, (lower + upper) / 2)
    return np.where(count > 0, middle, 0.0)


def filter3x3(x: np.ndarray, op) -> np.ndarray:
    """3x3 max or min filter (`op` np.maximum / np.minimum; on booleans, dilation or
    erosion) of each page of an (n, h, w) stack. A cell on the edge takes the neighbours
    it has, as Pillow's edge replication gives."""
    rows = x.copy()
    op(rows[:, 1:], x[:, :-1], out=rows[:, 1:])
    op(rows[:, :-1], x[:, 1:], out=rows[:, :-1])
    out = rows.copy()
    op(out[:, :, 1:], rows[:, :, :-1], out=out[:, :, 1:])
    op(out[:, :, :-1], rows[:, :, 1:], out=out[:, :, :-1])
    return out


def _per_page(values: np.ndarray) -> np.ndarray:
    """(n,) per-page numbers as float32, shaped to broadcast over (n, h, w)."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def _band(h: int, w: int) -> int:
    """How deep the band along a page's edges is that its paper is read from."""
    return max(1, round(0.1 * min(h, w)))


def _rim(stack: np.ndarray) -> np.ndarray:
    """(n, h, w) -> (n, m): a sample of the pixels in a band along each page's edges. Paper
    is the most common colour there even when a digit cropped tight to its box touches
    every edge, or covers most of the page (where the page's own median is ink)."""
    n, h, w = stack.shape
    band = _band(h, w)
    step_y, step_x = max(1, h // 64), max(1, w // 64)
    rows = np.concatenate([stack[:, :band:step_y], stack[:, h - band :: step_y]], axis=1)
    middle = stack[:, band : h - band : step_y]
    cols = np.concatenate([middle[:, :, :band:step_x], middle[:, :, w - band :: step_x]], axis=2)
    return np.concatenate([rows[:, :, ::step_x].reshape(n, -1), cols.reshape(n, -1)], axis=1)


def _edge_lines(stack: np.ndarray, depth: int) -> list[np.ndarray]:
    """The `depth` outermost lines along each side, outermost first: four (n, depth, L)."""
    return [stack[:, :depth], stack[:, : -depth - 1 : -1],
            stack[:, :, :depth].transpose(0, 2, 1),
            stack[:, :, : -depth - 1 : -1].transpose(0, 2, 1)]


def _frames(planes: list[np.ndarray]) -> np.ndarray | None:
    """(n, 4): how many lines of printed frame lie along each side (top, bottom, left,
    right), or None when no page has any. Where a form box's printed sides are cut with
    it they can be most of the rim, and the paper would be read as their colour and the
    inside of the box as the ink. A frame: on two sides or more, up to FRAME_LINES lines
    along the whole side, each of one colour, darker than the next line in, which is of
    one colour too (the paper: where a digit's stroke runs along it, nothing is trimmed
    and the rim is read as before)."""
    n, h, w = planes[0].shape
    if min(h, w) < 4 * (FRAME_LINES + 1):
        return None
    grey = planes[0] if len(planes) == 1 else sum(planes) / len(planes)
    trims = np.zeros((n, 4), np.int64)
    for side, lines in enumerate(_edge_lines(grey, FRAME_LINES + 1)):
        # Past the corners (where the sides across are), about 64 pixels of each line.
        lines = lines[:, :, FRAME_LINES : lines.shape[2] - FRAME_LINES]
        lines = lines[:, :, :: max(1, lines.shape[2] // 64)]
        level = np.median(lines, axis=2)  # (n, depth)
        even = (np.abs(lines - level[:, :, None]) < FRAME_TOLERANCE).mean(axis=2) >= 0.9
        same = np.abs(level - level[:, :1]) < FRAME_TOLERANCE
        for d in range(FRAME_LINES, 0, -1):  # the deepest frame that fits
            frame = (even[:, : d + 1].all(axis=1) & same[:, :d].all(axis=1)
                     & (level[:, d] - level[:, 0] >= FRAME_CONTRAST) & (trims[:, side] == 0))
            trims[frame, side] = d
    trims[(trims > 0).sum(axis=1) < 2] = 0
    return trims if trims.any() else None


def narrow(h: int, w: int) -> bool:
    """A page narrow enough to be a tight crop of a thin digit (NARROW_SIDE)."""
    return min(h, w) <= NARROW_SIDE and min(h, w) <= NARROW_SHARE * max(h, w)


def _stroke(mask: np.ndarray) -> bool:
    """One piece of a page's pixels (8-connected) holding nearly all of them and running
    from end to end of the page's long side: a stroke, not what a stroke leaves beside it."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return False
    areas = np.bincount(labels.ravel())[1:]
    rows, cols = ndimage.find_objects(labels)[int(np.argmax(areas))]
    along = rows if mask.shape[0] >= mask.shape[1] else cols
    return (areas.max() >= 0.9 * areas.sum()
            and along.stop - along.start >= 0.9 * max(mask.shape))


def _narrow_papers(planes: list[np.ndarray]) -> dict[int, np.ndarray]:
    """The paper of narrow pages (NARROW_SIDE) whose rim is as much ink as paper, as
    {page: mask}. A "1" cut tight to its ink touches every edge and covers half of its
    page, so the rim's median is neither tone. Of the two tones, the ink is the one that
    is a stroke from end to end (`_stroke`), the paper what it leaves on either side.
    Where the shape cannot tell, or the page is not two tones (noise), the rim's median
    stands."""
    n, h, w = planes[0].shape
    if not narrow(h, w):
        return {}
    grey = planes[0] if len(planes) == 1 else sum(planes) / len(planes)
    rims = _rim(grey)
    papers = {}
    for i in range(n):
        low, high = np.percentile(grey[i], (5, 95))
        if high - low < 2 * MIN_CONTRAST:
            continue
        mid = (low + high) / 2
        dark = grey[i] < mid
        if not 0.25 <= (rims[i] < mid).mean() <= 0.75:
            continue  # the rim is one tone: its median is the paper
        # Ink and paper, each near one tone: at least half the page within 15 % of the
        # range of its darkest or lightest tone (noise spread over the range is not).
        toned = (grey[i] <= low + 0.15 * (high - low)) | (grey[i] >= high - 0.15 * (high - low))
        light_ink, dark_ink = _stroke(~dark), _stroke(dark)
        if light_ink != dark_ink and toned.mean() >= TWO_TONES:
            papers[i] = dark if light_ink else ~dark
    return papers


def _paper(stack: np.ndarray, frames: np.ndarray | None,
           papers: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """(n,): each page's paper level, the median of its rim (`_rim`), taken inside the
    printed frame of pages that have one (`_frames`), and over the paper of narrow pages
    (`_narrow_papers`); the others' as if alone."""
    level = medians(_rim(stack))
    for i, paper in (papers or {}).items():
        level[i] = np.median(stack[i][paper])
    framed = np.flatnonzero(frames.any(axis=1)) if frames is not None else []
    if len(framed) == 0:
        return level
    pages, trims = stack[framed], frames[framed]
    n, h, w = pages.shape
    band = _band(h, w)
    deep = band + FRAME_LINES
    values, keep = [], []
    for side, lines in enumerate(_edge_lines(pages, deep)):
        depth = np.arange(deep)[None, :]
        inside = (depth >= trims[:, side : side + 1]) & (depth < trims[:, side : side + 1] + band)
        length = lines.shape[2]
        # Lines along the top and bottom keep all their length; the sides skip the corners.
        along = np.ones(length, bool) if side < 2 else (
            (np.arange(length) >= deep) & (np.arange(length) < length - deep))
        values.append(lines.reshape(n, -1))
        keep.append((inside[:, :, None] & along[None, None, :]).reshape(n, -1))
    level[framed] = masked_medians(np.concatenate(values, axis=1), np.concatenate(keep, axis=1))
    return level


def ink_signal(planes: list[np.ndarray]) -> tuple[
        np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, dict[int, np.ndarray]]:
    """Inkness (paper ~0, ink ~1), (n, h, w), each page's ink-paper contrast in colour
    units, (n,), which pages were read inside out and turned (`_turned`), (n,), the
    printed frames along their sides (`_frames`) and the paper of narrow pages
    (`_narrow_papers`).

    Paper is the median colour along the page's edges (`_rim`); ink is the colour of the pixels
    that differ most from it. Projecting every pixel on that direction works for any
    polarity and any pair of colours."""
    frames = _frames(planes)
    papers = _narrow_papers(planes)
    diffs = [c - _per_page(_paper(c, frames, papers)) for c in planes]
    n, h, w = planes[0].shape
    dist = np.abs(diffs[0])
    for d in diffs[1:]:
        dist += np.abs(d)
    # The inkiest pixels are few: average over them by index, not by masks over every page.
    far = np.flatnonzero(dist >= np.float32(0.6) * dist.max(axis=(1, 2), keepdims=True))
    page = far // (h * w)
    count = np.maximum(np.bincount(page, minlength=n), 1)
    direction = np.stack([np.bincount(page, weights=d.ravel()[far], minlength=n) / count
                          for d in diffs])  # (channels, n)
    norm2 = (direction**2).sum(axis=0)
    flat = norm2 < 1e-8  # no colour stands out: a blank page
    weights = np.where(flat, 0.0, direction / np.where(flat, 1.0, norm2))
    signal = diffs[0] * _per_page(weights[0])
    for d, weight in zip(diffs[1:], weights[1:], strict=True):
        signal += d * _per_page(weight)
    lighter = ~flat & (direction.sum(axis=0) > 0)
    lighter[list(papers)] = False  # their paper was found by shape: nothing to turn
    turned = _turned(signal, lighter)
    if turned.any():
        signal[turned] = 1 - signal[turned]
    return (signal, np.where(flat, 0.0, np.sqrt(norm2 / len(planes))), turned, frames,
            papers)


def _sample(stack: np.ndarray) -> np.ndarray:
    """(n, h, w) -> (n, m): at most about 64x64 pixels of each page, evenly spread."""
    n, h, w = stack.shape
    return stack[:, :: max(1, h // 64), :: max(1, w // 64)].reshape(n, -1)


def _turned(signal: np.ndarray, lighter: np.ndarray) -> np.ndarray:
    """Pages read inside out: a dark digit cut tight to its box can put more ink than
    paper on the rim, which is then taken for paper, and the paper for a lighter "ink"
    covering most of the page. Among pages whose ink is lighter than their paper, those
    where that ink covers over TURN_SHARE of a grey scan (not a bitmap: a fat white digit
    on black may fill its box) are turned to dark ink on light paper, as scans come."""
    turned = np.zeros(len(signal), bool)
    which = np.flatnonzero(lighter)
    if which.size:
        sample = _sample(signal[which])
        grey = (np.abs(sample - 0.5) < 0.3).mean(axis=1) > GREY_SHARE
        turned[which] = grey & (medians(sample) > TURN_SHARE)
    return turned


def _background(signal: np.ndarray) -> np.ndarray | None:
    """Slowly varying paper level (shadows, uneven light), (n, h, w): the lower part of
    each block of a grid, min-filtered so that blocks full of ink take a neighbour's level.
    Zero for evenly lit pages (a constant is safer than a map); None when all are."""
    n, h, w = signal.shape
    if min(h, w) < 24:
        return None
    grid = 8 if min(h, w) >= 64 else 4
    bh, bw = h // grid, w // grid
    blocks = signal[:, : bh * grid, : bw * grid].reshape(n, grid, bh, grid, bw)
    blocks = blocks.transpose(0, 1, 3, 2, 4).reshape(n, grid, grid, -1)
    k = blocks.shape[3] * 3 // 10
    level = np.sort(blocks, axis=3)[..., k]  # a sort: partition is slow on tied values
    level = filter3x3(level, np.minimum)
    uneven = np.flatnonzero(level.max(axis=(1, 2)) - level.min(axis=(1, 2)) >= 0.08)
    if uneven.size == 0:
        return None
    maps = np.zeros((n, h, w), np.float32)
    for i in uneven:
        smooth = Image.fromarray(level[i].astype(np.float32), "F").resize((w, h), Image.BILINEAR)
        maps[i] = np.asarray(smooth, dtype=np.float32)
    return maps


def ink_map(planes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ink coverage 0..1 per pixel, (n, h, w); whether each page has any ink, (n,); and
    the ink-paper contrast, (n,). The ink of a page without ink means nothing."""
    signal, contrast, turned, frames, papers = ink_signal(planes)
    n, h, w = signal.shape
    background = _background(signal)
    if background is not None:
        signal -= background
    # The paper level left over, read along the edges (a constant background cancels out),
    # or over the page where the edges are mostly ink (a turned page).
    rest = _paper(signal, frames, papers)
    if turned.any():
        rest[turned] = medians(_sample(signal[turned]))
    signal -= _per_page(rest)
    # 2x2 averaging so that a single hot pixel cannot pass for ink.
    if min(h, w) > 1:
        smooth = signal[:, :-1, :-1] + signal[:, 1:, :-1]
        smooth += signal[:, :-1, 1:]
        smooth += signal[:, 1:, 1:]
        peak = smooth.max(axis=(1, 2)).astype(np.float64) / 4
    else:
        peak = signal.max(axis=(1, 2)).astype(np.float64)
    # Noise from differences of neighbours on the paper: blind to lighting, and to the ink
    # edges, which are most of the pairs on a digit cropped tight to its ink. Neighbours
    # along a narrow page's length: across it, a stroke from end to end leaves hardly a
    # pair of paper pixels.
    pairs = signal.transpose(0, 2, 1) if narrow(h, w) and h > w else signal
    half = pairs.shape[2] // 2
    left, right = pairs[:, ::2, 0::2][:, :, :half], pairs[:, ::2, 1::2][:, :, :half]
    paper = np.maximum(left, right) < _per_page(0.25 * peak)
    steps = np.abs(right - left).reshape(n, -1)
    noise = 1.4826 * masked_medians(steps, paper.reshape(n, -1)) / np.sqrt(2) + 1e-3
    faint = (peak * contrast < MIN_CONTRAST) | (peak < MIN_SNR * noise)
    strong = (signal > _per_page(0.5 * peak)).reshape(n, -1)
    level = masked_medians(signal.reshape(n, -1), strong)
    shadowy = ~faint & (level * contrast < MIN_CONTRAST)  # shadows, gradients: faint all over
    has_ink = ~(faint | shadowy)
    contrast = np.where(faint, peak * contrast, np.where(
        shadowy, level * contrast, np.minimum(1.0, level * contrast)))
    # Linear between the noise floor and the typical ink level: keeps anti-aliased edges grey.
    low = np.minimum(4 * noise, 0.3 * level)
    signal -= _per_page(low)
    signal /= _per_page(np.where(has_ink, level - low, 1.0))
    return np.clip(signal, 0, 1, out=signal), has_ink, contrast
