"""Exactly once per destination, through the real clients (tweepy, Mastodon.py, atproto) over real HTTP:
under a storm of concurrent runs of two bots, and when a process is killed between "the network
accepted" and "recorded".

Each bot has its own accounts: an access token on the one fake X (one app, CONSUMER_KEY, for both),
a token on the one fake Mastodon, and an account on its own fake PDS (a Bluesky account lives on its
PDS). The fakes check each account's credentials and keep which account made every post, so the
tests count posts per text and per account.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import selectinload

from core.config import Settings
from db import store
from db.engine import make_engine, make_session_factory
from db.models import Base, Delivery, DeliveryStatus, Tweet, TweetStatus, utcnow
from posting.job import post_next
from posting.outcomes import PostOutcome
from tests.conftest import BACKENDS, TOKEN, postgres_url
from tests.fake_bluesky import CREATE_RECORD, GET_RECORD, HANDLE, FakeBluesky
from tests.fake_mastodon import INSTANCE_PATH, STATUSES_PATH, FakeMastodon, ThenAnswer
from tests.fake_x import CONSUMER_KEY, CONSUMER_SECRET, FakeResponse, FakeX

ROOT = Path(__file__).resolve().parent.parent
BOTS = ("alice", "bob")
NETWORKS = ("x", "mastodon", "bluesky")
TWEETS_PER_BOT = 6
RUNS_PER_BOT = 14  # runs 0-7 send 4 idempotency keys twice each (a scheduler's retries), 8-13 none


def x_access_key(bot: str) -> str:
    return f"{10 + BOTS.index(bot)}-{bot}-access-key"


def mastodon_token(bot: str) -> str:
    return f"{bot}-mastodon-token"


def app_password(bot: str) -> str:
    return f"{bot}-app-pass-word"


class AccountsX(FakeX):
    """Fake X for several accounts: each post is kept with the access token that made it.

    No duplicate-content refusal: a second post of one text must show here, not hide behind X's
    403. The next `lose_answers` posts are stored, then their connection is closed unanswered.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lose_answers = 0

    def _create_tweet(self, request):
        posted = (request.json or {}).get("text")
        if not isinstance(posted, str) or not posted:
            return self.bad_request("Invalid Request: 'text' is required")
        with self._lock:
            tweet = {"id": str(next(self._ids)), "text": posted}
            self.posted.append({**tweet, "account": request.oauth["oauth_token"]})
            lost, self.lose_answers = self.lose_answers > 0, max(0, self.lose_answers - 1)
        if lost:
            return FakeResponse(0, drop=True)
        return FakeResponse(201, {"data": {**tweet, "edit_history_tweet_ids": [tweet["id"]]}})


