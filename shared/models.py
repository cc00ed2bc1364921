"""Database tables: a job, and its items (one scanned image each, with its result).

The database is the source of truth. An item is committed, image bytes included,
before its id is queued; the worker writes the result onto the item row only while
it is still `pending`, so doing an image twice leaves one result.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import text as sql_text  # `text` is an item's column here
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class JobStatus:
    QUEUED = "queued"  # accepted, nothing finished yet
    RUNNING = "running"  # at least one item finished
    SUCCEEDED = "succeeded"  # every item finished; some may have failed alone
    FAILED = "failed"  # every item failed
    CANCELLED = "cancelled"
    FINAL = (SUCCEEDED, FAILED, CANCELLED)


class ItemStatus:
    PENDING = "pending"
    DONE = "done"  # classified
    NO_DIGIT = "no_digit"  # blank or not a digit: no confident guess
    FAILED = "failed"  # could not be decoded; `error` says why
    CANCELLED = "cancelled"
    FINISHED = (DONE, NO_DIGIT, FAILED, CANCELLED)


class JobMode:
    DIGIT = "digit"  # each image one digit
    STRING = "string"  # each image a field of digits (a postal code, an amount), read whole
    ALL = (DIGIT, STRING)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_job_id)
    owner: Mapped[str] = mapped_column(String(200), default="local", index=True)  # account
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.QUEUED, index=True)
    # An open job takes more images until it is sealed; it cannot finish before that.
    open: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    mode: Mapped[str] = mapped_column(String(10), default=JobMode.DIGIT,
                                      server_default=JobMode.DIGIT)
    total: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The last create or add: an open job nobody feeds or seals for
    # DIGITS_OPEN_JOB_EXPIRY_MINUTES is sealed by the reconciler, and says so here.
    fed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                    nullable=True)
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    items: Mapped[list[Item]] = relationship(back_populates="job", lazy="raise")

    __table_args__ = (UniqueConstraint("owner", "idempotency_key", name="uq_jobs_idempotency"),)


class JobAdd(Base):
    """One add of images to an open job, by its Idempotency-Key: a retried add (the
    connection broke before the answer came) finds its key here and lands once. Scoped
    to the job, and so to the owner that may touch it."""

    __tablename__ = "job_adds"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    added: Mapped[int] = mapped_column(Integer)  # files in the request, as first answered
    # While the add is stored (in runs, api/jobs_service.py): the request storing it, and
    # `added` counts the files stored so far. NULL once the add is whole.
    claim: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key of an account (shared.accounts): only a keyed hash of the key is kept
    (HMAC-SHA256 with the server secret; the key itself is shown once, when made)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account: Mapped[str] = mapped_column(String(200), index=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(1000))
    content: Mapped[bytes] = deferred(mapped_column(LargeBinary, nullable=False))
    status: Mapped[str] = mapped_column(String(20), default=ItemStatus.PENDING)
    digit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    probabilities: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # String mode: the digits read left to right, and each one's digit, confidence and box
    # ([left, top, right, bottom] in the image's pixels). NULL in digit mode.
    text: Mapped[str | None] = mapped_column(String(64), nullable=True)
    digits: Mapped[list[dict] | None] = mapped_column(JSON, nullable=True)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # What people see beside a result (shared.thumbnails), written with it by the worker for
    # every image that decoded: the source at most 96 px in a format browsers draw, and the
    # 28x28 PNG the model was given. NULL while pending, for failures, and for results
    # written before they were kept. Deferred, like `content`: listings never read them.
    thumbnail: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, nullable=True))
    model_input: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, nullable=True))
    # Counted by the worker as a chunk arrives, committed before any image is read: the
    # Redis transport counts no deliveries. `last_task` is the message that last carried
    # the item; the same message again means that delivery never finished (its worker
    # died), and each such return adds to `crashes` (worker/processing.py).
    deliveries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    crashes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_task: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Set as a chunk is delivered: past it, a pending item's delivery was lost (a task
    # that failed for good, a worker gone) and the reconciler queues it again, whatever
    # the backlog. NULL while queued and not yet delivered.
    leased_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                          nullable=True)

    job: Mapped[Job] = relationship(back_populates="items", lazy="raise")

    __table_args__ = (
        Index("ix_items_job_id_id", "job_id", "id"),
        # Covers a job's counts (status, needs_review) without reading the rows' images.
        Index("ix_items_job_status_review", "job_id", "status", "needs_review"),
        Index("ix_items_status_queued", "status", "queued_at"),
        # Finished images over the last minutes (the status page's images per second):
        # only finished rows, so storing pending images costs nothing more.
        Index("ix_items_finished", "finished_at", "status",
              sqlite_where=sql_text("finished_at IS NOT NULL"),
              postgresql_where=sql_text("finished_at IS NOT NULL")),
    )
