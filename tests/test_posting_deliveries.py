"""What posting to several destinations says and records, word for word, at the rules' edges.

tests/test_destinations.py pins what each answer does to a delivery and to the tweet; these tests
pin the words an operator reads (the run's answer, the delivery's and the tweet's error, the log)
for Mastodon and Bluesky, which failure speaks for a run when destinations fail differently, the
edges of the time a network keeps a delivery's key, a claim lost while a later destination
answers, a client that raises what it should not, and what an operator's confirmation or requeue,
or a retry after a failure, records on each delivery, which deliveries a sweep of stale claims ends,
and which queued tweet a claim takes first. Same in-process scripted destinations.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from core.config import Settings, TweetOrder
from core.delivery import DeliveryError, DeliveryFailed, ErrorKind, RemotePost
from core.tweet_text import bluesky_text_problem, mastodon_text_problem, x_text_problem
from db import store
from db.models import Delivery, DeliveryStatus, Tweet, TweetStatus
from db.post_queue import claim_next_tweet
from posting.job import log_posting_configuration, post_next, posted_message
from posting.destinations import NETWORK_NAMES, unconfirmed_note
from posting.outcomes import PostOutcome
from tests import test_destinations
from tests.conftest import ACCOUNT, TOKEN, store_texts
from tests.test_destinations import ScriptedDestination, deliveries, lost_answer, rate_limited, tweet
from tests.test_posting import end_the_lease_then, sweep

three = test_destinations.three  # the fixture: a bot posting to X, Mastodon and Bluesky, credentials set
NETWORKS = ("x", "mastodon", "bluesky")
HOUR = timedelta(hours=1)


def logged(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "posting.job" and r.levelno == level]


def scripted(**answers) -> dict[str, ScriptedDestination]:
    """A scripted client per network; `answers` gives a network its answers, or a ready client."""
    clients = {}
    for network in NETWORKS:
        given = answers.get(network, ())
        clients[network] = given if isinstance(given, ScriptedDestination) else ScriptedDestination(network, *given)
    return clients


def run(session_factory, settings, clients, key=None):
    return post_next(session_factory=session_factory, settings=settings, destinations=clients, idempotency_key=key)


def only(settings: Settings, destinations: str, **update) -> Settings:
    return settings.model_copy(update={"DESTINATIONS": destinations, **update})


class Clock:
    """utcnow for posting/job.py and db/post_queue.py, moved by the test (or by a client while it posts)."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock(datetime(2026, 5, 4, 12, 0, 0, 250000, tzinfo=timezone.utc))
    monkeypatch.setattr("posting.job.utcnow", clock)
    monkeypatch.setattr("db.post_queue.utcnow", clock)
    return clock


# ---- posted_message: the answer for a posted tweet, from its deliveries --------------------------

def a_tweet(*, dry_run=False, x_url=None, deliveries=()) -> Tweet:
    return Tweet(id=7, text="t", account=ACCOUNT, dry_run=dry_run, x_url=x_url, deliveries=list(deliveries))


def a_delivery(destination, status=DeliveryStatus.posted, *, url=None, dry_run=False, error=None) -> Delivery:
    return Delivery(destination=destination, status=status, url=url, dry_run=dry_run, error=error)


@pytest.mark.parametrize(("made", "message"), [
    (a_tweet(dry_run=True, deliveries=[a_delivery("x", dry_run=True), a_delivery("mastodon", dry_run=True)]),
     "Dry run: tweet 7 recorded as posted; nothing was sent to X; Mastodon: dry run, nothing sent"),
    # a dry-run tweet one network really has is no dry run to speak of
    (a_tweet(dry_run=True, deliveries=[a_delivery("x", dry_run=True), a_delivery("mastodon", url="https://m.example/1")]),
     "Tweet 7 posted; X: dry run, nothing sent; Mastodon @ https://m.example/1"),
    (a_tweet(x_url="https://x.com/a/status/1", deliveries=[
        a_delivery("x", url="https://x.com/a/status/1"), a_delivery("mastodon", url="https://m.example/1"),
        a_delivery("bluesky", DeliveryStatus.rejected, error="not posted to Bluesky: too long")]),
     "New tweet posted @ https://x.com/a/status/1; Mastodon @ https://m.example/1; "
     "Bluesky: rejected (not posted to Bluesky: too long)"),
    (a_tweet(deliveries=[a_delivery("mastodon", url="https://m.example/1"), a_delivery("bluesky")]),
     "Tweet 7 posted: Mastodon @ https://m.example/1; Bluesky: posted"),
    (a_tweet(deliveries=[a_delivery("myspace", url="https://myspace.example/1")]),
     "Tweet 7 posted: myspace @ https://myspace.example/1"),
    (a_tweet(deliveries=[a_delivery("x", DeliveryStatus.rejected, error="duplicate"), a_delivery("bluesky", url="https://b/1")]),
     "Tweet 7 posted; X: rejected (duplicate); Bluesky @ https://b/1"),
    (a_tweet(deliveries=[a_delivery("x", url="https://x.com/a/status/2")]), "Tweet 7 posted; X @ https://x.com/a/status/2"),
    (a_tweet(deliveries=[a_delivery("x"), a_delivery("mastodon", url="https://m.example/1")]),
     "Tweet 7 was posted (confirmed by an operator; X's id was not recorded); Mastodon @ https://m.example/1"),
    (a_tweet(), "Tweet 7 was posted (confirmed by an operator; X's id was not recorded)"),
], ids=["all dry", "dry but sent", "x link", "no x", "unknown network", "x rejected", "x url only", "operator", "bare"])
def test_the_posted_answer_names_each_destinations_link_or_state(made, message):
    assert posted_message(made) == message


