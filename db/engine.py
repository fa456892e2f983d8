"""Engines and sessions for SQLite (local) and Postgres (psycopg2 or pg8000)."""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs) -> Engine:
    """Create an engine; SQLite gets a busy timeout and IMMEDIATE write transactions.

    IMMEDIATE makes every SQLite transaction take the write lock when it begins, so two
    posting calls can never both read the same queued tweet before one of them claims it.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below rule
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Deleting a tweet deletes its deliveries (ON DELETE CASCADE), as on Postgres. A migration
            # that rebuilds `tweets` in batch mode must turn this off first, or the rebuild's DROP
            # would delete every delivery.
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def temporary_schema(url: str, *, prefix: str = "t", **engine_kwargs) -> Iterator[Engine]:
    """An engine on a new, empty Postgres schema that is dropped on exit (tests, benchmarks).

    Every connection of the engine sets its search_path to the schema, so the app and
    migrations see only it: each test or benchmark run gets a database of its own.
    """
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = make_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(url, **engine_kwargs)
    use_schema(engine, schema)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def use_schema(engine: Engine, schema: str) -> None:
    """Make every connection of `engine` work in the Postgres schema `schema`."""
    @event.listens_for(engine, "connect")
    def _use_schema(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute(f'SET search_path TO "{schema}"')
        cursor.close()
        dbapi_connection.commit()
