"""Create the tweets table.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = ("pending", "queued", "posting", "posted", "unconfirmed", "failed", "rejected")


def upgrade() -> None:
    op.create_table(
        "tweets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=15), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(*STATUSES, name="tweet_status", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("x_tweet_id", sa.String(length=32), nullable=True),
        sa.Column("x_url", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tweets")),
        sa.UniqueConstraint("account", "content_hash", name=op.f("uq_tweets_account_content_hash")),
        sa.UniqueConstraint("account", "idempotency_key", name=op.f("uq_tweets_account_idempotency_key")),
    )
    op.create_index("ix_tweets_account_status", "tweets", ["account", "status", "position", "id"])


def downgrade() -> None:
    op.drop_index("ix_tweets_account_status", table_name="tweets")
    op.drop_table("tweets")
