"""Liveness (/healthz: the process answers) and readiness (/readyz: the database and
Redis answer and at least one worker replies to a ping)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from shared import db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


def _check(fn) -> str:
    try:
        fn()
        return "ok"
    except Exception as exc:
        return f"error: {exc}"[:300]


def _database() -> None:
    with db.session() as s:
        s.execute(text("SELECT 1"))


def _workers() -> None:
    replies = current_app.extensions["celery"].control.ping(timeout=1.0)
    if not replies:
        raise RuntimeError("no worker answered a ping within 1 s")


def _redis() -> None:
    with current_app.extensions["celery"].connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


@bp.get("/readyz")
def readyz():
    checks = {"database": _check(_database), "redis": _check(_redis)}
    checks["workers"] = _check(_workers) if checks["redis"] == "ok" else "skipped"
    ready = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ready" if ready else "not_ready", "checks": checks}), (
        200 if ready else 503)
