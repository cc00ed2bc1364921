"""Digit strings end to end: 5-digit fields (generated from MNIST test digits, half the
neighbours touching or overlapping) through `digits submit --mode string` to
`digits up --workers 2`, from the first upload to the last result stored; and the
string model alone on one thread (as a worker process runs it), its ONNX form against
torch, in alternating rounds.

    .venv/bin/python bench/strings.py [--fields 1000]     # alone; make bench runs it too
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import _ts, stop, wait_for  # noqa: E402
from cli.stack import free_port  # noqa: E402


def measure(fields: int = 1000, workers: int = 2, tmp: Path | None = None) -> dict:
    from training.strings import generated_strings

    with tempfile.TemporaryDirectory(prefix="digits-strings-") as name:
        tmp = tmp or Path(name)
        folder = tmp / "fields"
        folder.mkdir(parents=True, exist_ok=True)
        made = generated_strings(os.environ.get("DIGITS_DATA_DIR", "data/mnist"), seed=5,
                                 mix={5: fields})
        truth = {}
        for file, blob, text in zip(made.files, made.blobs, made.labels, strict=True):
            (folder / file).write_bytes(blob)
            truth[file] = text
        port = free_port()
        env = {k: v for k, v in os.environ.items()
               if k not in ("DIGITS_REDIS_URL", "DIGITS_DATABASE_URL")}
        env.update(DIGITS_STATE_DIR=str(tmp / "state"), PYTHONUNBUFFERED="1")
        with (tmp / "stack.log").open("wb") as log:
            stack = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "up", "--workers", str(workers),
                 "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        out = tmp / "strings.csv"
        try:
            wait_for(lambda: requests.get(url + "/readyz", timeout=2).ok, 120, "the stack")
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "cli.main", "submit", str(folder), "--mode",
                            "string", "--server", url, "--out", str(out)], cwd=ROOT,
                           check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            job = requests.get(url + "/api/v1/jobs", params={"limit": 1}, timeout=10
                               ).json()["data"][0]
        finally:
            stop(stack)
        with out.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    right = sum(r["text"] == truth[Path(r["path"]).name] for r in rows)
    seconds = _ts(job["finished_at"]) - _ts(job["created_at"])
    return {"string_fields": len(rows), "strings_per_s": round(len(rows) / seconds, 1),
            "strings_right": round(right / max(1, len(rows)), 4),
            "strings_client_wall_s": round(wall, 2)}


def measure_model(fields: int = 500, rounds: int = 3) -> dict:
    """Fields per second through the string model alone (`StringModel.log_probs` on
    their strips, batched as a worker batches them), one thread, each runtime's best
    round of `rounds` taken alternately."""
    from shared.fields import field_strip
    from shared.settings import get_settings
    from shared.stringnet import path_beside
    from training.strings import generated_strings
    from worker.strings import StringModel

    settings = get_settings()
    made = generated_strings(settings.data_dir, seed=6, mix={5: fields})
    strips = [field_strip(b, settings.max_image_pixels).pixels for b in made.blobs]
    weights = path_beside(settings.model_path)
    models = {"auto": StringModel(weights, "cpu", settings.max_batch_size, threads=1),
              "torch": StringModel(weights, "cpu", settings.max_batch_size, threads=1,
                                   runtime="torch")}
    best = dict.fromkeys(models, 0.0)
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.log_probs(strips)
            best[name] = max(best[name], len(strips) / (time.perf_counter() - start))
    return {"string_model_runtime": models["auto"].runtime,
            "string_model_fields_per_s": round(best["auto"], 1),
            "string_model_torch_fields_per_s": round(best["torch"], 1)}


def report(result: dict) -> dict:
    label = f"end to end, 5-digit strings ({result['string_fields']})"
    print(f"{label:<44}{result['strings_per_s']:>12,.0f}  strings/s, "
          f"{result['strings_right']:.2%} right")
    if "string_model_fields_per_s" in result:
        fast, slow = result["string_model_fields_per_s"], result["string_model_torch_fields_per_s"]
        print(f"{'string model alone, one thread':<44}{fast:>12,.0f}{slow:>12,.0f}  fields/s "
              f"({result['string_model_runtime']} / torch fp32: {fast / slow:.2f}x)")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=1000)
    args = parser.parse_args()
    report({**measure(args.fields), **measure_model()})
