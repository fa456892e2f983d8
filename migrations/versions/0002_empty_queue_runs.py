"""Create the empty_queue_runs table: idempotency keys of posting calls that found no queued tweet.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "empty_queue_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=15), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_empty_queue_runs")),
        sa.UniqueConstraint("account", "idempotency_key", name=op.f("uq_empty_queue_runs_account_idempotency_key")),
    )


def downgrade() -> None:
    op.drop_table("empty_queue_runs")
