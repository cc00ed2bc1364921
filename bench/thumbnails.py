"""What storing previews adds to a worker's chunk (shared.thumbnails): the source's
thumbnail and the model's 28x28 input as a PNG, per image, beside what `prepare_many`
costs for the same chunk, on one core and with the worker's malloc settings.

    .venv/bin/python bench/thumbnails.py [--data DIR]

The chunk is 256 MNIST test digits saved as 28x28 PNGs (dark on white, like a scan;
synthetic rings when MNIST is not found), the kind of input whose thumbnail is the
file itself. A few other inputs show the re-encoding path. Each figure is the best of
five rounds.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image

from bench.normalise import per_call
from shared.imaging import Prepared, prepare_many
from shared.settings import get_settings
from shared.thumbnails import model_input_pngs, thumbnail
from worker.malloc import keep_freed_memory

CHUNK = 256


def encode(img: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def ring(side: int, seed: int = 0) -> np.ndarray:
    """A dark ring (a zero) on light paper with a little noise, uint8 (side, side)."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    r = np.hypot((yy - 0.5) / 0.35, (xx - 0.5) / 0.22)
    ink = np.clip(1 - np.abs(r - 1) / 0.18, 0, 1)
    grey = 240 - 215 * ink + np.random.default_rng(seed).normal(0, 4, ink.shape)
    return np.clip(grey, 0, 255).astype(np.uint8)


def mnist_chunk(data_dir) -> list[bytes]:
    try:
        from shared.mnist import load_split

        images = load_split(data_dir, "test").images[:CHUNK]
        return [encode(Image.fromarray(255 - image), "PNG") for image in images]
    except Exception as exc:  # no MNIST here: rings of the same size
        print(f"(MNIST not found: {exc}; using synthetic 28x28 rings)")
        return [encode(Image.fromarray(ring(28, seed)), "PNG") for seed in range(CHUNK)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="MNIST folder (default DIGITS_DATA_DIR)")
    args = parser.parse_args()
    keep_freed_memory()
    chunk = mnist_chunk(args.data or get_settings().data_dir)
    prepared = prepare_many(chunk)
    pixels = np.stack([p.pixels for p in prepared if isinstance(p, Prepared)])

    prepare_s = per_call(lambda: prepare_many(chunk)) / CHUNK
    thumb_s = per_call(lambda: [thumbnail(data) for data in chunk]) / CHUNK
    model_s = per_call(lambda: model_input_pngs(pixels)) / CHUNK
    sizes = (np.mean([len(thumbnail(d)) for d in chunk]),
             np.mean([len(b) for b in model_input_pngs(pixels)]))
    print(f"chunk of {CHUNK} 28x28 PNGs, per image, one core:")
    print(f"  prepare_many (decode + normalise) {prepare_s * 1e6:8.1f} us")
    print(f"  thumbnail (the PNG itself)        {thumb_s * 1e6:8.1f} us"
          f"   {sizes[0]:.0f} bytes")
    print(f"  model input PNG                   {model_s * 1e6:8.1f} us   {sizes[1]:.0f} bytes")
    print(f"  previews / prepare_many           {(thumb_s + model_s) / prepare_s:8.1%}")

    grey = Image.fromarray(ring(300))
    others = [
        ("28x28 TIFF", encode(Image.fromarray(ring(28)), "TIFF")),
        ("28x28 BMP", encode(Image.fromarray(ring(28)), "BMP")),
        ("120x120 PNG", encode(Image.fromarray(ring(120)), "PNG")),
        ("300x300 16-bit TIFF", encode(Image.fromarray(ring(300).astype(np.uint16) * 257),
                                       "TIFF")),
        ("1200x1200 JPEG", encode(grey.resize((1200, 1200)).convert("RGB"), "JPEG")),
    ]
    print("re-encoded thumbnails, one image:")
    for label, data in others:
        thumb_s = per_call(lambda data=data: thumbnail(data), budget=0.5)
        prep_s = per_call(lambda data=data: prepare_many([data]), budget=0.5)
        out = Image.open(io.BytesIO(thumbnail(data)))
        print(f"  {label:22s} thumbnail {thumb_s * 1e6:7.0f} us ({out.size[0]}x{out.size[1]} "
              f"{out.format}, {len(thumbnail(data))} bytes); prepare {prep_s * 1e6:7.0f} us")


if __name__ == "__main__":
    main()
