"""A curator's change racing a posting claim or another change of the same tweet, on Postgres
through psycopg2 and pg8000.

They must be ordered: either the other transaction comes first and the change is refused (409)
with nothing written, or the change comes first and a claim passes over the tweet being changed.
SQLite is left out: every transaction there begins with BEGIN IMMEDIATE (db/engine.py), so
nothing can interleave.
"""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from sqlalchemy import select, text

from api.curate import actions
from api.curate.actions import Move
from core.config import Settings, TweetOrder
from core.tweet_text import x_text_problem
from db import store
from db.models import Delivery, DeliveryStatus, Tweet, TweetStatus
from db.post_queue import claim_next_tweet, record_posted
from posting.job import QUEUE_BUSY_RETRY_SECONDS, _ClaimLost, _settle, post_next
from posting.outcomes import PostOutcome
from tests.conftest import ACCOUNT, store_texts
from tests.test_posting import sweep

ORIGINAL = "the text as queued"
EDITED = "the text as edited"
X_CREDENTIALS = ("CONSUMER_KEY", "CONSUMER_SECRET", "ACCESS_KEY", "ACCESS_SECRET")
WAIT_SECONDS = 20  # bound on waiting for a state; reached only when the test fails


@pytest.fixture
def backend(backend):
    if backend == "sqlite":
        pytest.skip("SQLite's BEGIN IMMEDIATE serialises every transaction: nothing can interleave")
    return backend


# Every curation action, with the status its tweet needs for the action to apply.
CURATION_ACTIONS = {
    "approve": (TweetStatus.pending, lambda session, tweet_id: actions.approve(session, ACCOUNT, [tweet_id])),
    "reject": (TweetStatus.pending, lambda session, tweet_id: actions.reject(session, ACCOUNT, [tweet_id])),
    "edit and approve": (TweetStatus.pending,
                         lambda session, tweet_id: actions.edit_and_approve(session, ACCOUNT, tweet_id, EDITED, x_text_problem)),
    "requeue": (TweetStatus.unconfirmed, lambda session, tweet_id: actions.requeue(session, ACCOUNT, tweet_id)),
    "confirm posted": (TweetStatus.unconfirmed,
                       lambda session, tweet_id: actions.confirm_posted(session, ACCOUNT, tweet_id)),
    "unqueue": (TweetStatus.queued, lambda session, tweet_id: actions.unqueue(session, ACCOUNT, tweet_id)),
    "move": (TweetStatus.queued, lambda session, tweet_id: actions.move_in_queue(session, ACCOUNT, tweet_id, Move.bottom)),
}


def run_action(action, session_factory, tweet_id: int) -> int:
    """A curation action in its own transaction, answered as the curation page does: 200, or
    409 when refused (a conflict, or a bulk action that changed nothing)."""
    with session_factory() as session:
        try:
            result = action(session, tweet_id)
        except store.TweetConflict:
            return 409
        session.commit()
        return 409 if isinstance(result, actions.BulkResult) and not result.changed else 200


# Each change, and what the tweet looks like after it when it came first.
CHANGES = {
    "edit text": (lambda client, _f, tweet_id: client.patch(f"/tweets/{tweet_id}", json={"text": EDITED}).status_code,
                  (EDITED, TweetStatus.queued)),
    "unqueue": (lambda client, _f, tweet_id: client.patch(f"/tweets/{tweet_id}", json={"status": "pending"}).status_code,
                (ORIGINAL, TweetStatus.pending)),
    "delete": (lambda client, _f, tweet_id: client.delete(f"/tweets/{tweet_id}").status_code, None),
    "curation unqueue": (lambda _client, session_factory, tweet_id: run_action(
        CURATION_ACTIONS["unqueue"][1], session_factory, tweet_id), (ORIGINAL, TweetStatus.pending)),
}


def claim(session_factory) -> int | None:
    """One posting claim, committed; the id of the tweet it took."""
    with session_factory() as session:
        tweet = claim_next_tweet(session, account=ACCOUNT, order=TweetOrder.oldest)
        session.commit()
        return None if tweet is None else tweet.id


def state(session_factory, tweet_id: int) -> tuple[str, TweetStatus] | None:
    with session_factory() as session:
        tweet = session.get(Tweet, tweet_id)
        return None if tweet is None else (tweet.text, tweet.status)


@pytest.mark.parametrize("change", CHANGES)
def test_a_claim_during_a_change_passes_over_the_tweet(client, session_factory, monkeypatch, change):
    """The change has read the tweet when a claim runs: the claim takes the next tweet instead."""
    call, after = CHANGES[change]
    changed_id, next_id = store_texts(session_factory, ORIGINAL, "the next tweet", status=TweetStatus.queued)
    claimed = []
    read = store.get_tweet

    def read_then_claim(*args, **kwargs):
        tweet = read(*args, **kwargs)
        claimed.append(claim(session_factory))
        return tweet

    monkeypatch.setattr(store, "get_tweet", read_then_claim)
    answer = call(client, session_factory, changed_id)
    assert claimed == [next_id]
    assert answer in (200, 204)
    assert state(session_factory, changed_id) == after


