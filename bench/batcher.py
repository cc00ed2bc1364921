"""Choose DIGITS_MAX_BATCH_WAIT_MS: single-image predictions from concurrent callers
through the dynamic batcher, at several maximum waits, in one run.

    .venv/bin/python bench/batcher.py [--callers 8] [--requests 2000]

It prints images/s and median / p95 latency per wait; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.mnist import load_split
from shared.settings import get_settings
from worker.batcher import DynamicBatcher
from worker.inference import Predictor

WAITS_MS = (0.0, 1.0, 2.0, 5.0, 10.0)


def measure(predictor: Predictor, pixels: np.ndarray, wait_ms: float, callers: int) -> dict:
    batcher = DynamicBatcher(predictor.probabilities, 64, wait_ms / 1000)
    latencies: list[float] = []

    def one(i: int) -> None:
        start = time.perf_counter()
        batcher.submit(pixels[i % len(pixels)][None], timeout=60)
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(one, range(len(pixels))))
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"wait_ms": wait_ms, "images_per_s": round(len(pixels) / wall, 1),
            "p50_ms": round(float(np.median(ms)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "mean_batch": round(float(np.mean(batcher.batch_sizes)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    settings = get_settings()
    predictor = Predictor(settings.model_path, "cpu", 64, os.cpu_count() or 1)
    test = load_split(settings.data_dir, "test")
    pixels = test.images[: args.requests].astype(np.float32) / 255
    predictor.probabilities(pixels[:64])  # warm up
    rows = [measure(predictor, pixels, wait, args.callers) for wait in WAITS_MS]
    print(f"{args.callers} concurrent callers, {len(pixels)} single-image requests")
    print(f"{'max wait':>9} {'images/s':>9} {'p50 ms':>7} {'p95 ms':>7} {'mean batch':>10}")
    for r in rows:
        print(f"{r['wait_ms']:>9} {r['images_per_s']:>9,.0f} {r['p50_ms']:>7} {r['p95_ms']:>7} "
              f"{r['mean_batch']:>10}")
    print(json.dumps({"callers": args.callers, "rows": rows}))


if __name__ == "__main__":
    main()
