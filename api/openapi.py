"""The OpenAPI 3.1 document at /api/v1/openapi.json. tests/test_openapi.py checks real
responses against these schemas, so keep them in step with api/serialize.py."""

from __future__ import annotations

from flask import Blueprint, jsonify

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")

NULLABLE_STR = {"type": ["string", "null"]}
TIME = {"type": ["string", "null"], "format": "date-time"}
COUNTS = {
    "type": "object",
    "required": ["total", "pending", "done", "failed", "no_digit", "needs_review", "cancelled"],
    "properties": {k: {"type": "integer", "minimum": 0} for k in
                   ("total", "pending", "done", "failed", "no_digit", "needs_review",
                    "cancelled")},
    "description": "done = classified or no_digit; failed items never fail the whole job.",
}
JOB_STATUS = ["queued", "running", "succeeded", "failed", "cancelled"]
ITEM_STATUS = ["pending", "done", "no_digit", "failed", "cancelled"]
PROBS = {"type": ["array", "null"], "items": {"type": "number", "minimum": 0, "maximum": 1},
         "minItems": 10, "maxItems": 10}
MODE = {"enum": ["digit", "string"],
        "description": "digit: each image one digit (the default). string: each image a "
                       "field of digits (a postal code, an amount, a date) read whole; its "
                       "items carry `text` and `digits`, and `digit` and `probabilities` "
                       "stay null. Commas, dots, dashes, equals signs and ruled lines are "
                       "passed over. A field wider than 4,096 px or holding more than 20 "
                       "digits fails alone (too_wide, too_many_digits)."}
TEXT = {"type": ["string", "null"], "pattern": "^[0-9]*$",
        "description": "String mode: the digits read, left to right; null in digit mode."}
STRING_DIGITS = {
    "type": ["array", "null"],
    "description": "String mode: one entry per digit read, left to right; null in digit mode.",
    "items": {"type": "object", "required": ["digit", "confidence", "box"], "properties": {
        "digit": {"type": "integer", "minimum": 0, "maximum": 9},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "box": {"type": "array", "items": {"type": "integer", "minimum": 0},
                "minItems": 4, "maxItems": 4,
                "description": "left, top, right, bottom (exclusive) in the image's pixels"},
    }},
}

SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string"},
                                                "message": {"type": "string"}}}},
    },
    "Job": {
        "type": "object",
        "required": ["id", "object", "status", "open", "mode", "owner", "counts", "created_at",
                     "started_at", "finished_at", "model_version", "links"],
        "properties": {
            "id": {"type": "string", "pattern": "^job_[0-9a-f]{32}$"},
            "object": {"const": "job"},
            "status": {"enum": JOB_STATUS},
            "open": {"type": "boolean"},
            "mode": MODE,
            "owner": {"type": "string"},
            "counts": COUNTS,
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": TIME, "finished_at": TIME, "expired_at": TIME,
            "model_version": NULLABLE_STR,
            "images_expire_at": TIME,
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "Item": {
        "type": "object",
        "required": ["id", "filename", "status", "digit", "confidence", "probabilities",
                     "needs_review", "error", "text", "digits", "links"],
        "properties": {
            "id": {"type": "integer"},
            "filename": {"type": "string"},
            "status": {"enum": ITEM_STATUS},
            "digit": {"type": ["integer", "null"], "minimum": 0, "maximum": 9},
            "confidence": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                           "description": "String mode: the least sure digit's."},
            "probabilities": PROBS,
            "needs_review": {"type": "boolean",
                             "description": "String mode: set when any digit is unsure."},
            "error": NULLABLE_STR,
            "text": TEXT,
            "digits": STRING_DIGITS,
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "JobList": {
        "type": "object", "required": ["object", "data", "has_more", "next_cursor"],
        "properties": {"object": {"const": "list"},
                       "data": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                       "has_more": {"type": "boolean"}, "next_cursor": NULLABLE_STR},
    },
    "ItemList": {
        "type": "object", "required": ["object", "data", "has_more", "next_cursor"],
        "properties": {"object": {"const": "list"},
                       "data": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
                       "has_more": {"type": "boolean"}, "next_cursor": NULLABLE_STR},
    },
    "AddedImages": {
        "type": "object", "required": ["job", "added"],
        "properties": {"job": {"$ref": "#/components/schemas/Job"},
                       "added": {"type": "integer", "minimum": 0}},
    },
    "Prediction": {
        "type": "object",
        "required": ["object", "status", "digit", "confidence", "probabilities", "needs_review",
                     "model_version"],
        "properties": {
            "object": {"const": "prediction"},
            "status": {"enum": ["done", "no_digit"]},
            "digit": {"type": ["integer", "null"], "minimum": 0, "maximum": 9},
            "confidence": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "probabilities": PROBS,
            "needs_review": {"type": "boolean"},
            "error": NULLABLE_STR,
            "model_version": {"type": "string"},
            "text": TEXT,
            "digits": STRING_DIGITS,
        },
    },
    "PredictionList": {
        "type": "object", "required": ["object", "data"],
        "description": "The answers to an `images` call, in the order sent; each image is "
                       "answered alone, and one that is not usable fails with its error.",
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {
                "type": "object",
                "required": ["object", "filename", "status", "digit", "confidence",
                             "probabilities", "needs_review", "error", "model_version"],
                "properties": {
                    "object": {"const": "prediction"},
                    "filename": {"type": "string"},
                    "status": {"enum": ["done", "no_digit", "failed"]},
                    "digit": {"type": ["integer", "null"], "minimum": 0, "maximum": 9},
                    "confidence": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                    "probabilities": {"anyOf": [PROBS, {"type": "null"}]},
                    "needs_review": {"type": "boolean"},
                    "error": NULLABLE_STR,
                    "model_version": NULLABLE_STR,
                    "text": TEXT,
                    "digits": STRING_DIGITS,
                }}},
        },
    },
    "Status": {
        "type": "object",
        "description": "The service now, read from Redis and the database. A part that could "
                       "not be read is null, and `errors` says why.",
        "required": ["object", "generated_at", "errors", "queues", "unacked", "pending",
                     "oldest_pending", "jobs", "throughput"],
        "properties": {
            "object": {"const": "status"},
            "generated_at": {"type": "string", "format": "date-time"},
            "errors": {"type": "object", "additionalProperties": {"type": "string"}},
            "queues": {"type": ["object", "null"], "additionalProperties": {
                "type": "object", "required": ["messages", "workers", "processes", "nodes"],
                "properties": {
                    "messages": {"type": ["integer", "null"], "minimum": 0,
                                 "description": "Messages waiting on the queue"},
                    "workers": {"type": "integer", "minimum": 0,
                                "description": "Workers consuming it, announced lately"},
                    "processes": {"type": "integer", "minimum": 0,
                                  "description": "Their pool processes (or threads)"},
                    "nodes": {"type": "array", "items": {"type": "string"}}}}},
            "unacked": {"type": ["integer", "null"], "minimum": 0,
                        "description": "Messages delivered to a worker, not yet acknowledged"},
            "pending": {"type": ["integer", "null"], "minimum": 0},
            "oldest_pending": {
                "type": ["object", "null"], "required": ["job_id", "queued_at", "age_s"],
                "properties": {"job_id": {"type": "string"},
                               "queued_at": {"type": "string", "format": "date-time"},
                               "age_s": {"type": "number", "minimum": 0}}},
            "jobs": {"type": ["object", "null"], "required": JOB_STATUS,
                     "properties": {k: {"type": "integer", "minimum": 0} for k in JOB_STATUS}},
            "throughput": {
                "type": ["object", "null"],
                "required": ["window_s", "bucket_s", "points", "total", "last_minute_per_s"],
                "properties": {
                    "window_s": {"type": "integer"}, "bucket_s": {"type": "integer"},
                    "total": {"type": "integer", "minimum": 0},
                    "last_minute_per_s": {"type": "number", "minimum": 0},
                    "points": {"type": "array", "items": {
                        "type": "object", "required": ["start", "images", "per_s"],
                        "properties": {"start": {"type": "string", "format": "date-time"},
                                       "images": {"type": "integer", "minimum": 0},
                                       "per_s": {"type": "number", "minimum": 0}}}}}},
        },
    },
    "Deleted": {"type": "object", "required": ["id", "object", "deleted", "items_deleted"],
                "properties": {"id": {"type": "string"}, "object": {"const": "job"},
                               "deleted": {"const": True},
                               "items_deleted": {"type": "integer", "minimum": 0}}},
    "Session": {"type": "object",
                "required": ["account", "admin", "signed_in", "auth", "csrf_token"],
                "properties": {"account": {"type": "string"}, "admin": {"type": "boolean"},
                               "signed_in": {"type": "boolean"},
                               "auth": {"enum": ["open", "required"]},
                               "csrf_token": NULLABLE_STR}},
    "Health": {"type": "object", "required": ["status"],
               "properties": {"status": {"type": "string"},
                              "checks": {"type": "object",
                                         "additionalProperties": {"type": "string"}},
                              "runtimes": {"type": "array", "items": {"type": "string"},
                                           "description": "What runs the model in the "
                                           "workers online (onnx-int8, torch)"}}},
}


