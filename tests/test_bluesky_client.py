"""The Bluesky destination against the fake PDS, over real HTTP through atproto, and the one
classification of Bluesky's answers."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import httpx
import pytest
from atproto_client import Client, models
from atproto_client import exceptions as atproto_errors
from atproto_client.models.string_formats import TID_RE

from core.delivery import DeliveryError, DeliveryFailed, ErrorKind, RemotePost
from posting.bluesky_client import (
    CREATE_SESSION_BUDGET,
    BlueskyDestination,
    MemorySessionStore,
    SessionVault,
    bluesky_facets,
    classify_bluesky_error,
    make_tid,
)
from tests.fake_bluesky import (
    APP_PASSWORD,
    CREATE_RECORD,
    CREATE_SESSION,
    DID,
    GET_RECORD,
    HANDLE,
    REFRESH_SESSION,
    RESOLVE_HANDLE,
    FakeBluesky,
    FakeResponse,
)


def destination(fake: FakeBluesky, store: MemorySessionStore | None = None, *, timeout: float = 5.0,
                password: str = APP_PASSWORD, **options) -> BlueskyDestination:
    return BlueskyDestination(fake.base_url, HANDLE, password, timeout, store or MemorySessionStore(), **options)


def failure_of(call) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as info:
        call()
    return info.value


def post_once(fake: FakeBluesky, text: str = "hello Bluesky", **options) -> RemotePost:
    bluesky = destination(fake, **options)
    return bluesky.post(text, key=bluesky.new_key("delivery-1"))


# ---- posting ----
def test_a_post_lands_as_a_record_under_the_deliverys_key(fake_bluesky):
    fake_bluesky.handles["alice.bsky.social"] = "did:plc:alice"
    bluesky = destination(fake_bluesky, langs=["en"])
    key = bluesky.new_key("delivery-1")
    text = "hi @alice.bsky.social, see https://example.com/a #bots"
    posted = bluesky.post(text, key=key)
    assert posted == RemotePost(id=key, url=f"https://bsky.app/profile/{HANDLE}/post/{key}")
    stored = fake_bluesky.records[key]
    assert stored["uri"] == f"at://{DID}/app.bsky.feed.post/{key}"
    record = stored["value"]
    assert record["$type"] == "app.bsky.feed.post" and record["text"] == text and record["langs"] == ["en"]
    assert datetime.fromisoformat(record["createdAt"]) > datetime.now(timezone.utc) - timedelta(minutes=1)
    assert record["createdAt"].endswith("Z")
    features = [facet["features"][0] for facet in record["facets"]]
    assert features == [
        {"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:alice"},
        {"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/a"},
        {"$type": "app.bsky.richtext.facet#tag", "tag": "bots"},
    ]


def test_a_post_without_links_or_languages_has_no_facets_or_langs(fake_bluesky):
    posted = post_once(fake_bluesky, "plain words")
    record = fake_bluesky.records[posted.id]["value"]
    assert "facets" not in record and "langs" not in record
    assert not fake_bluesky.received("GET", RESOLVE_HANDLE)


def test_new_key_is_a_tid_of_now_with_a_clock_id_from_the_seed(fake_bluesky):
    bluesky = destination(fake_bluesky)
    first, again, other = bluesky.new_key("delivery-1"), bluesky.new_key("delivery-1"), bluesky.new_key("delivery-2")
    assert all(TID_RE.match(key) for key in (first, again, other))
    decode = [int("".join(format("234567abcdefghijklmnopqrstuvwxyz".index(c), "05b") for c in key), 2) for key in (first, again, other)]
    assert decode[0] & 0x3FF == decode[1] & 0x3FF != decode[2] & 0x3FF  # the clock id follows the seed
    # the low 10 bits of the seed's SHA-256's first two bytes, big-endian: 0x0b22 (802) and 0x99f0 (496)
    assert (first[-2:], other[-2:]) == ("t4", "jk")
    micros = decode[0] >> 10
    assert abs(micros / 1e6 - time.time()) < 60
    assert decode[1] >> 10 >= micros  # later keys sort later


@pytest.mark.parametrize(
    "micros, clock_id, tid",
    [
        (0, 0, "2222222222222"),  # the spec's TID of integer zero
        (1724171495793000, 512, "3l25zusnsfck2"),  # @atcute/tid's examples
        (1724171495793000, 816, "3l25zusnsfctk"),
        (1, 0, "2222222222322"),
        (2**53 - 1, 1023, "bzzzzzzzzzzzz"),  # the largest: the top bit stays 0
        (2**53 + 1, 5, "2222222222327"),  # microseconds past 53 bits never reach the top bit
    ],
)
def test_make_tid_is_the_atproto_tid_of_microseconds_and_clock_id(micros, clock_id, tid):
    """https://atproto.com/specs/tid: base32-sortable of 64 bits, the top bit 0, then 53 bits of
    microseconds and a 10-bit clock id."""
    assert make_tid(micros, clock_id) == tid


def test_a_handle_written_with_an_at_sign_is_used_without_it(fake_bluesky):
    bluesky = BlueskyDestination(fake_bluesky.base_url, "@" + HANDLE, APP_PASSWORD, 5, MemorySessionStore())
    key = bluesky.new_key("delivery-1")
    assert bluesky.post("hello", key=key) == RemotePost(id=key, url=f"https://bsky.app/profile/{HANDLE}/post/{key}")
    assert fake_bluesky.received("POST", CREATE_SESSION)[0].json["identifier"] == HANDLE
    assert repr(bluesky) == f"BlueskyDestination({fake_bluesky.base_url!r}, {HANDLE!r})"


def test_a_key_that_is_not_a_tid_is_refused_before_anything_is_sent(fake_bluesky):
    with pytest.raises(ValueError, match="not a TID"):
        destination(fake_bluesky).post("text", key="delivery-1")
    assert fake_bluesky.requests == []


@pytest.mark.parametrize("lost", [FakeBluesky.lands_then_hangs(30), FakeBluesky.lands_then_drops()], ids=["timeout", "dropped"])
def test_a_retry_after_a_lost_answer_is_recorded_as_posted_with_no_second_record(fake_bluesky, lost):
    """The first answer is lost after the record landed; the retry writes the same key, the PDS
    refuses it as it refuses an existing key (500), and getRecord shows the post is ours."""
    fake_bluesky.enqueue("POST", CREATE_RECORD, lost)
    store = MemorySessionStore()
    first_run = destination(fake_bluesky, store, timeout=0.5)
    key = first_run.new_key("delivery-1")
    lost_answer = failure_of(lambda: first_run.post("the same text", key=key))
    assert lost_answer.error.kind is ErrorKind.unknown_outcome
    assert list(fake_bluesky.records) == [key]  # it did land

    retried = destination(fake_bluesky, store).post("the same text", key=key)
    assert retried == RemotePost(id=key, url=f"https://bsky.app/profile/{HANDLE}/post/{key}")
    assert list(fake_bluesky.records) == [key] and fake_bluesky.create_record_calls == 2
    assert len(fake_bluesky.received("GET", GET_RECORD)) == 1


def logged_in_client(fake: FakeBluesky) -> Client:
    client = Client(base_url=fake.base_url)
    client.login(HANDLE, APP_PASSWORD, fetch_bsky_profile=False)
    return client


def post_record(text: str, rkey: str = "3n3os4ytibe6c"):
    record = {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-12-02T12:00:00.000Z"}
    return models.ComAtprotoRepoCreateRecord.Data(repo=DID, collection="app.bsky.feed.post", rkey=rkey, record=record)


def test_the_fake_refuses_an_existing_record_key_as_the_pds_does(fake_bluesky):
    """bluesky-social/atproto's PDS: its repo refuses a key it holds with a plain Error, which the
    XRPC server answers as a 500 without details (see tests/fake_bluesky.py)."""
    client = logged_in_client(fake_bluesky)
    client.com.atproto.repo.create_record(post_record("once"))
    with pytest.raises(atproto_errors.RequestException) as refused:
        client.com.atproto.repo.create_record(post_record("once"))
    answer = refused.value.response
    assert answer.status_code == 500
    assert (answer.content.error, answer.content.message) == ("InternalServerError", "Internal Server Error")


@pytest.mark.parametrize(
    "text, rkey, message",
    [
        ("🇫🇷" * 301, "3n3os4ytibe6c",
         "Invalid app.bsky.feed.post record: grapheme too big (maximum 300, got 301) at $.record.text"),
        ("👨‍👩‍👧‍👦" * 121, "3n3os4ytibe6c",
         "Invalid app.bsky.feed.post record: string too big (maximum 3000, got 3025) at $.record.text"),
        ("fine", "delivery-1", "Invalid record key for app.bsky.feed.post: Invalid TID"),
    ],
)
def test_the_fake_checks_posts_as_the_lexicon_does(fake_bluesky, text, rkey, message):
    with pytest.raises(atproto_errors.BadRequestError) as refused:
        logged_in_client(fake_bluesky).com.atproto.repo.create_record(post_record(text, rkey))
    assert (refused.value.response.content.error, refused.value.response.content.message) == ("InvalidRequest", message)
    assert fake_bluesky.records == {}


def bluesky_log(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "posting.bluesky_client"]


def test_writing_a_key_again_finds_the_post_already_there(fake_bluesky, caplog):
    caplog.set_level(logging.INFO, logger="posting.bluesky_client")
    bluesky = destination(fake_bluesky)
    key = bluesky.new_key("delivery-1")
    assert bluesky.post("once", key=key) == bluesky.post("once", key=key)
    assert fake_bluesky.create_record_calls == 2 and len(fake_bluesky.records) == 1
    assert f"Bluesky already holds this post under key {key}: an earlier attempt landed" in bluesky_log(caplog)


def test_a_409_on_a_key_that_landed_finds_the_post_already_there(fake_bluesky):
    bluesky = destination(fake_bluesky)
    key = bluesky.new_key("delivery-1")
    bluesky.post("once", key=key)
    fake_bluesky.enqueue("POST", CREATE_RECORD, FakeResponse(409, {"error": "Conflict", "message": "record exists"}))
    assert bluesky.post("once", key=key) == RemotePost(id=key, url=f"https://bsky.app/profile/{HANDLE}/post/{key}")
    assert len(fake_bluesky.received("GET", GET_RECORD)) == 1 and len(fake_bluesky.records) == 1


def test_another_post_under_the_key_is_refused_not_taken_for_ours(fake_bluesky):
    bluesky = destination(fake_bluesky)
    key = bluesky.new_key("delivery-1")
    bluesky.post("the first text", key=key)
    failure = failure_of(lambda: bluesky.post("another text", key=key))
    assert (failure.error.kind, failure.error.status_code) == (ErrorKind.refused, 500)
    assert failure.error.message == (f"Bluesky already holds another post under record key {key} "
                                     f"(at://{DID}/app.bsky.feed.post/{key}): the key was reused")
    assert fake_bluesky.records[key]["value"]["text"] == "the first text"


@pytest.mark.parametrize(
    "value",
    [
        {"$type": "app.bsky.feed.like", "createdAt": "2026-12-02T12:00:00.000Z",
         "subject": {"uri": f"at://{DID}/app.bsky.feed.post/3n3os4ytibe6c",
                     "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}},
        {"$type": "app.bsky.feed.like", "subject": {}},
    ],
    ids=["a like atproto reads", "a record atproto cannot read"],
)
def test_a_record_without_text_under_the_key_is_refused_not_taken_for_ours(fake_bluesky, value):
    """atproto gives a record it knows as its model (a like has no `text`), others as a DotDict."""
    bluesky = destination(fake_bluesky)
    key = bluesky.new_key("delivery-1")
    uri = f"at://{DID}/app.bsky.feed.post/{key}"
    fake_bluesky.records[key] = {"uri": uri, "cid": "bafyreiabc", "value": value}
    failure = failure_of(lambda: bluesky.post("mine", key=key))
    assert (failure.error.kind, failure.error.status_code) == (ErrorKind.refused, 500)
    assert failure.error.message == f"Bluesky already holds another post under record key {key} ({uri}): the key was reused"


def test_a_server_error_with_no_record_under_the_key_stays_a_server_error(fake_bluesky, caplog):
    caplog.set_level(logging.INFO, logger="posting.bluesky_client")
    fake_bluesky.enqueue("POST", CREATE_RECORD, FakeBluesky.server_error(500))
    failure = failure_of(lambda: post_once(fake_bluesky))
    assert failure.error.kind is ErrorKind.server_error and failure.error.status_code == 500
    assert failure.error.message == "Bluesky answered 500 InternalServerError: Internal Server Error"
    assert fake_bluesky.records == {} and len(fake_bluesky.received("GET", GET_RECORD)) == 1
    (key,) = [request.query["rkey"][0] for request in fake_bluesky.received("GET", GET_RECORD)]
    assert (f"no earlier Bluesky post under key {key} (Bluesky answered 400 RecordNotFound: "
            f"Could not locate record: at://{DID}/app.bsky.feed.post/{key})") in bluesky_log(caplog)


def test_a_failed_record_lookup_leaves_the_first_error(fake_bluesky):
    fake_bluesky.enqueue("POST", CREATE_RECORD, FakeBluesky.server_error(503))
    fake_bluesky.enqueue("GET", GET_RECORD, FakeBluesky.server_error(500))
    failure = failure_of(lambda: post_once(fake_bluesky))
    assert failure.error.kind is ErrorKind.server_error and failure.error.status_code == 503


def test_the_timeout_bounds_post(fake_bluesky):
    fake_bluesky.enqueue("POST", CREATE_RECORD, FakeBluesky.hang(30))
    started = time.monotonic()
    failure = failure_of(lambda: post_once(fake_bluesky, timeout=0.3))
    assert time.monotonic() - started < 3
    assert failure.error.kind is ErrorKind.unknown_outcome
    assert failure.error.message.startswith("Bluesky did not answer in time: ReadTimeout")
    assert fake_bluesky.create_record_calls == 1  # sent once, never retried


@pytest.mark.parametrize("route", [("POST", CREATE_SESSION), ("GET", RESOLVE_HANDLE)], ids=["login", "mention"])
def test_a_step_before_the_post_that_hangs_was_not_sent(fake_bluesky, route):
    """A login or a mention lookup that gets no answer sent no post: safe to retry."""
    fake_bluesky.handles["alice.bsky.social"] = "did:plc:alice"
    fake_bluesky.enqueue(*route, FakeBluesky.hang(30))
    started = time.monotonic()
    failure = failure_of(lambda: post_once(fake_bluesky, "hi @alice.bsky.social", timeout=0.3))
    assert time.monotonic() - started < 3
    assert failure.error.kind is ErrorKind.not_sent
    assert failure.error.message.endswith("(before the post was sent)")
    assert fake_bluesky.create_record_calls == 0


# ---- classification over HTTP ----
@pytest.mark.parametrize(
    "route, answer, kind, status_code, words",
    [
        (CREATE_RECORD, FakeBluesky.rate_limited(), ErrorKind.rate_limited, 429, "RateLimitExceeded: Rate Limit Exceeded"),
        (CREATE_SESSION, FakeBluesky.rate_limited(limit=30, window=300), ErrorKind.rate_limited, 429,
         "RateLimitExceeded: Rate Limit Exceeded"),
        (CREATE_RECORD, FakeBluesky.server_error(502), ErrorKind.server_error, 502, "UpstreamFailure: Upstream Failure"),
        (CREATE_RECORD, FakeBluesky.server_error(503), ErrorKind.server_error, 503, "NotEnoughResources: Not Enough Resources"),
        (CREATE_SESSION, FakeBluesky.server_error(500), ErrorKind.server_error, 500, "InternalServerError: Internal Server Error"),
        (CREATE_SESSION, FakeBluesky.bad_credentials(), ErrorKind.credentials, 401,
         "AuthenticationRequired: Invalid identifier or password (check BLUESKY_HANDLE and BLUESKY_APP_PASSWORD)"),
        (CREATE_RECORD, FakeResponse(403, {"error": "Forbidden", "message": "no"}), ErrorKind.credentials, 403,
         "Forbidden: no (check BLUESKY_HANDLE and BLUESKY_APP_PASSWORD)"),
        (CREATE_RECORD, FakeResponse(400, {"error": "InvalidRequest", "message": "Could not find repo"}), ErrorKind.refused, 400,
         "InvalidRequest: Could not find repo"),
        (CREATE_RECORD, FakeResponse(402, {"error": "PaymentRequired", "message": "pay"}), ErrorKind.refused, 402,
         "PaymentRequired: pay"),
        (CREATE_RECORD, FakeResponse(404, {"error": "NotFound", "message": "Not Found"}), ErrorKind.refused, 404, "NotFound: Not Found"),
        (CREATE_RECORD, FakeResponse(409, {"error": "Conflict", "message": "taken"}), ErrorKind.refused, 409, "Conflict: taken"),
        (CREATE_RECORD, FakeResponse(410, {"error": "Gone", "message": "gone"}), ErrorKind.refused, 410, "Gone: gone"),
        (CREATE_RECORD, FakeResponse(413, "Payload Too Large"), ErrorKind.refused, 413, "no message"),
    ],
)
def test_answers_are_classified(fake_bluesky, route, answer, kind, status_code, words):
    """Word for word; only a 5xx or a 409 from createRecord leads to a getRecord (did it land earlier?)."""
    fake_bluesky.enqueue("POST", route, answer)
    error = failure_of(lambda: post_once(fake_bluesky)).error
    assert (error.kind, error.status_code) == (kind, status_code)
    assert error.message == f"Bluesky answered {status_code} {words}"
    assert not fake_bluesky.records
    looked_up = route == CREATE_RECORD and (status_code >= 500 or status_code == 409)
    assert len(fake_bluesky.received("GET", GET_RECORD)) == looked_up
    assert fake_bluesky.create_record_calls == (route == CREATE_RECORD)  # no refresh and retry


def test_a_text_over_300_graphemes_is_refused_before_any_request(fake_bluesky):
    failure = failure_of(lambda: post_once(fake_bluesky, "🇫🇷" * 301))
    assert failure.error.kind is ErrorKind.text_refused
    assert failure.error.message == "301 graphemes over Bluesky's 300"
    assert fake_bluesky.requests == []


def test_a_record_the_pds_finds_invalid_is_refused_for_its_text(fake_bluesky):
    """The PDS's own wording, should its count ever differ from ours."""
    invalid = "Invalid app.bsky.feed.post record: grapheme too big (maximum 300, got 301) at $.record.text"
    fake_bluesky.enqueue("POST", CREATE_RECORD, FakeResponse(400, {"error": "InvalidRequest", "message": invalid}))
    failure = failure_of(lambda: post_once(fake_bluesky))
    assert failure.error.kind is ErrorKind.text_refused and failure.error.status_code == 400
    assert failure.error.message == f"Bluesky answered 400 InvalidRequest: {invalid}"


