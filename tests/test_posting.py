"""Posting the next tweet exactly once: the endpoint, post_next and the CLI against the fake X server,
on SQLite and on Postgres through psycopg2 and pg8000."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import SecretStr
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from core.config import Settings, TweetOrder
from core.x_client import make_x_client
from db import store
from db.models import EmptyQueueRun, Tweet, TweetStatus, utcnow
from db.post_queue import claim_next_tweet, found_queue_empty, remember_empty_queue_run, sweep_stale_posts
from posting.destinations import unconfirmed_note
from posting.job import post_next
from posting.outcomes import PostOutcome
from tests.conftest import ACCOUNT, TOKEN, store_texts
from tests.fake_x import ACCESS_SECRET, BEARER_TOKEN, CONSUMER_SECRET, DUPLICATE_DETAIL, FakeResponse, FakeX

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def settings_values(settings_values, fake_x) -> dict:
    settings_values.update(fake_x.settings_values(timeout=2), TWEET_ORDER="oldest")
    return settings_values


queue = partial(store_texts, status=TweetStatus.queued)


def load(session_factory, tweet_id: int) -> Tweet:
    with session_factory() as session:
        return session.get(Tweet, tweet_id)


def statuses(session_factory) -> dict[str, TweetStatus]:
    with session_factory() as session:
        return {t.text: t.status for t in session.scalars(select(Tweet))}


def post(session_factory, settings, key=None, **overrides):
    if overrides:
        settings = settings.model_copy(update=overrides)
    return post_next(session_factory=session_factory, settings=settings, idempotency_key=key)


def client_with(engine, settings_values, **overrides) -> TestClient:
    app = create_app(Settings(**{**settings_values, **overrides}), engine=engine, configure_logs=False)
    return TestClient(app, headers={"x-token": TOKEN})


# ---- the endpoint -------------------------------------------------------------------------

def test_posts_the_next_tweet_and_records_xs_id(client, session_factory, fake_x):
    first, _second = queue(session_factory, "first tweet", "second tweet")
    response = client.post("/tweet_curated/")
    assert response.status_code == 200
    (posted,) = fake_x.posted
    url = f"https://x.com/{ACCOUNT}/status/{posted['id']}"
    body = response.json()
    assert body["response"] == f"New tweet posted @ {url}"
    assert posted["text"] == "first tweet"
    assert body["tweet"]["id"] == first and body["tweet"]["status"] == "posted"
    tweet = load(session_factory, first)
    assert (tweet.status, tweet.x_tweet_id, tweet.x_url, tweet.dry_run) == (TweetStatus.posted, posted["id"], url, False)
    assert tweet.posted_at is not None and tweet.error is None
    assert fake_x.post_attempts[0].auth == "oauth1"


@pytest.mark.parametrize("path", ["/tweet_currated/", "/tweet_currated", "/tweet_curated"])
def test_the_original_spelling_and_slashless_paths_post_too(client, session_factory, fake_x, path):
    queue(session_factory, "spelled the old way")
    assert client.post(path).status_code == 200
    assert [p["text"] for p in fake_x.posted] == ["spelled the old way"]


@pytest.mark.parametrize("path", ["/tweet_curated/", "/tweet_currated/"])
def test_posting_needs_the_token(anon_client, session_factory, fake_x, path):
    queue(session_factory, "not without a token")
    assert anon_client.post(path).status_code == 401
    assert anon_client.post(path, headers={"x-token": "wrong"}).status_code == 401
    assert fake_x.requests == []


def test_empty_queue_answers_404(client, session_factory, fake_x):
    queue(session_factory, "only pending", status=TweetStatus.pending)
    response = client.post("/tweet_curated/")
    assert response.status_code == 404
    assert response.json() == {"detail": "No more tweets left"}
    assert fake_x.requests == []


def test_a_key_that_found_the_queue_empty_answers_404_again(client, session_factory, fake_x):
    key = {"X-CloudScheduler-ScheduleTime": "2026-11-22T10:00:00Z"}
    first = client.post("/tweet_curated/", headers=key)
    assert first.status_code == 404 and "Idempotent-Replayed" not in first.headers
    queue(session_factory, "queued after the run found nothing")
    retry = client.post("/tweet_curated/", headers=key)  # Cloud Scheduler retries a 404
    assert retry.status_code == 404 and retry.json() == {"detail": "No more tweets left"}
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert fake_x.requests == []
    # The next run, or a call without a key, posts it.
    assert client.post("/tweet_curated/", headers={"X-CloudScheduler-ScheduleTime": "2026-11-22T11:00:00Z"}).status_code == 200
    assert [p["text"] for p in fake_x.posted] == ["queued after the run found nothing"]


def test_keys_that_found_the_queue_empty_are_forgotten_after_30_days(client, session_factory):
    with session_factory() as session:
        session.add_all([
            EmptyQueueRun(account=ACCOUNT, idempotency_key="old", created_at=utcnow() - timedelta(days=31)),
            EmptyQueueRun(account=ACCOUNT, idempotency_key="recent", created_at=utcnow() - timedelta(days=29)),
            EmptyQueueRun(account="another_bot", idempotency_key="old", created_at=utcnow() - timedelta(days=31)),
        ])
        session.commit()
    assert client.post("/tweet_curated/", headers={"Idempotency-Key": "new"}).status_code == 404
    with session_factory() as session:
        kept = session.execute(select(EmptyQueueRun.account, EmptyQueueRun.idempotency_key)).all()
    assert sorted(kept) == [("another_bot", "old"), (ACCOUNT, "new"), (ACCOUNT, "recent")]


def test_calls_without_a_key_are_never_deduplicated(client, session_factory, fake_x):
    assert client.post("/tweet_curated/").status_code == 404
    queue(session_factory, "a", "b")
    assert [client.post("/tweet_curated/").status_code for _ in range(3)] == [200, 200, 404]
    assert len(fake_x.posted) == 2


def test_oldest_order_follows_position_then_id(session_factory, settings):
    ids = queue(session_factory, "a", "b", "c")
    with session_factory() as session:
        session.get(Tweet, ids[2]).position = -1
        session.commit()
    posted = [post(session_factory, settings).tweet.id for _ in range(3)]
    assert posted == [ids[2], ids[0], ids[1]]


def test_random_order_posts_every_tweet_once(session_factory, settings, fake_x):
    queue(session_factory, *(f"random {n}" for n in range(6)))
    outcomes = [post(session_factory, settings, TWEET_ORDER=TweetOrder.random).outcome for _ in range(7)]
    assert outcomes == [PostOutcome.posted] * 6 + [PostOutcome.queue_empty]
    assert sorted(p["text"] for p in fake_x.posted) == [f"random {n}" for n in range(6)]


def test_only_the_accounts_own_tweets_and_keys_count(session_factory, settings, fake_x):
    with session_factory() as session:
        store.ingest_texts(session, account="another_bot", texts=["not ours"], status=TweetStatus.queued)
        session.scalar(select(Tweet).where(Tweet.text == "not ours")).idempotency_key = "k"
        session.commit()
    assert post(session_factory, settings).outcome is PostOutcome.queue_empty
    queue(session_factory, "ours")
    result = post(session_factory, settings, "k")  # the other account's key is not ours
    assert (result.outcome, result.replayed, result.tweet.text) == (PostOutcome.posted, False, "ours")
    assert [p["text"] for p in fake_x.posted] == ["ours"]


class DatabaseWatchingClient:
    """Stands in for tweepy.Client and looks at the database while "X" is being asked."""

    def __init__(self, engine, session_factory):
        self.engine, self.session_factory = engine, session_factory

    def create_tweet(self, *, text, user_auth):
        self.connections_in_use = self.engine.pool.checkedout()
        with self.session_factory() as session:  # would block (SQLite) or see `queued` (Postgres) if uncommitted
            self.status_seen = session.scalar(select(Tweet.status).where(Tweet.text == text))
        return SimpleNamespace(data={"id": "1790000000000000001"})


def test_claim_is_committed_and_no_connection_held_while_x_answers(engine, session_factory, settings):
    (tweet_id,) = queue(session_factory, "watched")
    watcher = DatabaseWatchingClient(engine, session_factory)
    result = post_next(session_factory=session_factory, settings=settings, x_client=watcher)
    assert result.outcome is PostOutcome.posted
    assert (watcher.status_seen, watcher.connections_in_use) == (TweetStatus.posting, 0)
    assert load(session_factory, tweet_id).x_tweet_id == "1790000000000000001"


# ---- idempotency --------------------------------------------------------------------------

def test_same_schedule_time_five_times_posts_once(client, session_factory, fake_x):
    queue(session_factory, "one", "two")
    headers = {"X-CloudScheduler-ScheduleTime": "2026-11-22T10:00:00Z"}
    answers = [client.post("/tweet_curated/", headers=headers) for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert len({a.text for a in answers}) == 1
    assert [a.headers.get("Idempotent-Replayed") for a in answers] == [None] + ["true"] * 4
    assert len(fake_x.post_attempts) == 1
    # The next scheduled run posts the next tweet.
    nxt = client.post("/tweet_curated/", headers={"X-CloudScheduler-ScheduleTime": "2026-11-22T11:00:00Z"})
    assert nxt.status_code == 200 and [p["text"] for p in fake_x.posted] == ["one", "two"]


def test_idempotency_key_header_wins_over_schedule_time(client, session_factory, fake_x):
    queue(session_factory, "one", "two")
    client.post("/tweet_curated/", headers={"Idempotency-Key": "k1", "X-CloudScheduler-ScheduleTime": "t"})
    replay = client.post("/tweet_curated/", headers={"Idempotency-Key": "k1"})
    other = client.post("/tweet_curated/", headers={"X-CloudScheduler-ScheduleTime": "t"})
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert other.status_code == 200 and other.headers.get("Idempotent-Replayed") is None
    assert len(fake_x.posted) == 2


def test_key_in_flight_answers_409(client, session_factory, fake_x):
    (tweet_id,) = queue(session_factory, "being posted")
    with session_factory() as session:
        tweet = session.get(Tweet, tweet_id)
        tweet.status, tweet.claimed_at, tweet.idempotency_key = TweetStatus.posting, utcnow(), "k"
        session.commit()
    response = client.post("/tweet_curated/", headers={"Idempotency-Key": "k"})
    assert response.status_code == 409
    assert "still posting" in response.json()["detail"]
    assert fake_x.requests == []


def test_key_of_a_tweet_moved_since_answers_409(session_factory, settings, fake_x):
    queue(session_factory, "lost answer", "next")
    fake_x.enqueue("POST", "/2/tweets", FakeX.dropped())
    first = post(session_factory, settings, "k")
    assert first.outcome is PostOutcome.unconfirmed
    with session_factory() as session:  # the operator closes it after checking X
        store.update_tweet(session, session.get(Tweet, first.tweet.id), status=TweetStatus.rejected)
        session.commit()
    again = post(session_factory, settings, "k")
    assert again.outcome is PostOutcome.key_reused and "now rejected" in again.message
    assert len(fake_x.post_attempts) == 1


def test_concurrent_calls_with_one_key_post_once(session_factory, settings, fake_x):
    queue(session_factory, *(f"t{n}" for n in range(5)))
    barrier = threading.Barrier(8)

    def call(_):
        barrier.wait()
        return post(session_factory, settings, "same key").outcome

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(call, range(8)))
    assert len(fake_x.post_attempts) == 1
    assert set(outcomes) <= {PostOutcome.posted, PostOutcome.in_flight}
    assert PostOutcome.posted in outcomes


def test_long_idempotency_key_is_refused(client, session_factory, fake_x):
    queue(session_factory, "x")
    response = client.post("/tweet_curated/", headers={"Idempotency-Key": "k" * 201})
    assert response.status_code == 422
    assert fake_x.requests == []


def test_fifty_concurrent_calls_over_thirty_tweets(session_factory, settings, fake_x):
    texts = [f"storm tweet {n}" for n in range(30)]
    queue(session_factory, *texts)
    settings = settings.model_copy(update={"TWEET_ORDER": TweetOrder.random})
    barrier = threading.Barrier(50)

    def call(n: int) -> PostOutcome:
        barrier.wait()
        return post(session_factory, settings, f"key-{n}").outcome

    with ThreadPoolExecutor(50) as pool:
        outcomes = list(pool.map(call, range(50)))
    assert outcomes.count(PostOutcome.posted) == 30
    # A call that found every queued tweet locked by another call's claim is told to ask again.
    assert outcomes.count(PostOutcome.queue_empty) + outcomes.count(PostOutcome.queue_busy) == 20
    assert len(fake_x.post_attempts) == 30
    assert sorted(p["text"] for p in fake_x.posted) == sorted(texts)
    with session_factory() as session:
        tweets = session.scalars(select(Tweet)).all()
    assert {t.status for t in tweets} == {TweetStatus.posted}
    assert len({t.x_tweet_id for t in tweets}) == 30


# ---- X's answers --------------------------------------------------------------------------

def test_rate_limit_requeues_and_answers_503_with_retry_after(client, session_factory, fake_x):
    (tweet_id,) = queue(session_factory, "later")
    reset = int(time.time()) + 300
    fake_x.enqueue("POST", "/2/tweets", FakeX.rate_limited(reset))
    started = time.monotonic()
    response = client.post("/tweet_curated/", headers={"Idempotency-Key": "k"})
    assert time.monotonic() - started < 2  # never sleeps until the reset
    assert response.status_code == 503
    assert 295 <= int(response.headers["Retry-After"]) <= 301
    assert response.json()["outcome"] == "rate_limited"
    tweet = load(session_factory, tweet_id)
    assert (tweet.status, tweet.idempotency_key, tweet.claimed_at) == (TweetStatus.queued, None, None)
    assert "429" in tweet.error
    # The key was released: the scheduler's retry posts.
    assert client.post("/tweet_curated/", headers={"Idempotency-Key": "k"}).status_code == 200
    assert [p["text"] for p in fake_x.posted] == ["later"]


@pytest.mark.parametrize("reset", ["99999999999999999999", "-1", "soon"])
def test_rate_limit_with_an_absurd_reset_requeues_and_answers_503(client, session_factory, fake_x, reset):
    (tweet_id,) = queue(session_factory, "later anyway")
    fake_x.enqueue("POST", "/2/tweets", FakeX.rate_limited(reset))
    response = client.post("/tweet_curated/", headers={"Idempotency-Key": "k"})
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "60"  # RETRY_AFTER_UNKNOWN_SECONDS
    assert "X did not say until when" in response.json()["detail"]
    tweet = load(session_factory, tweet_id)
    assert (tweet.status, tweet.idempotency_key, tweet.claimed_at) == (TweetStatus.queued, None, None)
    assert client.post("/tweet_curated/", headers={"Idempotency-Key": "k"}).status_code == 200
    assert [p["text"] for p in fake_x.posted] == ["later anyway"]


@pytest.mark.parametrize(
    ("answer", "broken", "outcome", "status"),
    [
        (FakeX.rate_limited(), "_rate_limit_reset", PostOutcome.rate_limited, TweetStatus.queued),
        (FakeX.server_error(502), "_classify_http_answer", PostOutcome.x_failed, TweetStatus.queued),
        (FakeX.dropped(), "_network_reason", PostOutcome.unconfirmed, TweetStatus.unconfirmed),
    ],
    ids=["429", "502", "dropped"],
)
def test_a_failure_while_reading_xs_answer_still_settles_the_tweet(
    session_factory, settings, fake_x, monkeypatch, answer, broken, outcome, status
):
    """An HTTP error means X did not post (back in the queue); a lost answer means it may have."""
    (tweet_id,) = queue(session_factory, "settled whatever happens")
    fake_x.enqueue("POST", "/2/tweets", answer)

    def bug(*_args):
        raise OverflowError("a bug in reading the answer")

    monkeypatch.setattr(f"core.x_client.{broken}", bug)
    result = post(session_factory, settings, key="k")
    assert result.outcome is outcome
    tweet = load(session_factory, tweet_id)
    assert (tweet.status, tweet.idempotency_key) == (status, None if status is TweetStatus.queued else "k")


@pytest.mark.parametrize("x_id", ["1" * 40, "../../evil", ""])
def test_an_answer_without_a_usable_post_id_is_unconfirmed(session_factory, settings, fake_x, x_id):
    """X said it created the post but not which: an operator confirms it with the post's link."""
    (tweet_id,) = queue(session_factory, "posted, but as what?")
    fake_x.enqueue("POST", "/2/tweets", FakeX.created(x_id) if x_id else FakeResponse(201, {"data": {}}))
    result = post(session_factory, settings, key="k")
    assert result.outcome is PostOutcome.unconfirmed
    tweet = load(session_factory, tweet_id)
    assert (tweet.status, tweet.x_tweet_id, tweet.idempotency_key) == (TweetStatus.unconfirmed, None, "k")
    assert post(session_factory, settings, key="k").outcome is PostOutcome.unconfirmed  # the retry posts nothing
    assert len(fake_x.post_attempts) == 1