def test_posting_configuration_is_logged_once_per_bot_naming_it(monkeypatch, caplog):
    monkeypatch.setenv("BOTS", "alice,bob")
    monkeypatch.setenv("BOT_ALICE_DESTINATIONS", "x,mastodon")
    monkeypatch.setenv("BOT_ALICE_MASTODON_DRY_RUN", "true")
    monkeypatch.setenv("BOT_BOB_DESTINATIONS", "bluesky")
    monkeypatch.setenv("BOT_BOB_BLUESKY_DRY_RUN", "true")
    caplog.set_level(logging.INFO, logger="posting.job")
    log_posting_configuration(Settings(SECRET_TOKEN=TOKEN, _env_file=None))
    assert logged(caplog, logging.WARNING) == [
        "bot alice: posting to X is not configured: BOT_ALICE_CONSUMER_KEY, BOT_ALICE_CONSUMER_SECRET, "
        "BOT_ALICE_ACCESS_KEY, BOT_ALICE_ACCESS_SECRET not set (see .env_reference), or set "
        "BOT_ALICE_TWITTER_DRY_RUN=true; posting calls will answer 503"]
    assert logged(caplog, logging.INFO) == [
        "bot alice: BOT_ALICE_MASTODON_DRY_RUN is on: posts are recorded as dry runs and never sent to Mastodon",
        "bot bob: BOT_BOB_BLUESKY_DRY_RUN is on: posts are recorded as dry runs and never sent to Bluesky",
    ]


# ---- dry runs and keys -----------------------------------------------------------------------

def test_dry_runs_elsewhere_are_named_after_xs_link(session_factory, three, caplog):
    (tweet_id,) = store_texts(session_factory, "dry elsewhere", status=TweetStatus.queued)
    caplog.set_level(logging.INFO, logger="posting.job")
    settings = three.model_copy(update={"MASTODON_DRY_RUN": True, "BLUESKY_DRY_RUN": True})
    result = run(session_factory, settings, scripted())
    assert (result.outcome, result.message) == (PostOutcome.posted, f"New tweet posted @ https://x.com/{ACCOUNT}/status/x-1; "
                                                "Mastodon: dry run, nothing sent; Bluesky: dry run, nothing sent")
    assert logged(caplog, logging.INFO) == [
        f"posted tweet {tweet_id} as https://x.example/1",
        f"dry run: tweet {tweet_id} would be posted to Mastodon: dry elsewhere",
        f"dry run: tweet {tweet_id} would be posted to Bluesky: dry elsewhere",
    ]
    assert tweet(session_factory, tweet_id).dry_run is False


def test_a_tweet_dry_everywhere_says_nothing_was_sent(session_factory, three):
    (tweet_id,) = store_texts(session_factory, "dry everywhere", status=TweetStatus.queued)
    settings = three.model_copy(update={"TWITTER_DRY_RUN": True, "MASTODON_DRY_RUN": True, "BLUESKY_DRY_RUN": True})
    result = run(session_factory, settings, {})
    assert result.message == (f"Dry run: tweet {tweet_id} recorded as posted; nothing was sent to X; "
                              "Mastodon: dry run, nothing sent; Bluesky: dry run, nothing sent")
    assert tweet(session_factory, tweet_id).dry_run is True


def test_each_delivery_key_is_made_from_the_bot_the_run_and_the_network(session_factory, three):
    store_texts(session_factory, "one run", "another run", status=TweetStatus.queued)
    clients = scripted()
    run(session_factory, three, clients, key="run-1")
    assert [c.posts[0][1] for c in clients.values()] == [f"key:{ACCOUNT}/run-1/{n}" for n in NETWORKS]
    result = run(session_factory, three, clients)
    claimed = result.tweet.claimed_at.isoformat()
    assert [c.posts[1][1] for c in clients.values()] == [
        f"key:{ACCOUNT}/tweet {result.tweet.id} claimed {claimed}/{n}" for n in NETWORKS]


# ---- text rules ----------------------------------------------------------------------------

def store_unchecked(session_factory, text: str) -> int:
    """Store a text no destination may post (the store would refuse it)."""
    with session_factory() as session:
        store.ingest_texts(session, account=ACCOUNT, texts=[text], status=TweetStatus.queued, rule=lambda text: None)
        session.commit()
        return session.scalar(select(Tweet.id).where(Tweet.text == text))


def test_a_text_every_destination_refuses_is_rejected_with_each_reason(session_factory, three, caplog):
    text = "a" * 301
    tweet_id = store_unchecked(session_factory, text)
    settings = three.model_copy(update={"MASTODON_MAX_CHARACTERS": 100})
    caplog.set_level(logging.INFO, logger="posting.job")
    clients = scripted()
    result = run(session_factory, settings, clients)
    reason = (f"not posted to X: {x_text_problem(text)}; not posted to Mastodon: {mastodon_text_problem(text, 100)}; "
              f"not posted to Bluesky: {bluesky_text_problem(text)}")
    assert result.outcome is PostOutcome.queue_empty and [t.id for t in result.rejected] == [tweet_id]
    assert {d.destination: d.status for d in result.rejected[0].deliveries} == dict.fromkeys(NETWORKS, DeliveryStatus.rejected)
    assert (tweet(session_factory, tweet_id).status, tweet(session_factory, tweet_id).error) == (TweetStatus.rejected, reason)
    assert logged(caplog, logging.WARNING) == [
        f"every destination refused the text of tweet {tweet_id} (now rejected): {reason}"]
    assert [c.posts for c in clients.values()] == [[], [], []]


def test_a_text_the_only_destination_refuses_names_that_network(session_factory, three, caplog):
    tweet_id = store_unchecked(session_factory, "b" * 120)
    caplog.set_level(logging.INFO, logger="posting.job")
    run(session_factory, only(three, "mastodon", MASTODON_MAX_CHARACTERS=100), scripted())
    assert logged(caplog, logging.WARNING) == [
        f"Mastodon refused the text of tweet {tweet_id} (now rejected): "
        "not posted to Mastodon: 120 characters, 20 over Mastodon's 100"]


# ---- what a network's failure says ---------------------------------------------------------