def test_bad_credentials_say_which_variables_to_check(fake_bluesky):
    error = failure_of(lambda: post_once(fake_bluesky, password="wxyz-wxyz-wxyz-wxyz")).error
    assert error.kind is ErrorKind.credentials
    assert error.message == ("Bluesky answered 401 AuthenticationRequired: Invalid identifier or password "
                             "(check BLUESKY_HANDLE and BLUESKY_APP_PASSWORD)")


def test_rate_limit_retry_time_comes_from_ratelimit_reset(fake_bluesky):
    reset = int(time.time()) + 1234
    fake_bluesky.enqueue("POST", CREATE_RECORD, FakeBluesky.rate_limited(reset))
    error = failure_of(lambda: post_once(fake_bluesky)).error
    assert error.retry_at == datetime.fromtimestamp(reset, timezone.utc)
    assert fake_bluesky.create_record_calls == 1  # a 429 raises at once, never waits and retries


@pytest.mark.parametrize("reset", ["soon", "-5", "1.5", str(int(time.time()) + 400 * 86400), "9" * 30])
def test_an_absurd_ratelimit_reset_is_ignored(fake_bluesky, reset):
    answer = FakeBluesky.rate_limited()
    answer.headers["ratelimit-reset"] = reset
    fake_bluesky.enqueue("POST", CREATE_RECORD, answer)
    error = failure_of(lambda: post_once(fake_bluesky)).error
    assert error.kind is ErrorKind.rate_limited and error.retry_at is None


