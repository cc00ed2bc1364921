"""The interactive lane (shared/lane.py, worker/lane.py) on a real Redis: a real lane
worker process answers many concurrent callers, each with its own answer; a full lane
answers 503 with Retry-After; a request nobody waits for is dropped, not computed."""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from api import create_app
from shared import lane
from shared.settings import get_settings
from tests.conftest import ROOT, digits_argv, mnist_png_bytes, stop_process, wait_for


@pytest.fixture
def lane_app(use_database, sqlite_url, redis_db, monkeypatch):
    monkeypatch.setenv("DIGITS_PREDICT_TIMEOUT_S", "20")
    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db)
    return create_app({"TESTING": True})


@pytest.fixture
def lane_worker(lane_app, redis_db, shipped_model):
    """`digits worker --queues interactive` with two lane processes, on the test's Redis."""
    env = {**os.environ, "DIGITS_REDIS_URL": redis_db, "DIGITS_METRICS": "false",
           "DIGITS_LANE_PROCESSES": "2"}
    proc = subprocess.Popen(digits_argv("worker", "--queues", "interactive"), cwd=ROOT,
                            env=env, start_new_session=True)
    client = redis.Redis.from_url(redis_db)
    try:
        # Announced once a lane process has its model loaded.
        wait_for(lambda: list(client.scan_iter("digits:worker:interactive-*")), 120,
                 what="the lane worker to announce itself")
        yield proc
    finally:
        stop_process(proc)


def test_concurrent_callers_each_get_their_own_answer(lane_app, lane_worker, shipped_model):
    from worker.inference import Predictor
    from worker.processing import classify

    digits = mnist_png_bytes(3000, 240)
    expected = [o.digit for o in classify([d for _, d, _ in digits],
                                          Predictor(shipped_model, "cpu", 128, 1))]

    def ask(i: int):
        client = lane_app.test_client()
        _, data, _ = digits[i]
        response = client.post("/api/v1/predict", data=data, content_type="image/png")
        return i, response.status_code, response.json

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(ask, range(len(digits))))
    assert all(status == 200 for _, status, _ in answers), answers[:3]
    assert [body["digit"] for _, _, body in answers] == expected
    assert all(body["model_version"].startswith("digits-cnn@") for _, _, body in answers)
    # Nothing is left behind in Redis: no request, no uncollected answer.
    client = redis.Redis.from_url(get_settings().redis_url)
    assert lane.waiting(client) == 0
    assert not list(client.scan_iter(lane.REPLY_PREFIX + "*"))


def test_a_full_lane_answers_503_with_retry_after(lane_app, redis_db, monkeypatch):
    monkeypatch.setenv("DIGITS_PREDICT_MAX_WAITING", "2")
    monkeypatch.setenv("DIGITS_PREDICT_TIMEOUT_S", "3")
    get_settings.cache_clear()
    app = create_app({"TESTING": True})
    png = mnist_png_bytes(0, 1)[0][1]
    client = redis.Redis.from_url(redis_db)
    answers = []
    waiting = [threading.Thread(target=lambda: answers.append(app.test_client().post(
        "/api/v1/predict", data=png, content_type="image/png"))) for _ in range(2)]
    for t in waiting:  # no lane worker: these two wait (and time out after 3 s)
        t.start()
    wait_for(lambda: lane.waiting(client) == 2, 10,
             what=f"two waiting predictions ({[(a.status_code, a.json) for a in answers]})")
    refused = app.test_client().post("/api/v1/predict", data=png, content_type="image/png")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.json["error"]["code"] == "busy"
    for t in waiting:
        t.join(30)
    # Both timed out and took their requests back: nobody computes them late.
    assert [a.status_code for a in answers] == [504, 504]
    assert lane.waiting(client) == 0


