"""Posting the next curated tweet to each of its bot's destinations exactly once: claim it, post it
to every destination that does not have it yet, record what each network said.

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
- A tweet becomes `posted` only once every destination accepted it (or refused its text for
  good while another took it). Each destination's state is its own Delivery row, settled under
  the same lock and claim check: a destination that already has the tweet is never posted to
  again, and one whose network failed or rate-limited is tried again by a later run (the tweet
  goes back to the queue, and is claimed before tweets no destination has yet).
- When a network's answer is lost (timeout, dropped connection) or the process dies mid-post,
  the delivery and the tweet become `unconfirmed` and are never re-posted automatically: an
  operator checks and sets it to posted or queued. Except where the delivery's key makes a
  repeat harmless (Bluesky's record key always, Mastodon's Idempotency-Key within the hour it is
  kept): there the delivery stays queued with its key, and the next run's post finds the first;
  a run that comes after that hour makes the delivery unconfirmed instead of posting.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

import tweepy
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.config import BotSettings, Settings
from core.delivery import DeliveryError, DeliveryFailed, Destination, ErrorKind, RemotePost
from db.models import Delivery, DeliveryStatus, Tweet, TweetStatus, utcnow
from db.post_queue import (
    claim_next_tweet,
    ensure_deliveries,
    find_by_idempotency_key,
    found_queue_empty,
    lock_idempotency_key,
    queued_tweet_exists,
    record_delivered,
    record_delivery_failed,
    record_posted,
    record_rejected,
    record_unconfirmed,
    release_to_queue,
    remember_empty_queue_run,
    start_delivery,
    sweep_stale_posts,
)
from posting.destinations import (
    NETWORK_NAMES,
    address_variable,
    bot_variables,
    dry_run_variable,
    make_destinations,
    missing_configuration,
    text_problem,
    unconfirmed_note,
)
from posting.outcomes import PostOutcome

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY_LENGTH = 200  # the column's size
RETRY_AFTER_UNKNOWN_SECONDS = 60  # when a 429 carries no reset time
QUEUE_BUSY_RETRY_SECONDS = 5  # a curator's change holds the queued tweets for milliseconds
QUEUE_EMPTY_MESSAGE = "No more tweets left"  # the original's answer
NO_ACCOUNT = ""  # no tweet has it: bot names are 1-15 characters (core.config)
# Which failure speaks for a run when several destinations failed: the one that needs most.
FAILURE_RANK = {PostOutcome.x_credentials: 0, PostOutcome.rate_limited: 1, PostOutcome.x_failed: 2}


@dataclass
class PostResult:
    outcome: PostOutcome
    message: str  # one line for the log, the CLI and the HTTP answer
    tweet: Tweet | None = None  # the tweet posted, or the one the failure is about
    retry_after: int | None = None  # seconds; rate_limited and queue_busy only
    replayed: bool = False  # the answer of an earlier call with the same idempotency key
    rejected: list[Tweet] = field(default_factory=list)  # tweets every destination refused during this call


def posted_message(tweet: Tweet) -> str:
    """What a posted tweet's answer says: X's link as always, and where else it went."""
    deliveries = [d for d in tweet.deliveries if d.destination != "x"]
    elsewhere = "".join(f"; {_delivery_line(d)}" for d in deliveries)
    if tweet.dry_run and not any(d.status is DeliveryStatus.posted and not d.dry_run for d in tweet.deliveries):
        return f"Dry run: tweet {tweet.id} recorded as posted; nothing was sent to X{elsewhere}"
    if tweet.x_url is not None:
        return f"New tweet posted @ {tweet.x_url}{elsewhere}"
    x = next((d for d in tweet.deliveries if d.destination == "x"), None)
    if x is None and deliveries:
        return f"Tweet {tweet.id} posted: " + "; ".join(_delivery_line(d) for d in deliveries)
    # X's own line unless it is posted with neither a link nor a dry run: an operator confirmed it.
    if x is not None and (x.status is not DeliveryStatus.posted or x.dry_run or x.url is not None):
        return f"Tweet {tweet.id} posted; {_delivery_line(x)}{elsewhere}"
    return f"Tweet {tweet.id} was posted (confirmed by an operator; X's id was not recorded){elsewhere}"


def _delivery_line(delivery: Delivery) -> str:
    name = NETWORK_NAMES.get(delivery.destination, delivery.destination)
    if delivery.status is DeliveryStatus.posted:
        if delivery.dry_run:
            return f"{name}: dry run, nothing sent"
        return f"{name} @ {delivery.url}" if delivery.url else f"{name}: posted"
    return f"{name}: {delivery.status.value} ({delivery.error})"


def unconfirmed_message(tweet: Tweet) -> str:
    return f"tweet {tweet.id} is unconfirmed: {tweet.error}"


def log_posting_configuration(settings: Settings) -> None:
    """Say once, at start, how posting will behave for each bot."""
    for bot in settings.bots.values():
        label = f"bot {bot.name}: " if len(settings.bots) > 1 else ""
        problem = missing_configuration(bot)
        if problem:
            log.warning("%s%s; posting calls will answer 503", label, problem)
        for network in bot.destinations:
            if bot.dry_run(network):
                log.info("%s%s is on: posts are recorded as dry runs and never sent to %s",
                         label, dry_run_variable(bot, network), NETWORK_NAMES[network])


def post_next(
    *,
    session_factory: sessionmaker[Session],
    settings: Settings,
    bot: str | None = None,
    idempotency_key: str | None = None,
    x_client: tweepy.Client | None = None,
    destinations: Mapping[str, Destination] | None = None,
) -> PostResult:
    """Post the next queued tweet of a bot to each of its destinations (or record dry runs).

    Parameters
    ----------
    session_factory
        Makes the sessions of the claim and result transactions.
    settings
        The bots (settings.bots), POSTING_LEASE_MINUTES, MAX_REJECTED_PER_CALL and the networks'
        addresses and timeouts (used when no client is given).
    bot
        The bot's name; None: settings.default_bot. Raises core.config.UnknownBot for another name.
    idempotency_key
        The same key on a later call answers with this call's result and posts nothing.
    x_client, destinations
        Clients to post with instead of the ones the settings make (tests): a tweepy Client for
        X, or a Destination per network.

    Never sleeps and never retries a post; every failure is a `PostResult`. A database
    error while recording a post a network accepted is logged with its id and re-raised (the
    tweet stays `posting` and the next call's sweep makes it `unconfirmed`).
    """
    bot_settings = settings.bot(bot)
    if idempotency_key is not None:
        idempotency_key = idempotency_key.strip() or None
    if idempotency_key is not None and len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(f"idempotency key is longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    problem = missing_configuration(bot_settings)
    if problem:
        return PostResult(PostOutcome.not_configured, problem)

    # Before claiming: a failure here leaves the queue as it was.
    clients = dict(destinations or make_destinations(bot_settings, settings, session_factory, x_client=x_client))
    with session_factory() as session:
        result = _post_next_tweet(session, settings, bot_settings, clients, idempotency_key)
        for tweet in [result.tweet, *result.rejected]:
            if tweet is not None:
                tweet.deliveries  # noqa: B018 (loaded while the session is open: callers read them after)
        return result


def _post_next_tweet(
    session: Session, settings: Settings, bot: BotSettings, clients: Mapping[str, Destination], key: str | None
) -> PostResult:
    """Claim and deliver tweets until one is posted or fails, or MAX_REJECTED_PER_CALL were refused."""
    rejected: list[Tweet] = []
    for _attempt in range(settings.MAX_REJECTED_PER_CALL):
        claim = _claim(session, settings, bot, key)
        if isinstance(claim, PostResult):
            claim.rejected = rejected
            return claim
        result = _deliver(session, bot, clients, claim, key)
        if result is not None:
            result.rejected = rejected
            return result
        rejected.append(claim)  # every destination refused the text; the loop claims the next one
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
            sweep_stale_posts(session, account=NO_ACCOUNT, lease_minutes=settings.POSTING_LEASE_MINUTES,
                              unconfirmed_note=partial(unconfirmed_note, settings.default_bot))
            claim_next_tweet(session, account=NO_ACCOUNT, order=settings.default_bot.TWEET_ORDER)
            queued_tweet_exists(session, account=NO_ACCOUNT)
            session.rollback()
    except SQLAlchemyError as exc:
        log.info("posting statements not prepared at start (%s); the first posting call prepares them", type(exc).__name__)


def _claim(session: Session, settings: Settings, bot: BotSettings, key: str | None) -> Tweet | PostResult:
    """Sweep stale leases, answer for a used key, or claim the next tweet; commits."""
    account = bot.name
    if key is not None:
        lock_idempotency_key(session, account=account, key=key)
    sweep_stale_posts(session, account=account, lease_minutes=settings.POSTING_LEASE_MINUTES,
                      unconfirmed_note=partial(unconfirmed_note, bot))
    if key is not None:
        earlier = find_by_idempotency_key(session, account=account, key=key)
        if earlier is not None:
            result = _replay(earlier, key)
            session.commit()
            return result
        if found_queue_empty(session, account=account, key=key):
            session.commit()
            return PostResult(PostOutcome.queue_empty, QUEUE_EMPTY_MESSAGE, replayed=True)
    tweet = claim_next_tweet(session, account=account, order=bot.TWEET_ORDER, idempotency_key=key)
    if tweet is None and queued_tweet_exists(session, account=account):
        session.commit()
        return PostResult(
            PostOutcome.queue_busy,
            "every queued tweet is locked right now (a change on the curation page, or another posting call's "
            "claim); ask again in a few seconds",
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


class _ClaimLost(Exception):
    """The tweet was taken from this call while a network answered; `message` says what was not recorded."""

    def __init__(self, message: str, outcome: PostOutcome):
        super().__init__(message)
        self.message, self.outcome = message, outcome


def _deliver(
    session: Session, bot: BotSettings, clients: Mapping[str, Destination], tweet: Tweet, run_key: str | None
) -> PostResult | None:
    """Post a claimed tweet to each destination that lacks it, then settle the tweet; None when
    every destination refused the text (the tweet is then rejected)."""
    deliveries = ensure_deliveries(session, tweet, bot.destinations)
    session.commit()
    failures: list[tuple[Delivery, DeliveryError]] = []
    try:
        for delivery in deliveries:
            if delivery.status is DeliveryStatus.queued:
                error = _deliver_one(session, bot, clients, tweet, delivery, run_key)
                if error is not None:
                    failures.append((delivery, error))
    except _ClaimLost as lost:
        return PostResult(lost.outcome, lost.message, tweet)
    try:
        return _settle_tweet(session, bot, tweet, deliveries, failures)
    except _ClaimLost as lost:
        return PostResult(lost.outcome, lost.message, tweet)


def _deliver_one(
    session: Session, bot: BotSettings, clients: Mapping[str, Destination], tweet: Tweet, delivery: Delivery,
    run_key: str | None,
) -> DeliveryError | None:
    """Post the tweet to one destination and record the answer; the failure, if any."""
    network, name = delivery.destination, NETWORK_NAMES[delivery.destination]
    problem = text_problem(network, tweet.text, bot)
    if problem is not None:
        reason = f"not posted to {name}: {problem}"
        _settle(session, tweet, reason, PostOutcome.texts_refused,
                lambda: record_delivery_failed(session, delivery, DeliveryStatus.rejected, reason=reason), whose=name)
        return None
    if bot.dry_run(network):
        log.info("dry run: tweet %s would be posted to %s: %s", tweet.id, name, tweet.text)
        _settle(session, tweet, f"dry run on {name}", PostOutcome.posted,
                lambda: record_delivered(session, delivery, None, dry_run=True), whose=name)
        return None
    client = clients[network]
    # claimed_at is set while an earlier attempt may have landed (its answer was lost): past the time the
    # network keeps the key, posting again could make a second post.
    if delivery.claimed_at is not None and not _repeat_is_harmless(delivery, client):
        reason = (f"{name}: an earlier attempt's answer was lost, and {name} no longer recognises its key "
                  f"(attempted {delivery.claimed_at.isoformat(timespec='seconds')}): it may have the post")
        _settle(session, tweet, reason, PostOutcome.unconfirmed,
                lambda: record_delivery_failed(session, delivery, DeliveryStatus.unconfirmed, reason=reason), whose=name)
        return None
    earlier_attempt = delivery.claimed_at
    seed = f"{bot.name}/{run_key or f'tweet {tweet.id} claimed {tweet.claimed_at.isoformat()}'}/{network}"
    start_delivery(session, delivery, key=delivery.key or client.new_key(seed))
    session.commit()
    try:
        remote = client.post(tweet.text, key=delivery.key)
    except DeliveryFailed as failed:
        return _record_failure(session, bot, tweet, delivery, failed.error, client, earlier_attempt)
    except Exception as exc:  # a bug in a client: the network may have acted
        log.exception("posting tweet %s to %s failed unexpectedly", tweet.id, name)
        error = DeliveryError(ErrorKind.unknown_outcome, f"unexpected {type(exc).__name__} while posting to {name}: {exc}")
        return _record_failure(session, bot, tweet, delivery, error, client, earlier_attempt)
    _record_success(session, tweet, delivery, remote)
    return None


def _record_success(session: Session, tweet: Tweet, delivery: Delivery, remote: RemotePost) -> None:
    name = NETWORK_NAMES[delivery.destination]
    try:
        _settle(session, tweet, f"{name} posted it as {remote.url}", PostOutcome.posted,
                lambda: record_delivered(session, delivery, remote, dry_run=False), whose=name)
    except SQLAlchemyError:
        log.exception(
            "%s posted tweet %s as %s (%s) but recording it failed; it will become unconfirmed: set it to posted",
            name, tweet.id, remote.id, remote.url,
        )
        raise
    log.info("posted tweet %s as %s", tweet.id, remote.url)


def _record_failure(
    session: Session, bot: BotSettings, tweet: Tweet, delivery: Delivery, error: DeliveryError, client: Destination,
    earlier_attempt: datetime | None,
) -> DeliveryError:
    """Settle one delivery as the network's answer implies: rejected, unconfirmed, or queued again."""
    name = NETWORK_NAMES[delivery.destination]
    if error.kind is ErrorKind.text_refused:
        status, outcome = DeliveryStatus.rejected, PostOutcome.texts_refused
    elif error.kind is ErrorKind.unknown_outcome and not _repeat_is_harmless(delivery, client):
        status, outcome = DeliveryStatus.unconfirmed, PostOutcome.unconfirmed
    else:
        status, outcome = DeliveryStatus.queued, _requeued_answer(bot, tweet, delivery.destination, error)[0]
    reason = error.message if delivery.destination == "x" else f"{name}: {error.message}"
    # An attempt that made nothing (a rate limit, a refusal...) leaves the time of an earlier one that may have.
    first_attempt = delivery.claimed_at if error.kind is ErrorKind.unknown_outcome else earlier_attempt
    _settle(session, tweet, reason, outcome, lambda: record_delivery_failed(
        session, delivery, status, reason=reason, first_attempt=first_attempt), whose=name)
    # The tweet's own log line says it all for one destination, and a failure worth retrying is
    # logged with the run's answer.
    if status is not DeliveryStatus.queued and len(bot.destinations) > 1:
        log.warning("tweet %s on %s: %s (%s)", tweet.id, name, status.value, error.message)
    return error


def _repeat_is_harmless(delivery: Delivery, client: Destination) -> bool:
    """Whether posting this delivery again with its key cannot make a second post."""
    window = client.safe_retry_window
    return window is not None and delivery.claimed_at is not None and utcnow() - delivery.claimed_at < window


def _settle_tweet(
    session: Session, bot: BotSettings, tweet: Tweet, deliveries: list[Delivery],
    failures: list[tuple[Delivery, DeliveryError]],
) -> PostResult | None:
    """The tweet's own state from its deliveries'; the run's answer (None: every destination refused it)."""
    statuses = {delivery.status for delivery in deliveries}
    only = NETWORK_NAMES[deliveries[0].destination] if len(deliveries) == 1 else None  # the bot's one network
    whose = only or "the run"  # whose answer a claim lost now leaves unrecorded
    if DeliveryStatus.unconfirmed in statuses:
        unconfirmed = [d for d in deliveries if d.status is DeliveryStatus.unconfirmed]
        reason = "; ".join(d.error for d in unconfirmed)
        note = unconfirmed_note(bot, [d.destination for d in unconfirmed])
        _settle(session, tweet, reason, PostOutcome.unconfirmed,
                lambda: record_unconfirmed(session, tweet, reason=reason, note=note), whose=whose)
        log.error(unconfirmed_message(tweet))
        return PostResult(PostOutcome.unconfirmed, unconfirmed_message(tweet), tweet)
    if statuses <= {DeliveryStatus.posted, DeliveryStatus.rejected}:
        if DeliveryStatus.posted not in statuses:
            reason = "; ".join(d.error for d in deliveries)
            _settle(session, tweet, reason, PostOutcome.texts_refused,
                    lambda: record_rejected(session, tweet, reason=reason), whose=whose)
            log.warning("%s refused the text of tweet %s (now rejected): %s", only or "every destination", tweet.id, reason)
            return None
        x = next((d for d in deliveries if d.destination == "x" and d.status is DeliveryStatus.posted), None)
        dry_run = all(d.dry_run for d in deliveries if d.status is DeliveryStatus.posted)
        _settle(session, tweet, "posted", PostOutcome.posted, lambda: record_posted(
            session, tweet, x_tweet_id=x.remote_id if x is not None else None, dry_run=dry_run), whose=whose)
        return PostResult(PostOutcome.posted, posted_message(tweet), tweet)
    # Some destination failed in a way worth retrying: the tweet waits in the queue for it.
    answers = [_requeued_answer(bot, tweet, delivery.destination, error) for delivery, error in failures
               if delivery.status is DeliveryStatus.queued]
    outcome, message, retry_after = min(answers, key=lambda answer: FAILURE_RANK[answer[0]])
    reason = "; ".join(d.error for d in deliveries if d.status is DeliveryStatus.queued and d.error)
    _settle(session, tweet, reason, outcome, lambda: release_to_queue(session, tweet, reason=reason), whose=whose)
    if any(d.status is DeliveryStatus.posted for d in deliveries):
        message = f"{message} ({posted_message(tweet)}; the next run posts it where it is missing)"
    log.warning(message)
    return PostResult(outcome, message, tweet, retry_after=retry_after)


def _settle(
    session: Session, tweet: Tweet, answer: str, outcome: PostOutcome, record: Callable[[], None], *, whose: str
) -> None:
    """Lock the claimed tweet's row and `record` an answer (`whose`: a network's, or the run's), unless
    the claim has since been taken from this call; commits. Raises _ClaimLost (logged) when it was.

    A call slower than POSTING_LEASE_MINUTES finds its tweet swept to `unconfirmed`: the answer
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
        return
    session.commit()
    now = "deleted" if current is None else current.status.value
    lost = f"tweet {tweet.id} changed after its posting lease ended (it is now {now}): {whose}'s answer is not recorded: {answer}"
    log.error(lost)
    raise _ClaimLost(lost, outcome)


def _requeued_answer(
    bot: BotSettings, tweet: Tweet, network: str, error: DeliveryError
) -> tuple[PostOutcome, str, int | None]:
    """The outcome, message and retry-after (seconds, rate limits only) for a delivery the network did
    nothing with (the bot's settings name the variables to check)."""
    kind, name = error.kind, NETWORK_NAMES[network]
    back = f"tweet {tweet.id} is back in the queue"
    retry_after = None
    if kind is ErrorKind.rate_limited:
        outcome = PostOutcome.rate_limited
        if error.retry_at is None:
            retry_after, until = RETRY_AFTER_UNKNOWN_SECONDS, f"{name} did not say until when"
        else:
            retry_after = max(1, math.ceil((error.retry_at - utcnow()).total_seconds()))
            until = f"until {error.retry_at.isoformat(timespec='seconds')}"
        message = f"{name}'s rate limit is reached ({until}); {back}"
    elif kind is ErrorKind.credentials and network != "x":
        outcome = PostOutcome.x_credentials
        message = f"{name} refused the bot's credentials ({error.message}); {back}"
    elif kind is ErrorKind.credentials and error.status_code == 401:
        outcome = PostOutcome.x_credentials
        keys = bot_variables(bot, "ACCESS_KEY", "ACCESS_SECRET", "CONSUMER_KEY", "CONSUMER_SECRET")
        message = f"X rejected the credentials: check {keys} ({error.message}); {back}"
    elif kind is ErrorKind.credentials:
        outcome = PostOutcome.x_credentials
        message = (
            "X refused the account or app permission to post: give the app Read and Write permission in the "
            f"developer portal, then regenerate {bot_variables(bot, 'ACCESS_KEY', 'ACCESS_SECRET')} "
            f"({error.message}); {back}"
        )
    elif kind is ErrorKind.not_sent:
        outcome = PostOutcome.x_failed
        message = f"could not reach {name} ({error.message}); {back}"
    elif kind in (ErrorKind.server_error, ErrorKind.unknown_outcome):
        outcome = PostOutcome.x_failed
        message = f"{name} failed ({error.message}); {back}"
    else:
        outcome = PostOutcome.x_failed
        message = f"{name} refused the request ({error.message}): check {address_variable(bot, network)}; {back}"
    return outcome, message, retry_after
