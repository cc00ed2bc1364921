"""Per-image cost of `shared.imaging.prepare_many` (a worker's chunk, DIGITS_CHUNK_SIZE
images of one size) and of `prepare` (one image alone) for a few input sizes, against
the CNN's own per-image cost on one thread at the worker's batch size, measured in the
same run: one core each, as in a worker process.

    .venv/bin/python bench/normalise.py [--model models/digits-cnn.safetensors]
    git show HEAD~3:shared/imaging.py > /tmp/imaging_before.py
    .venv/bin/python bench/normalise.py --baseline /tmp/imaging_before.py
    .venv/bin/python bench/normalise.py --baseline-rev 45b37b2   # prepare_many, whole package

The model needs no trained weights for timing; a fresh DigitCNN is used when none is given.
`--baseline-rev` times `prepare_many` on chunks with the whole `shared/` package of another
commit (normalisation spans several modules), in child processes that alternate with
ones running today's code, best of three rounds each, and prints the ratios.
`--baseline` times another copy of `shared/imaging.py` on the same inputs in the same run,
(one image at a time) so a change can be judged by the ratio even on a busy machine. Each
figure is the best of five rounds, which keeps most of the noise of a shared machine out.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import time

import numpy as np
import torch
from PIL import Image

from shared.imaging import prepare, prepare_many
from shared.network import DigitCNN
from shared.settings import get_settings

# (label, page side in pixels, format)
CASES = [("28x28 PNG (MNIST-like)", 28, "PNG"), ("120x120 PNG scan", 120, "PNG"),
         ("300x300 JPEG photo", 300, "JPEG"), ("1200x1200 JPEG scan", 1200, "JPEG"),
         ("2400x2400 PNG scan", 2400, "PNG")]


def sample_image(side: int, fmt: str, seed: int = 0) -> bytes:
    """A dark ring (a zero) on cream paper with a little noise."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    r = np.hypot((yy - 0.5) / 0.35, (xx - 0.5) / 0.22)
    ink = np.clip(1 - np.abs(r - 1) / 0.18, 0, 1)
    paper, blue = np.array([245, 240, 225]), np.array([25, 40, 140])
    rgb = (1 - ink[..., None]) * paper + ink[..., None] * blue
    rgb += np.random.default_rng(seed).normal(0, 4, rgb.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


def per_call(fn, budget: float = 1.0, rounds: int = 5) -> float:
    """Seconds per call: the best of `rounds` rounds sharing `budget` seconds."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < budget / rounds or runs == 0:
            fn()
            runs += 1
        best = min(best, (time.perf_counter() - start) / runs)
    return best


def model_cost(model: torch.nn.Module, batch: int) -> float:
    """Seconds per image on one thread, channels_last, as in a worker process."""
    torch.set_num_threads(1)
    model.to(memory_format=torch.channels_last)
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return per_call(lambda: model(x)) / batch


def load_baseline(path: str):
    """`prepare` from another copy of shared/imaging.py (e.g. an older commit's)."""
    spec = importlib.util.spec_from_file_location("imaging_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.prepare


def chunk_costs() -> dict[str, float]:
    """Seconds per image of `prepare_many` on a worker's chunk, per case."""
    chunk = get_settings().chunk_size
    costs = {}
    for label, side, fmt in CASES:
        count = chunk if side <= 300 else 8
        blobs = [sample_image(side, fmt, seed) for seed in range(count)]
        costs[label] = per_call(lambda blobs=blobs: prepare_many(blobs)) / count
    return costs


def compare_with_rev(rev: str, rounds: int = 3) -> None:
    """prepare_many on chunks: this tree's shared/ against commit `rev`'s, alternating."""
    import json
    import os
    import subprocess
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(["git", "-C", str(root), "archive", rev, "shared"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        best: dict[str, dict[str, float]] = {"today": {}, rev: {}}
        for _ in range(rounds):
            for name, path in (("today", str(root)), (rev, old)):
                env = {**os.environ, "PYTHONPATH": path}
                out = subprocess.run([sys.executable, __file__, "--chunk-costs"], env=env,
                                     check=True, capture_output=True, text=True).stdout
                for label, cost in json.loads(out.splitlines()[-1]).items():
                    best[name][label] = min(best[name].get(label, float("inf")), cost)
    print(f"prepare_many on chunks, us per image, best of {rounds} alternating rounds")
    print(f"{'input':<26} {'today':>9} {rev[:10]:>10} {'ratio':>7}")
    for label in best["today"]:
        now, then = best["today"][label], best[rev][label]
        print(f"{label:<26} {now * 1e6:>9.0f} {then * 1e6:>10.0f} {now / then:>6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--baseline", default=None,
                        help="another shared/imaging.py to time in the same run")
    parser.add_argument("--baseline-rev", default=None, metavar="REV",
                        help="time prepare_many on chunks against this commit's shared/")
    parser.add_argument("--chunk-costs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chunk_costs:
        import json

        print(json.dumps(chunk_costs()))
        return
    if args.baseline_rev:
        compare_with_rev(args.baseline_rev)
        return
    if args.model:
        from shared import artifact

        model = artifact.load(args.model)[0]
    else:
        model = DigitCNN().eval()
    baseline = load_baseline(args.baseline) if args.baseline else None
    batch = get_settings().max_batch_size
    chunk = get_settings().chunk_size
    model_s = model_cost(model, batch)
    print(f"model on one thread at batch {batch}: {model_s * 1e6:.0f} us per image")
    print(f"{'input':<26} {'bytes':>10} {'chunk of ' + str(chunk):>14} {'alone':>10}  "
          "(us per image; x the model)")
    for label, side, fmt in CASES:
        count = chunk if side <= 300 else 8  # pages: a few make the point
        blobs = [sample_image(side, fmt, seed) for seed in range(count)]
        many = per_call(lambda blobs=blobs: prepare_many(blobs)) / count
        one = per_call(lambda data=blobs[0]: prepare(data))
        line = (f"{label:<26} {len(blobs[0]):>10,} {many * 1e6:>8.0f} {many / model_s:4.1f}x "
                f"{one * 1e6:>8.0f} {one / model_s:4.1f}x")
        if baseline is not None:
            before = per_call(lambda data=blobs[0]: baseline(data))
            line += f"  | baseline alone {before * 1e6:>8.0f} us"
        print(line)


if __name__ == "__main__":
    main()