class AccountsMastodon(FakeMastodon):
    """Fake Mastodon for several accounts (`tokens`: access token -> account): each status is kept
    with its account, and an Idempotency-Key counts per account, as Mastodon scopes it."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: dict[str, str] = {}
        self._one_status = threading.Lock()

    def _account(self, request) -> str | None:
        header = request.headers.get("authorization", "")
        return self.tokens.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None

    def _authenticate(self, request, host):
        if request.path.rstrip("/") == INSTANCE_PATH:
            return None
        if self._account(request) is None:
            return self.unauthorized()
        request.auth = "bearer"
        return None

    def _create_status(self, request):
        account = self._account(request)
        if "idempotency-key" in request.headers:
            request.headers["idempotency-key"] = f"{account}/{request.headers['idempotency-key']}"
        with self._one_status:
            before = len(self.posted)
            response = super()._create_status(request)
            for status in self.posted[before:]:
                status["account"] = account
        return response


@dataclass
class Fakes:
    x: AccountsX
    mastodon: AccountsMastodon
    pds: dict[str, FakeBluesky]  # bot -> the PDS of its Bluesky account

    def texts(self, bot: str) -> dict[str, list[str]]:
        """Every text each network took from the bot's account, one entry per post."""
        return {
            "x": [p["text"] for p in self.x.posted if p["account"] == x_access_key(bot)],
            "mastodon": [s["text"] for s in self.mastodon.posted if s["account"] == bot],
            "bluesky": [r["value"]["text"] for r in self.pds[bot].records.values()],
        }

    def env(self, bots: tuple[str, ...] = BOTS, destinations: str = "x,mastodon,bluesky") -> dict[str, str]:
        """The service's variables for these bots, each with its own credentials on the fakes."""
        values = {"BOTS": ",".join(bots), "SECRET_TOKEN": TOKEN, "TWITTER_API_BASE_URL": self.x.base_url,
                  "TWITTER_TIMEOUT_SECONDS": "5", "MASTODON_TIMEOUT_SECONDS": "5", "BLUESKY_TIMEOUT_SECONDS": "5"}
        for bot in bots:
            values.update({f"BOT_{bot.upper()}_{name}": value for name, value in {
                "DESTINATIONS": destinations, "TWEET_ORDER": "oldest",
                "CONSUMER_KEY": CONSUMER_KEY, "CONSUMER_SECRET": CONSUMER_SECRET,
                "ACCESS_KEY": x_access_key(bot), "ACCESS_SECRET": f"{bot}-access-secret",
                "MASTODON_API_BASE_URL": self.mastodon.base_url, "MASTODON_ACCESS_TOKEN": mastodon_token(bot),
                "BLUESKY_PDS_URL": self.pds[bot].base_url, "BLUESKY_HANDLE": HANDLE,
                "BLUESKY_APP_PASSWORD": app_password(bot),
            }.items()})
        return values

    def settings(self, monkeypatch, **env) -> Settings:
        for name, value in self.env(**env).items():
            monkeypatch.setenv(name, value)
        return Settings(_env_file=None)


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    x, mastodon = AccountsX().start(), AccountsMastodon().start()
    pds = {bot: FakeBluesky().start() for bot in BOTS}
    for bot in BOTS:
        x.access_secrets[x_access_key(bot)] = f"{bot}-access-secret"
        mastodon.tokens[mastodon_token(bot)] = bot
        pds[bot].app_password = app_password(bot)
    yield Fakes(x, mastodon, pds)
    for server in (x, mastodon, *pds.values()):
        server.stop()


def queue_texts(session_factory, bot: str, texts: list[str]) -> None:
    with session_factory() as session:
        store.ingest_texts(session, account=bot, texts=texts, status=TweetStatus.queued)
        session.commit()


def all_tweets(session_factory) -> list[Tweet]:
    with session_factory() as session:
        return list(session.scalars(select(Tweet).options(selectinload(Tweet.deliveries)).order_by(Tweet.id)))


def named(counts: Counter) -> dict[str, int]:
    return {member.value: n for member, n in counts.most_common()}


# ---- the storm ---------------------------------------------------------------------------------


