"""The X client factory against the fake X server, and the one classification of X's answers."""
from __future__ import annotations

import logging
import socket
import time
from datetime import datetime, timezone

import pytest
import requests
import tweepy
import urllib3.exceptions

from core.config import Settings
from core.delivery import ErrorKind
from core.x_client import (
    MAX_RATE_LIMIT_WAIT,
    RebasedSession,
    XCredentialsMissing,
    classify_x_error,
    make_x_client,
    reset_time,
)
from tests.conftest import ACCOUNT, TOKEN
from tests.fake_x import ACCESS_SECRET, BEARER_TOKEN, CONSUMER_SECRET, FakeResponse, FakeX


def x_settings(fake_x: FakeX, **overrides) -> Settings:
    values = {"SECRET_TOKEN": TOKEN, "ACCOUNT": ACCOUNT, "_env_file": None, **fake_x.settings_values(timeout=2)}
    return Settings(**{**values, **overrides})


def error_from(call) -> Exception:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_user_client_posts_through_base_url_with_a_valid_signature(fake_x):
    client = make_x_client(x_settings(fake_x))
    response = client.create_tweet(text="hello from the test")
    assert response.data["text"] == "hello from the test"
    assert response.data["id"] == fake_x.posted[0]["id"]
    (request,) = fake_x.post_attempts
    assert request.auth == "oauth1"  # the fake verified the HMAC-SHA1 signature over the rebased URL
    assert request.json == {"text": "hello from the test"}


def test_signature_covers_query_parameters(fake_x):
    fake_x.route("GET", "/2/users/:id/tweets", lambda r: FakeResponse(200, {"data": [], "meta": {"result_count": 0}}))
    client = make_x_client(x_settings(fake_x))
    client.get_users_tweets(123, max_results=5, exclude=["replies", "retweets"], user_auth=True)
    (request,) = fake_x.received("GET", "/2/users/123/tweets")
    assert request.auth == "oauth1"
    assert request.query["exclude"] == ["replies,retweets"]


def test_wrong_secret_is_refused_by_the_fake(fake_x):
    client = make_x_client(x_settings(fake_x, ACCESS_SECRET="not-" + ACCESS_SECRET))
    error = classify_x_error(error_from(lambda: client.create_tweet(text="x")))
    assert error.kind is ErrorKind.credentials and error.status_code == 401
    assert fake_x.posted == []


def test_app_only_client_uses_the_bearer_token(fake_x):
    fake_x.route("GET", "/2/users/by/username/:username",
                 lambda r: FakeResponse(200, {"data": {"id": "42", "name": "N", "username": r.path_params["username"]}}))
    client = make_x_client(x_settings(fake_x), app_only=True)
    assert client.get_user(username="someone").data.id == 42
    assert fake_x.requests[-1].auth == "bearer"
    # X refuses app-only auth on endpoints that act for a user.
    error = classify_x_error(error_from(lambda: client.create_tweet(text="x", user_auth=False)))
    assert error.kind is ErrorKind.credentials and error.status_code == 403


def test_missing_credentials_are_named(fake_x):
    with pytest.raises(XCredentialsMissing, match="ACCESS_KEY, ACCESS_SECRET"):
        make_x_client(x_settings(fake_x, ACCESS_KEY=None, ACCESS_SECRET=None))
    with pytest.raises(XCredentialsMissing, match="BEARER_TOKEN"):
        make_x_client(x_settings(fake_x, BEARER_TOKEN=None), app_only=True)


def test_base_url_path_prefix_is_kept(fake_x):
    fake_x.route("POST", "/proxy/2/tweets", fake_x._create_tweet, user_auth_only=True)
    client = make_x_client(x_settings(fake_x, TWITTER_API_BASE_URL=fake_x.base_url + "/proxy/"))
    client.create_tweet(text="through a prefix")
    assert fake_x.requests[-1].path == "/proxy/2/tweets" and fake_x.requests[-1].auth == "oauth1"