def test_a_refused_connection_was_not_sent():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    bluesky = BlueskyDestination(f"http://127.0.0.1:{closed_port}", HANDLE, APP_PASSWORD, 2, MemorySessionStore())
    error = failure_of(lambda: bluesky.post("t", key=bluesky.new_key("d"))).error
    assert error.kind is ErrorKind.not_sent
    assert error.message.startswith("could not connect to Bluesky: ConnectError")


# ---- classification of what atproto raises ----
def network_error(wrapper, cause: Exception) -> Exception:
    """What atproto raises for an httpx failure: its own error, the httpx one as the cause."""
    try:
        try:
            raise cause
        except Exception as exc:
            raise wrapper() from exc
    except Exception as raised:
        return raised


@pytest.mark.parametrize(
    "exc, kind, message",
    [
        (network_error(atproto_errors.InvokeTimeoutError, httpx.ConnectTimeout("connect")), ErrorKind.not_sent,
         "could not connect to Bluesky: ConnectTimeout: connect"),
        (network_error(atproto_errors.InvokeTimeoutError, httpx.PoolTimeout("pool")), ErrorKind.not_sent,
         "could not connect to Bluesky: PoolTimeout: pool"),
        (network_error(atproto_errors.NetworkError, httpx.ConnectError("refused")), ErrorKind.not_sent,
         "could not connect to Bluesky: ConnectError: refused"),
        (network_error(atproto_errors.InvokeTimeoutError, httpx.ReadTimeout("read")), ErrorKind.unknown_outcome,
         "Bluesky did not answer in time: ReadTimeout: read"),
        (network_error(atproto_errors.InvokeTimeoutError, httpx.ReadTimeout("")), ErrorKind.unknown_outcome,
         "Bluesky did not answer in time: ReadTimeout"),
        (network_error(atproto_errors.InvokeTimeoutError, httpx.WriteTimeout("write")), ErrorKind.unknown_outcome,
         "Bluesky did not answer in time: WriteTimeout: write"),
        (network_error(atproto_errors.NetworkError, httpx.ReadError("reset")), ErrorKind.unknown_outcome,
         "the connection to Bluesky failed mid-request: ReadError: reset"),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), ErrorKind.unknown_outcome,
         "the connection to Bluesky failed mid-request: RemoteProtocolError: Server disconnected without sending a response."),
        (atproto_errors.LoginRequiredError(), ErrorKind.credentials,
         "no Bluesky session to post with: check BLUESKY_HANDLE and BLUESKY_APP_PASSWORD"),
        (ValueError("an answer atproto could not read"), ErrorKind.unknown_outcome,
         "unexpected ValueError while talking to Bluesky"),
    ],
)
def test_network_failures_are_classified(exc, kind, message):
    assert classify_bluesky_error(exc) == DeliveryError(kind, message)


