"""Shared fixtures: one isolated database per test, on SQLite and on the real Postgres via both drivers.

Postgres tests read TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test) and skip
when it is unset, unless REQUIRE_POSTGRES=1 (CI), where a missing URL fails them instead.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from api.app import create_app
from core.config import Settings
from db import store
from db.engine import make_engine, make_session_factory, temporary_schema
from db.models import Base, Tweet, TweetStatus
from tests.fake_bluesky import FakeBluesky
from tests.fake_mastodon import FakeMastodon
from tests.fake_x import FakeX

TOKEN = "test-token-0123456789abcdef"
ACCOUNT = "test_bot"
BACKENDS = ["sqlite", "psycopg2", "pg8000"]


def postgres_url(driver: str) -> str:
    raw = os.environ.get("TEST_POSTGRES_URL")
    if not raw:
        reason = "TEST_POSTGRES_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    return make_url(raw).set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    if request.param != "sqlite":
        request.applymarker(pytest.mark.postgres)
    return request.param


@pytest.fixture
def empty_engine(backend, tmp_path) -> Iterator[Engine]:
    """An engine on a database with no tables: a SQLite file, or a fresh Postgres schema."""
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
        yield engine
        engine.dispose()
        return
    with temporary_schema(postgres_url(backend), pool_size=20, max_overflow=40) as engine:
        yield engine


@pytest.fixture
def engine(empty_engine) -> Engine:
    Base.metadata.create_all(empty_engine)
    return empty_engine


@pytest.fixture
def fake_x() -> Iterator[FakeX]:
    """A running fake X API; point Settings at it with `settings_values.update(fake_x.settings_values())`."""
    server = FakeX().start()
    yield server
    server.stop()


@pytest.fixture
def fake_mastodon() -> Iterator[FakeMastodon]:
    """A running fake Mastodon; `MastodonDestination(fake_mastodon.base_url, ACCESS_TOKEN, timeout)` posts to it."""
    server = FakeMastodon().start()
    yield server
    server.stop()


@pytest.fixture
def fake_bluesky() -> Iterator[FakeBluesky]:
    """A running fake PDS; point a BlueskyDestination at `fake_bluesky.base_url`."""
    server = FakeBluesky().start()
    yield server
    server.stop()


@pytest.fixture
def session_factory(engine):
    return make_session_factory(engine)


def store_texts(session_factory, *texts: str, status: TweetStatus) -> list[int]:
    """Store texts for ACCOUNT in order (their positions follow) and return their ids."""
    with session_factory() as session:
        store.ingest_texts(session, account=ACCOUNT, texts=list(texts), status=status)
        session.commit()
        return list(session.scalars(select(Tweet.id).where(Tweet.text.in_(texts)).order_by(Tweet.position)))


@pytest.fixture
def settings_values(tmp_path) -> dict:
    """Keyword overrides for Settings; tests may change them before `settings` is built."""
    return {
        "SECRET_TOKEN": TOKEN,
        "ACCOUNT": ACCOUNT,
        "SQLITE_PATH": str(tmp_path / "unused.db"),
        "_env_file": None,
    }


@pytest.fixture
def settings(settings_values) -> Settings:
    return Settings(**settings_values)


@pytest.fixture
def app(settings, engine):
    return create_app(settings, engine=engine, configure_logs=False)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app, headers={"x-token": TOKEN}) as test_client:
        yield test_client


@pytest.fixture
def anon_client(app) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


class LogLines(logging.Handler):
    """Collects the messages of the `ml` loggers (fixtures of module scope cannot use caplog)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        logger = logging.getLogger("ml")
        logger.addHandler(self)
        logger.setLevel(logging.INFO)
        return self.lines

    def __exit__(self, *exc):
        logging.getLogger("ml").removeHandler(self)
