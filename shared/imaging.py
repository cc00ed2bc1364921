"""Decode untrusted image bytes and normalise them the way MNIST was made.

MNIST digits are light ink on black, fitted into a 20x20 box keeping the aspect
ratio and centred by centre of mass in 28x28. `prepare` turns any scan, photo
or canvas drawing into exactly that, so the model sees what it was trained on:

1. decode with a format allowlist and a decompression-bomb guard, first frame,
   EXIF orientation applied; large images are shrunk early (JPEG draft mode);
2. composite transparency, then measure "inkness": the projection of each pixel's
   colour onto the paper->ink colour direction, so blue on cream, white on black and
   black on white all give paper ~0, ink ~1;
3. subtract a coarse background (uneven lighting), estimate the noise, decide
   whether there is any ink at all;
4. drop scan-border lines and specks away from the digit (connected components);
5. crop to the ink, bring the pen width near MNIST's, fit in 20x20, centre by mass.

Pillow and numpy only: the API imports this module (to check uploads) and must
not pull in torch (nor scipy).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

# Formats we open; anything else (EPS above all) is refused before decoding.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")
MAX_IMAGE_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

WORK_SIDE = 256  # pages are analysed at most this large: enough for a digit 1/10 of the page
CC_SIDE = 64  # connected components are found on a mask at most this large (pure Python)
DIGIT_SIDE = 40  # pen width is measured and corrected with the digit fitted in 40x40
# Pen width of MNIST digits as `_pen_width` measures it at DIGIT_SIDE (median over the
# training digits); pens far thinner or thicker are brought towards it.
MNIST_PEN_WIDTH = 4.0
MIN_CONTRAST = 0.12  # ink must differ from paper by this much (0..1 scale) to count
MIN_SNR = 6.0  # ... and stand this many noise deviations above the background


class ImageError(ValueError):
    """An image that cannot be used; `code` is stable for clients, the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Prepared:
    pixels: np.ndarray  # (28, 28) float32 in [0, 1], ink bright on black
    ink_fraction: float  # share of the source image's pixels that are ink
    has_ink: bool  # False for a blank page: nothing to classify
    contrast: float = 0.0  # ink-paper difference, 0..1 (0 for a blank page)
    clutter: float = 0.0  # share of the ink dropped as specks or stray shapes away from the digit
    pieces: int = 0  # connected pieces of ink kept as the digit
    pen: float = 0.0  # pen width relative to MNIST's typical width (1.0); blobs score high


BLANK = np.zeros((28, 28), np.float32)


# --- decoding -------------------------------------------------------------------------------


