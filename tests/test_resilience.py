"""Nothing lost, nothing twice: idempotent adds to an open job, the client's retries and
a `digits submit` that outlives the API processes it talks to."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from api import create_app
from tests.conftest import (
    mnist_png_bytes,
    own_redis_db,
    start_stack,
    stop_process,
    wait_for,
)
from tests.test_client import DIGITS, write_digits


@pytest.fixture
def client(use_database, sqlite_url, redis_db):
    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db)
    return create_app({"TESTING": True}).test_client()


def _files(start: int, count: int) -> dict:
    return {"files": [(io.BytesIO(data), name) for name, data, _ in mnist_png_bytes(start, count)]}


def test_an_add_retried_with_its_key_lands_once(client):
    job = client.post("/api/v1/jobs", data={"open": "true", **_files(0, 2)},
                      content_type="multipart/form-data").json
    add = f"/api/v1/jobs/{job['id']}/images"
    first = client.post(add, data=_files(2, 3), headers={"Idempotency-Key": "batch-1"},
                        content_type="multipart/form-data")
    assert first.status_code == 202 and first.json["added"] == 3
    assert "Idempotent-Replayed" not in first.headers
    again = client.post(add, data=_files(2, 3), headers={"Idempotency-Key": "batch-1"},
                        content_type="multipart/form-data")
    assert again.status_code == 202 and again.json["added"] == 3
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["job"]["counts"]["total"] == 5
    # Another key is another batch; a key is the job's own, so another job may reuse it.
    other = client.post(add, data=_files(5, 1), headers={"Idempotency-Key": "batch-2"},
                        content_type="multipart/form-data")
    assert other.json["job"]["counts"]["total"] == 6
    # Sealed, a replay still answers as the first add did; a new add is refused.
    assert client.post(f"/api/v1/jobs/{job['id']}/seal").status_code == 200
    replay = client.post(add, data=_files(2, 3), headers={"Idempotency-Key": "batch-1"},
                         content_type="multipart/form-data")
    assert replay.status_code == 202 and replay.json["job"]["counts"]["total"] == 6
    late = client.post(add, data=_files(6, 1), headers={"Idempotency-Key": "batch-3"},
                       content_type="multipart/form-data")
    assert late.status_code == 409 and late.json["error"]["code"] == "job_sealed"
    # Somebody else's job stays invisible, key or not.
    from shared import accounts, db
    from shared.settings import get_settings

    with db.session() as s:  # another account's key (X-Digits-Owner is no longer read)
        mallory, _ = accounts.create_key(s, accounts.server_secret(get_settings()), "mallory")
    stranger = client.post(add, data=_files(2, 3),
                           headers={"Idempotency-Key": "batch-1",
                                    "Authorization": f"Bearer {mallory}"},
                           content_type="multipart/form-data")
    assert stranger.status_code == 404


# --- digits submit against real processes ---------------------------------------------


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _api_workers(stack) -> list[int]:
    """The API's gunicorn worker processes: the children of gunicorn (`digits api`, after
    its exec) under `digits up`."""
    masters = [p for p in _children(stack.proc.pid) if "gunicorn" in _cmdline(p)]
    return [w for m in masters for w in _children(m)]


@pytest.fixture
def own_stack(tmp_path, shipped_model):
    with own_redis_db(range(8, 16)) as redis_url:
        stack = start_stack(tmp_path, redis_url, f"sqlite:///{tmp_path / 'digits.db'}",
                            workers=1)
        try:
            yield stack
        finally:
            stop_process(stack.proc)


def _submit(stack, folder: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DIGITS_CLIENT_RETRY_MINUTES": "2"}
    env.pop("DIGITS_SERVER", None)
    # Ctrl-C as a terminal sends it: a suite started in the background (`make test &`)
    # hands its children SIGINT ignored, and Python then installs no KeyboardInterrupt.
    return subprocess.Popen([str(DIGITS), "submit", str(folder), "--server", stack.url,
                             "--out", str(out), *extra], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _exactly_once(stack, out: Path, expected: dict[str, int]) -> None:
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["path"] for r in rows) == sorted(expected)
    jobs = stack.get("/api/v1/jobs").json()["data"]
    assert len(jobs) == 1, "one submission, one job"
    counts = jobs[0]["counts"]
    assert counts["total"] == len(expected) and counts["pending"] == 0
    assert jobs[0]["status"] == "succeeded"


@pytest.mark.slow
def test_submit_outlives_its_api_processes_killed_mid_upload(own_stack, tmp_path):
    """Every API worker process SIGKILLed, again and again, while `digits submit` uploads:
    the client retries (keyed adds), gunicorn starts new workers, and every image has
    exactly one result in one job."""
    expected = write_digits(tmp_path / "scans", 0, 3000)
    out = tmp_path / "out.csv"
    proc = _submit(own_stack, tmp_path / "scans", out)
    kills = 0
    try:
        def uploading():
            jobs = own_stack.get("/api/v1/jobs").json()["data"]
            return jobs and jobs[0]["counts"]["total"] > 0

        wait_for(uploading, 60, interval=0.05, what="the upload to start")
        while kills < 4 and proc.poll() is None:
            workers = _api_workers(own_stack)
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            kills += bool(workers)
            wait_for(lambda: _api_workers(own_stack) and own_stack.get("/healthz").ok, 60,
                     what="gunicorn to start new workers")
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert kills >= 1
    assert proc.returncode == 0, stderr
    assert "retrying" in stderr and "Traceback" not in stderr
    _exactly_once(own_stack, out, expected)


@pytest.mark.slow
def test_an_interrupted_submit_carries_on_without_duplicates(own_stack, tmp_path):
    """Ctrl-C after the first batches: the job is left open, the state file beside the CSV
    remembers it; the same command again finishes it with every image once."""
    expected = write_digits(tmp_path / "scans", 0, 2500)
    out = tmp_path / "out.csv"
    proc = _submit(own_stack, tmp_path / "scans", out)
    try:
        def some_sent():
            jobs = own_stack.get("/api/v1/jobs").json()["data"]
            return jobs and jobs[0]["counts"]["total"] >= 500

        wait_for(some_sent, 60, interval=0.02, what="a first batch")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted: job job_" in stderr and "run the same command again" in stderr
    assert (tmp_path / "out.csv.submit.json").exists()
    again = _submit(own_stack, tmp_path / "scans", out)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert "resuming job" in stderr
    assert not (tmp_path / "out.csv.submit.json").exists()
    _exactly_once(own_stack, out, expected)


def test_a_server_that_keeps_failing_is_one_line_and_the_job_stays_open(tmp_path):
    """A stand-in server that answers every add with 503 and Retry-After: the client
    waits as asked, gives up at its budget with one line, and leaves the job resumable."""
    import http.server
    import threading

    calls = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            calls.append((self.path, self.headers.get("Idempotency-Key")))
            if self.path == "/api/v1/jobs":
                body = b'{"id": "job_x", "counts": {"total": 0}}'
                self.send_response(202)
            else:
                body = b'{"error": {"code": "busy", "message": "try later"}}'
                self.send_response(503)
                self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "scans").mkdir()
        (tmp_path / "scans" / "a.png").write_bytes(mnist_png_bytes(0, 1)[0][1])
        env = {**os.environ, "DIGITS_CLIENT_RETRY_MINUTES": "0.05"}  # 3 s
        result = subprocess.run([str(DIGITS), "submit", str(tmp_path / "scans"), "--server",
                                 f"http://127.0.0.1:{server.server_address[1]}", "--out",
                                 str(tmp_path / "out.csv")], capture_output=True, text=True,
                                env=env, timeout=60)
    finally:
        server.shutdown()
    assert result.returncode not in (0, 1)
    last = result.stderr.strip().splitlines()[-1]
    assert "gave up on POST /api/v1/jobs/job_x/images after 0.05 min of retries" in last
    assert "503: try later" in last and "--resume job_x" in last
    adds = [key for path, key in calls if path.endswith("/images")]
    assert 2 <= len(adds) <= 4, "Retry-After: 1 s, within a 3 s budget"
    assert len(set(adds)) == 1, "every try of one batch carries its one key"
    state = json.loads((tmp_path / "out.csv.submit.json").read_text())
    assert state["job_id"] == "job_x" and not state["sealed"]


# --- poison images ------------------------------------------------------------------------


def _pending_job(n: int, names: dict[int, str] | None = None) -> tuple[str, list[int]]:
    """A sealed job of `n` MNIST images, stored but never queued (no worker reads it)."""
    from api.uploads import check
    from shared import db
    from shared.models import Item, Job

    uploads = [check((names or {}).get(i, name), data, 1 << 20)
               for i, (name, data, _) in enumerate(mnist_png_bytes(700, n))]
    with db.session() as s:
        job = Job(owner="tester", open=False, total=0)
        s.add(job)
        s.flush()
        s.add_all(Item(job_id=job.id, filename=u.filename, content=u.content) for u in uploads)
        s.flush()
        job_id = job.id
    with db.session() as s:
        ids = sorted(i.id for i in s.query(Item).filter_by(job_id=job_id))
    return job_id, ids


def test_a_chunk_back_from_a_dead_worker_splits_and_an_image_alone_fails_at_two(
        use_database, sqlite_url):
    from shared import db
    from shared.models import Item, Job
    from worker.processing import classify_items

    use_database(sqlite_url)
    job_id, ids = _pending_job(20)
    sent = []
    # A delivery is counted, with the message's id, before any image is read.
    with db.session() as s:
        s.query(Item).filter(Item.id.in_(ids)).update({"last_task": "t1", "deliveries": 1})
    # The same message again: its worker died. Split in parts; nothing classified here.
    assert classify_items(ids, task_id="t1", requeue=lambda i, n: sent.append((i, n))) == 0
    assert sent == [(ids, 3)]
    with db.session() as s:
        items = s.query(Item).filter(Item.id.in_(ids)).all()
        assert {(i.deliveries, i.crashes, i.status) for i in items} == {(2, 1, "pending")}
        # Alone, in its own message, it dies again: it fails alone, and says why.
        s.query(Item).filter_by(id=ids[0]).update({"last_task": "t9"})
    assert classify_items([ids[0]], task_id="t9") == 1
    with db.session() as s:
        item = s.get(Item, ids[0])
        assert item.status == "failed" and item.crashes == 2 and item.deliveries == 3
        assert item.error.startswith("worker_crashed: a worker process died 2 times")
        assert s.get(Job, job_id).status == "running"


@pytest.mark.slow
def test_a_poison_image_fails_alone_and_the_rest_of_its_job_finishes(tmp_path, shipped_model):
    """A failpoint makes the worker process SIGKILL itself on one image (as a segfault in
    a decoder would): its chunk comes back, splits, the image fails alone with
    worker_crashed, and every other image has its one result."""
    with own_redis_db(range(8, 16)) as redis_url:
        stack = start_stack(tmp_path, redis_url, f"sqlite:///{tmp_path / 'digits.db'}",
                            workers=1, DIGITS_FAILPOINTS="worker_crash=poison",
                            DIGITS_CHUNK_SIZE="40")
        try:
            digits = mnist_png_bytes(0, 80)
            files = [("files", (name, data, "image/png")) for name, data, _ in digits]
            files.insert(37, ("files", ("poison.png", digits[5][1], "image/png")))
            job = stack.post("/api/v1/jobs", files=files).json()
            job = stack.wait_job(job["id"], timeout=300)
            items = stack.get(f"/api/v1/jobs/{job['id']}/results?limit=1000").json()["data"]
        finally:
            stop_process(stack.proc)
    assert job["status"] == "succeeded" and job["counts"]["total"] == 81
    assert len(items) == 81 and len({i["id"] for i in items}) == 81
    poison = [i for i in items if i["filename"] == "poison.png"]
    assert poison[0]["status"] == "failed"
    assert poison[0]["error"].startswith("worker_crashed: ")
    assert all(i["status"] in ("done", "no_digit") for i in items if i is not poison[0])


# --- no silent drops ----------------------------------------------------------------------


def test_lost_and_late_work_is_found_behind_a_backlog_and_idle_open_jobs_expire(
        use_database, sqlite_url, redis_db):
    from datetime import UTC, datetime, timedelta

    import redis as redis_lib

    from shared import db
    from shared.celery_app import make_celery
    from shared.models import Item, Job
    from shared.queues import BULK_QUEUE
    from shared.reconcile import reconcile
    from shared.settings import get_settings

    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db)
    celery = make_celery(get_settings())
    job_id, ids = _pending_job(4)
    now = datetime.now(UTC)
    with db.session() as s:
        rows = {i.id: i for i in s.query(Item).filter(Item.id.in_(ids))}
        rows[ids[0]].leased_until = now - timedelta(seconds=1)  # delivered, lease run out
        rows[ids[1]].leased_until = now + timedelta(minutes=5)  # a worker has it now
        rows[ids[2]].queued_at = now - timedelta(hours=2)  # queued long ago, never delivered
        rows[ids[3]].queued_at = now  # just queued: behind the backlog, in its turn
    queue = redis_lib.Redis.from_url(redis_db)
    queue.lpush(BULK_QUEUE, b"someone else's chunk")  # a backlog
    try:
        assert reconcile(celery, older_than_s=120, chunk_size=256) == 2
        with db.session() as s:
            rows = {i.id: i for i in s.query(Item).filter(Item.id.in_(ids))}
            assert rows[ids[0]].leased_until is None
            assert rows[ids[0]].queued_at.replace(tzinfo=UTC) >= now
        assert queue.llen(BULK_QUEUE) == 2
    finally:
        queue.delete(BULK_QUEUE)

    # An open job that nobody feeds or seals is sealed after the setting, and says so.
    with db.session() as s:
        job = Job(owner="local", open=True, total=0,
                  fed_at=now - timedelta(minutes=get_settings().open_job_expiry_minutes + 1))
        s.add(job)
        s.flush()
        idle = job.id
    reconcile(celery, older_than_s=120, chunk_size=256)
    with db.session() as s:
        job = s.get(Job, idle)
        assert not job.open and job.expired_at is not None and job.status == "succeeded"
        assert s.get(Job, job_id).status == "queued"  # sealed jobs are not touched


def test_an_expired_job_says_so(client):
    from datetime import UTC, datetime

    from shared import db
    from shared.models import Job

    job = client.post("/api/v1/jobs", data={"open": "true", **_files(0, 1)},
                      content_type="multipart/form-data").json
    with db.session() as s:
        s.get(Job, job["id"]).expired_at = datetime.now(UTC)
        s.get(Job, job["id"]).open = False
    late = client.post(f"/api/v1/jobs/{job['id']}/images", data=_files(1, 1),
                       content_type="multipart/form-data")
    assert late.status_code == 409 and late.json["error"]["code"] == "job_expired"
    assert "expired: nothing was added" in late.json["error"]["message"]
    assert client.get(f"/api/v1/jobs/{job['id']}").json["expired_at"]


@pytest.mark.slow
def test_a_chunk_that_keeps_raising_is_retried_then_fails_with_a_clear_error(
        tmp_path, shipped_model):
    with own_redis_db(range(8, 16)) as redis_url:
        stack = start_stack(tmp_path, redis_url, f"sqlite:///{tmp_path / 'digits.db'}",
                            workers=1, DIGITS_FAILPOINTS="worker_error=doomed",
                            DIGITS_TASK_MAX_RETRIES="2", DIGITS_CHUNK_SIZE="10")
        try:
            digits = mnist_png_bytes(0, 20)
            files = [("files", (name, data, "image/png")) for name, data, _ in digits]
            files[15] = ("files", ("doomed.png", digits[15][1], "image/png"))
            job = stack.post("/api/v1/jobs", files=files).json()
            job = stack.wait_job(job["id"], timeout=120)
            items = stack.get(f"/api/v1/jobs/{job['id']}/results?limit=100").json()["data"]
        finally:
            stop_process(stack.proc)
    assert job["status"] == "succeeded" and job["counts"]["total"] == 20
    failed = [i for i in items if i["status"] == "failed"]
    assert len(failed) == 10 and "doomed.png" in {i["filename"] for i in failed}
    assert {i["error"] for i in failed} == {
        "task_error: gave up after 3 tries: InjectedError: injected by DIGITS_FAILPOINTS "
        "worker_error"}
    assert all(i["status"] in ("done", "no_digit") for i in items[:10])


# --- bounded memory -----------------------------------------------------------------------


def test_a_worker_holds_at_most_max_chunk_bytes_of_images_at_once(
        use_database, sqlite_url, shipped_model, monkeypatch):
    from shared import db
    from shared.models import Item
    from worker import processing

    use_database(sqlite_url, DIGITS_MAX_CHUNK_BYTES="2048",
                 DIGITS_MODEL_PATH=str(shipped_model))
    job_id, ids = _pending_job(20)
    with db.session() as s:
        sizes = {i.id: len(i.content) for i in s.query(Item).filter(Item.id.in_(ids))}
    held = []
    real = processing._classify_rows

    def watch(rows, contents, *args):
        held.append(sum(len(c) for c in contents))
        return real(rows, contents, *args)

    monkeypatch.setattr(processing, "_classify_rows", watch)
    assert processing.classify_items(ids, task_id="t1") == 20
    assert len(held) > 1 and sum(held) == sum(sizes.values())
    assert max(held) <= max(2048, max(sizes.values()))
    with db.session() as s:
        assert {i.status for i in s.query(Item).filter_by(job_id=job_id)} <= {"done", "no_digit"}
