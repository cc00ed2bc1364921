"""The interactive lane against the plain design, in alternating rounds.

    .venv/bin/python bench/interactive.py [--images 5000] [--rounds 3]

Both serve the same PNGs (MNIST test digits, each once per round) to the same
closed-loop client (bench/loadgen.py):

- `digits up` with its defaults: POST /api/v1/predict;
- the plain design (bench/plain_app.py): gunicorn, 2 sync workers, the model in each
  process on one torch thread (fp32, as specified for the baseline; once more on the
  workers' int8 runtime, reported beside), the same decoding, normalisation, verdict.

Rounds alternate (lane, plain, lane, plain, ...) because this machine drifts by tens
of percent from minute to minute; a ratio is taken within a round pair and the median
pair counts. Then 32 clients on a stack that wants API keys against the open one, one
client alone (p50), and 8 clients while a bulk job runs, beside the same bulk job
alone. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from bench.throughput import _ts, stop, wait_for, write_folder  # noqa: E402
from cli.stack import free_port  # noqa: E402

CLIENTS = (8, 32)


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DIGITS_REDIS_URL", "DIGITS_DATABASE_URL")}
    env.update(DIGITS_STATE_DIR=str(tmp), PYTHONUNBUFFERED="1", **extra)
    return env


def start_stack(tmp: Path, **extra: str) -> tuple[subprocess.Popen, str]:
    """`digits up` on its defaults (private Redis, SQLite, 2 bulk worker processes)."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--port", str(port)],
                            cwd=ROOT, env=clean_env(tmp, **extra),
                            stdout=(tmp / "stack.log").open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(url + "/readyz", timeout=2).ok, 120, "the stack")
    return proc, url


def start_plain(tmp: Path, runtime: str = "torch") -> tuple[subprocess.Popen, str]:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "bench.plain_app:create_app()",
                             "--workers", "2", "--worker-class", "sync", "--bind",
                             f"127.0.0.1:{port}", "--log-level", "warning"],
                            cwd=ROOT, env=clean_env(tmp, DIGITS_TORCH_THREADS="1",
                                                   DIGITS_RUNTIME=runtime),
                            stdout=(tmp / "plain.log").open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(url + "/", timeout=2).status_code == 404, 60, "the baseline")
    return proc, url


def check_digits(labels: list[int], wrong: list[int]):
    """A cheap check that every caller got its own answer: the digit of each answer is
    counted against its image's label (a mix-up would cost ~90 % accuracy)."""
    def check(index: int, status: int, body: bytes) -> None:
        if status == 200 and f'"digit":{labels[index]},'.encode() not in body:
            wrong.append(index)
    return check


def load(url: str, bodies: list[bytes], labels: list[int], clients: int,
         warmup: int = 200, headers: dict[str, str] | None = None) -> dict:
    wrong: list[int] = []
    result = loadgen.run(url, loadgen.build_requests(url, bodies, headers), clients, warmup,
                         check=check_digits(labels, wrong))
    summary = result.summary()
    if summary["statuses"] != {"200": result.requests}:  # a figure of errors means nothing
        raise SystemExit(f"bench: {url} answered {summary['statuses']}")
    return {**summary, "accuracy": round(1 - len(wrong) / max(1, result.requests), 4)}


def bulk_job(url: str, folder: Path, out: Path) -> float:
    """Images/s of one `digits submit` of the folder, from the server's timestamps."""
    subprocess.run([sys.executable, "-m", "cli.main", "submit", str(folder), "--server", url,
                    "--out", str(out)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "DIGITS_CLIENT_RETRY_MINUTES": "1"}, timeout=600)
    job = requests.get(url + "/api/v1/jobs", params={"limit": 1}, timeout=10).json()["data"][0]
    return job["counts"]["total"] / (_ts(job["finished_at"]) - _ts(job["created_at"]))


