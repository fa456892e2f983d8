"""Curating the store: adding, editing, approving, rejecting and deleting tweets.

Plain functions on a Session; routes and the curation page call them, and map the exceptions
below to HTTP answers through one table (api/request_errors.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.tweet_text import CuratedFileError, TweetRejected, clean_text, content_hash, parse_curated_file, x_text_problem
from db import queries
from db.models import Tweet, TweetStatus
from db.post_queue import record_confirmed, requeue_deliveries

# Which statuses a curator may move a tweet to, from which. `posting` is only ever set by
# the posting code; `posted` only by it, or by an operator confirming an unconfirmed tweet.
ALLOWED_TRANSITIONS: dict[TweetStatus, set[TweetStatus]] = {
    TweetStatus.queued: {TweetStatus.pending, TweetStatus.queued, TweetStatus.rejected,
                         TweetStatus.failed, TweetStatus.unconfirmed},
    TweetStatus.pending: {TweetStatus.pending, TweetStatus.queued, TweetStatus.rejected},
    TweetStatus.rejected: {TweetStatus.pending, TweetStatus.queued, TweetStatus.failed,
                           TweetStatus.unconfirmed, TweetStatus.rejected},
    TweetStatus.posted: {TweetStatus.unconfirmed},
}
EDITABLE = {TweetStatus.pending, TweetStatus.queued, TweetStatus.rejected, TweetStatus.failed}
DUPLICATE_TEXT = "another tweet of this account already has this text"


TextRule = Callable[[str], str | None]


def valid_text(raw: str, rule: TextRule) -> str:
    """The cleaned text, or TweetRejected saying why it cannot be stored."""
    text = clean_text(raw)
    problem = rule(text)
    if problem is not None:
        raise TweetRejected(problem)
    return text


class TweetNotFound(LookupError):
    pass


class TweetConflict(Exception):
    """The change clashes with the tweet's state or another tweet; str(exc) says how."""


class UploadTooLarge(ValueError):
    """The uploaded file is over MAX_UPLOAD_BYTES; str(exc) says what to do."""


class NoValidTweet(ValueError):
    """Every text of the file was rejected; nothing was stored; str(exc) gives the first reasons."""


@dataclass
class IngestResult:
    added: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def ingest_texts(
    session: Session, *, account: str, texts: list[str], status: TweetStatus, rule: TextRule = x_text_problem
) -> IngestResult:
    """Validate, de-duplicate and insert texts in the caller's transaction.

    `rule` says why a cleaned text cannot be posted (None when it can): X's by default, the bot's
    destinations' (posting.destinations.text_rule) for a bot that posts elsewhere too.

    Rejections carry the text's number counting from 1. Duplicates (within `texts` or
    already stored for the account) are skipped and counted. All the validation and hashing
    runs before the session's first statement: on SQLite that statement takes the write lock
    (db/engine.py), which must not wait on CPU work while the bot needs to post.
    """
    result, fresh = _validated(texts, rule)
    if not fresh:
        return result
    stored = queries.existing_hashes(session, account)
    new = [(text, digest) for text, digest in fresh if digest not in stored]
    result.duplicates += len(fresh) - len(new)
    try:
        result.added = queries.insert_tweets(session, account=account, texts_and_hashes=new, status=status)
        session.flush()
    except IntegrityError:
        session.rollback()
        raise TweetConflict(
            "another request stored some of these tweets at the same moment; "
            "send the file again (tweets already stored are skipped as duplicates)"
        ) from None
    return result


def store_curated_file(
    session: Session, *, account: str, data: bytes, filename: str, status: TweetStatus, max_bytes: int,
    rule: TextRule = x_text_problem,
) -> IngestResult:
    """Parse, validate and store a whole file in one transaction, committed; or raise UploadTooLarge,
    CuratedFileError, TweetConflict or NoValidTweet with nothing stored. `data` is read up to
    max_bytes + 1, so that a file over the limit is told apart from one exactly at it."""
    if len(data) > max_bytes:
        raise UploadTooLarge(
            f"file is over the {max_bytes:,}-byte limit (MAX_UPLOAD_BYTES): split it and upload the parts"
        )
    texts = parse_curated_file(data, filename)
    if not texts:
        raise CuratedFileError("file holds no tweets: samples must be separated by a line of 20 '='")
    result = ingest_texts(session, account=account, texts=texts, status=status, rule=rule)
    if result.added == 0 and result.duplicates == 0:
        session.rollback()
        reasons = "; ".join(f"#{n}: {reason}" for n, reason in result.rejected[:3])
        raise NoValidTweet(f"file holds no valid tweet ({len(result.rejected)} rejected: {reasons}); nothing was stored")
    session.commit()
    return result


