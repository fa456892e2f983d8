"""Tweet ids are never reused: rebuild the SQLite tweets table with AUTOINCREMENT.

Without AUTOINCREMENT, SQLite gives a new row the largest id in use plus one, so deleting the
newest tweet handed its id to the next one. The rebuild keeps every row and its id, and
SQLite's counter starts after the largest id now in the table; ids of the newest tweets
deleted before this upgrade left no trace and can be given once more. Postgres' serial
sequence never reuses ids: nothing to do there. empty_queue_runs is left as it is: nothing
refers to its ids.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""
from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _rebuild_tweets(*, autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("tweets", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
        pass


def upgrade() -> None:
    _rebuild_tweets(autoincrement=True)


def downgrade() -> None:
    _rebuild_tweets(autoincrement=False)
