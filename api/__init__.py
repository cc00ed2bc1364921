"""The Flask API: thin views over plain functions, JSON everywhere. Never imports torch."""

from __future__ import annotations

import logging

from flask import Flask

from api.uploads import SpooledRequest
from shared import logs
from shared.artifact_meta import model_version
from shared.celery_app import make_celery
from shared.settings import get_settings


def create_app(test_config: dict | None = None) -> Flask:
    settings = get_settings()
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.request_class = SpooledRequest  # a request's files mostly on disk, not in memory
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        MAX_FORM_PARTS=settings.max_form_parts,
        MAX_FORM_MEMORY_SIZE=settings.max_request_bytes,
        JSON_SORT_KEYS=False,
        MODEL_VERSION=model_version(settings.model_path),
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["celery"] = make_celery(settings)
    logs.configure(settings.log_format, logging.INFO)

    from api import (
        auth,
        errors,
        limits,
        observability,
        openapi,
        pages,
        routes_health,
        routes_jobs,
        routes_ops,
        routes_predict,
        security,
    )

    errors.register(app)
    observability.register(app)
    security.register(app)
    auth.register(app)
    limits.register(app)  # after auth: it counts per account
    for module in (routes_jobs, routes_predict, routes_health, routes_ops, openapi, pages,
                   auth):
        app.register_blueprint(module.bp)
    app.json.sort_keys = False
    app.json.compact = True
    return app