def test_an_unexpected_error_is_named_without_its_content():
    """pydantic's errors quote what they could not read: a session answer holds tokens."""
    error = classify_bluesky_error(ValueError("input_value={'accessJwt': 'eyJ.secret.jwt'}"))
    assert error.message == "unexpected ValueError while talking to Bluesky"


class BrokenResponse:
    def __init__(self, status_code: int):
        self.status_code = status_code

    @property
    def content(self):
        raise OverflowError("a bug in reading the answer")


@pytest.mark.parametrize(
    "status, kind",
    [(400, ErrorKind.refused), (401, ErrorKind.credentials), (402, ErrorKind.refused), (403, ErrorKind.credentials),
     (428, ErrorKind.refused), (429, ErrorKind.rate_limited), (430, ErrorKind.refused), (499, ErrorKind.refused),
     (500, ErrorKind.server_error), (503, ErrorKind.server_error)],
)
def test_classifying_never_raises(caplog, status, kind):
    """A bug in reading an answer still gives the kind its status implies."""
    error = classify_bluesky_error(atproto_errors.RequestException(BrokenResponse(status)))
    assert error == DeliveryError(kind, f"Bluesky answered {status} (its details could not be read)", status)
    assert bluesky_log(caplog) == [
        "could not read the details of a failed Bluesky call (OverflowError): sorting it by whether Bluesky answered"]


