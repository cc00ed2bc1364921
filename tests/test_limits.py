"""Limits in one vocabulary: an account past its request rate or its pending images gets
429 with Retry-After; a service past its pending images in total answers 503 with
Retry-After; calls without a key on an open local stack are not rate-limited."""

from __future__ import annotations

import io
import time

import pytest

from api import create_app
from shared import accounts, db
from shared.settings import get_settings
from tests.conftest import mnist_png_bytes, wait_for


def _key(account: str) -> dict:
    with db.session() as s:
        key, _ = accounts.create_key(s, accounts.server_secret(get_settings()), account)
    return {"Authorization": f"Bearer {key}"}


def _files(n: int) -> dict:
    return {"files": [(io.BytesIO(data), name) for name, data, _ in mnist_png_bytes(0, n)]}


@pytest.fixture
def make_client(use_database, sqlite_url, redis_db, tmp_path, monkeypatch):
    def make(**env: str):
        use_database(sqlite_url, DIGITS_REDIS_URL=redis_db,
                     DIGITS_STATE_DIR=str(tmp_path / "state"), **env)
        return create_app({"TESTING": True, "DIGITS_AUTH": "open"}).test_client()
    return make


def test_an_account_past_its_rate_gets_429_with_retry_after(make_client):
    client = make_client(DIGITS_RATE_LIMIT="5/minute")
    alice, bob = _key("alice"), _key("bob")
    answers = [client.get("/api/v1/jobs", headers=alice) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    refused = answers[-1]
    assert refused.json["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert client.get("/api/v1/jobs", headers=bob).status_code == 200  # per account
    # The open local stack's own user is not counted.
    assert all(client.get("/api/v1/jobs").status_code == 200 for _ in range(8))


def test_pending_images_429_per_account_and_503_in_total(make_client):
    client = make_client(DIGITS_MAX_PENDING_PER_ACCOUNT="3", DIGITS_MAX_PENDING_IMAGES="5")
    alice, bob = _key("alice"), _key("bob")
    ok = client.post("/api/v1/jobs", data={**_files(3), "open": "true"}, headers=alice,
                     content_type="multipart/form-data")
    assert ok.status_code == 202
    more = client.post(f"/api/v1/jobs/{ok.json['id']}/images", data=_files(1), headers=alice,
                       content_type="multipart/form-data")
    assert more.status_code == 429 and more.json["error"]["code"] == "too_many_pending"
    assert int(more.headers["Retry-After"]) >= 5
    assert client.post("/api/v1/jobs", data=_files(2), headers=bob,
                       content_type="multipart/form-data").status_code == 202
    full = client.post("/api/v1/jobs", data=_files(1), headers=_key("carol"),
                       content_type="multipart/form-data")
    assert full.status_code == 503 and full.json["error"]["code"] == "saturated"
    assert int(full.headers["Retry-After"]) >= 5


def test_predict_rate_is_counted_per_account_by_the_lane(make_client):
    # No lane worker here: a call inside the limit is queued, then times out (504).
    client = make_client(DIGITS_PREDICT_RATE_LIMIT="3/hour", DIGITS_PREDICT_TIMEOUT_S="0.2")
    # The lane counts in fixed windows: keep the calls clear of an hour's turn.
    wait_for(lambda: time.time() % 3600 < 3590, 15, what="the hour's window to turn")
    alice, bob = _key("alice"), _key("bob")
    png = mnist_png_bytes(0, 1)[0][1]

    def predict(headers=None):
        return client.post("/api/v1/predict", data=png, content_type="image/png",
                           headers=headers or {})

    answers = [predict(alice) for _ in range(4)]
    assert [a.status_code for a in answers] == [504] * 3 + [429]
    refused = answers[-1]
    assert refused.json["error"]["code"] == "rate_limited"
    assert "3/hour" in refused.json["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert predict(bob).status_code == 504  # per account
    assert all(predict().status_code == 504 for _ in range(4))  # the local user: not counted