@pytest.mark.parametrize(("network", "error", "window", "outcome", "says"), [
    ("mastodon", DeliveryError(ErrorKind.credentials, "401 The access token is invalid", 401), None,
     PostOutcome.x_credentials, "Mastodon refused the bot's credentials (401 The access token is invalid)"),
    ("bluesky", DeliveryError(ErrorKind.credentials, "403 AccountTakedown", 403), None,
     PostOutcome.x_credentials, "Bluesky refused the bot's credentials (403 AccountTakedown)"),
    ("mastodon", DeliveryError(ErrorKind.not_sent, "connection refused"), None,
     PostOutcome.x_failed, "could not reach Mastodon (connection refused)"),
    ("bluesky", DeliveryError(ErrorKind.server_error, "502 Bad Gateway", 502), None,
     PostOutcome.x_failed, "Bluesky failed (502 Bad Gateway)"),
    ("bluesky", lost_answer(), timedelta.max, PostOutcome.x_failed, "Bluesky failed (read timed out)"),
    ("mastodon", DeliveryError(ErrorKind.refused, "404 Not Found", 404), None,
     PostOutcome.x_failed, "Mastodon refused the request (404 Not Found): check MASTODON_API_BASE_URL"),
    ("bluesky", DeliveryError(ErrorKind.refused, "404 Not Found", 404), None,
     PostOutcome.x_failed, "Bluesky refused the request (404 Not Found): check BLUESKY_PDS_URL"),
    ("mastodon", rate_limited(), None,
     PostOutcome.rate_limited, "Mastodon's rate limit is reached (Mastodon did not say until when)"),
])
def test_a_failure_on_mastodon_or_bluesky_says_what_the_network_said(session_factory, three, caplog,
                                                                     network, error, window, outcome, says):
    (tweet_id,) = store_texts(session_factory, "to one network", status=TweetStatus.queued)
    caplog.set_level(logging.INFO, logger="posting.job")
    client = ScriptedDestination(network, error, safe_retry_window=window)
    result = run(session_factory, only(three, network), {network: client})
    back = f"{says}; tweet {tweet_id} is back in the queue"
    assert (result.outcome, result.message) == (outcome, back)
    assert result.retry_after == (60 if outcome is PostOutcome.rate_limited else None)
    delivery = deliveries(session_factory, tweet_id)[network]
    assert (delivery.status, delivery.error) == (DeliveryStatus.queued, f"{client.network.title()}: {error.message}")
    assert tweet(session_factory, tweet_id).error == f"last attempt: {delivery.error}"
    # one destination: the run's own warning says it all
    assert logged(caplog, logging.WARNING) == [back]


@pytest.mark.parametrize(("network", "variable"), [
    ("mastodon", "BOT_ALICE_MASTODON_API_BASE_URL"), ("bluesky", "BOT_ALICE_BLUESKY_PDS_URL")])
def test_a_refused_request_names_the_address_variable_with_the_bots_prefix(monkeypatch, session_factory, network, variable):
    monkeypatch.setenv("BOTS", "alice,bob")
    monkeypatch.setenv("BOT_ALICE_DESTINATIONS", network)
    for name, value in (("MASTODON_API_BASE_URL", "https://mastodon.example"), ("MASTODON_ACCESS_TOKEN", "m-token"),
                        ("BLUESKY_HANDLE", "alice.bsky.social"), ("BLUESKY_APP_PASSWORD", "app-pass-word")):
        monkeypatch.setenv(f"BOT_ALICE_{name}", value)
    monkeypatch.setenv("BOT_BOB_TWITTER_DRY_RUN", "true")
    with session_factory() as session:
        store.ingest_texts(session, account="alice", texts=["refused"], status=TweetStatus.queued)
        session.commit()
    refused = ScriptedDestination(network, DeliveryError(ErrorKind.refused, "404 Not Found", 404))
    result = post_next(session_factory=session_factory, settings=Settings(SECRET_TOKEN=TOKEN, _env_file=None),
                       bot="alice", destinations={network: refused})
    assert (result.outcome, result.message) == (PostOutcome.x_failed, (
        f"{NETWORK_NAMES[network]} refused the request (404 Not Found): check {variable}; "
        f"tweet {result.tweet.id} is back in the queue"))
    assert result.tweet.account == "alice"


def test_a_rate_limit_with_a_reset_time_gives_the_seconds_left_rounded_up(session_factory, three, clock):
    (tweet_id,) = store_texts(session_factory, "limited", status=TweetStatus.queued)
    reset = clock.now + timedelta(seconds=90, microseconds=200000)
    limited = DeliveryError(ErrorKind.rate_limited, "429", 429, retry_at=reset)
    result = run(session_factory, only(three, "bluesky"), {"bluesky": ScriptedDestination("bluesky", limited)})
    assert result.retry_after == 91
    assert result.message == (f"Bluesky's rate limit is reached (until {reset.isoformat(timespec='seconds')}); "
                              f"tweet {tweet_id} is back in the queue")


def test_the_failure_needing_most_speaks_for_the_run(session_factory, three):
    """Credentials before a rate limit before a failure, whatever the destinations' order."""
    (tweet_id,) = store_texts(session_factory, "fails three ways", status=TweetStatus.queued)
    clients = scripted(x=[DeliveryError(ErrorKind.server_error, "503 Service Unavailable", 503)], mastodon=[rate_limited()],
                       bluesky=[DeliveryError(ErrorKind.credentials, "401 AuthenticationRequired", 401)])
    result = run(session_factory, three, clients)
    assert (result.outcome, result.retry_after) == (PostOutcome.x_credentials, None)
    assert result.message == (f"Bluesky refused the bot's credentials (401 AuthenticationRequired); "
                              f"tweet {tweet_id} is back in the queue")
    assert tweet(session_factory, tweet_id).error == (
        "last attempt: 503 Service Unavailable; Mastodon: 429 Too Many Requests; Bluesky: 401 AuthenticationRequired")


def test_a_rate_limit_speaks_before_a_failure_and_the_answer_gives_what_was_posted(session_factory, three, caplog):
    (tweet_id,) = store_texts(session_factory, "half there", status=TweetStatus.queued)
    caplog.set_level(logging.INFO, logger="posting.job")
    clients = scripted(x=[DeliveryError(ErrorKind.server_error, "503 Service Unavailable", 503)], mastodon=[rate_limited()])
    result = run(session_factory, three, clients)
    assert (result.outcome, result.retry_after) == (PostOutcome.rate_limited, 60)
    assert result.message == (
        f"Mastodon's rate limit is reached (Mastodon did not say until when); tweet {tweet_id} is back in the queue "
        f"(Tweet {tweet_id} posted; X: queued (503 Service Unavailable); Mastodon: queued (Mastodon: 429 Too Many "
        "Requests); Bluesky @ https://bluesky.example/1; the next run posts it where it is missing)")
    assert logged(caplog, logging.WARNING) == [result.message]  # failures worth retrying: no warning of their own


