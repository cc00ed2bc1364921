"""The interactive lane's worker: `digits worker --queues interactive`.

A main process that forks `concurrency` lane processes, announces them in Redis
(shared.overview), starts again one that dies, and stops them all on SIGTERM or
Ctrl-C. Each lane process loads the model once and loops: take every request waiting
on the lane (shared.lane), up to a model batch; drop those whose caller stopped
waiting; decode, normalise and classify the rest in one forward pass, exactly as a
bulk chunk is (worker.processing.classify); push each answer to its caller's key in
one round trip. No timer fills a batch while the machine serves predictions alone:
while one batch runs, the next gathers; beside bulk work a short wait fills it
(`BulkWatch`).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
import uuid

from shared import lane, metrics, overview
from shared.models import JobMode
from shared.queues import BULK_QUEUE, BULK_UNACKED_KEY, INTERACTIVE_QUEUE
from shared.settings import get_settings

log = logging.getLogger(__name__)


def _redis():
    from shared.celery_app import redis_client

    # No socket timeout on reads: BLPOP blocks by design, up to its own timeout.
    return redis_client(socket_connect_timeout=5, health_check_interval=30)


class BulkWatch:
    """Whether bulk chunks wait or are being worked, on any host, looked up at most every
    `every_s`. Only then does a lane process gather fuller batches (`gather_s` after a
    request arrives): 8 closed-loop callers beside a bulk job took over half the CPU in
    batches of 2-3 and left the job 0.43-0.54 of its solo rate; gathering 3 ms, 0.56-0.71
    at a p99 of 30-50 ms. Alone, the wait would only add latency (one caller's p50 1.5 ->
    3.6 ms with 2 ms), so it is never spent then."""

    def __init__(self, client, gather_s: float, every_s: float = 0.1) -> None:
        self.client = client
        self.gather = gather_s
        self.every_s = every_s
        self._busy = False
        self._checked = float("-inf")

    def gather_s(self) -> float:
        if self.gather <= 0:
            return 0.0
        now = time.monotonic()
        if now - self._checked >= self.every_s:
            pipe = self.client.pipeline(transaction=False)
            pipe.hlen(BULK_UNACKED_KEY)
            pipe.llen(BULK_QUEUE)
            self._busy = any(pipe.execute())
            self._checked = now
        return self.gather if self._busy else 0.0


def serve_once(client, predictor, wait_s: float = 1.0, gather_s: float = 0.0) -> int:
    """Answer one batch of waiting requests; returns how many were answered."""
    from worker import processing

    requests = [lane.decode(raw)
                for raw in lane.take(client, predictor.max_batch_size, wait_s, gather_s)]
    now = time.time()
    live = [r for r in requests if r.deadline > now]
    if len(live) < len(requests):
        metrics.LANE_DROPPED.inc(len(requests) - len(live))
    if not live:
        return 0
    clock: dict[str, float] = {}
    digits = [r for r in live if r.mode != JobMode.STRING]
    outcomes = processing.classify([r.image for r in digits], predictor, clock=clock)
    answers = {id(r): {**o.as_dict(), "model_version": predictor.version}
               for r, o in zip(digits, outcomes, strict=True)}
    fields = [r for r in live if r.mode == JobMode.STRING]
    if fields:  # whole fields of digits: the string model, in one batch of its own
        from worker.strings import read_strings

        answers.update(zip(map(id, fields), read_strings([r.image for r in fields]),
                           strict=True))
    pipe = client.pipeline(transaction=False)
    for request in live:
        lane.answer(pipe, request, answers[id(request)])
    pipe.execute()
    processing.record(INTERACTIVE_QUEUE, outcomes, clock)
    # One line a batch, not one a prediction (a tenth of the lane's CPU at full load):
    # each request id is in it, so a request's API line and its batch still meet.
    log.info("batch of %d predictions in %.1f ms: requests %s", len(live),
             1000 * sum(clock.values()), " ".join(r.request_id for r in live))
    return len(live)


def _lane_process(ready) -> None:
    """One lane process: the model, then batches until SIGTERM (or its parent dies)."""
    stopping: list[bool] = []
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process stops us in order
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    from worker.inference import get_predictor, warm_up

    parent = os.getppid()
    predictor = get_predictor()
    warm_up(predictor)
    client = _redis()
    watch = BulkWatch(client, get_settings().lane_gather_ms / 1000)
    # The model and the libraries, loaded for good, leave the collector's full passes
    # (which would otherwise walk them all while callers wait, as in the API).
    gc.freeze()
    ready.set()
    log.info("lane process ready (model %s)", predictor.version)
    while not stopping and os.getppid() == parent:
        try:
            serve_once(client, predictor, gather_s=watch.gather_s())
        except Exception as exc:  # Redis away for a moment: callers time out, we go on
            log.warning("lane batch failed: %s", exc)
            time.sleep(1.0)


def run(concurrency: int, parent: int = 0) -> int:
    """The main process: fork, announce, watch, stop. With `parent`, it also stops when
    that process is gone (a `digits worker` serving both queues started it)."""
    from shared import runtime
    from worker.malloc import keep_freed_memory

    keep_freed_memory()  # inherited by the lane processes
    settings = get_settings()
    if settings.metrics_port and settings.metrics:
        metrics.serve_own(settings.metrics_port)
    context = multiprocessing.get_context("fork")  # torch is not imported yet here
    ready = context.Event()  # set by the first lane process that can serve
    name = f"{INTERACTIVE_QUEUE}-{uuid.uuid4().hex[:6]}@{os.uname().nodename}"
    info = {"queues": [INTERACTIVE_QUEUE], "concurrency": concurrency, "pool": "lane",
            "pid": os.getpid(), "started_at": time.time(),
            "runtime": runtime.announced(settings)}
    quit_now = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: quit_now.set())

    def spawn():
        proc = context.Process(target=_lane_process, args=(ready,), name="digits-lane")
        proc.start()
        return proc

    procs = [spawn() for _ in range(concurrency)]
    client = _redis()
    log.info("lane worker %s: %d process(es) on %s", name, concurrency, lane.REQUESTS_KEY)
    try:
        # Announced once it can serve, so "a worker is online" means answers come.
        while not (ready.is_set() or quit_now.is_set()) and any(p.is_alive() for p in procs):
            ready.wait(0.2)
        while not quit_now.is_set() and not (parent and os.getppid() != parent):
            try:
                overview.announce(client, name, info)
            except Exception as exc:
                log.warning("could not announce the lane worker: %s", exc)
            for i, proc in enumerate(procs):
                if not proc.is_alive():
                    log.error("lane process %d exited with %s; starting another", proc.pid,
                              proc.exitcode)
                    procs[i] = spawn()
            quit_now.wait(overview.HEARTBEAT_EVERY_S)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(10)  # each finishes its batch (at most a BLPOP's second first)
            if proc.is_alive():
                proc.kill()
                proc.join()
        try:
            overview.withdraw(client, name)
        except Exception as exc:
            log.warning("could not withdraw the lane worker: %s", exc)
        log.info("lane worker %s stopped", name)
    return 0