def _validated(texts: list[str], rule: TextRule) -> tuple[IngestResult, list[tuple[str, str]]]:
    """The rejections and in-file duplicates of `texts`, and the other texts with their hashes."""
    result = IngestResult()
    seen: set[str] = set()
    fresh: list[tuple[str, str]] = []
    for number, raw in enumerate(texts, start=1):
        try:
            text = valid_text(raw, rule)
        except TweetRejected as exc:
            result.rejected.append((number, str(exc)))
            continue
        digest = content_hash(text)
        if digest in seen:
            result.duplicates += 1
            continue
        seen.add(digest)
        fresh.append((text, digest))
    return result, fresh


def get_tweet(session: Session, tweet_id: int, *, account: str | None = None, for_update: bool = False) -> Tweet:
    """The tweet, or TweetNotFound (also when it belongs to another account than `account`).

    for_update: read its current row and lock it until the transaction ends (SELECT ... FOR
    UPDATE on Postgres; on SQLite, BEGIN IMMEDIATE already holds the whole database), so that a
    check on its status still holds when the change is written. Every caller that changes the
    tweet passes True: a posting claim (FOR UPDATE SKIP LOCKED) then either came first (the
    check sees `posting`) or skips the locked row and claims the next tweet.
    """
    tweet = session.get(Tweet, tweet_id, with_for_update=for_update or None, populate_existing=for_update)
    if tweet is None or (account is not None and tweet.account != account):
        raise TweetNotFound(f"no tweet with id {tweet_id}")
    return tweet


def update_tweet(
    session: Session,
    tweet: Tweet,
    *,
    text: str | None = None,
    status: TweetStatus | None = None,
    position: int | None = None,
    error: str | None = None,
    x_tweet_id: str | None = None,
    rule: TextRule = x_text_problem,
) -> Tweet:
    """Apply a curator's change to a tweet loaded with get_tweet(..., for_update=True); raises
    TweetRejected (bad text) or TweetConflict.

    Setting an unconfirmed tweet to posted (the operator found it on X) records it as posted
    at the time its posting call claimed it, with X's id and URL when `x_tweet_id` is given.
    """
    if x_tweet_id is not None and not (status is TweetStatus.posted and tweet.status is TweetStatus.unconfirmed):
        raise TweetConflict("x_tweet_id is only recorded when setting an unconfirmed tweet to posted")
    if text is not None:
        if tweet.status not in EDITABLE:
            raise TweetConflict(f"a {tweet.status.value} tweet cannot be edited")
        text = valid_text(text, rule)
        digest = content_hash(text)
        if digest != tweet.content_hash and digest in queries.existing_hashes(session, tweet.account):
            raise TweetConflict(DUPLICATE_TEXT)
        tweet.text, tweet.content_hash = text, digest
    if status is not None and status != tweet.status:
        allowed_from = ALLOWED_TRANSITIONS.get(status, set())
        if tweet.status not in allowed_from:
            raise TweetConflict(f"cannot change a {tweet.status.value} tweet to {status.value}")
        if status is TweetStatus.queued:
            tweet.error = None
            tweet.idempotency_key = None
            requeue_deliveries(session, tweet)
        if status is TweetStatus.posted:
            record_confirmed(session, tweet, x_tweet_id=x_tweet_id)
        tweet.status = status
    if position is not None:
        tweet.position = position
    if error is not None:
        tweet.error = error
    try:
        session.flush()
    except IntegrityError:  # another transaction stored the same text after the check above
        raise TweetConflict(DUPLICATE_TEXT) from None
    return tweet


def delete_tweet(session: Session, tweet: Tweet) -> None:
    """Delete a tweet loaded with get_tweet(..., for_update=True), unless it is being posted."""
    if tweet.status is TweetStatus.posting:
        raise TweetConflict("this tweet is being posted right now; try again in a minute")
    session.delete(tweet)
    session.flush()
