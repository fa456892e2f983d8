"""What the curation page shows and does: the review list, the queue, the history and their actions.

Plain functions on a Session for one bot (its account); api/curate/routes.py is the HTTP shell. Every
status change goes through `db.store.update_tweet` (the one place for transitions), on a
tweet loaded with its row locked (see `db.store.get_tweet`); the caller commits.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from core.config import BotSettings, TweetOrder
from core.x_client import X_POST_ID, X_POST_ID_PATTERN
from db import queries
from db import store
from db.models import DeliveryStatus, Tweet, TweetStatus
from posting.destinations import NETWORK_NAMES, text_count, text_problem

REVIEW_PAGE_SIZE = 100
QUEUE_PAGE_SIZE = 200
HISTORY_PAGE_SIZE = 100
CURATOR_REJECTION = "rejected by the curator"
PROBLEM_STATUSES = (TweetStatus.unconfirmed, TweetStatus.failed, TweetStatus.rejected)
REQUEUEABLE = set(PROBLEM_STATUSES)


class Move(str, Enum):
    top = "top"
    up = "up"
    down = "down"
    bottom = "bottom"


@dataclass
class Listing:
    tweets: list[Tweet]
    total: int


@dataclass
class QueueView(Listing):
    order: TweetOrder = TweetOrder.random
    warning_threshold: int = 0

    @property
    def running_low(self) -> bool:
        return self.total < self.warning_threshold


@dataclass
class History:
    posted: Listing
    problems: Listing


@dataclass(frozen=True)
class DestinationState:
    """A tweet on one of its bot's destinations, as the page shows it."""

    network: str
    name: str  # the network's name as people write it (Bluesky)
    status: DeliveryStatus | None  # None: no run has tried this destination yet
    link: str | None = None  # the post, only when its URL is http(s)
    dry_run: bool = False
    error: str | None = None


@dataclass(frozen=True)
class TextProblem:
    """Why a candidate's text cannot be posted to one destination of its bot."""

    network: str
    name: str
    problem: str


@dataclass(frozen=True)
class TextCount:
    """A candidate's text as one destination of its bot counts it, against that destination's limit."""

    network: str
    name: str
    length: int
    limit: int


@dataclass
class TextCheck:
    problems: list[TextProblem] = field(default_factory=list)
    valid_for: list[str] = field(default_factory=list)  # the networks' names


@dataclass
class BulkResult:
    """Which tweets an action changed, and why it left the others alone."""

    changed: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)


def _listing(session: Session, account: str, statuses: Iterable[TweetStatus], order_by, limit: int) -> Listing:
    return Listing(*queries.page_by_status(session, account, list(statuses), order_by=order_by, limit=limit))


def status_counts(session: Session, account: str) -> dict[TweetStatus, int]:
    return queries.count_by_status(session, account)


def pending(session: Session, account: str, *, limit: int = REVIEW_PAGE_SIZE) -> Listing:
    """Candidates waiting for review, in upload order."""
    return _listing(session, account, [TweetStatus.pending], (Tweet.position, Tweet.id), limit)


def queue(session: Session, bot: BotSettings, warning_threshold: int, *, limit: int = QUEUE_PAGE_SIZE) -> QueueView:
    """The bot's approved tweets: in posting order for TWEET_ORDER=oldest, the pool (by id) for random."""
    ordering = (Tweet.position, Tweet.id) if bot.TWEET_ORDER is TweetOrder.oldest else (Tweet.id,)
    listing = _listing(session, bot.name, [TweetStatus.queued], ordering, limit)
    return QueueView(listing.tweets, listing.total, bot.TWEET_ORDER, warning_threshold)


def history(session: Session, account: str, *, limit: int = HISTORY_PAGE_SIZE) -> History:
    """Posted tweets (newest first), and the unconfirmed, failed and rejected ones (latest first)."""
    posted = _listing(session, account, [TweetStatus.posted], (Tweet.posted_at.desc().nulls_last(), Tweet.id.desc()), limit)
    problems = _listing(session, account, PROBLEM_STATUSES, (Tweet.updated_at.desc(), Tweet.id.desc()), limit)
    return History(posted, problems)