def beside_bulk(url: str, folder: Path, tmp: Path, bodies: list[bytes],
                labels: list[int]) -> dict:
    """The bulk job alone, then again with 8 interactive clients for as long as it runs."""
    solo = bulk_job(url, folder, tmp / "bulk-solo.csv")
    done = threading.Event()
    rate: dict[str, float] = {}

    def run_bulk() -> None:
        try:
            rate["bulk"] = bulk_job(url, folder, tmp / "bulk-shared.csv")
        finally:
            done.set()

    before = requests.get(url + "/api/v1/jobs", params={"limit": 1}, timeout=10).json()["data"]
    thread = threading.Thread(target=run_bulk)
    thread.start()

    def bulk_started() -> bool:  # the client's start-up and first upload come first
        jobs = requests.get(url + "/api/v1/jobs", params={"limit": 1}, timeout=10).json()
        return done.is_set() or (jobs["data"] and jobs["data"][0]["id"] != before[0]["id"])

    wait_for(bulk_started, 120, "the bulk job to start")
    figures = []
    while not done.is_set():
        figures.append(load(url + "/api/v1/predict", bodies[:1000], labels, 8, warmup=0))
    thread.join()
    latencies = [f["p99_ms"] for f in figures]
    return {"bulk_solo_images_per_s": round(solo, 1),
            "bulk_shared_images_per_s": round(rate.get("bulk", 0.0), 1),
            "predict_p99_ms_beside_bulk": max(latencies) if latencies else None,
            "predict_images_per_s_beside_bulk": round(statistics.median(
                f["images_per_s"] for f in figures), 1) if figures else None}


def measure(images: int, rounds: int, bulk_images: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="digits-interactive-") as tmp_name:
        tmp = Path(tmp_name)
        labels = write_folder(tmp / "scans", images)
        bodies = [p.read_bytes() for p in sorted((tmp / "scans").iterdir())]
        lane_proc, lane = start_stack(tmp / "lane")
        plain_proc, plain = start_plain(tmp / "plain")
        runs: dict[str, dict[int, list[dict]]] = {"lane": {}, "plain": {}}
        try:
            for r in range(rounds):
                for clients in CLIENTS:
                    for name, url in (("lane", lane + "/api/v1/predict"),
                                      ("plain", plain + "/predict")):
                        figures = load(url, bodies, labels, clients)
                        runs[name].setdefault(clients, []).append(figures)
                        print(f"round {r + 1} {name:<6}{clients:>3} clients: {figures}",
                              flush=True)
            stop(plain_proc)
            # The plain design on the workers' int8 runtime too, for comparison.
            int8_proc, int8_url = start_plain(tmp / "plain-int8", "auto")
            try:
                plain_int8 = load(int8_url + "/predict", bodies, labels, 32)
            finally:
                stop(int8_proc)
            print(f"plain design on the int8 runtime, 32 clients: {plain_int8}", flush=True)
            keyed = with_keys(tmp, lane, bodies, labels, rounds)
            print(f"with API keys: {keyed}", flush=True)
            one = load(lane + "/api/v1/predict", bodies[:2000], labels, 1)
            print(f"lane alone, 1 client: {one}", flush=True)
            folder = tmp / "bulk"
            write_folder(folder, bulk_images)
            bulk = beside_bulk(lane, folder, tmp, bodies, labels)
            print(f"beside a bulk job of {bulk_images} images: {bulk}", flush=True)
        finally:
            stop(plain_proc)
            stop(lane_proc)
    return {**summarise(runs, one, bulk), "keyed": keyed, "plain_int8": plain_int8}


def with_keys(tmp: Path, open_url: str, bodies: list[bytes], labels: list[int],
              rounds: int) -> dict:
    """32 clients on a stack that wants keys (each call authenticated and counted
    against its account's rate) against the open stack, in alternating rounds."""
    # The account's own rate stays out of the way (the default, 2,000 a second, is about
    # what this machine serves): what is measured is the cost of checking and counting.
    proc, url = start_stack(tmp / "keyed", DIGITS_AUTH="required",
                            DIGITS_PREDICT_RATE_LIMIT="1000000/second")
    try:
        key = subprocess.run([sys.executable, "-m", "cli.main", "keys", "create", "bench"],
                             cwd=ROOT, env=clean_env(tmp / "keyed"), check=True,
                             capture_output=True, text=True).stdout.split()[0]
        header = {"Authorization": f"Bearer {key}"}
        ratios = []
        for _ in range(rounds):
            open_ = load(open_url + "/api/v1/predict", bodies, labels, 32)
            keyed = load(url + "/api/v1/predict", bodies, labels, 32, headers=header)
            ratios.append(keyed["images_per_s"] / open_["images_per_s"])
    finally:
        stop(proc)
    return {"keyed_over_open": round(statistics.median(ratios), 2),
            "ratios": [round(r, 2) for r in ratios]}


