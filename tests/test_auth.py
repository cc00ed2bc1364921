"""API keys and accounts: two accounts and an admin over every job endpoint (0 reads or
writes across accounts), no key or a bad or revoked one is a 401 when keys are
required, open mode is the `local` account, pages sign in into an HttpOnly SameSite
cookie whose state-changing calls need the CSRF token, and keys never reach a log."""

from __future__ import annotations

import io
import logging

import pytest
import requests

from api import create_app
from shared import accounts, db
from shared.settings import get_settings
from tests.conftest import mnist_png_bytes


@pytest.fixture
def app(use_database, sqlite_url, redis_db, tmp_path):
    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db, DIGITS_STATE_DIR=str(tmp_path / "state"))
    return create_app({"TESTING": True, "DIGITS_AUTH": "required"})


def make_key(account: str, admin: bool = False) -> tuple[str, str]:
    with db.session() as s:
        key, row = accounts.create_key(s, accounts.server_secret(get_settings()), account, admin)
        return key, row.id


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _png(n: int = 0):
    name, data, _ = mnist_png_bytes(n, 1)[0]
    return io.BytesIO(data), name


def _create(client, headers) -> tuple[str, int]:
    job = client.post("/api/v1/jobs", data={"files": [_png()], "open": "true"}, headers=headers,
                      content_type="multipart/form-data")
    assert job.status_code == 202, job.json
    items = client.get(f"/api/v1/jobs/{job.json['id']}/results", headers=headers).json["data"]
    return job.json["id"], items[0]["id"]


def _calls(job: str, item: int) -> list[tuple[str, str, dict | None]]:
    base = f"/api/v1/jobs/{job}"
    return [
        ("GET", base, None), ("GET", f"{base}/results", None),
        ("GET", f"{base}/results?format=csv", None),
        ("GET", f"{base}/items/{item}/image", None),
        ("GET", f"{base}/items/{item}/thumbnail", None),
        ("GET", f"{base}/items/{item}/model-input", None),
        ("POST", f"{base}/images", {"files": [_png(1)]}),
        ("POST", f"{base}/seal", None), ("POST", f"{base}/cancel", None),
        ("DELETE", base, None),
    ]


def _call(client, method, path, data, headers):
    if data is not None:
        return client.open(path, method=method, data=data, headers=headers,
                           content_type="multipart/form-data")
    return client.open(path, method=method, headers=headers)


def test_access_matrix_two_accounts_and_an_admin(app, caplog):
    client = app.test_client()
    alice, _ = make_key("alice")
    bob, _ = make_key("bob")
    admin, _ = make_key("ops", admin=True)
    caplog.set_level(logging.DEBUG)

    job, item = _create(client, bearer(alice))
    # Another account: 404 on everything, exactly as for a job that does not exist.
    for method, path, data in _calls(job, item):
        response = _call(client, method, path, data, bearer(bob))
        assert response.status_code == 404, (method, path, response.status_code)
        assert response.json["error"]["code"] == "job_not_found", (method, path)
    # No key, a made-up key, a malformed header: 401 with a Bearer challenge.
    for headers in ({}, bearer("dgt_" + "x" * 43), {"Authorization": "Basic YTpi"},
                    {"X-Digits-Owner": "alice"}):
        for method, path, data in _calls(job, item):
            response = _call(client, method, path, data, headers)
            assert response.status_code == 401, (headers, method, path)
            assert response.json["error"]["code"] == "unauthorized"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # Listing: each account its own; the admin every account's.
    assert [j["id"] for j in client.get("/api/v1/jobs", headers=bearer(alice)).json["data"]] \
        == [job]
    assert client.get("/api/v1/jobs", headers=bearer(bob)).json["data"] == []
    assert job in [j["id"] for j in client.get("/api/v1/jobs", headers=bearer(admin)).json["data"]]
    # The owner and an admin: every call answers as it should for the job's state.
    expected = [200, 200, 200, 200, 404, 404, 202, 200, 200, 200]
    for who in (admin, alice):
        job, item = _create(client, bearer(alice))
        got = [_call(client, m, p, d, bearer(who)).status_code for m, p, d in _calls(job, item)]
        assert got == expected, who == admin
    job, _ = _create(client, bearer(alice))
    assert client.get(f"/api/v1/jobs/{job}", headers=bearer(admin)).json["owner"] == "alice"
    # Bob's jobs are bob's: alice cannot see them either.
    bobs, _ = _create(client, bearer(bob))
    assert _call(client, "GET", f"/api/v1/jobs/{bobs}", None, bearer(alice)).status_code == 404
    # Open endpoints stay open; the rest of /api/v1 wants a key.
    for path in ("/healthz", "/api/v1/openapi.json"):
        assert client.get(path).status_code in (200, 503)
    assert client.get("/api/v1/status").status_code == 401
    # The service's status names every account's jobs: admin keys only.
    assert client.get("/api/v1/status", headers=bearer(bob)).status_code == 403
    assert client.get("/api/v1/status", headers=bearer(admin)).status_code == 200
    # Keys never reach a log line.
    text = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    for key in (alice, bob, admin):
        assert key not in text and key[4:] not in text


