"""Posting the next curated tweet to X exactly once: claim it, post it, record what X said.

`post_next` is the one code path behind `POST /tweet_curated/`, `python -m posting.post_next`
and the curation page's "post next now" button. Each returns a `PostResult` that its
caller turns into an HTTP answer, an exit code or a flash message (posting/outcomes.py). The
database steps it takes are in db/post_queue.py.

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
from collections.abc import Callable
from dataclasses import dataclass, field

import tweepy
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.delivery import DeliveryError, ErrorKind
from core.x_client import X_POST_ID, classify_x_error, make_x_client, tweet_url
from db.models import Tweet, TweetStatus, utcnow
from db.post_queue import (
    claim_next_tweet,
    find_by_idempotency_key,
    found_queue_empty,
    lock_idempotency_key,
    queued_tweet_exists,
    record_posted,
    record_rejected,
    record_unconfirmed,
    release_to_queue,
    remember_empty_queue_run,
    sweep_stale_posts,
)
from posting.outcomes import PostOutcome

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY_LENGTH = 200  # the column's size
RETRY_AFTER_UNKNOWN_SECONDS = 60  # when a 429 carries no reset time
QUEUE_BUSY_RETRY_SECONDS = 5  # a curator's change holds the queued tweets for milliseconds
QUEUE_EMPTY_MESSAGE = "No more tweets left"  # the original's answer
NO_ACCOUNT = ""  # no tweet has it: ACCOUNT is 1-15 characters (core.config)


@dataclass
class PostResult:
    outcome: PostOutcome
    message: str  # one line for the log, the CLI and the HTTP answer
    tweet: Tweet | None = None  # the tweet posted, or the one the failure is about
    retry_after: int | None = None  # seconds; rate_limited and queue_busy only
    replayed: bool = False  # the answer of an earlier call with the same idempotency key
    rejected: list[Tweet] = field(default_factory=list)  # tweets X refused during this call


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


def prepare_claim_statements(session_factory: sessionmaker[Session], settings: Settings) -> None:
    """Run the claim's statements once, for an account no tweet has, and roll back.

    SQLAlchemy compiles a statement on its first execution in a process; doing it at start
    keeps that cost off the first posting call. Nothing matches, so nothing is changed or
    locked; a database that is not ready yet (no table) is left for /health to report.
    """
    try:
        with session_factory() as session:
            sweep_stale_posts(session, account=NO_ACCOUNT, lease_minutes=settings.POSTING_LEASE_MINUTES)
            claim_next_tweet(session, account=NO_ACCOUNT, order=settings.TWEET_ORDER)
            queued_tweet_exists(session, account=NO_ACCOUNT)
            session.rollback()
    except SQLAlchemyError as exc:
        log.info("posting statements not prepared at start (%s); the first posting call prepares them", type(exc).__name__)


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


def _record_failure(session: Session, tweet: Tweet, error: DeliveryError) -> PostResult | None:
    """Settle the tweet as X's answer implies (rejected, unconfirmed, or back in the queue), then say why."""
    kind = error.kind
    if kind is ErrorKind.text_refused:
        if _settle(session, tweet, error.message, lambda: record_rejected(session, tweet, reason=error.message)) is None:
            log.warning("X refused the text of tweet %s (now rejected): %s", tweet.id, error.message)
        return None
    if kind is ErrorKind.unknown_outcome:
        lost = _settle(session, tweet, error.message, lambda: record_unconfirmed(session, tweet, reason=error.message))
        if lost is None:
            log.error(unconfirmed_message(tweet))
        return PostResult(PostOutcome.unconfirmed, lost or unconfirmed_message(tweet), tweet)
    lost = _settle(session, tweet, error.message, lambda: release_to_queue(session, tweet, reason=error.message))
    outcome, message, retry_after = _requeued_answer(tweet, error)
    if lost is None:
        log.warning(message)
    return PostResult(outcome, lost or message, tweet, retry_after=retry_after)


def _requeued_answer(tweet: Tweet, error: DeliveryError) -> tuple[PostOutcome, str, int | None]:
    """The outcome, message and retry-after (seconds, rate limits only) for a tweet X did nothing with."""
    kind = error.kind
    back = f"tweet {tweet.id} is back in the queue"
    retry_after = None
    if kind is ErrorKind.rate_limited:
        outcome = PostOutcome.rate_limited
        if error.retry_at is None:
            retry_after, until = RETRY_AFTER_UNKNOWN_SECONDS, "X did not say until when"
        else:
            retry_after = max(1, math.ceil((error.retry_at - utcnow()).total_seconds()))
            until = f"until {error.retry_at.isoformat(timespec='seconds')}"
        message = f"X's rate limit is reached ({until}); {back}"
    elif kind is ErrorKind.credentials and error.status_code == 401:
        outcome = PostOutcome.x_credentials
        message = (
            "X rejected the credentials: check ACCESS_KEY, ACCESS_SECRET, CONSUMER_KEY and CONSUMER_SECRET "
            f"({error.message}); {back}"
        )
    elif kind is ErrorKind.credentials:
        outcome = PostOutcome.x_credentials
        message = (
            "X refused the account or app permission to post: give the app Read and Write permission in the "
            f"developer portal, then regenerate ACCESS_KEY and ACCESS_SECRET ({error.message}); {back}"
        )
    elif kind is ErrorKind.not_sent:
        outcome = PostOutcome.x_failed
        message = f"could not reach X ({error.message}); {back}"
    elif kind is ErrorKind.server_error:
        outcome = PostOutcome.x_failed
        message = f"X failed ({error.message}); {back}"
    else:
        outcome = PostOutcome.x_failed
        message = f"X refused the request ({error.message}): check TWITTER_API_BASE_URL; {back}"
    return outcome, message, retry_after