def blocked_by(session_factory, pid: int) -> bool:
    """Whether some backend waits for a lock that backend `pid` holds (a fresh snapshot each call)."""
    with session_factory() as watcher:
        return bool(watcher.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE CAST(:pid AS integer) = ANY(pg_blocking_pids(pid))"),
            {"pid": pid},
        ))


def run_while_held(holder, session_factory, action, what: str):
    """Run `action` in a thread while `holder` (a session whose transaction holds locks) waits
    until Postgres shows it blocking another backend (or the action finished), then commit the
    holder; the action's result."""
    holder_pid = holder.scalar(text("SELECT pg_backend_pid()"))
    results = []
    worker = threading.Thread(target=lambda: results.append(action()))
    worker.start()
    deadline = time.monotonic() + WAIT_SECONDS
    while worker.is_alive() and not blocked_by(session_factory, holder_pid):
        assert time.monotonic() < deadline, f"{what} neither finished nor waited"
    holder.commit()
    worker.join(WAIT_SECONDS)
    (result,) = results
    return result


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_during_a_claim_waits_for_it_and_answers_409(client, session_factory, change):
    """A claim has taken the tweet but not committed when the change starts: the change waits, then refuses."""
    call, _after = CHANGES[change]
    (tweet_id,) = store_texts(session_factory, ORIGINAL, status=TweetStatus.queued)
    with session_factory() as claiming:
        assert claim_next_tweet(claiming, account=ACCOUNT, order=TweetOrder.oldest).id == tweet_id
        answer = run_while_held(claiming, session_factory, lambda: call(client, session_factory, tweet_id), "the change")
    assert answer == 409
    assert state(session_factory, tweet_id) == (ORIGINAL, TweetStatus.posting)


@pytest.mark.parametrize("name", CURATION_ACTIONS)
def test_a_curation_action_waits_for_another_change_and_sees_it(session_factory, name):
    """Another transaction (here: a curator marking the tweet posted) holds the tweet when the
    action starts: the action waits for it, then refuses instead of writing over it."""
    needed, action = CURATION_ACTIONS[name]
    (tweet_id,) = store_texts(session_factory, ORIGINAL, status=needed)
    with session_factory() as other:
        other.get(Tweet, tweet_id, with_for_update=True).status = TweetStatus.posted
        other.flush()
        outcome = run_while_held(other, session_factory, lambda: run_action(action, session_factory, tweet_id), "the action")
    assert outcome == 409
    assert state(session_factory, tweet_id) == (ORIGINAL, TweetStatus.posted)


def test_two_edits_to_one_text_at_once_the_second_is_409(client, session_factory):
    """Each edit checked that no other tweet has the text before either committed: the unique
    index decides, and the loser gets the same 409 as when the check sees the clash."""
    first_id, second_id = store_texts(session_factory, "first", "second", status=TweetStatus.queued)
    with session_factory() as other:
        store.update_tweet(other, other.get(Tweet, first_id, with_for_update=True), text=EDITED)
        answer = run_while_held(
            other, session_factory, lambda: client.patch(f"/tweets/{second_id}", json={"text": EDITED}), "the edit",
        )
    assert answer.status_code == 409
    assert answer.json() == {"detail": "another tweet of this account already has this text"}
    assert state(session_factory, second_id) == ("second", TweetStatus.queued)


def test_two_moves_of_neighbours_at_once_both_succeed(session_factory, monkeypatch):
    """Two curators swap the same neighbours from either side at once (one moves the first tweet
    down, the other the second up). Each has locked its own tweet when the other starts: without
    a common lock order each then waits for the other's tweet, and Postgres kills one (500)."""
    first_id, second_id = store_texts(session_factory, "first", "second", status=TweetStatus.queued)
    read = store.get_tweet
    passed, pids, answers = set(), {}, {}

    def read_then_wait_for_the_other(session, tweet_id, **kwargs):
        tweet = read(session, tweet_id, **kwargs)
        pids[tweet_id] = session.scalar(text("SELECT pg_backend_pid()"))
        passed.add(tweet_id)
        other = second_id if tweet_id == first_id else first_id
        deadline = time.monotonic() + WAIT_SECONDS
        while other not in passed and not blocked_by(session_factory, pids[tweet_id]):
            assert time.monotonic() < deadline, "the other move neither read its tweet nor waited for this one"
        return tweet

    monkeypatch.setattr(store, "get_tweet", read_then_wait_for_the_other)

    def move(tweet_id, where):
        try:
            answers[tweet_id] = run_action(lambda s, i: actions.move_in_queue(s, ACCOUNT, i, where), session_factory, tweet_id)
        except Exception as exc:  # the deadlock victim's error, reported by the assertion below
            answers[tweet_id] = repr(exc)

    workers = [threading.Thread(target=move, args=(first_id, Move.down)),
               threading.Thread(target=move, args=(second_id, Move.up))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT_SECONDS)
    assert answers == {first_id: 200, second_id: 200}
    with session_factory() as session:
        order = list(session.scalars(select(Tweet.id).order_by(Tweet.position, Tweet.id)))
    assert order == [second_id, first_id]  # one move swapped them; the other then found its tweet already there


