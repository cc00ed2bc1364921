"""api_keys: accounts' API keys, stored as keyed hashes; jobs from before keys belong to `local`

Until now a job's owner was whatever the X-Digits-Owner header said (`anonymous` when
none was sent), which nobody checked. Those jobs now belong to the `local` account: the
one user of an open local stack, and visible to admin keys.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 04:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'api_keys',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('account', sa.String(length=200), nullable=False),
        sa.Column('admin', sa.Boolean(), nullable=False),
        sa.Column('key_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('key_hash'),
    )
    op.create_index('ix_api_keys_account', 'api_keys', ['account'])
    op.execute("UPDATE jobs SET owner = 'local'")


def downgrade() -> None:
    op.drop_index('ix_api_keys_account', table_name='api_keys')
    op.drop_table('api_keys')
