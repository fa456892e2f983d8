"""What each posting outcome tells the one who reads it (the HTTP answer, the result, the log), and
post_next's arguments at their edges, against the fake X server on SQLite and Postgres.

An operator acts on these words, so each test checks the words that matter (the tweet, what X
said, what to do next, the settings to look at) and where they stand, not the whole sentence.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from sqlalchemy.exc import SQLAlchemyError

from core.config import TweetOrder
from db import store
from db.models import Tweet, TweetStatus, utcnow
from posting.job import MAX_IDEMPOTENCY_KEY_LENGTH, post_next
from posting.outcomes import PostOutcome
from tests.conftest import ACCOUNT
from tests.fake_x import DUPLICATE_DETAIL, FakeX, problem
from tests import test_posting
from tests.test_posting import client_with, end_the_lease_then, load, post, queue, sweep

settings_values = test_posting.settings_values  # the fixture: settings pointing at the fake X

X_ID = "1790000000000000009"


def logged(caplog, level: int) -> list[str]:
    """The messages posting.job logged at exactly this level, in order."""
    return [r.getMessage() for r in caplog.records if r.name == "posting.job" and r.levelno == level]


# ---- configuration --------------------------------------------------------------------------

def test_missing_credentials_name_the_setting_and_the_dry_run_way_out(session_factory, engine, settings_values, caplog):
    values = {k: v for k, v in settings_values.items() if k != "CONSUMER_SECRET"}
    caplog.set_level(logging.INFO, logger="posting.job")
    with client_with(engine, values) as unconfigured:
        detail = unconfigured.post("/tweet_curated/").json()["detail"]
    assert detail.startswith("posting to X is not configured: CONSUMER_SECRET not set (see .env_reference)")
    assert detail.endswith("or set TWITTER_DRY_RUN=true")
    assert logged(caplog, logging.WARNING) == [f"{detail}; posting calls will answer 503"]  # at start, once


def test_dry_run_says_so_at_start_and_names_each_tweet_it_records(session_factory, engine, settings_values, caplog):
    (tweet_id,) = queue(session_factory, "dry text")
    caplog.set_level(logging.INFO, logger="posting.job")
    with client_with(engine, settings_values, TWITTER_DRY_RUN=True) as dry:
        body = dry.post("/tweet_curated/").json()
    assert body["tweet"]["id"] == tweet_id
    started, recorded = logged(caplog, logging.INFO)
    assert started.startswith("TWITTER_DRY_RUN is on") and started.endswith("never sent to X")
    assert recorded.startswith(f"dry run: tweet {tweet_id} would be posted") and recorded.endswith(": dry text")


def test_a_dry_run_result_lists_no_refused_tweet(session_factory, settings):
    queue(session_factory, "dry")
    result = post(session_factory, settings, TWITTER_DRY_RUN=True)
    assert (result.outcome, result.tweet.dry_run, result.rejected) == (PostOutcome.posted, True, [])


# ---- the idempotency key --------------------------------------------------------------------

def test_a_key_of_the_full_length_posts_and_a_longer_one_is_refused(client, session_factory, settings, fake_x):
    (tweet_id,) = queue(session_factory, "keyed to the limit")
    longest = "k" * MAX_IDEMPOTENCY_KEY_LENGTH
    assert client.post("/tweet_curated/", headers={"Idempotency-Key": longest}).status_code == 200
    assert load(session_factory, tweet_id).idempotency_key == longest
    with pytest.raises(ValueError, match=f"longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters"):
        post(session_factory, settings, longest + "k")


def test_a_blank_key_is_no_key_and_spaces_around_a_key_are_not_part_of_it(session_factory, settings):
    queue(session_factory, "a", "b", "c")
    dry = {"TWITTER_DRY_RUN": True}
    assert [post(session_factory, settings, "   ", **dry).tweet.text for _ in range(2)] == ["a", "b"]
    first = post(session_factory, settings, "  k ", **dry)
    replay = post(session_factory, settings, "k", **dry)
    assert (replay.replayed, replay.tweet.id) == (True, first.tweet.id)
    assert load(session_factory, first.tweet.id).idempotency_key == "k"


def test_random_order_follows_no_fixed_order(session_factory, settings):
    """Posting twelve tweets in their queue order would happen once in 12! (about 5e8) random runs."""
    ids = queue(session_factory, *(f"shuffled {n}" for n in range(12)))
    posted = [post(session_factory, settings, TWITTER_DRY_RUN=True, TWEET_ORDER=TweetOrder.random).tweet.id for _ in ids]
    assert sorted(posted) == ids and posted != ids


@pytest.mark.parametrize(
    ("status", "outcome", "words"),
    [
        (TweetStatus.posting, PostOutcome.in_flight,
         ["a call with idempotency key 'k' is still posting tweet {id}", "ask again in a minute"]),
        (TweetStatus.unconfirmed, PostOutcome.unconfirmed, ["tweet {id} is unconfirmed: lost on the way back"]),
        (TweetStatus.rejected, PostOutcome.key_reused,
         ["idempotency key 'k' was used for tweet {id}, which is now rejected", "nothing posted"]),
    ],
)
def test_a_replay_names_the_key_and_its_tweet(client, session_factory, fake_x, status, outcome, words):
    (tweet_id,) = queue(session_factory, "keyed earlier")
    with session_factory() as session:
        tweet = session.get(Tweet, tweet_id)
        tweet.status, tweet.claimed_at, tweet.idempotency_key = status, utcnow(), "k"
        tweet.error = "lost on the way back"
        session.commit()
    response = client.post("/tweet_curated/", headers={"Idempotency-Key": "k"})
    body = response.json()
    assert (response.status_code, body["outcome"]) == (outcome.http_status, outcome.value)
    assert response.headers["Idempotent-Replayed"] == "true"
    assert body["tweet"]["id"] == tweet_id
    for word in words:
        assert word.format(id=tweet_id) in body["detail"]
    assert body["detail"].endswith(words[-1].format(id=tweet_id))
    assert fake_x.requests == []


# ---- X refusing texts -----------------------------------------------------------------------

def test_texts_refused_in_a_row_are_each_named_with_xs_reason(session_factory, settings, fake_x):
    ids = queue(session_factory, "r1", "r2", "r3", "never tried")
    fake_x.enqueue("POST", "/2/tweets", *(FakeX.duplicate_content() for _ in range(3)))
    result = post(session_factory, settings, MAX_REJECTED_PER_CALL=3)
    assert result.outcome is PostOutcome.texts_refused
    reasons = "; ".join(f"tweet {tweet_id}: X answered 403: {DUPLICATE_DETAIL}" for tweet_id in ids[:3])
    assert result.message.startswith(f"X refused 3 texts in a row (now rejected: {reasons})")
    assert result.message.endswith("the next call tries the next tweets")
    assert (result.tweet.id, [t.id for t in result.rejected]) == (ids[2], ids[:3])
    assert load(session_factory, ids[3]).status is TweetStatus.queued


def test_a_post_after_a_refusal_lists_the_refused_tweet_and_logs_both(session_factory, settings, fake_x, caplog):
    refused_id, posted_id = queue(session_factory, "refused", "accepted")
    fake_x.enqueue("POST", "/2/tweets", FakeX.duplicate_content())
    caplog.set_level(logging.INFO, logger="posting.job")
    result = post(session_factory, settings)
    assert (result.outcome, result.tweet.id, [t.id for t in result.rejected]) == (PostOutcome.posted, posted_id, [refused_id])
    (refusal,) = logged(caplog, logging.WARNING)
    assert refusal.startswith(f"X refused the text of tweet {refused_id} (now rejected)")
    assert refusal.endswith(DUPLICATE_DETAIL)
    assert logged(caplog, logging.INFO) == [f"posted tweet {posted_id} as {result.tweet.x_url}"]


# ---- X doing nothing with the tweet: back in the queue --------------------------------------

@pytest.mark.parametrize(
    ("answer", "outcome", "words"),
    [
        (FakeX.unauthorized(), "x_credentials",
         ["X rejected the credentials: check ACCESS_KEY, ACCESS_SECRET, CONSUMER_KEY and CONSUMER_SECRET", "(X answered 401"]),
        (FakeX.forbidden(), "x_credentials",
         ["X refused the account or app permission to post: give the app Read and Write permission",
          "regenerate ACCESS_KEY and ACCESS_SECRET (X answered 403"]),
        (FakeX.server_error(503), "x_failed", ["X failed (X answered 503"]),
        (problem(404, "Not Found", "no such route"), "x_failed",
         ["X refused the request (X answered 404", "check TWITTER_API_BASE_URL"]),
    ],
    ids=["401", "403", "503", "404"],
)
def test_x_doing_nothing_says_what_to_check_and_that_the_tweet_is_back(client, session_factory, fake_x, caplog, answer, outcome, words):
    (tweet_id,) = queue(session_factory, "back it goes")
    fake_x.enqueue("POST", "/2/tweets", answer)
    caplog.set_level(logging.INFO, logger="posting.job")
    response = client.post("/tweet_curated/")
    body = response.json()
    assert (response.status_code, body["outcome"], body["tweet"]["id"]) == (502, outcome, tweet_id)
    assert body["detail"].startswith(words[0])
    assert all(word in body["detail"] for word in words)
    assert body["detail"].endswith(f"; tweet {tweet_id} is back in the queue")
    assert "Retry-After" not in response.headers  # only a rate limit says when
    assert logged(caplog, logging.WARNING) == [body["detail"]]
    assert load(session_factory, tweet_id).status is TweetStatus.queued


def test_a_rate_limit_says_until_when(client, session_factory, fake_x):
    (tweet_id,) = queue(session_factory, "later")
    reset = int(time.time()) + 300
    fake_x.enqueue("POST", "/2/tweets", FakeX.rate_limited(reset))
    detail = client.post("/tweet_curated/").json()["detail"]
    until = datetime.fromtimestamp(reset, timezone.utc).isoformat(timespec="seconds")
    assert detail.startswith(f"X's rate limit is reached (until {until})")
    assert detail.endswith(f"; tweet {tweet_id} is back in the queue")


def test_a_rate_limit_without_a_usable_reset_says_x_did_not_say(client, session_factory, fake_x):
    queue(session_factory, "later")
    fake_x.enqueue("POST", "/2/tweets", FakeX.rate_limited("soon"))
    detail = client.post("/tweet_curated/").json()["detail"]
    assert detail.startswith("X's rate limit is reached (X did not say until when)")


def test_a_rate_limit_already_reset_says_retry_in_a_second(client, session_factory, fake_x):
    """X's reset time can be just past when its answer arrives: retry at once, never 0 or negative."""
    queue(session_factory, "now")
    fake_x.enqueue("POST", "/2/tweets", FakeX.rate_limited(int(time.time()) - 60))
    response = client.post("/tweet_curated/")
    assert (response.status_code, response.headers["Retry-After"]) == (503, "1")


