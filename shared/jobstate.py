"""Job counts and status transitions, derived from the item rows.

Counts are never stored: they come from the items, so they cannot drift from the
results. The status moves queued -> running -> succeeded/failed; each move is a
conditional UPDATE, so two workers finishing the last items of one job at once
both arrive at the same answer, whoever runs it last.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import and_, case, func, select, update
from sqlalchemy.orm import Session

from shared.models import Item, ItemStatus, Job, JobMode, JobStatus

COUNT_KEYS = ("total", "pending", "done", "failed", "no_digit", "needs_review", "cancelled")


def counts_query(job_ids: list[str]):
    """Grouped by job and status; the index on (job_id, status, needs_review) covers it."""
    return (select(Item.job_id, Item.status, func.count(),
                   func.sum(case((Item.needs_review, 1), else_=0)))
            .where(Item.job_id.in_(job_ids))
            .group_by(Item.job_id, Item.status))


def counts(session: Session, job_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """Per job: total, pending, done (classified or no_digit), failed, no_digit,
    needs_review and cancelled items, in one grouped query."""
    job_ids = list(job_ids)
    result = {job_id: dict.fromkeys(COUNT_KEYS, 0) for job_id in job_ids}
    if not job_ids:
        return result
    for job_id, status, n, review in session.execute(counts_query(job_ids)):
        c = result[job_id]
        c["total"] += n
        c["needs_review"] += int(review or 0)
        if status in (ItemStatus.DONE, ItemStatus.NO_DIGIT):
            c["done"] += n
        if status in c and status != ItemStatus.DONE:
            c[status] += n
    return result


def _has_pending(session: Session, job_id: str) -> bool:
    return session.scalar(
        select(Item.id).where(Item.job_id == job_id, Item.status == ItemStatus.PENDING).limit(1)
    ) is not None


def mark_started(session: Session, job_ids: Iterable[str],
                 model_version: str | None = None) -> None:
    """Queued jobs become running. `model_version`, the digit model's as the worker runs
    it (its runtime included), replaces the API's (the weights') on digit jobs."""
    values = {"status": JobStatus.RUNNING, "started_at": datetime.now(UTC)}
    if model_version:
        values["model_version"] = case((Job.mode == JobMode.DIGIT, model_version),
                                       else_=Job.model_version)
    session.execute(
        update(Job)
        .where(Job.id.in_(list(job_ids)), Job.status == JobStatus.QUEUED)
        .values(**values)
        # Runs after every chunk: no session objects to update, skip looking for them.
        .execution_options(synchronize_session=False)
    )


def finish_if_complete(session: Session, job_ids: Iterable[str]) -> list[str]:
    """Close sealed jobs that have no pending items left. Run it in a transaction that
    starts after the results were committed, so the last writer always sees them."""
    finished = []
    for job_id in job_ids:
        job = session.get(Job, job_id)
        if job is None or job.open or job.status in JobStatus.FINAL:
            continue
        # One index probe, not a count over the whole job: this runs after every chunk.
        if _has_pending(session, job_id):
            continue
        c = counts(session, [job_id])[job_id]
        status = (JobStatus.FAILED if c["total"] and c["failed"] == c["total"]
                  else JobStatus.SUCCEEDED)
        now = datetime.now(UTC)
        done = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            .values(status=status, finished_at=now,
                    started_at=func.coalesce(Job.started_at, now))
        )
        if done.rowcount:
            finished.append(job_id)
    return finished


def cancel(session: Session, job_id: str) -> None:
    """Cancel a job: its pending items become cancelled, so workers skip them."""
    now = datetime.now(UTC)
    session.execute(
        update(Item)
        .where(and_(Item.job_id == job_id, Item.status == ItemStatus.PENDING))
        .values(status=ItemStatus.CANCELLED, finished_at=now)
    )
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        .values(status=JobStatus.CANCELLED, finished_at=now, open=False)
    )
