"""Chaos: real processes broken mid-job, and every image still has exactly one result
and the job completes. Each test runs its own API (gunicorn), bulk worker, reconciler,
Redis database and SQLite file or PostgreSQL cluster; faults are signals, restarts and
an emptied broker, never mocks. The API killed mid-upload and a poison image are in
tests/test_resilience.py. Marked slow."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests

from cli.stack import free_port, redis_binary
from tests.conftest import (
    MODEL,
    ROOT,
    digits_argv,
    mnist_png_bytes,
    own_redis_db,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.slow

N = 2000


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


class Services:
    """The API, one bulk worker and a reconciler, each its own process group."""

    def __init__(self, tmp: Path, redis_url: str, database_url: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DIGITS_REDIS_URL": redis_url,
                    "DIGITS_DATABASE_URL": database_url, "DIGITS_STATE_DIR": str(tmp / "state"),
                    "DIGITS_MODEL_PATH": str(MODEL), "PYTHONUNBUFFERED": "1",
                    "DIGITS_CHUNK_SIZE": "64", "DIGITS_VISIBILITY_TIMEOUT_S": "10",
                    "DIGITS_LEASE_S": "15", "DIGITS_RECONCILE_AFTER_S": "3",
                    "DIGITS_QUEUE_DEADLINE_S": "30", "DIGITS_METRICS": "false"}
        self.procs: dict[str, subprocess.Popen] = {}
        subprocess.run(digits_argv("db", "upgrade"), cwd=ROOT, env=self.env, check=True,
                       capture_output=True)

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(digits_argv(*args), cwd=ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start(self) -> Services:
        self.spawn("api", "api", "--port", str(self.port), "--processes", "1")
        self.worker()
        self.spawn("reconciler", "reconcile", "--every", "1")
        wait_for(lambda: requests.get(self.url + "/healthz", timeout=5).ok, 60,
                 what="the API")
        return self

    def worker(self) -> subprocess.Popen:
        return self.spawn("worker", "worker", "--queues", "bulk", "--concurrency", "1")

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_process(proc)

    def job(self) -> dict:
        digits = mnist_png_bytes(0, N)
        files = [("files", (name, data, "image/png")) for name, data, _ in digits]
        response = requests.post(self.url + "/api/v1/jobs", files=files, timeout=120)
        assert response.status_code == 202, response.text
        return response.json()

    def get(self, job_id: str) -> dict:
        return requests.get(f"{self.url}/api/v1/jobs/{job_id}", timeout=10).json()

    def wait_some_done(self, job_id: str) -> None:
        wait_for(lambda: 0 < self.get(job_id)["counts"]["done"] < N, 180, interval=0.05,
                 what="the job to be under way")

    def assert_every_image_once(self, job_id: str, timeout: float = 240) -> None:
        def final():
            job = self.get(job_id)
            return job if job["status"] in ("succeeded", "failed", "cancelled") else None

        job = wait_for(final, timeout, interval=0.5, what=f"job {job_id} to finish")
        c = job["counts"]
        assert job["status"] == "succeeded", job
        assert c["total"] == N and c["pending"] == 0 and c["failed"] == 0
        assert c["done"] == N  # done counts no_digit too: one result per image


@pytest.fixture
def services(tmp_path, shipped_model):
    with own_redis_db(range(8, 16)) as redis_url:
        s = Services(tmp_path, redis_url, f"sqlite:///{tmp_path / 'digits.db'}")
        try:
            yield s.start()
        finally:
            s.stop()


def test_a_worker_child_sigkilled_mid_chunk(services):
    job = services.job()
    services.wait_some_done(job["id"])
    children = _children(services.procs["worker"].pid)
    assert children
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    services.assert_every_image_once(job["id"])


def test_a_whole_worker_sigkilled_and_another_started(services):
    job = services.job()
    services.wait_some_done(job["id"])
    os.killpg(services.procs["worker"].pid, signal.SIGKILL)
    services.procs["worker"].wait()
    services.worker()
    services.assert_every_image_once(job["id"])


def test_a_worker_stopped_with_sigterm_mid_chunk(services):
    job = services.job()
    services.wait_some_done(job["id"])
    worker = services.procs["worker"]
    worker.send_signal(signal.SIGTERM)  # warm shutdown: the chunk in hand is finished
    worker.wait(timeout=120)
    assert services.get(job["id"])["counts"]["pending"] > 0, "stopped before the end"
    services.worker()
    services.assert_every_image_once(job["id"])


def test_redis_restarted_empty_mid_job(tmp_path, shipped_model):
    port = free_port()
    argv = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no"]

    def redis_server() -> subprocess.Popen:
        import redis

        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)

        wait_for(lambda: redis.Redis(port=port).ping(), 20, what="redis-server")
        return proc

    server = redis_server()
    s = Services(tmp_path, f"redis://127.0.0.1:{port}/0", f"sqlite:///{tmp_path / 'd.db'}")
    try:
        s.start()
        job = s.job()
        s.wait_some_done(job["id"])
        server.kill()  # everything queued and in flight is gone with it
        server.wait()
        server = redis_server()
        s.assert_every_image_once(job["id"])
    finally:
        s.stop()
        stop_process(server)


def test_postgresql_restarted_mid_job(tmp_path, shipped_model):
    """On a throw-away cluster of the test's own (initdb, pg_ctl, its own port), never
    the machine's shared server."""
    if not shutil.which("initdb") or not shutil.which("pg_ctl"):
        pytest.skip("no initdb/pg_ctl")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="digits-pg-"))
    if as_postgres:
        shutil.chown(data, "postgres")
    port = free_port()
    pg_ctl = [*as_postgres, "pg_ctl", "-D", str(data / "db"), "-w", "-l", str(data / "log"),
              "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1"]
    subprocess.run([*as_postgres, "initdb", "-D", str(data / "db"), "-U", "postgres",
                    "--auth=trust"], check=True, capture_output=True)
    subprocess.run([*pg_ctl, "start"], check=True, capture_output=True)
    s = None
    try:
        s = Services(tmp_path, "", f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres")
        with own_redis_db(range(8, 16)) as redis_url:
            s.env["DIGITS_REDIS_URL"] = redis_url
            s.start()
            job = s.job()
            s.wait_some_done(job["id"])
            subprocess.run([*pg_ctl, "-m", "fast", "restart"], check=True, capture_output=True)
            s.assert_every_image_once(job["id"])
    finally:
        if s is not None:
            s.stop()
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)