# ---- X's answer lost: unconfirmed ------------------------------------------------------------

def test_a_lost_answer_is_an_error_naming_the_tweet_and_what_to_check(client, session_factory, fake_x, caplog):
    (tweet_id,) = queue(session_factory, "did it post?")
    fake_x.enqueue("POST", "/2/tweets", FakeX.dropped())
    caplog.set_level(logging.INFO, logger="posting.job")
    body = client.post("/tweet_curated/").json()
    assert body["tweet"]["id"] == tweet_id
    error = load(session_factory, tweet_id).error
    assert error.startswith("the connection to X failed mid-request")  # what happened, then what to check
    assert body["detail"] == f"tweet {tweet_id} is unconfirmed: {error}"
    assert logged(caplog, logging.ERROR) == [body["detail"]]


def test_a_created_answer_with_a_long_bad_id_keeps_its_first_40_characters(session_factory, settings, fake_x):
    (tweet_id,) = queue(session_factory, "posted, but as what?")
    fake_x.enqueue("POST", "/2/tweets", FakeX.created("9" * 40 + "8"))
    assert post(session_factory, settings).outcome is PostOutcome.unconfirmed
    error = load(session_factory, tweet_id).error
    assert f"X answered with {'9' * 40!r} as the new post's id, which is no post id" in error


