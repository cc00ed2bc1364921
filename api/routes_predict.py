"""POST /api/v1/predict: one image, answered synchronously through the interactive
lane (shared.lane), which its own workers serve, so it never waits behind bulk work."""

from __future__ import annotations

import functools

import redis
from flask import Blueprint, current_app, jsonify, request
from limits import parse_many

from api import auth
from api.errors import ApiError
from api.uploads import check
from shared import lane, logs
from shared.celery_app import DEFAULT_REDIS_URL
from shared.models import ItemStatus
from shared.settings import get_settings

bp = Blueprint("predict", __name__, url_prefix="/api/v1")


def _image_bytes() -> bytes:
    files = [f for key in request.files for f in request.files.getlist(key)]
    if len(files) > 1:
        raise ApiError(400, "one_image", "send exactly one image to /predict; use /jobs for more")
    if files:
        return files[0].read()
    return request.get_data()  # a raw body with an image content type also works


def _unusable(error: str | None) -> ApiError:
    """Item errors read "code: message" (the API's checks and the worker's alike)."""
    code, _, message = (error or "").partition(": ")
    return ApiError(422, code or "bad_image", message or "not a usable image")


def _lane() -> lane.Lane:
    found = current_app.extensions.get("lane")
    if found is None:
        settings = get_settings()
        # Its own pool: a waiting BLPOP must outlast the read timeout of the ops client.
        client = redis.Redis.from_url(settings.redis_url or DEFAULT_REDIS_URL,
                                      socket_timeout=settings.predict_timeout_s + 5,
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
    upload = check("image", _image_bytes(), settings.max_image_bytes)
    if upload.status == ItemStatus.FAILED:
        raise _unusable(upload.error)
    caller = auth.principal()
    try:
        result = _lane().ask(upload.content, logs.REQUEST_ID.get() or logs.new_request_id(),
                             # Calls with a key count against the account's predict rate.
                             caller.account if caller.key_id else None, _rates())
    except lane.RateLimited as exc:
        raise ApiError(429, "rate_limited",
                       f"account {caller.account!r} is past its limit of "
                       f"{get_settings().predict_rate_limit} on /predict; wait for "
                       "Retry-After seconds",
                       headers={"Retry-After": str(exc.retry_after_s)}) from exc
    except lane.LaneBusy as exc:
        # A second is several full batches of every lane worker.
        raise ApiError(503, "busy", f"the interactive lane is full ({exc}); try again",
                       headers={"Retry-After": "1"}) from exc
    except lane.LaneTimeout as exc:
        raise ApiError(504, "timeout", f"{exc}; is an interactive worker running? "
                       "(digits worker --queues interactive)") from exc
    if result["status"] == ItemStatus.FAILED:
        raise _unusable(result.get("error"))
    return jsonify({"object": "prediction", **result})