@pytest.mark.parametrize(
    ("answer", "kind", "status_code"),
    [
        (FakeX.duplicate_content(), ErrorKind.text_refused, 403),
        (FakeX.bad_request(), ErrorKind.text_refused, 400),
        (FakeX.unauthorized(), ErrorKind.credentials, 401),
        (FakeX.forbidden(), ErrorKind.credentials, 403),
        (FakeX.server_error(500), ErrorKind.server_error, 500),
        (FakeX.server_error(503), ErrorKind.server_error, 503),
        (FakeResponse(404, {"title": "Not Found Error", "detail": "nope"}), ErrorKind.refused, 404),
    ],
)
def test_answers_are_classified(fake_x, answer, kind, status_code):
    fake_x.enqueue("POST", "/2/tweets", answer)
    error = classify_x_error(error_from(lambda: make_x_client(x_settings(fake_x)).create_tweet(text="t")))
    assert (error.kind, error.status_code) == (kind, status_code)
    assert error.message.startswith(f"X answered {status_code}: ")


def test_duplicate_refusal_carries_xs_message(fake_x):
    client = make_x_client(x_settings(fake_x))
    client.create_tweet(text="same")
    error = classify_x_error(error_from(lambda: client.create_tweet(text="same")))
    assert error.kind is ErrorKind.text_refused
    assert error.message == "X answered 403: You are not allowed to create a Tweet with duplicate content."


def test_rate_limit_reset_comes_from_the_exhausted_limit(fake_x):
    window_reset = int(time.time()) + 600
    daily_reset = int(time.time()) + 20_000
    fake_x.enqueue("POST", "/2/tweets", FakeX.rate_limited(window_reset), FakeX.rate_limited(daily_reset, daily=True))
    client = make_x_client(x_settings(fake_x))
    window = classify_x_error(error_from(lambda: client.create_tweet(text="t")))
    daily = classify_x_error(error_from(lambda: client.create_tweet(text="t")))
    assert window.kind is daily.kind is ErrorKind.rate_limited
    assert window.retry_at == datetime.fromtimestamp(window_reset, timezone.utc)
    assert daily.retry_at == datetime.fromtimestamp(daily_reset, timezone.utc)


def test_rate_limit_without_headers_has_no_reset(fake_x):
    fake_x.enqueue("POST", "/2/tweets", FakeResponse(429, {"title": "Too Many Requests"}, {"x-rate-limit-reset": None}))
    error = classify_x_error(error_from(lambda: make_x_client(x_settings(fake_x)).create_tweet(text="t")))
    assert error.kind is ErrorKind.rate_limited and error.retry_at is None


@pytest.mark.parametrize(
    "reset",
    ["99999999999999999999", "9" * 5000, "-5", "soon", "1.7e9", "", "\u00b2", str(int(time.time()) + 400 * 86400)],
    ids=["absurd", "over-int-limit", "negative", "words", "float", "empty", "superscript-digit", "in-400-days"],
)
def test_unusable_rate_limit_reset_is_unknown(fake_x, reset):
    fake_x.enqueue("POST", "/2/tweets", FakeX.rate_limited(reset))
    error = classify_x_error(error_from(lambda: make_x_client(x_settings(fake_x)).create_tweet(text="t")))
    assert (error.kind, error.status_code, error.retry_at) == (ErrorKind.rate_limited, 429, None)


def test_an_unusable_daily_reset_falls_back_to_the_window(fake_x):
    window_reset = int(time.time()) + 600
    answer = FakeX.rate_limited(window_reset)
    answer.headers.update({"x-user-limit-24hour-remaining": "0", "x-user-limit-24hour-reset": "99999999999999999999"})
    fake_x.enqueue("POST", "/2/tweets", answer)
    error = classify_x_error(error_from(lambda: make_x_client(x_settings(fake_x)).create_tweet(text="t")))
    assert error.retry_at == datetime.fromtimestamp(window_reset, timezone.utc)


def classified_with_a_broken_reader(fake_x, monkeypatch, answer, broken: str):
    """X answers `answer`; `core.x_client.<broken>`, a step of reading it, raises; what classify_x_error makes of it."""
    fake_x.enqueue("POST", "/2/tweets", answer)
    exc = error_from(lambda: make_x_client(x_settings(fake_x)).create_tweet(text="t"))

    def bug(*_args):
        raise OverflowError("a bug in reading the answer")

    monkeypatch.setattr(f"core.x_client.{broken}", bug)
    return classify_x_error(exc)


