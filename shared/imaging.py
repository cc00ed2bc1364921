"""Decode untrusted image bytes and normalise them the way MNIST was made.

MNIST digits are light ink on black, fitted into a 20x20 box keeping the aspect
ratio and centred by centre of mass in 28x28. `prepare` turns any scan, photo
or canvas drawing into exactly that, so the model sees what it was trained on.

Pillow and numpy only: the API imports this module (to check uploads) and must
not pull in torch.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

# Formats we open; anything else (EPS above all) is refused before decoding.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")
MAX_IMAGE_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


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


def decode(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open `data` with the format allowlist and a decompression-bomb guard, fully loaded,
    first frame only, EXIF orientation applied."""
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
            img.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError("too_large", f"image refused as a decompression bomb: {exc}") from exc
        except Image.UnidentifiedImageError as exc:
            raise ImageError("unsupported_format",
                             "not an image in an accepted format "
                             f"({', '.join(ALLOWED_FORMATS)})") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError("corrupt", f"image data is corrupt or truncated: {exc}") from exc
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # a broken EXIF block should not lose an otherwise good image
        return img


def to_grey(img: Image.Image) -> np.ndarray:
    """Float greyscale in [0, 1]; transparency is composited onto the opposite of the ink
    so that both white-on-transparent and black-on-transparent drawings survive."""
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = max(float(arr.max()), 1.0)
        return (arr / (65535.0 if top > 255 else 255.0)).astype(np.float32)
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3]
        grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if alpha.min() < 0.99:
            # The drawn strokes are the opaque part: their colour decides the backdrop.
            opaque = alpha > 0.5
            ink_level = float(grey[opaque].mean()) if opaque.any() else 0.0
            backdrop = 0.0 if ink_level > 0.5 else 1.0
            return grey * alpha + backdrop * (1 - alpha)
        return grey
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def normalise(grey: np.ndarray) -> Prepared:
    """Grey page -> MNIST-style 28x28: ink bright, cropped, fitted in 20x20, mass-centred."""
    # Paper is the majority around the border; ink is whatever differs from it.
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    paper = float(np.median(border))
    ink = grey - paper if paper < 0.5 else paper - grey
    ink = np.clip(ink, 0, None)
    peak = float(ink.max())
    if peak < 0.15:
        return Prepared(np.zeros((28, 28), np.float32), 0.0, False)
    ink = ink / peak
    mask = ink > 0.25
    ink_fraction = float(mask.mean())
    rows, cols = np.nonzero(mask)
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.LANCZOS)
    box = np.asarray(small, dtype=np.float32) / 255.0
    canvas = np.zeros((28, 28), np.float32)
    top, left = (28 - box.shape[0]) // 2, (28 - box.shape[1]) // 2
    canvas[top : top + box.shape[0], left : left + box.shape[1]] = box
    canvas = _centre_of_mass(canvas)
    return Prepared(np.clip(canvas, 0, 1), ink_fraction, True)


def _centre_of_mass(canvas: np.ndarray) -> np.ndarray:
    total = canvas.sum()
    if total <= 0:
        return canvas
    ys, xs = np.indices(canvas.shape)
    dy = round(13.5 - float((ys * canvas).sum() / total))
    dx = round(13.5 - float((xs * canvas).sum() / total))
    shifted = np.roll(canvas, (dy, dx), axis=(0, 1))
    # np.roll wraps around; the 20x20 box leaves a 4 px margin, so wrapping moves only zeros
    # unless the shift is larger than that, in which case clip the wrapped edge away.
    if abs(dy) > 4 or abs(dx) > 4:
        shifted = np.zeros_like(canvas)
        src = canvas[max(0, -dy) : 28 - max(0, dy), max(0, -dx) : 28 - max(0, dx)]
        y0, x0 = max(0, dy), max(0, dx)
        shifted[y0 : y0 + src.shape[0], x0 : x0 + src.shape[1]] = src
    return shifted


def prepare(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Prepared:
    """Bytes of any accepted image -> the model's 28x28 input. Raises `ImageError`."""
    return normalise(to_grey(decode(data, max_pixels)))


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