def test_refusals_leave_nothing_behind_and_a_lost_connection_is_retried(redis_db):
    """One image goes out as push + BLPOP in one round trip: a refusal must come back at
    once (not after the timeout) and leave no key; a flushed script cache or a dropped
    connection costs nothing."""
    client = redis.Redis.from_url(redis_db)
    full = lane.Lane(client, max_waiting=0, timeout_s=20)
    started = time.monotonic()
    with pytest.raises(lane.LaneBusy):
        full.ask_many([b"image"], "rid")
    with pytest.raises(lane.LaneBusy):  # several images: all or none
        full.ask_many([b"one", b"two"], "rid")
    limited = lane.Lane(client, max_waiting=10, timeout_s=20)
    with pytest.raises(lane.RateLimited) as exc:
        limited.ask_many([b"image"], "rid", account="acct", limits=[(0, 60)])
    assert 1 <= exc.value.retry_after_s <= 60
    assert time.monotonic() - started < 5  # no refusal waited for its BLPOP's timeout
    assert lane.waiting(client) == 0
    assert not list(client.scan_iter(lane.REPLY_PREFIX + "*"))

    def answer_one():  # a stand-in lane worker: answers the next request with its id
        raw = client.blpop([lane.REQUESTS_KEY], timeout=10)[1]
        request = lane.decode(raw)
        pipe = client.pipeline()
        lane.answer(pipe, request, {"echo": request.request_id})
        pipe.execute()

    client.script_flush()
    own = limited._own()
    # As after a Redis restart: the server closes the connection under the client.
    client.client_kill_filter(_id=own.client_id())
    for rid in ("after-flush", "again"):
        worker = threading.Thread(target=answer_one)
        worker.start()
        assert limited.ask_many([b"image"], rid) == [{"echo": rid}]
        worker.join(10)


def test_a_request_nobody_waits_for_is_dropped(redis_db, shipped_model):
    from worker import lane as lane_worker
    from worker.inference import Predictor

    client = redis.Redis.from_url(redis_db)
    png = mnist_png_bytes(0, 1)[0][1]
    late = lane.Request(lane.REPLY_PREFIX + "late", time.time() - 1, "rid-late", png)
    live = lane.Request(lane.REPLY_PREFIX + "live", time.time() + 30, "rid-live", png)
    client.rpush(lane.REQUESTS_KEY, lane.encode(late), lane.encode(live))
    predictor = Predictor(shipped_model, "cpu", 128, 1)
    assert lane_worker.serve_once(client, predictor, wait_s=1) == 1
    assert client.exists(late.reply_key) == 0
    assert 0 < client.ttl(live.reply_key) <= lane.REPLY_TTL_S  # gone if nobody collects it
    answer = client.lpop(live.reply_key)
    assert b'"digit":7' in answer and b'"status":"done"' in answer


def test_a_bad_image_fails_alone_in_its_batch(redis_db, shipped_model):
    from worker import lane as lane_worker
    from worker.inference import Predictor

    client = redis.Redis.from_url(redis_db)
    png = mnist_png_bytes(0, 1)[0][1]
    good = lane.Request(lane.REPLY_PREFIX + "good", time.time() + 30, "a", png)
    bad = lane.Request(lane.REPLY_PREFIX + "bad", time.time() + 30, "b", b"\x89PNG\r\n\x1a\n")
    client.rpush(lane.REQUESTS_KEY, lane.encode(bad), lane.encode(good))
    assert lane_worker.serve_once(client, Predictor(shipped_model, "cpu", 128, 1), 1) == 2
    assert b'"status":"failed"' in client.lpop(bad.reply_key)
    assert b'"digit":7' in client.lpop(good.reply_key)


def test_request_round_trips_through_its_encoding():
    request = lane.Request("digits:lane:reply:x", 1234.5, "id with spaces", b"\n\x00bytes\n")
    assert lane.decode(lane.encode(request)) == request
    assert io.BytesIO(lane.encode(request)).read().count(b"\n") == 3


