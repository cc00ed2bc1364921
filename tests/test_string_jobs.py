"""String mode end to end on the live local stack: a job of digit strings (mode=string)
read by real worker processes beside a digit job, its results, counts and CSV."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from shared.fields import MAX_FIELD_WIDTH
from tests.test_service import all_results

pytestmark = pytest.mark.slow


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def test_a_string_job_reads_fields_whole(live_stack, data_dir):
    from training.strings import generated_strings

    made = generated_strings(data_dir, seed=1616, mix={4: 10, 6: 10})
    blank = _png(np.full((40, 160), 255, np.uint8))
    wide = _png(np.full((30, MAX_FIELD_WIDTH + 10), 255, np.uint8))
    files = [("files", (name, blob, "image/png"))
             for name, blob in zip(made.files, made.blobs, strict=True)]
    files += [("files", ("blank.png", blank, "image/png")),
              ("files", ("wide.png", wide, "image/png"))]
    create = live_stack.post("/api/v1/jobs", data={"mode": "string"}, files=files)
    assert create.status_code == 202, create.text
    assert create.json()["mode"] == "string"
    job = live_stack.wait_job(create.json()["id"])
    assert job["status"] == "succeeded" and job["mode"] == "string"
    # Counts count items (fields), not digits.
    assert job["counts"]["total"] == 22 and job["counts"]["failed"] == 1
    items = {i["filename"]: i for i in all_results(live_stack, job["id"])}
    right = 0
    for name, text in zip(made.files, made.labels, strict=True):
        item = items[name]
        assert item["status"] == "done"
        assert item["digit"] is None and item["probabilities"] is None
        assert len(item["digits"]) == len(item["text"])
        assert all(len(d["box"]) == 4 and 0 <= d["confidence"] <= 1 for d in item["digits"])
        if any(d["confidence"] < 0.9 for d in item["digits"]):
            assert item["needs_review"], item
        right += item["text"] == text
    assert right >= 15, f"{right} of 20 strings read right"  # about 9 in 10 measured
    assert items["blank.png"]["status"] == "no_digit" and items["blank.png"]["text"] is None
    assert items["wide.png"]["status"] == "failed"
    assert "too_wide" in items["wide.png"]["error"] and "4,096" in items["wide.png"]["error"]
    # The strip the model saw is kept as the item's model input.
    first = items[made.files[0]]
    strip = live_stack.get(first["links"]["model_input"])
    assert strip.status_code == 200 and Image.open(io.BytesIO(strip.content)).height == 32
    # The CSV gains `text` as its last column.
    table = live_stack.get(f"/api/v1/jobs/{job['id']}/results", params={"format": "csv"})
    rows = list(csv.reader(io.StringIO(table.text)))
    assert rows[0][-1] == "text"
    by_name = {r[1]: r for r in rows[1:]}
    assert by_name[made.files[0]][-1] == first["text"]


def test_a_digit_job_is_unchanged_and_a_bad_mode_is_refused(live_stack):
    from tests.conftest import mnist_png_bytes

    digits = mnist_png_bytes(0, 5)
    files = [("files", (n, d, "image/png")) for n, d, _ in digits]
    create = live_stack.post("/api/v1/jobs", files=files)
    assert create.json()["mode"] == "digit"
    job = live_stack.wait_job(create.json()["id"])
    items = all_results(live_stack, job["id"])
    assert all(i["text"] is None and i["digits"] is None for i in items)
    assert all(i["digit"] is not None for i in items)
    bad = live_stack.post("/api/v1/jobs", data={"mode": "words"}, files=files)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_mode"
