"""Operations on the live stack (conftest.live_stack: gunicorn, real Celery workers,
Redis, SQLite; JSON logs and Celery events on): /metrics before and after a real job,
the request id from the client to the worker's log lines, the status data and
`digits status`, and Celery's task events (what Flower reads)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import uuid

import pytest

from shared.queues import CLASSIFY_CHUNK
from tests.conftest import ROOT, digits_argv, mnist_png_bytes, wait_for

pytestmark = pytest.mark.slow

CORRUPT_PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64  # passes the API's check; fails to decode


def scrape(stack) -> dict[str, float]:
    response = stack.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    out = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def moved(before: dict, after: dict, key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_counters_move_by_the_size_of_a_real_job(live_stack):
    digits = mnist_png_bytes(7000, 300)
    files = [("files", (name, data, "image/png")) for name, data, _ in digits]
    files += [("files", ("broken.png", CORRUPT_PNG, "image/png")),
              ("files", ("notes.txt", b"not an image", "text/plain"))]
    before = scrape(live_stack)
    created = live_stack.post("/api/v1/jobs", files=files)
    assert created.status_code == 202
    job = live_stack.wait_job(created.json()["id"])
    counts = job["counts"]
    assert counts["total"] == 302 and counts["failed"] == 2
    # Workers update their counters before the job closes; read again until they show.
    bulk = 'digits_worker_images_total{{outcome="{}",queue="bulk"}}'

    def settled():
        now = scrape(live_stack)
        total = sum(moved(before, now, bulk.format(o)) for o in ("done", "no_digit", "failed"))
        return now if total >= 301 else None

    after = wait_for(settled, 30, what="the worker counters to show the job")
    assert moved(before, after, bulk.format("failed")) == 1  # the corrupt PNG
    assert (moved(before, after, bulk.format("done")) + moved(before, after, bulk.format(
        "no_digit"))) == 300  # every good image, whatever its verdict
    assert moved(before, after, 'digits_worker_needs_review_total{queue="bulk"}') == (
        counts["needs_review"])
    assert moved(before, after, 'digits_api_images_received_total{result="queued"}') == 301
    assert moved(before, after, 'digits_api_images_received_total{result="rejected"}') == 1
    assert moved(before, after, "digits_api_image_bytes_received_total") == sum(
        len(d) for _, d, _ in digits) + len(CORRUPT_PNG) + len(b"not an image")
    assert moved(before, after, "digits_worker_batch_images_sum") == 300  # decoded ones
    assert moved(before, after, "digits_worker_chunk_duration_seconds_count") == 2  # 301 / 256
    key = 'digits_http_requests_total{method="POST",route="/api/v1/jobs",status="202"}'
    assert moved(before, after, key) == 1
    for stage in ("load", "decode", "model", "previews", "write"):
        assert moved(before, after, f'digits_worker_seconds_total{{queue="bulk",stage="{stage}"}}'
                     ) > 0, stage
    # Read when scraped, from Redis and the database:
    assert after['digits_workers_online{queue="bulk"}'] >= 1
    assert after['digits_workers_online{queue="interactive"}'] >= 1
    assert after['digits_worker_processes{queue="bulk"}'] == 2
    assert after['digits_jobs{status="succeeded"}'] >= 1
    assert after["digits_images_pending"] == 0 and after['digits_up{source="database"}'] == 1


def test_no_label_carries_an_id(live_stack):
    job_id = live_stack.post("/api/v1/jobs", files=[(
        "files", (n, d, "image/png")) for n, d, _ in mnist_png_bytes(7400, 2)]).json()["id"]
    live_stack.wait_job(job_id)
    live_stack.get(f"/api/v1/jobs/{job_id}/results")
    text = live_stack.get("/metrics").text
    labels = [(name, value) for name, value in re.findall(r'(\w+)="([^"]*)"', text)
              if name != "le"]  # histogram bucket bounds are numbers by design
    assert {name for name, _ in labels} == {"method", "route", "status", "result", "queue",
                                            "outcome", "stage", "source"}
    assert not [value for _, value in labels if re.search(r"[0-9a-f]{12}|\d{4,}", value)]
    assert job_id not in text and job_id[4:] not in text


def log_lines(stack) -> list[dict]:
    lines = []
    for line in stack.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_one_request_id_from_the_client_to_the_worker(live_stack):
    request_id = f"ops-{uuid.uuid4().hex[:12]}"
    files = [("files", (n, d, "image/png")) for n, d, _ in mnist_png_bytes(7500, 5)]
    created = live_stack.post("/api/v1/jobs", files=files, headers={"X-Request-ID": request_id})
    assert created.headers["X-Request-ID"] == request_id
    job_id = created.json()["id"]
    live_stack.wait_job(job_id)
    predicted = live_stack.post("/api/v1/predict", files={"image": files[0][1][:2]})
    predict_id = predicted.headers["X-Request-ID"]

    def ours():
        lines = log_lines(live_stack)
        api = [x for x in lines if x.get("request_id") == request_id
               and x["logger"] == "digits.access"]
        worker = [x for x in lines if x.get("request_id") == request_id
                  and x["logger"] == "worker.processing"]
        interactive = [x for x in lines if predict_id in x.get("message", "")
                       and x["logger"] == "worker.lane"]
        return (api, worker, interactive) if api and worker and interactive else None

    api, worker, interactive = wait_for(ours, 30, what="the log lines of both requests")
    assert api[0]["job_id"] == job_id and api[0]["status"] == 202
    assert api[0]["route"] == "/api/v1/jobs" and api[0]["duration_ms"] > 0
    assert worker[0]["job_id"] == job_id and worker[0]["pid"] != api[0]["pid"]
    assert "5 written" in worker[0]["message"]
    assert interactive[0]["message"].startswith("batch of ")
    assert interactive[0]["pid"] != api[0]["pid"]
    # Every log line of the stack's Python processes is JSON; only digits up's own
    # progress lines and Celery's shutdown notices are plain text.
    plain = [line for line in live_stack.log.read_text(errors="replace").splitlines()
             if line.strip() and not line.startswith("{")]
    assert all(line.startswith(("digits up:", "database at revision")) for line in plain), plain


def test_status_data_and_digits_status(live_stack):
    job_id = live_stack.post("/api/v1/jobs", files=[(
        "files", (n, d, "image/png")) for n, d, _ in mnist_png_bytes(7600, 40)]).json()["id"]
    live_stack.wait_job(job_id)
    status = live_stack.get("/api/v1/status").json()
    assert status["errors"] == {}
    assert status["queues"]["bulk"]["workers"] >= 1 and status["queues"]["bulk"]["processes"] == 2
    assert status["queues"]["interactive"]["workers"] >= 1
    assert status["pending"] == 0 and status["oldest_pending"] is None
    assert status["throughput"]["total"] >= 40 and len(status["throughput"]["points"]) == 60
    assert status["jobs"]["succeeded"] >= 1

    out = subprocess.run(digits_argv("status", "--server", live_stack.url), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert re.search(r"^  bulk +1 worker +2 processes +\d+ waiting$", text, re.M), text
    assert re.search(r"^  interactive +1 worker ", text, re.M), text
    assert "images   0 pending; none waiting" in text
    assert re.search(r"^  [▁▂▃▄▅▆▇█]{60}  now$", text, re.M), text
    as_json = subprocess.run(digits_argv("status", "--server", live_stack.url, "--json"),
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert json.loads(as_json.stdout)["object"] == "status"


def test_celery_events_reach_a_monitor_like_flower(live_stack):
    """With DIGITS_CELERY_EVENTS on, a real job's chunk shows up as task events, the
    stream Flower reads."""
    from shared.celery_app import make_celery
    from shared.settings import Settings

    app = make_celery(Settings(redis_url=live_stack.env["DIGITS_REDIS_URL"]))
    seen: list[dict] = []
    ready = threading.Event()
    with app.connection() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": seen.append})

        def listen():
            ready.set()
            # should_stop ends it when the test is over; the timeout if the test fails
            with contextlib.suppress(Exception):
                receiver.capture(limit=None, timeout=60, wakeup=True)

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        ready.wait(10)

        def listening():  # worker heartbeats arrive every few seconds once subscribed
            return any(e["type"] == "worker-heartbeat" for e in seen)

        wait_for(listening, 30, what="worker heartbeats")
        job_id = live_stack.post("/api/v1/jobs", files=[(
            "files", (n, d, "image/png")) for n, d, _ in mnist_png_bytes(7700, 3)]).json()["id"]
        live_stack.wait_job(job_id)

        def chunk_events():
            types = {e["type"] for e in seen if e.get("name") == CLASSIFY_CHUNK}
            uuids = {e["uuid"] for e in seen if e.get("name") == CLASSIFY_CHUNK}
            done = {e["uuid"] for e in seen if e["type"] == "task-succeeded"}
            return {"task-sent", "task-received"} <= types and uuids & done

        wait_for(chunk_events, 30, what="the chunk's sent, received and succeeded events")
        receiver.should_stop = True
    thread.join(70)


def test_a_worker_serves_its_own_metrics_and_withdraws_when_it_stops(live_stack, tmp_path):
    """DIGITS_METRICS_PORT: a worker on a host without the API serves its own metrics.
    When it stops, its announcement and its metrics folder go."""
    import os

    import requests

    from cli.stack import free_port
    from tests.conftest import stop_process

    port = free_port()
    env = {**live_stack.env, "DIGITS_METRICS_PORT": str(port),
           "DIGITS_STATE_DIR": str(tmp_path / "other-host")}
    worker = subprocess.Popen(digits_argv("worker", "--queues", "bulk", "--concurrency", "1"),
                              cwd=ROOT, env=env, stdout=(tmp_path / "w.log").open("wb"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def exported():
            return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text

        text = wait_for(exported, 60, what="the worker's metrics port")
        assert "digits_worker_batch_images_count" in text  # its own processes' families
        assert "digits_http_requests_total" not in text  # not the API's
        wait_for(lambda: live_stack.get("/api/v1/status").json()["queues"]["bulk"]["workers"]
                 == 2, 30, what="the second bulk worker to announce itself")
        folders = list((tmp_path / "other-host" / "metrics").iterdir())
        assert [f.name for f in folders] == [f"worker-{worker.pid}"]
    finally:
        stop_process(worker)
    assert live_stack.get("/api/v1/status").json()["queues"]["bulk"]["workers"] == 1
    assert list((tmp_path / "other-host" / "metrics").iterdir()) == []
    assert os.path.isdir(tmp_path / "other-host" / "metrics")
