"""Scaling: images/s per number of bulk worker processes on PostgreSQL, and the memory
of one large job.

    .venv/bin/python bench/scaling.py [--images 10000] [--max-workers N] [--plot]
    .venv/bin/python bench/scaling.py --database sqlite --workers 1,4,8,14 \
        --clients 3 --parallel 4 --api-processes 6     # a GPU host: bench/gpu_host.sh
    .venv/bin/python bench/scaling.py --big 100000     # the memory of a 100,000-image job

1. The curve: `digits up --workers W` for W = 1..N (default: the host's cores) on a
   throw-away PostgreSQL database (created on DIGITS_BENCH_POSTGRES, dropped after;
   `--database sqlite`: the embedded default), the same folder of PNG scans through
   `digits submit` each time (`--clients` processes, a job each, with `--parallel`
   upload streams each), from the first job's creation to its last result, the steady
   rate between, and the CPU each kind of process spent per image. `--plot` draws
   docs/img/scaling.png.
2. `--big N`: one N-image job on the default stack (SQLite), with the peak resident
   memory of every process sampled twice a second: the API's, each worker's, the
   client's; and the same for a job a tenth the size, so that growth with the job's
   size shows as a ratio.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import _ts, bench_e2e, role, stop, wait_for, write_folder  # noqa: E402
from cli.stack import free_port  # noqa: E402

POSTGRES = os.environ.get("DIGITS_BENCH_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432")
FIGURE = ROOT / "docs" / "img" / "scaling.png"


def postgres_database() -> tuple[str, callable]:
    """A fresh database on the server, and the function that drops it."""
    import psycopg

    name = f"digits_scaling_{uuid.uuid4().hex[:8]}"
    admin = POSTGRES.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{POSTGRES}/{name}", drop


def curve(images: int, worker_counts: list[int], tmp: Path, database: str = "postgres",
          scans: Path | None = None, **options) -> dict[int, dict]:
    """One job of `images` scans per worker count; `options` go to bench_e2e
    (parallel upload streams, API processes, extra settings)."""
    scans = scans or tmp / "scans"
    labels = scan_folder(scans, images)
    runs = {}
    for workers in worker_counts:
        url, drop = postgres_database() if database == "postgres" else (None, lambda: None)
        try:
            run = bench_e2e(scans, labels, tmp / f"w{workers}", workers=workers,
                            **({"DIGITS_DATABASE_URL": url} if url else {}), **options)
        finally:
            drop()
        run["images_per_s"] = run["images"] / run["first_upload_to_last_result_s"]
        runs[workers] = run
        cpu = ", ".join(f"{k} {v}" for k, v in sorted(run["cpu_us_per_image"].items()))
        print(f"{workers} worker process(es): {run['images_per_s']:,.0f} images/s from the "
              f"first upload to the last result, {run['steady_images_per_s']:,.0f} steady "
              f"({run['accuracy']:.2%} right); CPU us per image: {cpu}", flush=True)
    return runs


def scan_folder(folder: Path, images: int) -> list[int]:
    """The folder of `images` MNIST test scans, written unless a run left it there."""
    found = {}
    for path in folder.glob("*.png") if folder.is_dir() else ():
        number, label = path.stem.split("_")
        found[int(number)] = int(label)
    if sorted(found) == list(range(images)):
        return [found[i] for i in range(images)]
    shutil.rmtree(folder, ignore_errors=True)
    return write_folder(folder, images)


def plot(rates: dict[int, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    workers = sorted(rates)
    ax.plot(workers, [rates[w] for w in workers], marker="o")
    ax.set_xlabel("bulk worker processes")
    ax.set_ylabel("images/s, end to end")
    ax.set_xticks(workers)
    ax.set_ylim(bottom=0)
    ax.set_title(f"digits on PostgreSQL, {os.cpu_count()} cores")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE)
    print(f"wrote {FIGURE}")


def peak_memory(images: int, tmp: Path) -> dict[str, float]:
    """Peak RSS in MiB per process role (the largest process of each role) while one
    job of `images` PNGs goes through `digits submit` to `digits up`."""
    folder = tmp / f"big-{images}"
    write_folder(folder, images)
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DIGITS_REDIS_URL", "DIGITS_DATABASE_URL")}
    env.update(DIGITS_STATE_DIR=str(tmp / f"state-{images}"), PYTHONUNBUFFERED="1")
    stack = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--port", str(port)],
                             cwd=ROOT, env=env, stdout=(tmp / f"stack-{images}.log").open("wb"),
                             stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    peaks: dict[str, float] = {}
    done = threading.Event()

    def sample(roots: list[int]) -> None:
        while not done.is_set():
            for root in roots:
                try:
                    family = [psutil.Process(root), *psutil.Process(root).children(True)]
                except psutil.Error:
                    continue
                for proc in family:
                    role_ = role(proc)
                    try:
                        rss = proc.memory_info().rss / 2**20
                    except psutil.Error:
                        continue
                    if role_:
                        peaks[role_] = max(peaks.get(role_, 0.0), rss)
            done.wait(0.5)

    try:
        wait_for(lambda: requests.get(url + "/readyz", timeout=2).ok, 120, "the stack")
        client = subprocess.Popen([sys.executable, "-m", "cli.main", "submit", str(folder),
                                   "--server", url, "--out", str(tmp / f"big-{images}.csv")],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        sampler = threading.Thread(target=sample, args=([stack.pid, client.pid],))
        sampler.start()
        if client.wait(3600):
            raise SystemExit(f"bench: digits submit of {images} images failed")
        done.set()
        sampler.join()
        job = requests.get(url + "/api/v1/jobs", params={"limit": 1}, timeout=10).json()
        job = job["data"][0]
        rate = job["counts"]["total"] / (_ts(job["finished_at"]) - _ts(job["created_at"]))
    finally:
        done.set()
        stop(stack)
    rows = sum(1 for _ in (tmp / f"big-{images}.csv").open()) - 1
    print(f"{images:,} images ({rows:,} rows, {rate:,.0f} images/s): peak MiB "
          + ", ".join(f"{k} {v:.0f}" for k, v in sorted(peaks.items())), flush=True)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workers", default=None, metavar="W,W,...",
                        help="the worker counts to run (default 1..--max-workers)")
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres",
                        help="postgres: a throw-away database on DIGITS_BENCH_POSTGRES; "
                             "sqlite: the embedded default")
    parser.add_argument("--parallel", type=int, default=1,
                        help="upload streams of the client (digits submit --parallel)")
    parser.add_argument("--clients", type=int, default=1,
                        help="client processes, each a job of its share of the scans")
    parser.add_argument("--api-processes", type=int, default=None,
                        help="gunicorn processes of the API (default DIGITS_API_PROCESSES)")
    parser.add_argument("--scans", type=Path, default=None,
                        help="keep the folder of scans here, for the next run (default: a "
                             "temporary folder)")
    parser.add_argument("--plot", action="store_true", help=f"draw {FIGURE.name}")
    parser.add_argument("--big", type=int, default=0, metavar="N",
                        help="instead: the peak memory of an N-image job (and of N/10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digits-scaling-") as tmp_name:
        tmp = Path(tmp_name)
        if args.big:
            small, big = peak_memory(args.big // 10, tmp), peak_memory(args.big, tmp)
            growth = {k: round(big[k] / small[k], 2) for k in big if k in small}
            print(f"peak memory, {args.big:,} against {args.big // 10:,} images: {growth}")
            print(json.dumps({"big_images": args.big, "peak_mib": {
                k: round(v, 1) for k, v in big.items()}, "growth": growth}))
            return
        counts = ([int(w) for w in args.workers.split(",")] if args.workers
                  else list(range(1, args.max_workers + 1)))
        runs = curve(args.images, counts, tmp, args.database, args.scans,
                     parallel=args.parallel, api_processes=args.api_processes,
                     clients=args.clients)
    rates = {w: run["images_per_s"] for w, run in runs.items()}
    if args.plot:
        plot(rates)
    print(json.dumps({"scaling_images_per_s": {str(k): round(v, 1) for k, v in rates.items()},
                      "steady_images_per_s": {str(k): round(run["steady_images_per_s"], 1)
                                              for k, run in runs.items()},
                      "cpu_us_per_image": {str(k): run["cpu_us_per_image"]
                                           for k, run in runs.items()}}))


if __name__ == "__main__":
    main()
