"""The worker's Celery app: the shared configuration plus the task bodies.

`celery -A worker.celery_app worker` or `digits worker` runs it. Each forked child
drops the database pool it may have inherited and warms up in a background thread
(the model run once, an image prepared, a connection opened), so the first chunk
does not wait for any of that.
"""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_init, worker_process_init

from shared import db
from shared.celery_app import make_celery
from worker.malloc import keep_freed_memory

app = make_celery()


@worker_init.connect
def _before_the_pool(**_kwargs) -> None:
    # In the main process, before the pool forks: the children inherit the setting.
    keep_freed_memory()


@worker_process_init.connect
def _after_fork(**_kwargs) -> None:
    # A pooled connection inherited across fork corrupts both sides (SQLAlchemy docs).
    db.dispose(close=False)
    # Load the model in the background: Celery kills a worker_process_init handler that
    # runs for more than ~4 s, and the first task waits on the predictor's lock anyway.
    threading.Thread(target=_warm_up, name="model-warm-up", daemon=True).start()


def _warm_up() -> None:
    """What a first chunk would otherwise wait for: the model and its kernels for a full
    batch, the decoders and resampling weights, a database connection."""
    import io

    import numpy as np
    from PIL import Image

    from shared.imaging import prepare_many
    from worker.inference import get_predictor

    log = logging.getLogger(__name__)
    try:
        predictor = get_predictor()
        predictor.probabilities(np.zeros((predictor.max_batch_size, 28, 28), np.float32))
    except Exception:  # the first task will raise the same error where it is reported
        log.exception("could not load the model")
    page = np.full((28, 28), 255, np.uint8)
    page[6:22, 12:16] = 0  # a "1"
    buffer = io.BytesIO()
    Image.fromarray(page).save(buffer, format="PNG")
    prepare_many([buffer.getvalue()])
    try:
        with db.engine().connect():
            pass
    except Exception as exc:  # not fatal here: a chunk reports it if it lasts
        log.warning("database not reachable yet: %s", exc)


import worker.tasks  # noqa: E402, F401  (registers the tasks on `app`)
