"""What the API does around every request: a request id (taken from `X-Request-ID` when
the client sent a plain one, else made) in scope for the logs and returned in the
response; the job id in scope when the route names one; one access log line; and
the request counted and timed by route template, never by path (no ids in labels)."""

from __future__ import annotations

import logging
import time

from flask import Flask, g, request

from shared import logs, metrics

REQUEST_ID_HEADER = "X-Request-ID"
access_log = logging.getLogger("digits.access")


def route() -> str:
    """The matched rule (`/api/v1/jobs/<job_id>`), or one label for every unknown path."""
    rule = request.url_rule
    return rule.rule if rule is not None else "(unmatched)"


def use_job_id(job_id: str) -> None:
    """Name the job a request is about, once it is known (a create learns it late)."""
    logs.JOB_ID.set(job_id)


def register(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.request_id = logs.request_id_from(request.headers.get(REQUEST_ID_HEADER))
        # gunicorn's threads serve one request after another: teardown clears both.
        logs.REQUEST_ID.set(g.request_id)
        logs.JOB_ID.set(logs.plain((request.view_args or {}).get("job_id")))

    @app.after_request
    def _finish(response):
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        rule, method, status = route(), request.method, response.status_code
        metrics.HTTP_REQUESTS.labels(method, rule, str(status)).inc()
        metrics.HTTP_LATENCY.labels(method, rule).observe(elapsed)
        response.headers[REQUEST_ID_HEADER] = g.get("request_id") or ""
        if rule != "/metrics" or status >= 400:  # a scrape every few seconds is noise
            access_log.info(
                "%s %s %d %.1f ms", method, request.path, status, elapsed * 1000,
                extra={"method": method, "route": rule, "path": request.path,
                       "status": status, "duration_ms": round(elapsed * 1000, 2),
                       "bytes_in": request.content_length or 0})
        return response

    @app.teardown_request
    def _end(_exc) -> None:
        logs.REQUEST_ID.set(None)
        logs.JOB_ID.set(None)