def test_a_storm_of_runs_of_two_bots_posts_every_tweet_once_per_destination(monkeypatch, session_factory, fakes):
    settings = fakes.settings(monkeypatch)
    for bot in BOTS:
        queue_texts(session_factory, bot, [f"{bot} says storm tweet {n}" for n in range(TWEETS_PER_BOT)])
    # Faults, taken by whichever runs' requests come first: each network rate-limits once and fails
    # once; X loses one answer after posting, Mastodon and Bluesky one each too.
    fakes.x.enqueue("POST", "/2/tweets", FakeX.rate_limited(), FakeX.server_error(503))
    fakes.x.lose_answers = 1
    fakes.mastodon.enqueue("POST", STATUSES_PATH, FakeMastodon.rate_limited(), FakeMastodon.server_error(502),
                           ThenAnswer(drop=True))
    fakes.pds["alice"].enqueue("POST", CREATE_RECORD, FakeBluesky.rate_limited(), FakeBluesky.lands_then_drops())
    fakes.pds["bob"].enqueue("POST", CREATE_RECORD, FakeBluesky.server_error(503), FakeBluesky.lands_then_drops())

    runs = [(bot, f"{bot}-slot-{n // 2}" if n < 8 else None) for bot in BOTS for n in range(RUNS_PER_BOT)]
    start = threading.Barrier(len(runs))

    def run(bot: str, key: str | None) -> PostOutcome:
        start.wait()
        return post_next(session_factory=session_factory, settings=settings, bot=bot, idempotency_key=key).outcome

    with ThreadPoolExecutor(len(runs)) as pool:
        storm = Counter(pool.map(lambda args: run(*args), runs))
    # Then the scheduler's later runs, one at a time, until each queue is empty.
    later = Counter()
    for bot in BOTS:
        for _ in range(3 * TWEETS_PER_BOT):
            later[outcome := post_next(session_factory=session_factory, settings=settings, bot=bot).outcome] += 1
            if outcome is PostOutcome.queue_empty:
                break

    tweets = all_tweets(session_factory)
    unconfirmed = [t for t in tweets if t.status is TweetStatus.unconfirmed]
    for bot in BOTS:
        texts = fakes.texts(bot)
        mine = [t for t in tweets if t.account == bot]
        for network, sent in texts.items():
            assert max(Counter(sent).values()) == 1, (bot, network, Counter(sent).most_common(2))  # never twice
            delivered = {t.text for t in mine for d in t.deliveries
                         if d.destination == network and d.status is DeliveryStatus.posted}
            # What each account holds is what was recorded posted there, or a lost answer's post
            # (a tweet left unconfirmed): bob's tweets never reach alice's accounts.
            assert delivered <= set(sent) <= delivered | {t.text for t in mine if t.status is TweetStatus.unconfirmed}
        for tweet in (t for t in mine if t.status is TweetStatus.posted):
            assert {d.destination: d.status for d in tweet.deliveries} == dict.fromkeys(NETWORKS, DeliveryStatus.posted)
    # None lost: posted, or unconfirmed saying why (the one X answer lost after it posted).
    statuses = Counter(t.status for t in tweets)
    assert statuses == {TweetStatus.posted: 2 * TWEETS_PER_BOT - 1, TweetStatus.unconfirmed: 1}, (statuses, storm, later)
    x_delivery = next(d for d in unconfirmed[0].deliveries if d.destination == "x")
    assert x_delivery.status is DeliveryStatus.unconfirmed and x_delivery.error in unconfirmed[0].error
    assert unconfirmed[0].text in fakes.texts(unconfirmed[0].account)["x"]  # it did land, once (above)
    # Every fault was served.
    servers = (fakes.x, fakes.mastodon, *fakes.pds.values())
    assert not any(answers for server in servers for answers in server._canned.values()) and fakes.x.lose_answers == 0
    assert storm[PostOutcome.posted] >= 1 and storm[PostOutcome.queue_empty] + storm[PostOutcome.in_flight] >= 1
    found_again = {"mastodon": len(fakes.mastodon.post_attempts) - len(fakes.mastodon.posted) - 2,
                   "bluesky": sum(p.create_record_calls - len(p.records) for p in fakes.pds.values()) - 2}
    print(f"storm outcomes {named(storm)}; later runs {named(later)}; tweets {named(statuses)}; "
          f"posts X {len(fakes.x.posted)}, Mastodon {len(fakes.mastodon.posted)}, "
          f"Bluesky {sum(len(p.records) for p in fakes.pds.values())}; repeats found already there {found_again}")


# ---- a lost answer where the key makes a repeat harmless ----------------------------------------