# ---- the tweet taken from this call meanwhile -----------------------------------------------

@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (FakeX.created(X_ID), f"X posted it as https://x.com/{ACCOUNT}/status/{X_ID}"),
        (FakeX.server_error(503), "X answered 503"),
        (FakeX.dropped(), "the connection to X failed mid-request"),
    ],
    ids=["created", "503", "dropped"],
)
def test_an_answer_for_a_tweet_claimed_again_is_logged_with_what_x_said(session_factory, settings, fake_x, caplog, answer, said):
    (tweet_id,) = queue(session_factory, "slow to answer")

    def slow_x(request):
        end_the_lease_then(session_factory, "claimed again")
        return answer

    fake_x.route("POST", "/2/tweets", slow_x, user_auth_only=True)
    caplog.set_level(logging.INFO, logger="posting.job")
    result = post(session_factory, settings, key="first")
    lost = f"tweet {tweet_id} changed after its posting lease ended (it is now posting): X's answer is not recorded: "
    assert result.message.startswith(lost) and said in result.message
    assert result.tweet.id == tweet_id
    assert logged(caplog, logging.ERROR) == [result.message]


def test_a_refusal_for_a_tweet_claimed_again_is_logged_with_xs_reason(session_factory, settings, fake_x, caplog):
    (tweet_id,) = queue(session_factory, "refused too late")

    def slow_refusal(request):
        end_the_lease_then(session_factory, "claimed again")
        return FakeX.duplicate_content()

    fake_x.route("POST", "/2/tweets", slow_refusal, user_auth_only=True)
    caplog.set_level(logging.INFO, logger="posting.job")
    post(session_factory, settings, key="first")
    (lost,) = logged(caplog, logging.ERROR)
    assert lost.startswith(f"tweet {tweet_id} changed after its posting lease ended (it is now posting)")
    assert lost.endswith(f"X's answer is not recorded: X answered 403: {DUPLICATE_DETAIL}")
    assert logged(caplog, logging.WARNING) == []  # not said to be rejected: the second claim owns it
    assert load(session_factory, tweet_id).status is TweetStatus.posting


