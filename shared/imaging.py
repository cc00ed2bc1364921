"""Decode untrusted image bytes and normalise them the way MNIST was made.

MNIST digits are light ink on black, fitted into a 20x20 box keeping the aspect
ratio and centred by centre of mass in 28x28. `prepare_many` turns any scans, photos
or canvas drawings into exactly that, so the model sees what it was trained on:

1. decode with a format allowlist and a decompression-bomb guard, first frame,
   EXIF orientation applied; large images are shrunk early (JPEG draft mode);
2. composite transparency, and split colour into planes (here, one image at a time);
3. measure "inkness" whatever the colours and lighting (`shared.inkmap`);
4. find the digit among specks and border lines, crop, fit and centre it
   (`shared.digitbox`).

Steps 3 and 4 run on stacks of same-size images at once: a chunk of small scans costs
about what one of them did.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from shared.digitbox import Found, digit_pixels, find_digits
from shared.formats import ALLOWED_FORMATS
from shared.inkmap import ink_map

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
# Pillow only warns about a decompression bomb up to twice its limit: make that an error for
# the whole process, once (a catch_warnings block around every decode cost 10% of a small
# image's time). Every image this process opens is untrusted or generated.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

WORK_SIDE = 256  # pages are analysed at most this large: enough for a digit 1/10 of the page


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
    several: bool = False  # other digit-sized ink beside the digit: perhaps a number
    block: float = 0.0  # share of the digit's ink box filled with ink (shapes wider than a bar)


BLANK = np.zeros((28, 28), np.float32)


# --- decoding -------------------------------------------------------------------------------


def _open(data: bytes, max_pixels: int, draft_side: int | None = None) -> Image.Image:
    if not data:
        raise ImageError("empty", "the file is empty (0 bytes)")
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
    return _orient(img)


# Where Pillow looks for an orientation tag (Image.getexif): most scans carry none of these,
# and looking first saves parsing, and copying, every image.
_ORIENTATION_SOURCES = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


def _orient(img: Image.Image) -> Image.Image:
    """Apply an EXIF (or XMP) orientation tag, in place."""
    if hasattr(img, "tag_v2") or any(key in img.info for key in _ORIENTATION_SOURCES):
        # A broken EXIF block should not lose an otherwise good image.
        with contextlib.suppress(Exception):
            ImageOps.exif_transpose(img, in_place=True)
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


# --- colour planes ------------------------------------------------------------------------


def to_channels(img: Image.Image) -> list[np.ndarray]:
    """Planes (H, W): one (grey) or three (colour), float32 in [0, 1], or uint8 for plain
    grey images (scaled once stacked with others: `_stack`). Transparency is composited
    onto the opposite of the strokes, so white-on-transparent and black-on-transparent
    drawings both survive. Planes, not (H, W, C): numpy is slow on a short last axis, and
    every later step works channel by channel."""
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
    if img.mode == "L":  # the bytes as they are: np.asarray costs more than the copy
        return [np.frombuffer(img.tobytes(), np.uint8).reshape(img.height, img.width)]
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


# --- the whole path -------------------------------------------------------------------------


def _stack(planes: list[np.ndarray]) -> np.ndarray:
    """Same-size, same-type planes -> one float32 (n, h, w) stack in [0, 1]."""
    stack = np.stack(planes)
    if stack.dtype == np.uint8:
        return np.divide(stack, np.float32(255), dtype=np.float32)
    return stack


def _locate(pages: list[list[np.ndarray]]) -> list[tuple[Found | float | None, float]]:
    """Colour planes of same-size pages -> for each, where its digit is (`find_digits`) and
    the ink-paper contrast."""
    planes = [_stack(list(channel)) for channel in zip(*pages, strict=True)]
    ink, has_ink, contrast = ink_map(planes)
    return list(zip(find_digits(ink, has_ink), contrast.tolist(), strict=True))


def _draw(digits: list[Found]) -> list[tuple[np.ndarray, float, float]]:
    """Found digits, of any size -> each one's 28x28 pixels, relative pen width and how
    much of its box it fills."""
    pixels, pens, blocks = digit_pixels([f.crop for f in digits])
    return list(zip(pixels, pens.tolist(), blocks.tolist(), strict=True))


def _each(step: Callable[[list], list], items: list) -> list:
    """`step` over all items at once; when that fails, item by item, so that one image that
    breaks it fails alone (with an ImageError in its place)."""
    try:
        return step(items)
    except Exception as exc:
        if len(items) == 1:
            return [_unexpected(exc)]
    out = []
    for item in items:
        try:
            out += step([item])
        except Exception as exc:
            out.append(_unexpected(exc))
    return out


def _unexpected(exc: Exception) -> ImageError:
    log.error("unexpected error preparing an image", exc_info=exc)
    return ImageError("corrupt", f"the image could not be processed ({exc!r})")


def prepare_many(blobs: Iterable[bytes],
                 max_pixels: int = MAX_IMAGE_PIXELS) -> list[Prepared | ImageError]:
    """Bytes of accepted images -> the model's 28x28 inputs, in order; an image that cannot
    be used gets its `ImageError` instead and never fails the others. Pages of one size
    are analysed together (a chunk of scans of one form is one stack), and the digits
    found on pages of any size are fitted and centred together."""
    results: list[Prepared | ImageError | None] = []
    groups: dict[tuple, list[tuple[int, list[np.ndarray]]]] = {}
    for i, data in enumerate(blobs):
        results.append(None)
        try:
            planes = to_channels(_shrink(_open(data, max_pixels, draft_side=WORK_SIDE)))
        except ImageError as exc:
            results[i] = exc
            continue
        except Exception as exc:  # a decoder bug must fail this image, never the rest
            results[i] = _unexpected(exc)
            continue
        key = (len(planes), planes[0].dtype.char, *planes[0].shape)
        groups.setdefault(key, []).append((i, planes))
    digits: list[tuple[int, Found, float]] = []
    for members in groups.values():
        located = _each(_locate, [planes for _, planes in members])
        for (i, _), where in zip(members, located, strict=True):
            if isinstance(where, ImageError):
                results[i] = where
                continue
            found, contrast = where
            if isinstance(found, Found):
                digits.append((i, found, contrast))
            elif found is None:  # no ink
                results[i] = Prepared(BLANK.copy(), 0.0, False, contrast=contrast)
            else:  # only border lines, or specks too faint to crop: `found` is the ink share
                results[i] = Prepared(BLANK.copy(), found, False, contrast=contrast, clutter=1.0)
    drawn = _each(_draw, [found for _, found, _ in digits]) if digits else []
    for (i, found, contrast), done in zip(digits, drawn, strict=True):
        if isinstance(done, ImageError):
            results[i] = done
            continue
        pixels, pen, block = done
        results[i] = Prepared(pixels, found.ink_fraction, True, contrast=contrast,
                              clutter=found.clutter, pieces=found.pieces, pen=pen,
                              several=found.several, block=block)
    return results


def prepare(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Prepared:
    """Bytes of one accepted image -> the model's 28x28 input. Raises `ImageError`."""
    result = prepare_many([data], max_pixels)[0]
    if isinstance(result, ImageError):
        raise result
    return result
