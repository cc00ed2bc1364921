"""Job operations as plain functions over a session; the views stay thin.

Every write commits the items before their ids are queued (the database is the
source of truth), a bounded run at a time. If Redis is unreachable at that moment the
images are still safe: the reconciler queues them once it is back.
"""

from __future__ import annotations

import base64
import itertools
import logging
import time
import uuid
from collections.abc import Collection, Iterable, Iterator
from datetime import UTC, datetime

from celery import Celery
from sqlalchemy import Row, and_, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.turns import taking_turns
from api.uploads import Collected, Upload
from shared import db, dispatch, jobstate, logs, metrics, retention
from shared.models import Item, ItemStatus, Job, JobAdd, JobMode, JobStatus, new_job_id
from shared.settings import get_settings

log = logging.getLogger(__name__)


def get_job(session: Session, owner: str | None, job_id: str) -> Job:
    """The job, if `owner` (an account; None: an admin, any account) may see it."""
    job = session.get(Job, job_id)
    if job is None or (owner is not None and job.owner != owner):
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    return job


# One insert transaction writes at most about this many image bytes, or rows: SQLite has
# one write lock, held for a run, not for a whole request, so the workers' result writes
# and other adds wait a moment, not for the request. The API holds one run at a time.
RUN_BYTES = 8 * 1024 * 1024
RUN_ROWS = 500
# SQLite's lock is not fair: a waiting writer's busy handler looks for it at most 100 ms
# apart, and would miss a gap of microseconds between runs. A pause this long lets it in.
SQLITE_RUN_PAUSE_S = 0.11


def _item_rows(job_id: str, uploads: list[Upload]) -> list[dict]:
    """The rows to insert for the uploads. Built before the transaction: on SQLite every
    other writer waits from its first write to its commit (bench/sqlite_lock.py)."""
    now = datetime.now(UTC)
    return [{"job_id": job_id, "filename": u.filename[:1000], "content": u.content,
             "status": u.status, "error": u.error,
             "finished_at": None if u.status == ItemStatus.PENDING else now,
             "queued_at": now if u.status == ItemStatus.PENDING else None}
            for u in uploads]


def _insert_items(session: Session, rows: list[dict]) -> list[int]:
    """Insert the rows; returns the ids of those to queue, in upload order."""
    # Each returned row pairs an id with its own status. Upload order only decides which
    # chunk an image travels in: sorting the ids is cheaper than a sentinel per row.
    # A Core insert: the ORM's bulk path costs a third more per row and adds nothing here.
    table = Item.__table__
    ids = session.connection().execute(
        insert(table).returning(table.c.id, table.c.status), rows).all()
    return sorted(i for i, status in ids if status == ItemStatus.PENDING)


def _count_received(uploads: list[Upload], queued: int) -> None:
    metrics.IMAGES_RECEIVED.labels("queued").inc(queued)
    if len(uploads) > queued:
        metrics.IMAGES_RECEIVED.labels("rejected").inc(len(uploads) - queued)
    metrics.IMAGE_BYTES_RECEIVED.inc(sum(len(u.content) for u in uploads))


def _runs(uploads: Iterable[Upload]) -> Iterator[list[Upload]]:
    run: list[Upload] = []
    size = 0
    # Reading and checking a request's 500 files took 10-25 ms without a break: /predict
    # calls in the same process waited behind it (p99 beside a bulk upload 65-84 ms,
    # then 31-42 ms).
    for upload in taking_turns(uploads):
        run.append(upload)
        size += len(upload.content)
        if size >= RUN_BYTES or len(run) >= RUN_ROWS:
            yield run
            run.clear()  # stored: its bytes go before the next run is read
            size = 0
    if run:
        yield run


def _mine(job_id: str, key: str):
    return and_(JobAdd.job_id == job_id, JobAdd.idempotency_key == key)


def _taken_over() -> ApiError:
    return ApiError(409, "add_taken_over", "a retry of this request with the same "
                    "Idempotency-Key took it over; it goes on there")


