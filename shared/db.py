"""Engine and sessions, built from the settings.

SQLite gets WAL mode and a busy timeout so that several worker processes can
write one file; PostgreSQL is used as it is. Forked processes call `dispose()`
so that no pooled connection crosses a fork.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from shared.settings import get_settings

_engine: Engine | None = None
_sessions: sessionmaker[Session] | None = None


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

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