def test_a_revoked_key_is_refused_and_old_jobs_are_local(app):
    client = app.test_client()
    key, key_id = make_key("carol")
    assert client.get("/api/v1/jobs", headers=bearer(key)).status_code == 200
    with db.session() as s:
        assert accounts.revoke(s, key_id).revoked_at is not None
        assert [k.id for k in accounts.list_keys(s)] == [key_id]
    assert client.get("/api/v1/jobs", headers=bearer(key)).status_code == 401
    # A job made without a key on an open stack belongs to `local`: hidden from other
    # accounts when keys are required, seen by an admin.
    open_client = create_app({"TESTING": True, "DIGITS_AUTH": "open"}).test_client()
    job = open_client.post("/api/v1/jobs", data={"files": [_png()]},
                           content_type="multipart/form-data").json
    assert job["owner"] == "local"
    dave, _ = make_key("dave")
    admin, _ = make_key("root", admin=True)
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(dave)).status_code == 404
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(admin)).status_code == 200
    # Keys are kept only as keyed hashes.
    with db.session() as s:
        rows = accounts.list_keys(s)
        assert all(r.key_hash not in (key, dave, admin) and len(r.key_hash) == 64 for r in rows)


def test_pages_sign_in_into_an_httponly_samesite_cookie_with_csrf(app):
    client = app.test_client()
    key, key_id = make_key("erin")
    assert client.get("/api/v1/session").status_code == 401
    # Only JSON signs in (a cross-site form cannot send it without a preflight).
    assert client.post("/api/v1/session", data={"key": key}).status_code == 400
    assert client.post("/api/v1/session", json={"key": "dgt_nope"}).status_code == 401
    signed = client.post("/api/v1/session", json={"key": key})
    assert signed.status_code == 200 and signed.json["account"] == "erin"
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and key not in cookie
    csrf = signed.json["csrf_token"]
    assert client.get("/api/v1/session").json["csrf_token"] == csrf
    job = client.post("/api/v1/jobs", data={"files": [_png()], "open": "true"},
                      content_type="multipart/form-data")
    assert job.status_code == 403 and job.json["error"]["code"] == "csrf_failed"
    job = client.post("/api/v1/jobs", data={"files": [_png()], "open": "true"},
                      headers={"X-CSRF-Token": csrf}, content_type="multipart/form-data")
    assert job.status_code == 202 and job.json["owner"] == "erin"
    path = f"/api/v1/jobs/{job.json['id']}"
    assert client.get(path).status_code == 200
    assert client.post(f"{path}/cancel", headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert client.post(f"{path}/cancel", headers={"X-CSRF-Token": csrf}).status_code == 200
    with db.session() as s:
        accounts.revoke(s, key_id)
    assert client.get(path).status_code == 401  # a revoked key's session ends with it
    assert client.delete("/api/v1/session").status_code == 200


def test_open_mode_is_the_local_account_and_keys_still_work(use_database, sqlite_url, redis_db,
                                                            tmp_path):
    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db, DIGITS_STATE_DIR=str(tmp_path / "s"))
    client = create_app({"TESTING": True, "DIGITS_AUTH": "open"}).test_client()
    me = client.get("/api/v1/session").json
    assert me == {"account": "local", "admin": False, "signed_in": False, "auth": "open",
                  "csrf_token": None}
    key, _ = make_key("frank")
    job = client.post("/api/v1/jobs", data={"files": [_png()]}, headers=bearer(key),
                      content_type="multipart/form-data").json
    assert job["owner"] == "frank"
    assert client.get(f"/api/v1/jobs/{job['id']}").status_code == 404  # local is not frank
    assert client.get("/api/v1/jobs", headers=bearer("dgt_bad")).status_code == 401


