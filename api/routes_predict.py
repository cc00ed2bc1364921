"""POST /api/v1/predict: one image (a file part `image` or a raw body), or up to
DIGITS_PREDICT_MAX_IMAGES as `images` parts, each a digit or, with mode=string, a field
of digits read whole, answered synchronously through the
interactive lane (shared.lane), which its own workers serve, so it never waits behind
bulk work. In the several-image form each image is answered alone: one that is not
usable fails with its error, the others are classified."""

from __future__ import annotations

import functools

from flask import Blueprint, current_app, jsonify, request
from limits import parse_many

from api import auth
from api.errors import ApiError
from api.routes_jobs import request_mode
from api.uploads import Upload, check
from shared import lane, logs
from shared.celery_app import redis_client
from shared.models import ItemStatus
from shared.settings import get_settings

bp = Blueprint("predict", __name__, url_prefix="/api/v1")


def _uploads() -> tuple[list[Upload], bool]:
    """The images sent, checked, and whether the caller asked for a list (`images`)."""
    limit = get_settings().max_image_bytes
    if "images" in request.files:
        files = request.files.getlist("images")
        most = get_settings().predict_max_images
        if len(files) > most or len(request.files) > 1:
            raise ApiError(400, "too_many_images",
                           f"send at most {most} images as `images` parts, and nothing "
                           "else; use /jobs for more")
        return [check(f.filename or "image", f.read(), limit) for f in files], True
    files = [f for key in request.files for f in request.files.getlist(key)]
    if len(files) > 1:
        raise ApiError(400, "one_image", "send one image as `image` (or the body), or up to "
                       f"{get_settings().predict_max_images} as `images` parts")
    data = files[0].read() if files else request.get_data()  # a raw image body works too
    return [check("image", data, limit)], False


def _unusable(error: str | None) -> ApiError:
    """Item errors read "code: message" (the API's checks and the worker's alike)."""
    code, _, message = (error or "").partition(": ")
    return ApiError(422, code or "bad_image", message or "not a usable image")


def _lane() -> lane.Lane:
    found = current_app.extensions.get("lane")
    if found is None:
        settings = get_settings()
        # Its own pool: a waiting BLPOP must outlast the read timeout of the ops client.
        client = redis_client(socket_timeout=settings.predict_timeout_s + 5,
                              socket_connect_timeout=2)
        found = lane.Lane(client, settings.predict_max_waiting, settings.predict_timeout_s)
        current_app.extensions["lane"] = found
    return found


@functools.cache
def _parsed(text: str) -> list[tuple[int, int]]:
    return [(item.amount, item.get_expiry()) for item in parse_many(text)]


def _rates() -> list[tuple[int, int]]:
    """DIGITS_PREDICT_RATE_LIMIT (Flask-Limiter's syntax) as (amount, seconds) pairs."""
    return _parsed(get_settings().predict_rate_limit)


@bp.post("/predict")
def predict():
    settings = get_settings()
    uploads, many = _uploads()
    if not many and uploads[0].status == ItemStatus.FAILED:
        raise _unusable(uploads[0].error)
    usable = [u for u in uploads if u.status != ItemStatus.FAILED]
    caller = auth.principal()
    mode = request_mode()
    try:
        answers = iter(_lane().ask_many(
            [u.content for u in usable], logs.REQUEST_ID.get() or logs.new_request_id(),
            # Calls with a key count against the account's predict rate, an image each.
            caller.account if caller.key_id else None, _rates(), mode) if usable else [])
    except lane.RateLimited as exc:
        raise ApiError(429, "rate_limited",
                       f"account {caller.account!r} is past its limit of "
                       f"{settings.predict_rate_limit} on /predict; wait for "
                       "Retry-After seconds",
                       headers={"Retry-After": str(exc.retry_after_s)}) from exc
    except lane.LaneBusy as exc:
        # A second is several full batches of every lane worker.
        raise ApiError(503, "busy", f"the interactive lane is full ({exc}); try again",
                       headers={"Retry-After": "1"}) from exc
    except lane.LaneTimeout as exc:
        raise ApiError(504, "timeout", f"{exc}; is an interactive worker running? "
                       "(digits worker --queues interactive)") from exc
    if not many:
        result = next(answers)
        if result["status"] == ItemStatus.FAILED:
            raise _unusable(result.get("error"))
        return jsonify({"object": "prediction", **result})
    data = [{"object": "prediction", "filename": u.filename,
             **(_refused(u) if u.status == ItemStatus.FAILED else next(answers))}
            for u in uploads]
    return jsonify({"object": "list", "data": data})


def _refused(upload: Upload) -> dict:
    """An image the API's checks refused, in the shape of a worker's failed answer."""
    return {"status": ItemStatus.FAILED, "digit": None, "confidence": None,
            "probabilities": None, "needs_review": False, "error": upload.error,
            "model_version": current_app.config.get("MODEL_VERSION")}