def test_lost_answers_on_two_networks_are_each_named(session_factory, three, caplog):
    (tweet_id,) = store_texts(session_factory, "lost twice", status=TweetStatus.queued)
    caplog.set_level(logging.INFO, logger="posting.job")
    clients = scripted(x=[lost_answer()], mastodon=[lost_answer()])
    result = run(session_factory, only(three, "x,mastodon"), clients)
    error = "read timed out; Mastodon: read timed out"
    assert result.outcome is PostOutcome.unconfirmed
    assert result.message == f"tweet {tweet_id} is unconfirmed: {tweet(session_factory, tweet_id).error}"
    assert tweet(session_factory, tweet_id).error == (
        f"{error}; X and Mastodon may have posted it: check https://x.com/{ACCOUNT} and the bot's profile on "
        "https://mastodon.example, then set it to posted or queued")
    assert logged(caplog, logging.WARNING) == [f"tweet {tweet_id} on X: unconfirmed (read timed out)",
                                               f"tweet {tweet_id} on Mastodon: unconfirmed (read timed out)"]
    assert logged(caplog, logging.ERROR) == [result.message]


@pytest.mark.parametrize(("destinations", "lost", "error"), [
    ("mastodon", ("mastodon",), "Mastodon: read timed out; Mastodon may have posted it: check the bot's profile on "
                                "https://mastodon.example and set it to posted or queued"),
    ("bluesky", ("bluesky",), "Bluesky: read timed out; Bluesky may have posted it: check "
                              "https://bsky.app/profile/bot.bsky.social and set it to posted or queued"),
    ("x,mastodon,bluesky", ("bluesky",), "Bluesky: read timed out; Bluesky may have posted it: check "
                                         "https://bsky.app/profile/bot.bsky.social and set it to posted or queued"),
    ("x,mastodon,bluesky", NETWORKS, (
        "read timed out; Mastodon: read timed out; Bluesky: read timed out; X, Mastodon and Bluesky may have posted "
        f"it: check https://x.com/{ACCOUNT}, the bot's profile on https://mastodon.example and "
        "https://bsky.app/profile/bot.bsky.social, then set it to posted or queued")),
])
def test_an_unconfirmed_tweet_names_only_the_networks_that_may_have_it_and_where_to_look(
        session_factory, three, destinations, lost, error):
    (tweet_id,) = store_texts(session_factory, "maybe somewhere", status=TweetStatus.queued)
    result = run(session_factory, only(three, destinations), scripted(**dict.fromkeys(lost, [lost_answer()])))
    assert (result.outcome, result.message) == (PostOutcome.unconfirmed, f"tweet {tweet_id} is unconfirmed: {error}")
    assert tweet(session_factory, tweet_id).error == error


def test_an_unconfirmed_note_on_a_network_no_longer_configured_still_says_where_to_look(settings):
    """Swept after the bot's Mastodon and Bluesky became dry runs, their addresses unset."""
    assert unconfirmed_note(settings, ["bluesky", "mastodon"]) == (
        "Mastodon and Bluesky may have posted it: check the bot's Mastodon profile and the bot's Bluesky profile, "
        "then set it to posted or queued")


def claimed_long_ago(session_factory, clock, statuses: dict[str, DeliveryStatus]) -> int:
    """A tweet a killed run left `posting` eleven minutes ago (past the default lease), with these deliveries."""
    (tweet_id,) = store_texts(session_factory, "left mid-post", status=TweetStatus.queued)
    with session_factory() as session:
        row = session.get(Tweet, tweet_id)
        row.status, row.claimed_at = TweetStatus.posting, clock.now - timedelta(minutes=11)
        session.add_all(Delivery(tweet_id=tweet_id, destination=network, status=status)
                        for network, status in statuses.items())
        session.commit()
    return tweet_id


@pytest.mark.parametrize(("statuses", "maybe"), [
    ({"x": DeliveryStatus.posted, "mastodon": DeliveryStatus.posting, "bluesky": DeliveryStatus.queued},
     "Mastodon may have posted it: check the bot's profile on https://mastodon.example and set it to posted or queued"),
    ({"x": DeliveryStatus.posting, "mastodon": DeliveryStatus.queued, "bluesky": DeliveryStatus.posting},
     f"X and Bluesky may have posted it: check https://x.com/{ACCOUNT} and https://bsky.app/profile/bot.bsky.social, "
     "then set it to posted or queued"),
    ({"x": DeliveryStatus.posting},
     f"X may have posted it: check https://x.com/{ACCOUNT} and set it to posted or queued"),
    ({}, f"X may have posted it: check https://x.com/{ACCOUNT} and set it to posted or queued"),  # before deliveries
], ids=["mastodon", "x and bluesky", "x", "no deliveries"])
def test_a_tweet_swept_mid_post_names_the_networks_it_was_posting_to(session_factory, three, clock, caplog, statuses, maybe):
    tweet_id = claimed_long_ago(session_factory, clock, statuses)
    caplog.set_level(logging.INFO, logger="db.post_queue")
    clients = scripted()
    assert run(session_factory, three, clients).outcome is PostOutcome.queue_empty
    assert tweet(session_factory, tweet_id).error == (
        f"the posting call stopped mid-post (no result after 10 minutes); {maybe}")
    assert {n: d.status for n, d in deliveries(session_factory, tweet_id).items()} == {
        n: DeliveryStatus.unconfirmed if s is DeliveryStatus.posting else s for n, s in statuses.items()}
    assert [r.getMessage() for r in caplog.records if r.name == "db.post_queue"] == [
        f"posting lease expired: tweets [{tweet_id}] are now unconfirmed; {maybe}"]
    assert [c.posts for c in clients.values()] == [[], [], []]


# ---- the time a network keeps a delivery's key -----------------------------------------------

def lose_the_answer_and_wait(clock: Clock, wait: timedelta):
    """A client's post whose answer is lost after `wait` (the clock moves while it posts)."""
    def post(text, *, key):
        clock.now += wait
        raise DeliveryFailed(lost_answer())

    client = ScriptedDestination("mastodon", safe_retry_window=HOUR)
    client.post = post
    return client


@pytest.mark.parametrize(("wait", "status"), [
    (HOUR - timedelta(microseconds=1), DeliveryStatus.queued), (HOUR, DeliveryStatus.unconfirmed)])
def test_a_lost_answer_is_retried_only_while_the_network_keeps_the_key(session_factory, three, clock, wait, status):
    (tweet_id,) = store_texts(session_factory, "slow", status=TweetStatus.queued)
    run(session_factory, only(three, "mastodon"), {"mastodon": lose_the_answer_and_wait(clock, wait)})
    assert deliveries(session_factory, tweet_id)["mastodon"].status is status


