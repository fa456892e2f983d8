"""Posting to several destinations: each delivery has its own state, and nothing is posted twice.

The destinations here are in-process scripted clients: these tests pin the posting job's rules
(what each answer does to a delivery and to the tweet). The network clients themselves are tested
over real HTTP against the fake servers (tests/test_x_client.py, test_mastodon_client.py,
test_bluesky_client.py).
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from core.config import ConfigError, Settings, UnknownBot
from core.delivery import DeliveryError, DeliveryFailed, ErrorKind, RemotePost
from db import store
from db.models import Delivery, DeliveryStatus, Tweet, TweetStatus
from posting.job import post_next
from posting.outcomes import PostOutcome
from tests.conftest import ACCOUNT, TOKEN, store_texts


class ScriptedDestination:
    """A destination whose answers a test scripts: a RemotePost, or a DeliveryError to raise."""

    def __init__(self, network: str, *answers, safe_retry_window: timedelta | None = None):
        self.network = network
        self.safe_retry_window = safe_retry_window
        self.answers = list(answers)
        self.posts: list[tuple[str, str]] = []  # (text, key) of every attempt

    def new_key(self, seed: str) -> str:
        return f"key:{seed}"

    def post(self, text: str, *, key: str) -> RemotePost:
        self.posts.append((text, key))
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, DeliveryError):
            raise DeliveryFailed(answer)
        number = len(self.posts)
        return RemotePost(f"{self.network}-{number}", f"https://{self.network}.example/{number}")


def rate_limited() -> DeliveryError:
    return DeliveryError(ErrorKind.rate_limited, "429 Too Many Requests", 429)


def lost_answer() -> DeliveryError:
    return DeliveryError(ErrorKind.unknown_outcome, "read timed out")


@pytest.fixture
def three(settings_values) -> Settings:
    values = {**settings_values, "DESTINATIONS": "x,mastodon,bluesky",
              "MASTODON_API_BASE_URL": "https://mastodon.example", "MASTODON_ACCESS_TOKEN": "m-token",
              "BLUESKY_HANDLE": "bot.bsky.social", "BLUESKY_APP_PASSWORD": "app-pass-word",
              "CONSUMER_KEY": "k", "CONSUMER_SECRET": "s", "ACCESS_KEY": "a", "ACCESS_SECRET": "t"}
    return Settings(**values)


def deliveries(session_factory, tweet_id: int) -> dict[str, Delivery]:
    with session_factory() as session:
        rows = session.scalars(select(Delivery).where(Delivery.tweet_id == tweet_id)).all()
        return {row.destination: row for row in rows}


def tweet(session_factory, tweet_id: int) -> Tweet:
    with session_factory() as session:
        return session.get(Tweet, tweet_id)


def test_a_tweet_goes_to_every_destination_with_its_own_record(session_factory, three):
    (tweet_id,) = store_texts(session_factory, "hello everywhere", status=TweetStatus.queued)
    clients = {n: ScriptedDestination(n) for n in ("x", "mastodon", "bluesky")}
    result = post_next(session_factory=session_factory, settings=three, destinations=clients)
    assert result.outcome is PostOutcome.posted
    rows = deliveries(session_factory, tweet_id)
    assert {n: (d.status, d.remote_id, d.url) for n, d in rows.items()} == {
        n: (DeliveryStatus.posted, f"{n}-1", f"https://{n}.example/1") for n in ("x", "mastodon", "bluesky")
    }
    assert tweet(session_factory, tweet_id).status is TweetStatus.posted
    assert "https://mastodon.example/1" in result.message and "https://bluesky.example/1" in result.message
    assert [len(c.posts) for c in clients.values()] == [1, 1, 1]


def test_a_destination_that_failed_is_retried_later_and_the_others_are_not_posted_again(session_factory, three):
    first, second = store_texts(session_factory, "first", "second", status=TweetStatus.queued)
    clients = {"x": ScriptedDestination("x"), "mastodon": ScriptedDestination("mastodon", rate_limited()),
               "bluesky": ScriptedDestination("bluesky")}
    result = post_next(session_factory=session_factory, settings=three, destinations=clients)
    assert result.outcome is PostOutcome.rate_limited and result.retry_after == 60
    posted_id = result.tweet.id
    rows = deliveries(session_factory, posted_id)
    assert rows["mastodon"].status is DeliveryStatus.queued and rows["x"].status is DeliveryStatus.posted
    assert tweet(session_factory, posted_id).status is TweetStatus.queued
    mastodon_key = clients["mastodon"].posts[0][1]

    # The next run completes this tweet before starting the other one, posting only to Mastodon,
    # with the same key as the first attempt.
    result = post_next(session_factory=session_factory, settings=three, destinations=clients)
    assert result.outcome is PostOutcome.posted and result.tweet.id == posted_id
    assert [len(c.posts) for c in clients.values()] == [1, 2, 1]
    assert clients["mastodon"].posts[1][1] == mastodon_key
    assert tweet(session_factory, posted_id).status is TweetStatus.posted
    other = second if posted_id == first else first
    assert tweet(session_factory, other).status is TweetStatus.queued


def test_a_lost_answer_is_unconfirmed_where_a_repeat_could_post_twice(session_factory, three):
    (tweet_id,) = store_texts(session_factory, "maybe posted", status=TweetStatus.queued)
    clients = {"x": ScriptedDestination("x", lost_answer()), "mastodon": ScriptedDestination("mastodon"),
               "bluesky": ScriptedDestination("bluesky")}
    result = post_next(session_factory=session_factory, settings=three, destinations=clients)
    assert result.outcome is PostOutcome.unconfirmed
    rows = deliveries(session_factory, tweet_id)
    assert rows["x"].status is DeliveryStatus.unconfirmed
    assert rows["mastodon"].status is rows["bluesky"].status is DeliveryStatus.posted
    assert tweet(session_factory, tweet_id).status is TweetStatus.unconfirmed
    assert post_next(session_factory=session_factory, settings=three, destinations=clients).outcome is PostOutcome.queue_empty

    # The operator finds it on X: every destination is then posted; nothing was sent again.
    with session_factory() as session:
        store.update_tweet(session, store.get_tweet(session, tweet_id, for_update=True),
                           status=TweetStatus.posted, x_tweet_id="1790000000000000001")
        session.commit()
    rows = deliveries(session_factory, tweet_id)
    assert (rows["x"].status, rows["x"].remote_id) == (DeliveryStatus.posted, "1790000000000000001")
    assert [len(c.posts) for c in clients.values()] == [1, 1, 1]


def test_a_lost_answer_is_retried_with_the_same_key_where_the_key_makes_a_repeat_harmless(session_factory, three):
    (tweet_id,) = store_texts(session_factory, "keyed", status=TweetStatus.queued)
    bluesky = ScriptedDestination("bluesky", lost_answer(), safe_retry_window=timedelta.max)
    clients = {"x": ScriptedDestination("x"), "mastodon": ScriptedDestination("mastodon"), "bluesky": bluesky}
    result = post_next(session_factory=session_factory, settings=three, destinations=clients)
    assert result.outcome is PostOutcome.x_failed and "Bluesky" in result.message
    assert deliveries(session_factory, tweet_id)["bluesky"].status is DeliveryStatus.queued
    assert post_next(session_factory=session_factory, settings=three, destinations=clients).outcome is PostOutcome.posted
    assert bluesky.posts[0][1] == bluesky.posts[1][1]
    assert [len(c.posts) for c in clients.values()] == [1, 1, 2]


def test_a_text_over_one_networks_rule_is_posted_only_where_it_is_valid(session_factory, three):
    text = "é" * 250  # valid on X (weight 1 each) and Bluesky (250 graphemes); over a 100-character Mastodon
    (tweet_id,) = store_texts(session_factory, text, status=TweetStatus.queued)
    clients = {n: ScriptedDestination(n) for n in ("x", "mastodon", "bluesky")}
    three = three.model_copy(update={"MASTODON_MAX_CHARACTERS": 100})
    result = post_next(session_factory=session_factory, settings=three, destinations=clients)
    assert result.outcome is PostOutcome.posted
    rows = deliveries(session_factory, tweet_id)
    assert rows["mastodon"].status is DeliveryStatus.rejected and "100" in rows["mastodon"].error
    assert clients["mastodon"].posts == []
    assert rows["x"].status is rows["bluesky"].status is DeliveryStatus.posted


def test_dry_run_is_per_destination(session_factory, three):
    (tweet_id,) = store_texts(session_factory, "half dry", status=TweetStatus.queued)
    three = three.model_copy(update={"MASTODON_DRY_RUN": True})
    clients = {n: ScriptedDestination(n) for n in ("x", "bluesky")}
    assert post_next(session_factory=session_factory, settings=three, destinations=clients).outcome is PostOutcome.posted
    rows = deliveries(session_factory, tweet_id)
    assert (rows["mastodon"].status, rows["mastodon"].dry_run, rows["mastodon"].url) == (DeliveryStatus.posted, True, None)
    assert rows["x"].dry_run is False and tweet(session_factory, tweet_id).dry_run is False


def test_missing_credentials_name_the_bots_variables(monkeypatch, session_factory):
    monkeypatch.setenv("BOTS", "alice,bob")
    monkeypatch.setenv("BOT_ALICE_DESTINATIONS", "mastodon")
    monkeypatch.setenv("BOT_ALICE_MASTODON_API_BASE_URL", "https://mastodon.example")
    monkeypatch.setenv("BOT_BOB_TWITTER_DRY_RUN", "true")
    settings = Settings(SECRET_TOKEN=TOKEN, _env_file=None)
    result = post_next(session_factory=session_factory, settings=settings, bot="alice")
    assert result.outcome is PostOutcome.not_configured
    assert "BOT_ALICE_MASTODON_ACCESS_TOKEN" in result.message and "BOT_ALICE_MASTODON_DRY_RUN" in result.message
    with pytest.raises(UnknownBot, match="alice, bob"):
        post_next(session_factory=session_factory, settings=settings, bot="carol")


def test_each_bot_posts_its_own_queue(monkeypatch, session_factory):
    monkeypatch.setenv("BOTS", "alice,bob")
    for name in ("ALICE", "BOB"):
        monkeypatch.setenv(f"BOT_{name}_TWITTER_DRY_RUN", "true")
    settings = Settings(SECRET_TOKEN=TOKEN, _env_file=None)
    with session_factory() as session:
        store.ingest_texts(session, account="alice", texts=["from alice"], status=TweetStatus.queued)
        store.ingest_texts(session, account="bob", texts=["from bob"], status=TweetStatus.queued)
        session.commit()
    result = post_next(session_factory=session_factory, settings=settings, bot="bob")
    assert (result.outcome, result.tweet.text) == (PostOutcome.posted, "from bob")
    assert post_next(session_factory=session_factory, settings=settings, bot="bob").outcome is PostOutcome.queue_empty
    assert post_next(session_factory=session_factory, settings=settings).tweet.text == "from alice"  # the first bot


def test_a_bot_never_borrows_the_plain_credentials(monkeypatch):
    monkeypatch.setenv("BOTS", "alice")
    monkeypatch.setenv("CONSUMER_KEY", "the-single-bots-key")
    settings = Settings(SECRET_TOKEN=TOKEN, _env_file=None)
    assert settings.bot("alice").CONSUMER_KEY is None
    assert settings.bot("alice").missing_credentials("x")[0] == "BOT_ALICE_CONSUMER_KEY"


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("BOTS", "alice,al ice", "BOTS is invalid"),
    ("BOTS", "alice,ALICE", "names a bot twice"),
    ("BOT_ALICE_DESTINATIONS", "x,myspace", "BOT_ALICE_DESTINATIONS is invalid"),
    ("BOT_ALICE_BLUESKY_HANDLE", "not a handle", "BOT_ALICE_BLUESKY_HANDLE is invalid"),
    ("BOT_ALICE_MASTODON_API_BASE_URL", "mastodon.example", "BOT_ALICE_MASTODON_API_BASE_URL is invalid"),
])
def test_bad_bot_settings_name_the_variable(monkeypatch, variable, value, message):
    from core.config import load_settings

    monkeypatch.setenv("BOTS", "alice")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        load_settings(SECRET_TOKEN=TOKEN, _env_file=None)


def test_the_single_bot_setup_is_unchanged(settings):
    assert list(settings.bots) == [ACCOUNT] and settings.default_bot.destinations == ("x",)


def test_the_store_keeps_a_text_that_some_destination_of_the_bot_may_post(client, monkeypatch, settings_values, engine):
    """Over X's 280 but within Mastodon's 500: stored for a bot that posts to Mastodon, refused
    (naming each destination's reason) for one that posts to X alone."""
    from api.app import create_app
    from fastapi.testclient import TestClient

    long_text = "a" * 400
    assert client.post("/add_tweets/", json={"tweet": long_text}).status_code == 422  # the X-only bot
    settings = Settings(**{**settings_values, "DESTINATIONS": "x,mastodon", "MASTODON_DRY_RUN": True})
    with TestClient(create_app(settings, engine=engine, configure_logs=False), headers={"x-token": TOKEN}) as both:
        answer = both.post("/add_tweets/", json={"tweet": long_text})
        assert answer.status_code == 201, answer.text
        too_long = both.post("/add_tweets/", json={"tweet": "b" * 600})
        assert too_long.status_code == 422
        assert "X:" in too_long.json()["detail"] and "Mastodon:" in too_long.json()["detail"]


def test_the_database_session_store_keeps_one_blob_per_bot_and_network(session_factory):
    from posting.destinations import DatabaseSessionStore

    alice = DatabaseSessionStore(session_factory, account="alice", network="bluesky")
    bob = DatabaseSessionStore(session_factory, account="bob", network="bluesky")
    assert alice.load() is None
    alice.save("sealed-1")
    alice.save("sealed-2")
    bob.save("sealed-bob")
    assert (alice.load(), bob.load()) == ("sealed-2", "sealed-bob")


def test_two_first_saves_at_once_keep_one_row(backend, session_factory, monkeypatch):
    """The second insert meets the unique key and turns into an update (Postgres: SQLite runs one
    write transaction at a time, so the race cannot happen there)."""
    if backend == "sqlite":
        pytest.skip("SQLite serialises write transactions (BEGIN IMMEDIATE)")
    from db.models import NetworkSession
    from posting.destinations import DatabaseSessionStore

    store_a = DatabaseSessionStore(session_factory, account="alice", network="bluesky")
    def first_looks_empty(session_self, statement, *args, **kwargs):
        result = real_scalar(session_self, statement, *args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            # Another run saves between this run's look-up and its insert.
            with session_factory() as other:
                other.add(NetworkSession(account="alice", network="bluesky", sealed="theirs"))
                other.commit()
        return result

    from sqlalchemy.orm import Session

    calls: list[int] = []
    real_scalar = Session.scalar
    monkeypatch.setattr(Session, "scalar", first_looks_empty)
    store_a.save("ours")
    monkeypatch.undo()
    with session_factory() as session:
        assert session.query(NetworkSession).count() == 1
    assert store_a.load() == "ours"


# ---- the real clients over HTTP, through the settings, as the service runs them ----

@pytest.fixture
def everywhere(settings_values, fake_x, fake_mastodon, fake_bluesky) -> Settings:
    from tests.fake_bluesky import APP_PASSWORD, HANDLE

    return Settings(**{
        **settings_values, **fake_x.settings_values(), **fake_mastodon.settings_values(),
        "DESTINATIONS": "x,mastodon,bluesky", "BLUESKY_PDS_URL": fake_bluesky.base_url,
        "BLUESKY_HANDLE": HANDLE, "BLUESKY_APP_PASSWORD": APP_PASSWORD, "BLUESKY_TIMEOUT_SECONDS": 5,
    })


def test_the_service_posts_to_x_mastodon_and_bluesky_over_http(everywhere, engine, session_factory,
                                                               fake_x, fake_mastodon, fake_bluesky):
    from api.app import create_app
    from fastapi.testclient import TestClient
    from db.models import NetworkSession

    store_texts(session_factory, "one for every network", "and another", status=TweetStatus.queued)
    with TestClient(create_app(everywhere, engine=engine, configure_logs=False), headers={"x-token": TOKEN}) as client:
        first = client.post("/tweet_curated/", headers={"Idempotency-Key": "run-1"})
        assert first.status_code == 200, first.text
        assert client.post("/tweet_curated/", headers={"Idempotency-Key": "run-1"}).headers["Idempotent-Replayed"] == "true"
        assert client.post("/tweet_curated/", headers={"Idempotency-Key": "run-2"}).status_code == 200
        assert client.post("/tweet_curated/", headers={"Idempotency-Key": "run-3"}).status_code == 404
    body = first.json()
    assert {d["destination"]: d["status"] for d in body["tweet"]["deliveries"]} == dict.fromkeys(
        ("x", "mastodon", "bluesky"), "posted")
    bluesky_url = next(d["url"] for d in body["tweet"]["deliveries"] if d["destination"] == "bluesky")
    assert bluesky_url.startswith("https://bsky.app/profile/") and bluesky_url in body["response"]
    assert sorted(p["text"] for p in fake_x.posted) == sorted(p["text"] for p in fake_mastodon.posted)
    assert sorted(r["value"]["text"] for r in fake_bluesky.records.values()) == sorted(p["text"] for p in fake_x.posted)
    assert len(fake_x.posted) == 2 and fake_bluesky.create_session_calls == 1  # the session is kept across runs
    with session_factory() as session:
        (kept,) = session.query(NetworkSession).all()
        assert kept.account == ACCOUNT and not any(token in kept.sealed for token in fake_bluesky.issued_tokens())


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_command_line_posts_for_the_bot_it_names(tmp_path, engine, session_factory):
    from tests.test_posting import run_cli

    with session_factory() as session:
        store.ingest_texts(session, account="alice", texts=["alice's"], status=TweetStatus.queued)
        store.ingest_texts(session, account="bob", texts=["bob's"], status=TweetStatus.queued)
        session.commit()
    env = {"DATABASE_URL": engine.url.render_as_string(hide_password=False), "SECRET_TOKEN": TOKEN,
           "BOTS": "alice,bob", "BOT_ALICE_TWITTER_DRY_RUN": "true", "BOT_BOB_TWITTER_DRY_RUN": "true"}
    bob = run_cli(tmp_path, env, "--bot", "bob")
    assert bob.returncode == 0 and bob.stdout.startswith("Dry run: tweet"), bob.stdout + bob.stderr
    assert run_cli(tmp_path, env, "--bot", "bob").returncode == 3
    unknown = run_cli(tmp_path, env, "--bot", "carol")
    assert unknown.returncode == 2 and "no bot is named 'carol'" in unknown.stdout
    with session_factory() as session:
        assert {t.account: t.status for t in session.query(Tweet)} == {"alice": TweetStatus.queued, "bob": TweetStatus.posted}


def test_each_bots_x_client_has_its_own_keys_and_the_services_address(monkeypatch, tmp_path, session_factory):
    """A bot's X client signs with the bot's four keys, never the plain ones (set here in the
    environment and in a .env file), and is aimed at the service's X address and timeout."""
    from posting.destinations import _x_settings, make_destinations

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("BEARER_TOKEN=from-dotenv\n")
    monkeypatch.setenv("BOTS", "alice,bob")
    for plain in ("CONSUMER_KEY", "CONSUMER_SECRET", "ACCESS_KEY", "ACCESS_SECRET"):
        monkeypatch.setenv(plain, f"plain-{plain}")
        for name in ("ALICE", "BOB"):
            monkeypatch.setenv(f"BOT_{name}_{plain}", f"{name.lower()}-{plain}")
    settings = Settings(SECRET_TOKEN=TOKEN, TWITTER_API_BASE_URL="https://x.example/", TWITTER_TIMEOUT_SECONDS=7,
                        _env_file=None)
    for name in ("alice", "bob"):
        x = _x_settings(settings.bot(name), settings)
        assert x is not settings
        assert [getattr(x, v).get_secret_value() for v in ("CONSUMER_KEY", "CONSUMER_SECRET", "ACCESS_KEY",
                                                           "ACCESS_SECRET")] == [
            f"{name}-CONSUMER_KEY", f"{name}-CONSUMER_SECRET", f"{name}-ACCESS_KEY", f"{name}-ACCESS_SECRET"]
        assert (x.BEARER_TOKEN, x.TWITTER_API_BASE_URL, x.TWITTER_TIMEOUT_SECONDS) == (None, "https://x.example", 7)
        destination = make_destinations(settings.bot(name), settings, session_factory)["x"]
        client = destination.client
        assert (destination.account, client.consumer_key, client.consumer_secret, client.access_token,
                client.access_token_secret) == (name, f"{name}-CONSUMER_KEY", f"{name}-CONSUMER_SECRET",
                                                f"{name}-ACCESS_KEY", f"{name}-ACCESS_SECRET")
        assert (client.session.base.geturl(), client.session.timeout) == ("https://x.example", 7)
    assert _x_settings(settings, settings) is settings  # the one bot: the service's own settings


def test_the_database_session_store_keeps_each_network_of_a_bot_apart(session_factory):
    from posting.destinations import DatabaseSessionStore

    bluesky = DatabaseSessionStore(session_factory, account="alice", network="bluesky")
    other = DatabaseSessionStore(session_factory, account="alice", network="other")
    other.save("sealed-other")
    assert bluesky.load() is None
    bluesky.save("sealed-bluesky")
    bluesky.save("sealed-bluesky-2")
    assert (bluesky.load(), other.load()) == ("sealed-bluesky-2", "sealed-other")


def test_a_save_that_keeps_meeting_the_unique_key_gives_up_after_two_tries(session_factory, monkeypatch):
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    from posting.destinations import DatabaseSessionStore

    commits: list[int] = []

    def always_taken(session_self):
        commits.append(1)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    monkeypatch.setattr(Session, "commit", always_taken)
    with pytest.raises(RuntimeError) as raised:
        DatabaseSessionStore(session_factory, account="alice", network="bluesky").save("sealed")
    assert (str(raised.value), len(commits)) == ("could not save the network session", 2)


def test_a_text_no_destination_may_post_says_each_networks_reason():
    from posting.destinations import missing_configuration, text_rule

    bot = Settings(SECRET_TOKEN=TOKEN, ACCOUNT=ACCOUNT, DESTINATIONS="x,mastodon,bluesky", _env_file=None)
    assert text_rule(bot)("b" * 600) == (
        "X: tweet is 600 weighted characters, over X's limit of 280; "
        "Mastodon: 600 characters, 100 over Mastodon's 500; Bluesky: 600 graphemes over Bluesky's 300")
    assert missing_configuration(bot) == (
        "posting to X is not configured: CONSUMER_KEY, CONSUMER_SECRET, ACCESS_KEY, ACCESS_SECRET not set "
        "(see .env_reference), or set TWITTER_DRY_RUN=true; posting to Mastodon is not configured: "
        "MASTODON_API_BASE_URL, MASTODON_ACCESS_TOKEN not set (see .env_reference), or set MASTODON_DRY_RUN=true; "
        "posting to Bluesky is not configured: BLUESKY_HANDLE, BLUESKY_APP_PASSWORD not set (see .env_reference), "
        "or set BLUESKY_DRY_RUN=true")


def test_the_address_variable_is_the_services_for_x_and_the_bots_elsewhere(monkeypatch):
    from posting.destinations import address_variable

    monkeypatch.setenv("BOTS", "alice")
    alice = Settings(SECRET_TOKEN=TOKEN, _env_file=None).bot("alice")
    assert [address_variable(alice, n) for n in ("x", "mastodon", "bluesky")] == [
        "TWITTER_API_BASE_URL", "BOT_ALICE_MASTODON_API_BASE_URL", "BOT_ALICE_BLUESKY_PDS_URL"]


def test_a_dry_run_destination_gets_no_client_and_the_next_one_does(monkeypatch, session_factory):
    """X (first, a dry run) is skipped; Mastodon after it is built with the service's timeout."""
    from posting.destinations import make_destinations

    monkeypatch.setenv("BOTS", "alice")
    monkeypatch.setenv("BOT_ALICE_DESTINATIONS", "x,mastodon")
    monkeypatch.setenv("BOT_ALICE_TWITTER_DRY_RUN", "true")
    monkeypatch.setenv("BOT_ALICE_MASTODON_API_BASE_URL", "https://mastodon.example")
    monkeypatch.setenv("BOT_ALICE_MASTODON_ACCESS_TOKEN", "alice-token")
    settings = Settings(SECRET_TOKEN=TOKEN, MASTODON_TIMEOUT_SECONDS=9, _env_file=None)
    clients = make_destinations(settings.bot("alice"), settings, session_factory)
    assert list(clients) == ["mastodon"]
    assert (clients["mastodon"]._api.api_base_url, clients["mastodon"]._api.request_timeout) == (
        "https://mastodon.example", 9)


def test_the_sqlstate_is_psycopg2s_pgcode_else_pg8000s_c_field():
    from sqlalchemy.exc import DBAPIError

    from posting.destinations import _sqlstate

    class Psycopg2Error(Exception):
        pgcode = "55P03"

    def wrapped(orig):
        return DBAPIError("SELECT 1", {}, orig)

    assert _sqlstate(wrapped(Psycopg2Error({"C": "40001"}))) == "55P03"
    assert _sqlstate(wrapped(Psycopg2Error())) == "55P03"
    assert _sqlstate(wrapped(Exception({"C": "55P03", "M": "lock timeout"}))) == "55P03"
    assert _sqlstate(wrapped(Exception("no fields"))) is None
    assert _sqlstate(wrapped(Exception())) is None
    assert _sqlstate(wrapped(None)) is None


# ---- with several bots, what to check names the variables as the operator sets them for the bot ----

@pytest.fixture
def bob(monkeypatch, session_factory, fake_x):
    """A second bot (after alice), with one queued tweet: a function of its destinations and variables
    (BOT_BOB_ added) giving its settings, the service's X address that of the fake."""
    monkeypatch.setenv("BOTS", "alice,bob")
    with session_factory() as session:
        store.ingest_texts(session, account="bob", texts=["bob's post"], status=TweetStatus.queued)
        session.commit()

    def settings_for(destinations: str, **variables) -> Settings:
        monkeypatch.setenv("BOT_BOB_DESTINATIONS", destinations)
        for name, value in variables.items():
            monkeypatch.setenv(f"BOT_BOB_{name}", str(value))
        return Settings(SECRET_TOKEN=TOKEN, TWITTER_API_BASE_URL=fake_x.base_url, MASTODON_TIMEOUT_SECONDS=5,
                        BLUESKY_TIMEOUT_SECONDS=5, _env_file=None)

    return settings_for


def bobs_failure(session_factory, settings: Settings) -> str:
    result = post_next(session_factory=session_factory, settings=settings, bot="bob")
    assert result.tweet.status is TweetStatus.queued, result.message
    return result.message


def test_mastodon_refusing_a_bots_token_names_its_prefixed_variable(bob, session_factory, fake_mastodon):
    settings = bob("mastodon", MASTODON_API_BASE_URL=fake_mastodon.base_url, MASTODON_ACCESS_TOKEN="not-the-token")
    assert "(check BOT_BOB_MASTODON_ACCESS_TOKEN: it must be valid and have the write:statuses scope)" in (
        bobs_failure(session_factory, settings))


def test_mastodon_at_no_such_address_names_the_bots_address_variable(bob, session_factory, fake_mastodon):
    from tests.fake_mastodon import ACCESS_TOKEN

    settings = bob("mastodon", MASTODON_API_BASE_URL=f"{fake_mastodon.base_url}/not-mastodon",
                   MASTODON_ACCESS_TOKEN=ACCESS_TOKEN)
    message = bobs_failure(session_factory, settings)
    assert "404" in message and "(check BOT_BOB_MASTODON_API_BASE_URL: the instance's address, such as " \
                                "https://mastodon.social)" in message
    assert "MASTODON_API_BASE_URL" not in message.replace("BOT_BOB_MASTODON_API_BASE_URL", "")


def test_a_bots_unusable_mastodon_address_names_its_prefixed_variable(bob, session_factory):
    settings = bob("mastodon", MASTODON_API_BASE_URL="http://exa mple.com", MASTODON_ACCESS_TOKEN="token")
    message = bobs_failure(session_factory, settings)
    assert message.startswith("could not reach Mastodon (could not send to Mastodon: ")
    assert "(check BOT_BOB_MASTODON_API_BASE_URL: the instance's address" in message


def test_bluesky_refusing_a_bots_login_names_its_prefixed_variables(bob, session_factory, fake_bluesky):
    from tests.fake_bluesky import HANDLE

    settings = bob("bluesky", BLUESKY_PDS_URL=fake_bluesky.base_url, BLUESKY_HANDLE=HANDLE,
                   BLUESKY_APP_PASSWORD="not-the-password")
    assert "(check BOT_BOB_BLUESKY_HANDLE and BOT_BOB_BLUESKY_APP_PASSWORD)" in bobs_failure(session_factory, settings)


@pytest.mark.parametrize(("answer", "check"), [
    (None, "X rejected the credentials: check BOT_BOB_ACCESS_KEY, BOT_BOB_ACCESS_SECRET, BOT_BOB_CONSUMER_KEY and "
           "BOT_BOB_CONSUMER_SECRET (X answered 401"),
    ("forbidden", "then regenerate BOT_BOB_ACCESS_KEY and BOT_BOB_ACCESS_SECRET (X answered 403"),
])
def test_x_refusing_a_bots_credentials_names_its_prefixed_variables(bob, session_factory, fake_x, answer, check):
    from tests.fake_x import FakeX

    keys = {name: value for name, value in fake_x.settings_values().items() if name in (
        "CONSUMER_KEY", "CONSUMER_SECRET", "ACCESS_KEY", "ACCESS_SECRET")}
    if answer is None:
        keys["ACCESS_SECRET"] = "not-the-secret"  # a signature X refuses: 401
    else:
        fake_x.enqueue("POST", "/2/tweets", FakeX.forbidden())
    assert check in bobs_failure(session_factory, bob("x", **keys))
