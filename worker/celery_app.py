"""The worker's Celery app: the shared configuration plus the task bodies.

`celery -A worker.celery_app worker` or `digits worker` runs it. Each forked child
drops the database pool it may have inherited and warms up in a background thread
(the model run once, an image prepared, a connection opened), so the first chunk
does not wait for any of that.

Operations (docs/operations.md): logging is ours (shared.logs, text or JSON), not
Celery's; each task runs with the request id and job id from its headers in scope;
the main process announces the worker in Redis every few seconds (shared.overview)
and, with DIGITS_METRICS_PORT, serves the metrics of the worker and its pool.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from celery.signals import (
    setup_logging,
    task_failure,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

from shared import db, logs, metrics, overview, runtime
from shared.celery_app import make_celery
from shared.settings import get_settings
from worker.malloc import keep_freed_memory

app = make_celery()
log = logging.getLogger(__name__)


@setup_logging.connect
def _our_logging(loglevel=None, **_kwargs) -> None:
    # A receiver here means Celery leaves logging alone: our format, ids included.
    logs.configure(get_settings().log_format, loglevel or logging.INFO)


@worker_init.connect
def _before_the_pool(**_kwargs) -> None:
    # In the main process, before the pool forks: the children inherit the setting.
    keep_freed_memory()
    port = get_settings().metrics_port
    if port and get_settings().metrics:
        metrics.serve_own(port)
        log.info("serving this worker's metrics on port %d", port)


class Heartbeat:
    """Announces the worker in Redis every few seconds, from a thread of the main
    process, and withdraws it when the worker stops."""

    def __init__(self, consumer) -> None:
        from shared.celery_app import redis_client

        self.name = consumer.hostname
        controller = consumer.controller
        self.info = {
            "queues": sorted(q.name for q in consumer.app.amqp.queues.consume_from.values()),
            "concurrency": getattr(controller, "concurrency", None),
            "pool": type(consumer.pool).__module__.rsplit(".", 1)[-1] if consumer.pool else None,
            "pid": os.getpid(),
            "started_at": time.time(),
            "runtime": runtime.announced(get_settings()),
        }
        self.client = redis_client(socket_timeout=5, socket_connect_timeout=5)
        self.stopped = threading.Event()
        threading.Thread(target=self._loop, name="digits-heartbeat", daemon=True).start()

    def _loop(self) -> None:
        while not self.stopped.is_set():
            try:
                overview.announce(self.client, self.name, self.info)
            except Exception as exc:  # Redis away for a moment: the next beat tries again
                log.warning("could not announce the worker: %s", exc)
            self.stopped.wait(overview.HEARTBEAT_EVERY_S)

    def stop(self) -> None:
        self.stopped.set()
        try:
            overview.withdraw(self.client, self.name)
        except Exception as exc:
            log.warning("could not withdraw the worker's announcement: %s", exc)


_heartbeat: Heartbeat | None = None


@worker_ready.connect
def _announce(sender=None, **_kwargs) -> None:
    global _heartbeat
    if sender is not None and _heartbeat is None:
        _heartbeat = Heartbeat(sender)


@worker_shutdown.connect
def _withdraw(**_kwargs) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


@task_prerun.connect
def _ids_in_scope(task=None, **_kwargs) -> None:
    request = task.request if task is not None else None
    logs.REQUEST_ID.set(getattr(request, logs.TASK_REQUEST_ID, None))
    logs.JOB_ID.set(getattr(request, logs.TASK_JOB_ID, None))


@task_postrun.connect
def _ids_out_of_scope(**_kwargs) -> None:
    logs.REQUEST_ID.set(None)
    logs.JOB_ID.set(None)


@task_failure.connect
def _count_failure(sender=None, **_kwargs) -> None:
    metrics.WORKER_TASK_FAILURES.labels(getattr(sender, "name", "unknown")).inc()


@worker_process_init.connect
def _after_fork(**_kwargs) -> None:
    # A pooled connection inherited across fork corrupts both sides (SQLAlchemy docs).
    db.dispose(close=False)
    # Load the model in the background: Celery kills a worker_process_init handler that
    # runs for more than ~4 s, and the first task waits on the predictor's lock anyway.
    threading.Thread(target=_warm_up, name="model-warm-up", daemon=True).start()


def _warm_up() -> None:
    """What a first chunk would otherwise wait for: the model and its kernels, the
    decoders, a database connection."""
    from worker.inference import get_predictor, warm_up

    try:
        warm_up(get_predictor())
    except Exception:  # the first task will raise the same error where it is reported
        log.exception("could not load the model")
    try:
        with db.engine().connect():
            pass
    except Exception as exc:  # not fatal here: a chunk reports it if it lasts
        log.warning("database not reachable yet: %s", exc)


import worker.tasks  # noqa: E402, F401  (registers the tasks on `app`)