class Unprintable(Exception):
    def __str__(self):
        raise OverflowError("a bug in printing the error")


def test_classifying_an_error_with_no_answer_never_raises():
    assert classify_bluesky_error(Unprintable()) == DeliveryError(
        ErrorKind.unknown_outcome, "Unprintable while talking to Bluesky (its details could not be read)")


@pytest.mark.parametrize(
    "response, error",
    [
        (SimpleNamespace(status_code=503), DeliveryError(ErrorKind.server_error, "Bluesky answered 503 no message", 503)),
        (SimpleNamespace(status_code=400, content=SimpleNamespace(error=5, message=["words"])),
         DeliveryError(ErrorKind.refused, "Bluesky answered 400 no message", 400)),
        (SimpleNamespace(status_code=400, content=SimpleNamespace(error="InvalidRequest")),
         DeliveryError(ErrorKind.refused, "Bluesky answered 400 InvalidRequest", 400)),
        (SimpleNamespace(status_code=400, content=SimpleNamespace(message="only words")),
         DeliveryError(ErrorKind.refused, "Bluesky answered 400 only words", 400)),
        (SimpleNamespace(status_code=429, content=None), DeliveryError(ErrorKind.rate_limited, "Bluesky answered 429 no message", 429)),
        (SimpleNamespace(status_code="503", content=None),
         DeliveryError(ErrorKind.unknown_outcome, "unexpected RequestException while talking to Bluesky")),
    ],
    ids=["no content", "parts not strings", "name only", "message only", "429 without headers", "status not a number"],
)
def test_answers_missing_parts_are_classified_by_what_they_hold(response, error):
    assert classify_bluesky_error(atproto_errors.RequestException(response)) == error


# ---- sessions ----
def test_a_second_run_with_the_same_store_reuses_the_session(fake_bluesky):
    store = MemorySessionStore()
    for run in range(3):
        bluesky = destination(fake_bluesky, store)
        bluesky.post(f"run {run}", key=bluesky.new_key(f"delivery-{run}"))
    assert fake_bluesky.create_session_calls == 1
    assert len(fake_bluesky.records) == 3
    assert not fake_bluesky.received("POST", REFRESH_SESSION)


def test_a_memory_store_made_with_a_blob_starts_from_it(fake_bluesky):
    first = MemorySessionStore()
    post_once(fake_bluesky, store=first)
    post_once(fake_bluesky, "from a copy of the blob", store=MemorySessionStore(first.blob))
    assert fake_bluesky.create_session_calls == 1 and len(fake_bluesky.records) == 2