def test_an_answer_for_a_tweet_deleted_meanwhile_says_it_is_deleted(session_factory, settings, fake_x):
    """The lease ended (unconfirmed), an operator deleted the tweet, then X's answer came."""
    (tweet_id,) = queue(session_factory, "deleted while X answered")

    def answer_after_the_delete(request):
        with session_factory() as session:
            sweep(session, lease_minutes=0)
            store.delete_tweet(session, store.get_tweet(session, tweet_id, for_update=True))
            session.commit()
        return FakeX.created(X_ID)

    fake_x.route("POST", "/2/tweets", answer_after_the_delete, user_auth_only=True)
    result = post(session_factory, settings)
    assert result.message.startswith(f"tweet {tweet_id} changed after its posting lease ended (it is now deleted)")
    assert result.message.endswith(f"X posted it as https://x.com/{ACCOUNT}/status/{X_ID}")
    assert load(session_factory, tweet_id) is None


# ---- X posted it but recording that failed ---------------------------------------------------

class DropsTheTableWhileXAnswers:
    """Stands in for tweepy.Client: X accepts the post while the tweets table goes away (an outage)."""

    def __init__(self, engine):
        self.engine = engine

    def create_tweet(self, *, text, user_auth):
        with self.engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE tweets RENAME TO tweets_gone")
        return SimpleNamespace(data={"id": X_ID})



def test_a_post_x_accepted_but_not_recorded_is_logged_with_xs_id(engine, session_factory, settings, caplog):
    """The operator must set it to posted by hand (it becomes unconfirmed): the log gives X's id and link."""
    (tweet_id,) = queue(session_factory, "posted, not recorded")
    caplog.set_level(logging.INFO, logger="posting.job")
    with pytest.raises(SQLAlchemyError):
        post_next(session_factory=session_factory, settings=settings, x_client=DropsTheTableWhileXAnswers(engine))
    (record,) = [r for r in caplog.records if r.name == "posting.job" and r.levelno == logging.ERROR]
    message = record.getMessage()
    assert message.startswith(f"X posted tweet {tweet_id} as {X_ID} (https://x.com/{ACCOUNT}/status/{X_ID})")
    assert message.endswith("set it to posted")
    assert record.exc_info is not None