@pytest.mark.parametrize(("later", "posted"), [(HOUR - timedelta(microseconds=1), True), (HOUR, False)])
def test_a_retry_after_a_lost_answer_posts_only_within_the_keys_hour(session_factory, three, clock, later, posted):
    (tweet_id,) = store_texts(session_factory, "retried", status=TweetStatus.queued)
    settings = only(three, "mastodon")
    first_attempt = clock.now
    client = ScriptedDestination("mastodon", lost_answer(), safe_retry_window=HOUR)
    assert run(session_factory, settings, {"mastodon": client}).outcome is PostOutcome.x_failed
    assert deliveries(session_factory, tweet_id)["mastodon"].claimed_at == first_attempt
    clock.now = first_attempt + later
    result = run(session_factory, settings, {"mastodon": client})
    assert len(client.posts) == (2 if posted else 1)
    delivery = deliveries(session_factory, tweet_id)["mastodon"]
    if posted:
        assert delivery.status is DeliveryStatus.posted
    else:
        assert (result.outcome, delivery.status) == (PostOutcome.unconfirmed, DeliveryStatus.unconfirmed)
        assert delivery.error == (
            "Mastodon: an earlier attempt's answer was lost, and Mastodon no longer recognises its key "
            f"(attempted {first_attempt.isoformat(timespec='seconds')}): it may have the post")


def test_an_attempt_that_made_nothing_keeps_the_time_of_the_one_that_may_have(session_factory, three, clock):
    """A lost answer, then a rate limit: the key's hour still counts from the first attempt."""
    (tweet_id,) = store_texts(session_factory, "lost then limited", status=TweetStatus.queued)
    settings = only(three, "mastodon")
    first_attempt = clock.now
    client = ScriptedDestination("mastodon", lost_answer(), rate_limited(), safe_retry_window=HOUR)
    run(session_factory, settings, {"mastodon": client})
    clock.now += timedelta(minutes=30)
    assert run(session_factory, settings, {"mastodon": client}).outcome is PostOutcome.rate_limited
    assert deliveries(session_factory, tweet_id)["mastodon"].claimed_at == first_attempt
    clock.now = first_attempt + HOUR
    assert run(session_factory, settings, {"mastodon": client}).outcome is PostOutcome.unconfirmed
    assert len(client.posts) == 2


def test_a_rate_limit_on_a_first_attempt_leaves_no_attempt_time(session_factory, three):
    (tweet_id,) = store_texts(session_factory, "limited first", status=TweetStatus.queued)
    client = ScriptedDestination("mastodon", rate_limited(), safe_retry_window=HOUR)
    run(session_factory, only(three, "mastodon"), {"mastodon": client})
    assert deliveries(session_factory, tweet_id)["mastodon"].claimed_at is None


# ---- a claim lost while a later destination answers, a client that raises --------------------

class TakenWhilePosting(ScriptedDestination):
    """Mastodon, answering after another call's sweep ended the lease and the tweet was claimed again."""

    def __init__(self, session_factory, *answers):
        super().__init__("mastodon", *answers)
        self.session_factory = session_factory

    def post(self, text: str, *, key: str) -> RemotePost:
        end_the_lease_then(self.session_factory, "claimed again")
        return super().post(text, key=key)


@pytest.mark.parametrize(("answers", "outcome", "said"), [
    ((), PostOutcome.posted, "Mastodon posted it as https://mastodon.example/1"),
    ((rate_limited(),), PostOutcome.rate_limited, "Mastodon: 429 Too Many Requests"),
])
def test_a_claim_lost_while_mastodon_answers_records_nothing_more(session_factory, three, caplog, answers, outcome, said):
    (tweet_id,) = store_texts(session_factory, "taken midway", status=TweetStatus.queued)
    caplog.set_level(logging.INFO, logger="posting.job")
    clients = scripted(mastodon=TakenWhilePosting(session_factory, *answers))
    result = run(session_factory, three, clients, key="first")
    lost = (f"tweet {tweet_id} changed after its posting lease ended (it is now posting): "
            f"Mastodon's answer is not recorded: {said}")
    assert (result.outcome, result.message, result.tweet.id) == (outcome, lost, tweet_id)
    assert logged(caplog, logging.ERROR) == [lost]
    assert clients["bluesky"].posts == []
    rows = deliveries(session_factory, tweet_id)
    assert (rows["x"].status, rows["mastodon"].status, rows["bluesky"].status) == (
        DeliveryStatus.posted, DeliveryStatus.queued, DeliveryStatus.queued)  # requeued by the operator
    assert (tweet(session_factory, tweet_id).status, tweet(session_factory, tweet_id).idempotency_key) == (
        TweetStatus.posting, "second")


class Crashing(ScriptedDestination):
    def post(self, text: str, *, key: str) -> RemotePost:
        self.posts.append((text, key))
        raise ValueError("boom")


def test_a_client_that_raises_leaves_its_delivery_unconfirmed_and_the_others_posted(session_factory, three, caplog):
    (tweet_id,) = store_texts(session_factory, "crash", status=TweetStatus.queued)
    caplog.set_level(logging.INFO, logger="posting.job")
    result = run(session_factory, three, scripted(mastodon=Crashing("mastodon")))
    error = "unexpected ValueError while posting to Mastodon: boom"
    assert result.outcome is PostOutcome.unconfirmed
    assert result.message.startswith(f"tweet {tweet_id} is unconfirmed: Mastodon: {error}; "), result.message
    rows = deliveries(session_factory, tweet_id)
    assert {n: d.status for n, d in rows.items()} == {
        "x": DeliveryStatus.posted, "mastodon": DeliveryStatus.unconfirmed, "bluesky": DeliveryStatus.posted}
    assert logged(caplog, logging.ERROR)[0] == f"posting tweet {tweet_id} to Mastodon failed unexpectedly"
    assert logged(caplog, logging.WARNING) == [f"tweet {tweet_id} on Mastodon: unconfirmed ({error})"]