def test_a_stored_session_that_is_not_a_session_string_costs_one_login(fake_bluesky, caplog):
    """A blob that opens but holds no atproto session string: read once before the lock and once
    under it, then one login, whose session is stored for the next run."""
    store = MemorySessionStore()
    vault = SessionVault(store, HANDLE, APP_PASSWORD)
    vault.session = "not a session string"
    vault.save()
    caplog.set_level(logging.INFO, logger="posting.bluesky_client")
    post_once(fake_bluesky, store=store)
    not_a_session = f"the stored Bluesky session of {HANDLE} is not a session string: logging in again"
    assert bluesky_log(caplog) == [not_a_session, not_a_session, f"logged in to Bluesky as {HANDLE} (1 logins in the last day)"]
    assert fake_bluesky.create_session_calls == 1 and not fake_bluesky.received("POST", REFRESH_SESSION)
    post_once(fake_bluesky, "next run", store=store)
    assert fake_bluesky.create_session_calls == 1 and len(fake_bluesky.records) == 2


class StoreReadBeforeAnotherRunSaved(MemorySessionStore):
    """The first load gives `earlier` (what the store held when this run began); later loads, under
    the login lock, what another run has saved since."""

    def __init__(self, earlier: str | None, now: str):
        super().__init__(now)
        self.loads = [earlier]

    def load(self):
        return self.loads.pop(0) if self.loads else super().load()


@pytest.mark.parametrize("stored_first", ["none", "about to expire"])
def test_a_session_another_run_renewed_meanwhile_is_used_as_is(fake_bluesky, caplog, stored_first):
    """Under the login lock the store holds a session other than the one this run found: no
    createSession and no refresh, and nothing is saved over it."""
    fake_bluesky.access_lifetime = 600  # atproto refreshes a token that expires within 15 minutes
    expiring = MemorySessionStore()
    post_once(fake_bluesky, store=expiring)
    fake_bluesky.access_lifetime = 7200
    renewed = MemorySessionStore(expiring.blob)
    post_once(fake_bluesky, "another run", store=renewed)  # refreshes it
    logins, refreshes = fake_bluesky.create_session_calls, len(fake_bluesky.received("POST", REFRESH_SESSION))
    store = StoreReadBeforeAnotherRunSaved(None if stored_first == "none" else expiring.blob, renewed.blob)
    caplog.set_level(logging.INFO, logger="posting.bluesky_client")
    posted = post_once(fake_bluesky, "this run", store=store)
    assert bluesky_log(caplog) == [f"another run renewed the Bluesky session of {HANDLE}: using it"]
    assert fake_bluesky.create_session_calls == logins == 1
    assert len(fake_bluesky.received("POST", REFRESH_SESSION)) == refreshes
    assert store.blob == renewed.blob and fake_bluesky.records[posted.id]["value"]["text"] == "this run"


def test_the_constructor_calls_nothing(fake_bluesky):
    store = MemorySessionStore()
    destination(fake_bluesky, store)
    assert fake_bluesky.requests == [] and store.blob is None


def test_the_stored_blob_holds_no_token_or_password_in_clear(fake_bluesky):
    store = MemorySessionStore()
    post_once(fake_bluesky, store=store)
    fake_bluesky.expire_access_tokens()  # a refresh saves new tokens too
    post_once(fake_bluesky, store=store)
    tokens = fake_bluesky.issued_tokens()
    assert len(tokens) == 4
    for secret in (*tokens, *(token.split(".")[1] for token in tokens), APP_PASSWORD):
        assert secret not in store.blob
    assert set(json.loads(store.blob)) == {"v", "create_session_times", "session"}


def test_an_access_token_the_pds_calls_expired_is_refreshed_and_the_post_sent_once_more(fake_bluesky, caplog):
    store = MemorySessionStore()
    post_once(fake_bluesky, store=store)
    blob_before = store.blob
    fake_bluesky.expire_access_tokens()
    caplog.set_level(logging.INFO, logger="posting.bluesky_client")
    posted = post_once(fake_bluesky, "after the refresh", store=store)
    assert f"refreshed the Bluesky session of {HANDLE}" in bluesky_log(caplog)
    assert fake_bluesky.records[posted.id]["value"]["text"] == "after the refresh"
    assert fake_bluesky.create_session_calls == 1
    assert len(fake_bluesky.received("POST", REFRESH_SESSION)) == 1
    assert fake_bluesky.create_record_calls == 3  # the refused one did nothing
    assert store.blob != blob_before  # the refreshed session is kept for the next run
    post_once(fake_bluesky, "next run", store=store)
    assert len(fake_bluesky.received("POST", REFRESH_SESSION)) == 1


@pytest.mark.parametrize("refusal", [FakeBluesky.expired_token(), FakeResponse(401, {"error": "AuthMissing", "message": "Authentication Required"})],
                         ids=["400 ExpiredToken", "401"])
def test_a_scripted_refused_token_answer_is_refreshed(fake_bluesky, refusal):
    fake_bluesky.enqueue("POST", CREATE_RECORD, refusal)
    post_once(fake_bluesky)
    assert len(fake_bluesky.received("POST", REFRESH_SESSION)) == 1 and len(fake_bluesky.records) == 1
    assert fake_bluesky.create_record_calls == 2


def test_a_refresh_that_fails_after_a_refused_token_is_its_own_error_before_the_post(fake_bluesky):
    fake_bluesky.enqueue("POST", CREATE_RECORD, FakeBluesky.expired_token())
    fake_bluesky.enqueue("POST", REFRESH_SESSION, FakeBluesky.server_error(503))
    error = failure_of(lambda: post_once(fake_bluesky)).error
    assert (error.kind, error.status_code) == (ErrorKind.server_error, 503)
    assert error.message == "Bluesky answered 503 NotEnoughResources: Not Enough Resources"
    assert fake_bluesky.create_record_calls == 1 and not fake_bluesky.received("GET", GET_RECORD)


