"""Deleting what a job stored: the whole job on request (DELETE /api/v1/jobs/{id},
`digits delete`), and after a set time (DIGITS_RETENTION_DAYS for the images,
DIGITS_RESULTS_RETENTION_DAYS for the whole job), run by the scheduler. Plain functions
on a session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from shared import jobstate
from shared.models import Item, Job, JobAdd, JobStatus


def delete_job(session: Session, job_id: str) -> int:
    """Remove a job with its images, thumbnails, model inputs and results; a job still
    running is cancelled first (its pending items become cancelled, so a worker that
    holds a chunk of them writes nothing). Returns the number of items removed."""
    job = session.get(Job, job_id)
    if job is None:
        return 0
    if job.status not in JobStatus.FINAL:
        jobstate.cancel(session, job_id)
    session.execute(delete(JobAdd).where(JobAdd.job_id == job_id))
    removed = session.execute(delete(Item).where(Item.job_id == job_id)).rowcount
    session.execute(delete(Job).where(Job.id == job_id))
    return removed


def expiry(finished_at: datetime | None, days: float | None) -> datetime | None:
    """When a finished job's images go (None: kept, or not finished yet)."""
    if finished_at is None or days is None:
        return None
    if finished_at.tzinfo is None:  # SQLite hands back naive datetimes, stored in UTC
        finished_at = finished_at.replace(tzinfo=UTC)
    return finished_at + timedelta(days=days)


def apply(session: Session, now: datetime, image_days: float | None,
          result_days: float | None, batch: int = 200) -> tuple[int, int]:
    """One round of retention (the scheduler runs it): the image bytes, thumbnails and
    model inputs of jobs that ended more than `image_days` ago are removed (the results
    stay), and whole jobs that ended more than `result_days` ago are deleted, at most
    `batch` of them a round. Returns (items whose images went, jobs deleted)."""
    deleted = 0
    if result_days is not None:
        cutoff = now - timedelta(days=result_days)
        old = session.scalars(select(Job.id).where(Job.finished_at < cutoff)
                              .order_by(Job.finished_at).limit(batch)).all()
        for job_id in old:
            delete_job(session, job_id)
            deleted += 1
    purged = 0
    if image_days is not None:
        cutoff = now - timedelta(days=image_days)
        ended = select(Job.id).where(Job.finished_at < cutoff)
        purged = session.execute(
            update(Item)
            .where(Item.job_id.in_(ended), func.length(Item.content) > 0)
            .values(content=b"", thumbnail=None, model_input=None)
            .execution_options(synchronize_session=False)).rowcount
    return purged, deleted
