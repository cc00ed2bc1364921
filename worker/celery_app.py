"""The worker's Celery app: the shared configuration plus the task bodies.

`celery -A worker.celery_app worker` or `digits worker` runs it. Each forked child
drops the database pool it may have inherited; the model loads on the first task.
"""

from __future__ import annotations

from celery.signals import worker_process_init

from shared import db
from shared.celery_app import make_celery

app = make_celery()


@worker_process_init.connect
def _after_fork(**_kwargs) -> None:
    # A pooled connection inherited across fork corrupts both sides (SQLAlchemy docs).
    db.dispose(close=False)


import worker.tasks  # noqa: E402, F401  (registers the tasks on `app`)
