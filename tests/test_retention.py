"""Retention: a finished job's images go DIGITS_RETENTION_DAYS after it ends (results
stay, the job says when), whole jobs go DIGITS_RESULTS_RETENTION_DAYS after; the round
that the scheduler runs does both."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from api import create_app
from shared import db
from shared.models import Item, ItemStatus, Job, JobStatus
from shared.settings import get_settings
from tests.conftest import mnist_png_bytes


def _finished_job(client, days_ago: float) -> tuple[str, int]:
    name, data, _ = mnist_png_bytes(0, 1)[0]
    job = client.post("/api/v1/jobs", data={"files": [(io.BytesIO(data), name)]},
                      content_type="multipart/form-data").json["id"]
    ended = datetime.now(UTC) - timedelta(days=days_ago)
    with db.session() as s:  # as a worker would leave it
        s.execute(update(Item).where(Item.job_id == job).values(
            status=ItemStatus.DONE, digit=7, confidence=0.99, finished_at=ended,
            thumbnail=data, model_input=data))
        s.execute(update(Job).where(Job.id == job).values(
            status=JobStatus.SUCCEEDED, finished_at=ended))
    item = client.get(f"/api/v1/jobs/{job}/results").json["data"][0]["id"]
    return job, item


def test_images_then_whole_jobs_go_after_their_days(use_database, sqlite_url, redis_db,
                                                    monkeypatch):
    from cli.service_cmds import _retention

    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db, DIGITS_RETENTION_DAYS="7")
    client = create_app({"TESTING": True}).test_client()
    old, old_item = _finished_job(client, days_ago=10)
    new, new_item = _finished_job(client, days_ago=1)
    expires = client.get(f"/api/v1/jobs/{new}").json["images_expire_at"]
    assert 5.9 < (datetime.fromisoformat(expires) - datetime.now(UTC)).days + 1 <= 6.1

    _retention(get_settings())  # the scheduler's round
    for path in ("image", "thumbnail", "model-input"):
        gone = client.get(f"/api/v1/jobs/{old}/items/{old_item}/{path}")
        assert gone.status_code == 404, path
        assert gone.json["error"]["code"] in ("image_deleted", "image_not_available"), path
        assert client.get(f"/api/v1/jobs/{new}/items/{new_item}/{path}").status_code == 200
    result = client.get(f"/api/v1/jobs/{old}/results").json["data"][0]
    assert result["digit"] == 7 and result["status"] == "done"  # the result stays

    monkeypatch.setenv("DIGITS_RESULTS_RETENTION_DAYS", "5")
    get_settings.cache_clear()
    _retention(get_settings())
    assert client.get(f"/api/v1/jobs/{old}").status_code == 404
    assert client.get(f"/api/v1/jobs/{new}").status_code == 200


def test_without_retention_nothing_goes_and_no_expiry_is_shown(use_database, sqlite_url,
                                                               redis_db):
    from cli.service_cmds import _retention

    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db)
    client = create_app({"TESTING": True}).test_client()
    job, item = _finished_job(client, days_ago=3650)
    _retention(get_settings())
    assert client.get(f"/api/v1/jobs/{job}").json["images_expire_at"] is None
    assert client.get(f"/api/v1/jobs/{job}/items/{item}/image").status_code == 200
