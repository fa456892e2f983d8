"""Deliveries: each tweet's state on each destination (X, Mastodon, Bluesky); sealed network sessions.

Existing posting records move over as X deliveries: every tweet that was posted, is being posted,
is unconfirmed or failed gets one `x` delivery with its status, X's id and URL, its times, error,
idempotency key and dry-run flag. The tweets' own columns are kept as they were (x_tweet_id and
x_url stay X's), so nothing is lost and the downgrade just drops the new tables.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CARRIED_STATUSES = ("posting", "posted", "unconfirmed", "failed")


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tweet_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=16), nullable=False),
        sa.Column("status", sa.Enum("queued", "posting", "posted", "unconfirmed", "failed", "rejected",
                                    name="delivery_status", native_enum=False, length=16), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=True),
        sa.Column("remote_id", sa.String(length=200), nullable=True),
        sa.Column("url", sa.String(length=400), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tweet_id"], ["tweets.id"], name=op.f("fk_deliveries_tweet_id_tweets"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("tweet_id", "destination", name=op.f("uq_deliveries_tweet_id_destination")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_deliveries_destination_status", "deliveries", ["destination", "status"])
    op.create_table(
        "network_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=15), nullable=False),
        sa.Column("network", sa.String(length=16), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_network_sessions")),
        sa.UniqueConstraint("account", "network", name=op.f("uq_network_sessions_account_network")),
    )
    statuses = ", ".join(f"'{status}'" for status in CARRIED_STATUSES)
    op.execute(
        "INSERT INTO deliveries (tweet_id, destination, status, key, remote_id, url, error, dry_run,"
        " claimed_at, posted_at, updated_at)"
        " SELECT id, 'x', status, idempotency_key, x_tweet_id, x_url, error, dry_run, claimed_at, posted_at, updated_at"
        f" FROM tweets WHERE status IN ({statuses}) ORDER BY id"
    )


def downgrade() -> None:
    op.drop_table("network_sessions")
    op.drop_index("ix_deliveries_destination_status", table_name="deliveries")
    op.drop_table("deliveries")