@pytest.mark.parametrize("network", ["mastodon", "bluesky"])
def test_a_lost_answer_on_a_keyed_network_is_found_by_the_next_run_not_posted_again(
    monkeypatch, session_factory, fakes, network
):
    settings = fakes.settings(monkeypatch, bots=("alice",), destinations=network)
    queue_texts(session_factory, "alice", ["alice says it landed"])
    if network == "mastodon":
        fakes.mastodon.enqueue("POST", STATUSES_PATH, ThenAnswer(drop=True))
    else:
        fakes.pds["alice"].enqueue("POST", CREATE_RECORD, FakeBluesky.lands_then_drops())
    first = post_next(session_factory=session_factory, settings=settings, bot="alice")
    assert first.outcome is PostOutcome.x_failed, first.message  # "try again later": the delivery stays queued
    (delivery,) = all_tweets(session_factory)[0].deliveries
    assert (delivery.status, fakes.texts("alice")[network]) == (DeliveryStatus.queued, ["alice says it landed"])

    again = post_next(session_factory=session_factory, settings=settings, bot="alice")
    assert again.outcome is PostOutcome.posted, again.message
    (tweet,) = all_tweets(session_factory)
    assert (tweet.status, tweet.deliveries[0].key) == (TweetStatus.posted, delivery.key)
    assert fakes.texts("alice")[network] == ["alice says it landed"]  # found there, not posted again


# ---- a process killed between "the network accepted" and "recorded" ----------------------------


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path) -> Iterator[str]:
    """An empty database a child process reaches by its URL: a SQLite file, or a Postgres database of
    its own (a schema of temporary_schema's is set per connection, which a child cannot inherit)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'killed.db'}"
        return
    request.applymarker(pytest.mark.postgres)
    server = make_url(postgres_url(request.param))
    name = f"storm_killed_{uuid.uuid4().hex[:12]}"
    admin = make_engine(server.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def child_database(database_url) -> Iterator[tuple[str, object]]:
    """The URL and a session factory of a database with the service's tables."""
    engine = make_engine(database_url)
    Base.metadata.create_all(engine)
    yield database_url, make_session_factory(engine)
    engine.dispose()


class PostingProcess:
    """`python -m posting.post_next --bot alice` as a child process, with the fakes' variables."""

    def __init__(self, tmp_path: Path, env: dict[str, str]):
        self.tmp_path, self.env = tmp_path, env
        self.process: subprocess.Popen | None = None
        self.started = threading.Event()

    def run(self) -> subprocess.CompletedProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "posting.post_next", "--bot", "alice"], cwd=self.tmp_path,  # no stray .env
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **self.env},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.started.set()
        stdout, stderr = self.process.communicate(timeout=120)
        self.started.clear()
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, stdout, stderr)

    def killed_once_stored(self, handler):
        """A fake's route handler that stores the post, then kills this process before answering."""
        def store_then_kill(request):
            handler(request)
            self.started.wait()
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return FakeResponse(0, drop=True)
        return store_then_kill


def end_lease(session_factory) -> None:
    """The killed run's claim is older than POSTING_LEASE_MINUTES (instead of waiting for it)."""
    with session_factory() as session:
        session.execute(update(Tweet).where(Tweet.status == TweetStatus.posting)
                        .values(claimed_at=utcnow() - timedelta(hours=1)))
        session.commit()


def one_tweet(session_factory, tweet_text: str) -> Tweet:
    return next(t for t in all_tweets(session_factory) if t.text == tweet_text)


def test_a_run_killed_after_x_took_the_post_leaves_it_unconfirmed_never_posted_twice(tmp_path, fakes, child_database):
    url, session_factory = child_database
    queue_texts(session_factory, "alice", ["alice says killed mid-post", "alice says the next one"])
    child = PostingProcess(tmp_path, {**fakes.env(bots=("alice",)), "DATABASE_URL": url})
    fakes.x.route("POST", "/2/tweets", child.killed_once_stored(fakes.x._create_tweet), user_auth_only=True)

    killed = child.run()
    assert killed.returncode == -signal.SIGKILL and killed.stdout == ""
    tweet = one_tweet(session_factory, "alice says killed mid-post")
    assert tweet.status is TweetStatus.posting and tweet.deliveries[0].status is DeliveryStatus.posting
    assert fakes.texts("alice")["x"] == ["alice says killed mid-post"]  # X has it; the database does not know

    fakes.x.route("POST", "/2/tweets", fakes.x._create_tweet, user_auth_only=True)
    end_lease(session_factory)
    after = child.run()  # sweeps the killed run's tweet, then posts the next one everywhere
    assert after.returncode == 0 and after.stdout.startswith("New tweet posted @ https://x.com/alice/status/"), after
    tweet = one_tweet(session_factory, "alice says killed mid-post")
    x = next(d for d in tweet.deliveries if d.destination == "x")
    assert (tweet.status, x.status) == (TweetStatus.unconfirmed, DeliveryStatus.unconfirmed)
    assert "stopped mid-post" in tweet.error and "stopped mid-post" in x.error
    assert one_tweet(session_factory, "alice says the next one").status is TweetStatus.posted

    assert child.run().returncode == 3  # the queue is empty: the unconfirmed tweet waits for an operator
    assert fakes.texts("alice") == {
        "x": ["alice says killed mid-post", "alice says the next one"],  # never twice
        "mastodon": ["alice says the next one"], "bluesky": ["alice says the next one"],
    }