def _json(schema: str) -> dict:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _resp(description: str, schema: str) -> dict:
    return {"description": description, "content": _json(schema)}


ERRORS = {
    "400": _resp("Bad request", "Error"),
    "404": _resp("Unknown job", "Error"),
    "409": _resp("The job cannot take this action in its state", "Error"),
    "413": _resp("Request too large", "Error"),
    "429": _resp("The account is past a limit (rate or pending images); see Retry-After",
                 "Error"),
    "503": _resp("The service holds as many waiting images as it takes; see Retry-After",
                 "Error"),
}
UPLOAD = {"content": {"multipart/form-data": {"schema": {
    "type": "object",
    "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "Images and zip archives (expanded; members become items)."},
        "open": {"type": "boolean", "description": "Keep the job open for more images."},
        "mode": MODE,
    }}}}}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
ITEM_ID = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer"}}
BINARY = {"type": "string", "format": "binary"}
NO_FILE = _resp("Unknown job or item (item_not_found), or none stored for it "
                "(image_not_available: pending, failed, cancelled, or classified before "
                "these were kept)", "Error")
UNAUTHORIZED = _resp("No API key, or an unknown or revoked one (DIGITS_AUTH=required)",
                     "Error")


def _op(summary: str, responses: dict, **extra) -> dict:
    return {"summary": summary, "parameters": extra.pop("parameters", []),
            "responses": {**responses, "401": UNAUTHORIZED}, **extra}


