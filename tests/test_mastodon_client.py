"""The Mastodon destination against the fake Mastodon over HTTP through Mastodon.py, and the one
classification of Mastodon's answers."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from mastodon import Mastodon
from mastodon.errors import MastodonAPIError, MastodonNetworkError, MastodonRatelimitError

from core.delivery import DeliveryFailed, ErrorKind, RemotePost
from posting.mastodon_client import (
    MAX_LINK_LENGTH,
    MAX_RATE_LIMIT_WAIT,
    MAX_SAID_LENGTH,
    AnswerKeepingSession,
    MastodonAnswer,
    MastodonDestination,
    address_hint,
    classify_mastodon_error,
    credentials_hint,
    mastodon_reset_time,
    remote_post,
)
from tests.fake_mastodon import (
    ACCESS_TOKEN,
    IDEMPOTENCY_SECONDS,
    INSTANCE_PATH,
    STATUSES_PATH,
    FakeMastodon,
    ThenAnswer,
    iso_time,
)
from tests.fake_x import FakeResponse

REPO = Path(__file__).resolve().parents[1]
# What the one bot's messages say (BOTS unset: no prefix).
CREDENTIALS_HINT = credentials_hint("")
ADDRESS_HINT = address_hint("")


def destination(fake: FakeMastodon, timeout: float = 2.0, token: str = ACCESS_TOKEN) -> MastodonDestination:
    return MastodonDestination(fake.base_url, token, timeout)


def failure(call) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as info:
        call()
    return info.value


def closed_port() -> int:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_post_creates_one_status_carrying_the_key(fake_mastodon):
    mastodon = destination(fake_mastodon)
    key = mastodon.new_key("run-7/mastodon")
    posted = mastodon.post("hello from the test", key=key)
    (status,) = fake_mastodon.posted
    assert posted == RemotePost(status["id"], f"{fake_mastodon.base_url}/@gpt2bot/{status['id']}")
    (request,) = fake_mastodon.post_attempts
    assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert request.headers["idempotency-key"] == key
    assert status["text"] == "hello from the test"


def test_the_key_is_stable_per_seed_and_differs_between_seeds():
    mastodon = MastodonDestination("https://mastodon.example", ACCESS_TOKEN, 1)
    key = mastodon.new_key("run-7/mastodon")
    assert key == MastodonDestination("https://other.example", "other", 1).new_key("run-7/mastodon")
    assert len(key) == 64 and int(key, 16) >= 0
    assert mastodon.new_key("run-8/mastodon") != key


def test_building_a_destination_makes_no_request(fake_mastodon):
    destination(fake_mastodon)
    MastodonDestination(f"http://127.0.0.1:{closed_port()}", ACCESS_TOKEN, 1)  # nothing listens: still fine
    assert fake_mastodon.requests == []


@pytest.mark.parametrize("lost", [ThenAnswer(delay=30), ThenAnswer(drop=True)], ids=["answer-too-late", "dropped"])
def test_a_retry_with_the_same_key_after_a_lost_answer_posts_nothing_new(fake_mastodon, lost):
    fake_mastodon.enqueue("POST", STATUSES_PATH, lost)
    mastodon = destination(fake_mastodon, timeout=0.3)
    key = mastodon.new_key("run-1/mastodon")
    error = failure(lambda: mastodon.post("landed, answer lost", key=key)).error
    assert error.kind is ErrorKind.unknown_outcome
    (status,) = fake_mastodon.posted  # it did land
    assert mastodon.post("landed, answer lost", key=key).id == status["id"]
    assert len(fake_mastodon.posted) == 1 and len(fake_mastodon.post_attempts) == 2


def test_the_fake_forgets_a_key_after_an_hour_as_mastodon_does(fake_mastodon):
    now = [1_800_000_000.0]
    fake_mastodon.clock = lambda: now[0]
    mastodon = destination(fake_mastodon)
    first = mastodon.post("kept an hour", key="k")
    now[0] += IDEMPOTENCY_SECONDS - 1
    assert mastodon.post("kept an hour", key="k") == first
    now[0] += 1
    assert mastodon.post("kept an hour", key="k") != first
    assert len(fake_mastodon.posted) == 2


def test_twins_with_one_key_create_one_status(fake_mastodon):
    """One destination shared by threads: each post gets its own answer, and one key one status."""
    mastodon = destination(fake_mastodon)
    start = threading.Barrier(8)

    def post(_):
        start.wait()
        return mastodon.post("twins", key="same-key")

    with ThreadPoolExecutor(8) as pool:
        posted = set(pool.map(post, range(8)))
    assert len(posted) == 1 and len(fake_mastodon.posted) == 1


@pytest.mark.parametrize(
    ("answer", "kind", "status_code"),
    [
        (FakeMastodon.unauthorized(), ErrorKind.credentials, 401),
        (FakeMastodon.forbidden_scope(), ErrorKind.credentials, 403),
        (FakeMastodon.validation_failed(), ErrorKind.text_refused, 422),
        (FakeMastodon.server_error(500), ErrorKind.server_error, 500),
        (FakeMastodon.server_error(502), ErrorKind.server_error, 502),
        (FakeMastodon.server_error(503), ErrorKind.server_error, 503),
        (FakeResponse(404, {"error": "Record not found"}), ErrorKind.refused, 404),
        (FakeResponse(400, {"error": "param is missing or the value is empty: status"}), ErrorKind.refused, 400),
        (FakeResponse(410, "gone"), ErrorKind.refused, 410),
    ],
)
def test_answers_are_classified(fake_mastodon, answer, kind, status_code):
    fake_mastodon.enqueue("POST", STATUSES_PATH, answer)
    error = failure(lambda: destination(fake_mastodon).post("t", key="k")).error
    assert (error.kind, error.status_code, error.retry_at) == (kind, status_code, None)
    assert error.message.startswith(f"Mastodon answered {status_code}: ")
    assert len(fake_mastodon.post_attempts) == 1 and fake_mastodon.posted == []  # never retried


def test_credential_and_address_failures_say_what_to_check(fake_mastodon):
    refused = failure(lambda: destination(fake_mastodon, token="revoked").post("t", key="k")).error
    assert refused.message == f"Mastodon answered 401: The access token is invalid ({CREDENTIALS_HINT})"
    assert "MASTODON_ACCESS_TOKEN" in CREDENTIALS_HINT and "write:statuses" in CREDENTIALS_HINT
    wrong_path = MastodonDestination(fake_mastodon.base_url + "/not-mastodon", ACCESS_TOKEN, 2)
    missing = failure(lambda: wrong_path.post("t", key="k")).error
    assert missing.message == f"Mastodon answered 404: Record not found ({ADDRESS_HINT})"
    assert "MASTODON_API_BASE_URL" in ADDRESS_HINT
    assert fake_mastodon.posted == []


def test_the_instances_words_are_quoted_on_one_short_line(fake_mastodon):
    fake_mastodon.enqueue("POST", STATUSES_PATH, FakeResponse(503, {"error": "down\n\tfor  maintenance " + "x" * 1000}))
    error = failure(lambda: destination(fake_mastodon).post("t", key="k")).error
    assert error.message == "Mastodon answered 503: down for maintenance " + "x" * (MAX_SAID_LENGTH - 21)


def test_a_text_over_the_instances_limit_is_refused_as_text(fake_mastodon):
    mastodon = destination(fake_mastodon)
    error = failure(lambda: mastodon.post("x" * 501, key="long")).error
    assert (error.kind, error.status_code) == (ErrorKind.text_refused, 422)
    assert error.message == "Mastodon answered 422: Validation failed: Text character limit of 500 exceeded"
    links = " ".join(["https://example.com/" + "a" * 100] * 20)  # 2,419 code points, 479 as Mastodon counts
    assert mastodon.post(links, key="links").id == fake_mastodon.posted[0]["id"]


def test_the_instance_reports_its_limit(fake_mastodon):
    fake_mastodon.max_characters = 1000
    instance = Mastodon(api_base_url=fake_mastodon.base_url, version_check_mode="none").instance_v2()
    assert instance.configuration.statuses.max_characters == 1000
    assert destination(fake_mastodon).post("x" * 1000, key="k").id == fake_mastodon.posted[0]["id"]


@pytest.mark.parametrize("statuses", [False, True], ids=["api-window", "statuses-per-3h"])
def test_a_429_retries_at_mastodons_reset(fake_mastodon, statuses):
    reset = (datetime.now(timezone.utc) + timedelta(minutes=4)).replace(microsecond=123456)
    fake_mastodon.enqueue("POST", STATUSES_PATH, FakeMastodon.rate_limited(reset, statuses=statuses))
    error = failure(lambda: destination(fake_mastodon).post("t", key="k")).error
    assert (error.kind, error.status_code, error.retry_at) == (ErrorKind.rate_limited, 429, reset)
    assert error.message == "Mastodon answered 429: too many requests"
    assert fake_mastodon.posted == []


def test_a_429_without_a_reset_has_no_retry_time(fake_mastodon):
    fake_mastodon.enqueue("POST", STATUSES_PATH, FakeResponse(429, {"error": "Too many requests"}, {"X-RateLimit-Reset": None}))
    error = failure(lambda: destination(fake_mastodon).post("t", key="k")).error
    assert (error.kind, error.retry_at) == (ErrorKind.rate_limited, None)


def test_a_reset_in_unix_seconds_is_read(fake_mastodon):
    """GoToSocial, which speaks Mastodon's API, sends Unix seconds."""
    reset = int(time.time()) + 300
    fake_mastodon.enqueue("POST", STATUSES_PATH, FakeMastodon.rate_limited(str(reset)))
    error = failure(lambda: destination(fake_mastodon).post("t", key="k")).error
    assert error.retry_at == datetime.fromtimestamp(reset, timezone.utc)


