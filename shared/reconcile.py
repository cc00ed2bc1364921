"""The reconciler: Redis carries work, not the only copy of it.

Items are committed before their ids are queued. If a message is lost (Redis
flushed or restarted, a broker outage during a create), the items stay
`pending` in the database; this queues them again: those whose lease ran out
(delivered to a worker that failed for good or vanished), those queued past a
deadline and never delivered, whatever the backlog, and, while the bulk queue is
empty, those queued more than `older_than_s` ago. Redelivery is harmless: results
are written only onto pending items. It also seals open jobs that nobody feeds or
seals (DIGITS_OPEN_JOB_EXPIRY_MINUTES).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from celery import Celery
from sqlalchemy import and_, func, or_, select, update

from shared import db, dispatch, jobstate
from shared.models import Item, ItemStatus, Job, JobStatus
from shared.queues import BULK_QUEUE
from shared.settings import get_settings

log = logging.getLogger(__name__)


def bulk_backlog(celery: Celery) -> int:
    """Messages waiting on the bulk queue (the Redis transport keeps them in a list)."""
    with celery.connection_for_write() as conn:
        return int(conn.default_channel.client.llen(BULK_QUEUE))


def overdue_condition(now: datetime, older_than_s: float, backlog: bool):
    """Pending items whose work is lost or late:

    - delivered, with their lease run out: the task failed for good, or its worker went;
    - queued longer than DIGITS_QUEUE_DEADLINE_S and never delivered: the message may be
      lost, even behind a backlog (a re-queue is harmless: results are written once);
    - with the bulk queue empty, queued more than `older_than_s` ago and not delivered.
    """
    settings = get_settings()
    waiting = Item.leased_until.is_(None)
    late = [and_(Item.leased_until.is_not(None), Item.leased_until < now),
            and_(waiting, or_(Item.queued_at.is_(None), Item.queued_at <= now - timedelta(
                seconds=settings.queue_deadline_s)))]
    if not backlog:
        late.append(and_(waiting, or_(Item.queued_at.is_(None), Item.queued_at <= now
                                      - timedelta(seconds=older_than_s))))
    return and_(Item.status == ItemStatus.PENDING, or_(*late))


def expire_open_jobs(now: datetime) -> list[str]:
    """Seal open jobs that nobody has fed or sealed for DIGITS_OPEN_JOB_EXPIRY_MINUTES; the
    images they hold go on and the job finishes. expired_at says what happened."""
    cutoff = now - timedelta(minutes=get_settings().open_job_expiry_minutes)
    with db.session() as s:
        ids = list(s.scalars(select(Job.id).where(
            Job.open.is_(True), Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
            func.coalesce(Job.fed_at, Job.created_at) < cutoff)))
        if ids:
            s.execute(update(Job).where(Job.id.in_(ids), Job.open.is_(True))
                      .values(open=False, expired_at=now))
    for job_id in ids:
        log.warning("job %s expired: open with nothing added or sealed since before %s; "
                    "sealed", job_id, cutoff.isoformat(timespec="seconds"))
    return ids


def reconcile(celery: Celery, older_than_s: float, chunk_size: int) -> int:
    """Re-queue overdue pending items, seal expired open jobs and close jobs left
    complete; returns the items queued."""
    now = datetime.now(UTC)
    expire_open_jobs(now)
    with db.session() as s:
        open_jobs = s.scalars(select(Job.id).where(
            Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))).all()
        jobstate.finish_if_complete(s, open_jobs)
    backlog = bool(bulk_backlog(celery))
    with db.session() as s:
        ids = s.scalars(select(Item.id).where(overdue_condition(now, older_than_s, backlog))
                        .order_by(Item.id)).all()
        if ids:
            dispatch.mark_queued(s, ids)
    if ids:
        dispatch.send_chunks(celery, ids, chunk_size)
        log.warning("reconciler re-queued %d pending items whose work was lost or late%s",
                    len(ids), " (behind a backlog)" if backlog else "")
    return len(ids)
