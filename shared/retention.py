"""Deleting what a job stored: the whole job on request (DELETE /api/v1/jobs/{id},
`digits delete`). Plain functions on a session, used by the API."""

from __future__ import annotations

from sqlalchemy import delete
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
