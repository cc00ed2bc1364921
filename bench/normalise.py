"""Per-image cost of `shared.imaging.prepare` for a few input sizes, against the CNN's own
per-image cost at batch 32, measured in the same run.

    .venv/bin/python bench/normalise.py [--model models/digits-cnn.safetensors]

The model needs no trained weights for timing; a fresh DigitCNN is used when none is given.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image

from shared.imaging import prepare
from shared.network import DigitCNN

# (label, page side in pixels, format)
CASES = [("28x28 PNG (MNIST-like)", 28, "PNG"), ("120x120 PNG scan", 120, "PNG"),
         ("300x300 JPEG photo", 300, "JPEG"), ("1200x1200 JPEG scan", 1200, "JPEG"),
         ("2400x2400 PNG scan", 2400, "PNG")]


def sample_image(side: int, fmt: str) -> bytes:
    """A dark ring (a zero) on cream paper with a little noise."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    r = np.hypot((yy - 0.5) / 0.35, (xx - 0.5) / 0.22)
    ink = np.clip(1 - np.abs(r - 1) / 0.18, 0, 1)
    paper, blue = np.array([245, 240, 225]), np.array([25, 40, 140])
    rgb = (1 - ink[..., None]) * paper + ink[..., None] * blue
    rgb += np.random.default_rng(0).normal(0, 4, rgb.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


def per_call(fn, budget: float = 1.0) -> float:
    fn()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget:
        fn()
        runs += 1
    return (time.perf_counter() - start) / runs


def model_cost(model: torch.nn.Module, batch: int = 32) -> float:
    x = torch.rand(batch, 1, 28, 28)
    with torch.inference_mode():
        return per_call(lambda: model(x)) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    if args.model:
        from shared import artifact

        model = artifact.load(args.model)[0]
    else:
        model = DigitCNN().eval()
    model_s = model_cost(model)
    print(f"model at batch 32, {torch.get_num_threads()} threads: "
          f"{model_s * 1e6:.0f} us per image")
    for label, side, fmt in CASES:
        data = sample_image(side, fmt)
        cost = per_call(lambda data=data: prepare(data))
        print(f"prepare {label:<26} {len(data):>9,} bytes  {cost * 1e6:>8.0f} us per image  "
              f"{cost / model_s:6.2f}x the model")


if __name__ == "__main__":
    main()
