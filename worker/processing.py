"""What a worker does with a chunk of item ids, as plain functions the tasks wrap.

Load the still-pending items, decode and normalise them (shared code), run the
model in batches, and write every result keyed by item id in one transaction, with a
thumbnail of each image that decoded and the 28x28 input the model was given,
guarded by `status = 'pending'`: an image processed twice (a redelivered chunk,
a reconciler re-queue) keeps its first result, and cancelled items are skipped.

Each chunk and prediction is counted and timed by stage (shared.metrics): a few
counter updates per chunk, never per image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import bindparam, func, select, update

from shared import db, dispatch, failpoints, jobstate, logs, metrics, thumbnails
from shared.imaging import ImageError, Prepared, prepare_many
from shared.models import Item, ItemStatus, Job, JobMode
from shared.queues import BULK_QUEUE
from shared.settings import get_settings
from shared.verdict import judge
from worker.inference import Predictor, get_predictor, loaded_version
from worker.strings import StringModel, get_string_model

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    status: str
    digit: int | None = None
    confidence: float | None = None
    probabilities: list[float] | None = None
    needs_review: bool = False
    error: str | None = None
    # String mode (worker/strings.py): the digits left to right, and each one's digit,
    # confidence and box; None in digit mode.
    text: str | None = None
    digits: list[dict] | None = None
    # PNG (or small browser-ready) bytes, kept with a stored result; never in as_dict.
    thumbnail: bytes | None = field(default=None, repr=False)
    model_input: bytes | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("thumbnail", "model_input")}


def _thumbnail(data: bytes) -> bytes | None:
    try:
        return thumbnails.thumbnail(data)
    except Exception:  # a preview never fails the result it goes with
        log.warning("no thumbnail for an image that was classified", exc_info=True)
        return None


def classify(images: list[bytes], predictor: Predictor,
             probabilities: Callable[[np.ndarray], np.ndarray] | None = None,
             previews: bool = False, clock: dict[str, float] | None = None) -> list[Outcome]:
    """Decode, normalise and classify; a bad image fails alone with its error.
    `probabilities` defaults to the predictor's own batches (a chunk fills them). With
    `previews`, every image that decoded also gets its thumbnail and the PNG of its
    model input (shared.thumbnails). A `clock` dict gets the seconds spent decoding,
    in the model and on previews added to it."""
    started = time.perf_counter()
    prepared = prepare_many(images, get_settings().max_image_pixels)
    good = [p for p in prepared if isinstance(p, Prepared)]
    pixels = np.stack([p.pixels for p in good]) if good else None
    decoded = time.perf_counter()
    probs = ((probabilities or predictor.probabilities)(pixels)
             if good else np.zeros((0, 10), np.float32))
    # Each row with its copy for storage: six places, rounded all at once, in float64 so
    # that each prints as its decimal.
    rows = zip(probs, np.round(probs.astype(np.float64), 6).tolist(), strict=True)
    outcomes = []
    for p in prepared:
        if isinstance(p, ImageError):
            outcomes.append(Outcome(ItemStatus.FAILED, error=f"{p.code}: {p}"))
            continue
        probability, stored = next(rows)
        verdict = judge(p, probability, predictor.meta)
        outcomes.append(Outcome(
            status=verdict.status, digit=verdict.digit, confidence=round(verdict.confidence, 6),
            probabilities=stored, needs_review=verdict.needs_review))
    judged = time.perf_counter()
    if previews and good:
        inputs = iter(thumbnails.model_input_pngs(pixels))
        for data, p, outcome in zip(images, prepared, outcomes, strict=True):
            if isinstance(p, Prepared):
                outcome.thumbnail = _thumbnail(data)
                outcome.model_input = next(inputs, None)
    if clock is not None:
        clock["decode"] = clock.get("decode", 0.0) + decoded - started
        clock["model"] = clock.get("model", 0.0) + judged - decoded  # verdicts included
        if previews:
            clock["previews"] = clock.get("previews", 0.0) + time.perf_counter() - judged
    return outcomes


def read(images: list[bytes], model: StringModel | None = None, previews: bool = False,
         clock: dict[str, float] | None = None) -> list[Outcome]:
    """String mode: each image a field of digits, read whole by the string model; a bad
    image fails alone. With `previews`, the thumbnail and the strip the model saw."""
    started = time.perf_counter()
    model = model or get_string_model()
    readings = model.read(images)
    outcomes = [Outcome(status=r.status, confidence=r.confidence, needs_review=r.needs_review,
                        error=r.error, text=r.text,
                        digits=[d.as_dict() for d in r.digits] if r.digits else None)
                for r in readings]
    for o in outcomes:
        if o.confidence is not None:
            o.confidence = round(o.confidence, 6)
    read_at = time.perf_counter()
    if previews:
        for data, r, outcome in zip(images, readings, outcomes, strict=True):
            if r.strip is not None:
                outcome.thumbnail = _thumbnail(data)
                outcome.model_input = thumbnails.model_input_png(r.strip)
    if clock is not None:
        clock["model"] = clock.get("model", 0.0) + read_at - started  # decoding included
        if previews:
            clock["previews"] = clock.get("previews", 0.0) + time.perf_counter() - read_at
    return outcomes


def record(queue: str, outcomes: list[Outcome], clock: dict[str, float]) -> None:
    metrics.record_outcomes(queue, (o.status for o in outcomes),
                            sum(o.needs_review for o in outcomes))
    metrics.record_stages(queue, clock)


_write = (
    update(Item.__table__)
    .where(Item.__table__.c.id == bindparam("item_id"))
    .where(Item.__table__.c.status == ItemStatus.PENDING)
    .values(status=bindparam("new_status"), digit=bindparam("digit"),
            confidence=bindparam("confidence"), probabilities=bindparam("probabilities"),
            needs_review=bindparam("needs_review"), error=bindparam("error"),
            text=bindparam("text"), digits=bindparam("digits"),
            thumbnail=bindparam("thumbnail"), model_input=bindparam("model_input"),
            finished_at=bindparam("finished_at"))
)


# A chunk whose message comes back unfinished (its worker died) is sent again in this
# many parts: the image to blame is found in a few rounds, and the rest go on.
SPLIT_PARTS = 8
# Deaths of a worker, with the image alone in its chunk the last time, before it fails.
CRASHES_TO_FAIL = 2


def classify_items(item_ids: list[int], predictor: Predictor | None = None,
                   task_id: str | None = None,
                   requeue: Callable[[list[int], int], object] | None = None) -> int:
    """Classify the pending items among `item_ids`; returns how many results were written.

    With the message's `task_id`, each delivery is counted on the items and committed
    before any image is read. A message that finds its own id there came back after its
    worker died: with more than one item it is sent again in smaller parts (`requeue`);
    alone, an image fails with `worker_crashed` once it has killed a worker twice."""
    started = time.perf_counter()
    with db.session() as s:
        rows = s.execute(
            select(Item.id, Item.job_id, Item.filename, Item.last_task, Item.crashes)
            .where(Item.id.in_(item_ids), Item.status == ItemStatus.PENDING)
            .order_by(Item.id)
        ).all()
        if rows and task_id:
            ids = [r.id for r in rows]
            lease = datetime.now(UTC) + timedelta(seconds=get_settings().lease_s)
            s.execute(update(Item).where(Item.id.in_(ids))
                      .values(deliveries=Item.deliveries + 1, last_task=task_id,
                              leased_until=lease))
            back = [r.id for r in rows if r.last_task == task_id]
            if back:
                s.execute(update(Item).where(Item.id.in_(back))
                          .values(crashes=Item.crashes + 1))
    if len(rows) < len(item_ids):
        metrics.WORKER_SKIPPED.inc(len(item_ids) - len(rows))
    if not rows:
        return 0
    job_ids = sorted({r.job_id for r in rows})
    # A re-queued chunk carries no job id in its headers; its items may name one.
    one_job = job_ids[0] if len(job_ids) == 1 and logs.JOB_ID.get() is None else None
    with logs.scope(job_id=one_job):
        if task_id and any(r.last_task == task_id for r in rows):
            handled = _after_a_crash(rows, job_ids, requeue)
            if handled is not None:
                return handled
        failpoints.worker_chunk(r.filename for r in rows)
        written = 0
        for part in _parts_by_bytes(rows, get_settings().max_chunk_bytes):
            with db.session() as s:
                contents = dict(s.execute(select(Item.id, Item.content)
                                          .where(Item.id.in_([r.id for r in part]))).all())
            written += _classify_rows(part, [contents[r.id] for r in part], job_ids,
                                      len(part), predictor, started)
            del contents
            started = time.perf_counter()
        return written


def _parts_by_bytes(rows, limit: int) -> list[list]:
    """The chunk's rows in runs of at most `limit` stored bytes (an image bigger than
    that goes alone): a worker holds one run's images at a time, not the whole chunk's
    (256 x 8 MiB at worst). The sizes come from the database, not from reading blobs."""
    with db.session() as s:
        sizes = dict(s.execute(select(Item.id, func.length(Item.content))
                               .where(Item.id.in_([r.id for r in rows]))).all())
    parts: list[list] = [[]]
    held = 0
    for r in rows:
        size = int(sizes.get(r.id) or 0)
        if parts[-1] and held + size > limit:
            parts.append([])
            held = 0
        parts[-1].append(r)
        held += size
    return parts


def _after_a_crash(rows, job_ids: list[str],
                   requeue: Callable[[list[int], int], object] | None) -> int | None:
    """This chunk's message came back: its worker died handling it. Split it, fail the
    one image to blame, or (an image alone that has killed a worker once) try again."""
    ids = [r.id for r in rows]
    if len(rows) > 1 and requeue is not None:
        size = -(-len(ids) // SPLIT_PARTS)
        with db.session() as s:  # queued again: no lease until a worker takes a part
            dispatch.mark_queued(s, ids)
        requeue(ids, size)
        log.warning("chunk of %d items came back after its worker died: sent again in "
                    "parts of %d", len(ids), size)
        return 0
    crashes = rows[0].crashes + 1  # this return included
    if len(rows) > 1 or crashes < CRASHES_TO_FAIL:
        return None
    error = (f"worker_crashed: a worker process died {crashes} times while handling this "
             "image (killed for memory, or a crash in a decoder); it fails alone")
    with db.session() as s:
        written = s.execute(update(Item).where(Item.id == ids[0],
                                               Item.status == ItemStatus.PENDING)
                            .values(status=ItemStatus.FAILED, error=error,
                                    finished_at=datetime.now(UTC))).rowcount
        jobstate.mark_started(s, job_ids)
    with db.session() as s:
        jobstate.finish_if_complete(s, job_ids)
    metrics.record_outcomes(BULK_QUEUE, [ItemStatus.FAILED] * written, 0)
    log.error("item %d failed alone: %s", ids[0], error)
    return written


def fail_pending(item_ids: list[int], error: str) -> int:
    """Fail the items among `item_ids` still pending, with `error`; close their jobs."""
    now = datetime.now(UTC)
    with db.session() as s:
        job_ids = sorted(set(s.scalars(select(Item.job_id).where(
            Item.id.in_(item_ids), Item.status == ItemStatus.PENDING))))
        written = s.execute(update(Item).where(Item.id.in_(item_ids),
                                               Item.status == ItemStatus.PENDING)
                            .values(status=ItemStatus.FAILED, error=error,
                                    finished_at=now)).rowcount
        jobstate.mark_started(s, job_ids)
    with db.session() as s:
        jobstate.finish_if_complete(s, job_ids)
    metrics.record_outcomes(BULK_QUEUE, [ItemStatus.FAILED] * written, 0)
    log.error("%d items failed: %s", written, error)
    return written


def _outcomes(rows, contents: list[bytes], job_ids: list[str], predictor: Predictor | None,
              clock: dict[str, float]) -> list[Outcome]:
    """Each row's outcome: digit mode through the digit model, string mode (its job's
    `mode`) through the string model, each kind in one go."""
    with db.session() as s:
        strings = {j for j, mode in s.execute(select(Job.id, Job.mode)
                                             .where(Job.id.in_(job_ids))).all()
                   if mode == JobMode.STRING}
    wanted = [r.job_id in strings for r in rows]
    outcomes: list[Outcome | None] = [None] * len(rows)
    for as_string in (False, True):
        idx = [i for i, w in enumerate(wanted) if w == as_string]
        if not idx:
            continue
        part = [contents[i] for i in idx]
        got = (read(part, previews=True, clock=clock) if as_string else
               classify(part, predictor or get_predictor(), previews=True, clock=clock))
        for i, o in zip(idx, got, strict=True):
            outcomes[i] = o
    return outcomes  # type: ignore[return-value]


def _classify_rows(rows, contents: list[bytes], job_ids: list[str], asked: int,
                   predictor: Predictor | None, started: float) -> int:
    clock = {"load": time.perf_counter() - started}
    outcomes = _outcomes(rows, contents, job_ids, predictor, clock)
    writing = time.perf_counter()
    now = datetime.now(UTC)
    params = [
        {"item_id": r.id, "new_status": o.status, "digit": o.digit, "confidence": o.confidence,
         "probabilities": o.probabilities, "needs_review": o.needs_review, "error": o.error,
         "text": o.text, "digits": o.digits,
         "thumbnail": o.thumbnail, "model_input": o.model_input, "finished_at": now}
        for r, o in zip(rows, outcomes, strict=True)
    ]
    with db.session() as s:
        written = s.connection().execute(_write, params).rowcount
        jobstate.mark_started(s, job_ids, loaded_version())
    # A separate transaction, after the commit: whoever writes a job's last results
    # sees them all here and closes the job.
    with db.session() as s:
        jobstate.finish_if_complete(s, job_ids)
    done = time.perf_counter()
    clock["write"] = done - writing
    record(BULK_QUEUE, outcomes, clock)
    metrics.WORKER_CHUNK.observe(done - started)
    log.info("chunk of %d items: %d written in %.0f ms (jobs %s)", asked, written,
             (done - started) * 1000, job_ids)
    return written
