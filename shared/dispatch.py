"""Queue work by task name. Callers commit the items first: the database is the source
of truth, Redis only carries the ids."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from celery import Celery
from sqlalchemy import update

from shared.models import Item
from shared.queues import BULK_QUEUE, CLASSIFY_CHUNK


def chunks(ids: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def mark_queued(session, ids: Sequence[int]) -> None:
    """Record when the ids were (re)queued, so the reconciler knows what is overdue; no
    lease until a worker takes them."""
    now = datetime.now(UTC)
    for part in chunks(ids, 500):
        session.execute(update(Item).where(Item.id.in_(part))
                        .values(queued_at=now, leased_until=None))


def send_chunks(celery: Celery, ids: Sequence[int], chunk_size: int) -> int:
    """One message per chunk of item ids on the bulk queue; returns the number sent."""
    sent = 0
    for part in chunks(ids, chunk_size):
        # A short argsrepr: Celery's own repr of 128 ids costs more than sending them.
        celery.send_task(CLASSIFY_CHUNK, args=[part], queue=BULK_QUEUE,
                         argsrepr=f"[{len(part)} items {part[0]}..{part[-1]}]")
        sent += 1
    return sent
