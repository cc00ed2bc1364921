"""Bounded uploads: the API holds a run of images at a time, not a request, and a long
add holds SQLite's one write lock a run at a time; a retried add that stopped half way
stores only the rest, and a request that a retry replaced stores nothing more."""

from __future__ import annotations

import io
import os
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from api import create_app
from api import jobs_service as svc
from api.errors import ApiError
from api.uploads import Upload
from shared import db
from shared.celery_app import make_celery
from shared.models import Item, Job
from shared.settings import get_settings

BOUNDARY = "digits-test-boundary"


@pytest.fixture
def client(use_database, sqlite_url, redis_db):
    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db, DIGITS_METRICS="false")
    return create_app({"TESTING": True}).test_client()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_client(request, use_database, redis_db):
    """The API on SQLite, then on PostgreSQL."""
    url = request.getfixturevalue(f"{request.param}_url")
    use_database(url, DIGITS_REDIS_URL=redis_db, DIGITS_METRICS="false")
    return create_app({"TESTING": True}).test_client()


def _image(n: int, size: int) -> bytes:
    """PNG magic, then noise: passes the API's check, does not compress."""
    return b"\x89PNG\r\n\x1a\n" + os.urandom(size - 8)


def _body(path: Path, tmp: Path, mib: int) -> int:
    """A multipart body on disk, half of it plain files and half a zip of stored members
    (as `digits submit` packs them), `mib` MiB in all, 256 KiB an image."""
    count = mib * 2  # images per half
    archive = tmp / f"{mib}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for i in range(count):
            z.writestr(f"z{i}.png", _image(i, 256 * 1024))
    with path.open("wb") as out:
        def part(name: str) -> None:
            out.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; '
                      f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                      .encode())
        for i in range(count):
            part(f"f{i}.png")
            out.write(_image(i, 256 * 1024) + b"\r\n")
        part(archive.name)
        out.write(archive.read_bytes() + b"\r\n")
        out.write(f"--{BOUNDARY}--\r\n".encode())
    return path.stat().st_size


def _post_measured(client, body: Path, size: int) -> tuple[int, int]:
    """(status, traced peak bytes) of one create, the body read from disk as it goes."""
    with body.open("rb") as stream:
        tracemalloc.start()
        try:
            response = client.post("/api/v1/jobs", input_stream=stream, content_length=size,
                                   content_type=f"multipart/form-data; boundary={BOUNDARY}")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return response.status_code, peak


def test_peak_memory_of_an_upload_does_not_grow_with_the_request(client, tmp_path):
    small_size = _body(tmp_path / "small", tmp_path, 4)
    large_size = _body(tmp_path / "large", tmp_path, 48)
    status, small = _post_measured(client, tmp_path / "small", small_size)
    assert status == 202
    status, large = _post_measured(client, tmp_path / "large", large_size)
    assert status == 202
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Item)) == 4 * 4 + 4 * 48
    # 48 MiB of images held about as much as 4 MiB did: a run (8 MiB) and one image more.
    assert large < 24 * 2**20, f"{large / 2**20:.1f} MiB for a {large_size / 2**20:.0f} MiB request"
    assert large - small < 12 * 2**20, (small / 2**20, large / 2**20)


def test_past_the_expansion_cap_a_request_is_a_413_and_nothing_is_stored(any_client, monkeypatch):
    monkeypatch.setenv("DIGITS_MAX_EXPANDED_BYTES", str(8 * 2**20))
    get_settings.cache_clear()
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:  # 3 x 3 MiB of zeros
        for i in range(3):
            z.writestr(f"zero{i}.png", b"\x89PNG\r\n\x1a\n" + bytes(3 * 2**20))
    bomb.seek(0)
    plain = [(io.BytesIO(_image(i, 1024)), f"ok{i}.png") for i in range(3)]
    client = any_client
    response = client.post("/api/v1/jobs", data={"files": [*plain, (bomb, "bomb.zip")]},
                           content_type="multipart/form-data")
    assert response.status_code == 413 and response.is_json
    assert response.json["error"]["code"] == "request_too_large"
    assert "DIGITS_MAX_EXPANDED_BYTES" in response.json["error"]["message"]
    job = client.post("/api/v1/jobs", data={"open": "true"},
                      content_type="multipart/form-data").json
    bomb.seek(0)
    added = client.post(f"/api/v1/jobs/{job['id']}/images", data={"files": (bomb, "b.zip")},
                        content_type="multipart/form-data")
    assert added.status_code == 413
    with db.session() as s:  # the files sent beside the bomb were not stored either
        assert s.scalar(select(func.count()).select_from(Item)) == 0
        assert s.scalar(select(func.count()).select_from(Job)) == 1


def _uploads(n: int, prefix: str = "u") -> list[Upload]:
    return [Upload(f"{prefix}{i}.png", _image(i, 4096)) for i in range(n)]


def _open_job() -> str:
    job_id, _ = svc.create_job(make_celery(get_settings()), "local", [], True, None, None)
    return job_id


def _slow_inserts(monkeypatch, seconds: float, rows: int) -> None:
    """Each run of `rows` takes `seconds` inside its transaction (a slow disk)."""
    monkeypatch.setattr(svc, "RUN_ROWS", rows)
    insert = svc._insert_items

    def slow(session, rows):
        queued = insert(session, rows)  # the write lock is held from here to the commit
        time.sleep(seconds)
        return queued

    monkeypatch.setattr(svc, "_insert_items", slow)


