"""The reconciler: Redis carries work, not the only copy of it.

Items are committed before their ids are queued. If a message is lost (Redis
flushed or restarted, a broker outage during a create), the items stay
`pending` in the database; this queues them again. It acts only while the bulk
queue is empty, so a long backlog is never mistaken for lost work, and only on
items queued more than `older_than_s` ago, so chunks in flight are left alone.
Redelivery is harmless: results are written only onto pending items.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from celery import Celery
from sqlalchemy import or_, select

from shared import db, dispatch, jobstate
from shared.models import Item, ItemStatus, Job, JobStatus
from shared.queues import BULK_QUEUE

log = logging.getLogger(__name__)


def bulk_backlog(celery: Celery) -> int:
    """Messages waiting on the bulk queue (the Redis transport keeps them in a list)."""
    with celery.connection_for_write() as conn:
        return int(conn.default_channel.client.llen(BULK_QUEUE))


def reconcile(celery: Celery, older_than_s: float, chunk_size: int) -> int:
    """Re-queue overdue pending items and close jobs left complete; returns items queued."""
    with db.session() as s:
        open_jobs = s.scalars(select(Job.id).where(
            Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))).all()
        jobstate.finish_if_complete(s, open_jobs)
    if bulk_backlog(celery):
        return 0
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    with db.session() as s:
        ids = s.scalars(
            select(Item.id)
            .where(Item.status == ItemStatus.PENDING,
                   or_(Item.queued_at.is_(None), Item.queued_at <= cutoff))
            .order_by(Item.id)
        ).all()
        if ids:
            dispatch.mark_queued(s, ids)
    if ids:
        dispatch.send_chunks(celery, ids, chunk_size)
        log.warning("reconciler re-queued %d pending items whose messages were lost", len(ids))
    return len(ids)
