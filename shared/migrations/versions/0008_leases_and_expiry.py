"""items.leased_until, jobs.fed_at and jobs.expired_at: nothing waits unseen

A chunk's task that raised was acknowledged and dropped, and the reconciler only looked
while the bulk queue was empty, so under steady load its images waited for ever. A
worker now leases the items it is given; past the lease, or queued for too long without
a delivery, a pending image is queued again whatever the backlog. Open jobs that nobody
feeds or seals are sealed after a while (fed_at: the last create or add; expired_at:
when, and that it happened). Nullable columns: ADD COLUMN on SQLite and PostgreSQL;
existing open jobs count from their creation.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 04:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('leased_until', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('expired_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('expired_at')
        batch_op.drop_column('fed_at')
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_column('leased_until')