def summarise(runs: dict, one: dict, bulk: dict) -> dict:
    out: dict = {}
    for clients in CLIENTS:
        pairs = list(zip(runs["lane"][clients], runs["plain"][clients], strict=True))
        ratios = [lane["images_per_s"] / plain["images_per_s"] for lane, plain in pairs]
        median = statistics.median
        out[clients] = {
            "lane_images_per_s": median(lane["images_per_s"] for lane, _ in pairs),
            "lane_p99_ms": median(lane["p99_ms"] for lane, _ in pairs),
            "plain_images_per_s": median(plain["images_per_s"] for _, plain in pairs),
            "plain_p99_ms": median(plain["p99_ms"] for _, plain in pairs),
            "ratio": round(median(ratios), 2), "ratios": [round(r, 2) for r in ratios],
            "lane_accuracy": min(lane["accuracy"] for lane, _ in pairs),
        }
    return {"by_clients": out, "one_client": one, "beside_bulk": bulk}


def report(figures: dict) -> dict:
    """Print the table; return the keys `make bench` adds to its JSON line."""
    print(f"{'interactive lane':<30}{'images/s':>10}{'p99 ms':>9}"
          f"{'plain images/s':>16}{'p99 ms':>9}{'ratio':>7}")
    for clients, f in figures["by_clients"].items():
        print(f"{f'{clients} clients':<30}{f['lane_images_per_s']:>10,.0f}"
              f"{f['lane_p99_ms']:>9.1f}{f['plain_images_per_s']:>16,.0f}"
              f"{f['plain_p99_ms']:>9.1f}{f['ratio']:>6.2f}x")
    one, bulk = figures["one_client"], figures["beside_bulk"]
    print(f"plain design on the int8 runtime, 32 clients: "
          f"{figures['plain_int8']['images_per_s']:,.0f} images/s, p99 "
          f"{figures['plain_int8']['p99_ms']:.1f} ms")
    print(f"one client: p50 {one['p50_ms']:.1f} ms, p99 {one['p99_ms']:.1f} ms")
    print(f"32 clients with API keys on: {figures['keyed']['keyed_over_open']:.2f}x the open "
          f"stack (rounds {figures['keyed']['ratios']})")
    print(f"8 clients beside a bulk job: p99 {bulk['predict_p99_ms_beside_bulk']} ms; bulk "
          f"{bulk['bulk_shared_images_per_s']:,.0f} images/s beside, "
          f"{bulk['bulk_solo_images_per_s']:,.0f} alone")
    top = figures["by_clients"][max(CLIENTS)]
    return {"predict_images_per_s": top["lane_images_per_s"],
            "predict_p99_ms": top["lane_p99_ms"],
            "predict_baseline_images_per_s": top["plain_images_per_s"],
            "predict_over_baseline": top["ratio"],
            "predict_p99_ms_8_clients": figures["by_clients"][8]["lane_p99_ms"],
            "predict_p50_ms_1_client": one["p50_ms"],
            "predict_p99_ms_beside_bulk": bulk["predict_p99_ms_beside_bulk"],
            "bulk_beside_predict_over_solo": round(bulk["bulk_shared_images_per_s"]
                                                   / bulk["bulk_solo_images_per_s"], 2),
            "predict_keyed_over_open": figures["keyed"]["keyed_over_open"],
            "predict_baseline_int8_images_per_s": figures["plain_int8"]["images_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bulk-images", type=int, default=10000)
    args = parser.parse_args()
    keys = report(measure(args.images, args.rounds, args.bulk_images))
    print(json.dumps(keys))


if __name__ == "__main__":
    main()