@pytest.mark.parametrize("refusal", [FakeX.duplicate_content(), FakeX.bad_request("Invalid 'text': too long")])
def test_refused_text_is_rejected_and_the_next_tweet_posted(client, session_factory, fake_x, refusal):
    refused_id, next_id = queue(session_factory, "refused text", "accepted text")
    fake_x.enqueue("POST", "/2/tweets", refusal)
    response = client.post("/tweet_curated/", headers={"Idempotency-Key": "k"})
    assert response.status_code == 200 and response.json()["tweet"]["id"] == next_id
    refused = load(session_factory, refused_id)
    assert refused.status is TweetStatus.rejected and refused.idempotency_key is None
    assert refused.error.startswith(f"X answered {refusal.status}: ")
    assert load(session_factory, next_id).idempotency_key == "k"
    assert len(fake_x.post_attempts) == 2


def test_real_duplicate_is_rejected_with_xs_message(session_factory, settings, fake_x):
    (dup_id,) = queue(session_factory, "already on X")
    fake_x.posted.append({"id": "1", "text": "already on X"})
    result = post(session_factory, settings)
    assert result.outcome is PostOutcome.queue_empty
    assert [t.id for t in result.rejected] == [dup_id]
    assert load(session_factory, dup_id).error == f"X answered 403: {DUPLICATE_DETAIL}"