def _store_run(job_id: str, run: list[Upload], key: str | None, claim: str | None) -> list[int]:
    """One run in a transaction of its own, if the job still takes images and this
    request still holds the add (the claim fences off a request that a retry replaced)."""
    rows = _item_rows(job_id, run)
    with db.session() as s:
        # The insert first: SQLite's write lock is taken by a transaction's first write,
        # and SQLAlchemy prepares the insert's parameters before it sends the statement.
        # A job that no longer takes images rolls the insert back below.
        queued = _insert_items(s, rows)
        taking = s.execute(
            update(Job).where(Job.id == job_id, Job.open.is_(True),
                              Job.status.not_in(JobStatus.FINAL))
            .values(total=Job.total + len(run), fed_at=datetime.now(UTC))
            .execution_options(synchronize_session=False)).rowcount
        if not taking:
            raise ApiError(409, "job_sealed", f"job {job_id} was sealed or cancelled while "
                           "images were being added to it; those stored before stay")
        if claim and not s.execute(
                update(JobAdd).where(_mine(job_id, key), JobAdd.claim == claim)
                .values(added=JobAdd.added + len(run))
                .execution_options(synchronize_session=False)).rowcount:
            raise _taken_over()
    _count_received(run, len(queued))
    return queued


def _store(celery: Celery, job_id: str, uploads: Collection[Upload], key: str | None,
           claim: str | None, skip: int = 0, seal: bool = False) -> None:
    """The uploads past the first `skip` (stored by a request this one took over), a run
    at a time: each run is committed, then queued. The add is whole, and answered, only
    after its last run."""
    rest = (uploads.after(skip) if isinstance(uploads, Collected)
            else itertools.islice(uploads, skip, None))
    for n, run in enumerate(_runs(rest)):
        if n and db.engine().dialect.name == "sqlite":
            time.sleep(SQLITE_RUN_PAUSE_S)
        _queue(celery, _store_run(job_id, run, key, claim))
    with db.session() as s:
        if claim and not s.execute(
                update(JobAdd).where(_mine(job_id, key), JobAdd.claim == claim)
                .values(claim=None, added=len(uploads))
                .execution_options(synchronize_session=False)).rowcount:
            raise _taken_over()
        if seal:
            s.execute(update(Job).where(Job.id == job_id).values(open=False)
                      .execution_options(synchronize_session=False))


def _queue(celery: Celery, ids: list[int]) -> None:
    if not ids:
        return
    try:
        dispatch.send_chunks(celery, ids, get_settings().chunk_size)
    except Exception as exc:  # Redis down: the items are committed; the reconciler re-queues
        log.warning("could not queue %d items now (%s); the reconciler will", len(ids), exc)


def _add_row(session: Session, job_id: str, key: str | None):
    """(added, claim) of the add under `key`; None if there is none. A NULL claim: whole."""
    if not key:
        return None
    return session.execute(select(JobAdd.added, JobAdd.claim)
                           .where(_mine(job_id, key))).first()


def _claim(session: Session, job_id: str, key: str) -> tuple[str | None, int]:
    """Takes the add under `key` for this request: (claim, files of it stored already).
    A request that was storing it is gone or replaced by this retry (a client retries
    only once it has given up on an answer): its next run finds the claim changed and
    stops, so no file is stored twice. The claim is None when the add turned out whole,
    and the count is then its answer."""
    claim = uuid.uuid4().hex
    session.execute(update(JobAdd).where(_mine(job_id, key), JobAdd.claim.is_not(None))
                    .values(claim=claim).execution_options(synchronize_session=False))
    row = _add_row(session, job_id, key)
    if row is None:
        session.add(JobAdd(job_id=job_id, idempotency_key=key, added=0, claim=claim))
        session.flush()
        return claim, 0
    return row.claim, row.added


def _job_with_key(owner: str, idempotency_key: str | None) -> str | None:
    if not idempotency_key:
        return None
    with db.session() as s:
        return s.scalar(select(Job.id).where(Job.owner == owner,
                                             Job.idempotency_key == idempotency_key))


def _new_job(owner: str, key: str | None, model_version: str | None, open_: bool,
             with_files: bool, mode: str = JobMode.DIGIT) -> tuple[str, str | None]:
    """A new job, and the claim on storing its files when they come with a key."""
    with db.session() as s:
        # Open while its files are stored, a run at a time, so that it cannot finish
        # before the last; sealed after it unless asked to stay open.
        job = Job(id=new_job_id(), owner=owner, open=open_ or with_files,
                  idempotency_key=key, model_version=model_version, total=0, mode=mode)
        logs.JOB_ID.set(job.id)  # the log lines from here on, and the tasks sent, name it
        s.add(job)
        s.flush()
        claim = None
        if key and with_files:
            claim = uuid.uuid4().hex
            s.add(JobAdd(job_id=job.id, idempotency_key=key, added=0, claim=claim))
    return job.id, claim