def test_a_client_that_raises_on_a_keyed_network_is_retried_with_its_key(session_factory, three):
    (tweet_id,) = store_texts(session_factory, "crash once", status=TweetStatus.queued)
    settings = only(three, "bluesky")
    crashing = Crashing("bluesky", safe_retry_window=HOUR)
    result = run(session_factory, settings, {"bluesky": crashing})
    assert (result.outcome, result.message) == (PostOutcome.x_failed, (
        f"Bluesky failed (unexpected ValueError while posting to Bluesky: boom); tweet {tweet_id} is back in the queue"))
    retry = ScriptedDestination("bluesky", safe_retry_window=HOUR)
    assert run(session_factory, settings, {"bluesky": retry}).outcome is PostOutcome.posted
    assert retry.posts == crashing.posts and crashing.posts[0][1].startswith(f"key:{ACCOUNT}/tweet {tweet_id} claimed ")


class TakesTheClaimAfter(logging.Handler):
    """Ends the lease and claims the tweet again once posting.job logs a line starting with `prefix`:
    the last delivery is recorded, and the tweet's own record comes next."""

    def __init__(self, session_factory, prefix: str):
        super().__init__()
        self.session_factory, self.prefix, self.done = session_factory, prefix, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.done and record.getMessage().startswith(self.prefix):
            self.done = True
            end_the_lease_then(self.session_factory, "claimed again")


@pytest.mark.parametrize(("error", "logged_last", "outcome", "reason"), [
    (lost_answer(), "tweet {} on Mastodon: ", PostOutcome.unconfirmed, "read timed out; Mastodon: read timed out"),
    (DeliveryError(ErrorKind.text_refused, "duplicate", 403), "tweet {} on Mastodon: ", PostOutcome.texts_refused,
     "duplicate; Mastodon: duplicate"),
    (None, "posted tweet {} as https://mastodon.example/1", PostOutcome.posted, "posted"),
])
def test_a_claim_lost_after_the_last_delivery_leaves_the_tweet_to_its_new_claim(session_factory, three, caplog,
                                                                              error, logged_last, outcome, reason):
    (tweet_id,) = store_texts(session_factory, "taken at the end", status=TweetStatus.queued)
    caplog.set_level(logging.INFO, logger="posting.job")
    handler = TakesTheClaimAfter(session_factory, logged_last.format(tweet_id))
    logging.getLogger("posting.job").addHandler(handler)
    answers = [error] if error is not None else []
    try:
        result = run(session_factory, only(three, "x,mastodon"), scripted(x=answers, mastodon=answers), key="first")
    finally:
        logging.getLogger("posting.job").removeHandler(handler)
    assert handler.done and result.tweet.id == tweet_id
    assert (result.outcome, result.message) == (outcome, (
        f"tweet {tweet_id} changed after its posting lease ended (it is now posting): the run's answer is not recorded: "
        f"{reason}"))
    assert (tweet(session_factory, tweet_id).status, tweet(session_factory, tweet_id).idempotency_key) == (
        TweetStatus.posting, "second")


def test_a_claim_lost_after_the_only_destination_answered_names_that_network(session_factory, three, caplog):
    (tweet_id,) = store_texts(session_factory, "taken at the end", status=TweetStatus.queued)
    caplog.set_level(logging.INFO, logger="posting.job")
    result = run_taking_the_claim_after(session_factory, only(three, "mastodon"), scripted(),
                                        f"posted tweet {tweet_id} as https://mastodon.example/1")
    assert (result.outcome, result.message) == (PostOutcome.posted, (
        f"tweet {tweet_id} changed after its posting lease ended (it is now posting): Mastodon's answer is not recorded: "
        "posted"))


def test_a_bot_without_x_has_no_x_post_on_record(session_factory, three):
    (tweet_id,) = store_texts(session_factory, "not on X", status=TweetStatus.queued)
    result = run(session_factory, only(three, "mastodon,bluesky"), scripted())
    assert result.message == (f"Tweet {tweet_id} posted: Mastodon @ https://mastodon.example/1; "
                              "Bluesky @ https://bluesky.example/1")
    assert (tweet(session_factory, tweet_id).x_tweet_id, tweet(session_factory, tweet_id).x_url) == (None, None)


@pytest.mark.parametrize(("update", "outcome", "said"), [
    ({"MASTODON_MAX_CHARACTERS": 10}, PostOutcome.texts_refused, "not posted to Mastodon: 15 characters, 5 over Mastodon's 10"),
    ({"MASTODON_DRY_RUN": True}, PostOutcome.posted, "dry run on Mastodon"),
])
def test_a_claim_lost_after_x_took_the_post_leaves_mastodons_refusal_or_dry_run_unrecorded(
        session_factory, three, caplog, update, outcome, said):
    (tweet_id,) = store_texts(session_factory, "taken after X's", status=TweetStatus.queued)
    caplog.set_level(logging.INFO, logger="posting.job")
    handler = TakesTheClaimAfter(session_factory, f"posted tweet {tweet_id} as https://x.example/1")
    logging.getLogger("posting.job").addHandler(handler)
    clients = scripted()
    try:
        result = run(session_factory, only(three, "x,mastodon", **update), clients, key="first")
    finally:
        logging.getLogger("posting.job").removeHandler(handler)
    assert (result.outcome, result.message, result.tweet.id) == (outcome, (
        f"tweet {tweet_id} changed after its posting lease ended (it is now posting): Mastodon's answer is not recorded: {said}"),
        tweet_id)
    assert clients["mastodon"].posts == [] and deliveries(session_factory, tweet_id)["mastodon"].status is DeliveryStatus.queued


def run_taking_the_claim_after(session_factory, settings, clients, line: str):
    handler = TakesTheClaimAfter(session_factory, line)
    logging.getLogger("posting.job").addHandler(handler)
    try:
        return run(session_factory, settings, clients, key=f"run {len(clients['x'].posts)}")
    finally:
        logging.getLogger("posting.job").removeHandler(handler)


def test_a_claim_lost_before_the_tweet_goes_back_to_the_queue_leaves_it_to_its_new_claim(session_factory, three, caplog):
    (tweet_id,) = store_texts(session_factory, "limited then taken", status=TweetStatus.queued)
    caplog.set_level(logging.INFO, logger="posting.job")
    result = run_taking_the_claim_after(session_factory, only(three, "x,mastodon"), scripted(x=[rate_limited()]),
                                        f"posted tweet {tweet_id} as https://mastodon.example/1")
    assert (result.outcome, result.message) == (PostOutcome.rate_limited, (
        f"tweet {tweet_id} changed after its posting lease ended (it is now posting): "
        "the run's answer is not recorded: 429 Too Many Requests"))


