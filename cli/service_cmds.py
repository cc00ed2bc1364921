"""Service commands: `digits api`, `worker`, `db upgrade`, `reconcile` and `up`."""

from __future__ import annotations

import logging
import os
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
    p.add_argument("--processes", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, default=8, help="threads per gunicorn process")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("worker", help="run a Celery worker against the configured Redis and DB")
    p.add_argument("--concurrency", type=int, default=None,
                   help="pool size (default: one process per CPU core; 8 threads)")
    p.add_argument("--pool", choices=["auto", "prefork", "threads"], default="auto",
                   help="auto: threads for the interactive queue alone (its predictions "
                        "share batches), else prefork processes")
    p.add_argument("--queues", default=f"{INTERACTIVE_QUEUE},{BULK_QUEUE}",
                   help="comma-separated queues to consume")
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

    # The app reads it (api/auth.py); `digits up` tells the person which it is.
    os.environ["DIGITS_AUTH"] = auth_mode(args.host)

    # Before gunicorn (this very process, after the exec) imports prometheus_client.
    metricsdir.prepare("api")
    # Requests are logged by the app, with their request ids (api/observability.py);
    # the config module formats gunicorn's own lines and tidies up the metrics folder.
    argv = [sys.executable, "-m", "gunicorn", "api:create_app()",
            "--config", "python:api.gunicorn_conf",
            "--bind", f"{args.host}:{args.port}", "--workers", str(args.processes),
            "--threads", str(args.threads), "--worker-class", "gthread",
            "--timeout", "120", "--graceful-timeout", "20",
            "--error-logfile", "-", "--log-level", "warning"]
    if os.path.isdir("/dev/shm"):
        # gunicorn's heartbeat touches a temporary file on every loop; gunicorn's docs
        # advise a memory file system for it (the default directory may be on a disk).
        argv += ["--worker-tmp-dir", "/dev/shm"]
    os.execv(sys.executable, argv)  # gunicorn takes over this process and its signals
    return 0


def cmd_worker(args) -> int:
    from shared.settings import get_settings

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = set(queues) - {INTERACTIVE_QUEUE, BULK_QUEUE}
    if unknown:
        from cli.main import UserError

        raise UserError(f"unknown queue {sorted(unknown)[0]!r}; use {INTERACTIVE_QUEUE} "
                        f"and/or {BULK_QUEUE}")
    cores = os.cpu_count() or 1
    pool = args.pool
    if pool == "auto":
        pool = "threads" if queues == [INTERACTIVE_QUEUE] else "prefork"
    if pool == "threads":
        # Threads decode in parallel; one batcher thread runs the model on every core.
        concurrency = args.concurrency or 8
        os.environ.setdefault("DIGITS_TORCH_THREADS", str(cores))
    else:
        concurrency = args.concurrency or cores
        # Give each pool process its share of the cores, not all of them each.
        os.environ.setdefault("DIGITS_TORCH_THREADS", str(max(1, cores // concurrency)))
    get_settings.cache_clear()
    if not get_settings().redis_url:
        from cli.main import UserError

        raise UserError("DIGITS_REDIS_URL is not set; point it at the Redis the API uses")
    from shared import artifact

    # Refuse to start on a missing or tampered model rather than fail every chunk later.
    # Checksum only: building tensors here would start torch's thread pools (and maybe
    # CUDA) in the parent, and forked pool children then hang in their first forward pass.
    artifact.verify(get_settings().model_path)
    from shared import logs, metricsdir

    # Before anything imports prometheus_client; the pool's children inherit it.
    folder = metricsdir.prepare("worker")
    # Now, not when Celery asks (setup_logging): its start-up warnings come first.
    logs.configure(get_settings().log_format, args.loglevel)
    from worker.celery_app import app

    name = f"{'+'.join(queues)}-{uuid.uuid4().hex[:6]}@%h"
    # Celery's banner is not a log line: leave it out where every line should be JSON.
    quiet = ["--quiet"] if get_settings().log_format == "json" else []
    try:
        app.worker_main(argv=[*quiet, "worker", "--queues", ",".join(queues), "--pool", pool,
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


