"""job_adds.claim: an add is stored in runs, and a retry takes over where it stopped

A large add was one transaction: on SQLite it held the only write lock for as long as
its whole request took to insert. Adds are now stored in runs of bounded size, each its
own transaction, with the add's row counting the files stored so far. `claim` names the
request storing the add now (NULL once it is whole): a retry with the same key takes it
over and goes on after the files already stored, and the request it replaced stops at
its next run. A nullable column: existing adds read as whole.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 05:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job_adds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claim', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job_adds', schema=None) as batch_op:
        batch_op.drop_column('claim')