@pytest.mark.parametrize(
    "reset",
    ["soon", "", "2026-13-45T00:00:00Z", "2026-12-02T12:00:00", "9" * 5000, "-5", "1.7e9",
     iso_time(datetime.now(timezone.utc) + timedelta(days=400))],
    ids=["words", "empty", "no-such-day", "no-zone", "huge", "negative", "float", "in-400-days"],
)
def test_an_unusable_reset_is_ignored(fake_mastodon, reset):
    fake_mastodon.enqueue("POST", STATUSES_PATH, FakeMastodon.rate_limited(reset))
    error = failure(lambda: destination(fake_mastodon).post("t", key="k")).error
    assert (error.kind, error.status_code, error.retry_at) == (ErrorKind.rate_limited, 429, None)


def test_an_unusable_reset_on_a_created_status_is_still_a_post(fake_mastodon):
    """Mastodon.py parses the reset of every answer and raises MastodonRatelimitError when it cannot:
    the session hides the header, or a status that landed would pass for a rate limit."""
    def created_with_a_bad_reset(request):
        return dataclasses.replace(fake_mastodon._create_status(request), headers={"X-RateLimit-Reset": "garbage"})

    fake_mastodon.route("POST", STATUSES_PATH, created_with_a_bad_reset)
    posted = destination(fake_mastodon).post("landed", key="k")
    assert posted.id == fake_mastodon.posted[0]["id"]


