"""Operations: GET /metrics for Prometheus and GET /api/v1/status, the data of the status
page and of `digits status`. Both read the state afresh (shared.overview): the API
keeps none.

Access (docs/operations.md): with DIGITS_METRICS_TOKEN set, /metrics wants it, or an
admin API key, as a bearer token. /api/v1/status names every account's job ids and the
workers' hosts: an admin key, or the one user of an open local stack.
"""

from __future__ import annotations

import hmac

import redis
from flask import Blueprint, Response, current_app, g, jsonify, request

from api.errors import ApiError
from shared import accounts, db, metrics, overview
from shared.celery_app import redis_client as new_redis_client
from shared.settings import get_settings

bp = Blueprint("ops", __name__)


def redis_client() -> redis.Redis:
    """One client (and connection pool) per process, with short timeouts: a status
    page must answer, if only to say that Redis does not."""
    client = current_app.extensions.get("redis")
    if client is None:
        client = new_redis_client(socket_timeout=2, socket_connect_timeout=2)
        current_app.extensions["redis"] = client
    return client


def _check_token() -> None:
    token = get_settings().metrics_token
    if token is None:
        return
    sent = request.headers.get("Authorization", "")
    scheme, _, value = sent.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.get_secret_value().encode()):
        return
    if scheme.lower() == "bearer" and value.strip():
        with db.session() as s:
            found = accounts.authenticate(s, accounts.server_secret(get_settings()),
                                          value.strip())
        if found is not None and found.admin:
            return
    raise ApiError(401, "unauthorized", "GET /metrics wants the scrape token or an admin "
                   "key: `Authorization: Bearer <DIGITS_METRICS_TOKEN>`",
                   headers={"WWW-Authenticate": 'Bearer realm="metrics"'})


@bp.get("/metrics")
def prometheus_metrics():
    if not get_settings().metrics:
        raise ApiError(404, "metrics_off", "metrics are off (DIGITS_METRICS=false)")
    _check_token()
    from api.metrics_state import StateCollector

    body, content_type = metrics.exposition(StateCollector(redis_client()))
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


@bp.get("/api/v1/status")
def status():
    caller = g.get("principal")
    if caller is not None and caller.key_id is not None and not caller.admin:
        raise ApiError(403, "admin_only", "the service's status names every account's jobs "
                       "and the workers' hosts: it wants an admin key")
    minutes = max(1, min(request.args.get("minutes", 10, type=int), 60))
    window_s = minutes * 60
    body = overview.snapshot(redis_client(), window_s, bucket_s=max(5, window_s // 60))
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response