@pytest.mark.parametrize("network", ["mastodon", "bluesky"])
def test_a_run_killed_after_a_keyed_network_took_the_post_is_found_there_once_requeued(
    tmp_path, fakes, child_database, network
):
    url, session_factory = child_database
    queue_texts(session_factory, "alice", ["alice says killed mid-post"])
    child = PostingProcess(tmp_path, {**fakes.env(bots=("alice",), destinations=network), "DATABASE_URL": url})
    fake, path, handler = (
        (fakes.mastodon, STATUSES_PATH, fakes.mastodon._create_status) if network == "mastodon"
        else (fakes.pds["alice"], CREATE_RECORD, fakes.pds["alice"]._create_record)
    )
    fake.route("POST", path, child.killed_once_stored(handler))

    assert child.run().returncode == -signal.SIGKILL
    assert fakes.texts("alice")[network] == ["alice says killed mid-post"]
    fake.route("POST", path, handler)
    end_lease(session_factory)
    assert child.run().returncode == 3  # the sweep: unconfirmed, nothing posted
    tweet = one_tweet(session_factory, "alice says killed mid-post")
    (delivery,) = tweet.deliveries
    assert (tweet.status, delivery.status) == (TweetStatus.unconfirmed, DeliveryStatus.unconfirmed)
    key = delivery.key

    with session_factory() as session:  # the operator requeues it (PATCH /tweets/{id} status=queued)
        store.update_tweet(session, store.get_tweet(session, tweet.id, for_update=True), status=TweetStatus.queued)
        session.commit()
    requeued = child.run()
    assert requeued.returncode == 0, requeued
    tweet = one_tweet(session_factory, "alice says killed mid-post")
    (delivery,) = tweet.deliveries
    assert (tweet.status, delivery.status, delivery.key) == (TweetStatus.posted, DeliveryStatus.posted, key)
    assert fakes.texts("alice")[network] == ["alice says killed mid-post"]  # found there, nothing new
    if network == "bluesky":
        assert delivery.remote_id == key and fakes.pds["alice"].create_record_calls == 2  # the second refused
        assert len(fakes.pds["alice"].received("GET", GET_RECORD)) == 1  # and the client found it there
    else:
        (status,) = fakes.mastodon.posted
        assert delivery.remote_id == status["id"] and len(fakes.mastodon.post_attempts) == 2


def first_attempt_earlier(session_factory, by: timedelta) -> None:
    """Move the deliveries' first attempts back in time (instead of waiting)."""
    with session_factory() as session:
        for delivery in session.scalars(select(Delivery).where(Delivery.claimed_at.is_not(None))):
            delivery.claimed_at -= by
        session.commit()