def test_refusals_are_bounded_per_call(client, session_factory, fake_x, engine, settings_values):
    ids = queue(session_factory, "r1", "r2", "r3")
    fake_x.enqueue("POST", "/2/tweets", FakeX.duplicate_content(), FakeX.duplicate_content())
    with client_with(engine, settings_values, MAX_REJECTED_PER_CALL=2) as bounded:
        response = bounded.post("/tweet_curated/")
    assert response.status_code == 502
    assert response.json()["outcome"] == "texts_refused"
    assert "X refused 2 texts in a row" in response.json()["detail"]
    assert [load(session_factory, i).status for i in ids] == [TweetStatus.rejected, TweetStatus.rejected, TweetStatus.queued]


@pytest.mark.parametrize(
    ("answer", "outcome", "detail"),
    [
        (FakeX.unauthorized(), "x_credentials", "X rejected the credentials: check ACCESS_KEY"),
        (FakeX.forbidden(), "x_credentials", "Read and Write permission"),
        (FakeX.server_error(500), "x_failed", "X failed (X answered 500"),
        (FakeX.server_error(503), "x_failed", "X failed (X answered 503"),
    ],
)
def test_x_failures_requeue_and_answer_502(client, session_factory, fake_x, answer, outcome, detail):
    (tweet_id,) = queue(session_factory, "try again")
    fake_x.enqueue("POST", "/2/tweets", answer)
    response = client.post("/tweet_curated/", headers={"Idempotency-Key": "k"})
    assert response.status_code == 502
    assert response.json()["outcome"] == outcome
    assert detail in response.json()["detail"]
    assert f"tweet {tweet_id} is back in the queue" in response.json()["detail"]
    tweet = load(session_factory, tweet_id)
    assert (tweet.status, tweet.idempotency_key) == (TweetStatus.queued, None)
    assert client.post("/tweet_curated/", headers={"Idempotency-Key": "k"}).status_code == 200


