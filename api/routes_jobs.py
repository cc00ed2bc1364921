"""Job endpoints under /api/v1: create, feed, seal, poll, page through results, cancel."""

from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, current_app, jsonify, request

from api import auth, limits, serialize
from api import jobs_service as svc
from api.errors import ApiError
from api.turns import taking_turns
from api.uploads import collect
from shared import db, jobstate
from shared.formats import sniff_format
from shared.models import Item, ItemStatus, JobMode
from shared.settings import get_settings

bp = Blueprint("jobs", __name__, url_prefix="/api/v1")

def owner() -> str | None:
    """The account whose jobs the caller may touch (api/auth.py); None for an admin key,
    which sees every account's. New jobs belong to the caller's own account."""
    return auth.scope()


def _uploads():
    files = [f for key in request.files for f in request.files.getlist(key)]
    # The zips of a request may expand to at most max_expanded_bytes, together: enough
    # for PNG scans, not a bomb; and hold at most max_zip_members members, together.
    settings = get_settings()
    return collect(files, settings.max_image_bytes, settings.max_expanded_bytes,
                   settings.max_zip_members)


def _queued(uploads) -> int:
    # At most this many will wait: counted from the zips' directories, nothing read yet.
    return len(uploads)


def _flag(name: str) -> bool | None:
    value = request.args.get(name) if name in request.args else request.form.get(name)
    if value is None or value == "":
        return None
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ApiError(400, "bad_parameter", f"{name} must be true or false")


def request_mode() -> str:
    """mode=digit (each image one digit, the default) or mode=string (a field of digits
    read whole), from the query or the form."""
    value = request.args.get("mode") or request.form.get("mode") or JobMode.DIGIT
    if value not in JobMode.ALL:
        raise ApiError(400, "bad_mode", f"mode must be one of {', '.join(JobMode.ALL)}, "
                                        f"not {value[:40]!r}")
    return value


def _job_body(job_id: str) -> dict:
    with db.session() as s:
        job = svc.get_job(s, owner(), job_id)
        return serialize.job(job, jobstate.counts(s, [job_id])[job_id])


def _celery():
    return current_app.extensions["celery"]


@bp.post("/jobs")
def create_job():
    key = request.headers.get("Idempotency-Key")
    uploads = _uploads()
    limits.check_pending(auth.owner(), _queued(uploads))
    job_id, created = svc.create_job(_celery(), auth.owner(), uploads, bool(_flag("open")),
                                     key[:200] if key else None,
                                     current_app.config.get("MODEL_VERSION"), request_mode())
    body = _job_body(job_id)
    headers = {"Location": body["links"]["self"]}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(body), 202, headers


@bp.get("/jobs")
def list_jobs():
    limit = request.args.get("limit", 20, type=int)
    limit = max(1, min(limit, 100))
    with db.session() as s:
        jobs = svc.list_jobs(s, owner(), request.args.get("cursor"), limit + 1)
        more = len(jobs) > limit
        jobs = jobs[:limit]
        counts = jobstate.counts(s, [j.id for j in jobs])
        data = [serialize.job(j, counts[j.id]) for j in jobs]
    return jsonify({"object": "list", "data": data, "has_more": more,
                    "next_cursor": data[-1]["id"] if more else None})


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    return jsonify(_job_body(job_id))


@bp.post("/jobs/<job_id>/images")
def add_images(job_id: str):
    key = request.headers.get("Idempotency-Key")
    uploads = _uploads()
    limits.check_pending(auth.owner(), _queued(uploads))
    added, replayed = svc.add_images(_celery(), owner(), job_id, uploads,
                                     key[:200] if key else None)
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return jsonify({"job": _job_body(job_id), "added": added}), 202, headers


@bp.post("/jobs/<job_id>/seal")
def seal(job_id: str):
    svc.seal(owner(), job_id)
    return jsonify(_job_body(job_id))


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str):
    svc.cancel(owner(), job_id)
    return jsonify(_job_body(job_id))


