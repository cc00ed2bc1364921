"""items: deliveries, crashes and the last message that carried each item

The Redis transport does not count how often a message comes back, so a chunk whose
worker died (out of memory, a decoder that segfaults) came back for ever and took its
neighbours with it. The worker now counts each delivery on the item rows, committed
before it reads an image, and notes the message; a message that returns finds its own
id there, splits into smaller parts, and an image that kills a worker twice fails alone.
Two integer columns with a server default (existing rows read 0) and a nullable string:
ALTER TABLE ... ADD COLUMN on SQLite and PostgreSQL alike.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 04:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deliveries', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('crashes', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('last_task', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_column('last_task')
        batch_op.drop_column('crashes')
        batch_op.drop_column('deliveries')