def test_given_client_with_a_wrong_secret_is_a_credentials_failure(session_factory, settings, fake_x):
    (tweet_id,) = queue(session_factory, "signed wrong")
    wrong = make_x_client(settings.model_copy(update={"ACCESS_SECRET": SecretStr("wrong")}))
    result = post_next(session_factory=session_factory, settings=settings, x_client=wrong)
    assert result.outcome is PostOutcome.x_credentials
    assert fake_x.post_attempts[0].auth is None  # signed with the given client's secret, refused
    assert load(session_factory, tweet_id).status is TweetStatus.queued


def test_unreachable_x_requeues(session_factory, settings, fake_x):
    (tweet_id,) = queue(session_factory, "nobody listening")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = post(session_factory, settings, TWITTER_API_BASE_URL=closed)
    assert result.outcome is PostOutcome.x_failed and "could not reach X" in result.message
    assert load(session_factory, tweet_id).status is TweetStatus.queued


@pytest.mark.parametrize("lost", [FakeX.hang(30), FakeX.dropped()], ids=["timeout", "dropped"])
def test_lost_answer_marks_unconfirmed_and_never_reposts(client, session_factory, fake_x, engine, settings_values, lost):
    lost_id, next_id = queue(session_factory, "did it post?", "next one")
    fake_x.enqueue("POST", "/2/tweets", lost)
    with client_with(engine, settings_values, TWITTER_TIMEOUT_SECONDS=0.5) as impatient:
        response = impatient.post("/tweet_curated/", headers={"Idempotency-Key": "k"})
        assert response.status_code == 502
        assert response.json()["outcome"] == "unconfirmed"
        assert f"https://x.com/{ACCOUNT}" in response.json()["detail"]
        # The scheduler's retry with the same key gets the same answer and posts nothing.
        retry = impatient.post("/tweet_curated/", headers={"Idempotency-Key": "k"})
        assert retry.status_code == 502 and retry.json()["detail"] == response.json()["detail"]
        assert len(fake_x.post_attempts) == 1
        listed = impatient.get("/tweets/", params={"status": "unconfirmed"}).json()
        assert [t["id"] for t in listed["data"]] == [lost_id]
        # Later runs post other tweets, never the unconfirmed one.
        assert impatient.post("/tweet_curated/", headers={"Idempotency-Key": "k2"}).json()["tweet"]["id"] == next_id
        assert impatient.post("/tweet_curated/").status_code == 404
    assert load(session_factory, lost_id).status is TweetStatus.unconfirmed