@pytest.mark.parametrize(
    ("answer", "broken", "kind"),
    [
        (FakeX.rate_limited(), "_rate_limit_reset", ErrorKind.rate_limited),
        (FakeX.duplicate_content(), "_classify_http_answer", ErrorKind.credentials),
        (FakeX.server_error(503), "_classify_http_answer", ErrorKind.server_error),
        (FakeX.dropped(), "_network_reason", ErrorKind.unknown_outcome),
    ],
    ids=["429", "403", "503", "dropped"],
)
def test_classifying_never_raises(fake_x, monkeypatch, caplog, answer, broken, kind):
    """A bug in reading X's answer still gives the kind the answer implies: an HTTP error means
    X did not post (by its status code alone), anything else that it may have."""
    error = classified_with_a_broken_reader(fake_x, monkeypatch, answer, broken)
    assert error.kind is kind and error.retry_at is None
    assert "OverflowError: a bug in reading the answer" in caplog.text


def test_timeout_after_sending_is_an_unknown_outcome(fake_x):
    fake_x.enqueue("POST", "/2/tweets", FakeX.hang(30))
    client = make_x_client(x_settings(fake_x, TWITTER_TIMEOUT_SECONDS=0.3))
    started = time.monotonic()
    error = classify_x_error(error_from(lambda: client.create_tweet(text="t")))
    assert time.monotonic() - started < 5
    assert error.kind is ErrorKind.unknown_outcome
    assert len(fake_x.post_attempts) == 1  # the request did reach X


def test_dropped_connection_is_an_unknown_outcome(fake_x):
    fake_x.enqueue("POST", "/2/tweets", FakeX.dropped())
    error = classify_x_error(error_from(lambda: make_x_client(x_settings(fake_x)).create_tweet(text="t")))
    assert error.kind is ErrorKind.unknown_outcome
    assert len(fake_x.post_attempts) == 1  # sent once, never retried


def test_refused_connection_was_not_sent(fake_x):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client = make_x_client(x_settings(fake_x, TWITTER_API_BASE_URL=f"http://127.0.0.1:{closed_port}"))
    error = classify_x_error(error_from(lambda: client.create_tweet(text="t")))
    assert error.kind is ErrorKind.not_sent
    assert "Connection refused" in error.message


def test_connect_timeout_was_not_sent_but_read_timeout_may_have_been():
    assert classify_x_error(requests.ConnectTimeout("connect timed out")).kind is ErrorKind.not_sent
    assert classify_x_error(requests.ReadTimeout("read timed out")).kind is ErrorKind.unknown_outcome
    assert classify_x_error(requests.exceptions.ChunkedEncodingError("cut")).kind is ErrorKind.unknown_outcome
    assert classify_x_error(ValueError("bad json")).kind is ErrorKind.unknown_outcome


def test_secrets_never_reach_the_logs(fake_x, caplog):
    caplog.set_level(logging.DEBUG)
    fake_x.route("GET", "/2/users/by/username/:username",
                 lambda r: FakeResponse(200, {"data": {"id": "1", "name": "n", "username": "u"}}))
    make_x_client(x_settings(fake_x)).create_tweet(text="logged?")
    make_x_client(x_settings(fake_x), app_only=True).get_user(username="u")
    assert caplog.records  # DEBUG is captured (urllib3 logs its connections)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in (CONSUMER_SECRET, ACCESS_SECRET, BEARER_TOKEN, "oauth_signature", "Authorization"):
        assert secret not in logged


def rate_limit_answer(now: int, *, window: tuple[int, int], daily: tuple[int, int]) -> FakeResponse:
    """A 429 with the 15-minute window's and the 24-hour user limit's (remaining, seconds from `now` to reset)."""
    headers = {"x-rate-limit-limit": "100", "x-user-limit-24hour-limit": "17"}
    for prefix, (remaining, reset_in) in (("x-rate-limit", window), ("x-user-limit-24hour", daily)):
        headers |= {f"{prefix}-remaining": str(remaining), f"{prefix}-reset": str(now + reset_in)}
    return FakeResponse(429, {"title": "Too Many Requests", "detail": "Too Many Requests"}, headers)