def test_a_claim_lost_before_an_expired_key_is_recorded_leaves_it_unrecorded(session_factory, three, clock, caplog):
    (tweet_id,) = store_texts(session_factory, "expired then taken", status=TweetStatus.queued)
    caplog.set_level(logging.INFO, logger="posting.job")
    settings = only(three, "x,mastodon")
    first_attempt = clock.now
    clients = scripted(x=[rate_limited()], mastodon=ScriptedDestination("mastodon", lost_answer(), safe_retry_window=HOUR))
    run(session_factory, settings, clients)
    clock.now += HOUR
    real_post = clients["x"].post

    def post_a_second_later(text, *, key):  # the lease of a claim made at this very time cannot have ended
        clock.now += timedelta(seconds=1)
        return real_post(text, key=key)

    clients["x"].post = post_a_second_later
    result = run_taking_the_claim_after(session_factory, settings, clients, f"posted tweet {tweet_id} as https://x.example/2")
    assert (result.outcome, result.message) == (PostOutcome.unconfirmed, (
        f"tweet {tweet_id} changed after its posting lease ended (it is now posting): Mastodon's answer is not recorded: "
        "Mastodon: an earlier attempt's answer was lost, and Mastodon no longer recognises its key "
        f"(attempted {first_attempt.isoformat(timespec='seconds')}): it may have the post"))


def test_a_tweet_back_in_the_queue_gives_only_the_failures_worth_retrying(session_factory, three):
    (tweet_id,) = store_texts(session_factory, "limited and too long", status=TweetStatus.queued)
    run(session_factory, three.model_copy(update={"MASTODON_MAX_CHARACTERS": 10}), scripted(x=[rate_limited()]))
    assert deliveries(session_factory, tweet_id)["mastodon"].status is DeliveryStatus.rejected
    assert tweet(session_factory, tweet_id).error == "last attempt: 429 Too Many Requests"


# ---- what an operator's confirmation or requeue, and a later run, record on each delivery ----

@pytest.fixture
def operator(three, engine) -> Iterator[TestClient]:
    """The API of the bot posting to X, Mastodon and Bluesky."""
    with TestClient(create_app(three, engine=engine, configure_logs=False), headers={"x-token": TOKEN}) as api:
        yield api


def on_each_network(answer: dict) -> dict[str, dict]:
    """The answer's deliveries by network, without updated_at, posted_at as a datetime."""
    return {d["destination"]: {**{k: v for k, v in d.items() if k not in ("destination", "updated_at")},
                               "posted_at": d["posted_at"] and datetime.fromisoformat(d["posted_at"])}
            for d in answer["deliveries"]}


def test_an_operators_confirmation_records_each_unconfirmed_delivery_as_posted_when_its_call_sent_it(
        session_factory, three, clock, operator):
    (tweet_id,) = store_texts(session_factory, "found on X and Mastodon", status=TweetStatus.queued)
    sent = clock.now
    assert run(session_factory, three, scripted(x=[lost_answer()], mastodon=[lost_answer()])).outcome is PostOutcome.unconfirmed
    assert tweet(session_factory, tweet_id).claimed_at == sent
    clock.now += timedelta(minutes=20)  # the operator looks later
    response = operator.patch(f"/tweets/{tweet_id}", json={"status": "posted", "x_tweet_id": "1790000000000000001"})
    assert response.status_code == 200, response.text
    answer = response.json()
    url = f"https://x.com/{ACCOUNT}/status/1790000000000000001"
    assert (answer["status"], answer["x_tweet_id"], answer["x_url"], answer["error"], answer["dry_run"]) == (
        "posted", "1790000000000000001", url, None, False)
    assert datetime.fromisoformat(answer["posted_at"]) == sent
    assert on_each_network(answer) == {
        "x": {"status": "posted", "remote_id": "1790000000000000001", "url": url, "error": None, "dry_run": False,
              "posted_at": sent},
        "mastodon": {"status": "posted", "remote_id": None, "url": None, "error": None, "dry_run": False,
                     "posted_at": sent},
        "bluesky": {"status": "posted", "remote_id": "bluesky-1", "url": "https://bluesky.example/1", "error": None,
                    "dry_run": False, "posted_at": sent},  # posted by the run itself
    }
    assert operator.get(f"/tweets/{tweet_id}").json() == answer


def answering_after(client: ScriptedDestination, clock: Clock, wait: timedelta) -> ScriptedDestination:
    """The client, its answer coming `wait` after the post (the clock moves while it posts)."""
    answer = client.post

    def post(text, *, key):
        clock.now += wait
        return answer(text, key=key)

    client.post = post
    return client


def test_a_delivery_posted_after_a_failed_attempt_has_no_error_and_the_time_its_network_answered(
        session_factory, three, clock, operator):
    (tweet_id,) = store_texts(session_factory, "failed, then posted", status=TweetStatus.queued)
    settings = only(three, "x,mastodon")
    clients = scripted(x=[DeliveryError(ErrorKind.server_error, "503 Service Unavailable", 503)], mastodon=[rate_limited()])
    assert run(session_factory, settings, clients).outcome is PostOutcome.rate_limited
    assert {n: (d.status, d.error) for n, d in deliveries(session_factory, tweet_id).items()} == {
        "x": (DeliveryStatus.queued, "503 Service Unavailable"),
        "mastodon": (DeliveryStatus.queued, "Mastodon: 429 Too Many Requests")}
    clock.now += timedelta(hours=1)
    retried = clock.now
    answering_after(clients["mastodon"], clock, timedelta(seconds=3))
    assert run(session_factory, settings, clients).outcome is PostOutcome.posted
    assert on_each_network(operator.get(f"/tweets/{tweet_id}").json()) == {
        "x": {"status": "posted", "remote_id": "x-2", "url": "https://x.example/2", "error": None, "dry_run": False,
              "posted_at": retried},
        "mastodon": {"status": "posted", "remote_id": "mastodon-2", "url": "https://mastodon.example/2", "error": None,
                     "dry_run": False, "posted_at": retried + timedelta(seconds=3)},
    }