def test_an_expired_token_a_refresh_cannot_fix_is_credentials(fake_bluesky):
    fake_bluesky.enqueue("POST", CREATE_RECORD, FakeBluesky.expired_token(), FakeBluesky.expired_token())
    error = failure_of(lambda: post_once(fake_bluesky)).error
    assert error.kind is ErrorKind.credentials and "ExpiredToken" in error.message
    assert "check BLUESKY_HANDLE and BLUESKY_APP_PASSWORD" in error.message
    assert fake_bluesky.create_record_calls == 2 and not fake_bluesky.records


def test_an_access_token_about_to_expire_is_refreshed_before_posting(fake_bluesky):
    """atproto's rule (15 minutes ahead), applied before the createRecord."""
    store = MemorySessionStore()
    fake_bluesky.access_lifetime = 600
    post_once(fake_bluesky, store=store)
    fake_bluesky.access_lifetime = 7200
    post_once(fake_bluesky, store=store)
    refreshes = fake_bluesky.received("POST", REFRESH_SESSION)
    assert len(refreshes) == 2  # right after the login (its token lived 10 minutes), then at the second run
    assert fake_bluesky.create_record_calls == 2 and fake_bluesky.create_session_calls == 1


def test_an_expired_refresh_token_leads_to_one_new_login(fake_bluesky, caplog):
    store = MemorySessionStore()
    post_once(fake_bluesky, store=store)
    fake_bluesky.expire_access_tokens()
    fake_bluesky.expire_refresh_tokens()
    caplog.set_level(logging.INFO, logger="posting.bluesky_client")
    post_once(fake_bluesky, "after a new login", store=store)
    assert (f"Bluesky refused to refresh the session of {HANDLE} (Bluesky answered 400 ExpiredToken: Token has expired "
            "(check BLUESKY_HANDLE and BLUESKY_APP_PASSWORD)): logging in again") in bluesky_log(caplog)
    assert fake_bluesky.create_session_calls == 2
    assert len(fake_bluesky.received("POST", REFRESH_SESSION)) == 1
    assert len(fake_bluesky.records) == 2


def test_a_blob_sealed_with_another_password_is_ignored(fake_bluesky):
    store = MemorySessionStore()
    post_once(fake_bluesky, store=store)
    fake_bluesky.app_password = "newp-assw-ordn-ewpa"  # the operator made a new app password
    post_once(fake_bluesky, "with the new password", store=store, password="newp-assw-ordn-ewpa")
    assert fake_bluesky.create_session_calls == 2
    # the logins made with the old password still count against Bluesky's limits
    assert len(json.loads(store.blob)["create_session_times"]) == 2


def test_a_tampered_blob_is_ignored(fake_bluesky):
    store = MemorySessionStore()
    post_once(fake_bluesky, store=store)
    content = json.loads(store.blob)
    sealed = content["session"]
    content["session"] = sealed[:40] + ("A" if sealed[40] != "A" else "B") + sealed[41:]
    store.blob = json.dumps(content)
    post_once(fake_bluesky, "after tampering", store=store)
    assert fake_bluesky.create_session_calls == 2


@pytest.mark.parametrize("blob", ["not json", "[1, 2]", '{"v": 1, "create_session_times": "x", "session": 5}'])
def test_a_blob_that_is_no_blob_is_ignored(fake_bluesky, blob):
    post_once(fake_bluesky, store=MemorySessionStore(blob))
    assert fake_bluesky.create_session_calls == 1


def test_the_local_login_budget_refuses_before_bluesky_would(fake_bluesky):
    """Sessions that keep being lost (here the PDS forgets them) cost a login each run: the 26th
    login in 5 minutes is refused here, before Bluesky's 30 could be reached."""
    store = MemorySessionStore()
    (window, allowed), _ = CREATE_SESSION_BUDGET
    started = time.time()
    for run in range(allowed):
        fake_bluesky.forget_sessions()
        post_once(fake_bluesky, f"run {run}", store=store)
    fake_bluesky.forget_sessions()
    error = failure_of(lambda: post_once(fake_bluesky, "one run too many", store=store)).error
    assert error.kind is ErrorKind.rate_limited
    assert "25 logins in the last 5 minutes" in error.message
    first_login = json.loads(store.blob)["create_session_times"][0]
    assert error.retry_at == datetime.fromtimestamp(first_login + window.total_seconds(), timezone.utc)
    assert started + 300 <= error.retry_at.timestamp() <= time.time() + 300
    assert fake_bluesky.create_session_calls == allowed < 30
    assert len(fake_bluesky.records) == allowed


def test_the_daily_login_budget(fake_bluesky):
    store = MemorySessionStore()
    vault = SessionVault(store, HANDLE, APP_PASSWORD)
    now = time.time()
    vault.create_session_times = [now - 86000 + 300 * i for i in range(250)]  # the newest over 3 hours ago
    vault.save()
    error = failure_of(lambda: post_once(fake_bluesky, store=store)).error
    assert error.kind is ErrorKind.rate_limited and "250 logins in the last day" in error.message
    oldest = min(vault.create_session_times)
    assert error.retry_at == datetime.fromtimestamp(oldest + 86400, timezone.utc)
    assert fake_bluesky.create_session_calls == 0


