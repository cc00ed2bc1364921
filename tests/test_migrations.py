"""The migrations build exactly the schema the models describe, on both databases, and
the indexes the hot queries rely on are used."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from shared import db, migrate
from shared.jobstate import counts_query
from shared.models import Base

DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def migrated(request, use_database):
    use_database(request.getfixturevalue(f"{request.param}_url"))
    return request.param


def _differences() -> list:
    with db.engine().connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def test_migrated_schema_matches_the_models(migrated):
    assert _differences() == []


def test_downgrade_and_upgrade_again(migrated):
    migrate.upgrade("head")
    head = migrate.current()
    from alembic import command

    command.downgrade(migrate.alembic_config(), "0001")
    assert migrate.current() == "0001"
    migrate.upgrade("head")
    assert migrate.current() == head
    assert _differences() == []


def test_job_counts_read_only_the_index(use_database, sqlite_url):
    # Counts run on every poll; the rows carry the images, so reading them is the slow part.
    use_database(sqlite_url)
    query = counts_query(["job_1"]).compile(db.engine(), compile_kwargs={"literal_binds": True})
    with db.engine().connect() as conn:
        plan = conn.execute(text(f"EXPLAIN QUERY PLAN {query}")).all()
    assert "COVERING INDEX ix_items_job_status_review" in " ".join(str(r) for r in plan)


def test_images_per_second_read_only_the_finished_index(use_database, sqlite_url):
    # The status page asks every 2 s; the items table holds every image ever sent.
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from shared.models import Item, ItemStatus

    use_database(sqlite_url)
    query = (select(Item.finished_at, func.count())
             .where(Item.finished_at >= datetime.now(UTC), Item.status != ItemStatus.CANCELLED)
             .group_by(Item.finished_at))
    compiled = query.compile(db.engine())  # bound parameters, as the real query sends
    values = tuple(compiled.params[name] for name in compiled.positiontup)
    with db.engine().connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", values).all()
    assert "COVERING INDEX ix_items_finished" in " ".join(str(r) for r in plan)
