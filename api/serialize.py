"""JSON shapes of the API (documented in api/openapi.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Row

from shared import csvsafe, retention
from shared.models import ItemStatus, Job
from shared.settings import get_settings

PREFIX = "/api/v1"


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they were stored in UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat().replace("+00:00", "Z")


def job(j: Job, counts: dict[str, int]) -> dict:
    base = f"{PREFIX}/jobs/{j.id}"
    return {
        "id": j.id,
        "object": "job",
        "status": j.status,
        "open": j.open,
        # "digit": each image one digit; "string": each image a field of digits read whole.
        "mode": j.mode,
        "owner": j.owner,
        "counts": counts,
        "created_at": iso(j.created_at),
        "started_at": iso(j.started_at),
        "finished_at": iso(j.finished_at),
        # Set when the job was sealed for want of images or a seal (open job expiry).
        "expired_at": iso(j.expired_at),
        "model_version": j.model_version,
        # When the job's images go (DIGITS_RETENTION_DAYS); null: kept, or not ended yet.
        "images_expire_at": iso(retention.expiry(j.finished_at, get_settings().retention_days)),
        "links": {
            "self": base,
            "results": f"{base}/results",
            "csv": f"{base}/results?format=csv",
            "images": f"{base}/images",
            "seal": f"{base}/seal",
            "cancel": f"{base}/cancel",
            "page": f"/jobs/{j.id}",
        },
    }


def item(i: Row) -> dict:
    """One result: `i` is a row of jobs_service.RESULT_COLUMNS (or an Item)."""
    base = f"{PREFIX}/jobs/{i.job_id}/items/{i.id}"
    links = {"image": f"{base}/image"}
    if i.status in (ItemStatus.DONE, ItemStatus.NO_DIGIT):
        # Stored with the result (a 404 for results written before they were kept).
        links.update(thumbnail=f"{base}/thumbnail", model_input=f"{base}/model-input")
    return {
        "id": i.id,
        "filename": i.filename,
        "status": i.status,
        "digit": i.digit,
        "confidence": i.confidence,
        "probabilities": i.probabilities,
        "needs_review": bool(i.needs_review),
        "error": i.error,
        # String mode: the digits left to right, and per digit its confidence and box.
        "text": i.text,
        "digits": i.digits,
        "links": links,
    }


CSV_COLUMNS = ["id", "filename", "status", "digit", "confidence", "needs_review", "error",
               *[f"p{d}" for d in range(10)], "text"]


def csv_row(i: Row) -> list:
    probs = i.probabilities or [None] * 10
    conf = None if i.confidence is None else f"{i.confidence:.6f}"
    # Filenames and errors come from the uploader: neutralised against spreadsheet formulas.
    return [i.id, csvsafe.cell(i.filename), i.status, i.digit, conf,
            str(bool(i.needs_review)).lower(), csvsafe.cell(i.error),
            *(None if p is None else f"{p:.6f}" for p in probs), i.text]