def test_a_failed_login_counts_against_the_budget(fake_bluesky):
    store = MemorySessionStore()
    failure_of(lambda: post_once(fake_bluesky, store=store, password="wxyz-wxyz-wxyz-wxyz"))
    assert len(json.loads(store.blob)["create_session_times"]) == 1


class FailingStore(MemorySessionStore):
    def load(self):
        raise ConnectionError("database down")

    def save(self, blob):
        raise ConnectionError("database down")


def test_a_store_that_fails_costs_a_login_not_the_post(fake_bluesky, caplog):
    bluesky = BlueskyDestination(fake_bluesky.base_url, HANDLE, APP_PASSWORD, 5, FailingStore())
    bluesky.post("posted anyway", key=bluesky.new_key("d"))
    assert len(fake_bluesky.records) == 1
    assert "could not save the Bluesky session" in caplog.text


# ---- secrets ----
def test_secrets_never_reach_messages_or_logs(fake_bluesky, caplog):
    caplog.set_level(logging.DEBUG)
    messages = []
    store = MemorySessionStore()
    post_once(fake_bluesky, store=store)
    fake_bluesky.expire_access_tokens()
    post_once(fake_bluesky, store=store)
    leaky = "... " + APP_PASSWORD + " ..."
    for route, answer in [
        (CREATE_RECORD, FakeBluesky.rate_limited()),
        (CREATE_RECORD, FakeResponse(400, {"error": "InvalidRequest", "message": leaky})),
        (CREATE_RECORD, FakeBluesky.lands_then_hangs(30)),
        (CREATE_SESSION, FakeResponse(200, {"accessJwt": "eyJhbGciOi.eyJzdWIiOi.leaked-signature"})),
    ]:
        fake_bluesky.enqueue("POST", route, answer)
        if route == CREATE_SESSION:
            fake_bluesky.forget_sessions()
        messages.append(str(failure_of(lambda: post_once(fake_bluesky, store=store, timeout=0.5))))
    messages.append(str(failure_of(lambda: post_once(fake_bluesky, password="wxyz-wxyz-wxyz-wxyz"))))
    everything = caplog.text + "\n".join(messages) + repr(destination(fake_bluesky))
    assert messages[1] == "Bluesky answered 400 InvalidRequest: ... [secret] ..."
    for secret in (APP_PASSWORD, "wxyz-wxyz-wxyz-wxyz", "leaked-signature", *fake_bluesky.issued_tokens()):
        assert secret not in everything


# ---- facets ----
def test_facet_offsets_are_utf8_bytes_after_emoji_and_accents():
    text = "Café 👨‍👩‍👧 ñ 🇫🇷 https://example.com/é?q=1."
    (link,) = bluesky_facets(text, lambda handle: None)
    start = len("Café 👨‍👩‍👧 ñ 🇫🇷 ".encode())
    assert link["index"] == {"$type": "app.bsky.richtext.facet#byteSlice", "byteStart": start,
                             "byteEnd": start + len("https://example.com/é?q=1".encode())}
    assert text.encode()[link["index"]["byteStart"]:link["index"]["byteEnd"]].decode() == "https://example.com/é?q=1"
    assert link["features"] == [{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/é?q=1"}]


def test_mentions_link_to_the_resolved_did_and_unresolvable_ones_get_no_facet():
    asked = []

    def resolve(handle):
        asked.append(handle)
        return {"alice.bsky.social": "did:plc:alice"}.get(handle)

    text = "🎉 @Alice.bsky.social and @nobody.bsky.social and @alice.bsky.social"
    facets = bluesky_facets(text, resolve)
    assert asked == ["alice.bsky.social", "nobody.bsky.social"]  # each handle asked once
    assert [f["features"] for f in facets] == [[{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:alice"}]] * 2
    spans = [text.encode()[f["index"]["byteStart"]:f["index"]["byteEnd"]].decode() for f in facets]
    assert spans == ["@Alice.bsky.social", "@alice.bsky.social"]


def test_bare_domains_become_https_links_and_hashtags_tags():
    facets = bluesky_facets("read example.com/news today #GPT2 #", lambda handle: None)
    assert [f["features"][0] for f in facets] == [
        {"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/news"},
        {"$type": "app.bsky.richtext.facet#tag", "tag": "GPT2"},
    ]


def test_a_mention_is_resolved_through_the_pds(fake_bluesky):
    fake_bluesky.handles["alice.bsky.social"] = "did:plc:alice"
    posted = post_once(fake_bluesky, "hello @alice.bsky.social and @ghost.bsky.social")
    (facet,) = fake_bluesky.records[posted.id]["value"]["facets"]
    assert facet["features"] == [{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:alice"}]
    assert [r.query["handle"] for r in fake_bluesky.received("GET", RESOLVE_HANDLE)] == [["alice.bsky.social"], ["ghost.bsky.social"]]


class BarrierStore(MemorySessionStore):
    """Holds every load until `parties` calls are loading at once."""

    def __init__(self, parties: int):
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)

    def load(self):
        self.barrier.wait()
        return super().load()


def test_one_destination_posts_from_several_threads_at_once(fake_bluesky):
    """Each call keeps its own session state: two calls in flight together both post."""
    bluesky = destination(fake_bluesky, BarrierStore(2))
    keys = [bluesky.new_key(f"delivery-{n}") for n in range(2)]
    with ThreadPoolExecutor(2) as pool:
        posted = list(pool.map(lambda n: bluesky.post(f"thread {n}", key=keys[n]), range(2)))
    assert [p.id for p in posted] == keys
    assert {fake_bluesky.records[k]["value"]["text"] for k in keys} == {"thread 0", "thread 1"}
