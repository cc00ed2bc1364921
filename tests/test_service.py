"""End-to-end tests of the service on the live local stack: the gunicorn API, real
Celery worker processes, a real Redis and SQLite (see conftest.live_stack)."""

from __future__ import annotations

import io
import uuid
import zipfile

import pytest

from tests.conftest import mnist_png_bytes, tiff_scan, wait_for

pytestmark = pytest.mark.slow


def files_of(digits):
    return [("files", (name, data, "image/png")) for name, data, _ in digits]


def zip_of(digits) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data, _ in digits:
            archive.writestr(f"scans/{name}", data)
    return buffer.getvalue()


def all_results(stack, job_id: str, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        query = {"limit": 150, **params, **({"cursor": cursor} if cursor else {})}
        page = stack.get(f"/api/v1/jobs/{job_id}/results", params=query).json()
        items += page["data"]
        if not page["has_more"]:
            return items
        cursor = page["next_cursor"]


def accuracy(items, digits) -> float:
    truth = {f"scans/{name}": label for name, _, label in digits}
    truth.update({name: label for name, _, label in digits})
    return sum(item["digit"] == truth[item["filename"]] for item in items) / len(digits)


def test_zips_and_an_open_job_fed_in_several_requests(live_stack):
    digits = mnist_png_bytes(0, 600)
    create = live_stack.post("/api/v1/jobs", data={"open": "true"},
                             files=[("files", ("part1.zip", zip_of(digits[:200]),
                                               "application/zip"))])
    assert create.status_code == 202, create.text
    job = create.json()
    assert job["open"] is True and job["counts"]["total"] == 200
    more = live_stack.post(f"/api/v1/jobs/{job['id']}/images",
                           files=[("files", ("part2.zip", zip_of(digits[200:400]), "x"))])
    assert more.status_code == 202 and more.json()["added"] == 200
    plain = live_stack.post(f"/api/v1/jobs/{job['id']}/images", files=files_of(digits[400:]))
    assert plain.json()["added"] == 200
    # An open job cannot finish, however fast the workers are.
    assert live_stack.get(f"/api/v1/jobs/{job['id']}").json()["status"] in ("queued", "running")
    sealed = live_stack.post(f"/api/v1/jobs/{job['id']}/seal")
    assert sealed.status_code == 200 and sealed.json()["open"] is False

    final = live_stack.wait_job(job["id"])
    assert final["status"] == "succeeded"
    assert final["counts"]["total"] == 600 and final["counts"]["pending"] == 0
    assert final["started_at"] and final["finished_at"]
    items = all_results(live_stack, job["id"])
    assert len(items) == 600 and len({i["id"] for i in items}) == 600
    assert accuracy(items, digits) >= 0.99
    assert all(len(i["probabilities"]) == 10 for i in items if i["status"] == "done")
    # More images after sealing are refused, with a JSON error.
    late = live_stack.post(f"/api/v1/jobs/{job['id']}/images", files=files_of(digits[:1]))
    assert late.status_code == 409 and late.json()["error"]["code"] == "job_sealed"


def test_bad_files_fail_alone_and_the_job_goes_on(live_stack):
    good = mnist_png_bytes(1000, 20)
    png = good[0][1]
    bad = [
        ("files", ("empty.png", b"", "image/png")),
        ("files", ("notes.txt", b"this is not an image", "text/plain")),
        ("files", ("truncated.png", png[: len(png) // 2], "image/png")),
        ("files", ("garbage.jpg", b"\xff\xd8\xff" + b"\x00" * 200, "image/jpeg")),
    ]
    job = live_stack.post("/api/v1/jobs", files=files_of(good) + bad).json()
    final = live_stack.wait_job(job["id"])
    assert final["status"] == "succeeded"
    assert final["counts"]["failed"] == 4 and final["counts"]["done"] == 20
    failed = {i["filename"]: i["error"] for i in all_results(live_stack, job["id"],
                                                             status="failed")}
    assert set(failed) == {"empty.png", "notes.txt", "truncated.png", "garbage.jpg"}
    assert failed["empty.png"].startswith("empty")
    assert failed["notes.txt"].startswith("unsupported_format")
    assert failed["truncated.png"].startswith("corrupt")
    csv_text = live_stack.get(f"/api/v1/jobs/{job['id']}/results", params={"format": "csv"}).text
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("id,filename,status,digit,confidence,needs_review,error")
    assert len(lines) == 25


def test_idempotency_key_returns_the_same_job(live_stack):
    key = str(uuid.uuid4())
    digits = mnist_png_bytes(2000, 5)
    first = live_stack.post("/api/v1/jobs", files=files_of(digits),
                            headers={"Idempotency-Key": key})
    second = live_stack.post("/api/v1/jobs", files=files_of(digits),
                             headers={"Idempotency-Key": key})
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert live_stack.wait_job(first.json()["id"])["counts"]["total"] == 5


def test_cancel_stops_the_remaining_work(live_stack):
    digits = mnist_png_bytes(0, 3000)
    archive = [("files", ("all.zip", zip_of(digits), "application/zip"))]
    job = live_stack.post("/api/v1/jobs", files=archive).json()
    cancelled = live_stack.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["status"] == "cancelled" and body["counts"]["pending"] == 0
    assert body["counts"]["cancelled"] > 0
    done_then = body["counts"]["done"]
    # Workers still draining the queued chunks must not write onto cancelled items.
    wait_for(lambda: live_stack.post("/api/v1/predict", files={"image": digits[0][1]}).ok,
             30, what="the stack to answer")
    final = live_stack.get(f"/api/v1/jobs/{job['id']}").json()
    assert final["status"] == "cancelled"
    assert final["counts"]["done"] == done_then
    assert final["counts"]["done"] + final["counts"]["cancelled"] == 3000


def test_predict_answers_while_a_large_bulk_job_runs(live_stack):
    """Predictions sent while a large bulk job is running are answered, and right. (Not
    whether the job is still running when they come back: the API stores the job's
    images a run at a time while workers take them, so a fast stack may have finished
    most of it by the time the job is seen running.)"""
    digits = mnist_png_bytes(0, 8000)
    archive = [("files", ("all.zip", zip_of(digits), "application/zip"))]
    job = live_stack.post("/api/v1/jobs", files=archive).json()
    wait_for(lambda: live_stack.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "running",
             60, what="the bulk job to start")
    answers = []
    for name, data, label in mnist_png_bytes(9000, 5):
        response = live_stack.post("/api/v1/predict", files={"image": (name, data)})
        assert response.status_code == 200, response.text
        answers.append(response.json()["digit"] == label)
    assert sum(answers) >= 4
    live_stack.post(f"/api/v1/jobs/{job['id']}/cancel")


def test_predict_refuses_what_is_not_an_image(live_stack):
    response = live_stack.post("/api/v1/predict", files={"image": ("a.txt", b"hello")})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unsupported_format"


def test_unknown_job_and_owner_isolation(live_stack):
    missing = live_stack.get("/api/v1/jobs/job_doesnotexist")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
    team_a, team_b = live_stack.key("team-a"), live_stack.key("team-b")
    job = live_stack.post("/api/v1/jobs", files=files_of(mnist_png_bytes(0, 1)),
                          headers=team_a).json()
    assert job["owner"] == "team-a"
    other = live_stack.get(f"/api/v1/jobs/{job['id']}", headers=team_b)
    assert other.status_code == 404
    # Without a key, the open local stack is the `local` account: not team-a either.
    assert live_stack.get(f"/api/v1/jobs/{job['id']}").status_code == 404
    listed = live_stack.get("/api/v1/jobs", headers=team_a).json()
    assert [j["id"] for j in listed["data"]] == [job["id"]]


def test_job_list_paginates(live_stack):
    owner = live_stack.key(f"pager-{uuid.uuid4().hex[:6]}")
    ids = [live_stack.post("/api/v1/jobs", files=files_of(mnist_png_bytes(i, 1)),
                           headers=owner).json()["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        page = live_stack.get("/api/v1/jobs", headers=owner,
                              params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [j["id"] for j in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == list(reversed(ids))


def test_results_filter_by_status_and_review_flag(live_stack):
    digits = mnist_png_bytes(3000, 30)
    blank = ("files", ("blank.png", _blank_png(), "image/png"))
    job = live_stack.post("/api/v1/jobs", files=[*files_of(digits), blank]).json()
    live_stack.wait_job(job["id"])
    no_digit = all_results(live_stack, job["id"], status="no_digit")
    assert [i["filename"] for i in no_digit] == ["blank.png"]
    assert no_digit[0]["digit"] is None
    flagged = all_results(live_stack, job["id"], needs_review="true")
    unflagged = all_results(live_stack, job["id"], needs_review="false")
    assert len(flagged) + len(unflagged) == 31
    assert all(i["needs_review"] for i in flagged)
    bad = live_stack.get(f"/api/v1/jobs/{job['id']}/results", params={"status": "bogus"})
    assert bad.status_code == 400


def _blank_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (64, 64), 240).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_of(response):
    """The response's PNG, opened and decoded."""
    from PIL import Image

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/png"
    img = Image.open(io.BytesIO(response.content), formats=["PNG"])
    img.load()
    return img


def test_results_keep_a_thumbnail_and_the_model_input(live_stack):
    (png_name, png, _), (_, other, _) = mnist_png_bytes(4100, 2)
    uploads = [
        ("files", (png_name, png, "image/png")),
        ("files", ("scan.tif", tiff_scan(other, 200, 120), "image/tiff")),
        ("files", ("scan16.tif", tiff_scan(other, 150, 300, sixteen_bit=True), "image/tiff")),
        ("files", ("blank.png", _blank_png(), "image/png")),
        ("files", ("broken.png", png[: len(png) // 2], "image/png")),
    ]
    job = live_stack.post("/api/v1/jobs", files=uploads).json()
    live_stack.wait_job(job["id"])
    items = {i["filename"]: i for i in all_results(live_stack, job["id"])}
    assert [items[n]["status"] for n in (png_name, "scan.tif", "scan16.tif", "blank.png",
                                         "broken.png")] == ["done"] * 3 + ["no_digit", "failed"]

    # A small PNG is its own thumbnail; TIFFs, which browsers cannot draw, become PNGs
    # of at most 96 px, their aspect kept; 16-bit ones stretched to 8 bits.
    thumb = live_stack.get(items[png_name]["links"]["thumbnail"])
    assert thumb.content == png and _png_of(thumb).size == (28, 28)
    assert _png_of(live_stack.get(items["scan.tif"]["links"]["thumbnail"])).size == (96, 58)
    deep = _png_of(live_stack.get(items["scan16.tif"]["links"]["thumbnail"]))
    assert deep.size == (48, 96) and deep.mode == "L"
    assert deep.getextrema() == (0, 255)
    assert _png_of(live_stack.get(items["blank.png"]["links"]["thumbnail"])).size == (64, 64)
    for name in (png_name, "scan.tif", "scan16.tif", "blank.png"):
        seen = _png_of(live_stack.get(items[name]["links"]["model_input"]))
        assert (seen.mode, seen.size) == ("L", (28, 28)), name
        black = seen.getextrema() == (0, 0)
        assert black == (name == "blank.png"), name  # a blank page gives a black input

    # A failed image has neither; its upload is still served as it was.
    broken = items["broken.png"]
    assert set(broken["links"]) == {"image"}
    base = f"/api/v1/jobs/{job['id']}/items/{broken['id']}"
    for path in ("thumbnail", "model-input"):
        missing = live_stack.get(f"{base}/{path}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "image_not_available"
        assert "failed" in missing.json()["error"]["message"]
    assert live_stack.get(f"{base}/image").content == png[: len(png) // 2]
    # The job's owner only; unknown items are a 404 too.
    other_owner = live_stack.get(items[png_name]["links"]["thumbnail"],
                                 headers=live_stack.key("someone-else"))
    assert other_owner.status_code == 404
    assert other_owner.json()["error"]["code"] == "job_not_found"
    unknown = live_stack.get(f"/api/v1/jobs/{job['id']}/items/999999999/model-input")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "item_not_found"
