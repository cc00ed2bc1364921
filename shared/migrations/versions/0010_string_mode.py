"""jobs.mode, items.text and items.digits: digit strings read whole (issue 16)

A job reads each image as one digit (mode 'digit', as before) or as a field of digits
(mode 'string': a postal code, an amount, a date). A string item's result is its text
and, per digit, the digit, its confidence and its box. jobs.mode is NOT NULL with a
server default, so existing jobs read 'digit'; the item columns are nullable. ADD COLUMN
on SQLite and PostgreSQL alike.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 06:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mode', sa.String(length=10), nullable=False,
                                      server_default='digit'))
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('text', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('digits', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_column('digits')
        batch_op.drop_column('text')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('mode')
