"""The lock on an idempotency key (db.post_queue.lock_idempotency_key) serialises the claims of
posting calls that share a bot and a key, and of those only: a call with another key, or another
bot's call with the same key, never waits for a claim in progress. On Postgres through psycopg2
and pg8000; SQLite serialises every transaction (BEGIN IMMEDIATE), so there is nothing to show.

The first call is held inside its claim transaction right after it took its key's lock; the
second call runs meanwhile, until it either finishes or Postgres shows it waiting on the first.
"""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select, text

from core.config import Settings
from db import store
from db.models import Tweet, TweetStatus
from posting import job
from posting.job import PostResult, post_next
from posting.outcomes import PostOutcome
from tests import test_edit_races
from tests.conftest import TOKEN
from tests.test_edit_races import WAIT_SECONDS, blocked_by

backend = test_edit_races.backend  # the fixture: Postgres only
KEY = "2026-11-22T10:00:00Z"


@pytest.fixture
def settings(monkeypatch) -> Settings:
    """Two bots, alice and bob, posting their oldest tweet first, to X as dry runs."""
    monkeypatch.setenv("BOTS", "alice,bob")
    for bot in ("ALICE", "BOB"):
        monkeypatch.setenv(f"BOT_{bot}_TWITTER_DRY_RUN", "true")
        monkeypatch.setenv(f"BOT_{bot}_TWEET_ORDER", "oldest")
    return Settings(SECRET_TOKEN=TOKEN, _env_file=None)


def queue(session_factory, bot: str, *texts: str) -> None:
    with session_factory() as session:
        store.ingest_texts(session, account=bot, texts=list(texts), status=TweetStatus.queued)
        session.commit()


class FirstClaimHeld:
    """Holds the first posting call inside its claim transaction, just after its key's lock:
    posting.job's sweep_stale_posts, which _claim calls next, waits there until `release`."""

    def __init__(self, monkeypatch):
        self.holding, self.released = threading.Event(), threading.Event()
        self.pid: int | None = None  # the first call's Postgres backend
        sweep = job.sweep_stale_posts

        def wait_once_then_sweep(session, **kwargs):
            if not self.holding.is_set():
                self.pid = session.scalar(text("SELECT pg_backend_pid()"))
                self.holding.set()
                self.released.wait(WAIT_SECONDS)
            return sweep(session, **kwargs)

        monkeypatch.setattr(job, "sweep_stale_posts", wait_once_then_sweep)


def second_call_during_first_claim(
    monkeypatch, session_factory, settings, first: tuple[str, str], second: tuple[str, str]
) -> tuple[bool, PostResult, PostResult]:
    """Call post_next for `first` (bot, key) and, while its claim holds the key's lock, for
    `second`: whether the second waited on the first's transaction, and the two results."""
    held = FirstClaimHeld(monkeypatch)
    results: dict[str, PostResult] = {}

    def call(name: str, bot: str, key: str) -> threading.Thread:
        def run():
            results[name] = post_next(session_factory=session_factory, settings=settings, bot=bot, idempotency_key=key)
        thread = threading.Thread(target=run)
        thread.start()
        return thread

    first_call = call("first", *first)
    assert held.holding.wait(WAIT_SECONDS), "the first call never reached its claim"
    second_call = call("second", *second)
    waited = False
    deadline = time.monotonic() + WAIT_SECONDS
    while second_call.is_alive() and not waited:
        waited = blocked_by(session_factory, held.pid)
        assert time.monotonic() < deadline, "the second call neither finished nor waited"
    held.released.set()
    for thread in (first_call, second_call):
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive(), "a posting call did not finish once the first claim went on"
    return waited, results["first"], results["second"]


def test_a_call_with_another_key_does_not_wait_for_a_claim_in_progress(monkeypatch, session_factory, settings):
    queue(session_factory, "alice", "alice one", "alice two")
    waited, first, second = second_call_during_first_claim(
        monkeypatch, session_factory, settings, ("alice", KEY), ("alice", "another key"))
    assert not waited, "a call with another key waited for the claim of alice's call with key " + KEY
    assert (second.outcome, second.replayed, second.tweet.text, second.tweet.idempotency_key) == (
        PostOutcome.posted, False, "alice one", "another key")
    assert (first.outcome, first.replayed, first.tweet.text, first.tweet.idempotency_key) == (
        PostOutcome.posted, False, "alice two", KEY)


def test_another_bots_call_with_the_same_key_does_not_wait_for_a_claim_in_progress(
    monkeypatch, session_factory, settings
):
    queue(session_factory, "alice", "alice's tweet")
    queue(session_factory, "bob", "bob's tweet")
    waited, first, second = second_call_during_first_claim(
        monkeypatch, session_factory, settings, ("alice", KEY), ("bob", KEY))
    assert not waited, "bob's call waited for the claim of alice's call with the same key"
    assert (second.outcome, second.replayed, second.tweet.account, second.tweet.text) == (
        PostOutcome.posted, False, "bob", "bob's tweet")
    assert (first.outcome, first.replayed, first.tweet.account, first.tweet.text) == (
        PostOutcome.posted, False, "alice", "alice's tweet")


def test_a_call_with_the_same_bot_and_key_waits_for_the_claim_and_replays_it(monkeypatch, session_factory, settings):
    queue(session_factory, "alice", "alice one", "alice two")
    waited, first, second = second_call_during_first_claim(
        monkeypatch, session_factory, settings, ("alice", KEY), ("alice", KEY))
    assert waited, "a call with the same bot and key did not wait for the claim in progress"
    assert (first.outcome, first.replayed, first.tweet.text) == (PostOutcome.posted, False, "alice one")
    # The first call's claim was committed before the second's began: it is found, never a second tweet.
    assert second.replayed and second.outcome in (PostOutcome.in_flight, PostOutcome.posted)
    assert second.tweet.id == first.tweet.id
    with session_factory() as session:
        assert session.scalar(select(Tweet.status).where(Tweet.text == "alice two")) is TweetStatus.queued
