"""Queries on the tweets table: plain functions taking a Session, used by routes and scripts."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

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
    page = session.scalars(query.order_by(Tweet.id).limit(limit).offset(offset)).all()
    return list(page), total or 0


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
    """Insert many tweets in one executemany-style statement; returns how many."""
    now = utcnow()
    position = next_position(session, account)
    rows = [
        {
            "account": account,
            "text": text,
            "content_hash": digest,
            "status": status,
            "position": position + n,
            "created_at": now,
            "updated_at": now,
            "dry_run": False,
        }
        for n, (text, digest) in enumerate(texts_and_hashes)
    ]
    if rows:
        session.execute(insert(Tweet), rows)
    return len(rows)
