"""Thin Celery tasks over worker.processing. Each states its queue and limits here."""

from __future__ import annotations

import logging
import random

from shared import dispatch
from shared.queues import BULK_QUEUE, CLASSIFY_CHUNK
from shared.settings import get_settings
from worker import processing
from worker.celery_app import app

log = logging.getLogger(__name__)


def _requeue(ids: list[int], size: int) -> None:
    dispatch.send_chunks(app, ids, size)


@app.task(name=CLASSIFY_CHUNK, queue=BULK_QUEUE, acks_late=True, soft_time_limit=300,
          time_limit=360, bind=True)
def classify_chunk(self, item_ids: list[int]) -> int:
    """A chunk; a raised error (a locked or unreachable database, the soft time limit) is
    tried again 1 s, 2 s, 4 s ... (at most 60 s, with jitter) later, at most
    DIGITS_TASK_MAX_RETRIES times; then its images fail with task_error. Were even that
    write to fail, their lease runs out and the reconciler queues them again."""
    tries = self.request.retries
    # Each try is its own delivery: a retry is not a message come back from a dead worker.
    delivery = f"{self.request.id}:{tries}"
    try:
        return processing.classify_items(item_ids, task_id=delivery, requeue=_requeue)
    except Exception as exc:
        cap = get_settings().task_max_retries
        what = f"{type(exc).__name__}: {exc}".strip()
        if tries < cap:
            countdown = min(60.0, 2.0**tries) * random.uniform(0.5, 1.0)
            log.warning("chunk of %d items failed (%s); try %d of %d in %.1f s",
                        len(item_ids), what, tries + 2, cap + 1, countdown)
            raise self.retry(exc=exc, countdown=countdown, max_retries=cap) from None
        return processing.fail_pending(
            item_ids, f"task_error: gave up after {tries + 1} tries: {what}"[:1000])