def test_a_long_add_lets_other_writers_in_between_its_runs(client, monkeypatch):
    """On SQLite a long add holds the write lock a run at a time: a writer waits for a
    run at most, not for the add (16 runs of 0.25 s here)."""
    other = _open_job()
    job_id = _open_job()
    _slow_inserts(monkeypatch, 0.25, 5)
    celery = make_celery(get_settings())
    done = threading.Event()

    def add() -> None:
        try:
            svc.add_images(celery, "local", job_id, _uploads(80), "long-add")
        finally:
            done.set()

    started = time.monotonic()
    threading.Thread(target=add).start()
    waits = []
    # A writer as a worker is one: a short write now and then (every 50 ms here).
    while not done.wait(0.05) and time.monotonic() < started + 60:
        t0 = time.monotonic()
        with db.session() as s:  # what a worker's result write does
            s.execute(update(Job).where(Job.id == other).values(model_version=str(t0)))
        waits.append(time.monotonic() - t0)
        if len(waits) % 3 == 0:  # and another add, of one image
            t0 = time.monotonic()
            svc.add_images(celery, "local", other, _uploads(1, f"o{len(waits)}"))
            waits.append(time.monotonic() - t0)
    took = time.monotonic() - started
    assert done.wait(30)
    assert 4 < took < 30 and len(waits) >= 6, (took, len(waits))
    assert max(waits) < 1.5, f"a writer waited {max(waits):.2f} s during a {took:.1f} s add"
    with db.session() as s:
        assert s.get(Job, job_id).total == 80


def _count(job_id: str) -> tuple[int, int]:
    with db.session() as s:
        rows = s.scalar(select(func.count()).where(Item.job_id == job_id))
        names = s.scalar(select(func.count(func.distinct(Item.filename)))
                         .where(Item.job_id == job_id))
    return rows, names


def test_a_retried_add_that_stopped_half_way_stores_only_the_rest(any_client, monkeypatch):
    job_id = _open_job()
    celery = make_celery(get_settings())
    monkeypatch.setattr(svc, "RUN_ROWS", 10)
    store = svc._store_run
    runs = []

    def dies_after_three(*args):
        if len(runs) == 3:
            raise ConnectionError("the request's process went away")
        runs.append(args[1])
        return store(*args)

    monkeypatch.setattr(svc, "_store_run", dies_after_three)
    with pytest.raises(ConnectionError):
        svc.add_images(celery, "local", job_id, _uploads(45), "half")
    assert _count(job_id) == (30, 30)
    monkeypatch.setattr(svc, "_store_run", store)
    assert svc.add_images(celery, "local", job_id, _uploads(45), "half") == (45, False)
    assert _count(job_id) == (45, 45)
    assert svc.add_images(celery, "local", job_id, _uploads(45), "half") == (45, True)
    with db.session() as s:
        assert s.get(Job, job_id).total == 45


def test_a_create_with_files_retried_after_stopping_half_way_is_whole_and_sealed(
        any_client, monkeypatch):
    celery = make_celery(get_settings())
    monkeypatch.setattr(svc, "RUN_ROWS", 10)
    store = svc._store_run
    calls = []

    def dies_after_two(*args):
        calls.append(1)
        if len(calls) == 3:
            raise ConnectionError("gone")
        return store(*args)

    monkeypatch.setattr(svc, "_store_run", dies_after_two)
    with pytest.raises(ConnectionError):
        svc.create_job(celery, "local", _uploads(25), False, "create-1", None)
    monkeypatch.setattr(svc, "_store_run", store)
    job_id, created = svc.create_job(celery, "local", _uploads(25), False, "create-1", None)
    assert not created and _count(job_id) == (25, 25)
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job.total == 25 and not job.open  # sealed once whole, as the create asked
    assert svc.create_job(celery, "local", _uploads(25), False, "create-1", None) == (
        job_id, False)
    assert _count(job_id) == (25, 25)


def test_a_request_replaced_by_its_retry_stores_nothing_more(any_client, monkeypatch):
    job_id = _open_job()
    celery = make_celery(get_settings())
    monkeypatch.setattr(svc, "RUN_ROWS", 10)
    store = svc._store_run
    first_run_done, retry_done = threading.Event(), threading.Event()

    def paused_after_one_run(*args):
        ids = store(*args)
        if threading.current_thread().name == "first" and not first_run_done.is_set():
            first_run_done.set()
            assert retry_done.wait(30)
        return ids

    monkeypatch.setattr(svc, "_store_run", paused_after_one_run)
    outcome = {}

    def first():
        try:
            svc.add_images(celery, "local", job_id, _uploads(30), "k")
        except ApiError as exc:
            outcome["error"] = exc.code

    thread = threading.Thread(target=first, name="first")
    thread.start()
    assert first_run_done.wait(30)
    assert svc.add_images(celery, "local", job_id, _uploads(30), "k") == (30, False)
    retry_done.set()
    thread.join(30)
    assert outcome == {"error": "add_taken_over"}
    assert _count(job_id) == (30, 30)