def web_link(url: str | None) -> str | None:
    """`url` when it is an http(s) address with a host: the only links the page makes from stored text."""
    if not url:
        return None
    parts = urlsplit(url)
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def destination_states(tweet: Tweet, bot: BotSettings) -> list[DestinationState]:
    """Where the tweet is on each of the bot's destinations (then on any other it was delivered to).

    Read from `tweet.deliveries` (load them with the listing: see db.queries.page_by_status). A
    tweet posted before deliveries were recorded has no X delivery: its own X record stands for it.
    """
    deliveries = {delivery.destination: delivery for delivery in tweet.deliveries}
    networks = [*bot.destinations, *(network for network in deliveries if network not in bot.destinations)]
    states = []
    for network in networks:
        name = NETWORK_NAMES.get(network, network)
        delivery = deliveries.get(network)
        if delivery is not None:
            states.append(DestinationState(
                network, name, delivery.status, web_link(delivery.url), delivery.dry_run, delivery.error))
        elif network == "x" and tweet.status is TweetStatus.posted:
            states.append(DestinationState(network, name, DeliveryStatus.posted, web_link(tweet.x_url), tweet.dry_run))
        else:
            states.append(DestinationState(network, name, None))
    return states


def unsure_destinations(tweet: Tweet, bot: BotSettings) -> list[DestinationState]:
    """Where an unconfirmed tweet may or may not be: its unconfirmed deliveries; when it has none (its
    call stopped before posting anywhere, or it is from before deliveries were recorded), every
    destination that does not have it."""
    states = destination_states(tweet, bot)
    unsure = [state for state in states if state.status is DeliveryStatus.unconfirmed]
    return unsure or [state for state in states if state.status is not DeliveryStatus.posted]


def text_check(text: str, bot: BotSettings) -> TextCheck:
    """Each of the bot's destinations' rule on a candidate: a run posts it only where it is valid
    (and rejects it when it is valid nowhere)."""
    check = TextCheck()
    for network in bot.destinations:
        problem = text_problem(network, text, bot)
        if problem is None:
            check.valid_for.append(NETWORK_NAMES[network])
        else:
            check.problems.append(TextProblem(network, NETWORK_NAMES[network], problem))
    return check


def text_counts(text: str, bot: BotSettings) -> list[TextCount]:
    """Each of the bot's destinations' count of a candidate (what the live counter starts from)."""
    return [TextCount(network, NETWORK_NAMES[network], *text_count(network, text, bot)) for network in bot.destinations]


def _pending_tweets(session: Session, account: str, ids: Iterable[int], result: BulkResult) -> list[Tweet]:
    found = []
    for tweet_id in sorted(set(ids)):  # rows locked in one order: two bulk actions cannot deadlock
        try:
            tweet = store.get_tweet(session, tweet_id, account=account, for_update=True)
        except store.TweetNotFound as exc:
            result.skipped.append((tweet_id, str(exc)))
            continue
        if tweet.status is not TweetStatus.pending:
            result.skipped.append((tweet_id, f"tweet {tweet_id} is {tweet.status.value}, no longer pending"))
            continue
        found.append(tweet)
    return found


def approve(session: Session, account: str, ids: Iterable[int]) -> BulkResult:
    """Queue the given pending tweets; others are skipped with the reason."""
    result = BulkResult()
    for tweet in _pending_tweets(session, account, ids, result):
        store.update_tweet(session, tweet, status=TweetStatus.queued)
        result.changed.append(tweet.id)
    return result


def reject(session: Session, account: str, ids: Iterable[int], *, reason: str = CURATOR_REJECTION) -> BulkResult:
    """Reject the given pending tweets (they stay in the history, and can be requeued)."""
    result = BulkResult()
    for tweet in _pending_tweets(session, account, ids, result):
        store.update_tweet(session, tweet, status=TweetStatus.rejected, error=reason)
        result.changed.append(tweet.id)
    return result


def edit_and_approve(session: Session, account: str, tweet_id: int, text: str, rule: store.TextRule) -> Tweet:
    """Replace a pending tweet's text and queue it.

    Raises TweetNotFound, TweetRejected (the text breaks `rule`, the bot's: posting.destinations.text_rule)
    or TweetConflict (not pending any more, or another tweet has this text); nothing changes then.
    """
    tweet = store.get_tweet(session, tweet_id, account=account, for_update=True)
    if tweet.status is not TweetStatus.pending:
        raise store.TweetConflict(f"tweet {tweet_id} is {tweet.status.value}, no longer pending: reload the page")
    return store.update_tweet(session, tweet, text=text, status=TweetStatus.queued, rule=rule)


