"""What metrics and logs cost: the same local stack with and without them, alternated.

    .venv/bin/python bench/observability.py --baseline REV [--rounds 3] [--images 10000]

Each round starts `digits up --workers 2` (private Redis, SQLite) once from the code
at REV (a commit from before metrics and structured logs: the true "off"), once from
the working tree's HEAD with metrics on and JSON logs (DIGITS_LOG_FORMAT=json), in
alternating order, and measures in each:

1. the interactive lane: sequential POST /api/v1/predict calls, median and p95, and
   the CPU time the stack's processes spent per call;
2. the bulk lane: a folder of PNG scans through `digits submit`, from the job's
   creation to its last result (both stamped by the server), as bench/throughput.py,
   and the CPU time the stack's processes spent on it, per image.

This machine's speed drifts from minute to minute, so the figures are medians over
rounds, and each round's pair ran back to back. The last line printed is one JSON
object. docs/operations.md reports a run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import _ts, stop, wait_for, write_folder  # noqa: E402
from cli.stack import free_port  # noqa: E402


def export(rev: str, into: Path) -> Path:
    """The tree of a commit, as files (models included), without touching the repo."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and every descendant alive now."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0.0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def measure(tree: Path, extra_env: dict[str, str], folder: Path, one_png: bytes,
            predictions: int, tmp: Path) -> dict:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DIGITS_REDIS_URL", "DIGITS_DATABASE_URL") and not k.startswith(
               ("DIGITS_METRICS", "DIGITS_LOG_FORMAT", "DIGITS_CELERY_EVENTS"))}
    env.update(DIGITS_STATE_DIR=str(tmp / "state"), PYTHONUNBUFFERED="1", **extra_env)
    env["DIGITS_MODEL_PATH"] = str(tree / "models" / "digits-cnn.safetensors")
    tmp.mkdir(parents=True)
    log = (tmp / "stack.log").open("wb")
    # `python -m cli.main` from the tree's folder imports that tree's code first.
    stack = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--workers", "2",
                              "--port", str(port)], cwd=tree, env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(url + "/readyz", timeout=2).ok, 120, "the stack")
        session = requests.Session()
        for _ in range(20):  # warm both lanes' first requests
            session.post(url + "/api/v1/predict", files={"image": ("d.png", one_png)})
        latencies = []
        cpu_before = tree_cpu_s(stack.pid)
        for _ in range(predictions):
            start = time.perf_counter()
            answer = session.post(url + "/api/v1/predict", files={"image": ("d.png", one_png)})
            latencies.append(time.perf_counter() - start)
            answer.raise_for_status()
        predict_cpu = tree_cpu_s(stack.pid) - cpu_before
        out = tmp / "results.csv"
        cpu_before = tree_cpu_s(stack.pid)
        subprocess.run([sys.executable, "-m", "cli.main", "submit", str(folder), "--server", url,
                        "--out", str(out)], cwd=tree, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        job = requests.get(url + "/api/v1/jobs", params={"limit": 1}, timeout=10).json()["data"][0]
        assert job["status"] == "succeeded", job
        cpu = tree_cpu_s(stack.pid) - cpu_before
        metrics = requests.get(url + "/metrics", timeout=10)
    finally:
        stop(stack)
    latencies.sort()
    seconds = _ts(job["finished_at"]) - _ts(job["created_at"])
    return {"predict_p50_ms": 1000 * statistics.median(latencies),
            "predict_p95_ms": 1000 * latencies[int(0.95 * len(latencies)) - 1],
            "predict_cpu_ms": 1000 * predict_cpu / len(latencies),
            "bulk_images_per_s": job["counts"]["total"] / seconds,
            # The stack's processes (API, workers, Redis), the client's excluded: CPU time
            # is steadier than wall time on a machine shared with other work.
            "bulk_cpu_ms_per_image": 1000 * cpu / job["counts"]["total"],
            "metrics_served": metrics.status_code == 200}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True,
                        help="a commit without metrics and structured logs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--predictions", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digits-obs-") as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "scans"
        write_folder(folder, args.images)
        one_png = next(folder.iterdir()).read_bytes()
        trees = {"off": export(args.baseline, tmp / "off"), "on": export("HEAD", tmp / "on")}
        env = {"off": {}, "on": {"DIGITS_METRICS": "true", "DIGITS_LOG_FORMAT": "json"}}
        runs: dict[str, list[dict]] = {"off": [], "on": []}
        for r in range(args.rounds):
            for side in (("off", "on") if r % 2 == 0 else ("on", "off")):
                run = measure(trees[side], env[side], folder, one_png, args.predictions,
                              tmp / f"{side}-{r}")
                runs[side].append(run)
                print(f"round {r + 1} {side:>3}: predict p50 {run['predict_p50_ms']:.2f} ms, "
                      f"p95 {run['predict_p95_ms']:.2f} ms, {run['predict_cpu_ms']:.2f} CPU ms; "
                      "bulk "
                      f"{run['bulk_images_per_s']:,.0f} images/s, "
                      f"{run['bulk_cpu_ms_per_image']:.3f} CPU ms an image", flush=True)
    summary = {}
    for key in ("predict_p50_ms", "predict_p95_ms", "predict_cpu_ms", "bulk_images_per_s",
                "bulk_cpu_ms_per_image"):
        off = statistics.median(run[key] for run in runs["off"])
        on = statistics.median(run[key] for run in runs["on"])
        summary[key] = {"off": round(off, 2), "on": round(on, 2), "on_over_off": round(on / off, 3)}
        print(f"{key:<20} off {off:10,.2f}   on {on:10,.2f}   on/off {on / off:.3f}")
    assert all(run["metrics_served"] for run in runs["on"])
    print(json.dumps({"rounds": args.rounds, "images": args.images,
                      "predictions": args.predictions, **summary}))


if __name__ == "__main__":
    main()
