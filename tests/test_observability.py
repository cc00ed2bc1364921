"""Metrics, logs and the status data, without a worker: the API in process (Flask's
test client) against the tests' own SQLite file and Redis database, the log
formatters, the metrics folders and the throughput buckets. tests/test_operations.py
runs the same against the live stack with real workers."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import redis

from api import create_app
from shared import logs, metricsdir, overview
from tests.conftest import mnist_png_bytes


@pytest.fixture
def client(use_database, sqlite_url, redis_db):
    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db)
    return create_app({"TESTING": True}).test_client()


def record(message: str, *args, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("digits.test", logging.INFO, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    logs.ContextFilter().filter(rec)
    return rec


# --- logs ----------------------------------------------------------------------------


def test_json_lines_carry_the_ids_in_scope_and_the_extra_fields():
    with logs.scope(request_id="req-1", job_id="job_abc"):
        line = logs.JsonFormatter().format(record("chunk of %d items", 3, stage="write"))
    body = json.loads(line)
    assert body["message"] == "chunk of 3 items" and body["level"] == "info"
    assert body["request_id"] == "req-1" and body["job_id"] == "job_abc"
    assert body["stage"] == "write" and body["logger"] == "digits.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["time"])
    # Out of scope again: no ids.
    assert "request_id" not in json.loads(logs.JsonFormatter().format(record("later")))


def test_text_lines_end_with_the_ids():
    with logs.scope(request_id="req-2"):
        line = logs.TextFormatter().format(record("hello"))
    assert line.endswith("digits.test: hello request_id=req-2")


def test_secrets_never_reach_a_line():
    logs.add_secret("s3cret-scrape-token")
    message = ("connecting to postgresql+psycopg://digits:hunter2@db:5432/digits and "
               "redis://:pa55word@queue:6379/0 with Authorization: Bearer abcdef0123456789 "
               "and s3cret-scrape-token")
    for formatter in (logs.JsonFormatter(), logs.TextFormatter()):
        line = formatter.format(record("%s", message))
        for secret in ("hunter2", "pa55word", "abcdef0123456789", "s3cret-scrape-token"):
            assert secret not in line, (formatter, line)
        assert "postgresql+psycopg://digits:***@db:5432/digits" in line
        assert "redis://:***@queue:6379/0" in line


def test_request_ids_from_clients_are_kept_only_when_plain():
    assert logs.request_id_from("abc-123_x.y:z") == "abc-123_x.y:z"
    for bad in (None, "", "a" * 129, "line\nbreak", "spaces here", '{"json": 1}'):
        made = logs.request_id_from(bad)
        assert re.fullmatch(r"[0-9a-f]{32}", made), bad


# --- the API in process --------------------------------------------------------------


def test_the_request_id_comes_back_and_a_made_one_is_new_each_time(client):
    response = client.get("/healthz", headers={"X-Request-ID": "from-the-client-1"})
    assert response.headers["X-Request-ID"] == "from-the-client-1"
    made = {client.get("/healthz").headers["X-Request-ID"] for _ in range(3)}
    assert len(made) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", m) for m in made)
    junk = client.get("/healthz", headers={"X-Request-ID": "x" * 500})
    assert re.fullmatch(r"[0-9a-f]{32}", junk.headers["X-Request-ID"])
    assert logs.REQUEST_ID.get() is None and logs.JOB_ID.get() is None  # nothing leaks


def test_access_lines_name_the_request_and_the_job(client, caplog):
    name, data, _ = mnist_png_bytes(0, 1)[0]
    with caplog.at_level(logging.INFO, logger="digits.access"):
        job = client.post("/api/v1/jobs", data={"files": (io.BytesIO(data), name)},
                          content_type="multipart/form-data",
                          headers={"X-Request-ID": "create-1"}).json
        client.get(f"/api/v1/jobs/{job['id']}", headers={"X-Request-ID": "poll-1"})
    lines = {r.request_id: r for r in caplog.records if r.name == "digits.access"}
    assert lines["create-1"].job_id == job["id"] and lines["create-1"].status == 202
    assert lines["create-1"].route == "/api/v1/jobs"
    assert lines["poll-1"].job_id == job["id"] and lines["poll-1"].route == (
        "/api/v1/jobs/<job_id>")


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_metrics_label_routes_by_template_never_by_id(client):
    for job_id in ("job_" + "1" * 32, "job_" + "2" * 32):
        client.get(f"/api/v1/jobs/{job_id}")
    client.get("/no/such/page/12345")
    text = client.get("/metrics").get_data(as_text=True)
    got = samples(text)
    key = 'digits_http_requests_total{method="GET",route="/api/v1/jobs/<job_id>",status="404"}'
    assert got[key] >= 2
    assert 'route="(unmatched)"' in text
    # Ids would leak through labels: look at every series' name and labels, not at the
    # values (a process start time such as 1796111104.77 holds "1111" by chance).
    labels = "\n".join(line.rsplit(" ", 1)[0] for line in text.splitlines()
                       if line and not line.startswith("#"))
    assert "1111" not in labels and "2222" not in labels and "12345" not in labels
    # Read from Redis and the database when scraped:
    assert got['digits_up{source="redis"}'] == 1 and got['digits_up{source="database"}'] == 1
    assert got['digits_workers_online{queue="bulk"}'] == 0  # no worker in this test


def test_the_scrape_token_guards_metrics(use_database, sqlite_url, redis_db, monkeypatch):
    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db, DIGITS_METRICS_TOKEN="tok-123456")
    app = create_app({"TESTING": True}).test_client()
    missing = app.get("/metrics")
    assert missing.status_code == 401 and missing.json["error"]["code"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert app.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = app.get("/metrics", headers={"Authorization": "Bearer tok-123456"})
    assert ok.status_code == 200 and ok.mimetype == "text/plain"
    assert app.get("/api/v1/status").status_code == 200  # open until API keys exist


def test_metrics_can_be_turned_off(use_database, sqlite_url, redis_db):
    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db, DIGITS_METRICS="false")
    response = create_app({"TESTING": True}).test_client().get("/metrics")
    assert response.status_code == 404 and response.json["error"]["code"] == "metrics_off"


def test_status_says_which_part_it_could_not_read(use_database, sqlite_url):
    use_database(sqlite_url, DIGITS_REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens
    body = create_app({"TESTING": True}).test_client().get("/api/v1/status").json
    assert body["queues"] is None and "redis" in body["errors"]
    assert body["pending"] == 0 and body["jobs"]["running"] == 0  # the database still answers


# --- the pieces ----------------------------------------------------------------------


def test_workers_announce_themselves_and_withdraw(redis_db):
    client = redis.Redis.from_url(redis_db)
    overview.announce(client, "bulk-1@host", {"queues": ["bulk"], "concurrency": 2})
    overview.announce(client, "both-2@host", {"queues": ["bulk", "interactive"],
                                              "concurrency": 1})
    assert 0 < client.ttl(overview.HEARTBEAT_PREFIX + "bulk-1@host") <= overview.HEARTBEAT_TTL_S
    by_queue = overview.workers_by_queue(overview.workers(client))
    assert by_queue["bulk"] == {"workers": 2, "processes": 3,
                                "nodes": ["both-2@host", "bulk-1@host"]}
    assert by_queue["interactive"]["workers"] == 1
    overview.withdraw(client, "bulk-1@host")
    assert [w["hostname"] for w in overview.workers(client)] == ["both-2@host"]


def test_throughput_buckets_come_from_finish_times(use_database, sqlite_url):
    from sqlalchemy import insert

    from shared import db
    from shared.models import Item, Job

    use_database(sqlite_url)
    now = datetime(2026, 12, 1, 12, 0, 7, tzinfo=UTC)
    rows = [(now - timedelta(seconds=3), "done", 256), (now - timedelta(seconds=25), "failed", 5),
            (now - timedelta(seconds=25), "cancelled", 50),  # cancelled: not work done
            (now - timedelta(seconds=45), "no_digit", 30), (now - timedelta(minutes=20), "done", 9)]
    with db.session() as s:
        s.add(Job(id="job_t", owner="x", total=0))
        s.flush()
        s.execute(insert(Item), [{"job_id": "job_t", "filename": "f", "content": b"",
                                  "status": status, "finished_at": at}
                                 for at, status, n in rows for _ in range(n)])
    with db.session() as s:
        t = overview.throughput(s, window_s=120, bucket_s=10, now=now)
    assert len(t["points"]) == 12 and t["total"] == 256 + 5 + 30
    by_start = {p["start"]: p["images"] for p in t["points"] if p["images"]}
    assert by_start == {"2026-12-01T12:00:00+00:00": 256, "2026-12-01T11:59:40+00:00": 5,
                        "2026-12-01T11:59:20+00:00": 30}
    assert t["points"][-1]["start"] == "2026-12-01T12:00:00+00:00"  # the bucket filling now
    assert t["last_minute_per_s"] == round((256 + 5 + 30) / 60, 2)  # the last 60 s


def test_each_service_takes_a_fresh_folder_and_dead_ones_go(tmp_path, monkeypatch):
    from shared.settings import Settings

    settings = Settings(metrics_dir=tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"worker-{dead.pid}").mkdir()
    (tmp_path / f"worker-{dead.pid}" / "counter_1.db").write_bytes(b"old")
    alive = tmp_path / f"api-{os.getppid()}"  # a process that is running: kept
    alive.mkdir()
    stale_self = tmp_path / "worker-4242"
    monkeypatch.delenv(metricsdir.ENV, raising=False)
    own = metricsdir.prepare("worker", settings, pid=4242)
    try:
        assert own == stale_self and list(own.iterdir()) == []
        assert os.environ[metricsdir.ENV] == str(own)
        assert not (tmp_path / f"worker-{dead.pid}").exists() and alive.is_dir()
        assert metricsdir.host_folder() == tmp_path
    finally:
        monkeypatch.delenv(metricsdir.ENV, raising=False)
    assert metricsdir.prepare("api", Settings(metrics=False)) is None


def test_serving_merges_every_process_of_every_service(tmp_path):
    """Two services' processes, each writing its own files; one exposition adds them up."""
    code = ("import os, sys; from shared import metrics; "
            "metrics.WORKER_IMAGES.labels('bulk', 'done').inc(int(sys.argv[1])); "
            "metrics.HTTP_REQUESTS.labels('GET', '/x', '200').inc()")
    for service, n in (("worker-101", 5), ("worker-102", 7), ("api-103", 1)):
        folder = tmp_path / service
        folder.mkdir()
        env = {**os.environ, metricsdir.ENV: str(folder)}
        subprocess.run([sys.executable, "-c", code, str(n)], env=env, check=True)
    reader = ("from shared import metrics; import sys; "
              "sys.stdout.write(metrics.exposition()[0].decode())")
    out = subprocess.run([sys.executable, "-c", reader], check=True, capture_output=True,
                         text=True, env={**os.environ, metricsdir.ENV: str(tmp_path / "api-103")})
    got = samples(out.stdout)
    assert got['digits_worker_images_total{outcome="done",queue="bulk"}'] == 13
    assert got['digits_http_requests_total{method="GET",route="/x",status="200"}'] == 3
