"""Engine and sessions, built from the settings.

SQLite gets WAL mode and a busy timeout so that several worker processes can
write one file; PostgreSQL is used as it is. Forked processes call `dispose()`
so that no pooled connection crosses a fork.

In a process on gevent's event loop (the API), SQLite's calls run on gevent's thread
pool: SQLite waits for its write lock and writes its checkpoints inside the call,
without a turn for the loop, and an upload's insert and commit held up every /predict
call in the process for 20-50 ms (docs/scaling.md). psycopg yields by itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from shared.settings import get_settings

_engine: Engine | None = None
_sessions: sessionmaker[Session] | None = None


def _loop_threadpool():
    """gevent's thread pool where this process's sockets are gevent's (the API on its
    gevent worker); None elsewhere: workers, tests, the CLI, gthread."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("socket"):
        return None
    import gevent

    return gevent.get_hub().threadpool


class _PooledCursor:
    """A sqlite3 cursor whose calls that may wait (executing, fetching) run on a thread
    of the pool while the calling greenlet yields; the rest goes straight through."""

    def __init__(self, cursor, pool) -> None:
        self._cursor, self._pool = cursor, pool

    def execute(self, *args):
        self._pool.apply(self._cursor.execute, args)
        return self

    def executemany(self, *args):
        self._pool.apply(self._cursor.executemany, args)
        return self

    def fetchall(self):
        return self._pool.apply(self._cursor.fetchall)

    def fetchmany(self, *args):
        return self._pool.apply(self._cursor.fetchmany, args)

    def __iter__(self):
        return iter(self._cursor)

    def __getattr__(self, name):
        return getattr(self._cursor, name)


class _PooledConnection:
    """A sqlite3 connection whose cursors are _PooledCursor and whose commit (which may
    checkpoint, with an fsync) runs on the pool. One greenlet uses a connection at a
    time (SQLAlchemy's pool), so its calls never overlap; check_same_thread is off."""

    def __init__(self, connection, pool) -> None:
        object.__setattr__(self, "_connection", connection)
        object.__setattr__(self, "_pool", pool)

    def cursor(self, *args):
        return _PooledCursor(self._connection.cursor(*args), self._pool)

    def execute(self, *args):
        return self.cursor().execute(*args)

    def commit(self) -> None:
        self._pool.apply(self._connection.commit)

    def rollback(self) -> None:
        self._pool.apply(self._connection.rollback)

    def __getattr__(self, name):
        return getattr(self._connection, name)

    def __setattr__(self, name, value) -> None:
        setattr(self._connection, name, value)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "do_connect")
        def _on_the_pool(dialect, _record, cargs, cparams):
            pool = _loop_threadpool()
            if pool is None:
                return None  # SQLAlchemy connects as usual
            return _PooledConnection(dialect.loaded_dbapi.connect(*cargs, **cparams), pool)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record):  # pragma: no cover - exercised by every test
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def engine() -> Engine:
    global _engine, _sessions
    if _engine is None:
        _engine = make_engine(get_settings().effective_database_url)
        _sessions = sessionmaker(_engine, expire_on_commit=False)
    return _engine


@contextmanager
def session() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    engine()
    assert _sessions is not None
    with _sessions() as s, s.begin():
        yield s


def dispose(close: bool = False) -> None:
    """Drop pooled connections: after a fork (close=False keeps the parent's sockets
    open for the parent) or when tests switch databases (reset=True via reset())."""
    if _engine is not None:
        _engine.dispose(close=close)


def reset() -> None:
    """Forget the engine so the next call reads the settings again (tests, CLI)."""
    global _engine, _sessions
    if _engine is not None:
        _engine.dispose()
    _engine = _sessions = None
