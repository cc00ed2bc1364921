"""Every Prometheus metric digits writes, in one place (docs/operations.md lists them).

Processes write through prometheus-client, in its multiprocess mode when the command
that started them prepared a folder (shared.metricsdir); otherwise, as in tests that
build the app in process, into the default in-memory registry. `exposition()` gives
the text /metrics serves: every process of the host's folder merged, or the registry.

Labels never carry ids: routes are templates (`/api/v1/jobs/<job_id>`), and queues,
outcomes, stages and statuses are small fixed sets. The state of the queue and the
database (depths, pending images, jobs) is not counted here but read when scraped
(api/metrics_state.py), so it is right whichever process did the work.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from shared import metricsdir

# `_created` timestamps exist only outside multiprocess mode: leave them out everywhere.
disable_created_metrics()

# --- the API ------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "digits_http_requests_total", "HTTP requests answered, by route template and status.",
    ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "digits_http_request_duration_seconds",
    "Time to answer an HTTP request (until the body starts; a streamed CSV continues).",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
IMAGES_RECEIVED = Counter(
    "digits_api_images_received_total",
    "Images stored by the API: queued for a worker, or rejected at intake (empty, too "
    "large, not an image).", ["result"])
IMAGE_BYTES_RECEIVED = Counter(
    "digits_api_image_bytes_received_total", "Bytes of the images the API stored.")

# --- the workers --------------------------------------------------------------------

WORKER_IMAGES = Counter(
    "digits_worker_images_total", "Images a worker classified, by queue and outcome "
    "(done, no_digit, failed: could not be decoded).", ["queue", "outcome"])
WORKER_REVIEW = Counter(
    "digits_worker_needs_review_total", "Images classified with a needs_review flag.",
    ["queue"])
WORKER_SKIPPED = Counter(
    "digits_worker_items_skipped_total",
    "Item ids in a chunk that were no longer pending (cancelled, or done by a redelivery).")
WORKER_SECONDS = Counter(
    "digits_worker_seconds_total",
    "Worker time by stage: load (database read), decode (decode and normalise), model "
    "(forward passes and verdicts), previews "
    "(thumbnails), write (results and job state). Per image: divide its rate by "
    "digits_worker_images_total's.", ["queue", "stage"])
WORKER_BATCH = Histogram(
    "digits_worker_batch_images", "Images per forward pass of the model.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096))
WORKER_CHUNK = Histogram(
    "digits_worker_chunk_duration_seconds", "Time a worker spent on one chunk of item ids.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
LANE_DROPPED = Counter(
    "digits_lane_dropped_total",
    "Interactive predictions dropped unanswered because their caller had stopped waiting.")
WORKER_TASK_FAILURES = Counter(
    "digits_worker_task_failures_total", "Tasks that raised (the chunk is delivered again).",
    ["task"])

# Values the fixed label sets take, so that dashboards and tests can rely on them.
STAGES = ("load", "decode", "model", "previews", "write")
OUTCOMES = ("done", "no_digit", "failed")


def record_outcomes(queue: str, statuses: Iterable[str], needs_review: int) -> None:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    for outcome, n in counts.items():
        WORKER_IMAGES.labels(queue, outcome).inc(n)
    if needs_review:
        WORKER_REVIEW.labels(queue).inc(needs_review)


def record_stages(queue: str, seconds: dict[str, float]) -> None:
    for stage, value in seconds.items():
        WORKER_SECONDS.labels(queue, stage).inc(value)


# --- serving ------------------------------------------------------------------------


class FolderCollector:
    """Every process's samples under `root`: its `*.db` files, or its subfolders'."""

    def __init__(self, root: str, subfolders: bool) -> None:
        self.pattern = os.path.join(root, "*", "*.db") if subfolders else os.path.join(
            root, "*.db")

    def collect(self):
        for attempt in range(3):
            try:
                return MultiProcessCollector.merge(glob.glob(self.pattern), accumulate=True)
            except FileNotFoundError:  # a stopped service's folder went as we read it
                if attempt == 2:
                    raise
        return []


def exposition(*extra) -> tuple[bytes, str]:
    """The /metrics body and its content type: the host's processes (or this process's
    registry) and the `extra` collectors, read now."""
    folder = metricsdir.host_folder()
    if folder is not None:
        registry = CollectorRegistry()
        registry.register(FolderCollector(str(folder), subfolders=True))
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if extra:
        registry = CollectorRegistry()
        for collector in extra:
            registry.register(collector)
        body += generate_latest(registry)
    return body, CONTENT_TYPE_LATEST


def serve_own(port: int, host: str = "0.0.0.0"):
    """Serve this service's own folder (a worker and its pool) on `port`, from a thread."""
    from prometheus_client import start_http_server

    own = os.environ.get(metricsdir.ENV)
    registry = CollectorRegistry()
    if own:
        registry.register(FolderCollector(own, subfolders=False))
    else:
        registry = REGISTRY
    return start_http_server(port, addr=host, registry=registry)