def test_a_reset_at_the_longest_wait_is_kept_and_one_beyond_is_not():
    at_limit = datetime.now(timezone.utc).replace(microsecond=0) + MAX_RATE_LIMIT_WAIT
    assert mastodon_reset_time(iso_time(at_limit - timedelta(seconds=1))) == at_limit - timedelta(seconds=1)
    assert mastodon_reset_time(iso_time(at_limit + timedelta(seconds=2))) is None
    assert mastodon_reset_time("2026-12-02T13:00:00+01:00") == datetime(2026, 12, 2, 12, tzinfo=timezone.utc)


@pytest.fixture
def tokyo_local_time(monkeypatch):
    """The process's local time zone set to UTC+9, so that a time left in local time shows."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_reset_exactly_at_the_longest_wait_is_kept_and_given_in_utc(monkeypatch, tokyo_local_time):
    now = datetime(2026, 12, 2, 12, tzinfo=timezone.utc)

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return now.astimezone(tz)

    monkeypatch.setattr("posting.mastodon_client.datetime", Frozen)
    assert mastodon_reset_time(iso_time(now + MAX_RATE_LIMIT_WAIT)) == now + MAX_RATE_LIMIT_WAIT
    assert mastodon_reset_time(iso_time(now + MAX_RATE_LIMIT_WAIT + timedelta(microseconds=1))) is None
    when = mastodon_reset_time("2026-12-02T13:00:00+01:00")
    assert (when.tzinfo, when.hour) == (timezone.utc, 12)


def test_the_session_forwards_positional_arguments_and_keeps_the_answer(fake_mastodon):
    session = AnswerKeepingSession()
    response = session.request("GET", fake_mastodon.base_url + INSTANCE_PATH, {"probe": "1"})
    (request,) = fake_mastodon.requests
    assert request.query == {"probe": ["1"]}  # params, given by position
    assert "X-RateLimit-Reset" not in response.headers
    assert session.last_answer.status_code == 200 and session.last_answer.retry_at is not None


def test_a_429_raises_at_once_and_never_sleeps(fake_mastodon, monkeypatch):
    def sleep(seconds):
        raise AssertionError(f"the client slept {seconds}s on a rate limit")

    monkeypatch.setattr("mastodon.internals.time.sleep", sleep)
    fake_mastodon.enqueue("POST", STATUSES_PATH, FakeMastodon.rate_limited(), FakeMastodon.rate_limited())
    mastodon = destination(fake_mastodon)
    for _ in range(2):  # the second call too, with Mastodon.py's rate-limit state set by the first
        assert failure(lambda: mastodon.post("t", key="k")).error.kind is ErrorKind.rate_limited
    assert len(fake_mastodon.post_attempts) == 2


def test_a_refused_connection_was_not_sent():
    mastodon = MastodonDestination(f"http://127.0.0.1:{closed_port()}", ACCESS_TOKEN, 2)
    error = failure(lambda: mastodon.post("t", key="k")).error
    assert error.kind is ErrorKind.not_sent
    assert error.message.startswith("could not connect to Mastodon: ") and "Connection refused" in error.message


def test_an_address_that_is_no_url_was_not_sent():
    error = failure(lambda: MastodonDestination("http://exa mple.com", ACCESS_TOKEN, 2).post("t", key="k")).error
    assert error.kind is ErrorKind.not_sent and ADDRESS_HINT in error.message


def test_the_timeout_bounds_how_long_a_post_takes(fake_mastodon):
    fake_mastodon.enqueue("POST", STATUSES_PATH, FakeMastodon.hang(30))
    mastodon = destination(fake_mastodon, timeout=0.3)
    started = time.monotonic()
    error = failure(lambda: mastodon.post("t", key="k")).error
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2, elapsed
    assert error.kind is ErrorKind.unknown_outcome and error.message.startswith("Mastodon did not answer in time: ")
    assert len(fake_mastodon.post_attempts) == 1  # the request did reach Mastodon, once


def test_a_dropped_connection_is_an_unknown_outcome(fake_mastodon):
    fake_mastodon.enqueue("POST", STATUSES_PATH, FakeMastodon.dropped())
    error = failure(lambda: destination(fake_mastodon).post("t", key="k")).error
    assert error.kind is ErrorKind.unknown_outcome
    assert error.message.startswith("the connection to Mastodon failed mid-request: ")
    assert len(fake_mastodon.post_attempts) == 1


UNREADABLE = "Mastodon answered 200 but its answer could not be read: the status may have been created"
UNUSABLE = "Mastodon answered 200 without a usable status id and link: the status may have been created"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (FakeResponse(200, "<html>not json</html>"), UNREADABLE),
        (FakeResponse(200, {"id": "1"}), UNUSABLE),  # no link
        (FakeResponse(200, {"id": "../1", "url": "https://mastodon.example/@bot/1"}), UNUSABLE),
        (FakeResponse(200, {"id": "", "url": "https://mastodon.example/@bot/1"}), UNUSABLE),
        (FakeResponse(200, {"id": None, "url": "https://mastodon.example/@bot/1"}), UNUSABLE),
        (FakeResponse(200, {"id": "1" * 65, "url": "https://mastodon.example/@bot/1"}), UNUSABLE),
        (FakeResponse(200, {"id": "1", "url": "javascript:alert(1)"}), UNUSABLE),
        (FakeResponse(200, {"id": "1", "url": "https://mastodon.example/@bot/1 2"}), UNUSABLE),
        (FakeResponse(200, [{"id": "1", "url": "https://mastodon.example/@bot/1"}]), UNUSABLE),
    ],
    ids=["not-json", "no-link", "path-id", "empty-id", "null-id", "long-id", "script-link", "space-in-link", "a-list"],
)
def test_a_success_without_a_usable_status_is_an_unknown_outcome(fake_mastodon, answer, message):
    fake_mastodon.enqueue("POST", STATUSES_PATH, answer)
    error = failure(lambda: destination(fake_mastodon).post("t", key="k")).error
    assert (error.kind, error.status_code, error.message) == (ErrorKind.unknown_outcome, 200, message)


def test_an_unusable_status_without_any_answer_is_still_an_unknown_outcome(fake_mastodon):
    """Should Mastodon.py return without the session seeing an answer, the post still fails cleanly."""
    mastodon = destination(fake_mastodon)
    mastodon._api.status_post = lambda *args, **kwargs: {"id": "1"}
    error = failure(lambda: mastodon.post("t", key="k")).error
    assert (error.kind, error.status_code) == (ErrorKind.unknown_outcome, None)
    assert error.message.endswith("without a usable status id and link: the status may have been created")
    assert fake_mastodon.requests == []


def test_a_status_without_a_page_link_uses_its_activitypub_id():
    uri = "https://mastodon.example/users/bot/statuses/1"
    assert remote_post({"id": "1", "url": None, "uri": uri}) == RemotePost("1", uri)
    assert remote_post({"id": 113500000000000000, "url": uri}) == RemotePost("113500000000000000", uri)
    assert remote_post({"id": "01HF8V3C5ZQX", "url": uri}) == RemotePost("01HF8V3C5ZQX", uri)  # GoToSocial's ULIDs
    assert remote_post({"id": True, "url": uri}) is None


@pytest.mark.parametrize(
    ("link", "usable"),
    [
        ("https://mastodon.example/@bot/1", True),
        ("http://mastodon.example/@bot/1", True),
        ("https://mastodon.example/" + "a" * (MAX_LINK_LENGTH - 25), True),  # exactly MAX_LINK_LENGTH
        ("https://mastodon.example/" + "a" * (MAX_LINK_LENGTH - 24), False),  # one more
        ("https://mastodon.example/@bot/1\n", False),
        ("https://mastodon.example/@bot/\u200b1", False),
        ("ftp://mastodon.example/@bot/1", False),
        ("https:///@bot/1", False),
        ("mastodon.example/@bot/1", False),
    ],
    ids=["https", "http", "longest", "too-long", "newline", "zero-width-space", "ftp", "no-host", "no-scheme"],
)
def test_only_a_printable_http_link_with_a_host_and_a_bounded_length_is_kept(link, usable):
    assert len("https://mastodon.example/" + "a" * (MAX_LINK_LENGTH - 25)) == MAX_LINK_LENGTH
    assert remote_post({"id": "1", "url": link}) == (RemotePost("1", link) if usable else None)


def test_the_access_token_never_reaches_messages_or_logs(fake_mastodon, caplog):
    caplog.set_level(logging.DEBUG)
    echoed = FakeResponse(401, {"error": f"The access token {ACCESS_TOKEN} is invalid"})
    fake_mastodon.enqueue("POST", STATUSES_PATH, echoed, FakeMastodon.hang(30), FakeMastodon.rate_limited())
    mastodon = destination(fake_mastodon, timeout=0.3)
    failures = [failure(lambda: mastodon.post("t", key="k")) for _ in range(3)]
    failures.append(failure(lambda: MastodonDestination(f"http://127.0.0.1:{closed_port()}", ACCESS_TOKEN, 1)
                            .post("t", key="k")))
    mastodon.post("a success is logged too", key="k2")
    assert failures[0].error.message == "Mastodon answered 401: The access token [access token] is invalid " \
                                        f"({CREDENTIALS_HINT})"
    assert caplog.records  # DEBUG is captured (urllib3 logs its connections)
    shown = caplog.text + "".join(str(r.args) for r in caplog.records)
    for exc in failures:
        assert exc.__cause__ is None and exc.__suppress_context__  # no unfiltered chained exception
        shown += str(exc) + repr(exc.error)
    assert ACCESS_TOKEN not in shown


def test_without_an_access_token_nothing_is_masked(fake_mastodon):
    error = failure(lambda: destination(fake_mastodon, token="").post("t", key="k")).error
    assert error.message == f"Mastodon answered 401: The access token is invalid ({CREDENTIALS_HINT})"


def test_classifying_never_raises(fake_mastodon, monkeypatch, caplog):
    """A bug in reading Mastodon's answer still gives the kind its status implies."""
    def bug(*_args):
        raise OverflowError("a bug in reading the answer")

    monkeypatch.setattr("posting.mastodon_client._classify_http_answer", bug)
    fake_mastodon.enqueue("POST", STATUSES_PATH, FakeMastodon.server_error(503))
    mastodon = destination(fake_mastodon)
    error = failure(lambda: mastodon.post("t", key="k")).error
    assert (error.kind, error.status_code) == (ErrorKind.server_error, 503)
    assert error.message == "Mastodon answered 503 (its details could not be read)"
    assert [r.getMessage() for r in caplog.records if r.name == "posting.mastodon_client"] == [
        "could not read the details of a failed Mastodon call (OverflowError: a bug in reading the answer): "
        "sorting it by its status"]
    # The next post's connection drops: no answer of its own, and the 503 before is not taken for it.
    monkeypatch.setattr("posting.mastodon_client._classify_network_failure", bug)
    fake_mastodon.enqueue("POST", STATUSES_PATH, FakeMastodon.dropped())
    assert failure(lambda: mastodon.post("t", key="k")).error.kind is ErrorKind.unknown_outcome
    monkeypatch.setattr("posting.mastodon_client._status_of", bug)
    assert classify_mastodon_error(ValueError("x")).kind is ErrorKind.unknown_outcome


