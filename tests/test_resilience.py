"""Nothing lost, nothing twice: idempotent adds to an open job, the client's retries and
a `digits submit` that outlives the API processes it talks to."""

from __future__ import annotations

import io

import pytest

from api import create_app
from tests.conftest import mnist_png_bytes


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
