"""The naive design the benchmark compares against: one Celery task and one database
commit per image (and one queue message per image). Same model, same database, same
workers; only the unit of work differs.

Run a worker for it with: celery -A bench.naive worker -Q naive -c 2
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert

from shared import db
from shared.celery_app import make_celery
from shared.models import Item, ItemStatus, Job

app = make_celery()
QUEUE = "naive"


@app.task(name="bench.naive_classify", queue=QUEUE, acks_late=True)
def naive_classify(item_id: int) -> int:
    from worker.processing import classify_items

    return classify_items([item_id])  # one image, its own transaction and commit


def submit(paths: list, job_id: str) -> None:
    """Insert each image with its own commit and queue it as its own task."""
    with db.session() as s:
        s.add(Job(id=job_id, owner="bench", open=True, total=len(paths)))
    for path in paths:
        with db.session() as s:
            item_id = s.execute(insert(Item).returning(Item.id), {
                "job_id": job_id, "filename": path.name, "content": path.read_bytes(),
                "status": ItemStatus.PENDING, "queued_at": datetime.now(UTC)}).scalar_one()
        naive_classify.apply_async(args=[item_id], queue=QUEUE)