@pytest.mark.parametrize("x_tweet_id", ["1790000000000000001", None])
def test_operator_sets_an_unconfirmed_tweet_to_posted(client, session_factory, fake_x, x_tweet_id):
    (lost_id,) = queue(session_factory, "it did appear on X")
    fake_x.enqueue("POST", "/2/tweets", FakeX.dropped())
    key = {"Idempotency-Key": "k"}
    assert client.post("/tweet_curated/", headers=key).json()["outcome"] == "unconfirmed"
    claimed_at = load(session_factory, lost_id).claimed_at
    assert client.patch(f"/tweets/{lost_id}", json={"status": "posted", "x_tweet_id": "12ab"}).status_code == 422
    assert client.patch(f"/tweets/{lost_id}", json={"x_tweet_id": "1"}).status_code == 409
    change = {"status": "posted"} if x_tweet_id is None else {"status": "posted", "x_tweet_id": x_tweet_id}
    response = client.patch(f"/tweets/{lost_id}", json=change)
    assert response.status_code == 200, response.text
    url = None if x_tweet_id is None else f"https://x.com/{ACCOUNT}/status/{x_tweet_id}"
    tweet = load(session_factory, lost_id)
    assert (tweet.status, tweet.x_tweet_id, tweet.x_url, tweet.error) == (TweetStatus.posted, x_tweet_id, url, None)
    assert tweet.posted_at == claimed_at
    # The scheduler's retry of that run now answers "posted", and still posts nothing.
    replay = client.post("/tweet_curated/", headers=key)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    expected = f"New tweet posted @ {url}" if url else f"Tweet {lost_id} was posted (confirmed by an operator; X's id was not recorded)"
    assert replay.json()["response"] == expected
    assert len(fake_x.post_attempts) == 1


def test_operator_requeues_an_unconfirmed_tweet_and_it_is_posted_again(client, session_factory, fake_x):
    (lost_id,) = queue(session_factory, "it never reached X")
    fake_x.enqueue("POST", "/2/tweets", FakeX.dropped())
    assert client.post("/tweet_curated/").json()["outcome"] == "unconfirmed"
    assert client.patch(f"/tweets/{lost_id}", json={"status": "queued"}).json()["error"] is None
    response = client.post("/tweet_curated/")
    assert response.status_code == 200 and response.json()["tweet"]["id"] == lost_id
    assert [p["text"] for p in fake_x.posted] == ["it never reached X"]


