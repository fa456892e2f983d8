"""Concurrent runs of one bot log in to Bluesky once (issue 17): Bluesky allows 30 createSession
per 5 minutes and 300 a day per account, and a storm of runs that all find no usable stored
session must not each log in. Runs here start together: each run's first load of the store waits
until every run is loading, so all of them read the same empty (or stale) blob, as in a storm.
"""
from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from core.delivery import DeliveryFailed, ErrorKind
from db.engine import make_engine, make_session_factory, use_schema
from posting.bluesky_client import BlueskyDestination, MemorySessionStore
from posting.destinations import DatabaseSessionStore
from posting.login_locks import LoginLockTimeout, holding, process_lock
from tests.fake_bluesky import APP_PASSWORD, HANDLE, REFRESH_SESSION, FakeBluesky

RUNS = 8
PROCESSES = 3


class RunsStartTogether:
    """A run's store whose first load, once read, waits at `barrier` for the other runs' first loads."""

    def __init__(self, store, barrier):
        self.store, self.barrier, self.loads = store, barrier, 0

    def load(self):
        blob = self.store.load()
        self.loads += 1
        if self.loads == 1:
            self.barrier.wait()
        return blob

    def __getattr__(self, name):
        return getattr(self.store, name)


def database_store(session_factory) -> DatabaseSessionStore:
    return DatabaseSessionStore(session_factory, account="alice", network="bluesky")


def post_as_runs(fake: FakeBluesky, stores: list) -> list[str]:
    """One post per store, each from its own thread and destination (one run each), all starting together."""
    barrier = threading.Barrier(len(stores), timeout=30)

    def run(n: int) -> str:
        bluesky = BlueskyDestination(fake.base_url, HANDLE, APP_PASSWORD, 5, RunsStartTogether(stores[n], barrier))
        return bluesky.post(f"run {n}", key=bluesky.new_key(f"run-{n}")).id

    with ThreadPoolExecutor(len(stores)) as pool:
        return list(pool.map(run, range(len(stores))))


def test_runs_in_threads_with_no_stored_session_log_in_once(fake_bluesky, session_factory):
    posted = post_as_runs(fake_bluesky, [database_store(session_factory) for _ in range(RUNS)])
    assert fake_bluesky.create_session_calls == 1
    assert sorted(posted) == sorted(fake_bluesky.records) and len(posted) == RUNS


def test_runs_sharing_a_memory_store_log_in_once(fake_bluesky):
    store = MemorySessionStore()
    post_as_runs(fake_bluesky, [store] * RUNS)
    assert fake_bluesky.create_session_calls == 1
    assert len(fake_bluesky.records) == RUNS


def test_runs_whose_stored_session_expires_soon_refresh_it_once(fake_bluesky, session_factory):
    """The refresh token rotates: runs refreshing the same stored session at once would each but
    the first be refused and log in. Under the lock the others take the refreshed session."""
    fake_bluesky.access_lifetime = 60  # atproto refreshes a token that expires within 15 minutes
    bluesky = BlueskyDestination(fake_bluesky.base_url, HANDLE, APP_PASSWORD, 5, database_store(session_factory))
    bluesky.post("the first run", key=bluesky.new_key("first"))
    fake_bluesky.access_lifetime = 2 * 3600
    refreshes_before = len(fake_bluesky.received("POST", REFRESH_SESSION))
    post_as_runs(fake_bluesky, [database_store(session_factory) for _ in range(RUNS)])
    assert len(fake_bluesky.received("POST", REFRESH_SESSION)) == refreshes_before + 1
    assert fake_bluesky.create_session_calls == 1  # the first run's
    assert len(fake_bluesky.records) == RUNS + 1


def test_a_run_that_cannot_take_the_login_lock_in_time_fails_as_not_sent(fake_bluesky, session_factory):
    """Another run holds the lock (a login that hangs): the waiting run gives up within its bound,
    sends nothing, and its post is retried later."""
    assert_login_lock_wait_is_bounded(fake_bluesky, lambda: database_store(session_factory))