def test_a_few_images_in_one_call_are_answered_in_order(lane_app, lane_worker):
    from jsonschema import Draft202012Validator

    client = lane_app.test_client()
    digits = mnist_png_bytes(4000, 6)
    parts = [(io.BytesIO(data), name) for name, data, _ in digits]
    parts.insert(2, (io.BytesIO(b"not an image"), "notes.txt"))
    answer = client.post("/api/v1/predict", data={"images": parts},
                         content_type="multipart/form-data")
    assert answer.status_code == 200, answer.json
    body = answer.json
    assert body["object"] == "list" and len(body["data"]) == 7
    assert [d["filename"] for d in body["data"]] == [p[1] for p in parts]
    refused = body["data"].pop(2)
    assert refused["status"] == "failed" and refused["error"].startswith("unsupported_format")
    assert [d["digit"] for d in body["data"]] == [label for _, _, label in digits]
    document = client.get("/api/v1/openapi.json").json
    schema = document["paths"]["/api/v1/predict"]["post"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    Draft202012Validator({**schema, "components": document["components"]}).validate(
        answer.json)
    too_many = client.post("/api/v1/predict", data={"images": [
        (io.BytesIO(digits[0][1]), f"{i}.png") for i in range(65)]},
        content_type="multipart/form-data")
    assert too_many.status_code == 400 and too_many.json["error"]["code"] == "too_many_images"


def test_a_field_of_digits_is_read_whole_with_mode_string(lane_app, lane_worker, data_dir):
    from training.strings import generated_strings
    from worker.strings import read_strings

    made = generated_strings(data_dir, seed=5, mix={3: 4})
    client = lane_app.test_client()
    one = client.post("/api/v1/predict?mode=string", data=made.blobs[0],
                      content_type="image/png")
    assert one.status_code == 200, one.json
    expected = read_strings(made.blobs)  # the worker's own reading, in process
    assert one.json["text"] == expected[0]["text"] and len(one.json["digits"]) == 3
    assert one.json["digit"] is None and one.json["probabilities"] is None
    many = client.post("/api/v1/predict", data={"mode": "string", "images": [
        (io.BytesIO(b), n) for n, b in zip(made.files, made.blobs, strict=True)]},
        content_type="multipart/form-data")
    assert [d["text"] for d in many.json["data"]] == [e["text"] for e in expected]
    bad = client.post("/api/v1/predict?mode=words", data=made.blobs[0], content_type="image/png")
    assert bad.status_code == 400 and bad.json["error"]["code"] == "bad_mode"


def test_the_lane_gathers_fuller_batches_only_beside_bulk_work(redis_db):
    from kombu.transport.redis import Channel

    from shared.queues import BULK_QUEUE, BULK_UNACKED_KEY
    from worker.lane import BulkWatch

    assert Channel.unacked_key == BULK_UNACKED_KEY  # where kombu keeps chunks being worked
    client = redis.Redis.from_url(redis_db)
    client.delete(BULK_QUEUE, BULK_UNACKED_KEY)
    watch = BulkWatch(client, gather_s=0.003, every_s=0)
    assert watch.gather_s() == 0  # predictions alone: no wait at all
    client.rpush(BULK_QUEUE, b"chunk waiting")
    assert watch.gather_s() == 0.003
    client.delete(BULK_QUEUE)
    client.hset(BULK_UNACKED_KEY, "tag", b"chunk being worked")
    assert watch.gather_s() == 0.003
    client.delete(BULK_UNACKED_KEY)
    assert watch.gather_s() == 0
    assert BulkWatch(client, gather_s=0).gather_s() == 0  # DIGITS_LANE_GATHER_MS=0

    # The gathered batch holds what arrived during the wait.
    client.rpush(lane.REQUESTS_KEY, b"first")
    threading.Timer(0.05, lambda: client.rpush(lane.REQUESTS_KEY, b"second")).start()
    assert lane.take(client, 8, wait_s=1, gather_s=0.5) == [b"first", b"second"]
