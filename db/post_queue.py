"""The posting queue's database steps: plain functions on a Session; the caller commits.

posting.job calls them around X: sweep expired claims, serialise and look up idempotency keys,
claim the next queued tweet, and record what X answered. How they keep "exactly once" is told
in posting/job.py's docstring.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, func, select, text, update
from sqlalchemy.orm import Session, aliased

from core.config import TweetOrder
from core.delivery import RemotePost
from core.x_client import tweet_url
from db.models import Delivery, DeliveryStatus, EmptyQueueRun, Tweet, TweetStatus, utcnow

log = logging.getLogger(__name__)

IDEMPOTENCY_LOCK_SPACE = 0x7477  # first key of Postgres advisory locks taken for idempotency keys
EMPTY_QUEUE_RUN_DAYS = 30  # how long a key that found the queue empty is kept (retries come within hours)


def sweep_stale_posts(
    session: Session, *, account: str, lease_minutes: float, unconfirmed_note: Callable[[list[str]], str]
) -> list[int]:
    """Turn tweets left in `posting` longer than the lease into `unconfirmed`; their ids.

    Their call died between claiming and recording (a crash, a killed container): the networks
    of their deliveries still `posting` (X for a tweet with none: one stored before deliveries)
    may have posted them, so they are never re-posted automatically. `unconfirmed_note` says,
    for those networks, who may have it and where to check (posting.destinations.unconfirmed_note).
    """
    now = utcnow()
    cutoff = now - timedelta(minutes=lease_minutes)
    stale = session.scalars(
        update(Tweet)
        .where(Tweet.account == account, Tweet.status == TweetStatus.posting, Tweet.claimed_at < cutoff)
        .values(status=TweetStatus.unconfirmed, updated_at=now)
        .returning(Tweet.id)
        .execution_options(synchronize_session=False)
    ).all()
    if not stale:
        return []
    swept = session.execute(
        update(Delivery)
        .where(Delivery.tweet_id.in_(stale), Delivery.status == DeliveryStatus.posting)
        .values(status=DeliveryStatus.unconfirmed, updated_at=now,
                error="the posting call stopped mid-post: the network may have it; check it")
        .returning(Delivery.tweet_id, Delivery.destination)
        .execution_options(synchronize_session=False)
    ).all()
    networks: dict[int, list[str]] = {tweet_id: [] for tweet_id in stale}
    for tweet_id, destination in swept:
        networks[tweet_id].append(destination)
    by_note: dict[str, list[int]] = {}  # one UPDATE per note: usually one for all
    for tweet_id, names in networks.items():
        by_note.setdefault(unconfirmed_note(names or ["x"]), []).append(tweet_id)
    for note, ids in by_note.items():
        session.execute(
            update(Tweet)
            .where(Tweet.id.in_(ids))
            .values(error=f"the posting call stopped mid-post (no result after {lease_minutes:g} minutes); {note}")
            .execution_options(synchronize_session=False)
        )
        log.warning("posting lease expired: tweets %s are now unconfirmed; %s", ids, note)
    return list(stale)


def lock_idempotency_key(session: Session, *, account: str, key: str) -> None:
    """Serialise the claim transactions of calls sharing a key, until the caller commits.

    Without it, two Postgres calls with one key would each lock a different queued row and
    the second would wait on the key's unique index, while a third call, finding those rows
    locked, would skip them and wrongly report an empty queue. SQLite needs nothing: its
    BEGIN IMMEDIATE already serialises every write transaction.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(CAST(:space AS integer), hashtext(CAST(:name AS text)))"),
            {"space": IDEMPOTENCY_LOCK_SPACE, "name": f"{account}/{key}"},
        )


def find_by_idempotency_key(session: Session, *, account: str, key: str) -> Tweet | None:
    return session.scalar(select(Tweet).where(Tweet.account == account, Tweet.idempotency_key == key))


def found_queue_empty(session: Session, *, account: str, key: str) -> bool:
    """Whether an earlier call with this key found no queued tweet."""
    return session.scalar(
        select(EmptyQueueRun.id).where(EmptyQueueRun.account == account, EmptyQueueRun.idempotency_key == key)
    ) is not None


def remember_empty_queue_run(session: Session, *, account: str, key: str) -> None:
    """Store a key that found the queue empty, and forget the account's keys older than EMPTY_QUEUE_RUN_DAYS."""
    session.execute(delete(EmptyQueueRun).where(
        EmptyQueueRun.account == account,
        EmptyQueueRun.created_at < utcnow() - timedelta(days=EMPTY_QUEUE_RUN_DAYS),
    ))
    session.add(EmptyQueueRun(account=account, idempotency_key=key))


def queued_tweet_exists(session: Session, *, account: str) -> bool:
    """Whether the account has a queued tweet, locked or not: a claim that skipped them all found
    them locked by a curator's change, not an empty queue (which a key would then remember)."""
    return session.scalar(
        select(Tweet.id).where(Tweet.account == account, Tweet.status == TweetStatus.queued).limit(1)
    ) is not None


