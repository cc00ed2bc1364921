"""A field of handwritten digits (a postal code, an amount, a date) as the string
network's input: a strip 32 pixels high, ink bright on black.

1. decode with the same guards as single digits; refuse fields wider than
   MAX_FIELD_WIDTH; bring the height to a working size and map the ink
   (`shared.inkmap`: any colours, textured cheque paper);
2. remove ruled lines: ink in horizontal runs longer than the field is tall and thin
   vertically (a digit's stroke crossing the line stays);
3. drop specks, crop to the ink, scale it to 28 rows (2 rows of margin above and below)
   keeping the aspect ratio, pad the width to a multiple of the network's stride.

`Strip.to_source` maps strip columns and rows back to the image's pixels, for the
boxes of the digits read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from scipy import ndimage

from shared.digitbox import rule_pixels, run_lengths, runs
from shared.imaging import ImageError, _stack, decode, to_channels
from shared.inkmap import ink_map

MAX_FIELD_WIDTH = 4096  # pixels; wider images are refused
WORK_HEIGHT = 96  # taller images are shrunk to this many rows; short ones are doubled
HEIGHT, INNER, SIDE = 32, 28, 4  # strip rows, rows of ink within them, columns of margin
STRIDE = 4  # the strip's width is a multiple of this (the network's column stride)
MAX_STRIP_WIDTH = 2048  # a field longer than this is squeezed to it
MAX_INK_WIDTH = MAX_STRIP_WIDTH - 2 * SIDE
_EIGHT = np.ones((3, 3), bool)


@dataclass
class Strip:
    pixels: np.ndarray  # (HEIGHT, width) float32 0..1, ink bright
    # strip x = (work x - left) * fx + SIDE, work x = source x * scale; y likewise
    left: float
    top: float
    fx: float
    fy: float
    scale: float
    width: int  # the source image's
    height: int

    def to_source(self, x0: float, y0: float, x1: float, y1: float) -> list[int]:
        """A box in strip pixels -> [left, top, right, bottom] in the image's pixels."""
        def back(v: float, origin: float, margin: float, factor: float) -> float:
            return ((v - margin) / factor + origin) / self.scale

        m = (HEIGHT - INNER) / 2
        return [max(0, int(back(x0, self.left, SIDE, self.fx))),
                max(0, int(back(y0, self.top, m, self.fy))),
                min(self.width, int(np.ceil(back(x1, self.left, SIDE, self.fx)))),
                min(self.height, int(np.ceil(back(y1, self.top, m, self.fy))))]


