"""Limits, in one vocabulary: 429 with Retry-After when an account is past its own limit
(requests per second or minute, pending images), 503 with Retry-After when the service
as a whole is saturated (pending images in total).

Request rates are counted per account by Flask-Limiter on the service's own Redis (one
count for every API process and host; a moving window), except /predict's: the
interactive lane counts those in the Lua script that queues the image (a fixed window,
DIGITS_PREDICT_RATE_LIMIT; shared/lane.py), which saves the lane a round trip a call.
Calls without a key on an open local stack (the `local` account, one person) are not
rate-limited; the pending-image caps hold for everyone. Flask-Limiter rather than a
hand-rolled INCR: it brings the moving window, per-route limits, a limit's reset time
for Retry-After, and keeps serving (swallow_errors) if Redis hiccups.
"""

from __future__ import annotations

import math
import threading
import time

from flask import Flask, g, request
from flask_limiter import Limiter, RateLimitExceeded
from sqlalchemy import func, select

from api.errors import ApiError, error_response
from shared import db
from shared.models import Item, ItemStatus, Job
from shared.settings import get_settings

limiter: Limiter | None = None
PREDICT_PATH = "/api/v1/predict"


def _account() -> str:
    principal = g.get("principal")
    return principal.account if principal is not None else request.remote_addr or "-"


def _exempt() -> bool:
    """Only /api/v1 calls made with a key (Bearer or a signed-in page) are counted here;
    /predict is counted by the interactive lane itself, in the round trip that queues it
    (shared/lane.py)."""
    principal = g.get("principal")
    return principal is None or principal.key_id is None or request.path == PREDICT_PATH




def register(app: Flask) -> None:
    global limiter
    settings = get_settings()
    limiter = Limiter(
        _account, app=app, default_limits=[lambda: get_settings().rate_limit],
        default_limits_exempt_when=_exempt, strategy="moving-window",
        storage_uri=settings.redis_url or "memory://", swallow_errors=True,
        key_prefix="digits-rate")
    # Checked before any limit is resolved: an uncounted call (most /predict calls on an
    # open stack) costs one function call, not a parse of every limit string.
    limiter.request_filter(_exempt)
    _skip_for_predict(app, limiter)

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded):
        body, status = error_response(
            429, "rate_limited",
            f"account {_account()!r} is past its limit of {exc.description}; "
            "wait for Retry-After seconds")
        current = limiter.current_limit if limiter is not None else None
        wait = current.reset_at - time.time() if current is not None else 1
        return body, status, {"Retry-After": str(max(1, math.ceil(wait)))}


def _skip_for_predict(app: Flask, found: Limiter) -> None:
    """Flask-Limiter's check, not called at all for /predict (the lane counts those):
    even filtered out, it walked its exemption scopes first, 5 % of the API's time on
    the interactive lane (py-spy). Left as it is if this version hooks in otherwise."""
    hooks = app.before_request_funcs.setdefault(None, [])
    if found._check_request_limit not in hooks:
        return
    check = found._check_request_limit

    def _check_unless_predict() -> None:
        if request.path != PREDICT_PATH:
            check()

    hooks[hooks.index(check)] = _check_unless_predict


def check_pending(owner: str, adding: int) -> None:
    """Before storing `adding` images for `owner`: 429 past the account's cap on pending
    images, 503 past the service's. Retry-After guesses from the backlog, at least 5 s."""
    if adding <= 0:
        return
    settings = get_settings()
    total = _pending.count(None)
    if total + adding > settings.max_pending_images:
        raise ApiError(503, "saturated",
                       f"the service holds {total:,} images waiting; it takes no more than "
                       f"{settings.max_pending_images:,} at once. Try again later",
                       {"Retry-After": str(_wait_s(total))})
    mine = _pending.count(owner)
    if mine + adding > settings.max_pending_per_account:
        raise ApiError(429, "too_many_pending",
                       f"account {owner!r} has {mine:,} images waiting; at most "
                       f"{settings.max_pending_per_account:,} may wait at once. Send the "
                       "rest when some have finished",
                       {"Retry-After": str(_wait_s(mine))})
    _pending.admitted(owner, adding)


class PendingCounts:
    """Pending images, in total (owner None) and per account, counted at most once a
    second per API process, plus what this process admitted since. A count walks the
    backlog's index entries, and a big folder's upload asks before every batch: on a
    20,000-image upload that was a seventh of the API's time (py-spy). Another
    process's admissions of the last second go unseen, so a cap can be passed by about
    one second's uploads."""

    def __init__(self, ttl_s: float = 1.0) -> None:
        self.ttl_s = ttl_s
        # (database, owner or None) -> (when counted, count)
        self._counts: dict[tuple[str, str | None], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def count(self, owner: str | None) -> int:
        now, key = time.monotonic(), (get_settings().effective_database_url, owner)
        with self._lock:
            held = self._counts.get(key)
        if held is not None and now - held[0] < self.ttl_s:
            return held[1]
        query = select(func.count()).select_from(Item).where(Item.status == ItemStatus.PENDING)
        if owner is not None:
            query = query.join(Job, Job.id == Item.job_id).where(Job.owner == owner)
        with db.session() as s:
            counted = s.scalar(query)
        with self._lock:
            self._counts[key] = (now, counted)
        return counted

    def admitted(self, owner: str, n: int) -> None:
        database = get_settings().effective_database_url
        with self._lock:
            for key in ((database, None), (database, owner)):
                if key in self._counts:
                    at, counted = self._counts[key]
                    self._counts[key] = (at, counted + n)


_pending = PendingCounts()


def _wait_s(backlog: int) -> int:
    # About 1,000 images a second on a small machine (README: Throughput).
    return max(5, min(600, math.ceil(backlog / 1000)))