@pytest.mark.parametrize(("lease", "stale_age", "fresh_age"), [(None, 11, 9), (2, 2.5, 1.5)])
def test_stale_posting_row_becomes_unconfirmed_not_reposted(session_factory, settings, fake_x, lease, stale_age, fresh_age):
    if lease is not None:
        settings = settings.model_copy(update={"POSTING_LEASE_MINUTES": lease})  # default 10
    stale_id, fresh_id, queued_id = queue(session_factory, "stale", "fresh", "queued")
    with session_factory() as session:
        for tweet_id, minutes in ((stale_id, stale_age), (fresh_id, fresh_age)):
            tweet = session.get(Tweet, tweet_id)
            tweet.status, tweet.claimed_at = TweetStatus.posting, utcnow() - timedelta(minutes=minutes)
        session.commit()
    assert post(session_factory, settings).tweet.id == queued_id
    assert post(session_factory, settings).outcome is PostOutcome.queue_empty
    stale = load(session_factory, stale_id)
    assert stale.status is TweetStatus.unconfirmed and "stopped mid-post" in stale.error
    assert load(session_factory, fresh_id).status is TweetStatus.posting  # its lease still runs
    assert [p["text"] for p in fake_x.posted] == ["queued"]


def sweep(session, *, lease_minutes: float) -> list[int]:
    """posting.job's sweep of ACCOUNT's stale claims, ACCOUNT being a bot that posts to X."""
    bot = Settings(SECRET_TOKEN=TOKEN, ACCOUNT=ACCOUNT, _env_file=None)
    return sweep_stale_posts(session, account=ACCOUNT, lease_minutes=lease_minutes,
                             unconfirmed_note=partial(unconfirmed_note, bot))


def end_the_lease_then(session_factory, then: str) -> None:
    """What can happen to a claimed tweet while X is slow to answer: another call's sweep ends the
    lease (unconfirmed); then maybe an operator requeues it and another call claims it again."""
    with session_factory() as session:
        (swept,) = sweep(session, lease_minutes=0)
        if then == "claimed again":
            store.update_tweet(session, store.get_tweet(session, swept, for_update=True), status=TweetStatus.queued)
            session.commit()
            assert claim_next_tweet(session, account=ACCOUNT, order=TweetOrder.oldest, idempotency_key="second").id == swept
        session.commit()


@pytest.mark.parametrize(
    ("answer", "then", "status", "key"),
    [
        (FakeX.created(), "left unconfirmed", TweetStatus.posted, "first"),  # X's answer settles what the sweep could not know
        (FakeX.server_error(503), "left unconfirmed", TweetStatus.queued, None),
        (FakeX.created(), "claimed again", TweetStatus.posting, "second"),  # the second claim is left alone
        (FakeX.server_error(503), "claimed again", TweetStatus.posting, "second"),
        (FakeX.dropped(), "claimed again", TweetStatus.posting, "second"),
    ],
)
def test_an_answer_after_the_lease_ended_never_undoes_what_came_since(session_factory, settings, fake_x, answer, then, status, key):
    (tweet_id,) = queue(session_factory, "slow to answer")

    def slow_x(request):
        end_the_lease_then(session_factory, then)
        return answer

    fake_x.route("POST", "/2/tweets", slow_x, user_auth_only=True)
    result = post(session_factory, settings, key="first")
    tweet = load(session_factory, tweet_id)
    assert (tweet.status, tweet.idempotency_key) == (status, key)
    assert ("X's answer is not recorded" in result.message) == (then == "claimed again")


# ---- configuration ------------------------------------------------------------------------

def test_dry_run_records_without_calling_x(session_factory, fake_x, engine, settings_values, caplog):
    (tweet_id,) = queue(session_factory, "dry text")
    values = {k: v for k, v in settings_values.items() if k not in ("CONSUMER_KEY", "ACCESS_SECRET")}
    caplog.set_level(logging.INFO)
    with client_with(engine, values, TWITTER_DRY_RUN=True) as dry:
        response = dry.post("/tweet_curated/")
    assert response.status_code == 200
    assert response.json()["response"] == f"Dry run: tweet {tweet_id} recorded as posted; nothing was sent to X"
    tweet = load(session_factory, tweet_id)
    assert (tweet.status, tweet.dry_run, tweet.x_tweet_id, tweet.x_url) == (TweetStatus.posted, True, None, None)
    assert fake_x.requests == []
    assert "dry text" in caplog.text


def test_missing_credentials_answer_503_naming_them(session_factory, fake_x, engine, settings_values, caplog):
    (tweet_id,) = queue(session_factory, "unposted")
    values = {k: v for k, v in settings_values.items() if k not in ("ACCESS_KEY", "ACCESS_SECRET")}
    caplog.set_level(logging.INFO)
    with client_with(engine, values) as unconfigured:
        assert "ACCESS_KEY, ACCESS_SECRET not set" in caplog.text  # said once at start
        response = unconfigured.post("/tweet_curated/")
    assert response.status_code == 503
    assert "ACCESS_KEY, ACCESS_SECRET" in response.json()["detail"]
    assert load(session_factory, tweet_id).status is TweetStatus.queued
    assert fake_x.requests == []


