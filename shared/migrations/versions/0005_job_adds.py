"""job_adds: the Idempotency-Key of each add of images to an open job

A client that loses the answer to `POST /api/v1/jobs/{id}/images` (a reset connection,
a restarted API process) cannot know whether the images landed. With a key per add,
stored in the same transaction as the images, the retried add finds it and lands once.
A new table: existing jobs and adds without a key work as before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 03:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'job_adds',
        sa.Column('job_id', sa.String(length=40), nullable=False),
        sa.Column('idempotency_key', sa.String(length=200), nullable=False),
        sa.Column('added', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('job_id', 'idempotency_key'),
    )


def downgrade() -> None:
    op.drop_table('job_adds')
