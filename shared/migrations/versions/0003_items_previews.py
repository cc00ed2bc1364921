"""items: a thumbnail and the model's input, stored with each result

Two nullable binary columns that the worker fills when it writes a result: the source
image at most 96 px in a format browsers draw, and the 28x28 PNG the model was given.
Existing rows keep NULLs (their results stay as they are). Adding a nullable column
with no default is an ALTER TABLE ... ADD COLUMN on both SQLite and PostgreSQL: no
table is rewritten.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 02:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('thumbnail', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('model_input', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_column('model_input')
        batch_op.drop_column('thumbnail')