def test_the_cli_sends_its_key_from_the_option_or_the_environment(locked_stack, tmp_path):
    import os
    import subprocess

    from tests.test_client import DIGITS

    header = locked_stack.key("cli-user")
    key = header["Authorization"].split(" ", 1)[1]
    name, data, _ = mnist_png_bytes(3, 1)[0]
    (tmp_path / name).write_bytes(data)
    env = {k: v for k, v in os.environ.items() if k not in ("DIGITS_API_KEY", "DIGITS_SERVER")}

    def digits(*args, **extra):
        return subprocess.run([str(DIGITS), *args], capture_output=True, text=True,
                              timeout=180, env={**env, **extra})

    refused = digits("submit", str(tmp_path / name), "--server", locked_stack.url, "--no-wait",
                     DIGITS_CLIENT_RETRY_MINUTES="0")
    assert refused.returncode != 0 and "401" in refused.stderr + refused.stdout
    assert key not in refused.stderr + refused.stdout
    sent = digits("submit", str(tmp_path / name), "--server", locked_stack.url, "--no-wait",
                  "--api-key", key)
    assert sent.returncode == 0, sent.stderr
    job_id = next(w for w in (sent.stdout + sent.stderr).split() if w.startswith("job_"))
    job = requests.get(f"{locked_stack.url}/api/v1/jobs/{job_id}", headers=header, timeout=10)
    assert job.json()["owner"] == "cli-user"
    shown = digits("status", job_id, "--server", locked_stack.url, DIGITS_API_KEY=key)
    assert shown.returncode == 0 and job_id in shown.stdout
    assert key not in shown.stdout + shown.stderr


def test_a_key_that_reaches_a_log_line_is_masked_in_text_and_json():
    from shared import logs

    key = "dgt_" + "Ab1-_" * 9
    for formatter in (logs.formatter("text"), logs.formatter("json")):
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "got %s and Bearer %s",
                                   (key, key), None)
        line = formatter.format(record)
        assert key not in line and key[4:] not in line and "dgt_***" in line


def test_delete_removes_the_job_and_everything_it_stored(app):
    from sqlalchemy import func, select

    from shared.models import Item, Job

    client = app.test_client()
    key, _ = make_key("gina")
    job, item = _create(client, bearer(key))  # open and pending: running, in effect
    gone = client.delete(f"/api/v1/jobs/{job}", headers=bearer(key))
    assert gone.status_code == 200
    assert gone.json == {"id": job, "object": "job", "deleted": True, "items_deleted": 1}
    for path in (f"/api/v1/jobs/{job}", f"/api/v1/jobs/{job}/items/{item}/image"):
        assert client.get(path, headers=bearer(key)).status_code == 404
    assert client.delete(f"/api/v1/jobs/{job}", headers=bearer(key)).status_code == 404
    with db.session() as s:
        assert s.get(Job, job) is None
        assert s.scalar(select(func.count()).select_from(Item).where(Item.job_id == job)) == 0


def test_digits_delete(live_stack):
    import subprocess

    from tests.test_client import DIGITS

    name, data, _ = mnist_png_bytes(0, 1)[0]
    job = live_stack.post("/api/v1/jobs", files={"files": (name, data)}).json()
    out = subprocess.run([str(DIGITS), "delete", job["id"], "--server", live_stack.url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "deleted with its 1 image(s)" in out.stdout, out.stderr
    assert live_stack.get(f"/api/v1/jobs/{job['id']}").status_code == 404
    again = subprocess.run([str(DIGITS), "delete", job["id"], "--server", live_stack.url],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1


def test_auth_is_open_only_on_loopback_unless_set(monkeypatch):
    from cli.service_cmds import auth_mode

    monkeypatch.delenv("DIGITS_AUTH", raising=False)
    get_settings.cache_clear()
    try:
        assert [auth_mode(h) for h in ("127.0.0.1", "::1", "localhost", "127.0.0.2")] == [
            "open"] * 4
        assert [auth_mode(h) for h in ("0.0.0.0", "::", "10.1.2.3")] == ["required"] * 3
        monkeypatch.setenv("DIGITS_AUTH", "open")
        get_settings.cache_clear()
        assert auth_mode("0.0.0.0") == "open"  # the operator's explicit choice wins
        monkeypatch.setenv("DIGITS_AUTH", "required")
        get_settings.cache_clear()
        assert auth_mode("127.0.0.1") == "required"
    finally:
        get_settings.cache_clear()


def test_metrics_take_the_scrape_token_or_an_admin_key(use_database, sqlite_url, redis_db,
                                                      tmp_path, monkeypatch):
    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db, DIGITS_STATE_DIR=str(tmp_path / "s"),
                 DIGITS_METRICS_TOKEN="scrape-token-123", DIGITS_METRICS_DIR=str(tmp_path / "m"))
    client = create_app({"TESTING": True, "DIGITS_AUTH": "required"}).test_client()
    user, _ = make_key("henry")
    admin, _ = make_key("ops", admin=True)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(user)).status_code == 401
    assert client.get("/metrics", headers=bearer("scrape-token-123")).status_code == 200
    assert client.get("/metrics", headers=bearer(admin)).status_code == 200
