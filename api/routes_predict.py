"""POST /api/v1/predict: one image, answered synchronously through the interactive queue,
which its own worker serves, so it never waits behind bulk work."""

from __future__ import annotations

import base64

from celery.exceptions import TimeoutError as CeleryTimeout
from flask import Blueprint, current_app, jsonify, request

from api.errors import ApiError
from api.uploads import check
from shared.models import ItemStatus
from shared.queues import INTERACTIVE_QUEUE, PREDICT_IMAGE
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


@bp.post("/predict")
def predict():
    settings = get_settings()
    upload = check("image", _image_bytes(), settings.max_image_bytes)
    if upload.status == ItemStatus.FAILED:
        raise _unusable(upload.error)
    celery = current_app.extensions["celery"]
    pending = celery.send_task(PREDICT_IMAGE, args=[base64.b64encode(upload.content).decode()],
                               queue=INTERACTIVE_QUEUE,
                               argsrepr=f"[<image, {len(upload.content)} bytes>]")
    try:
        result = pending.get(timeout=settings.predict_timeout_s)
    except CeleryTimeout as exc:
        pending.revoke()
        raise ApiError(504, "timeout", f"no worker answered within {settings.predict_timeout_s:g} "
                       "s; is an interactive worker running?") from exc
    finally:
        pending.forget()
    if result["status"] == ItemStatus.FAILED:
        raise _unusable(result.get("error"))
    return jsonify({"object": "prediction", **result})
