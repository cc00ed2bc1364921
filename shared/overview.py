"""The state of the service, read from Redis and the database when asked: workers
online per queue, queue depths, pending images, jobs by status and the images finished
over the last minutes. The API is stateless, so nothing here is kept in memory: the
status page, `digits status` and the scrape-time metrics all read it afresh.

Workers announce themselves: each worker's main process keeps a key
`digits:worker:<name>` alive in Redis (`announce`), with a time-to-live a few times
its refresh period, and deletes it when it stops. A worker that dies is gone from the
list within HEARTBEAT_TTL_S.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared import lane
from shared.models import Item, ItemStatus, Job, JobStatus
from shared.queues import BULK_QUEUE, INTERACTIVE_QUEUE

QUEUES = (BULK_QUEUE, INTERACTIVE_QUEUE)
HEARTBEAT_PREFIX = "digits:worker:"
HEARTBEAT_EVERY_S = 5.0
HEARTBEAT_TTL_S = 15
# Messages delivered to a worker and not yet acknowledged (kombu's Redis transport).
UNACKED_KEY = "unacked"
JOB_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED,
                JobStatus.CANCELLED)


# --- Redis ---------------------------------------------------------------------------


def announce(client, name: str, info: dict) -> None:
    """One heartbeat of a worker (its main process calls it every HEARTBEAT_EVERY_S)."""
    body = {**info, "hostname": name, "seen_at": time.time()}
    client.set(HEARTBEAT_PREFIX + name, json.dumps(body), ex=HEARTBEAT_TTL_S)


def withdraw(client, name: str) -> None:
    client.delete(HEARTBEAT_PREFIX + name)


def workers(client, now: float | None = None) -> list[dict]:
    """The workers that announced themselves lately, by name."""
    now = time.time() if now is None else now
    keys = sorted(client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=500))
    found = []
    for raw in client.mget(keys) if keys else []:
        if raw is None:  # expired between the scan and the read
            continue
        info = json.loads(raw)
        info["seen_s_ago"] = round(max(0.0, now - float(info.get("seen_at", now))), 1)
        found.append(info)
    return sorted(found, key=lambda w: w["hostname"])


def workers_by_queue(found: list[dict]) -> dict[str, dict]:
    """Per queue: worker (node) count, pool processes (or threads) and the nodes."""
    out = {q: {"workers": 0, "processes": 0, "nodes": []} for q in QUEUES}
    for worker in found:
        for queue in worker.get("queues", []):
            entry = out.setdefault(queue, {"workers": 0, "processes": 0, "nodes": []})
            entry["workers"] += 1
            entry["processes"] += int(worker.get("concurrency") or 0)
            entry["nodes"].append(worker["hostname"])
    return out


def queue_depths(client) -> dict[str, int]:
    """Messages waiting on each queue (the Redis transport keeps each in a list; the
    interactive lane its own, shared.lane), and
    those delivered to a worker and not yet acknowledged."""
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(lane.REQUESTS_KEY if queue == INTERACTIVE_QUEUE else queue)
    pipe.hlen(UNACKED_KEY)
    *depths, unacked = pipe.execute()
    return {**dict(zip(QUEUES, map(int, depths), strict=True)), "unacked": int(unacked)}


# --- the database --------------------------------------------------------------------


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every time stored here is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def database(session: Session, now: datetime | None = None) -> dict:
    """Pending images, the oldest of them, and jobs by status; three index reads."""
    now = now or datetime.now(UTC)
    pending = session.scalar(select(func.count()).select_from(Item)
                             .where(Item.status == ItemStatus.PENDING)) or 0
    oldest = session.execute(
        select(Item.queued_at, Item.job_id)
        .where(Item.status == ItemStatus.PENDING, Item.queued_at.is_not(None))
        .order_by(Item.queued_at).limit(1)).first()
    jobs = dict.fromkeys(JOB_STATUSES, 0)
    for status, n in session.execute(select(Job.status, func.count()).group_by(Job.status)):
        jobs[status] = int(n)
    oldest_info = None
    if oldest is not None:
        queued_at = _aware(oldest.queued_at)
        oldest_info = {"job_id": oldest.job_id, "queued_at": queued_at.isoformat(),
                       "age_s": round(max(0.0, (now - queued_at).total_seconds()), 1)}
    return {"pending": int(pending), "oldest_pending": oldest_info, "jobs": jobs}


def throughput(session: Session, window_s: int = 600, bucket_s: int = 10,
               now: datetime | None = None) -> dict:
    """Images finished (classified, no digit or failed; not cancelled) per second, in
    buckets of `bucket_s` over the last `window_s`, from the items' finish times.

    A chunk's results share one finish time, so the database groups them into one row
    per chunk (an index range on finished_at) and the buckets are filled here. The last
    bucket is the one filling now; `last_minute_per_s` counts the last 60 s exactly."""
    now = now or datetime.now(UTC)
    end = int(now.timestamp()) // bucket_s * bucket_s + bucket_s  # the current bucket's end
    start = end - window_s
    since = datetime.fromtimestamp(start, UTC)
    rows = session.execute(
        select(Item.finished_at, func.count())
        .where(Item.finished_at >= since, Item.status != ItemStatus.CANCELLED)
        .group_by(Item.finished_at)).all()
    n_buckets = window_s // bucket_s
    counts: dict[int, int] = defaultdict(int)
    minute_ago, recent = now.timestamp() - 60, 0
    for finished_at, n in rows:
        t = _aware(finished_at).timestamp()
        # A clock a little ahead on another host lands in the current bucket.
        counts[min((int(t) - start) // bucket_s, n_buckets - 1)] += int(n)
        if t > minute_ago:
            recent += int(n)
    points = [{"start": datetime.fromtimestamp(start + i * bucket_s, UTC).isoformat(),
               "images": counts.get(i, 0),
               "per_s": round(counts.get(i, 0) / bucket_s, 2)} for i in range(n_buckets)]
    return {"window_s": window_s, "bucket_s": bucket_s, "points": points,
            "total": sum(counts.values()), "last_minute_per_s": round(recent / 60, 2)}


# --- all of it -------------------------------------------------------------------------


def snapshot(redis_client, window_s: int = 600, bucket_s: int = 10) -> dict:
    """The whole overview, as the status page and `digits status` show it. A part that
    cannot be read (Redis or the database down) says why, and the rest still comes."""
    from shared import db

    now = datetime.now(UTC)
    out: dict = {"object": "status", "generated_at": now.isoformat(), "errors": {}}
    try:
        by_queue = workers_by_queue(workers(redis_client))
        depths = queue_depths(redis_client)
        out["queues"] = {q: {"messages": depths[q], **by_queue.pop(q)} for q in QUEUES}
        out["queues"].update({q: {"messages": None, **entry} for q, entry in by_queue.items()})
        out["unacked"] = depths["unacked"]
    except Exception as exc:  # Redis down: the database part still answers
        out["queues"], out["unacked"] = None, None
        out["errors"]["redis"] = _one_line(exc)
    try:
        with db.session() as s:
            out.update(database(s, now))
            out["throughput"] = throughput(s, window_s, bucket_s, now)
    except Exception as exc:
        out.update(pending=None, oldest_pending=None, jobs=None, throughput=None)
        out["errors"]["database"] = _one_line(exc)
    return out


def _one_line(exc: Exception) -> str:
    from shared.logs import redact

    return redact(" ".join(f"{type(exc).__name__}: {exc}".split()))[:300]