@pytest.mark.parametrize(
    ("answer", "kind", "message", "status_code"),
    [
        (MastodonAnswer(400, None), ErrorKind.refused, "Mastodon answered 400 (its details could not be read)", 400),
        (MastodonAnswer(429, None), ErrorKind.rate_limited, "Mastodon answered 429 (its details could not be read)", 429),
        (MastodonAnswer(399, None), ErrorKind.unknown_outcome,
         "MastodonAPIError while talking to Mastodon (its details could not be read)", None),
        (None, ErrorKind.unknown_outcome, "MastodonAPIError while talking to Mastodon (its details could not be read)",
         None),
    ],
    ids=["400", "429", "399", "no-answer"],
)
def test_a_failure_whose_details_cannot_be_read_is_sorted_by_its_answer(monkeypatch, answer, kind, message, status_code):
    def bug(*_args):
        raise OverflowError("a bug")

    monkeypatch.setattr("posting.mastodon_client._classify", bug)
    error = classify_mastodon_error(MastodonAPIError("Mastodon API returned error", 500, "x", "x"), answer)
    assert (error.kind, error.message, error.status_code) == (kind, message, status_code)


@pytest.mark.parametrize(
    ("exc", "kind", "message"),
    [
        # Mastodon.py's own: (message, status, reason, the instance's error)
        (MastodonAPIError("Mastodon API returned error", 400, "Bad Request", None), ErrorKind.refused,
         "Mastodon answered 400: Bad Request"),
        (MastodonAPIError("Mastodon API returned error", 429, "Too Many Requests", "Throttled"), ErrorKind.rate_limited,
         "Mastodon answered 429: Throttled"),
        (MastodonAPIError("Mastodon API returned error", 430, "", "Odd"), ErrorKind.refused, "Mastodon answered 430: Odd"),
        # Only a message and a status: the status is read all the same, and nothing was said.
        (MastodonAPIError("Mastodon API returned error", 404), ErrorKind.refused,
         f"Mastodon answered 404: no message ({ADDRESS_HINT})"),
    ],
    ids=["400-reason-only", "429-not-a-rate-limit-error", "430", "two-args"],
)
def test_the_status_an_error_carries_decides_its_kind_without_the_answer(exc, kind, message):
    error = classify_mastodon_error(exc)
    assert (error.kind, error.message, error.status_code) == (kind, message, exc.args[1])


