"""The database is the source of truth: lost messages are re-queued by the reconciler,
and results are written once per image however often it is processed. Run against
both PostgreSQL and SQLite, with a real Celery worker process and a real Redis."""

from __future__ import annotations

import os
import subprocess

import pytest
import redis
from sqlalchemy import func, select

from api.jobs_service import create_job
from api.uploads import check
from shared import db
from shared.celery_app import make_celery
from shared.models import Item, ItemStatus, Job
from shared.queues import BULK_QUEUE
from shared.reconcile import reconcile
from shared.settings import get_settings
from tests.conftest import ROOT, digits_argv, mnist_png_bytes, stop_process, wait_for

DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def database(request, use_database, redis_db, shipped_model):
    url = request.getfixturevalue(f"{request.param}_url")
    use_database(url, DIGITS_REDIS_URL=redis_db, DIGITS_MODEL_PATH=str(shipped_model))
    return url


def _job_with(n: int, start: int = 0):
    celery = make_celery(get_settings())
    uploads = [check(name, data, 1 << 20) for name, data, _ in mnist_png_bytes(start, n)]
    job_id, _ = create_job(celery, "tester", uploads, open_=False, idempotency_key=None,
                           model_version=None)
    return celery, job_id


def _statuses(job_id: str) -> dict[str, int]:
    with db.session() as s:
        rows = s.execute(select(Item.status, func.count()).where(Item.job_id == job_id)
                         .group_by(Item.status)).all()
    return dict(rows)


@pytest.mark.slow
def test_reconciler_requeues_work_lost_from_redis(database, redis_db, tmp_path):
    celery, job_id = _job_with(300)
    client = redis.Redis.from_url(redis_db)
    assert client.llen(BULK_QUEUE) > 0
    client.flushdb()  # Redis loses every message; the database still has every image

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the database and Redis set above
    worker = subprocess.Popen(digits_argv("worker", "--queues", "bulk", "--concurrency", "1"),
                              cwd=ROOT, env=env, stdout=(tmp_path / "w.log").open("wb"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: celery.control.ping(timeout=0.5), 60, what="the worker to answer")
        assert _statuses(job_id) == {ItemStatus.PENDING: 300}, "nothing can run: the queue is empty"
        requeued = reconcile(celery, older_than_s=0, chunk_size=64)
        assert requeued == 300
        wait_for(lambda: ItemStatus.PENDING not in _statuses(job_id), 120,
                 what="the re-queued items to finish")
        finished = _statuses(job_id)
        assert sum(finished.values()) == 300 and ItemStatus.FAILED not in finished
        # The reconciler also closes the job once nothing is pending.
        def closed():
            reconcile(celery, older_than_s=3600, chunk_size=64)
            with db.session() as s:
                return s.get(Job, job_id).status == "succeeded"

        wait_for(closed, 30, what="the job to be closed")
    finally:
        stop_process(worker)


def test_processing_an_image_twice_leaves_one_result(database):
    from worker.inference import get_predictor
    from worker.processing import classify_items

    _, job_id = _job_with(40, start=500)
    with db.session() as s:
        ids = s.scalars(select(Item.id).where(Item.job_id == job_id).order_by(Item.id)).all()
    assert classify_items(ids[:25]) == 25
    with db.session() as s:
        first = {i.id: (i.digit, i.confidence, i.finished_at)
                 for i in s.scalars(select(Item).where(Item.job_id == job_id))}
    # Redelivery of the same chunk, and an overlapping one: only new items are written.
    assert classify_items(ids[:25]) == 0
    assert classify_items(ids) == 15
    with db.session() as s:
        items = list(s.scalars(select(Item).where(Item.job_id == job_id)))
        job = s.get(Job, job_id)
    assert len(items) == 40
    for item in items:
        if item.id in ids[:25]:
            assert (item.digit, item.confidence, item.finished_at) == first[item.id]
    assert job.status == "succeeded"
    assert get_predictor().version.startswith("digits-cnn@")


def test_odd_images_fail_or_pass_alone_within_a_chunk(database):
    """A chunk holding odd images (one pixel, a one-pixel line, a truncated PNG) still
    writes a result for every image; the good ones are classified."""
    import io

    from PIL import Image

    from worker.processing import classify_items

    def png(img) -> bytes:
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        return buffer.getvalue()

    good = [(name, data) for name, data, _ in mnist_png_bytes(900, 10)]
    odd = [("dot.png", png(Image.new("L", (1, 1), 0))),
           ("line.png", png(Image.new("L", (500, 1), 255))),
           ("cut.png", good[0][1][:60])]
    uploads = [check(name, data, 1 << 20) for name, data in good + odd]
    job_id, _ = create_job(make_celery(get_settings()), "tester", uploads, open_=False,
                           idempotency_key=None, model_version=None)
    with db.session() as s:
        ids = s.scalars(select(Item.id).where(Item.job_id == job_id)).all()
    assert classify_items(list(ids)) == 13
    with db.session() as s:
        items = {i.filename: i for i in s.scalars(select(Item).where(Item.job_id == job_id))}
        status = s.get(Job, job_id).status
    assert items["dot.png"].status == items["line.png"].status == ItemStatus.NO_DIGIT
    assert items["cut.png"].status == ItemStatus.FAILED
    assert items["cut.png"].error.startswith("corrupt")
    assert sum(items[name].status == ItemStatus.DONE for name, _ in good) == 10
    assert status == "succeeded"
