"""Job operations as plain functions over a session; the views stay thin.

Every write commits the items before their ids are queued (the database is the
source of truth). If Redis is unreachable at that moment the images are still
safe: the reconciler queues them once it is back.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from celery import Celery
from sqlalchemy import insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.uploads import Upload
from shared import db, dispatch, jobstate, logs, metrics, retention
from shared.models import Item, ItemStatus, Job, JobAdd, JobStatus, new_job_id
from shared.settings import get_settings

log = logging.getLogger(__name__)


def get_job(session: Session, owner: str | None, job_id: str) -> Job:
    """The job, if `owner` (an account; None: an admin, any account) may see it."""
    job = session.get(Job, job_id)
    if job is None or (owner is not None and job.owner != owner):
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    return job


def _insert_items(session: Session, job: Job, uploads: list[Upload]) -> list[int]:
    """Insert the uploads; returns the ids of those to queue, in upload order."""
    if not uploads:
        return []
    now = datetime.now(UTC)
    rows = [{"job_id": job.id, "filename": u.filename[:1000], "content": u.content,
             "status": u.status, "error": u.error,
             "finished_at": None if u.status == ItemStatus.PENDING else now,
             "queued_at": now if u.status == ItemStatus.PENDING else None}
            for u in uploads]
    # Each returned row pairs an id with its own status. Upload order only decides which
    # chunk an image travels in: sorting the ids is cheaper than a sentinel per row.
    # A Core insert: the ORM's bulk path costs a third more per row and adds nothing here.
    table = Item.__table__
    ids = session.connection().execute(
        insert(table).returning(table.c.id, table.c.status), rows).all()
    session.execute(update(Job).where(Job.id == job.id)
                    .values(total=Job.total + len(rows)))
    queued = sorted(i for i, status in ids if status == ItemStatus.PENDING)
    metrics.IMAGES_RECEIVED.labels("queued").inc(len(queued))
    if len(rows) > len(queued):
        metrics.IMAGES_RECEIVED.labels("rejected").inc(len(rows) - len(queued))
    metrics.IMAGE_BYTES_RECEIVED.inc(sum(len(u.content) for u in uploads))
    return queued


def _queue(celery: Celery, ids: list[int]) -> None:
    try:
        dispatch.send_chunks(celery, ids, get_settings().chunk_size)
    except Exception as exc:  # Redis down: the items are committed; the reconciler re-queues
        log.warning("could not queue %d items now (%s); the reconciler will", len(ids), exc)


def _job_with_key(owner: str, idempotency_key: str | None) -> str | None:
    if not idempotency_key:
        return None
    with db.session() as s:
        return s.scalar(select(Job.id).where(Job.owner == owner,
                                             Job.idempotency_key == idempotency_key))


def create_job(celery: Celery, owner: str, uploads: list[Upload], open_: bool,
               idempotency_key: str | None, model_version: str | None) -> tuple[str, bool]:
    """Returns (job id, created). A repeated Idempotency-Key returns the first job."""
    existing = _job_with_key(owner, idempotency_key)
    if existing:
        return existing, False
    if not uploads and not open_:
        raise ApiError(400, "no_files", "send at least one file, or create the job with open=true")
    try:
        with db.session() as s:
            job = Job(id=new_job_id(), owner=owner, open=open_, idempotency_key=idempotency_key,
                      model_version=model_version, total=0)
            logs.JOB_ID.set(job.id)  # the log lines from here on, and the tasks sent, name it
            s.add(job)
            s.flush()
            ids = _insert_items(s, job, uploads)
    except IntegrityError:
        # Two creates with one key raced; the other one won.
        existing = _job_with_key(owner, idempotency_key)
        if existing is None:
            raise
        return existing, False
    _queue(celery, ids)
    _close_if_done(job.id)
    return job.id, True


def _replayed_add(session: Session, job_id: str, key: str | None) -> int | None:
    if not key:
        return None
    return session.scalar(select(JobAdd.added).where(JobAdd.job_id == job_id,
                                                     JobAdd.idempotency_key == key))


def add_images(celery: Celery, owner: str, job_id: str, uploads: list[Upload],
               idempotency_key: str | None = None) -> tuple[int, bool]:
    """Returns (files added, replayed). An add whose Idempotency-Key this job has seen
    already adds nothing and answers as the first one did, even once the job is sealed:
    the key is stored in the transaction that stores the images, so they landed."""
    try:
        with db.session() as s:
            job = get_job(s, owner, job_id)
            replayed = _replayed_add(s, job_id, idempotency_key)
            if replayed is not None:
                return replayed, True
            if job.expired_at is not None and job.status != JobStatus.CANCELLED:
                raise ApiError(409, "job_expired",
                               f"job {job_id} expired: nothing was added to it or sealed it "
                               f"for {get_settings().open_job_expiry_minutes:g} min, so it "
                               "was sealed; the images it holds are classified. Create a "
                               "new job for the rest")
            if not job.open or job.status in JobStatus.FINAL:
                raise ApiError(409, "job_sealed",
                               f"job {job_id} is "
                               f"{job.status if job.status in JobStatus.FINAL else 'sealed'}; "
                               "create a new job or create it with open=true")
            job.fed_at = datetime.now(UTC)
            if idempotency_key:
                # First, so that a concurrent add with the same key waits or fails here.
                s.add(JobAdd(job_id=job_id, idempotency_key=idempotency_key,
                             added=len(uploads)))
                s.flush()
            ids = _insert_items(s, job, uploads)
    except IntegrityError:
        # Two adds with one key raced; the other one's images landed.
        with db.session() as s:
            replayed = _replayed_add(s, job_id, idempotency_key)
        if replayed is None:
            raise
        return replayed, True
    _queue(celery, ids)
    return len(uploads), False


def seal(owner: str, job_id: str) -> None:
    with db.session() as s:
        job = get_job(s, owner, job_id)
        if job.status == JobStatus.CANCELLED:
            raise ApiError(409, "job_cancelled", f"job {job_id} is cancelled")
        job.open = False
    _close_if_done(job_id)


def _close_if_done(job_id: str) -> None:
    with db.session() as s:
        jobstate.finish_if_complete(s, [job_id])


def cancel(owner: str, job_id: str) -> None:
    with db.session() as s:
        job = get_job(s, owner, job_id)
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            raise ApiError(409, "job_finished", f"job {job_id} has already {job.status}")
        jobstate.cancel(s, job_id)


def delete(owner: str | None, job_id: str) -> int:
    """The caller's job and everything it stored; a running job is cancelled first."""
    with db.session() as s:
        get_job(s, owner, job_id)
        return retention.delete_job(s, job_id)


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("after:"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_cursor", "the cursor is not one this server gave out") from exc


def encode_cursor(value: int | str) -> str:
    return base64.urlsafe_b64encode(f"after:{value}".encode()).decode()


def result_page(session: Session, job_id: str, after: int, limit: int,
                statuses: list[str] | None, needs_review: bool | None) -> list[Item]:
    query = select(Item).where(Item.job_id == job_id, Item.id > after)
    if statuses:
        query = query.where(Item.status.in_(statuses))
    if needs_review is not None:
        query = query.where(Item.needs_review == needs_review)
    return list(session.scalars(query.order_by(Item.id).limit(limit)))


def iter_results(job_id: str, statuses: list[str] | None,
                 needs_review: bool | None) -> Iterator[Item]:
    """Every matching item, a page per short transaction (for CSV streaming)."""
    after = 0
    while True:
        with db.session() as s:
            page = result_page(s, job_id, after, 1000, statuses, needs_review)
        yield from page
        if len(page) < 1000:
            return
        after = page[-1].id


def item_file(session: Session, owner: str, job_id: str, item_id: int,
              column) -> tuple[str, bytes | None]:
    """An item of the caller's job: its status and one stored file (`Item.content`,
    `Item.thumbnail` or `Item.model_input`), read alone: no other blob, nothing decoded.
    The file is None where none was stored (pending, failed, or finished before
    thumbnails were kept)."""
    get_job(session, owner, job_id)
    row = session.execute(select(Item.status, column)
                          .where(Item.id == item_id, Item.job_id == job_id)).first()
    if row is None:
        raise ApiError(404, "item_not_found", f"no item {item_id} in job {job_id}")
    return row[0], row[1]


def list_jobs(session: Session, owner: str | None, cursor: str | None,
              limit: int) -> list[Job]:
    """Newest first, keyset-paginated on (created_at, id); every account's for None."""
    query = select(Job) if owner is None else select(Job).where(Job.owner == owner)
    if cursor:
        anchor = session.get(Job, cursor)
        if anchor is None or (owner is not None and anchor.owner != owner):
            raise ApiError(400, "bad_cursor", "the cursor is not one this server gave out")
        query = query.where(tuple_(Job.created_at, Job.id) < (anchor.created_at, anchor.id))
    return list(session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc())
                                .limit(limit)))
