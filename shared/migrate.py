"""`digits db upgrade`: run the Alembic migrations against the configured database."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).resolve().parent


def alembic_config() -> Config:
    return Config(str(HERE / "alembic.ini"))


def upgrade(revision: str = "head") -> None:
    command.upgrade(alembic_config(), revision)


def current() -> str | None:
    from alembic.runtime.migration import MigrationContext

    from shared import db

    with db.engine().connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