def test_secrets_never_logged(client, session_factory, fake_x, caplog):
    queue(session_factory, "log me not", "second")
    caplog.set_level(logging.DEBUG)
    assert client.post("/tweet_curated/").status_code == 200
    fake_x.enqueue("POST", "/2/tweets", FakeX.unauthorized())
    assert client.post("/tweet_curated/").status_code == 502
    assert "posted tweet" in caplog.text and "X rejected the credentials" in caplog.text
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in (CONSUMER_SECRET, ACCESS_SECRET, BEARER_TOKEN, TOKEN, "oauth_signature", "Authorization"):
        assert secret not in logged


# ---- the command line ---------------------------------------------------------------------

def run_cli(tmp_path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "posting.post_next", *args],
        cwd=tmp_path,  # no stray .env
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env},
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_cli_exit_codes(tmp_path, session_factory, engine, fake_x):
    queue(session_factory, "from cron")
    env = {
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "SECRET_TOKEN": TOKEN,
        "ACCOUNT": ACCOUNT,
        **{k: str(v) for k, v in fake_x.settings_values().items()},
    }
    posted = run_cli(tmp_path, env, "--idempotency-key", "2026-11-22T10:00:00Z")
    assert posted.returncode == 0, posted.stderr
    assert posted.stdout.startswith("New tweet posted @ https://x.com/") and posted.stdout.count("\n") == 1
    replay = run_cli(tmp_path, env, "--idempotency-key", "2026-11-22T10:00:00Z")
    assert replay.returncode == 0 and "earlier run with this idempotency key" in replay.stdout
    empty = run_cli(tmp_path, env)
    assert (empty.returncode, empty.stdout) == (3, "No more tweets left\n")
    queue(session_factory, "rate limited")
    fake_x.enqueue("POST", "/2/tweets", FakeX.rate_limited())
    assert run_cli(tmp_path, env).returncode == 4
    fake_x.enqueue("POST", "/2/tweets", FakeX.unauthorized())
    assert run_cli(tmp_path, env).returncode == 5
    unconfigured = run_cli(tmp_path, {k: v for k, v in env.items() if k != "CONSUMER_KEY"})
    assert unconfigured.returncode == 2 and "CONSUMER_KEY" in unconfigured.stdout
    bad = run_cli(tmp_path, {k: v for k, v in env.items() if k != "ACCOUNT"})
    assert bad.returncode == 2 and "ACCOUNT is not set" in bad.stdout
    assert len(fake_x.posted) == 1
    for result in (posted, replay, empty):
        assert CONSUMER_SECRET not in result.stderr and ACCESS_SECRET not in result.stderr


# ---- what an operator's requeue and another account's rows change ---------------------------

def test_requeueing_an_unconfirmed_tweet_frees_its_key(client, session_factory, fake_x):
    """The scheduler's retry of the run that lost X's answer posts the requeued tweet (not key_reused)."""
    (lost_id,) = queue(session_factory, "it never reached X")
    fake_x.enqueue("POST", "/2/tweets", FakeX.dropped())
    key = {"Idempotency-Key": "k"}
    assert client.post("/tweet_curated/", headers=key).json()["outcome"] == "unconfirmed"
    assert load(session_factory, lost_id).idempotency_key == "k"
    assert client.patch(f"/tweets/{lost_id}", json={"status": "queued"}).status_code == 200
    assert load(session_factory, lost_id).idempotency_key is None
    retry = client.post("/tweet_curated/", headers=key)
    assert retry.status_code == 200, retry.text
    assert retry.headers.get("Idempotent-Replayed") is None and retry.json()["tweet"]["id"] == lost_id
    assert [p["text"] for p in fake_x.posted] == ["it never reached X"]


def test_the_stale_lease_sweep_leaves_other_accounts_alone(session_factory, settings, fake_x):
    """Another bot's call may still be posting; only its own sweep may decide its rows are stale."""
    with session_factory() as session:
        store.ingest_texts(session, account="another_bot", texts=["theirs, being posted"], status=TweetStatus.queued)
        theirs = session.scalar(select(Tweet).where(Tweet.text == "theirs, being posted"))
        theirs.status, theirs.claimed_at = TweetStatus.posting, utcnow() - timedelta(hours=1)
        session.commit()
        their_id = theirs.id
    queue(session_factory, "ours")
    assert post(session_factory, settings).outcome is PostOutcome.posted
    theirs = load(session_factory, their_id)
    assert (theirs.status, theirs.error) == (TweetStatus.posting, None)
    assert [p["text"] for p in fake_x.posted] == ["ours"]