@pytest.mark.parametrize(
    ("window", "daily", "retry_in"),
    [
        ((0, 600), (5, 20_000), 600),  # only the window is exhausted: its reset, not the day's
        ((0, 600), (0, 20_000), 20_000),  # both: the later reset
        ((0, 20_000), (0, 600), 20_000),  # both, the window resetting later
        ((99, 600), (0, 20_000), 20_000),  # only the day's cap
    ],
    ids=["window-only", "both-day-later", "both-window-later", "day-only"],
)
def test_rate_limit_retry_time_is_when_every_exhausted_limit_has_reset(fake_x, window, daily, retry_in):
    now = int(time.time())
    fake_x.enqueue("POST", "/2/tweets", rate_limit_answer(now, window=window, daily=daily))
    error = classify_x_error(error_from(lambda: make_x_client(x_settings(fake_x)).create_tweet(text="t")))
    assert error.kind is ErrorKind.rate_limited
    assert error.retry_at == datetime.fromtimestamp(now + retry_in, timezone.utc)


def http_error(status_code: int, body: bytes = b"", *, reason: str = "", headers: dict[str, str] | None = None):
    """What tweepy raises for an HTTP error answer, without a server: only its response is read."""
    response = requests.Response()
    response.status_code, response.reason, response._content = status_code, reason, body
    response.headers.update(headers or {})
    return tweepy.HTTPException(response)


def test_missing_credentials_are_listed_on_the_exception(fake_x):
    with pytest.raises(XCredentialsMissing) as info:
        make_x_client(x_settings(fake_x, BEARER_TOKEN=None), app_only=True)
    assert info.value.missing == ["BEARER_TOKEN"]
    with pytest.raises(XCredentialsMissing) as info:
        make_x_client(x_settings(fake_x, ACCESS_KEY=None))
    assert info.value.missing == ["ACCESS_KEY"]


def test_rebase_drops_the_base_urls_trailing_slash_only():
    session = RebasedSession("http://127.0.0.1:9/API-X/", 1)
    assert session.rebase("https://api.twitter.com/2/tweets?a=1") == "http://127.0.0.1:9/API-X/2/tweets?a=1"


def test_rebased_session_passes_positional_arguments_on(fake_x):
    fake_x.route("GET", "/2/probe", lambda r: FakeResponse(200, {"data": []}))
    session = RebasedSession(fake_x.base_url, 2)
    session.request("GET", "https://api.twitter.com/2/probe", {"q": "positional"})
    (request,) = fake_x.received("GET", "/2/probe")
    assert request.query["q"] == ["positional"]


@pytest.mark.parametrize("app_only", [False, True], ids=["user", "app"])
def test_a_429_raises_at_once_and_never_sleeps(fake_x, monkeypatch, app_only):
    def sleep(seconds):
        raise AssertionError(f"the client slept {seconds}s on a rate limit")

    monkeypatch.setattr("tweepy.client.time.sleep", sleep)
    fake_x.route("GET", "/2/users/by/username/:username", lambda r: FakeX.rate_limited())
    client = make_x_client(x_settings(fake_x), app_only=app_only)
    with pytest.raises(tweepy.TooManyRequests):
        client.get_user(username="someone", user_auth=not app_only)


def test_a_reset_exactly_at_the_longest_wait_is_kept(monkeypatch):
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)

    class FrozenDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return now

    monkeypatch.setattr("core.x_client.datetime", FrozenDatetime)
    at_limit = int((now + MAX_RATE_LIMIT_WAIT).timestamp())
    assert reset_time(str(at_limit)) == now + MAX_RATE_LIMIT_WAIT
    assert reset_time(str(at_limit + 1)) is None


