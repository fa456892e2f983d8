"""Queries on the tweets table: plain functions taking a Session, used by routes and scripts."""
from __future__ import annotations

import csv
import io
from datetime import datetime
from collections.abc import Iterable, Sequence

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from db.models import Tweet, TweetStatus, utcnow


def list_tweets(
    session: Session,
    *,
    account: str | None = None,
    statuses: Sequence[TweetStatus] = (),
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Tweet], int]:
    """A page of tweets in a stable order (by id) and the total count matching the filters."""
    query = select(Tweet)
    if account:
        query = query.where(Tweet.account == account)
    if statuses:
        query = query.where(Tweet.status.in_(list(statuses)))
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    page = session.scalars(
        query.order_by(Tweet.id).limit(limit).offset(offset).options(selectinload(Tweet.deliveries))
    ).all()
    return list(page), total or 0


def page_by_status(
    session: Session, account: str, statuses: Sequence[TweetStatus], *, order_by: Sequence, limit: int,
) -> tuple[list[Tweet], int]:
    """A page of the account's tweets in these statuses, in `order_by` order (with their deliveries, in
    one more query), and how many match in all."""
    query = select(Tweet).where(Tweet.account == account, Tweet.status.in_(list(statuses)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = query.order_by(*order_by).limit(limit).options(selectinload(Tweet.deliveries))
    return list(session.scalars(page)), total


def lock_queue(session: Session, account: str) -> None:
    """Lock the account's queued tweets, in id order, until the transaction ends (SELECT ... FOR
    UPDATE on Postgres; on SQLite, BEGIN IMMEDIATE already holds the whole database)."""
    session.execute(
        select(Tweet.id).where(Tweet.account == account, Tweet.status == TweetStatus.queued)
        .order_by(Tweet.id).with_for_update()
    )


def queue_line(session: Session, account: str) -> list[Tweet]:
    """The account's queued tweets in posting order for TWEET_ORDER=oldest (position, then id)."""
    return list(session.scalars(
        select(Tweet).where(Tweet.account == account, Tweet.status == TweetStatus.queued)
        .order_by(Tweet.position, Tweet.id)
    ))


def get_by_hash(session: Session, account: str, digest: str) -> Tweet | None:
    return session.scalar(select(Tweet).where(Tweet.account == account, Tweet.content_hash == digest))


def count_by_status(session: Session, account: str) -> dict[TweetStatus, int]:
    rows = session.execute(
        select(Tweet.status, func.count()).where(Tweet.account == account).group_by(Tweet.status)
    ).all()
    counts = {status: 0 for status in TweetStatus}
    counts.update({status: n for status, n in rows})
    return counts


def existing_hashes(session: Session, account: str) -> set[str]:
    return set(session.scalars(select(Tweet.content_hash).where(Tweet.account == account)))


def next_position(session: Session, account: str) -> int:
    """The position after the last one used by the account (new tweets go to the back)."""
    last = session.scalar(select(func.max(Tweet.position)).where(Tweet.account == account))
    return (last or 0) + 1


def insert_tweets(
    session: Session,
    *,
    account: str,
    texts_and_hashes: Iterable[tuple[str, str]],
    status: TweetStatus,
) -> int:
    """Insert many tweets at once (COPY on Postgres, executemany elsewhere); returns how many.

    Raises sqlalchemy's IntegrityError when a text is already stored for the account.
    """
    pairs = list(texts_and_hashes)
    if not pairs:
        return 0
    now = utcnow()
    shared = {"account": account, "status": status.value, "created_at": now, "updated_at": now, "dry_run": False}
    first_position = next_position(session, account)
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        _copy_tweets(connection, shared, pairs, first_position)
    else:
        session.execute(
            insert(Tweet.__table__),
            [{**shared, "text": text, "content_hash": digest, "position": first_position + n}
             for n, (text, digest) in enumerate(pairs)],
        )
    return len(pairs)


def _copy_tweets(connection, shared: dict, pairs: list[tuple[str, str]], first_position: int) -> None:
    """COPY the tweets into the table inside the session's transaction.

    COPY is several times faster than batched INSERTs on psycopg2, and far faster on pg8000,
    which sends an executemany row by row (see bench/bench_ingest.py).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([value.isoformat() if isinstance(value, datetime) else value for value in shared.values()])
    shared_csv = buffer.getvalue().rstrip("\n") + ","
    buffer.seek(0)
    buffer.truncate()
    for n, (text, digest) in enumerate(pairs):
        buffer.write(shared_csv)
        writer.writerow((text, digest, first_position + n))
    buffer.seek(0)
    columns = ", ".join([*shared, "text", "content_hash", "position"])
    sql = f"COPY tweets ({columns}) FROM STDIN WITH (FORMAT csv)"
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        if connection.dialect.driver == "psycopg2":
            cursor.copy_expert(sql, buffer)
        else:
            cursor.execute(sql, stream=buffer)
    except connection.dialect.loaded_dbapi.IntegrityError as exc:
        raise IntegrityError(sql, None, exc) from exc
    finally:
        cursor.close()