PATHS = {
    "/api/v1/jobs": {
        "post": _op("Create a job from images and zip archives",
                    {"202": _resp("The job, queued", "Job"), **ERRORS},
                    requestBody=UPLOAD,
                    parameters=[{"name": "Idempotency-Key", "in": "header", "required": False,
                                 "schema": {"type": "string"}}]),
        "get": _op("List jobs, newest first", {"200": _resp("A page of jobs", "JobList"),
                                               "400": _resp("A cursor this server did not "
                                                            "give out", "Error")},
                   parameters=[{"name": "limit", "in": "query", "schema": {"type": "integer"}},
                               {"name": "cursor", "in": "query", "schema": {"type": "string"}}]),
    },
    "/api/v1/jobs/{job_id}": {
        "delete": _op("Delete the job with its images, thumbnails and results (a running "
                      "job is cancelled first)",
                      {"200": _resp("Deleted", "Deleted"), **ERRORS},
                      parameters=[JOB_ID]),
        "get": _op("Job status and counts", {"200": _resp("The job", "Job"), **ERRORS},
                   parameters=[JOB_ID]),
    },
    "/api/v1/jobs/{job_id}/images": {
        "post": _op("Add images to an open job",
                    {"202": _resp("Images added", "AddedImages"), **ERRORS},
                    parameters=[JOB_ID, {
                        "name": "Idempotency-Key", "in": "header", "required": False,
                        "schema": {"type": "string", "maxLength": 200},
                        "description": "One per batch: a retried add with the same key "
                                       "adds nothing more (or only the rest, if the first "
                                       "stopped half way) and answers as the first did"}],
                    requestBody=UPLOAD),
    },
    "/api/v1/jobs/{job_id}/seal": {
        "post": _op("Seal an open job: no more images", {"200": _resp("The job", "Job"),
                                                          **ERRORS}, parameters=[JOB_ID]),
    },
    "/api/v1/jobs/{job_id}/cancel": {
        "post": _op("Cancel the remaining work", {"200": _resp("The job", "Job"), **ERRORS},
                    parameters=[JOB_ID]),
    },
    "/api/v1/jobs/{job_id}/results": {
        "get": _op(
            "Results, cursor-paginated, or all of them as CSV",
            {"200": {"description": "A page of items, or CSV with format=csv (columns id, "
                                    "filename, status, digit, confidence, needs_review, "
                                    "error, p0 ... p9, text)",
                     "content": {**_json("ItemList"), "text/csv": {"schema": {"type": "string"}}}},
             **ERRORS},
            parameters=[
                JOB_ID,
                {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 1000}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                {"name": "status", "in": "query", "schema": {"type": "string"},
                 "description": "Comma-separated item statuses"},
                {"name": "needs_review", "in": "query", "schema": {"type": "boolean"}},
                {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}},
            ]),
    },
    "/api/v1/jobs/{job_id}/items/{item_id}/image": {
        "get": _op("The uploaded image of one item",
                   {"200": {"description": "The image bytes",
                            "content": {"image/*": {"schema": BINARY}}},
                    **ERRORS},
                   parameters=[JOB_ID, ITEM_ID]),
    },
    "/api/v1/jobs/{job_id}/items/{item_id}/thumbnail": {
        "get": _op("What the item's image looks like, at most 96 px on its longest side",
                   {"200": {"description": "Stored with the result of an image that decoded "
                                           "(done or no_digit): the upload itself when it is "
                                           "a PNG, JPEG, GIF or WebP that small, else a PNG "
                                           "(TIFF, BMP, 16-bit and larger images)",
                            "content": {f"image/{kind}": {"schema": BINARY}
                                        for kind in ("png", "jpeg", "gif", "webp")}},
                    "404": NO_FILE},
                   parameters=[JOB_ID, ITEM_ID]),
    },
    "/api/v1/jobs/{job_id}/items/{item_id}/model-input": {
        "get": _op("The image the model was given for this item: 28x28 (digit mode), or "
                   "the 32-pixel-high strip of the field (string mode)",
                   {"200": {"description": "An 8-bit greyscale PNG, ink bright on black, "
                                           "stored with the result of an image that decoded",
                            "content": {"image/png": {"schema": BINARY}}},
                    "404": NO_FILE},
                   parameters=[JOB_ID, ITEM_ID]),
    },
    "/api/v1/predict": {
        "post": {
            "summary": "Classify one image now, or a few (the interactive lane)",
            "description": "One image as the `image` part or as the raw body (an image "
                           "content type) answers a Prediction; up to "
                           "DIGITS_PREDICT_MAX_IMAGES (64) `images` parts answer a "
                           "PredictionList, each image alone. Answered by a lane worker "
                           "while the caller waits; never behind bulk jobs.",
            "parameters": [{"name": "mode", "in": "query", "schema": MODE}],
            "requestBody": {"content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "image": BINARY,
                    "images": {"type": "array", "items": BINARY, "maxItems": 64},
                    "mode": MODE}}},
                "image/*": {"schema": BINARY}}},
            "responses": {"200": {"description": "The prediction, or one per image sent as "
                                                 "`images`",
                                  "content": {"application/json": {"schema": {"oneOf": [
                                      {"$ref": "#/components/schemas/Prediction"},
                                      {"$ref": "#/components/schemas/PredictionList"}]}}}},
                          "400": _resp("Several images without `images`, or too many "
                                       "(one_image, too_many_images), or an unknown mode "
                                       "(bad_mode)", "Error"),
                          "401": UNAUTHORIZED,
                          "413": _resp("Too large", "Error"),
                          "422": _resp("Not a usable image", "Error"),
                          "429": _resp("The account is past DIGITS_PREDICT_RATE_LIMIT; see "
                                       "Retry-After", "Error"),
                          "503": _resp("The lane holds DIGITS_PREDICT_MAX_WAITING predictions "
                                       "already (busy); see Retry-After", "Error"),
                          "504": _resp("No worker answered in time", "Error")},
        },
    },
    "/api/v1/status": {
        "get": {"summary": "Workers per queue, queue depths, pending images, jobs, images/s",
                "parameters": [{"name": "minutes", "in": "query",
                                "schema": {"type": "integer", "minimum": 1, "maximum": 60},
                                "description": "History of images per second (default 10)"}],
                "responses": {"200": _resp("The overview", "Status"),
                              "401": UNAUTHORIZED,
                              "403": _resp("A key that is not an admin's (admin_only): the "
                                           "overview names every account's jobs", "Error")}},
    },
    "/metrics": {
        "get": {"summary": "Prometheus metrics (text exposition format)",
                "description": "With DIGITS_METRICS_TOKEN set, send it as a bearer token.",
                "responses": {"200": {"description": "The metrics",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              "401": _resp("The scrape token is missing or wrong", "Error"),
                              "404": _resp("Metrics are off (DIGITS_METRICS=false)",
                                           "Error")}},
    },
    "/api/v1/session": {
        "post": {"summary": "Sign a web page in with an API key (an HttpOnly session cookie)",
                 "security": [],
                 "requestBody": {"content": {"application/json": {"schema": {
                     "type": "object", "required": ["key"],
                     "properties": {"key": {"type": "string"}}}}}},
                 "responses": {"200": _resp("Signed in", "Session"),
                               "400": _resp("No key sent", "Error"), "401": UNAUTHORIZED}},
        "get": {"summary": "Who is calling, and the CSRF token a signed-in page sends",
                "responses": {"200": _resp("The caller", "Session"), "401": UNAUTHORIZED}},
        "delete": {"summary": "Sign out", "responses": {"200": {
            "description": "Signed out", "content": {"application/json": {"schema": {
                "type": "object"}}}}}},
    },
    "/healthz": {"get": {"summary": "The process is up",
                         "responses": {"200": _resp("Up", "Health")}}},
    "/readyz": {"get": {"summary": "Database, Redis and a worker answer",
                        "responses": {"200": _resp("Ready", "Health"),
                                      "503": _resp("Not ready", "Health")}}},
}

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "digits", "version": "1",
             "description": "Bulk handwritten-digit recognition. Submit images as jobs, poll "
                            "them, page through the results."},
    "paths": PATHS,
    "components": {"schemas": SCHEMAS, "securitySchemes": {
        "apiKey": {"type": "http", "scheme": "bearer",
                   "description": "An API key from `digits keys create`"},
        "session": {"type": "apiKey", "in": "cookie", "name": "digits_session",
                    "description": "A signed-in page; state-changing calls send X-CSRF-Token"},
    }},
    # Open local stacks (DIGITS_AUTH=open) take calls without either, as the `local` account.
    "security": [{"apiKey": []}, {"session": []}, {}],
}


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(DOCUMENT)
