"""Service commands: `digits api`, `worker`, `db upgrade`, `reconcile` and `up`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid

from shared.queues import BULK_QUEUE, INTERACTIVE_QUEUE


def register(sub) -> None:
    p = sub.add_parser("up", help="run the whole local stack in the foreground")
    p.add_argument("--workers", type=int, default=2, help="bulk worker processes")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("api", help="serve the HTTP API under gunicorn")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--processes", type=int, default=None,
                   help="gunicorn worker processes (default DIGITS_API_PROCESSES)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per gunicorn process when DIGITS_API_WORKER=gthread "
                        "(default DIGITS_API_THREADS)")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("worker", help="run a worker (bulk: Celery; interactive: the lane) "
                       "against the configured Redis and DB")
    p.add_argument("--concurrency", type=int, default=None,
                   help="processes (default: bulk, one per CPU core; interactive, "
                        "DIGITS_LANE_PROCESSES)")
    p.add_argument("--pool", choices=["prefork", "threads"], default="prefork",
                   help="the bulk worker's Celery pool")
    p.add_argument("--queues", default=f"{INTERACTIVE_QUEUE},{BULK_QUEUE}",
                   help="comma-separated queues to serve")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("db", help="database maintenance")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dbsub.add_parser("upgrade", help="apply the Alembic migrations")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("reconcile", help="re-queue pending images whose messages were lost")
    p.add_argument("--every", type=float, default=None,
                   help="keep running, reconciling every N seconds")
    p.add_argument("--older-than", type=float, default=None,
                   help="only items queued more than N seconds ago (DIGITS_RECONCILE_AFTER_S)")
    p.set_defaults(func=cmd_reconcile)


def cmd_up(args) -> int:
    from cli.stack import up
    from shared.settings import get_settings

    return up(args.workers, args.host, args.port, get_settings().state_dir)


LOOPBACK = ("127.0.0.1", "::1", "localhost", "[::1]")


def auth_mode(host: str) -> str:
    """DIGITS_AUTH for an API bound to `host`: as set, or under `auto` open only when it
    listens on loopback (one local user), required anywhere else."""
    from shared.settings import get_settings

    mode = get_settings().auth
    if mode != "auto":
        return mode
    return "open" if host in LOOPBACK or host.startswith("127.") else "required"


def auth_notice(host: str) -> str:
    if auth_mode(host) == "open":
        return ("API keys: open (DIGITS_AUTH=open, listening on loopback): calls without a "
                "key act as the `local` account; set DIGITS_AUTH=required to need keys")
    return ("API keys: required (DIGITS_AUTH=required): make one with "
            "`digits keys create NAME [--admin]`")


def cmd_api(args) -> int:
    from shared import metricsdir
    from shared.settings import get_settings

    settings = get_settings()

    # The app reads it (api/auth.py); `digits up` tells the person which it is.
    os.environ["DIGITS_AUTH"] = auth_mode(args.host)

    # Before gunicorn (this very process, after the exec) imports prometheus_client.
    metricsdir.prepare("api")
    # Requests are logged by the app, with their request ids (api/observability.py);
    # the config module formats gunicorn's own lines and tidies up the metrics folder.
    argv = [sys.executable, "-m", "gunicorn", "api:create_app()",
            "--config", "python:api.gunicorn_conf",
            "--bind", f"{args.host}:{args.port}",
            "--workers", str(args.processes or settings.api_processes),
            "--threads", str(args.threads or settings.api_threads),
            "--worker-class", settings.api_worker,
            "--timeout", "120", "--graceful-timeout", "20",
            "--error-logfile", "-", "--log-level", "warning"]
    if os.path.isdir("/dev/shm"):
        # gunicorn's heartbeat touches a temporary file on every loop; gunicorn's docs
        # advise a memory file system for it (the default directory may be on a disk).
        argv += ["--worker-tmp-dir", "/dev/shm"]
    os.execv(sys.executable, argv)  # gunicorn takes over this process and its signals
    return 0


def cmd_worker(args) -> int:
    from cli.main import UserError
    from shared.settings import get_settings

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = set(queues) - {INTERACTIVE_QUEUE, BULK_QUEUE}
    if unknown or not queues:
        raise UserError(f"unknown queue {sorted(unknown or {''})[0]!r}; use "
                        f"{INTERACTIVE_QUEUE} and/or {BULK_QUEUE}")
    if not get_settings().redis_url:
        raise UserError("DIGITS_REDIS_URL is not set; point it at the Redis the API uses")
    from shared import artifact

    # Refuse to start on a missing or tampered model rather than fail every request later.
    # Checksum only: building tensors here would start torch's thread pools (and maybe
    # CUDA) in the parent, and forked children then hang in their first forward pass.
    artifact.verify(get_settings().model_path)
    if queues == [INTERACTIVE_QUEUE]:
        return _lane_worker(args)
    lane = None
    if INTERACTIVE_QUEUE in queues:
        # Both: the lane in a process of its own beside the Celery worker, stopped with it.
        lane = subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--queues",
                                 INTERACTIVE_QUEUE, "--loglevel", args.loglevel],
                                env={**os.environ, "DIGITS_LANE_PARENT": str(os.getpid())})
    try:
        return _bulk_worker(args)
    finally:
        if lane is not None:
            lane.terminate()
            lane.wait(30)


def _lane_worker(args) -> int:
    from shared import logs, metricsdir
    from shared.settings import get_settings

    processes = args.concurrency or get_settings().lane_processes
    # Each lane process runs its own batches, on one model thread unless told (a second
    # thread waits on the API's share of the cores: see _bulk_worker).
    os.environ.setdefault("DIGITS_TORCH_THREADS", "1")
    get_settings.cache_clear()
    folder = metricsdir.prepare("interactive")  # before anything imports prometheus_client
    logs.configure(get_settings().log_format, args.loglevel)
    from worker import lane

    try:
        return lane.run(processes, parent=int(os.environ.get("DIGITS_LANE_PARENT") or 0))
    finally:
        metricsdir.discard(folder)


def _bulk_worker(args) -> int:
    from shared.settings import get_settings

    cores = os.cpu_count() or 1
    concurrency = args.concurrency or cores
    if args.pool == "prefork":
        # One model thread a process: processes, not threads, are the unit to scale by.
        # Measured on 2 busy cores, a second thread made a batch 2-4x slower (it waits
        # for whichever thread the API or another process has just preempted).
        os.environ.setdefault("DIGITS_TORCH_THREADS", "1")
    get_settings.cache_clear()
    from shared import logs, metricsdir

    # Before anything imports prometheus_client; the pool's children inherit it.
    folder = metricsdir.prepare("worker")
    # Now, not when Celery asks (setup_logging): its start-up warnings come first.
    logs.configure(get_settings().log_format, args.loglevel)
    from worker.celery_app import app

    name = f"{BULK_QUEUE}-{uuid.uuid4().hex[:6]}@%h"
    # Celery's banner is not a log line: leave it out where every line should be JSON.
    quiet = ["--quiet"] if get_settings().log_format == "json" else []
    try:
        app.worker_main(argv=[*quiet, "worker", "--queues", BULK_QUEUE, "--pool", args.pool,
                              "--concurrency", str(concurrency), "--hostname", name,
                              "--loglevel", args.loglevel, "--without-gossip",
                              "--without-mingle", "-O", "fair"])
    finally:
        metricsdir.discard(folder)
    return 0


def cmd_db_upgrade(args) -> int:
    from shared import migrate
    from shared.settings import get_settings

    migrate.upgrade(args.revision)
    print(f"database at revision {migrate.current()} "
          f"({get_settings().effective_database_url.split('@')[-1]})")
    return 0


def _retention(settings) -> None:
    """One round of DIGITS_RETENTION_DAYS / DIGITS_RESULTS_RETENTION_DAYS."""
    if settings.retention_days is None and settings.results_retention_days is None:
        return
    from datetime import UTC, datetime

    from shared import db, retention

    with db.session() as s:
        purged, deleted = retention.apply(s, datetime.now(UTC), settings.retention_days,
                                          settings.results_retention_days)
    if purged or deleted:
        logging.getLogger("digits.retention").info(
            "retention: images of %d items removed, %d jobs deleted", purged, deleted)


def cmd_reconcile(args) -> int:
    from shared import logs
    from shared.celery_app import make_celery
    from shared.reconcile import reconcile
    from shared.settings import get_settings

    settings = get_settings()
    logs.configure(settings.log_format)
    celery = make_celery(settings)
    older = settings.reconcile_after_s if args.older_than is None else args.older_than
    while True:
        try:
            queued = reconcile(celery, older, settings.chunk_size)
            if args.every is None:
                print(f"re-queued {queued} items")
                return 0
            _retention(settings)
        except Exception as exc:  # keep the loop alive through a Redis or DB outage
            if args.every is None:
                raise
            # A log line (JSON where the others are), not a bare print.
            logging.getLogger("digits.reconcile").warning("reconcile failed: %s", exc)
        time.sleep(args.every)


