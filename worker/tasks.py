"""Thin Celery tasks over worker.processing. Each states its queue and limits here."""

from __future__ import annotations

from shared import dispatch
from shared.queues import BULK_QUEUE, CLASSIFY_CHUNK, INTERACTIVE_QUEUE, PING, PREDICT_IMAGE
from worker import processing
from worker.celery_app import app


def _requeue(ids: list[int], size: int) -> None:
    dispatch.send_chunks(app, ids, size)


@app.task(name=CLASSIFY_CHUNK, queue=BULK_QUEUE, acks_late=True, soft_time_limit=300,
          time_limit=360, bind=True)
def classify_chunk(self, item_ids: list[int]) -> int:
    return processing.classify_items(item_ids, task_id=self.request.id, requeue=_requeue)


# Predictions are answered to a waiting HTTP request: keep the result briefly, and
# drop messages the caller has stopped waiting for.
@app.task(name=PREDICT_IMAGE, queue=INTERACTIVE_QUEUE, ignore_result=False, acks_late=False,
          expires=60, soft_time_limit=30, time_limit=40)
def predict_image(data_b64: str) -> dict:
    return processing.predict_bytes(data_b64)


@app.task(name=PING, queue=INTERACTIVE_QUEUE, ignore_result=False, acks_late=False)
def ping() -> str:
    return "pong"