def test_a_lost_answer_on_mastodon_retried_after_its_key_expired_is_unconfirmed_not_posted_again(
    monkeypatch, session_factory, fakes
):
    """Mastodon forgets an Idempotency-Key after an hour; the next run may come a day later (a daily SCHEDULE)."""
    settings = fakes.settings(monkeypatch, bots=("alice",), destinations="mastodon")
    queue_texts(session_factory, "alice", ["alice says it landed yesterday"])
    fakes.mastodon.enqueue("POST", STATUSES_PATH, ThenAnswer(drop=True))
    assert post_next(session_factory=session_factory, settings=settings, bot="alice").outcome is PostOutcome.x_failed

    day = timedelta(days=1)
    fakes.mastodon.clock = lambda: time.time() + day.total_seconds()
    first_attempt_earlier(session_factory, day)
    later = post_next(session_factory=session_factory, settings=settings, bot="alice")
    assert fakes.texts("alice")["mastodon"] == ["alice says it landed yesterday"]  # never twice
    assert later.outcome is PostOutcome.unconfirmed, later.message
    (tweet,) = all_tweets(session_factory)
    assert (tweet.status, tweet.deliveries[0].status) == (TweetStatus.unconfirmed, DeliveryStatus.unconfirmed)
    assert "no longer" in tweet.deliveries[0].error


def test_a_rate_limit_on_mastodon_retried_a_day_later_posts(monkeypatch, session_factory, fakes):
    """Nothing landed: the hour of the key does not matter, and the retry posts."""
    settings = fakes.settings(monkeypatch, bots=("alice",), destinations="mastodon")
    queue_texts(session_factory, "alice", ["alice says after the limit"])
    fakes.mastodon.enqueue("POST", STATUSES_PATH, FakeMastodon.rate_limited())
    assert post_next(session_factory=session_factory, settings=settings, bot="alice").outcome is PostOutcome.rate_limited
    first_attempt_earlier(session_factory, timedelta(days=1))
    assert post_next(session_factory=session_factory, settings=settings, bot="alice").outcome is PostOutcome.posted
    assert fakes.texts("alice")["mastodon"] == ["alice says after the limit"]


def test_the_answer_for_a_tweet_posted_in_part_gives_the_links_it_has(monkeypatch, session_factory, fakes):
    settings = fakes.settings(monkeypatch, bots=("alice",), destinations="x,mastodon")
    queue_texts(session_factory, "alice", ["alice says half way"])
    fakes.mastodon.enqueue("POST", STATUSES_PATH, FakeMastodon.rate_limited())
    result = post_next(session_factory=session_factory, settings=settings, bot="alice")
    assert result.outcome is PostOutcome.rate_limited
    assert f"X @ https://x.com/alice/status/{fakes.x.posted[0]['id']}" in result.message, result.message
    assert "confirmed by an operator" not in result.message


def test_the_answer_for_a_tweet_posted_with_x_in_dry_run_says_so(monkeypatch, session_factory, fakes):
    monkeypatch.setenv("BOT_ALICE_TWITTER_DRY_RUN", "true")
    settings = fakes.settings(monkeypatch, bots=("alice",), destinations="x,mastodon")
    queue_texts(session_factory, "alice", ["alice says only on Mastodon"])
    result = post_next(session_factory=session_factory, settings=settings, bot="alice")
    assert result.outcome is PostOutcome.posted and fakes.x.posted == []
    assert "X: dry run, nothing sent" in result.message and "confirmed by an operator" not in result.message, result.message


@pytest.mark.parametrize("network, variable", [
    ("x", "ACCESS_SECRET"), ("mastodon", "MASTODON_ACCESS_TOKEN"), ("bluesky", "BLUESKY_APP_PASSWORD"),
])
def test_the_fakes_refuse_a_bot_the_other_bots_credential(monkeypatch, session_factory, fakes, network, variable):
    """What the storm counts per account rests on this: each fake checks the credential of the account it names."""
    other = {"ACCESS_SECRET": "alice-access-secret", "MASTODON_ACCESS_TOKEN": "alice-mastodon-token-typo",
             "BLUESKY_APP_PASSWORD": app_password("alice")}[variable]
    fakes.settings(monkeypatch, destinations=network)
    monkeypatch.setenv(f"BOT_BOB_{variable}", other)
    settings = Settings(_env_file=None)
    queue_texts(session_factory, "bob", ["bob says with a wrong key"])
    result = post_next(session_factory=session_factory, settings=settings, bot="bob")
    assert result.outcome is PostOutcome.x_credentials, result.message
    assert fakes.texts("alice")[network] == fakes.texts("bob")[network] == []