def requeue(session: Session, account: str, tweet_id: int) -> Tweet:
    """Put an unconfirmed, failed or rejected tweet back in the queue (its old reason is cleared)."""
    tweet = store.get_tweet(session, tweet_id, account=account, for_update=True)
    if tweet.status not in REQUEUEABLE:
        raise store.TweetConflict(f"tweet {tweet_id} is {tweet.status.value}; only unconfirmed, failed or rejected tweets can be requeued")
    return store.update_tweet(session, tweet, status=TweetStatus.queued)


class BadXLink(ValueError):
    """What the operator gave is neither a link to a post on X nor a post's id; str(exc) says so."""


# A post's link as X and Twitter show it (any handle: X redirects by id).
X_POST_LINK = re.compile(
    r"https?://(?:www\.|mobile\.)?(?:x|twitter)\.com/[A-Za-z0-9_]{1,15}/status(?:es)?/(" + X_POST_ID_PATTERN + r")(?:[/?#].*)?",
    re.IGNORECASE,
)


def x_post_id(link: str) -> str | None:
    """The post id in an X link or a bare id; None when empty. Raises BadXLink otherwise."""
    link = link.strip()
    if not link:
        return None
    if X_POST_ID.fullmatch(link):
        return link
    match = X_POST_LINK.fullmatch(link)
    if match is None:
        raise BadXLink(f"{link[:100]!r} is not a link to a post on X (https://x.com/<account>/status/<id>) or a post's id")
    return match.group(1)


def confirm_posted(session: Session, account: str, tweet_id: int, x_link: str = "") -> Tweet:
    """The operator found an unconfirmed tweet on X: record it as posted, with the post's link if given.

    Raises BadXLink, TweetNotFound, or TweetConflict (the tweet is not unconfirmed).
    """
    x_tweet_id = x_post_id(x_link)
    tweet = store.get_tweet(session, tweet_id, account=account, for_update=True)
    if tweet.status is not TweetStatus.unconfirmed:
        raise store.TweetConflict(f"tweet {tweet_id} is {tweet.status.value}; only unconfirmed tweets can be marked posted")
    return store.update_tweet(session, tweet, status=TweetStatus.posted, x_tweet_id=x_tweet_id)


def unqueue(session: Session, account: str, tweet_id: int) -> Tweet:
    """Take a queued tweet out of the queue, back to the review list (nothing is lost)."""
    tweet = store.get_tweet(session, tweet_id, account=account, for_update=True)
    if tweet.status is not TweetStatus.queued:
        raise store.TweetConflict(f"tweet {tweet_id} is {tweet.status.value}, not in the queue: reload the page")
    return store.update_tweet(session, tweet, status=TweetStatus.pending)


def move_in_queue(session: Session, account: str, tweet_id: int, move: Move) -> Tweet:
    """Change a queued tweet's place in the posting order (TWEET_ORDER=oldest) through its position.

    Up and down swap positions with the neighbour; ties (equal positions, ordered by id) are
    first spread apart so that the swap changes the order. The whole queue is locked first, in id
    order, because a move also writes its neighbours: two moves that each locked their own tweet
    first would wait for each other's.
    """
    queries.lock_queue(session, account)
    tweet = store.get_tweet(session, tweet_id, account=account, for_update=True)
    if tweet.status is not TweetStatus.queued:
        raise store.TweetConflict(f"tweet {tweet_id} is {tweet.status.value}, not in the queue: reload the page")
    line = queries.queue_line(session, account)
    index = line.index(tweet)
    if move is Move.top and index > 0:
        store.update_tweet(session, tweet, position=line[0].position - 1)
    elif move is Move.bottom and index < len(line) - 1:
        store.update_tweet(session, tweet, position=line[-1].position + 1)
    elif move in (Move.up, Move.down):
        other = index - 1 if move is Move.up else index + 1
        if 0 <= other < len(line):
            _spread_ties(session, line)
            mine, theirs = tweet.position, line[other].position
            store.update_tweet(session, tweet, position=theirs)
            store.update_tweet(session, line[other], position=mine)
    return tweet


def _spread_ties(session: Session, line: list[Tweet]) -> None:
    """Make positions strictly increasing along the line, changing as few as possible."""
    previous = None
    for tweet in line:
        if previous is not None and tweet.position <= previous:
            store.update_tweet(session, tweet, position=previous + 1)
        previous = tweet.position