@pytest.mark.parametrize(
    ("answer", "broken", "status_code", "message"),
    [
        (FakeX.rate_limited(), "_rate_limit_reset", 429, "X answered 429 (its details could not be read)"),
        (FakeX.duplicate_content(), "_classify_http_answer", 403, "X answered 403 (its details could not be read)"),
        (FakeX.dropped(), "_network_reason", None, "ConnectionError while talking to X (its details could not be read)"),
    ],
    ids=["429", "403", "dropped"],
)
def test_a_failure_to_read_the_details_still_says_what_x_answered(
    fake_x, monkeypatch, caplog, answer, broken, status_code, message,
):
    with caplog.at_level(logging.ERROR, logger="core.x_client"):
        error = classified_with_a_broken_reader(fake_x, monkeypatch, answer, broken)
    assert (error.status_code, error.message) == (status_code, message)
    assert [record.getMessage() for record in caplog.records if record.name == "core.x_client"] == [
        "could not read the details of a failed X call (OverflowError: a bug in reading the answer): "
        "sorting it by whether X answered"
    ]


@pytest.mark.parametrize(
    ("exc", "kind", "message"),
    [
        (requests.ReadTimeout(urllib3.exceptions.ReadTimeoutError(None, "/2/tweets", "Read timed out.")),
         ErrorKind.unknown_outcome, "X did not answer in time: ReadTimeoutError: None: Read timed out."),
        (requests.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted.")),
         ErrorKind.unknown_outcome, "the connection to X failed mid-request: ProtocolError: Connection aborted."),
        (requests.ConnectionError(), ErrorKind.unknown_outcome, "the connection to X failed mid-request: ConnectionError"),
        (ValueError("bad json"), ErrorKind.unknown_outcome, "unexpected ValueError while talking to X: bad json"),
        # Only requests' ConnectionError says the connection was never made; a wrapped one may have sent.
        (requests.RequestException(urllib3.exceptions.NewConnectionError(None, "refused")),
         ErrorKind.unknown_outcome, "the connection to X failed mid-request: NewConnectionError: refused"),
    ],
    ids=["read-timeout", "aborted", "no-args", "unexpected", "wrapped-new-connection"],
)
def test_network_failures_say_what_happened(exc, kind, message):
    error = classify_x_error(exc)
    assert (error.kind, error.message, error.status_code) == (kind, message, None)


def test_refused_connection_names_the_cause_without_the_pool(fake_x):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client = make_x_client(x_settings(fake_x, TWITTER_API_BASE_URL=f"http://127.0.0.1:{closed_port}"))
    error = classify_x_error(error_from(lambda: client.create_tweet(text="t")))
    assert error.message == (
        "could not connect to X: NewConnectionError: Failed to establish a new connection: [Errno 111] Connection refused"
    )


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (http_error(404, reason="Not Found"), "X answered 404: Not Found"),
        (http_error(502), "X answered 502: no message"),
        (http_error(400, b'{"errors": [{"message": "first"}, {"message": "second"}]}'), "X answered 400: first; second"),
    ],
    ids=["reason-only", "nothing", "two-messages"],
)
def test_http_answer_message_falls_back_to_the_reason(exc, message):
    assert classify_x_error(exc).message == message


def test_only_a_429_carries_a_retry_time():
    reset = str(int(time.time()) + 600)
    error = classify_x_error(http_error(503, headers={"x-rate-limit-remaining": "0", "x-rate-limit-reset": reset}))
    assert (error.kind, error.retry_at) == (ErrorKind.server_error, None)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-rate-limit-remaining": "3", "x-user-limit-24hour-remaining": "5"},  # nothing says 0
        {},  # no remaining counts at all
    ],
    ids=["none-exhausted", "no-remaining"],
)
def test_rate_limit_without_an_exhausted_limit_retries_at_the_window_reset(headers):
    now = int(time.time())
    headers = {**headers, "x-rate-limit-reset": str(now + 600), "x-user-limit-24hour-reset": str(now + 20_000)}
    error = classify_x_error(http_error(429, headers=headers))
    assert error.retry_at == datetime.fromtimestamp(now + 600, timezone.utc)


def test_an_exhausted_daily_cap_counts_without_a_window_reset():
    reset = int(time.time()) + 20_000
    headers = {"x-user-limit-24hour-remaining": "0", "x-user-limit-24hour-reset": str(reset)}
    error = classify_x_error(http_error(429, headers=headers))
    assert error.retry_at == datetime.fromtimestamp(reset, timezone.utc)
