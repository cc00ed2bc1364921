"""Liveness (/healthz: the process answers) and readiness (/readyz: the database and
Redis answer and at least one worker replies to a ping)."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from api.routes_ops import redis_client
from shared import db, overview

bp = Blueprint("health", __name__)
log = logging.getLogger("digits.health")


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


class Unready(RuntimeError):
    """A check's own finding, safe to show as it is."""


def _check(what: str, fn) -> str:
    """"ok", or what is wrong in words that name no host, user, password or URL: a
    driver's message often carries the connection string, so that goes to the log
    (masked there too) and the answer names only the kind of error."""
    try:
        fn()
        return "ok"
    except Unready as exc:
        return f"error: {exc}"
    except Exception as exc:
        log.warning("readiness: %s check failed: %s", what, exc)
        return f"error: {what} did not answer ({type(exc).__name__})"


def _database() -> None:
    with db.session() as s:
        s.execute(text("SELECT 1"))


def _workers() -> None:
    replies = current_app.extensions["celery"].control.ping(timeout=1.0)
    if not replies:
        raise Unready("no worker answered a ping within 1 s")


def _redis() -> None:
    with current_app.extensions["celery"].connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


@bp.get("/readyz")
def readyz():
    checks = {"database": _check("the database", _database),
              "redis": _check("Redis", _redis)}
    checks["workers"] = _check("the workers", _workers) if checks["redis"] == "ok" else "skipped"
    ready = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ready" if ready else "not_ready", "checks": checks,
                    "runtimes": _runtimes() if checks["redis"] == "ok" else []}), (
        200 if ready else 503)


def _runtimes() -> list[str]:
    """What runs the model in the workers that announced themselves (shared/runtime.py)."""
    try:
        found = overview.workers(redis_client())
    except Exception:  # a status detail: readiness is the checks above
        return []
    return sorted({w["runtime"] for w in found if w.get("runtime")})