class OperatorActsWhileXAnswers:
    """Stands in for tweepy.Client: while "X" is being asked, a curator tries to requeue, edit and delete the tweet."""

    def __init__(self, client: TestClient, tweet_id: int):
        self.client, self.tweet_id = client, tweet_id

    def create_tweet(self, *, text, user_auth):
        path = f"/tweets/{self.tweet_id}"
        self.answers = [
            self.client.patch(path, json={"status": "queued"}).status_code,
            self.client.patch(path, json={"text": "edited while posting"}).status_code,
            self.client.delete(path).status_code,
        ]
        return SimpleNamespace(data={"id": "1790000000000000002"})


def test_a_curator_cannot_requeue_or_delete_a_tweet_while_x_posts_it(client, session_factory, settings, fake_x):
    """Had the requeue gone through, the next run would claim the text and post it a second time."""
    (tweet_id,) = queue(session_factory, "posted once")
    operator = OperatorActsWhileXAnswers(client, tweet_id)
    result = post_next(session_factory=session_factory, settings=settings, x_client=operator)
    assert operator.answers == [409, 409, 409]
    assert result.outcome is PostOutcome.posted
    tweet = load(session_factory, tweet_id)
    assert (tweet.status, tweet.text, tweet.x_tweet_id) == (TweetStatus.posted, "posted once", "1790000000000000002")
    assert post(session_factory, settings).outcome is PostOutcome.queue_empty
    assert fake_x.post_attempts == []


# ---- the queue's database steps at their edges ---------------------------------------------

def test_the_sweep_leaves_posted_tweets_alone_however_old_their_claim(session_factory, settings, fake_x):
    """A posted tweet keeps its claimed_at: only a tweet still `posting` can have lost its call."""
    (posted_id,) = queue(session_factory, "posted long ago")
    assert post(session_factory, settings).outcome is PostOutcome.posted
    with session_factory() as session:
        session.get(Tweet, posted_id).claimed_at = utcnow() - timedelta(days=2)
        session.commit()
    queue(session_factory, "next")
    assert post(session_factory, settings).outcome is PostOutcome.posted
    assert load(session_factory, posted_id).status is TweetStatus.posted


def test_the_lease_ends_strictly_after_its_length(session_factory, monkeypatch):
    """A claim exactly POSTING_LEASE_MINUTES old is still within its lease."""
    now = utcnow()
    monkeypatch.setattr("db.post_queue.utcnow", lambda: now)
    at_limit_id, past_id = queue(session_factory, "at the limit", "past the limit")
    with session_factory() as session:
        for tweet_id, age in ((at_limit_id, timedelta(minutes=10)), (past_id, timedelta(minutes=10, microseconds=1))):
            tweet = session.get(Tweet, tweet_id)
            tweet.status, tweet.claimed_at = TweetStatus.posting, now - age
        session.commit()
        assert sweep(session, lease_minutes=10) == [past_id]
        session.commit()


def test_empty_queue_keys_are_kept_exactly_thirty_days(session_factory, monkeypatch):
    now = utcnow()
    monkeypatch.setattr("db.post_queue.utcnow", lambda: now)
    with session_factory() as session:
        session.add(EmptyQueueRun(account=ACCOUNT, idempotency_key="thirty days", created_at=now - timedelta(days=30)))
        session.commit()
        remember_empty_queue_run(session, account=ACCOUNT, key="new")
        session.commit()
        assert found_queue_empty(session, account=ACCOUNT, key="thirty days")


def test_another_accounts_empty_queue_key_is_not_ours(session_factory, settings, fake_x):
    with session_factory() as session:
        session.add(EmptyQueueRun(account="another_bot", idempotency_key="k"))
        session.commit()
    queue(session_factory, "ours")
    result = post(session_factory, settings, "k")
    assert (result.outcome, result.replayed) == (PostOutcome.posted, False)


def test_random_order_claims_any_queued_tweet(session_factory):
    """Twenty claims (each rolled back) of ten tweets all taking the first would happen once in 10**20."""
    queue(session_factory, *(f"shuffled {n}" for n in range(10)))
    claimed = set()
    with session_factory() as session:
        for _ in range(20):
            claimed.add(claim_next_tweet(session, account=ACCOUNT, order=TweetOrder.random).id)
            session.rollback()
    assert len(claimed) > 1


def test_an_unconfirmed_tweet_says_what_to_check(session_factory, settings, fake_x):
    (tweet_id,) = queue(session_factory, "lost on the way back")
    fake_x.enqueue("POST", "/2/tweets", FakeX.dropped())
    assert post(session_factory, settings).outcome is PostOutcome.unconfirmed
    assert load(session_factory, tweet_id).error.endswith(
        f"; X may have posted it: check https://x.com/{ACCOUNT} and set it to posted or queued"
    )


def test_a_claim_returns_the_claimed_state_even_to_a_session_that_loaded_the_tweet(session_factory):
    (tweet_id,) = queue(session_factory, "already in the session")
    with session_factory() as session:
        assert session.get(Tweet, tweet_id).status is TweetStatus.queued
        claimed = claim_next_tweet(session, account=ACCOUNT, order=TweetOrder.oldest, idempotency_key="k")
        assert (claimed.id, claimed.status, claimed.idempotency_key) == (tweet_id, TweetStatus.posting, "k")
        assert claimed.claimed_at is not None
