"""The Celery application both sides share: broker, queues, routes and reliability settings.

The API only sends tasks by name through it; the worker registers the task bodies
(worker/tasks.py). Settings follow the traps recorded in the design notes: late
acks with idempotent tasks, re-queue when a child dies, a deliberate visibility
timeout, no results in Redis (bulk results live in the database; the interactive
lane is not Celery: shared.lane).

Every task sent carries the request id and job id in scope (shared.logs) in its
message headers, so the worker's log lines name them too. DIGITS_CELERY_EVENTS turns
on Celery's task events (sent, received, started, succeeded...), which Flower shows.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import before_task_publish
from kombu import Queue

from shared import logs
from shared.queues import BULK_QUEUE, CLASSIFY_CHUNK
from shared.settings import Settings, get_settings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url(settings: Settings | None = None) -> str:
    """The Redis every part of the service uses: DIGITS_REDIS_URL, else a local one."""
    return (settings or get_settings()).redis_url or DEFAULT_REDIS_URL


def redis_client(**options):
    """A client on that Redis with a connection pool of its own; `options` are the
    timeouts its use needs (a blocking pop must outlast its own wait, a status page
    must not)."""
    import redis

    return redis.Redis.from_url(redis_url(), **options)


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    url = redis_url(settings)
    app = Celery("digits", broker=url, backend=url)
    app.conf.update(
        task_queues=[Queue(BULK_QUEUE)],
        task_default_queue=BULK_QUEUE,
        task_routes={
            CLASSIFY_CHUNK: {"queue": BULK_QUEUE},
        },
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # bulk results live in the database, not in Redis
        result_expires=300,
        task_acks_late=True,  # a chunk is acknowledged after its results are committed
        task_reject_on_worker_lost=True,  # a killed child's chunk goes back on the queue
        worker_prefetch_multiplier=1,  # chunks are big; don't hoard them in one process
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=settings.celery_events,
        task_send_sent_event=settings.celery_events,
    )
    return app


@before_task_publish.connect
def _carry_ids(headers: dict | None = None, **_kwargs) -> None:
    """The ids in scope travel with the task (read back in worker/celery_app.py)."""
    if headers is None:
        return
    request_id, job_id = logs.REQUEST_ID.get(), logs.JOB_ID.get()
    if request_id is not None:
        headers[logs.TASK_REQUEST_ID] = request_id
    if job_id is not None:
        headers[logs.TASK_JOB_ID] = job_id
