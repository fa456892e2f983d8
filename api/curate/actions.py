"""What the curation page shows and does: the review list, the queue, the history and their actions.

Plain functions on a Session for one account; api/curate/routes.py is the HTTP shell. Every
status change goes through `db.store.update_tweet` (the one place for transitions), on a
tweet loaded with its row locked (see `db.store.get_tweet`); the caller commits.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from sqlalchemy.orm import Session

from core.config import Settings, TweetOrder
from core.x_client import X_POST_ID, X_POST_ID_PATTERN
from db import queries
from db import store
from db.models import Tweet, TweetStatus

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


def queue(session: Session, settings: Settings, *, limit: int = QUEUE_PAGE_SIZE) -> QueueView:
    """Approved tweets: in posting order for TWEET_ORDER=oldest, the pool (by id) for random."""
    ordering = (Tweet.position, Tweet.id) if settings.TWEET_ORDER is TweetOrder.oldest else (Tweet.id,)
    listing = _listing(session, settings.ACCOUNT, [TweetStatus.queued], ordering, limit)
    return QueueView(listing.tweets, listing.total, settings.TWEET_ORDER, settings.QUEUE_WARNING_THRESHOLD)


def history(session: Session, account: str, *, limit: int = HISTORY_PAGE_SIZE) -> History:
    """Posted tweets (newest first), and the unconfirmed, failed and rejected ones (latest first)."""
    posted = _listing(session, account, [TweetStatus.posted], (Tweet.posted_at.desc().nulls_last(), Tweet.id.desc()), limit)
    problems = _listing(session, account, PROBLEM_STATUSES, (Tweet.updated_at.desc(), Tweet.id.desc()), limit)
    return History(posted, problems)


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


def edit_and_approve(session: Session, account: str, tweet_id: int, text: str) -> Tweet:
    """Replace a pending tweet's text and queue it.

    Raises TweetNotFound, TweetRejected (the text breaks the tweet rule) or TweetConflict
    (not pending any more, or another tweet has this text); nothing changes then.
    """
    tweet = store.get_tweet(session, tweet_id, account=account, for_update=True)
    if tweet.status is not TweetStatus.pending:
        raise store.TweetConflict(f"tweet {tweet_id} is {tweet.status.value}, no longer pending: reload the page")
    return store.update_tweet(session, tweet, text=text, status=TweetStatus.queued)


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