def _working(img: Image.Image) -> tuple[Image.Image, float]:
    h = img.height
    scale = WORK_HEIGHT / h if h > WORK_HEIGHT else 2.0 if h < 40 else 1.0
    if scale == 1.0:
        return img, scale
    if img.mode not in ("L", "RGB", "RGBA", "LA"):
        img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
    size = (max(1, round(img.width * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.BOX if scale < 1 else Image.BILINEAR), scale


def field_ink(data: bytes, max_pixels: int) -> tuple[np.ndarray | None, float, int, int]:
    """Bytes -> the ink map at working size (None for a page without ink), the scale,
    and the image's width and height. Raises `ImageError`."""
    img = decode(data, max_pixels)
    if img.width > MAX_FIELD_WIDTH:
        raise ImageError("too_wide", f"image is {img.width} pixels wide, more than the "
                         f"{MAX_FIELD_WIDTH:,} a digit string may be")
    width, height = img.size
    work, scale = _working(img)
    planes = [_stack([p]) for p in to_channels(work)]
    ink, has_ink, _ = ink_map(planes)
    return (ink[0] if has_ink[0] else None), scale, width, height


def remove_lines(ink: np.ndarray) -> np.ndarray:
    """Ruled lines and underlines: ink in horizontal runs longer than the field is tall,
    where the ink is thin vertically (a digit's stroke crossing the line stays). Where
    such rules close the field above and below, a printed box: its sides and the bars
    between its cells, runs from the top rule to the bottom one, go too (they read as
    1s otherwise)."""
    h, _ = ink.shape
    mask = ink > 0.35
    across = run_lengths(mask, 1)
    long = across >= 1.2 * h
    if not long.any():
        return ink
    limit = max(2, 0.12 * h)  # how thick a printed line may be
    thin = run_lengths(mask, 0) <= limit
    rules = rule_pixels(mask, long, thin)
    ruled = np.flatnonzero((long & thin).any(axis=1))
    top, bottom = ruled[ruled < h / 4], ruled[ruled >= 3 * h / 4]
    if top.size and bottom.size:  # a box's top and bottom
        # Its sides and bars: vertical runs of ink from the top rule to the bottom one (a
        # "1" on ruled paper crosses one rule, seldom both), thin across.
        columns = runs(mask, 0)
        both = np.intersect1d(columns[top], columns[bottom])
        tall = np.isin(columns, both[both > 0])
        rules |= rule_pixels(mask.T, tall.T, (across <= limit).T).T | (long & tall)  # corners
    return np.where(rules, 0.0, ink).astype(np.float32)


def drop_specks(ink: np.ndarray) -> np.ndarray:
    """Pieces of ink too small for a digit's stroke (paper texture, dust), measured
    against the height of the sizeable pieces."""
    labels, count = ndimage.label(ink > 0.5, structure=_EIGHT)
    if count == 0:
        return ink
    areas = np.bincount(labels.ravel())
    boxes = ndimage.find_objects(labels)
    heights = np.array([b[0].stop - b[0].start for b in boxes], float)
    big = (areas[1:] >= 0.1 * areas[1:].max()) & (heights >= 0.3 * heights.max())
    text = float(np.median(heights[big]))
    specks = areas < max(3.0, 0.004 * text * text)
    specks[0] = False
    near = ndimage.binary_dilation(specks[labels], structure=_EIGHT) & (labels == 0)
    return np.where(specks[labels] | near, 0.0, ink).astype(np.float32)


def _on_strip(ink: Image.Image, top: int) -> np.ndarray:
    """Resized ink placed on a blank strip: SIDE columns of margin either side, `top`
    rows above, the width rounded up to the network's stride."""
    pixels = np.zeros((HEIGHT, -(-(ink.width + 2 * SIDE) // STRIDE) * STRIDE), np.float32)
    pixels[top : top + ink.height, SIDE : SIDE + ink.width] = np.clip(np.asarray(ink), 0, 1)
    return pixels


def strip_of(ink: np.ndarray, scale: float, width: int, height: int) -> Strip | None:
    """A working-size ink map -> the network's strip; None when no ink is left."""
    ink = drop_specks(remove_lines(ink))
    on = ink > 0.2
    if not on.any():
        return None
    rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = ink[top:bottom, left:right]
    factor = INNER / crop.shape[0]
    inner_width = min(max(1, round(crop.shape[1] * factor)), MAX_INK_WIDTH)
    resized = Image.fromarray(crop.astype(np.float32), "F").resize(
        (inner_width, INNER), Image.BOX if factor < 1 else Image.BILINEAR)
    return Strip(_on_strip(resized, (HEIGHT - INNER) // 2), float(left), float(top),
                 inner_width / crop.shape[1], factor, scale, width, height)


def stretched(strip: Strip, factor: float) -> Strip:
    """The strip with its ink `factor` times as wide (margins and height kept): another
    look at the same field, whose boxes still map back to the image."""
    cols = np.flatnonzero(strip.pixels.any(axis=0))
    right = int(cols[-1]) + 1 if cols.size else SIDE + 1
    ink = strip.pixels[:, SIDE:right]
    width = max(1, min(MAX_INK_WIDTH, round(ink.shape[1] * factor)))
    resized = Image.fromarray(ink, "F").resize((width, HEIGHT), Image.BILINEAR)
    return replace(strip, pixels=_on_strip(resized, 0), fx=strip.fx * width / ink.shape[1])


def field_strip(data: bytes, max_pixels: int) -> Strip | None:
    """Bytes of a field -> its strip; None for an image without ink. Raises `ImageError`."""
    ink, scale, width, height = field_ink(data, max_pixels)
    if ink is None:
        return None
    return strip_of(ink, scale, width, height)
