"""Alembic owns the schema: upgrade, downgrade, upgrade again, and the models match."""
from datetime import datetime, timezone
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import insert, inspect, text

from db.models import Base

ROOT = Path(__file__).resolve().parent.parent


def run_alembic(engine, *args) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, args[0])(config, *args[1:])


def diff_against_models(engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_upgrade_downgrade_upgrade(empty_engine):
    run_alembic(empty_engine, "upgrade", "head")
    assert "tweets" in inspect(empty_engine).get_table_names()
    assert diff_against_models(empty_engine) == []

    run_alembic(empty_engine, "downgrade", "base")
    assert "tweets" not in inspect(empty_engine).get_table_names()

    run_alembic(empty_engine, "upgrade", "head")
    assert diff_against_models(empty_engine) == []


def tweet_rows(engine) -> list[dict]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(text("SELECT * FROM tweets ORDER BY id")).mappings()]


def insert_tweet(engine, n: int) -> int:
    """Insert a tweet the way the service does (the database picks the id); its id."""
    now = datetime(2026, 11, 22, 10, n, tzinfo=timezone.utc)
    values = {
        "account": "test_bot", "text": f"tweet {n}", "content_hash": f"{n:064d}", "status": "queued",
        "position": n, "created_at": now, "updated_at": now, "claimed_at": now, "posted_at": None,
        "x_tweet_id": str(1790000000000000000 + n), "x_url": f"https://x.com/test_bot/status/{n}",
        "error": f"last attempt: {n}", "idempotency_key": f"key {n}", "dry_run": n % 2 == 0,
    }
    with engine.begin() as connection:
        return connection.execute(insert(Base.metadata.tables["tweets"]).values(values).returning(text("id"))).scalar_one()


def delete_tweet(engine, tweet_id: int) -> None:
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM tweets WHERE id = :id"), {"id": tweet_id})


def test_upgrading_a_filled_database_keeps_every_tweet_and_never_reuses_ids(empty_engine):
    run_alembic(empty_engine, "upgrade", "0002")
    ids = [insert_tweet(empty_engine, n) for n in range(1, 6)]
    delete_tweet(empty_engine, ids[1])  # a gap
    delete_tweet(empty_engine, ids[-1])  # the newest: SQLite keeps no trace of its id
    with empty_engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO empty_queue_runs (account, idempotency_key, created_at) VALUES ('test_bot', 'k', '2026-11-22')"
        ))
    before = tweet_rows(empty_engine)

    run_alembic(empty_engine, "upgrade", "head")
    assert tweet_rows(empty_engine) == before
    assert diff_against_models(empty_engine) == []
    with empty_engine.connect() as connection:
        assert connection.execute(text("SELECT idempotency_key FROM empty_queue_runs")).scalars().all() == ["k"]
    newest = insert_tweet(empty_engine, 6)
    assert newest > before[-1]["id"]
    delete_tweet(empty_engine, newest)
    assert insert_tweet(empty_engine, 7) > newest  # from now on, never reused
    after = tweet_rows(empty_engine)

    run_alembic(empty_engine, "downgrade", "0002")
    assert tweet_rows(empty_engine) == after
    run_alembic(empty_engine, "upgrade", "head")
    assert tweet_rows(empty_engine) == after
    assert insert_tweet(empty_engine, 8) > after[-1]["id"]


def test_upgrading_carries_every_posting_record_over_as_an_x_delivery(empty_engine):
    """0004: a database filled by the schema before deliveries keeps every tweet as it was, and each
    posting record (posting, posted, unconfirmed, failed) becomes that tweet's X delivery."""
    run_alembic(empty_engine, "upgrade", "0003")
    statuses = ["queued", "posting", "posted", "unconfirmed", "failed", "rejected", "pending"]
    ids = {}
    for n, status in enumerate(statuses, start=1):
        ids[status] = insert_tweet(empty_engine, n)
        with empty_engine.begin() as connection:
            connection.execute(text("UPDATE tweets SET status = :status WHERE id = :id"), {"status": status, "id": ids[status]})
    before = tweet_rows(empty_engine)

    run_alembic(empty_engine, "upgrade", "head")
    assert tweet_rows(empty_engine) == before
    assert diff_against_models(empty_engine) == []
    with empty_engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT tweet_id, destination, status, key, remote_id, url, error, dry_run, claimed_at, posted_at"
            " FROM deliveries ORDER BY tweet_id"
        )).mappings().all()
    carried = {row["tweet_id"]: row for row in rows}
    assert sorted(carried) == sorted(ids[s] for s in ("posting", "posted", "unconfirmed", "failed"))
    by_id = {row["id"]: row for row in before}
    for tweet_id, row in carried.items():
        tweet = by_id[tweet_id]
        assert (row["destination"], row["status"]) == ("x", tweet["status"])
        assert (row["remote_id"], row["url"], row["error"], row["key"]) == (
            tweet["x_tweet_id"], tweet["x_url"], tweet["error"], tweet["idempotency_key"])
        assert bool(row["dry_run"]) == bool(tweet["dry_run"])

    run_alembic(empty_engine, "downgrade", "0003")
    assert tweet_rows(empty_engine) == before
    assert "deliveries" not in inspect(empty_engine).get_table_names()


def test_a_carried_over_unconfirmed_tweet_requeued_posts_once(empty_engine, settings_values, fake_x):
    """After the upgrade, the operator's requeue of an unconfirmed tweet goes through its X delivery:
    one post, recorded on the delivery and the tweet."""
    from core.config import Settings
    from db import store
    from db.engine import make_session_factory
    from db.models import Delivery, DeliveryStatus, Tweet, TweetStatus
    from posting.job import post_next
    from posting.outcomes import PostOutcome

    run_alembic(empty_engine, "upgrade", "0003")
    tweet_id = insert_tweet(empty_engine, 1)
    with empty_engine.begin() as connection:
        connection.execute(text("UPDATE tweets SET account = 'test_bot', status = 'unconfirmed' WHERE id = :id"), {"id": tweet_id})
    run_alembic(empty_engine, "upgrade", "head")
    session_factory = make_session_factory(empty_engine)
    settings = Settings(**{**settings_values, **fake_x.settings_values()})
    with session_factory() as session:
        store.update_tweet(session, store.get_tweet(session, tweet_id, for_update=True), status=TweetStatus.queued)
        session.commit()
    assert post_next(session_factory=session_factory, settings=settings).outcome is PostOutcome.posted
    assert post_next(session_factory=session_factory, settings=settings).outcome is PostOutcome.queue_empty
    assert [p["text"] for p in fake_x.posted] == ["tweet 1"]
    with session_factory() as session:
        (delivery,) = session.query(Delivery).all()
        assert (delivery.tweet_id, delivery.status) == (tweet_id, DeliveryStatus.posted)
        assert session.get(Tweet, tweet_id).x_tweet_id == delivery.remote_id
