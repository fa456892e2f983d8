"""The `tweets`, `deliveries`, `empty_queue_runs` and `network_sessions` tables. Alembic (migrations/) owns
the schema; keep the two in step."""
from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import (
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s_%(column_1_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime: use an aware one (e.g. db.models.utcnow())")
            value = value.astimezone(timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class TweetStatus(str, enum.Enum):
    """Where a tweet is in its life. Only `queued` tweets are ever picked for posting.

    pending      generated, waiting for a curator's review (uploads land here or in queued)
    queued       approved, waiting to be posted (to the destinations it has not reached yet)
    posting      claimed by a posting call that has not finished yet (a lease: see claimed_at)
    posted       every destination of its bot has it (or a dry run recorded it, or an operator found
                 it there), or refused it while another took it; x_tweet_id and x_url are X's when known
    unconfirmed  a network may or may not have posted it (timeout, crash mid-post); never re-posted
                 there automatically: an operator checks and requeues or closes it
    failed       posting failed for a reason that is not the text's fault; requeue to retry
    rejected     a curator refused the text, or every destination did (reason in `error`)

    Each destination's own state is a Delivery's (DeliveryStatus).
    """

    pending = "pending"
    queued = "queued"
    posting = "posting"
    posted = "posted"
    unconfirmed = "unconfirmed"
    failed = "failed"
    rejected = "rejected"


class DeliveryStatus(str, enum.Enum):
    """Where a tweet is on one destination (a network account of its bot).

    queued       not posted there yet: the next run that claims the tweet posts it there
    posting      a run is posting it there now
    posted       the network accepted it (remote_id, url), or a dry run recorded it
    unconfirmed  the network may or may not have it: never re-posted automatically
    failed       an operator set the tweet to failed while this destination lacked it
    rejected     the network refused the text for good, or it breaks that network's rule
    """

    queued = "queued"
    posting = "posting"
    posted = "posted"
    unconfirmed = "unconfirmed"
    failed = "failed"
    rejected = "rejected"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Tweet(Base):
    __tablename__ = "tweets"
    __table_args__ = (
        UniqueConstraint("account", "content_hash"),
        UniqueConstraint("account", "idempotency_key"),
        Index("ix_tweets_account_status", "account", "status", "position", "id"),
        # Ids are never given again (links, logs and the history name tweets by id): SQLite
        # would otherwise reuse the newest one's id after it is deleted; Postgres' sequence never does.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(15))
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[TweetStatus] = mapped_column(
        Enum(TweetStatus, name="tweet_status", native_enum=False, length=16, validate_strings=True),
        default=TweetStatus.queued,
    )
    # Posting order for TWEET_ORDER=oldest (lower first); curators can reorder.
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow
    )
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    x_tweet_id: Mapped[str | None] = mapped_column(String(32))
    x_url: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    # Loaded only when asked for (posting, the curation page); the database deletes them with the tweet.
    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="tweet", order_by="Delivery.id", passive_deletes=True, lazy="select"
    )


class EmptyQueueRun(Base):
    """The idempotency key of a posting call that found no queued tweet.

    A posting call's key is stored on the tweet it claims; a call that claimed none stores it
    here, so that a retry with the same key answers "no more tweets left" like the first call
    instead of posting a tweet queued in between.
    """

    __tablename__ = "empty_queue_runs"
    __table_args__ = (UniqueConstraint("account", "idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(15))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Delivery(Base):
    """A tweet on one destination: its own state, key, remote id, link, error and times.

    `key` is made once, on the first attempt, and sent again on every retry: Mastodon's
    Idempotency-Key, Bluesky's record key. A retry that finds the post already there is
    then recorded as posted instead of posting it twice.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("tweet_id", "destination"),
        Index("ix_deliveries_destination_status", "destination", "status"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tweet_id: Mapped[int] = mapped_column(ForeignKey("tweets.id", ondelete="CASCADE"))
    destination: Mapped[str] = mapped_column(String(16))
    status: Mapped[DeliveryStatus] = mapped_column(
        Enum(DeliveryStatus, name="delivery_status", native_enum=False, length=16, validate_strings=True),
        default=DeliveryStatus.queued,
    )
    key: Mapped[str | None] = mapped_column(String(200))
    remote_id: Mapped[str | None] = mapped_column(String(200))
    url: Mapped[str | None] = mapped_column(String(400))
    error: Mapped[str | None] = mapped_column(Text)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    tweet: Mapped[Tweet] = relationship(back_populates="deliveries")


class NetworkSession(Base):
    """A bot's login on a network kept across runs (Bluesky's session), sealed: see posting/bluesky_client.py.

    The blob is encrypted with a key derived from the bot's own credential, so this table never
    holds a usable token in plain text.
    """

    __tablename__ = "network_sessions"
    __table_args__ = (UniqueConstraint("account", "network"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(15))
    network: Mapped[str] = mapped_column(String(16))
    sealed: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