def _resume_create(owner: str, job_id: str, key: str) -> tuple[str | None, int]:
    """The create of `job_id` retried: (None, 0) if its files are all stored (or it had
    none), else the claim on storing the rest and how many are stored already."""
    with db.session() as s:
        row = _add_row(s, job_id, key)
        if row is None or row.claim is None:
            return None, 0
        _check_takes_images(get_job(s, owner, job_id))
        return _claim(s, job_id, key)


def create_job(celery: Celery, owner: str, uploads: Collection[Upload], open_: bool,
               idempotency_key: str | None, model_version: str | None,
               mode: str = JobMode.DIGIT) -> tuple[str, bool]:
    """Returns (job id, created). A repeated Idempotency-Key returns the first job; if
    the first request stopped before all its files were stored, the rest are stored.
    `mode`: each image one digit, or a string of digits read whole."""
    key = idempotency_key
    existing = _job_with_key(owner, key)
    if existing is None:
        if not uploads and not open_:
            raise ApiError(400, "no_files",
                           "send at least one file, or create the job with open=true")
        try:
            job_id, claim = _new_job(owner, key, model_version, open_, bool(uploads), mode)
            stored = 0
        except IntegrityError:
            # Two creates with one key raced; the other one won.
            existing = _job_with_key(owner, key)
            if existing is None:
                raise
    if existing is not None:
        job_id = existing
        claim, stored = _resume_create(owner, existing, key)
        if claim is None:
            return existing, False
    if uploads:
        _store(celery, job_id, uploads, key, claim, stored, seal=not open_)
    _close_if_done(job_id)
    return job_id, existing is None


def _check_takes_images(job: Job) -> None:
    if job.expired_at is not None and job.status != JobStatus.CANCELLED:
        raise ApiError(409, "job_expired",
                       f"job {job.id} expired: nothing was added to it or sealed it "
                       f"for {get_settings().open_job_expiry_minutes:g} min, so it "
                       "was sealed; the images it holds are classified. Create a "
                       "new job for the rest")
    if not job.open or job.status in JobStatus.FINAL:
        raise ApiError(409, "job_sealed",
                       f"job {job.id} is "
                       f"{job.status if job.status in JobStatus.FINAL else 'sealed'}; "
                       "create a new job or create it with open=true")


def _open_add(owner: str, job_id: str, key: str | None) -> tuple[str | None, int | None]:
    """(claim, files stored already) for a new or resumed add; (None, answer) for an add
    that is whole already."""
    with db.session() as s:
        job = get_job(s, owner, job_id)
        row = _add_row(s, job_id, key)
        if row is not None and row.claim is None:
            return None, row.added
        _check_takes_images(job)
        return _claim(s, job_id, key) if key else (None, None)


def add_images(celery: Celery, owner: str, job_id: str, uploads: Collection[Upload],
               idempotency_key: str | None = None) -> tuple[int, bool]:
    """Returns (files added, replayed). An add whose Idempotency-Key this job has seen
    whole already adds nothing and answers as the first one did, even once the job is
    sealed: the key's row counts the files stored with each run, so a retry of an add
    that stopped half way stores only the rest."""
    try:
        claim, stored = _open_add(owner, job_id, idempotency_key)
    except IntegrityError:
        # Two first tries with one key raced (PostgreSQL): the other one's row is there now.
        claim, stored = _open_add(owner, job_id, idempotency_key)
    if idempotency_key and claim is None:
        return stored, True
    _store(celery, job_id, uploads, idempotency_key, claim, stored or 0)
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


# What a result page shows of an item (api/serialize.py), read as plain rows: building
# ORM objects for a page of 500 held the API's event loop 2-3x longer, and /predict
# calls in the same process waited behind it.
RESULT_COLUMNS = (Item.id, Item.job_id, Item.filename, Item.status, Item.digit,
                  Item.confidence, Item.probabilities, Item.needs_review, Item.error,
                  Item.text, Item.digits)


def result_page(session: Session, job_id: str, after: int, limit: int,
                statuses: list[str] | None, needs_review: bool | None) -> list[Row]:
    """Rows with the attributes of RESULT_COLUMNS, in upload order."""
    query = select(*RESULT_COLUMNS).where(Item.job_id == job_id, Item.id > after)
    if statuses:
        query = query.where(Item.status.in_(statuses))
    if needs_review is not None:
        query = query.where(Item.needs_review == needs_review)
    return list(session.execute(query.order_by(Item.id).limit(limit)))


def iter_results(job_id: str, statuses: list[str] | None,
                 needs_review: bool | None) -> Iterator[Row]:
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
