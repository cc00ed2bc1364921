"""Shared fixtures: the MNIST data, the shipped model, a real Redis db and PostgreSQL
database of the tests' own, and a live local stack (`digits up`: gunicorn API, real
Celery worker processes, Redis, SQLite or PostgreSQL) for the end-to-end tests.

Every process a fixture starts is stopped at teardown; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from cli.stack import free_port

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("DIGITS_DATA_DIR") or ROOT.parent / "shared" / "data" / "mnist")
MODEL = Path(os.environ.get("DIGITS_TEST_MODEL") or ROOT / "models" / "digits-cnn.safetensors")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

os.environ.setdefault("DIGITS_DATA_DIR", str(DATA_DIR))


def wait_for(condition, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the thing may not be up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({last_error})")


@pytest.fixture(autouse=True)
def _log_ids_do_not_leak():
    """A service function called outside a request (a test's set-up) names its job in the
    log context, which only a request's teardown clears: each test starts without ids
    and leaves none behind for the next."""
    from shared import logs

    tokens = [logs.REQUEST_ID.set(None), logs.JOB_ID.set(None)]
    yield
    for token in reversed(tokens):
        token.var.reset(token)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist_test() -> tuple:
    """The 10,000 MNIST test digits (images, labels), loaded once; skips without MNIST."""
    from shared.mnist import load_split

    if not DATA_DIR.is_dir():
        pytest.skip(f"MNIST not found in {DATA_DIR} (set DIGITS_DATA_DIR)")
    test = load_split(DATA_DIR, "test")
    return test.images, test.labels


def mnist_png_bytes(start: int, count: int) -> list[tuple[str, bytes, int]]:
    """(filename, PNG bytes, label) for MNIST test digits, drawn dark on white like a scan."""
    from PIL import Image

    from shared.mnist import load_split

    test = load_split(DATA_DIR, "test")
    out = []
    for i in range(start, start + count):
        buffer = io.BytesIO()
        Image.fromarray(255 - test.images[i]).save(buffer, format="PNG")
        out.append((f"digit_{i:05d}_{test.labels[i]}.png", buffer.getvalue(), int(test.labels[i])))
    return out


def tiff_scan(digit_png: bytes, width: int, height: int, sixteen_bit: bool = False) -> bytes:
    """A digit's PNG (dark on white) pasted onto a larger page, as a TIFF: a format
    browsers cannot draw, 8-bit or 16-bit."""
    import numpy as np
    from PIL import Image

    side = min(width, height)
    page = Image.new("L", (width, height), 255)
    page.paste(Image.open(io.BytesIO(digit_png)).resize((side, side)),
               ((width - side) // 2, (height - side) // 2))
    if sixteen_bit:
        page = Image.fromarray(np.asarray(page).astype(np.uint16) * 257)
    buffer = io.BytesIO()
    page.save(buffer, format="TIFF")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    assert MODEL.is_file(), f"the shipped model {MODEL} is missing"
    return MODEL


# --- Redis ---------------------------------------------------------------------------

def _ensure_redis() -> None:
    client = redis.Redis(REDIS_HOST, REDIS_PORT, socket_connect_timeout=1)
    try:
        client.ping()
        return
    except redis.ConnectionError:
        pass
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1",
                    "--port", "6379", "--save", "", "--appendonly", "no",
                    "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"], check=True)
    wait_for(client.ping, 10, what="redis-server to start")


_claimed_dbs: set[int] = set()


@contextlib.contextmanager
def own_redis_db(numbers: Iterable[int]):
    """The first empty, unclaimed Redis database among `numbers`, as a URL; emptied again
    afterwards. Only numbers 8-15 are used, so nothing another program keeps is touched."""
    _ensure_redis()
    for number in numbers:
        client = redis.Redis(REDIS_HOST, REDIS_PORT, db=number)
        if number not in _claimed_dbs and client.dbsize() == 0:
            _claimed_dbs.add(number)
            try:
                yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}"
            finally:
                client.flushdb()  # only what this test put there
                _claimed_dbs.discard(number)
            return
    pytest.fail("no empty Redis database among 8-15")


@pytest.fixture
def redis_db():
    """An empty Redis database number that this test owns."""
    with own_redis_db(range(8, 16)) as url:
        yield url


# --- PostgreSQL ----------------------------------------------------------------------

def _ensure_postgres() -> None:
    if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"]).returncode == 0:
        return
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                   check=True)
    wait_for(lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0,
             20, what="PostgreSQL to start")


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    import psycopg

    _ensure_postgres()
    name = f"digits_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'digits.db'}"


@pytest.fixture
def use_database(monkeypatch):
    """Point this process's settings and engine at a database URL, with migrations run."""
    from shared import db, migrate
    from shared.settings import get_settings

    def use(url: str, **env: str) -> None:
        monkeypatch.setenv("DIGITS_DATABASE_URL", url)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        db.reset()
        migrate.upgrade()

    yield use
    db.reset()
    get_settings.cache_clear()


# --- processes -----------------------------------------------------------------------

def digits_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def stop_process(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM, wait, then SIGKILL the whole process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything the process left in its group


@dataclass
class LiveStack:
    url: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.url + path, timeout=60, **kw)

    def key(self, account: str, admin: bool = False) -> dict[str, str]:
        """A new API key of `account`, made as an operator makes one (`digits keys
        create`), as the header that sends it."""
        out = subprocess.run(digits_argv("keys", "create", account, *(["--admin"] * admin)),
                             cwd=ROOT, env=self.env, capture_output=True, text=True,
                             timeout=60, check=True)
        return {"Authorization": f"Bearer {out.stdout.strip()}"}

    def wait_job(self, job_id: str, timeout: float = 120) -> dict:
        def final():
            job = self.get(f"/api/v1/jobs/{job_id}").json()
            return job if job["status"] in ("succeeded", "failed", "cancelled") else None

        return wait_for(final, timeout, interval=0.2, what=f"job {job_id} to finish")


def start_stack(tmp: Path, redis_url: str, database_url: str, workers: int = 2,
                **extra_env: str) -> LiveStack:
    port = free_port()
    env = {**os.environ, "DIGITS_REDIS_URL": redis_url, "DIGITS_DATABASE_URL": database_url,
           "DIGITS_STATE_DIR": str(tmp / "state"), "DIGITS_MODEL_PATH": str(MODEL),
           "PYTHONUNBUFFERED": "1", **extra_env}
    log = tmp / "stack.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(digits_argv("up", "--port", str(port), "--workers", str(workers)),
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    stack = LiveStack(url=f"http://127.0.0.1:{port}", env=env, log=log, proc=proc)

    def ready():
        if proc.poll() is not None:
            raise RuntimeError(f"digits up exited: {log.read_text()[-3000:]}")
        return requests.get(stack.url + "/readyz", timeout=5).status_code == 200

    try:
        wait_for(ready, 120, interval=0.3, what="the stack to become ready")
    except BaseException:
        stop_process(proc)
        raise
    return stack


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory, shipped_model):
    """`digits up` with 2 bulk workers on SQLite and the tests' own Redis database; with
    JSON logs and Celery events on, which tests/test_operations.py reads (the stack in
    tests/test_stack.py runs on the defaults: text logs, no events)."""
    tmp = tmp_path_factory.mktemp("stack")
    # From the top down, so that per-test databases (from the bottom up) rarely collide.
    with own_redis_db(range(15, 7, -1)) as redis_url:
        stack = start_stack(tmp, redis_url, f"sqlite:///{tmp / 'digits.db'}",
                            DIGITS_LOG_FORMAT="json", DIGITS_CELERY_EVENTS="true")
        try:
            yield stack
        finally:
            stop_process(stack.proc)
            shutil.rmtree(tmp / "state", ignore_errors=True)


@pytest.fixture(scope="session")
def locked_stack(tmp_path_factory, shipped_model):
    """`digits up` with DIGITS_AUTH=required (one bulk worker): every API call needs a key
    (`locked_stack.key(account)`) or a signed-in page."""
    tmp = tmp_path_factory.mktemp("locked")
    with own_redis_db(range(8, 16)) as redis_url:
        stack = start_stack(tmp, redis_url, f"sqlite:///{tmp / 'digits.db'}", workers=1,
                            DIGITS_AUTH="required")
        try:
            yield stack
        finally:
            stop_process(stack.proc)
            shutil.rmtree(tmp / "state", ignore_errors=True)
