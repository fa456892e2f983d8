"""A storm of concurrent POST /tweet_curated/ calls on Postgres, with a fake X answering at once.

    .venv/bin/python -m bench.post_storm [--calls 300] [--tweets 120] [--concurrency 50]
        [--sends-per-key 2] [--destinations x] [--bluesky-session stored]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]

For each driver (psycopg2, pg8000): a fresh Postgres schema (dropped after) with `--tweets`
queued tweets, the app under a real uvicorn server, and the fake X API of tests/fake_x.py
(with `--destinations x,mastodon,bluesky`, also the fake Mastodon and the fake Bluesky PDS of
tests/fake_mastodon.py and tests/fake_bluesky.py: every call posts its tweet to all three;
`--bluesky-session none` starts the storm with no stored Bluesky session, `stored` after one post).
`--calls` requests go out from `--concurrency` threads of a separate client process (the
server process also hosts the fake X); each idempotency key is sent
`--sends-per-key` times (a scheduler's retries), so some calls must be answered as replays.
Prints the answers by status, p50/p99 latency, posts per second and the duplicate count
(texts a destination received more than once, or posted tweets sharing a key: must be 0). The baseline
is the same storm sent by one thread, measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context

import httpx
from sqlalchemy import select
from sqlalchemy.engine import make_url

from api.app import create_app
from bench.serving import serve_in_thread
from core.config import Settings
from db.engine import make_session_factory, temporary_schema
from db.models import Base, Tweet, TweetStatus, utcnow
from posting.job import post_next
from posting.outcomes import PostOutcome
from tests.fake_bluesky import APP_PASSWORD as BLUESKY_APP_PASSWORD, HANDLE as BLUESKY_HANDLE, FakeBluesky
from tests.fake_mastodon import FakeMastodon
from tests.fake_x import FakeX

TOKEN = "bench-token-0123456789"
ACCOUNT = "storm_bot"


def seed(engine, count: int) -> None:
    now = utcnow()
    with make_session_factory(engine)() as session:
        session.add_all(
            Tweet(account=ACCOUNT, text=f"storm tweet number {n}", content_hash=f"{n:064x}",
                  status=TweetStatus.queued, position=n, created_at=now, updated_at=now)
            for n in range(count)
        )
        session.commit()


def fire(base: str, keys: list[str], concurrency: int) -> tuple[list[tuple[int, float]], float]:
    """Send one call per key from `concurrency` threads; (status, seconds) per call and the wall time.

    Runs in a child process so the clients do not compete for the server's GIL.
    """
    local = threading.local()

    def call(key: str) -> tuple[int, float]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, headers={"x-token": TOKEN}, timeout=60)
        started = time.perf_counter()
        response = local.client.post("/tweet_curated/", headers={"Idempotency-Key": key})
        return response.status_code, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(call, keys))
    return answers, time.perf_counter() - started


def storm(url: str, *, calls: int, tweets: int, concurrency: int, sends_per_key: int,
          destinations: tuple[str, ...] = ("x",), bluesky_session: str = "stored") -> dict:
    """Run one storm on a fresh schema; returns its figures."""
    with temporary_schema(url, prefix="storm", pool_size=20, max_overflow=40) as engine:
        return _storm(engine, calls=calls, tweets=tweets, concurrency=concurrency, sends_per_key=sends_per_key,
                      destinations=destinations, bluesky_session=bluesky_session)


def texts_received(fakes: dict) -> dict[str, Counter]:
    """How many times each destination received each text: POST attempts on X (the fake refuses a
    repeated text, which would hide a second post), statuses and records made on Mastodon and Bluesky."""
    received = {"x": Counter(r.json["text"] for r in fakes["x"].post_attempts)}
    if "mastodon" in fakes:
        received["mastodon"] = Counter(status["text"] for status in fakes["mastodon"].posted)
    if "bluesky" in fakes:
        received["bluesky"] = Counter(record["value"]["text"] for record in fakes["bluesky"].records.values())
    return received


def _storm(engine, *, calls: int, tweets: int, concurrency: int, sends_per_key: int,
           destinations: tuple[str, ...], bluesky_session: str) -> dict:
    fakes = {"x": FakeX().start()}
    if "mastodon" in destinations:
        fakes["mastodon"] = FakeMastodon().start()
    if "bluesky" in destinations:
        fakes["bluesky"] = FakeBluesky().start()
    try:
        Base.metadata.create_all(engine)
        # Bluesky: with a stored session (one post before the storm stores it, as a bot that posted
        # before has it) or none (every run of the storm finds no session: one of them logs in).
        warm_up = int("bluesky" in fakes and bluesky_session == "stored")
        seed(engine, tweets + warm_up)
        values = {**fakes["x"].settings_values(timeout=10), "DESTINATIONS": ",".join(destinations)}
        if "mastodon" in fakes:
            values.update(fakes["mastodon"].settings_values(timeout=10))
        if "bluesky" in fakes:
            values.update(BLUESKY_PDS_URL=fakes["bluesky"].base_url, BLUESKY_HANDLE=BLUESKY_HANDLE,
                          BLUESKY_APP_PASSWORD=BLUESKY_APP_PASSWORD, BLUESKY_TIMEOUT_SECONDS=10)
        settings = Settings(SECRET_TOKEN=TOKEN, ACCOUNT=ACCOUNT, TWEET_ORDER="random", _env_file=None, **values)
        if warm_up:
            assert post_next(session_factory=make_session_factory(engine), settings=settings).outcome is PostOutcome.posted
        app = create_app(settings, engine=engine, configure_logs=False)
        keys = [f"run-{n // sends_per_key}" for n in range(calls)]
        with serve_in_thread(app) as base, ProcessPoolExecutor(1, mp_context=get_context("spawn")) as clients:
            answers, elapsed = clients.submit(fire, base, keys, concurrency).result()

        with make_session_factory(engine)() as session:
            posted = session.execute(
                select(Tweet.text, Tweet.idempotency_key).where(Tweet.status == TweetStatus.posted)
            ).all()
        received = texts_received(fakes)
        keys_posted = Counter(key for _text, key in posted)
        duplicates = sum(n - 1 for texts in received.values() for n in texts.values())
        duplicates += sum(n - 1 for n in keys_posted.values())
        latencies = sorted(seconds for _status, seconds in answers)
        expected_posts = min(tweets, len(set(keys))) + warm_up
        bluesky_logins = fakes["bluesky"].create_session_calls if "bluesky" in fakes else None
        assert len(posted) == expected_posts, (len(posted), expected_posts, f"Bluesky logins: {bluesky_logins}")
        assert all(len(texts) == expected_posts for texts in received.values()), {
            network: len(texts) for network, texts in received.items()}
        return {
            "statuses": dict(sorted(Counter(status for status, _seconds in answers).items())),
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "posts_per_s": (len(posted) - warm_up) / elapsed,
            "calls_per_s": calls / elapsed,
            "posts": len(posted) - warm_up,
            "duplicates": duplicates,
            "bluesky_logins": bluesky_logins,
        }
    finally:
        for fake in fakes.values():
            fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--tweets", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--sends-per-key", type=int, default=2)
    parser.add_argument("--destinations", default="x",
                        help="x, or x,mastodon,bluesky: every call posts its tweet to each (fakes on loopback)")
    parser.add_argument("--bluesky-session", choices=("stored", "none"), default="stored",
                        help="whether the bot has a stored Bluesky session when the storm starts")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    pg = make_url(args.postgres)
    destinations = tuple(name.strip() for name in args.destinations.split(","))
    fakes = ", ".join({"x": "X", "mastodon": "Mastodon", "bluesky": "Bluesky"}[name] for name in destinations)
    print(f"{args.calls} calls, {args.calls // args.sends_per_key} idempotency keys (each sent {args.sends_per_key}x), "
          f"{args.tweets} queued tweets, each posted to {fakes} (fakes on loopback answering at once)")
    print(f"{'driver':<10}{'threads':>8}{'answers by status':>28}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'posts/s':>9}{'calls/s':>9}{'posts':>7}{'dups':>6}")
    for driver in ("psycopg2", "pg8000"):
        url = pg.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)
        rows = {}
        for threads in (1, args.concurrency):
            figures = storm(url, calls=args.calls, tweets=args.tweets, concurrency=threads,
                            sends_per_key=args.sends_per_key, destinations=destinations,
                            bluesky_session=args.bluesky_session)
            rows[threads] = figures
            statuses = " ".join(f"{status}:{n}" for status, n in figures["statuses"].items())
            print(f"{driver:<10}{threads:>8}{statuses:>28}{figures['p50_ms']:>9.1f}{figures['p99_ms']:>9.1f}"
                  f"{figures['posts_per_s']:>9.1f}{figures['calls_per_s']:>9.1f}{figures['posts']:>7}"
                  f"{figures['duplicates']:>6}"
                  + (f"  Bluesky logins: {figures['bluesky_logins']}" if figures["bluesky_logins"] is not None else ""))
        ratio = rows[args.concurrency]["calls_per_s"] / rows[1]["calls_per_s"]
        print(f"{driver:<10}calls/s with {args.concurrency} threads vs 1 thread (baseline): {ratio:.1f}x")


if __name__ == "__main__":
    main()
