"""What a worker stores beside each result so that people can see what the model saw:
a thumbnail of the source image that any browser can draw, and the model's 28x28 input.

Both are small and cheap to make, as plain functions over bytes and arrays:

- `thumbnail(data)`: the source, longest side at most `THUMB_SIDE` px. A PNG, JPEG, GIF
  or WebP that is already that small is kept as it is (its header is read, nothing is
  decoded); anything else (TIFF, BMP, 16-bit or large images) is decoded once, shrunk,
  brought to 8 bits and written as a PNG. The bytes say their format (magic bytes:
  `shared.formats.sniff_format`), so the API serves them without decoding anything.
- `model_input_pngs(pixels)`: (n, 28, 28) float32 in [0, 1], ink bright on black (the
  `Prepared.pixels` of a chunk) -> one 8-bit greyscale PNG each.

PNGs are written here (`png`: a header and one zlib stream), not by Pillow, at half the
cost.

Only images that decoded are given these: `shared.imaging.prepare_many` has already
opened them with the format allowlist and the decompression-bomb guard.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image

from shared.formats import ALLOWED_FORMATS

THUMB_SIDE = 96
# Formats every browser draws: these are kept as they are when small enough.
BROWSER_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")
# A small image with bulky metadata (or junk after its end) is written again instead.
REUSE_MAX_BYTES = 32 * 1024

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# EXIF orientation -> the transpose that undoes it (as `ImageOps.exif_transpose`).
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
# Where Pillow finds an orientation tag (as in shared.imaging): most images carry none.
_ORIENTATION_SOURCES = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


# --- writing PNGs ----------------------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type: L, LA, RGB, RGBA
_IEND = _chunk(b"IEND", b"")


@functools.lru_cache(maxsize=64)
def _head(width: int, height: int, channels: int) -> bytes:
    """The signature and IHDR chunk of an 8-bit, non-interlaced PNG."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[channels], 0, 0, 0)
    return _PNG_SIGNATURE + _chunk(b"IHDR", ihdr)


def _rows(lines: np.ndarray) -> np.ndarray:
    """(..., h, row bytes) uint8 -> (..., h, 1 + row bytes): each row after its filter
    byte, 0 (none)."""
    rows = np.zeros((*lines.shape[:-1], lines.shape[-1] + 1), np.uint8)
    rows[..., 1:] = lines
    return rows


def _png(head: bytes, rows: np.ndarray) -> bytes:
    # Level 1: for 28x28 digits, level 6 is 7 % smaller (179 bytes, not 192) and 60 % slower.
    return head + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)) + _IEND


def png(pixels: np.ndarray) -> bytes:
    """(h, w) or (h, w, channels) uint8 -> an 8-bit PNG (grey, grey + alpha, RGB or RGBA),
    rows unfiltered, one zlib stream. Half of what Pillow's encoder costs, whose row
    filters save 5-10 % of the bytes."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return _png(_head(width, height, channels), _rows(pixels.reshape(height, width * channels)))


# --- the model's input ----------------------------------------------------------------


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> uint8 0..255, rounded (one pass over a whole stack)."""
    return np.rint(np.clip(pixels, 0.0, 1.0) * np.float32(255)).astype(np.uint8)


def model_input_pngs(pixels: np.ndarray) -> list[bytes]:
    """(n, h, w) floats in [0, 1] -> n greyscale PNGs of what the model was given."""
    if len(pixels) == 0:
        return []
    head = _head(pixels.shape[2], pixels.shape[1], 1)
    return [_png(head, rows) for rows in _rows(to_uint8(pixels))]


def model_input_png(pixels: np.ndarray) -> bytes:
    """One (h, w) image in [0, 1] -> its greyscale PNG."""
    return png(to_uint8(pixels))


# --- the source image -----------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk, read without Pillow."""
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


def _reusable(data: bytes, img: Image.Image | None) -> bool:
    if len(data) > REUSE_MAX_BYTES:
        return False
    size = _png_size(data)
    if size is None:
        if img is None or img.format not in BROWSER_FORMATS:
            return False
        size = img.size
    return max(size) <= THUMB_SIDE


def thumbnail(data: bytes) -> bytes:
    """The source image as any browser draws it, longest side at most THUMB_SIDE px: the
    bytes themselves when they already are that (PNG, JPEG, GIF or WebP, small), else a
    PNG. `data` must be an image that decoded (raises otherwise)."""
    if _png_size(data) is not None and _reusable(data, None):  # most scans: no Pillow at all
        return data
    img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)  # reads the header only
    if _reusable(data, img):
        return data
    return _encode(_shrink(img))


def _orientation(img: Image.Image) -> int:
    if hasattr(img, "tag_v2") or any(key in img.info for key in _ORIENTATION_SOURCES):
        try:
            return int(img.getexif().get(0x0112, 1))
        except Exception:  # a broken EXIF block never loses the thumbnail
            return 1
    return 1


def _eight_bit(img: Image.Image) -> Image.Image:
    """Modes that do not shrink well or that browsers do not show -> L, LA, RGB or RGBA.
    16-bit and float images are stretched to their own range, as the model's input was."""
    if img.mode.startswith(("I", "F")):
        arr = np.asarray(img, dtype=np.float32)
        low, high = float(arr.min()), float(arr.max())
        low = min(low, 0.0)
        scaled = (arr - low) * np.float32(255 / max(high - low, 1e-6))
        return Image.fromarray(np.rint(scaled).astype(np.uint8), "L")
    if img.mode in ("1", "L", "LA", "RGB", "RGBA"):
        return img if img.mode != "1" else img.convert("L")
    if img.mode in ("P", "PA"):
        transparent = "transparency" in img.info or img.mode == "PA"
        return img.convert("RGBA" if transparent else "RGB")
    if img.mode in ("La", "RGBa"):
        return img.convert("RGBA" if img.mode == "RGBa" else "LA")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV and the rest


def _shrink(img: Image.Image) -> Image.Image:
    orientation = _orientation(img)
    if img.mode not in ("CMYK", "YCbCr", "RGB", "L"):  # a JPEG keeps its draft mode below
        img = _eight_bit(img)
    # JPEGs are decoded at a reduced scale here (draft mode): a big photo costs little.
    # Box filtering keeps thin strokes as grey (as shared.imaging shrinks pages).
    img.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX, reducing_gap=2.0)
    img = _eight_bit(img)
    if orientation in _TRANSPOSE:
        img = img.transpose(_TRANSPOSE[orientation])
    return img


def _encode(img: Image.Image) -> bytes:
    return png(np.asarray(img))