def test_an_operators_requeue_clears_each_deliverys_error_and_the_unconfirmed_ones_attempt_time_not_their_keys(
        session_factory, three, clock, operator):
    (tweet_id,) = store_texts(session_factory, "not there after all", status=TweetStatus.queued)
    first_attempt = clock.now
    clients = scripted(x=[lost_answer()], mastodon=[lost_answer()],
                       bluesky=ScriptedDestination("bluesky", lost_answer(), safe_retry_window=HOUR))
    assert run(session_factory, three, clients).outcome is PostOutcome.unconfirmed
    keys = {n: c.posts[0][1] for n, c in clients.items()}
    assert {n: (d.status, d.error, d.key, d.claimed_at) for n, d in deliveries(session_factory, tweet_id).items()} == {
        "x": (DeliveryStatus.unconfirmed, "read timed out", keys["x"], first_attempt),
        "mastodon": (DeliveryStatus.unconfirmed, "Mastodon: read timed out", keys["mastodon"], first_attempt),
        "bluesky": (DeliveryStatus.queued, "Bluesky: read timed out", keys["bluesky"], first_attempt)}
    clock.now += timedelta(minutes=20)
    response = operator.patch(f"/tweets/{tweet_id}", json={"status": "queued"})
    assert response.status_code == 200, response.text
    assert {n: (d["status"], d["error"]) for n, d in on_each_network(response.json()).items()} == dict.fromkeys(
        NETWORKS, ("queued", None))
    # Bluesky still recognises its key from the first attempt; the others are posted whenever that is.
    assert {n: (d.status, d.error, d.key, d.claimed_at) for n, d in deliveries(session_factory, tweet_id).items()} == {
        "x": (DeliveryStatus.queued, None, keys["x"], None),
        "mastodon": (DeliveryStatus.queued, None, keys["mastodon"], None),
        "bluesky": (DeliveryStatus.queued, None, keys["bluesky"], first_attempt)}


# ---- the queue's steps on deliveries: the sweep of stale claims, the claim's order --------------

def delivery_rows(session_factory) -> dict[tuple[int, str], tuple[DeliveryStatus, str | None, datetime]]:
    with session_factory() as session:
        return {(d.tweet_id, d.destination): (d.status, d.error, d.updated_at) for d in session.scalars(select(Delivery))}


def test_a_sweep_ends_only_its_stale_tweets_deliveries_and_dates_them_now(session_factory, clock):
    """Deliveries `posting` for a claim still within its lease, or for another bot's call, are being
    posted right now: their calls record them, so the sweep leaves them exactly as they are."""
    stale_id, fresh_id = store_texts(session_factory, "left mid-post", "being posted now", status=TweetStatus.queued)
    before = clock.now - timedelta(minutes=20)
    with session_factory() as session:
        store.ingest_texts(session, account="another_bot", texts=["theirs, being posted"], status=TweetStatus.queued)
        theirs_id = session.scalar(select(Tweet.id).where(Tweet.account == "another_bot"))
        for tweet_id, age in ((stale_id, 11), (fresh_id, 1), (theirs_id, 60)):
            row = session.get(Tweet, tweet_id)
            row.status, row.claimed_at, row.updated_at = TweetStatus.posting, clock.now - timedelta(minutes=age), before
        session.add_all(Delivery(tweet_id=tweet_id, destination=network, status=status, error=error, updated_at=before)
                        for tweet_id, network, status, error in (
                            (stale_id, "x", DeliveryStatus.posting, None),
                            (stale_id, "mastodon", DeliveryStatus.posting, "Mastodon: 429 Too Many Requests"),
                            (stale_id, "bluesky", DeliveryStatus.queued, "Bluesky: 429 Too Many Requests"),
                            (fresh_id, "mastodon", DeliveryStatus.posting, "Mastodon: 429 Too Many Requests"),
                            (theirs_id, "x", DeliveryStatus.posting, None)))
        session.commit()
    with session_factory() as session:
        assert sweep(session, lease_minutes=10) == [stale_id]
        session.commit()
    swept = "the posting call stopped mid-post: the network may have it; check it"
    assert delivery_rows(session_factory) == {
        (stale_id, "x"): (DeliveryStatus.unconfirmed, swept, clock.now),
        (stale_id, "mastodon"): (DeliveryStatus.unconfirmed, swept, clock.now),
        (stale_id, "bluesky"): (DeliveryStatus.queued, "Bluesky: 429 Too Many Requests", before),
        (fresh_id, "mastodon"): (DeliveryStatus.posting, "Mastodon: 429 Too Many Requests", before),
        (theirs_id, "x"): (DeliveryStatus.posting, None, before),
    }
    stale = tweet(session_factory, stale_id)
    assert (stale.status, stale.error) == (TweetStatus.unconfirmed, (
        "the posting call stopped mid-post (no result after 10 minutes); X and Mastodon may have posted it: "
        f"check https://x.com/{ACCOUNT} and the bot's Mastodon profile, then set it to posted or queued"))
    # dated again by the UPDATE of its error, through the column's onupdate (db.models.utcnow, not this clock)
    assert stale.updated_at > before
    for tweet_id in (fresh_id, theirs_id):
        row = tweet(session_factory, tweet_id)
        assert (row.status, row.error, row.updated_at) == (TweetStatus.posting, None, before)


def test_a_queued_tweet_some_destination_has_is_claimed_before_older_ones_and_only_that(session_factory):
    """A tweet whose deliveries all went back to the queue (a rate limit) has reached no network yet:
    it waits its turn; another tweet's posted deliveries make no candidate go first."""
    older, retried, partly, done = store_texts(
        session_factory, "oldest, never tried", "rate limited everywhere", "on X, not yet on Mastodon", "posted everywhere",
        status=TweetStatus.queued)
    with session_factory() as session:
        session.get(Tweet, done).status = TweetStatus.posted
        session.add_all(Delivery(tweet_id=tweet_id, destination=network, status=status, error=error)
                        for tweet_id, network, status, error in (
                            (retried, "x", DeliveryStatus.queued, "X: 429 Too Many Requests"),
                            (retried, "mastodon", DeliveryStatus.queued, "Mastodon: 429 Too Many Requests"),
                            (partly, "x", DeliveryStatus.posted, None),
                            (partly, "mastodon", DeliveryStatus.queued, "Mastodon: 429 Too Many Requests"),
                            (done, "x", DeliveryStatus.posted, None),
                            (done, "mastodon", DeliveryStatus.posted, None)))
        session.commit()
    claimed = []
    with session_factory() as session:
        for _ in range(4):
            tweet_claimed = claim_next_tweet(session, account=ACCOUNT, order=TweetOrder.oldest)
            claimed.append(tweet_claimed and tweet_claimed.id)
            session.commit()
    assert claimed == [partly, older, retried, None]