def test_a_run_while_a_curator_holds_the_only_queued_tweet_is_retried_not_remembered_as_empty(
    session_factory, settings,
):
    """A claim skips rows a curator's change has locked. With every queued tweet locked that is
    no empty queue: the run answers 'ask again' and its key is not remembered as having found the
    queue empty, so the scheduler's retry with the same key posts the tweet."""
    settings = settings.model_copy(update={"TWITTER_DRY_RUN": True})
    (tweet_id,) = store_texts(session_factory, ORIGINAL, status=TweetStatus.queued)
    with session_factory() as curator:
        store.get_tweet(curator, tweet_id, for_update=True)
        busy = post_next(session_factory=session_factory, settings=settings, idempotency_key="run-1")
    assert (busy.outcome, busy.retry_after) == (PostOutcome.queue_busy, QUEUE_BUSY_RETRY_SECONDS)
    assert busy.message.startswith("every queued tweet is locked right now (a change on the curation page")
    assert busy.message.endswith("ask again in a few seconds")
    retried = post_next(session_factory=session_factory, settings=settings, idempotency_key="run-1")
    assert retried.outcome is PostOutcome.posted and retried.tweet.id == tweet_id


class RequeuedByACuratorWhileXAnswers:
    """Stands in for tweepy.Client: while X answers, the lease ends (another call's sweep makes the
    tweet unconfirmed) and a curator's requeue of it starts in `curator`'s transaction, uncommitted."""

    def __init__(self, session_factory, curator, tweet_id: int):
        self.session_factory, self.curator, self.tweet_id = session_factory, curator, tweet_id

    def create_tweet(self, *, text, user_auth):
        with self.session_factory() as session:
            sweep(session, lease_minutes=0)
            session.commit()
        actions.requeue(self.curator, ACCOUNT, self.tweet_id)
        return SimpleNamespace(data={"id": "1790000000000000003"})


def test_xs_answer_waits_for_a_curators_change_in_progress_and_then_leaves_it(session_factory, settings_values):
    """Recording X's answer locks the tweet's row first: it waits for the curator's requeue, sees it,
    and records nothing. Had it not locked, it would have read `unconfirmed`, then its update would
    have waited and overwritten the requeue with `posted`."""
    settings = Settings(**settings_values, **dict.fromkeys(X_CREDENTIALS, "set"))  # X itself is the stand-in
    (tweet_id,) = store_texts(session_factory, ORIGINAL, status=TweetStatus.queued)
    with session_factory() as curator:
        x_client = RequeuedByACuratorWhileXAnswers(session_factory, curator, tweet_id)
        result = run_while_held(
            curator, session_factory,
            lambda: post_next(session_factory=session_factory, settings=settings, x_client=x_client),
            "recording X's answer",
        )
    assert "(it is now queued): X's answer is not recorded" in result.message
    assert state(session_factory, tweet_id) == (ORIGINAL, TweetStatus.queued)
    with session_factory() as session:  # X's delivery as the requeue left it, not marked posted
        x = session.scalars(select(Delivery).where(Delivery.tweet_id == tweet_id)).one()
        assert (x.destination, x.status, x.remote_id, x.claimed_at) == ("x", DeliveryStatus.queued, None, None)


def test_settling_waits_for_a_requeue_in_progress_and_then_raises_claim_lost(session_factory):
    """_settle locks the tweet's row before checking the claim: with an operator's requeue of the
    unconfirmed tweet updated but not committed, it waits, sees `queued` and records nothing. Had it
    not locked, it would have read the committed `unconfirmed`, passed the check, and its update
    would have waited and then marked the requeued tweet posted."""
    (tweet_id,) = store_texts(session_factory, ORIGINAL, status=TweetStatus.queued)
    with session_factory() as posting, session_factory() as curator:
        tweet = claim_next_tweet(posting, account=ACCOUNT, order=TweetOrder.oldest)
        posting.commit()
        with session_factory() as session:  # the lease ends while X answers
            assert sweep(session, lease_minutes=0) == [tweet_id]
            session.commit()
        actions.requeue(curator, ACCOUNT, tweet_id)

        def settle() -> _ClaimLost | None:
            try:
                _settle(posting, tweet, "X posted it", PostOutcome.posted,
                        lambda: record_posted(posting, tweet, x_tweet_id="1790000000000000004", dry_run=False), whose="X")
            except _ClaimLost as lost:
                return lost
            return None

        lost = run_while_held(curator, session_factory, settle, "settling X's answer")
    assert lost is not None, "X's answer was recorded over the requeue"
    assert (lost.outcome, lost.message) == (PostOutcome.posted, f"tweet {tweet_id} changed after its posting lease "
                                            "ended (it is now queued): X's answer is not recorded: X posted it")
    assert state(session_factory, tweet_id) == (ORIGINAL, TweetStatus.queued)