def test_an_error_whose_arguments_cannot_be_read_is_sorted_by_the_answer():
    class Opaque(MastodonAPIError):
        @property
        def args(self):
            raise AttributeError("args")

    error = classify_mastodon_error(Opaque("Could not parse response as JSON"), MastodonAnswer(200, None))
    assert (error.kind, error.status_code) == (ErrorKind.unknown_outcome, 200)
    assert error.message == UNREADABLE


def network_error(cause: BaseException) -> MastodonNetworkError:
    """What Mastodon.py raises when requests fails: a MastodonNetworkError raised while handling it."""
    try:
        try:
            raise cause
        except Exception as e:
            raise MastodonNetworkError(f"Could not complete request: {e}")
    except MastodonNetworkError as wrapped:
        return wrapped


def test_how_far_the_request_went_decides_between_not_sent_and_unknown():
    assert classify_mastodon_error(network_error(requests.ConnectTimeout("connect timed out"))).kind is ErrorKind.not_sent
    assert classify_mastodon_error(network_error(requests.ReadTimeout("read timed out"))).kind is ErrorKind.unknown_outcome
    assert classify_mastodon_error(network_error(requests.exceptions.ChunkedEncodingError("cut"))).kind \
        is ErrorKind.unknown_outcome
    unexpected = classify_mastodon_error(ValueError("bad json"))
    assert (unexpected.kind, unexpected.message) == (ErrorKind.unknown_outcome,
                                                     "unexpected ValueError while talking to Mastodon: bad json")


def test_a_rate_limit_error_is_a_429_unless_the_answer_says_otherwise():
    assert classify_mastodon_error(MastodonRatelimitError("Hit rate limit.")).kind is ErrorKind.rate_limited
    landed = classify_mastodon_error(MastodonRatelimitError("Rate limit time calculations failed"), MastodonAnswer(200, None))
    assert landed.kind is ErrorKind.unknown_outcome


def test_an_unreadable_success_without_its_answer_still_reads_well():
    error = classify_mastodon_error(MastodonAPIError("Could not parse response as JSON", "Exception was: ..."))
    assert (error.kind, error.status_code) == (ErrorKind.unknown_outcome, None)
    assert error.message == "Mastodon answered but its answer could not be read: the status may have been created"


def test_importing_the_client_leaves_mastodon_py_for_the_first_destination(tmp_path):
    probe = "import json, sys; import posting.mastodon_client; print(json.dumps('mastodon' in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) is False
