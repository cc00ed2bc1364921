"""The worker's Celery app: the shared configuration plus the task bodies.

`celery -A worker.celery_app worker` or `digits worker` runs it. Each forked child
drops the database pool it may have inherited and starts loading (and running once)
the model in a background thread, so the first chunk does not wait for it.
"""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_process_init

from shared import db
from shared.celery_app import make_celery

app = make_celery()


@worker_process_init.connect
def _after_fork(**_kwargs) -> None:
    # A pooled connection inherited across fork corrupts both sides (SQLAlchemy docs).
    db.dispose(close=False)
    # Load the model in the background: Celery kills a worker_process_init handler that
    # runs for more than ~4 s, and the first task waits on the predictor's lock anyway.
    threading.Thread(target=_warm_up, name="model-warm-up", daemon=True).start()


def _warm_up() -> None:
    import numpy as np

    from worker.inference import get_predictor

    try:
        predictor = get_predictor()
        # One full batch: the kernels for that shape are chosen and built now, not on the
        # first chunk.
        predictor.probabilities(np.zeros((predictor.max_batch_size, 28, 28), np.float32))
    except Exception:  # the first task will raise the same error where it is reported
        logging.getLogger(__name__).exception("could not load the model")


import worker.tasks  # noqa: E402, F401  (registers the tasks on `app`)
