"""API behaviour that needs no worker: limits, JSON errors, the OpenAPI document, and
the rule that nothing the API imports pulls in torch."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import pytest
import redis

from api import create_app
from tests.conftest import ROOT


@pytest.fixture
def client(use_database, sqlite_url, redis_db):
    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db)
    app = create_app({"TESTING": True, "MAX_CONTENT_LENGTH": 200_000, "MAX_FORM_PARTS": 50})
    return app.test_client()


def test_the_api_never_imports_torch():
    # Nor the normalisation code (SciPy): the API checks uploads by their magic bytes only.
    code = ("import sys, api; app = api.create_app(); "
            "import api.routes_jobs, api.uploads, shared.formats; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'torchvision', 'scipy', 'worker', 'training'))))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_oversized_request_is_a_413_with_json(client):
    response = client.post("/api/v1/jobs", data={"files": (io.BytesIO(b"x" * 300_000), "a.png")},
                           content_type="multipart/form-data")
    assert response.status_code == 413
    assert response.is_json and response.json["error"]["code"] == "request_too_large"


def test_too_many_files_in_one_request_is_a_413_with_json(client):
    files = [(io.BytesIO(b"\x89PNG\r\n\x1a\n"), f"{i}.png") for i in range(60)]
    response = client.post("/api/v1/jobs", data={"files": files},
                           content_type="multipart/form-data")
    assert response.status_code == 413 and response.json["error"]["code"] == "request_too_large"


def test_a_zip_bomb_is_refused(client, monkeypatch):
    from shared.settings import get_settings

    monkeypatch.setenv("DIGITS_MAX_EXPANDED_BYTES", "2500000")
    get_settings.cache_clear()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(3):
            archive.writestr(f"big{i}.png", b"\0" * 1_000_000)
    assert len(buffer.getvalue()) < 200_000
    response = client.post("/api/v1/jobs", data={"files": (io.BytesIO(buffer.getvalue()),
                                                           "bomb.zip")},
                           content_type="multipart/form-data")
    assert response.status_code == 413 and response.is_json
    assert "DIGITS_MAX_EXPANDED_BYTES" in response.json["error"]["message"]
    assert client.get("/api/v1/jobs").json["data"] == []  # nothing of it was stored


def test_unknown_routes_and_jobs_answer_json(client):
    for path in ("/api/v1/jobs/job_nope", "/api/v1/nothing-here"):
        response = client.get(path)
        assert response.status_code == 404 and response.is_json
        assert set(response.json["error"]) == {"code", "message"}
    assert client.delete("/api/v1/jobs").status_code == 405


def test_a_job_needs_files_unless_open(client):
    response = client.post("/api/v1/jobs", data={}, content_type="multipart/form-data")
    assert response.status_code == 400 and response.json["error"]["code"] == "no_files"


def test_openapi_document_is_served_and_names_every_route(client):
    doc = client.get("/api/v1/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    app_rules = {r.rule for r in client.application.url_map.iter_rules()
                 if r.rule.startswith(("/api/v1", "/healthz", "/readyz", "/metrics"))
                 and r.endpoint != "openapi.openapi_json"}
    documented = {path.replace("{job_id}", "<job_id>").replace("{item_id}", "<int:item_id>")
                  for path in doc["paths"]}
    assert app_rules == documented


def test_predict_without_a_worker_is_a_504_and_not_ready(use_database, sqlite_url, redis_db,
                                                         monkeypatch):
    monkeypatch.setenv("DIGITS_PREDICT_TIMEOUT_S", "1")
    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db)
    client = create_app({"TESTING": True}).test_client()
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64  # passes the magic-byte check; nobody decodes it
    response = client.post("/api/v1/predict", data={"image": (io.BytesIO(png), "a.png")},
                           content_type="multipart/form-data")
    assert response.status_code == 504 and response.json["error"]["code"] == "timeout"
    # The caller gave up: its request is off the lane, so no worker computes it late.
    from shared import lane

    assert lane.waiting(redis.Redis.from_url(redis_db)) == 0
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["checks"]["database"] == "ok" and ready.json["checks"]["redis"] == "ok"
    assert ready.json["checks"]["workers"].startswith("error")


def _zip(members: dict[str, bytes], compression: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_zip_members_read_alike_stored_or_deflated_and_a_damaged_one_fails_alone():
    from api.uploads import expand_zip
    from tests.conftest import mnist_png_bytes

    members = {name: data for name, data, _ in mnist_png_bytes(0, 3)}
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        archive = _zip(members, compression)
        uploads = list(expand_zip("a.zip", archive, 1 << 20, 1 << 30))
        assert {u.filename: u.content for u in uploads} == members
        assert {u.status for u in uploads} == {"pending"}
    # Stored members are sliced out of the upload: their CRC is still checked.
    damaged = bytearray(_zip(members, zipfile.ZIP_STORED))
    damaged[damaged.index(members[next(iter(members))][20:40]) + 5] ^= 0xFF
    uploads = list(expand_zip("a.zip", bytes(damaged), 1 << 20, 1 << 30))
    assert [u.status for u in uploads] == ["failed", "pending", "pending"]
    assert uploads[0].error.startswith("corrupt: ") and "CRC" in uploads[0].error


def test_an_unfinished_item_has_its_image_but_no_thumbnail_yet(client):
    # No worker here: the item stays pending.
    from tests.conftest import mnist_png_bytes

    name, data, _ = mnist_png_bytes(0, 1)[0]
    job = client.post("/api/v1/jobs", data={"files": (io.BytesIO(data), name)},
                      content_type="multipart/form-data").json
    item = client.get(f"/api/v1/jobs/{job['id']}/results").json["data"][0]
    assert item["status"] == "pending" and set(item["links"]) == {"image"}
    base = f"/api/v1/jobs/{job['id']}/items/{item['id']}"
    image = client.get(f"{base}/image")
    assert image.status_code == 200 and image.mimetype == "image/png" and image.data == data
    for path in ("thumbnail", "model-input"):
        response = client.get(f"{base}/{path}")
        assert response.status_code == 404 and response.is_json
        assert response.json["error"]["code"] == "image_not_available"
        assert "not finished" in response.json["error"]["message"]
    # X-Digits-Owner names nobody any more (accounts come from keys: tests/test_auth.py).
    other = client.get(f"{base}/thumbnail", headers={"X-Digits-Owner": "someone-else"})
    assert other.status_code == 404 and other.json["error"]["code"] == "image_not_available"
    missing = client.get(f"/api/v1/jobs/{job['id']}/items/{item['id'] + 1}/thumbnail")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "item_not_found"


def test_csv_cells_a_spreadsheet_would_run_are_neutralised_and_json_stays_exact(client):
    import csv

    from tests.conftest import mnist_png_bytes

    _, data, _ = mnist_png_bytes(0, 1)[0]
    from shared.csvsafe import cell

    # A CR cannot travel in a multipart filename; the rule covers it all the same.
    assert cell("\rx.png") == "'\rx.png" and cell(7) == 7
    names = ["=cmd|' /C calc'!A0.png", "+1.png", "-2.png", "@SUM(A1).png", "\tx.png",
             "plain.png"]
    files = [(io.BytesIO(data), name) for name in names]
    job = client.post("/api/v1/jobs", data={"files": files},
                      content_type="multipart/form-data").json
    items = client.get(f"/api/v1/jobs/{job['id']}/results").json["data"]
    assert [i["filename"] for i in items] == names  # JSON: exactly as uploaded
    body = client.get(f"/api/v1/jobs/{job['id']}/results?format=csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert [r["filename"] for r in rows] == ["'" + n for n in names[:-1]] + ["plain.png"]


def test_readyz_says_what_is_wrong_without_leaking_connection_strings(use_database, sqlite_url,
                                                                     monkeypatch):
    from shared import db
    from shared.settings import get_settings
    from tests.test_client import closed_port

    use_database(sqlite_url, DIGITS_REDIS_URL=f"redis://:s3cret-pw@127.0.0.1:{closed_port()}/0")
    client = create_app({"TESTING": True}).test_client()
    monkeypatch.setenv("DIGITS_DATABASE_URL",
                       f"postgresql+psycopg://digits:s3cret-pw@127.0.0.1:{closed_port()}/digits")
    get_settings.cache_clear()
    db.reset()
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["status"] == "not_ready"
    checks = ready.json["checks"]
    assert checks["database"].startswith("error: the database did not answer (")
    assert checks["redis"].startswith("error: Redis did not answer (")
    assert checks["workers"] == "skipped"
    body = ready.get_data(as_text=True)
    for secret in ("s3cret", "127.0.0.1", "digits:", "postgresql", "redis://"):
        assert secret not in body
    assert client.get("/healthz").json == {"status": "ok"}


def test_long_loops_give_other_requests_turns(monkeypatch):
    """An API process serves its requests on one gevent loop: a long loop in a request
    hands the loop to the others every so often (api/turns.py)."""
    from api import turns

    turns_taken = []
    monkeypatch.setattr(turns.time, "sleep", turns_taken.append)
    assert list(turns.taking_turns(range(10), every=4)) == list(range(10))
    assert turns_taken == [turns.TURN_S, turns.TURN_S]