def claim_next_tweet(
    session: Session, *, account: str, order: TweetOrder, idempotency_key: str | None = None
) -> Tweet | None:
    """Atomically move the next queued tweet to `posting` (with claimed_at and the key); one that
    some destinations already have goes first.

    One UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING: on
    Postgres concurrent claims skip each other's rows instead of waiting or sharing one; on
    SQLite (no FOR UPDATE) the transaction's BEGIN IMMEDIATE lock does the same. Raises
    IntegrityError when another tweet of the account already holds the key (post_next
    looks the key up first, under lock_idempotency_key).
    """
    candidate = aliased(Tweet)
    ordering = (func.random(),) if order is TweetOrder.random else (candidate.position, candidate.id)
    # A tweet already on some destinations goes first: the run completes it before starting another.
    partly_posted = exists().where(Delivery.tweet_id == candidate.id, Delivery.status == DeliveryStatus.posted)
    next_id = (
        select(candidate.id)
        .where(candidate.account == account, candidate.status == TweetStatus.queued)
        .order_by(partly_posted.desc(), *ordering)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    now = utcnow()
    return session.scalar(
        update(Tweet)
        .where(Tweet.id == next_id)
        .values(status=TweetStatus.posting, claimed_at=now, updated_at=now, idempotency_key=idempotency_key)
        .returning(Tweet)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


def record_posted(
    session: Session, tweet: Tweet, *, x_tweet_id: str | None, dry_run: bool, posted_at: datetime | None = None
) -> None:
    """Posted everywhere it goes (X's id and URL when known), at `posted_at` (default: now)."""
    now = utcnow()
    tweet.status = TweetStatus.posted
    tweet.posted_at = posted_at or now
    tweet.updated_at = now
    tweet.x_tweet_id, tweet.dry_run = x_tweet_id, dry_run
    tweet.x_url = tweet_url(tweet.account, x_tweet_id) if x_tweet_id is not None else None
    tweet.error = None
    session.flush()


def record_confirmed(session: Session, tweet: Tweet, *, x_tweet_id: str | None) -> None:
    """An operator found an unconfirmed tweet where it was going: posted, dated when its posting call
    claimed it; its unconfirmed deliveries too (X's with `x_tweet_id` when given)."""
    for delivery in tweet.deliveries:
        if delivery.status is DeliveryStatus.unconfirmed:
            remote = None
            if delivery.destination == "x" and x_tweet_id is not None:
                remote = RemotePost(x_tweet_id, tweet_url(tweet.account, x_tweet_id))
            record_delivered(session, delivery, remote, dry_run=False, posted_at=tweet.claimed_at)
    record_posted(session, tweet, x_tweet_id=x_tweet_id, dry_run=False, posted_at=tweet.claimed_at)


def requeue_deliveries(session: Session, tweet: Tweet) -> None:
    """A tweet going back to the queue goes back to every destination that does not have it; each
    keeps its key, so that Mastodon (within the hour it remembers keys) and Bluesky answer a
    repeated post with the one they already have."""
    for delivery in tweet.deliveries:
        if delivery.status is not DeliveryStatus.posted:
            if delivery.status is DeliveryStatus.unconfirmed:
                delivery.claimed_at = None  # the operator found it not there: post it, whenever that is
            delivery.status = DeliveryStatus.queued
            delivery.error = None
    session.flush()


def release_to_queue(session: Session, tweet: Tweet, *, reason: str) -> None:
    """X did nothing with it: queued again, the key freed for a retry, the reason kept in `error`."""
    tweet.status = TweetStatus.queued
    tweet.claimed_at = None
    tweet.idempotency_key = None
    tweet.error = f"last attempt: {reason}"
    tweet.updated_at = utcnow()
    session.flush()


def record_rejected(session: Session, tweet: Tweet, *, reason: str) -> None:
    """X refused this text for good; the key moves on with the call to the next tweet."""
    tweet.status = TweetStatus.rejected
    tweet.claimed_at = None
    tweet.idempotency_key = None
    tweet.error = reason
    tweet.updated_at = utcnow()
    session.flush()


def record_unconfirmed(session: Session, tweet: Tweet, *, reason: str, note: str) -> None:
    """A network may have posted it: kept out of the queue (with its key) until an operator decides;
    `note` says which and where to check (posting.destinations.unconfirmed_note)."""
    tweet.status = TweetStatus.unconfirmed
    tweet.error = f"{reason}; {note}"
    tweet.updated_at = utcnow()
    session.flush()


# ---- the posting call ----


# ---- one tweet's deliveries ----

def ensure_deliveries(session: Session, tweet: Tweet, destinations: tuple[str, ...]) -> list[Delivery]:
    """The claimed tweet's delivery to each destination, in the bot's order; new ones are queued."""
    have = {delivery.destination: delivery for delivery in tweet.deliveries}
    for destination in destinations:
        if destination not in have:
            have[destination] = Delivery(tweet=tweet, destination=destination, status=DeliveryStatus.queued)
            session.add(have[destination])
    session.flush()
    return [have[destination] for destination in destinations]


def start_delivery(session: Session, delivery: Delivery, *, key: str) -> None:
    """About to call the network: `posting`, with the key kept for every later attempt and the time
    of the first attempt (how long the network may still recognise the key)."""
    delivery.status = DeliveryStatus.posting
    delivery.key = key
    if delivery.claimed_at is None:
        delivery.claimed_at = utcnow()
    session.flush()


def record_delivered(
    session: Session, delivery: Delivery, remote: RemotePost | None, *, dry_run: bool, posted_at: datetime | None = None
) -> None:
    """The network has it (`remote`: its id and link, when known), or a dry run recorded it."""
    delivery.status = DeliveryStatus.posted
    delivery.remote_id = remote.id if remote is not None else None
    delivery.url = remote.url if remote is not None else None
    delivery.dry_run = dry_run
    delivery.posted_at = posted_at or utcnow()
    delivery.error = None
    session.flush()


def record_delivery_failed(
    session: Session, delivery: Delivery, status: DeliveryStatus, *, reason: str, first_attempt: datetime | None = None
) -> None:
    """Not posted there: `queued` (retry later, same key), `rejected` (never) or `unconfirmed` (maybe).

    `first_attempt` (queued): when the first attempt that may have landed was made, None when none may
    have; posting later than the network keeps the key is then refused (posting/job.py).
    """
    delivery.status = status
    delivery.error = reason
    if status is DeliveryStatus.queued:
        delivery.claimed_at = first_attempt
    session.flush()