def _open(data: bytes, max_pixels: int, draft_side: int | None = None) -> Image.Image:
    if not data:
        raise ImageError("empty", "the file is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            if img.width * img.height > max_pixels:
                raise ImageError("too_large", f"image is {img.width}x{img.height} pixels, "
                                 f"more than the {max_pixels:,} allowed")
            img.seek(0)
            if draft_side and img.format == "JPEG" and max(img.size) > 2 * draft_side:
                # JPEG can decode at 1/2, 1/4 or 1/8 scale: much faster for big photos.
                img.draft(img.mode, (draft_side, draft_side))
            img.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError("too_large", f"image refused as a decompression bomb: {exc}") from exc
        except Image.UnidentifiedImageError as exc:
            raise ImageError("unsupported_format",
                             "not an image in an accepted format "
                             f"({', '.join(ALLOWED_FORMATS)})") from exc
        except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
            raise ImageError("corrupt", f"image data is corrupt or truncated: {exc}") from exc
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # a broken EXIF block should not lose an otherwise good image
        return img


def decode(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open `data` with the format allowlist and a decompression-bomb guard, fully loaded,
    first frame only, EXIF orientation applied. Raises `ImageError`."""
    return _open(data, max_pixels)


def _shrink(img: Image.Image) -> Image.Image:
    """Large pages are analysed at WORK_SIDE; box filtering keeps thin strokes as grey."""
    side = max(img.size)
    if side <= WORK_SIDE:
        return img
    if img.mode.startswith(("I", "F")):  # 16-bit and float: resize as 32-bit float
        img = Image.fromarray(np.asarray(img, dtype=np.float32), "F")
    elif img.mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGBA" if "transparency" in img.info or "A" in img.mode else "RGB")
    scale = WORK_SIDE / side
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.BOX)


# --- colour to inkness ----------------------------------------------------------------------


def _median(x: np.ndarray) -> float:
    """np.median of all of `x`, with one partition and none of np.median's overhead."""
    flat = x.ravel()
    n = flat.size
    if n == 0:  # e.g. neighbour steps of a one-pixel-wide image: nothing to measure
        return 0.0
    k = n // 2
    if n > 4096:
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
    if flat.size <= 4096:
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


def to_channels(img: Image.Image) -> list[np.ndarray]:
    """Float32 planes (H, W) in [0, 1]: one (grey) or three (colour); transparency
    composited onto the opposite of the strokes, so white-on-transparent and
    black-on-transparent drawings both survive. Planes, not (H, W, C): numpy is slow on a
    short last axis, and every later step works channel by channel."""
    if img.mode == "P":
        # Palette images are often dithered: a 3x3 average turns the dots back into shades.
        img = _palette(img).filter(ImageFilter.BoxBlur(1))
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        low, high = float(arr.min()), float(arr.max())
        return [(arr - min(low, 0.0)) / max(high - min(low, 0.0), 1e-6)]
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return _composite(np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0)
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB" if img.mode in ("CMYK", "YCbCr", "LAB", "HSV") else "L")
    if img.mode == "L":
        return [np.asarray(img, dtype=np.float32) / 255.0]
    planes = np.divide(np.asarray(img).transpose(2, 0, 1), np.float32(255), dtype=np.float32,
                       order="C")  # channel-major in one pass
    return _maybe_grey(list(planes))


def _palette(img: Image.Image) -> Image.Image:
    """A palette's transparent entry usually keeps the real paper colour (a GIF scan): use it
    when it stands out from the opaque pixels; otherwise composite like a canvas."""
    if "transparency" not in img.info:
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    arr = np.asarray(rgba, dtype=np.float32)
    clear = arr[..., 3] < 128
    if not clear.any() or clear.all():
        return rgba.convert("RGB")
    gap = np.abs(arr[clear][:, :3].mean(axis=0) - arr[~clear][:, :3].mean(axis=0)).max()
    return img.convert("RGB") if gap > 60 else rgba


def _maybe_grey(rgb: list[np.ndarray]) -> list[np.ndarray]:
    """Colour images whose channels agree are grey: one channel is cheaper."""
    r, g, b = (c[::4, ::4] for c in rgb)
    mean = (r + g + b) / 3
    if max(float(np.abs(c - mean).max()) for c in (r, g, b)) < 0.03:
        return [(rgb[0] + rgb[1] + rgb[2]) / 3]
    return rgb


def _composite(rgba: np.ndarray) -> list[np.ndarray]:
    alpha = rgba[..., 3]
    rgb = [rgba[..., c] for c in range(3)]
    if float(alpha.min()) >= 0.99:
        return _maybe_grey([np.ascontiguousarray(c) for c in rgb])
    grey = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    weight = alpha * alpha  # the opaque strokes decide, not the transparent backdrop
    stroke = float((grey * weight).sum() / max(float(weight.sum()), 1e-6))
    backdrop = 0.0 if stroke > 0.5 else 1.0
    clear = backdrop * (1 - alpha)
    return _maybe_grey([c * alpha + clear for c in rgb])


def ink_signal(planes: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Inkness (paper ~0, ink ~1) and the ink-paper contrast in colour units.

    Paper is the median colour (paper is most of a page); ink is the colour of the pixels
    that differ most from it. Projecting every pixel on that direction works for any
    polarity and any pair of colours."""
    h, w = planes[0].shape
    step_y, step_x = max(1, h // 64), max(1, w // 64)
    diffs = [c - np.float32(_median(c[::step_y, ::step_x])) for c in planes]
    dist = np.abs(diffs[0])
    for d in diffs[1:]:
        dist += np.abs(d)
    far = np.flatnonzero(dist >= np.float32(0.6) * dist.max())  # the inkiest pixels: few
    count = max(1, far.size)
    direction = [float(d.ravel()[far].sum(dtype=np.float64)) / count for d in diffs]
    norm2 = sum(v * v for v in direction)
    if norm2 < 1e-8:
        return np.zeros((h, w), np.float32), 0.0
    signal = diffs[0] * np.float32(direction[0] / norm2)
    for d, v in zip(diffs[1:], direction[1:], strict=True):
        signal += d * np.float32(v / norm2)
    return signal, float(np.sqrt(norm2 / len(planes)))


def _background(signal: np.ndarray) -> np.ndarray | float:
    """Slowly varying paper level (shadows, uneven light): the lower part of each block of a
    grid, min-filtered so that blocks full of ink take a neighbour's level."""
    h, w = signal.shape
    if min(h, w) < 24:
        return 0.0
    grid = 8 if min(h, w) >= 64 else 4
    bh, bw = h // grid, w // grid
    blocks = signal[: bh * grid, : bw * grid].reshape(grid, bh, grid, bw).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(grid, grid, -1)
    k = blocks.shape[2] * 3 // 10
    level = np.sort(blocks, axis=2)[:, :, k]  # a sort: partition is slow on tied values
    # 3x3 min filter, edge cells taking the min of the neighbours they have (edge clamp).
    rows = level.copy()
    np.minimum(rows[1:], level[:-1], out=rows[1:])
    np.minimum(rows[:-1], level[1:], out=rows[:-1])
    level = rows.copy()
    np.minimum(level[:, 1:], rows[:, :-1], out=level[:, 1:])
    np.minimum(level[:, :-1], rows[:, 1:], out=level[:, :-1])
    if float(level.max() - level.min()) < 0.08:  # even lighting: a constant is safer than a map
        return _median(level)
    smooth = Image.fromarray(level.astype(np.float32), "F").resize((w, h), Image.BILINEAR)
    return np.asarray(smooth, dtype=np.float32)


# --- ink pieces -----------------------------------------------------------------------------


@dataclass
class _Piece:
    area: int
    top: int
    left: int
    bottom: int  # inclusive
    right: int
    runs: list[tuple[int, int, int]]  # (row, start, end exclusive)


def _pieces(mask: np.ndarray) -> list[_Piece]:
    """8-connected components of a small boolean mask, by union-find over row runs."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), bool)
    padded[:, 1:-1] = mask
    # Changes along each row, in reading order; with paper at both ends they alternate
    # run start, run end (exclusive).
    rows, cols = np.nonzero(padded[:, 1:] != padded[:, :-1])
    ys, ss, es = rows[0::2].tolist(), cols[0::2].tolist(), cols[1::2].tolist()
    parent = list(range(len(ys)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    prev: list[int] = []  # indices of the previous row's runs
    row: list[int] = []
    current = -1
    merges = 0  # each link joins two pieces: len(ys) - merges pieces in the end
    for i, (y, s, e) in enumerate(zip(ys, ss, es, strict=True)):
        if y != current:
            prev = row if y == current + 1 else []
            row, current = [], y
        root = i
        for j in prev:  # diagonal neighbours touch too (8-connectivity)
            if ss[j] <= e and es[j] >= s:
                other = find(j)
                if other != root:
                    parent[root] = other
                    root = other
                    merges += 1
        row.append(i)
    if ys and merges == len(ys) - 1:  # one piece: the usual case
        return [_Piece(sum(es) - sum(ss), ys[0], min(ss), ys[-1], max(es) - 1,
                       list(zip(ys, ss, es, strict=True)))]
    roots = [find(i) for i in range(len(ys))]
    pieces: dict[int, _Piece] = {}
    for y, s, e, root in zip(ys, ss, es, roots, strict=True):
        p = pieces.get(root)
        if p is None:
            pieces[root] = _Piece(e - s, y, s, y, e - 1, [(y, s, e)])
        else:
            p.area += e - s
            p.left, p.right, p.bottom = min(p.left, s), max(p.right, e - 1), y
            p.runs.append((y, s, e))
    return list(pieces.values())


def _is_border_line(p: _Piece, h: int, w: int) -> bool:
    """A scan border or page edge: long, lying along the image edge."""
    band = max(1, round(0.08 * min(h, w)))
    along = ((p.top < band or p.bottom >= h - band) and p.right - p.left + 1 >= 0.5 * w) or (
        (p.left < band or p.right >= w - band) and p.bottom - p.top + 1 >= 0.5 * h)
    if not along:
        return False
    inside = sum(max(0, min(e, w - band) - max(s, band)) for y, s, e in p.runs
                 if band <= y < h - band)
    return inside < 0.3 * p.area


def _select(pieces: list[_Piece], h: int, w: int) -> tuple[list[_Piece], int]:
    """The digit: the biggest piece plus the sizeable pieces near it. Returns it and the
    area of what was dropped as clutter (specks, stray marks), border lines excluded."""
    candidates = [p for p in pieces if not _is_border_line(p, h, w)]
    if not candidates:
        return [], 0
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
    return kept, dropped


def _keep_mask(kept: list[_Piece], small: np.ndarray, everything: bool) -> np.ndarray:
    """The kept pieces on the small grid, grown by one cell so the soft edges of kept strokes
    are not cut off."""
    if everything:
        keep = small
    else:
        keep = np.zeros(small.shape, bool)
        for p in kept:
            for y, s, e in p.runs:
                keep[y, s:e] = True
    grown = keep.copy()
    grown[1:] |= keep[:-1]
    grown[:-1] |= keep[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    return grown


def _apply_keep(ink: np.ndarray, grown: np.ndarray, factor: int) -> np.ndarray:
    """Zero the ink outside the kept cells (each cell is factor x factor pixels)."""
    if factor == 1:
        return ink * grown
    h, w = ink.shape
    gh = grown.shape[0]
    cols = np.repeat(grown, factor, axis=1)[:, :w]
    if h == gh * factor:  # one repeat and a broadcast: cheaper than repeating twice
        return (ink.reshape(gh, factor, w) * cols[:, None, :]).reshape(h, w)
    return ink * np.repeat(cols, factor, axis=0)[:h]


def _pool_any(mask: np.ndarray, factor: int) -> np.ndarray:
    h, w = mask.shape
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    if (hp, wp) != (h, w):
        padded = np.zeros((hp, wp), bool)
        padded[:h, :w] = mask
        mask = padded
    rows = mask[0::factor].copy()  # OR of strided slices: far cheaper than .any() on 4D
    for i in range(1, factor):
        rows |= mask[i::factor]
    pooled = rows[:, 0::factor].copy()
    for i in range(1, factor):
        pooled |= rows[:, i::factor]
    return pooled


# --- the digit box --------------------------------------------------------------------------


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _fit(img: Image.Image, side: int) -> Image.Image:
    """Resize so the longer side is `side`, keeping the aspect ratio; area-average when
    shrinking (MNIST's anti-aliasing), bilinear when enlarging."""
    scale = side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.BOX if scale < 1 else Image.BILINEAR)


def _grey_array(img: Image.Image) -> np.ndarray:
    """np.asarray of a small mode-L image, without the array-interface overhead."""
    return np.frombuffer(img.tobytes(), np.uint8).reshape(img.height, img.width)


def _pen_width(digit: Image.Image) -> float:
    """Pen width in pixels from how much ink one 3x3 erosion removes: a stroke w pixels wide
    keeps (w - 2) / w of its area."""
    # Erode with paper all round: the crop touches the ink on every side, and a straight
    # "1" filling its box must still lose its edges.
    mask = _grey_array(digit) > 127
    area = int(np.count_nonzero(mask))
    if area == 0:
        return 0.0
    # Paper all round means no edge pixel survives: erode the interior only (same count).
    rows = mask[:, :-2] & mask[:, 1:-1]
    rows &= mask[:, 2:]
    core = rows[:-2] & rows[1:-1]
    core &= rows[2:]
    eroded = int(np.count_nonzero(core))
    return 2.0 / max(1.0 - eroded / area, 0.05)


def _even_pen(digit: Image.Image, width: float) -> Image.Image | None:
    """Dilate hairlines or thin out marker strokes so the pen width is near MNIST's; None
    when the pen is already within MNIST's own range."""
    if width < 0.55 * MNIST_PEN_WIDTH:
        steps = max(1, min(3, round((MNIST_PEN_WIDTH - width) / 2)))
        for _ in range(steps):
            digit = digit.filter(ImageFilter.MaxFilter(3))
        return digit
    if width > 2.2 * MNIST_PEN_WIDTH:
        steps = max(1, min(3, round((width - MNIST_PEN_WIDTH) / 2)))
        for _ in range(steps):
            thinner = digit.filter(ImageFilter.MinFilter(3))
            if (np.asarray(thinner) > 127).sum() < 0.35 * (np.asarray(digit) > 127).sum():
                break  # eroding further would break the strokes apart
            digit = thinner
        return digit
    return None


def _centre(box: np.ndarray) -> np.ndarray:
    """Place the 20x20-fitted digit in 28x28 with its centre of mass on pixel (14, 14), by
    whole pixels, as MNIST did."""
    total = float(box.sum())
    h, w = box.shape
    ys, xs = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)
    cy = float(box.sum(axis=1) @ ys) / total
    cx = float(box.sum(axis=0) @ xs) / total
    top = min(max(round(14 - cy), 0), 28 - h)
    left = min(max(round(14 - cx), 0), 28 - w)
    canvas = np.zeros((28, 28), np.float32)
    canvas[top : top + h, left : left + w] = box
    return canvas


def _digit_pixels(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """Cropped ink map (0..1) -> the model's 28x28 input, and the pen width relative to
    MNIST's."""
    grey = np.rint(ink * 255).astype(np.uint8)
    crop = Image.frombuffer("L", grey.shape[::-1], grey, "raw", "L", 0, 1)  # no copy
    digit = _fit(crop, DIGIT_SIDE)
    width = _pen_width(digit)
    corrected = _even_pen(digit, width)
    if corrected is not None:
        bbox = _bbox(np.asarray(corrected) > 25)
        crop = corrected if bbox is None else corrected.crop((bbox[2], bbox[0], bbox[3], bbox[1]))
    box = _grey_array(_fit(crop, 20)).astype(np.float32)
    peak = float(box.max())
    if peak <= 0:
        return BLANK.copy(), 0.0
    return _centre(box / peak), width / MNIST_PEN_WIDTH  # box is 0..peak: no clipping


# --- the whole path -------------------------------------------------------------------------


def normalise_image(img: Image.Image) -> Prepared:
    """Decoded page -> MNIST-style 28x28: ink bright, cropped, fitted in 20x20, mass-centred."""
    return normalise_channels(to_channels(_shrink(img)))


def ink_map(planes: list[np.ndarray]) -> tuple[np.ndarray | None, float]:
    """Ink coverage 0..1 per pixel (None for a blank page), and the ink-paper contrast."""
    signal, contrast = ink_signal(planes)
    background = _background(signal)
    step_y, step_x = max(1, signal.shape[0] // 96), max(1, signal.shape[1] // 96)
    if isinstance(background, np.ndarray):
        signal -= background
        offset = _median(signal[::step_y, ::step_x])
    else:  # a constant background cancels out of the median
        offset = _median(signal[::step_y, ::step_x])
    signal -= np.float32(offset)
    # Noise from differences of neighbours: blind to lighting, robust to the few ink edges.
    half = signal.shape[1] // 2
    steps = signal[::2, 1::2][:, :half] - signal[::2, 0::2][:, :half]
    noise = 1.4826 * _median(np.abs(steps)) / np.sqrt(2) + 1e-3
    # 2x2 averaging so that a single hot pixel cannot pass for ink.
    if min(signal.shape) > 1:
        smooth = signal[:-1, :-1] + signal[1:, :-1]
        smooth += signal[:-1, 1:]
        smooth += signal[1:, 1:]
        peak = float(smooth.max()) / 4
    else:
        peak = float(signal.max())
    if peak * contrast < MIN_CONTRAST or peak < MIN_SNR * noise:
        return None, peak * contrast
    level = _median(signal[signal > 0.5 * peak])
    if level * contrast < MIN_CONTRAST:  # shadows and gradients: faint everywhere
        return None, level * contrast
    # Linear between the noise floor and the typical ink level: keeps anti-aliased edges grey.
    low = min(4 * noise, 0.3 * level)
    signal -= np.float32(low)
    signal /= np.float32(level - low)
    return np.clip(signal, 0, 1, out=signal), min(1.0, level * contrast)


def normalise_channels(planes: list[np.ndarray]) -> Prepared:
    ink, contrast = ink_map(planes)
    if ink is None:
        return Prepared(BLANK.copy(), 0.0, False, contrast=contrast)
    mask = ink > 0.5
    ink_fraction = np.count_nonzero(mask) / mask.size
    factor = max(1, -(-max(mask.shape) // CC_SIDE))
    small = _pool_any(mask, factor) if factor > 1 else mask
    pieces = _pieces(small)
    kept, dropped = _select(pieces, *small.shape)
    if not kept:
        return Prepared(BLANK.copy(), ink_fraction, False, contrast=contrast, clutter=1.0)
    grown = _keep_mask(kept, small, everything=len(kept) == len(pieces))
    ink = _apply_keep(ink, grown, factor)
    bbox = _bbox(ink > 0.1)
    if bbox is None:
        return Prepared(BLANK.copy(), ink_fraction, False, contrast=contrast)
    pixels, pen = _digit_pixels(ink[bbox[0] : bbox[1], bbox[2] : bbox[3]])
    return Prepared(pixels, ink_fraction, True, contrast=contrast,
                    clutter=dropped / max(1, int(np.count_nonzero(small))), pieces=len(kept),
                    pen=pen)


def prepare(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Prepared:
    """Bytes of any accepted image -> the model's 28x28 input. Raises `ImageError`."""
    return normalise_image(_open(data, max_pixels, draft_side=WORK_SIDE))


def sniff_format(data: bytes) -> str | None:
    """The image format named by the magic bytes, or None: a cheap check for the API."""
    signatures = {
        b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP", b"GIF87a": "GIF",
        b"GIF89a": "GIF", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
    }
    for magic, name in signatures.items():
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None
