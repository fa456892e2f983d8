"""Posting the next curated tweet to X exactly once: claim it, post it, record what X said.

`post_next` is the one code path behind `POST /tweet_curated/`, `python -m posting.post_next`
and the curation page's "post next now" button. Each returns a `PostResult` that its
caller turns into an HTTP answer, an exit code or a flash message.

How "exactly once" holds:
- A claim (queued -> posting, with claimed_at and the idempotency key) is one UPDATE whose
  subquery picks the row with FOR UPDATE SKIP LOCKED on Postgres; SQLite runs every
  transaction under BEGIN IMMEDIATE (db/engine.py), so claims are serialised. The claim is
  committed before X is called, so no database connection is held while X answers.
- The idempotency key (Cloud Scheduler's X-CloudScheduler-ScheduleTime, or an
  Idempotency-Key) is stored on the claimed tweet, unique per account (or, when the queue was
  empty, in empty_queue_runs): a second call with the same key gets the first call's result,
  or `in_flight` while that call is posting.
  Claims with the same key are serialised (a Postgres advisory lock on the key).
  When the tweet goes back to the queue (X did nothing), the key is released so a retry can
  post; when the outcome is unknown the key stays, so a retry cannot post a second tweet.
- X's answer is recorded under a lock on the tweet's row, and only while the tweet is still
  this call's claim (or left `unconfirmed` by a sweep since): a call slower than its lease
  never undoes what an operator or another call did with the tweet meanwhile.
- A tweet becomes `posted` only once X accepted it. When X's answer is lost (timeout,
  dropped connection) or the process dies mid-post, the tweet becomes `unconfirmed` and is
  never re-posted automatically: an operator checks X and sets it to posted or queued.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import tweepy
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased, sessionmaker

from core.config import Settings, TweetOrder
from core.x_client import XError, XErrorKind, classify_x_error, make_x_client
from db.models import EmptyQueueRun, Tweet, TweetStatus, utcnow
from posting.outcomes import PostOutcome

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY_LENGTH = 200  # the column's size
RETRY_AFTER_UNKNOWN_SECONDS = 60  # when a 429 carries no reset time
QUEUE_BUSY_RETRY_SECONDS = 5  # a curator's change holds the queued tweets for milliseconds
QUEUE_EMPTY_MESSAGE = "No more tweets left"  # the original's answer
IDEMPOTENCY_LOCK_SPACE = 0x7477  # first key of Postgres advisory locks taken for idempotency keys
EMPTY_QUEUE_RUN_DAYS = 30  # how long a key that found the queue empty is kept (retries come within hours)


@dataclass
class PostResult:
    outcome: PostOutcome
    message: str  # one line for the log, the CLI and the HTTP answer
    tweet: Tweet | None = None  # the tweet posted, or the one the failure is about
    retry_after: int | None = None  # seconds; rate_limited and queue_busy only
    replayed: bool = False  # the answer of an earlier call with the same idempotency key
    rejected: list[Tweet] = field(default_factory=list)  # tweets X refused during this call


# ---- database steps (plain functions on a Session; the caller commits) ----

def sweep_stale_posts(session: Session, *, account: str, lease_minutes: float) -> list[int]:
    """Turn tweets left in `posting` longer than the lease into `unconfirmed`; their ids.

    Their call died between claiming and recording (a crash, a killed container): X may
    have posted them, so they are never re-posted automatically.
    """
    now = utcnow()
    cutoff = now - timedelta(minutes=lease_minutes)
    stale = session.scalars(
        update(Tweet)
        .where(Tweet.account == account, Tweet.status == TweetStatus.posting, Tweet.claimed_at < cutoff)
        .values(
            status=TweetStatus.unconfirmed,
            updated_at=now,
            error=f"the posting call stopped mid-post (no result after {lease_minutes:g} minutes); "
                  f"X may have posted it: check https://x.com/{account} and set it to posted or queued",
        )
        .returning(Tweet.id)
        .execution_options(synchronize_session=False)
    ).all()
    if stale:
        log.warning("posting lease expired: tweets %s are now unconfirmed (check them on X)", list(stale))
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
    """Atomically move the next queued tweet to `posting` (with claimed_at and the key).

    One UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING: on
    Postgres concurrent claims skip each other's rows instead of waiting or sharing one; on
    SQLite (no FOR UPDATE) the transaction's BEGIN IMMEDIATE lock does the same. Raises
    IntegrityError when another tweet of the account already holds the key (post_next
    looks the key up first, under lock_idempotency_key).
    """
    candidate = aliased(Tweet)
    ordering = (func.random(),) if order is TweetOrder.random else (candidate.position, candidate.id)
    next_id = (
        select(candidate.id)
        .where(candidate.account == account, candidate.status == TweetStatus.queued)
        .order_by(*ordering)
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
    """Posted (X's id and URL when known), at `posted_at` (default: now)."""
    now = utcnow()
    tweet.status = TweetStatus.posted
    tweet.posted_at = posted_at or now
    tweet.updated_at = now
    tweet.x_tweet_id, tweet.dry_run = x_tweet_id, dry_run
    tweet.x_url = tweet_url(tweet.account, x_tweet_id) if x_tweet_id is not None else None
    tweet.error = None
    session.flush()


def record_confirmed(session: Session, tweet: Tweet, *, x_tweet_id: str | None) -> None:
    """An operator found an unconfirmed tweet on X: posted, dated when its posting call claimed it."""
    record_posted(session, tweet, x_tweet_id=x_tweet_id, dry_run=False, posted_at=tweet.claimed_at)


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


def record_unconfirmed(session: Session, tweet: Tweet, *, reason: str) -> None:
    """X may have posted it: kept out of the queue (with its key) until an operator decides."""
    tweet.status = TweetStatus.unconfirmed
    tweet.error = (
        f"{reason}; X may have posted it: check https://x.com/{tweet.account} "
        "and set it to posted or queued"
    )
    tweet.updated_at = utcnow()
    session.flush()


# ---- the posting call ----

X_POST_ID_PATTERN = r"[0-9]{1,19}"  # X's post ids: 64-bit integers
X_POST_ID = re.compile(X_POST_ID_PATTERN)


def tweet_url(account: str, x_tweet_id: str) -> str:
    return f"https://x.com/{account}/status/{x_tweet_id}"


def posted_message(tweet: Tweet) -> str:
    if tweet.dry_run:
        return f"Dry run: tweet {tweet.id} recorded as posted; nothing was sent to X"
    if tweet.x_url is None:  # confirmed by an operator without X's id
        return f"Tweet {tweet.id} was posted (confirmed by an operator; X's id was not recorded)"
    return f"New tweet posted @ {tweet.x_url}"


def unconfirmed_message(tweet: Tweet) -> str:
    return f"tweet {tweet.id} is unconfirmed: {tweet.error}"


def missing_configuration(settings: Settings) -> str | None:
    """Why posting cannot work with these settings, or None when it can."""
    if settings.TWITTER_DRY_RUN or not settings.missing_x_credentials:
        return None
    return (
        f"posting to X is not configured: {', '.join(settings.missing_x_credentials)} "
        "not set (see .env_reference), or set TWITTER_DRY_RUN=true"
    )


def log_posting_configuration(settings: Settings) -> None:
    """Say once, at start, how posting will behave."""
    problem = missing_configuration(settings)
    if problem:
        log.warning("%s; posting calls will answer 503", problem)
    elif settings.TWITTER_DRY_RUN:
        log.info("TWITTER_DRY_RUN is on: posts are recorded as dry runs and never sent to X")


def post_next(
    *,
    session_factory: sessionmaker[Session],
    settings: Settings,
    idempotency_key: str | None = None,
    x_client: tweepy.Client | None = None,
) -> PostResult:
    """Post the next queued tweet of settings.ACCOUNT to X (or record a dry run).

    Parameters
    ----------
    session_factory
        Makes the sessions of the claim and result transactions.
    settings
        ACCOUNT, TWEET_ORDER, TWITTER_DRY_RUN, POSTING_LEASE_MINUTES, MAX_REJECTED_PER_CALL
        and the X settings (used when `x_client` is None).
    idempotency_key
        The same key on a later call answers with this call's result and posts nothing.
    x_client
        A tweepy Client to post with; default: `make_x_client(settings)`.

    Never sleeps and never retries a post; every failure is a `PostResult`. A database
    error while recording a post X accepted is logged with X's id and re-raised (the tweet
    stays `posting` and the next call's sweep makes it `unconfirmed`).
    """
    if idempotency_key is not None:
        idempotency_key = idempotency_key.strip() or None
    if idempotency_key is not None and len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(f"idempotency key is longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    problem = missing_configuration(settings)
    if problem:
        return PostResult(PostOutcome.not_configured, problem)

    if x_client is None and not settings.TWITTER_DRY_RUN:
        x_client = make_x_client(settings)  # before claiming: a failure here leaves the queue as it was
    rejected: list[Tweet] = []
    with session_factory() as session:
        for _attempt in range(settings.MAX_REJECTED_PER_CALL):
            claim = _claim(session, settings, idempotency_key)
            if isinstance(claim, PostResult):
                claim.rejected = rejected
                return claim
            tweet = claim
            if settings.TWITTER_DRY_RUN:
                log.info("dry run: tweet %s would be posted: %s", tweet.id, tweet.text)
                record_posted(session, tweet, x_tweet_id=None, dry_run=True)
                session.commit()
                return PostResult(PostOutcome.posted, posted_message(tweet), tweet, rejected=rejected)
            result = _post_claimed(session, x_client, tweet)
            if result is not None:
                result.rejected = rejected
                return result
            rejected.append(tweet)  # X refused the text; the loop claims the next one
    reasons = "; ".join(f"tweet {t.id}: {t.error}" for t in rejected)
    return PostResult(
        PostOutcome.texts_refused,
        f"X refused {len(rejected)} texts in a row (now rejected: {reasons}); the next call tries the next tweets",
        rejected[-1],
        rejected=rejected,
    )


def _claim(session: Session, settings: Settings, key: str | None) -> Tweet | PostResult:
    """Sweep stale leases, answer for a used key, or claim the next tweet; commits."""
    account = settings.ACCOUNT
    if key is not None:
        lock_idempotency_key(session, account=account, key=key)
    sweep_stale_posts(session, account=account, lease_minutes=settings.POSTING_LEASE_MINUTES)
    if key is not None:
        earlier = find_by_idempotency_key(session, account=account, key=key)
        if earlier is not None:
            session.commit()
            return _replay(earlier, key)
        if found_queue_empty(session, account=account, key=key):
            session.commit()
            return PostResult(PostOutcome.queue_empty, QUEUE_EMPTY_MESSAGE, replayed=True)
    tweet = claim_next_tweet(session, account=account, order=settings.TWEET_ORDER, idempotency_key=key)
    if tweet is None and queued_tweet_exists(session, account=account):
        session.commit()
        return PostResult(
            PostOutcome.queue_busy,
            "the queued tweets are being changed on the curation page right now; ask again in a few seconds",
            retry_after=QUEUE_BUSY_RETRY_SECONDS,
        )
    if tweet is None and key is not None:
        remember_empty_queue_run(session, account=account, key=key)
    session.commit()
    if tweet is None:
        return PostResult(PostOutcome.queue_empty, QUEUE_EMPTY_MESSAGE)
    return tweet


def _replay(earlier: Tweet, key: str) -> PostResult:
    """The answer for a key an earlier call already used."""
    if earlier.status is TweetStatus.posted:
        return PostResult(PostOutcome.posted, posted_message(earlier), earlier, replayed=True)
    if earlier.status is TweetStatus.posting:
        return PostResult(
            PostOutcome.in_flight,
            f"a call with idempotency key {key!r} is still posting tweet {earlier.id}; ask again in a minute",
            earlier,
            replayed=True,
        )
    if earlier.status is TweetStatus.unconfirmed:
        return PostResult(PostOutcome.unconfirmed, unconfirmed_message(earlier), earlier, replayed=True)
    return PostResult(
        PostOutcome.key_reused,
        f"idempotency key {key!r} was used for tweet {earlier.id}, which is now {earlier.status.value}; nothing posted",
        earlier,
        replayed=True,
    )


def _post_claimed(session: Session, x_client: tweepy.Client, tweet: Tweet) -> PostResult | None:
    """Send a claimed tweet to X and record the answer; None when X refused the text."""
    try:
        response = x_client.create_tweet(text=tweet.text, user_auth=True)
        x_tweet_id = str(response.data["id"])
        if not X_POST_ID.fullmatch(x_tweet_id):
            raise ValueError(f"X answered with {x_tweet_id[:40]!r} as the new post's id, which is no post id")
    except Exception as exc:  # every failure is sorted by classify_x_error, which never raises
        return _record_failure(session, tweet, classify_x_error(exc))
    url = tweet_url(tweet.account, x_tweet_id)
    try:
        lost = _settle(session, tweet, f"X posted it as {url}",
                       lambda: record_posted(session, tweet, x_tweet_id=x_tweet_id, dry_run=False))
    except SQLAlchemyError:
        log.exception(
            "X posted tweet %s as %s (%s) but recording it failed; it will become unconfirmed: set it to posted",
            tweet.id, x_tweet_id, url,
        )
        raise
    if lost is None:
        log.info("posted tweet %s as %s", tweet.id, url)
    return PostResult(PostOutcome.posted, lost or posted_message(tweet), tweet)


def _settle(session: Session, tweet: Tweet, answer: str, record: Callable[[], None]) -> str | None:
    """Lock the claimed tweet's row and `record` X's answer, unless the claim has since been
    taken from this call; commits. None when recorded, else why not (also logged).

    A call slower than POSTING_LEASE_MINUTES finds its tweet swept to `unconfirmed`: X's answer
    still settles it then. Once an operator or another call has acted on it (requeued, claimed
    again, closed, deleted), writing the answer would undo that (a tweet claimed again and set
    back to `queued` could be posted twice), so the answer is only logged.
    """
    claimed_at = tweet.claimed_at
    current = session.get(Tweet, tweet.id, with_for_update=True, populate_existing=True)
    if current is not None and current.claimed_at == claimed_at and current.status in (
        TweetStatus.posting, TweetStatus.unconfirmed
    ):
        record()
        session.commit()
        return None
    session.commit()
    now = "deleted" if current is None else current.status.value
    lost = f"tweet {tweet.id} changed after its posting lease ended (it is now {now}): X's answer is not recorded: {answer}"
    log.error(lost)
    return lost


def _record_failure(session: Session, tweet: Tweet, error: XError) -> PostResult | None:
    """Settle the tweet as X's answer implies (rejected, unconfirmed, or back in the queue), then say why."""
    kind = error.kind
    if kind is XErrorKind.text_refused:
        if _settle(session, tweet, error.message, lambda: record_rejected(session, tweet, reason=error.message)) is None:
            log.warning("X refused the text of tweet %s (now rejected): %s", tweet.id, error.message)
        return None
    if kind is XErrorKind.unknown_outcome:
        lost = _settle(session, tweet, error.message, lambda: record_unconfirmed(session, tweet, reason=error.message))
        if lost is None:
            log.error(unconfirmed_message(tweet))
        return PostResult(PostOutcome.unconfirmed, lost or unconfirmed_message(tweet), tweet)
    lost = _settle(session, tweet, error.message, lambda: release_to_queue(session, tweet, reason=error.message))
    outcome, message, retry_after = _requeued_answer(tweet, error)
    if lost is None:
        log.warning(message)
    return PostResult(outcome, lost or message, tweet, retry_after=retry_after)


def _requeued_answer(tweet: Tweet, error: XError) -> tuple[PostOutcome, str, int | None]:
    """The outcome, message and retry-after (seconds, rate limits only) for a tweet X did nothing with."""
    kind = error.kind
    back = f"tweet {tweet.id} is back in the queue"
    retry_after = None
    if kind is XErrorKind.rate_limited:
        outcome = PostOutcome.rate_limited
        if error.retry_at is None:
            retry_after, until = RETRY_AFTER_UNKNOWN_SECONDS, "X did not say until when"
        else:
            retry_after = max(1, math.ceil((error.retry_at - utcnow()).total_seconds()))
            until = f"until {error.retry_at.isoformat(timespec='seconds')}"
        message = f"X's rate limit is reached ({until}); {back}"
    elif kind is XErrorKind.credentials and error.status_code == 401:
        outcome = PostOutcome.x_credentials
        message = (
            "X rejected the credentials: check ACCESS_KEY, ACCESS_SECRET, CONSUMER_KEY and CONSUMER_SECRET "
            f"({error.message}); {back}"
        )
    elif kind is XErrorKind.credentials:
        outcome = PostOutcome.x_credentials
        message = (
            "X refused the account or app permission to post: give the app Read and Write permission in the "
            f"developer portal, then regenerate ACCESS_KEY and ACCESS_SECRET ({error.message}); {back}"
        )
    elif kind is XErrorKind.not_sent:
        outcome = PostOutcome.x_failed
        message = f"could not reach X ({error.message}); {back}"
    elif kind is XErrorKind.server_error:
        outcome = PostOutcome.x_failed
        message = f"X failed ({error.message}); {back}"
    else:
        outcome = PostOutcome.x_failed
        message = f"X refused the request ({error.message}): check TWITTER_API_BASE_URL; {back}"
    return outcome, message, retry_after
