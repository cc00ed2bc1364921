"""items: an index on finish times, for images per second over the last minutes

The status page and `digits status` count the images finished in the last minutes
from the items' finish times; without an index that reads the whole table. Partial
(finished_at IS NOT NULL, on SQLite and PostgreSQL alike): storing pending images does
not touch it, and a result adds one entry. With the status in it, leaving out
cancelled items reads the index alone.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.create_index('ix_items_finished', ['finished_at', 'status'], unique=False,
                              sqlite_where=sa.text('finished_at IS NOT NULL'),
                              postgresql_where=sa.text('finished_at IS NOT NULL'))


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_finished')
