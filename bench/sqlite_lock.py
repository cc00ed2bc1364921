"""How long SQLite's one write lock is held per image: the ceiling of any stack on one
SQLite file, however many cores and workers it has.

    .venv/bin/python bench/sqlite_lock.py [--images 20000] [--chunk 1024]

SQLite lets one connection write at a time: from a transaction's first write to its
commit, every other writer waits. This runs, in one process, the API's own code storing
uploads (`api.jobs_service._store_run`, in runs as an upload is stored) and a worker's
own code classifying them and storing the results (`worker.processing.classify_items`,
a chunk per message), on a fresh SQLite file, and times each write transaction from its
first INSERT/UPDATE/DELETE to its commit. 1e6 / (microseconds held per image) is the
most images per second any number of API processes and workers can feed through one
file. Nothing is queued (no Redis, no Celery): only the database's part is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WRITES = ("INSERT", "UPDATE", "DELETE")


class LockClock:
    """Seconds between each transaction's first write and its commit or rollback, summed
    by which side (API or worker) is running."""

    def __init__(self, engine) -> None:
        from sqlalchemy import event

        self.held = {"api": 0.0, "worker": 0.0}
        self.transactions = {"api": 0, "worker": 0}
        self.side = "api"
        self.statements: dict[tuple[str, str], float] = {}  # (side, statement) -> seconds
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "after_cursor_execute", self._statement_done)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)

    def _statement(self, conn, _cursor, statement, *_args) -> None:
        conn.info["statement_from"] = time.perf_counter()
        if "lock_from" not in conn.info and statement.lstrip()[:6].upper() in WRITES:
            conn.info["lock_from"] = time.perf_counter()

    def _statement_done(self, conn, _cursor, statement, *_args) -> None:
        if "lock_from" in conn.info:  # only what runs while the lock is held
            key = (self.side, " ".join(statement.split()[:4])[:40])
            self.statements[key] = (self.statements.get(key, 0.0) + time.perf_counter()
                                    - conn.info["statement_from"])

    def _end(self, conn) -> None:
        began = conn.info.pop("lock_from", None)
        if began is not None:
            self.held[self.side] += time.perf_counter() - began
            self.transactions[self.side] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=1024, help="images per worker message")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="digits-lock-"))
    os.environ["DIGITS_DATABASE_URL"] = f"sqlite:///{tmp / 'digits.db'}"
    from api.jobs_service import RUN_ROWS, _new_job, _store_run
    from api.uploads import Upload
    from bench.throughput import mnist_pngs
    from shared import db
    from shared.migrate import upgrade
    from shared.settings import get_settings
    from worker.inference import get_predictor
    from worker.processing import classify_items

    get_settings.cache_clear()
    db.reset()
    upgrade()
    clock = LockClock(db.engine())
    pngs = mnist_pngs(args.images)
    predictor = get_predictor()
    job_id, _ = _new_job("bench", None, None, open_=True, with_files=True)

    clock.side = "api"
    started = time.perf_counter()
    ids: list[int] = []
    for i in range(0, len(pngs), RUN_ROWS):
        ids += _store_run(job_id, [Upload(f"{j:06d}.png", pngs[j])
                                   for j in range(i, min(i + RUN_ROWS, len(pngs)))], None, None)
    api_wall = time.perf_counter() - started

    clock.side = "worker"
    started = time.perf_counter()
    for i in range(0, len(ids), args.chunk):
        classify_items(ids[i : i + args.chunk], predictor, task_id=f"bench-{i}")
    worker_wall = time.perf_counter() - started

    n = len(ids)
    us = {side: 1e6 * held / n for side, held in clock.held.items()}
    total = sum(us.values())
    print(f"{n:,} images, SQLite (WAL, synchronous=NORMAL), worker chunks of {args.chunk}")
    for side, wall in (("api", api_wall), ("worker", worker_wall)):
        print(f"  {side:6s}: write lock held {us[side]:6.1f} us/image in "
              f"{clock.transactions[side]} transactions ({1e6 * wall / n:6.1f} us/image "
              f"of wall time in all)")
    for (side, statement), seconds in sorted(clock.statements.items()):
        print(f"    {side:6s} {statement:40s} {1e6 * seconds / n:6.1f} us/image")
    print(f"  ceiling on one SQLite file: {1e6 / total:,.0f} images/s "
          f"(the lock held {total:.1f} us per image)")
    db.reset()
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"images": n, "chunk": args.chunk, "api_lock_us": round(us["api"], 1),
                      "worker_lock_us": round(us["worker"], 1),
                      "sqlite_ceiling_images_per_s": round(1e6 / total)}))


if __name__ == "__main__":
    main()