@bp.delete("/jobs/<job_id>")
def delete_job(job_id: str):
    """The job, its images, thumbnails and results, gone; cancelled first if running."""
    removed = svc.delete(owner(), job_id)
    return jsonify({"id": job_id, "object": "job", "deleted": True, "items_deleted": removed})


def _status_filter() -> list[str] | None:
    raw = request.args.get("status")
    if not raw:
        return None
    statuses = [v.strip() for v in raw.split(",") if v.strip()]
    known = {ItemStatus.PENDING, *ItemStatus.FINISHED}
    unknown = [v for v in statuses if v not in known]
    if unknown:
        raise ApiError(400, "bad_parameter",
                       f"unknown status {unknown[0]!r}; use one of {', '.join(sorted(known))}")
    return statuses


@bp.get("/jobs/<job_id>/results")
def results(job_id: str):
    statuses, review = _status_filter(), _flag("needs_review")
    with db.session() as s:
        svc.get_job(s, owner(), job_id)
    if request.args.get("format") == "csv":
        return _csv(job_id, statuses, review)
    limit = max(1, min(request.args.get("limit", get_settings().page_size, type=int), 1000))
    after = svc.decode_cursor(request.args.get("cursor"))
    with db.session() as s:
        page = svc.result_page(s, job_id, after, limit + 1, statuses, review)
    more = len(page) > limit
    page = page[:limit]
    return jsonify({"object": "list", "data": [serialize.item(i) for i in taking_turns(page)],
                    "has_more": more,
                    "next_cursor": svc.encode_cursor(page[-1].id) if more else None})


def _csv(job_id: str, statuses, review) -> Response:
    def rows():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(serialize.CSV_COLUMNS)
        for n, item in enumerate(svc.iter_results(job_id, statuses, review), 1):
            writer.writerow(serialize.csv_row(item))
            if n % 500 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    return Response(rows(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{job_id}-results.csv"'})


# Why an item has no thumbnail or model input, by its status.
_NO_FILE = {
    ItemStatus.PENDING: "is not finished yet: its {what} comes with its result",
    ItemStatus.FAILED: "failed: an image that cannot be read has no {what}",
    ItemStatus.CANCELLED: "was cancelled before it was classified",
}


def _item_file(job_id: str, item_id: int, column, what: str) -> Response:
    """One stored file of an item, served as it is: its type comes from its magic bytes."""
    with db.session() as s:
        status, content = svc.item_file(s, owner(), job_id, item_id, column)
    if content is None:
        why = _NO_FILE.get(status, "has no {what}: it was classified before they were kept")
        raise ApiError(404, "image_not_available", f"item {item_id} " + why.format(what=what))
    if content == b"" and status != ItemStatus.FAILED:  # an empty upload failed as such
        raise ApiError(404, "image_deleted", f"item {item_id}'s {what} was deleted "
                       "after its job ended (DIGITS_RETENTION_DAYS); its result stays")
    fmt = sniff_format(content)
    mimetype = f"image/{fmt.lower()}" if fmt else "application/octet-stream"
    return Response(content, mimetype=mimetype,
                    headers={"Cache-Control": "private, max-age=3600",
                             "X-Content-Type-Options": "nosniff"})


@bp.get("/jobs/<job_id>/items/<int:item_id>/image")
def item_image(job_id: str, item_id: int):
    return _item_file(job_id, item_id, Item.content, "image")


@bp.get("/jobs/<job_id>/items/<int:item_id>/thumbnail")
def item_thumbnail(job_id: str, item_id: int):
    """The source image at most 96 px, in a format browsers draw (PNG when re-encoded)."""
    return _item_file(job_id, item_id, Item.thumbnail, "thumbnail")


@bp.get("/jobs/<job_id>/items/<int:item_id>/model-input")
def item_model_input(job_id: str, item_id: int):
    """The 28x28 greyscale PNG the model was given."""
    return _item_file(job_id, item_id, Item.model_input, "model input")
