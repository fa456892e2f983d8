"""SessionVault alone: the sealed Bluesky session a bot keeps between runs, and the local createSession
budget kept beside it (no PDS: a MemorySessionStore and a fixed clock)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from core.delivery import ErrorKind
from posting import bluesky_client
from posting.bluesky_client import MemorySessionStore, SessionVault

NOW = 1_767_225_600.0  # 2026-01-01 00:00 UTC: whole seconds, so every edge below is exact
DAY = 86400.0
HANDLE = "mybot.bsky.social"
PASSWORD = "abcd-efgh-ijkl-mnop"
SESSION = "a stored session string"
# SESSION sealed for HANDLE and PASSWORD by an earlier release: a blob already in a database must open.
SEALED_EARLIER = ("gAAAAABrESIcJ5teh3H7aXgOTc-Z_XOf3Jn_S8LQgjOTM0KwfUXHP0RH9F9Fhy7HvbQ2apkXH2wbx3AxU2R1bp3KMs5rX7V"
                  "jN_tiKGEwHfPXwQ3I_xeP7sA=")


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    monkeypatch.setattr(bluesky_client, "time", SimpleNamespace(time=lambda: NOW))


def vault_log(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "posting.bluesky_client"]


def blob(times=(), session=None) -> str:
    return json.dumps({"v": 1, "create_session_times": list(times), "session": session})


def loaded(stored: str | None, handle: str = HANDLE, password: str = PASSWORD) -> SessionVault:
    vault = SessionVault(MemorySessionStore(stored), handle, password)
    vault.load()
    return vault


class FailingStore(MemorySessionStore):
    def load(self):
        raise ConnectionError("database down")

    def save(self, blob):
        raise ConnectionError("database down")


# ---- a fresh vault ----
def test_a_fresh_vault_holds_no_session_and_no_logins():
    store = MemorySessionStore()
    vault = SessionVault(store, HANDLE, PASSWORD)
    assert vault.session is None and vault.create_session_times == []
    assert vault.create_session_refusal() is None
    vault.save()
    assert json.loads(store.blob) == {"v": 1, "create_session_times": [], "session": None}


# ---- load ----
@pytest.mark.parametrize("handle", [HANDLE, "MyBot.Bsky.Social"])
def test_a_blob_sealed_by_an_earlier_release_opens_whatever_the_handles_case(handle):
    vault = loaded(blob([NOW - 10], SEALED_EARLIER), handle)
    assert (vault.session, vault.create_session_times) == (SESSION, [NOW - 10])


def test_a_session_saved_and_loaded_again_round_trips_without_secrets_in_clear():
    store = MemorySessionStore()
    vault = SessionVault(store, HANDLE, PASSWORD)
    vault.session, vault.create_session_times = SESSION, [NOW - 100, NOW - 5]
    vault.save()
    assert SESSION not in store.blob and PASSWORD not in store.blob
    again = loaded(store.blob)
    assert (again.session, again.create_session_times) == (SESSION, [NOW - 100, NOW - 5])


@pytest.mark.parametrize("handle, password", [("otherbot.bsky.social", PASSWORD), (HANDLE, "wxyz-wxyz-wxyz-wxyz")],
                         ids=["another handle", "another app password"])
def test_a_session_sealed_for_another_handle_or_password_does_not_open_but_its_logins_count(caplog, handle, password):
    vault = loaded(blob([NOW - 10], SEALED_EARLIER), handle, password)
    assert (vault.session, vault.create_session_times) == (None, [NOW - 10])
    assert vault_log(caplog) == [f"the stored Bluesky session of {handle} does not open (another app password, "
                                 "or altered): logging in again"]


def test_a_sealed_session_that_is_not_utf8_does_not_open(caplog):
    vault = SessionVault(MemorySessionStore(), HANDLE, PASSWORD)
    sealed = vault._seal().encrypt(b"\xff\xfe").decode()
    vault = loaded(blob([NOW], sealed))
    assert (vault.session, vault.create_session_times) == (None, [NOW])
    assert vault_log(caplog) == [f"the stored Bluesky session of {HANDLE} does not open (another app password, "
                                 "or altered): logging in again"]


@pytest.mark.parametrize("stored", ["not json", "[1, 2]", '"a string"', "7"])
def test_a_blob_that_is_no_blob_leaves_nothing(caplog, stored):
    vault = loaded(stored)
    assert (vault.session, vault.create_session_times) == (None, [])
    assert vault_log(caplog) == [f"the stored Bluesky session of {HANDLE} is not a session blob: ignored"]


@pytest.mark.parametrize("stored", [None, "", "{}", '{"session": null}', blob(), '{"v": 1, "create_session_times": "x", "session": 5}'])
def test_an_empty_or_partial_blob_leaves_nothing_and_logs_nothing(caplog, stored):
    vault = loaded(stored)
    assert (vault.session, vault.create_session_times) == (None, [])
    assert vault_log(caplog) == []


def test_a_blob_without_a_session_keeps_its_logins():
    assert loaded('{"create_session_times": [%r]}' % (NOW - 1)).create_session_times == [NOW - 1]


def test_load_keeps_the_logins_of_the_last_day_and_the_next_minute_only():
    """A day back and a minute ahead (clocks differ between machines) are kept, a hair beyond is not;
    what is not a time is dropped."""
    times = [NOW - DAY - 0.5, NOW - DAY, NOW - 300, NOW, NOW + 60, NOW + 60.5, "x", None, [NOW], {"t": NOW}]
    vault = loaded(blob(times, SEALED_EARLIER))
    assert vault.create_session_times == [NOW - DAY, NOW - 300, NOW, NOW + 60]
    assert vault.session == SESSION


def test_load_forgets_what_the_vault_held_before():
    store = MemorySessionStore(blob([NOW], SEALED_EARLIER))
    vault = SessionVault(store, HANDLE, PASSWORD)
    vault.load()
    store.blob = "not json"
    vault.load()
    assert (vault.session, vault.create_session_times) == (None, [])


def test_a_store_that_cannot_load_leaves_nothing_and_says_why_without_its_content(caplog):
    vault = SessionVault(FailingStore(), HANDLE, PASSWORD)
    vault.session, vault.create_session_times = SESSION, [NOW]
    vault.load()
    assert (vault.session, vault.create_session_times) == (None, [])
    assert vault_log(caplog) == [f"could not load the Bluesky session of {HANDLE} (ConnectionError): logging in again"]


# ---- save ----
def test_save_writes_the_logins_of_the_last_day_only():
    store = MemorySessionStore()
    vault = SessionVault(store, HANDLE, PASSWORD)
    vault.create_session_times = [NOW - DAY - 0.5, NOW - DAY, NOW - 1, NOW]
    vault.save()
    assert json.loads(store.blob) == {"v": 1, "create_session_times": [NOW - DAY, NOW - 1, NOW], "session": None}


def test_a_store_that_cannot_save_is_logged_not_raised(caplog):
    vault = SessionVault(FailingStore(), HANDLE, PASSWORD)
    vault.session = SESSION
    vault.save()
    assert vault_log(caplog) == [f"could not save the Bluesky session of {HANDLE} (ConnectionError)"]


# ---- the createSession budget ----
def refusal_with(times):
    vault = SessionVault(MemorySessionStore(), HANDLE, PASSWORD)
    vault.create_session_times = list(times)
    return vault.create_session_refusal()


def test_24_logins_in_5_minutes_allow_one_more_and_a_login_exactly_5_minutes_old_is_out_of_the_window():
    assert refusal_with([NOW - i for i in range(24)]) is None
    assert refusal_with([NOW - 300] + [NOW - i for i in range(24)]) is None


def test_the_25th_login_in_5_minutes_is_refused_until_the_oldest_leaves_the_window():
    refusal = refusal_with([NOW - 299.5] + [NOW - i for i in range(25)])  # 26, unsorted
    assert refusal.kind is ErrorKind.rate_limited
    assert refusal.message == ("not logging in to Bluesky again: 26 logins in the last 5 minutes, our limit under "
                               "Bluesky's (sessions are reused between runs: so many means they keep being lost)")
    # one more login is allowed once 24 remain: when the second oldest (NOW - 24) is 5 minutes old
    assert refusal.retry_at == datetime.fromtimestamp(NOW - 24 + 300, timezone.utc)


def test_the_250th_login_in_a_day_is_refused_and_one_exactly_a_day_old_is_out_of_the_window():
    spread = [NOW - 3600 - 300 * i for i in range(249)]  # none in the last 5 minutes, all under a day old
    assert refusal_with([NOW - DAY] + spread) is None
    refusal = refusal_with([NOW - DAY + 0.5] + spread)
    assert refusal.kind is ErrorKind.rate_limited
    assert refusal.message == ("not logging in to Bluesky again: 250 logins in the last day, our limit under "
                               "Bluesky's (sessions are reused between runs: so many means they keep being lost)")
    assert refusal.retry_at == datetime.fromtimestamp(NOW + 0.5, timezone.utc)
