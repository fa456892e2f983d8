"""Upload a 100,000-tweet curated file over HTTP and print tweets per second, per database.

    .venv/bin/python -m bench.bench_ingest [--tweets 100000] [--postgres URL (default: TEST_POSTGRES_URL)]

Each database starts empty (a temporary SQLite file; a fresh Postgres schema, dropped after).
The baseline is the same rows inserted one statement per row, measured in the same run.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from api.app import create_app
from bench.made_up import made_up_words
from bench.serving import serve_in_thread
from core.config import Settings
from core.tweet_text import content_hash, join_samples
from db.engine import make_engine, make_session_factory, temporary_schema
from db.models import Base, Tweet, TweetStatus, utcnow

TOKEN = "bench-token-0123456789"


def make_tweets(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{made_up_words(rng)} #{n}" for n in range(count)]


@contextlib.contextmanager
def empty_database(url: str):
    """An engine on an empty database with the tables: the SQLite file, or a fresh Postgres schema."""
    if url.startswith("sqlite"):
        Path(make_url(url).database).unlink(missing_ok=True)
        engine = make_engine(url)
        Base.metadata.create_all(engine)
        yield engine
        engine.dispose()
        return
    with temporary_schema(url, prefix="bench") as engine:
        Base.metadata.create_all(engine)
        yield engine


def upload_rate(url: str, payload: bytes, count: int) -> float:
    with empty_database(url) as engine:
        settings = Settings(
            SECRET_TOKEN=TOKEN, ACCOUNT="bench", MAX_UPLOAD_BYTES=50_000_000, TWITTER_DRY_RUN=True, _env_file=None
        )
        app = create_app(settings, engine=engine, configure_logs=False)
        with serve_in_thread(app) as base:
            started = time.perf_counter()
            response = httpx.post(
                f"{base}/add_tweets_file/", headers={"x-token": TOKEN},
                files={"file": ("bench.txt", payload)}, timeout=600,
            )
            elapsed = time.perf_counter() - started
    response.raise_for_status()
    assert response.json()["added"] == count, response.json()
    return count / elapsed


def row_by_row_rate(url: str, tweets: list[str]) -> float:
    """Baseline: one INSERT per row, in one transaction (what a naive ORM loop does)."""
    with empty_database(url) as engine, make_session_factory(engine)() as session:
        started = time.perf_counter()
        now = utcnow()
        for n, tweet in enumerate(tweets):
            session.add(Tweet(account="bench", text=tweet, content_hash=content_hash(tweet),
                              status=TweetStatus.queued, position=n, created_at=now, updated_at=now))
            session.flush()
        session.commit()
        return len(tweets) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tweets", type=int, default=100_000)
    parser.add_argument("--baseline-tweets", type=int, default=10_000)
    parser.add_argument(
        "--postgres", default=os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="the Postgres to measure on, as post_storm reads it (default: TEST_POSTGRES_URL, else the local test database)",
    )
    args = parser.parse_args()

    tweets = make_tweets(args.tweets)
    payload = join_samples(tweets).encode()
    print(f"file: {args.tweets:,} tweets, {len(payload) / 1e6:.1f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        targets = {"sqlite": f"sqlite:///{Path(tmp) / 'bench.db'}"}
        pg = make_url(args.postgres)
        targets["postgres+psycopg2"] = pg.set(drivername="postgresql+psycopg2").render_as_string(False)
        targets["postgres+pg8000"] = pg.set(drivername="postgresql+pg8000").render_as_string(False)
        print(f"{'database':<20}{'upload tweets/s':>16}{'row-by-row tweets/s':>22}{'ratio':>8}{'100k upload s':>15}")
        for name, url in targets.items():
            rate = upload_rate(url, payload, args.tweets)
            baseline = row_by_row_rate(url, tweets[: args.baseline_tweets])
            print(f"{name:<20}{rate:>16,.0f}{baseline:>22,.0f}{rate / baseline:>8.1f}{args.tweets / rate:>15.2f}")


if __name__ == "__main__":
    main()
