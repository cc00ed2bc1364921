"""Real responses from the live stack, checked against the served OpenAPI document."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from tests.conftest import mnist_png_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def validate(live_stack):
    document = live_stack.get("/api/v1/openapi.json").json()

    def check(body, path: str, method: str, status: int) -> None:
        response = document["paths"][path][method]["responses"][str(status)]
        schema = response["content"]["application/json"]["schema"]
        validator = Draft202012Validator({**schema, "components": document["components"]})
        errors = sorted(validator.iter_errors(body), key=str)
        assert not errors, f"{method.upper()} {path} {status}: {errors[0].message}"

    return check


def test_job_lifecycle_matches_the_document(live_stack, validate):
    digits = mnist_png_bytes(4000, 3)
    files = [("files", (name, data, "image/png")) for name, data, _ in digits]
    files.append(("files", ("bad.txt", b"nope", "text/plain")))
    created = live_stack.post("/api/v1/jobs", files=files, data={"open": "true"})
    validate(created.json(), "/api/v1/jobs", "post", created.status_code)
    job_id = created.json()["id"]

    added = live_stack.post(f"/api/v1/jobs/{job_id}/images", files=files[:1])
    validate(added.json(), "/api/v1/jobs/{job_id}/images", "post", added.status_code)
    sealed = live_stack.post(f"/api/v1/jobs/{job_id}/seal")
    validate(sealed.json(), "/api/v1/jobs/{job_id}/seal", "post", 200)
    final = live_stack.wait_job(job_id)
    validate(final, "/api/v1/jobs/{job_id}", "get", 200)

    results = live_stack.get(f"/api/v1/jobs/{job_id}/results", params={"limit": 2})
    validate(results.json(), "/api/v1/jobs/{job_id}/results", "get", 200)
    listed = live_stack.get("/api/v1/jobs")
    validate(listed.json(), "/api/v1/jobs", "get", 200)
    missing = live_stack.get("/api/v1/jobs/job_missing")
    validate(missing.json(), "/api/v1/jobs/{job_id}", "get", 404)
    late = live_stack.post(f"/api/v1/jobs/{job_id}/images", files=files[:1])
    validate(late.json(), "/api/v1/jobs/{job_id}/images", "post", 409)


def test_string_job_matches_the_document(live_stack, validate, data_dir):
    from training.strings import generated_strings

    made = generated_strings(data_dir, seed=7, mix={3: 2})
    files = [("files", (n, b, "image/png")) for n, b in zip(made.files, made.blobs, strict=True)]
    created = live_stack.post("/api/v1/jobs", files=files, data={"mode": "string"})
    validate(created.json(), "/api/v1/jobs", "post", created.status_code)
    final = live_stack.wait_job(created.json()["id"])
    validate(final, "/api/v1/jobs/{job_id}", "get", 200)
    results = live_stack.get(f"/api/v1/jobs/{final['id']}/results").json()
    validate(results, "/api/v1/jobs/{job_id}/results", "get", 200)
    assert all(i["digits"] is not None for i in results["data"] if i["status"] == "done")
    bad = live_stack.post("/api/v1/jobs", files=files, data={"mode": "nope"})
    validate(bad.json(), "/api/v1/jobs", "post", 400)


def test_predict_and_health_match_the_document(live_stack, validate):
    name, data, _ = mnist_png_bytes(5, 1)[0]
    predicted = live_stack.post("/api/v1/predict", files={"image": (name, data)})
    validate(predicted.json(), "/api/v1/predict", "post", 200)
    refused = live_stack.post("/api/v1/predict", files={"image": ("x.txt", b"text")})
    validate(refused.json(), "/api/v1/predict", "post", 422)
    validate(live_stack.get("/healthz").json(), "/healthz", "get", 200)
    validate(live_stack.get("/readyz").json(), "/readyz", "get", 200)
    validate(live_stack.get("/api/v1/status").json(), "/api/v1/status", "get", 200)


def test_item_images_match_the_document(live_stack, validate):
    document = live_stack.get("/api/v1/openapi.json").json()
    name, data, _ = mnist_png_bytes(4010, 1)[0]
    files = [("files", (name, data, "image/png")), ("files", ("bad.png", b"\x89PNG\r\n\x1a\n",
                                                              "image/png"))]
    job_id = live_stack.post("/api/v1/jobs", files=files).json()["id"]
    live_stack.wait_job(job_id)
    items = live_stack.get(f"/api/v1/jobs/{job_id}/results").json()["data"]
    done, failed = sorted(items, key=lambda i: i["status"] == "failed")
    for link, path in (("thumbnail", "thumbnail"), ("model_input", "model-input")):
        template = "/api/v1/jobs/{job_id}/items/{item_id}/" + path
        response = live_stack.get(done["links"][link])
        assert response.status_code == 200
        documented = document["paths"][template]["get"]["responses"]["200"]["content"]
        assert response.headers["Content-Type"] in documented
        missing = live_stack.get(f"/api/v1/jobs/{job_id}/items/{failed['id']}/{path}")
        validate(missing.json(), template, "get", missing.status_code)