def test_a_memory_store_login_lock_wait_is_bounded(fake_bluesky):
    memory = MemorySessionStore()
    assert_login_lock_wait_is_bounded(fake_bluesky, lambda: memory)


def assert_login_lock_wait_is_bounded(fake_bluesky: FakeBluesky, store) -> None:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store().login_lock(timeout=5):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        bluesky = BlueskyDestination(fake_bluesky.base_url, HANDLE, APP_PASSWORD, 0.2, store())
        started = time.monotonic()
        with pytest.raises(DeliveryFailed) as failure:
            bluesky.post("waits for the lock", key=bluesky.new_key("waiting"))
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert failure.value.error.kind is ErrorKind.not_sent
    assert "another run" in failure.value.error.message
    assert waited < 3
    assert fake_bluesky.create_session_calls == 0 and not fake_bluesky.records


def post_from_child(url: str, schema: str | None, pds_url: str, n: int, barrier, results) -> None:
    """A run in a process of its own, on the parent's database (its Postgres schema, or SQLite file)."""
    engine = make_engine(url)
    if schema:
        use_schema(engine, schema)

    store = RunsStartTogether(database_store(make_session_factory(engine)), barrier)
    bluesky = BlueskyDestination(pds_url, HANDLE, APP_PASSWORD, 5, store)
    try:
        results.put(bluesky.post(f"process {n}", key=bluesky.new_key(f"process-{n}")).id)
    except Exception as exc:  # noqa: BLE001 (the parent asserts on what came back)
        results.put(f"failed: {type(exc).__name__}: {exc}")
    finally:
        engine.dispose()


def test_runs_in_separate_processes_with_no_stored_session_log_in_once(fake_bluesky, engine, backend):
    schema = None
    if backend != "sqlite":
        with engine.connect() as connection:
            schema = connection.scalar(text("SELECT current_schema()"))
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(PROCESSES, timeout=60), context.Queue()
    url = engine.url.render_as_string(hide_password=False)
    children = [context.Process(target=post_from_child, args=(url, schema, fake_bluesky.base_url, n, barrier, results))
                for n in range(PROCESSES)]
    for child in children:
        child.start()
    posted = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(30)
    assert sorted(posted) == sorted(fake_bluesky.records), posted
    assert fake_bluesky.create_session_calls == 1


def test_stores_on_one_in_memory_database_share_this_process_login_lock():
    """No file to lock beside an in-memory SQLite database: the lock is this process's, per bot and network."""
    from sqlalchemy.pool import StaticPool

    engine = make_engine("sqlite://", poolclass=StaticPool)
    session_factory = make_session_factory(engine)
    bob = DatabaseSessionStore(session_factory, account="bob", network="bluesky")
    with database_store(session_factory).login_lock(timeout=1):
        with pytest.raises(LoginLockTimeout):
            with database_store(session_factory).login_lock(timeout=0.05):
                pass
        with bob.login_lock(timeout=1):  # another bot's lock is free
            pass
    with database_store(session_factory).login_lock(timeout=0.05):  # released
        pass
    engine.dispose()


def test_process_lock_is_one_lock_per_key():
    """Keys never used before in this process: the registry lasts as long as the process, and
    holds the keys of every earlier test."""
    alice, bob = ("sqlite://", f"bluesky/alice-{uuid.uuid4()}"), ("sqlite://", f"bluesky/bob-{uuid.uuid4()}")
    lock = process_lock(alice)
    assert process_lock(alice) is lock and process_lock(bob) is not lock
    with holding(lock, timeout=1):
        with pytest.raises(LoginLockTimeout):
            with holding(process_lock(alice), timeout=0.01):
                pass
        with holding(process_lock(bob), timeout=0.01):
            pass
