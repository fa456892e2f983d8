"""The curation page over HTTP (TestClient): session and CSRF guards, escaping, and every action,
on SQLite and on Postgres through psycopg2 and pg8000. The browser itself: test_curate_browser.py."""
from __future__ import annotations

import base64
import bisect
import html
import json
import logging
import re
import stringprep
import time
from datetime import timedelta
from functools import partial

import pytest
import sqlalchemy.event
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.requests import Request

from api.app import create_app
from api.curate import routes as curate_routes
from api.curate.counter_rule import js_regex_source, nameprep_tables, python_word_class
from api.curate.session import (
    COOKIE_NAME,
    DEVICE_COOKIE_NAME,
    DEVICE_MAX_AGE_SECONDS,
    SESSION_MAX_AGE_SECONDS,
    SIGN_IN_MAX_FAILURES,
    SIGN_IN_WINDOW_SECONDS,
    SignInThrottle,
    _b64,
    _DEVICE_KEY_LABEL,
    _unb64,
    client_address,
    cookie_is_secure,
    decode_session,
    encode_session,
    new_session,
    signing_key,
)
from api.request_limits import PAGE_DISCARD_FACTOR, UPLOAD_FORM_OVERHEAD_BYTES
from core import tweet_text
from core.config import Settings
from db import store
from db.models import Delivery, DeliveryStatus, Tweet, TweetStatus, utcnow
from tests.conftest import ACCOUNT, TOKEN, store_texts

DELIM = "=" * 20
JSON = {"Accept": "application/json"}
# The guards and the rendering do not depend on the database: run them on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])
HOSTILE = ['<script>alert("x")</script>', '<img src=x onerror="alert(1)">']


@pytest.fixture
def settings_values(settings_values) -> dict:
    settings_values.update(TWITTER_DRY_RUN=True, TWEET_ORDER="oldest")
    return settings_values


def sign_in(client: TestClient) -> str:
    """Sign `client` in; returns the session's CSRF token (read from the page, as the browser does)."""
    response = client.post("/curate/sign-in", data={"token": TOKEN}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/curate").text)


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def set_cookie_line(response, name: str) -> str:
    """The Set-Cookie header of one cookie (a response sets several: the flags of one must not pass for another's)."""
    return next(line for line in response.headers.get_list("set-cookie") if line.startswith(f"{name}="))


@pytest.fixture
def curator(app):
    """A signed-in browser-like client (https, so the Secure cookie is sent) and its CSRF token."""
    with TestClient(app, base_url="https://testserver") as test_client:
        test_client.csrf = sign_in(test_client)
        yield test_client


@pytest.fixture
def stranger(app):
    with TestClient(app, base_url="https://testserver") as test_client:
        yield test_client


add = partial(store_texts, status=TweetStatus.pending)


def snapshot(session_factory) -> list[tuple]:
    with session_factory() as session:
        return [
            (t.id, t.text, t.status, t.position, t.error, t.posted_at)
            for t in session.scalars(select(Tweet).order_by(Tweet.id))
        ]


def status_of(session_factory, tweet_id: int) -> TweetStatus:
    with session_factory() as session:
        return session.get(Tweet, tweet_id).status


def curated(*samples: str) -> bytes:
    return "".join(f"{s}\n{DELIM}\n" for s in samples).encode()


def texts_on(page: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r'<p class="tweet-text">(.*?)</p>', page, re.S)]


def flash_on(page: str) -> str:
    """The one-time message a page shows ("" when none)."""
    return html.unescape(re.search(r'<p id="flash"[^>]*>(.*?)</p>', page, re.S).group(1))


# ---- session and CSRF -------------------------------------------------------------------

@SQLITE_ONLY
@pytest.mark.parametrize("path", ["/curate", "/curate/", "/curate/queue", "/curate/history"])
def test_pages_send_strangers_to_sign_in(stranger, path):
    response = stranger.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/curate/sign-in"


@SQLITE_ONLY
@pytest.mark.parametrize(
    "token, message",
    [("", "Enter the service token"), ("wrong-token-0123456789", "not the service token"),
     ("ümlaut-token-0123456789", "not the service token"), (TOKEN[:-1], "not the service token")],
)
def test_wrong_token_is_refused_without_a_cookie(stranger, token, message):
    response = stranger.post("/curate/sign-in", data={"token": token})
    assert response.status_code == 401
    assert message in response.text
    assert COOKIE_NAME not in response.headers.get("set-cookie", "")


def test_sign_in_throttle_counts_wrong_tokens_per_address_within_the_window():
    now = [0.0]
    throttle = SignInThrottle(max_failures=3, window_seconds=60, clock=lambda: now[0])
    for when in (0, 10, 20):
        assert throttle.retry_after("a") is None
        now[0] = when
        throttle.record_failure("a")
    assert throttle.retry_after("a") == 40  # until the failure at 0 is 60 s old
    assert throttle.retry_after("b") is None
    now[0] = 60
    assert throttle.retry_after("a") is None  # the first failure left the window: one more try
    throttle.record_failure("a")
    assert throttle.retry_after("a") == 10
    throttle.forget("a")
    assert throttle.retry_after("a") is None


def test_sign_in_throttle_keeps_only_the_newest_failures_of_requests_that_raced_past_the_check():
    """Two wrong tokens checked before either was recorded both count; the memory per source stays
    `max_failures` times, and the lockout runs from the oldest of those kept."""
    now = [0.0]
    throttle = SignInThrottle(max_failures=3, window_seconds=60, clock=lambda: now[0])
    for when in (0, 10, 20, 30):
        now[0] = when
        throttle.record_failure("a")
    assert len(throttle._failures["a"]) == 3
    assert throttle.retry_after("a") == 40  # until the failure at 10 is 60 s old


def test_sign_in_throttle_rounds_the_wait_up_to_whole_seconds():
    now = [0.0]
    throttle = SignInThrottle(max_failures=1, window_seconds=60, clock=lambda: now[0])
    throttle.record_failure("a")
    now[0] = 59.5
    assert throttle.retry_after("a") == 1
    now[0] = 0.25
    assert throttle.retry_after("a") == 60


def test_a_request_without_a_client_address_counts_as_unknown():
    request = Request({"type": "http", "scheme": "https", "server": None, "path": "/curate/sign-in",
                       "query_string": b"", "headers": []})
    assert client_address(request) == "unknown"


def test_sign_in_throttle_logs_once_when_the_lockout_begins(caplog):
    caplog.set_level(logging.WARNING, logger="api.curate.session")
    throttle = SignInThrottle(max_failures=3, window_seconds=15 * 60, clock=lambda: 0.0)
    for _ in range(3):
        throttle.record_failure("203.0.113.7")
    assert [record.getMessage() for record in caplog.records] == [
        "curation sign-in: 3 wrong tokens from 203.0.113.7 within 15 minutes; its sign-ins are refused for a while"
    ]


@SQLITE_ONLY
def test_sign_in_refuses_an_address_after_five_wrong_tokens(app, caplog):
    caplog.set_level(logging.WARNING)
    with (TestClient(app, base_url="https://testserver", client=("203.0.113.7", 5000)) as guesser,
          TestClient(app, base_url="https://testserver", client=("198.51.100.2", 5000)) as curator_client):
        for n in range(SIGN_IN_MAX_FAILURES):
            assert guesser.post("/curate/sign-in", data={"token": f"guess-{n}-0123456789"}).status_code == 401
        locked = guesser.post("/curate/sign-in", data={"token": TOKEN}, follow_redirects=False)  # even the right one
        assert locked.status_code == 429
        assert 0 < int(locked.headers["retry-after"]) <= SIGN_IN_WINDOW_SECONDS
        assert "Too many wrong tokens from this address: try again in 15 minutes." in locked.text
        assert COOKIE_NAME not in locked.headers.get("set-cookie", "")
        assert curator_client.post("/curate/sign-in", data={"token": TOKEN}, follow_redirects=False).status_code == 303
    assert "5 wrong tokens from 203.0.113.7" in caplog.text
    assert TOKEN not in caplog.text and "guess-" not in caplog.text


@SQLITE_ONLY
def test_behind_one_proxy_address_guessing_locks_out_new_browsers_but_not_the_curators(app, caplog):
    """Behind Cloud Run's proxy every visitor has one address. The curator's browser, which signed in
    before, holds a device cookie: its sign-ins count on their own, so guesses cannot lock it out."""
    caplog.set_level(logging.WARNING)
    proxy = ("203.0.113.9", 5000)
    with (TestClient(app, base_url="https://testserver", client=proxy) as curator_browser,
          TestClient(app, base_url="https://testserver", client=proxy) as guesser,
          TestClient(app, base_url="https://testserver", client=proxy) as new_browser):
        csrf = sign_in(curator_browser)
        signed_out = curator_browser.post("/curate/sign-out", data={"csrf_token": csrf}, follow_redirects=False)
        assert signed_out.status_code == 303 and DEVICE_COOKIE_NAME not in signed_out.headers.get("set-cookie", "")
        assert curator_browser.cookies.get(DEVICE_COOKIE_NAME)  # kept at sign-out

        for n in range(SIGN_IN_MAX_FAILURES):
            assert guesser.post("/curate/sign-in", data={"token": f"guess-{n}-0123456789"}).status_code == 401
        for browser in (guesser, new_browser):  # every browser without a device cookie: the address is locked
            locked = browser.post("/curate/sign-in", data={"token": TOKEN}, follow_redirects=False)
            assert locked.status_code == 429 and "from this address" in locked.text
        assert curator_browser.post("/curate/sign-in", data={"token": TOKEN}, follow_redirects=False).status_code == 303

        # The curator's own mistakes lock only the curator's browser, and say so.
        for n in range(SIGN_IN_MAX_FAILURES):
            assert curator_browser.post("/curate/sign-in", data={"token": f"typo-{n}-0123456789"}).status_code == 401
        locked = curator_browser.post("/curate/sign-in", data={"token": TOKEN}, follow_redirects=False)
        assert locked.status_code == 429
        assert "Too many wrong tokens from this browser: try again in 15 minutes." in locked.text

        # A forged device cookie (another id under the curator's signature) is no device: it counts as
        # the address, which is locked.
        signature = curator_browser.cookies.get(DEVICE_COOKIE_NAME).split(".")[1]
        forged = base64.urlsafe_b64encode(json.dumps({"dev": "forged", "iat": int(time.time())}).encode())
        refused = guesser.post("/curate/sign-in", data={"token": TOKEN}, follow_redirects=False,
                               headers={"Cookie": f"{DEVICE_COOKIE_NAME}={forged.decode().rstrip('=')}.{signature}"})
        assert refused.status_code == 429 and "from this address" in refused.text
    assert "5 wrong tokens from 203.0.113.9" in caplog.text and "5 wrong tokens from browser " in caplog.text
    assert TOKEN not in caplog.text and "guess-" not in caplog.text and "typo-" not in caplog.text


@SQLITE_ONLY
def test_device_cookie_is_signed_httponly_strict_long_lived_and_keeps_its_id(stranger):
    first = stranger.post("/curate/sign-in", data={"token": TOKEN}, follow_redirects=False)
    cookie = set_cookie_line(first, DEVICE_COOKIE_NAME)
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/curate", f"Max-Age={DEVICE_MAX_AGE_SECONDS}"):
        assert flag in cookie
    assert TOKEN not in cookie
    def device_id(cookie_value: str) -> str:
        payload = cookie_value.split(".")[0]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["dev"]

    before = device_id(stranger.cookies.get(DEVICE_COOKIE_NAME))
    stranger.post("/curate/sign-in", data={"token": TOKEN}, follow_redirects=False)
    assert device_id(stranger.cookies.get(DEVICE_COOKIE_NAME)) == before  # re-issued, same browser


@SQLITE_ONLY
def test_a_right_token_clears_earlier_mistakes_and_an_empty_form_is_no_guess(stranger):
    wrong = {"token": "wrong-token-0123456789"}
    for _ in range(2):
        for _ in range(SIGN_IN_MAX_FAILURES - 1):
            assert stranger.post("/curate/sign-in", data=wrong).status_code == 401
        assert stranger.post("/curate/sign-in", data={"token": ""}).status_code == 401
        assert stranger.post("/curate/sign-in", data={"token": TOKEN}, follow_redirects=False).status_code == 303


@SQLITE_ONLY
def test_session_cookie_is_secure_httponly_strict_and_never_in_the_url(stranger):
    response = stranger.post("/curate/sign-in", data={"token": TOKEN}, follow_redirects=False)
    cookie = set_cookie_line(response, COOKIE_NAME)
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/curate", f"Max-Age={SESSION_MAX_AGE_SECONDS}"):
        assert flag in cookie
    assert response.headers["location"] == "/curate"
    assert TOKEN not in cookie


def request_to(url: str) -> Request:
    scheme, rest = url.split("://")
    host = rest.split("/")[0]
    return Request({"type": "http", "scheme": scheme, "server": None, "path": "/curate", "query_string": b"",
                    "headers": [(b"host", host.encode())]})


@pytest.mark.parametrize(
    "url, secure",
    [
        ("http://127.0.0.1:8000/curate", False),
        ("http://localhost:8000/curate", False),
        ("http://[::1]:8000/curate", False),
        ("https://127.0.0.1/curate", True),
        ("http://bot.example.run.app/curate", True),  # Cloud Run: http from the proxy, public host
        ("https://bot.example.run.app/curate", True),
    ],
)
def test_cookie_is_secure_except_plain_http_on_loopback(url, secure):
    assert cookie_is_secure(request_to(url)) is secure


def test_signed_sessions_reject_tampering_other_keys_and_age(settings):
    key = signing_key(settings)
    assert TOKEN.encode() not in key
    session = new_session(now=1_000_000)
    cookie = encode_session(session, key)
    assert decode_session(cookie, key, now=1_000_060) == session
    payload, signature = cookie.split(".")
    assert decode_session(f"{payload}x.{signature}", key, now=1_000_060) is None
    assert decode_session(cookie, b"another key", now=1_000_060) is None
    assert decode_session(cookie, key, now=1_000_000 + SESSION_MAX_AGE_SECONDS + 1) is None
    assert decode_session("garbage", key) is None


def test_a_session_is_valid_from_the_second_it_is_issued_through_its_last_second(settings):
    key = signing_key(settings)
    session = new_session(now=1_000_000)
    cookie = encode_session(session, key)
    assert decode_session(cookie, key, now=1_000_000) == session
    assert decode_session(cookie, key, now=1_000_000 + SESSION_MAX_AGE_SECONDS) == session
    assert decode_session(cookie, key, now=1_000_000 - 1) is None


def test_a_value_signed_for_device_cookies_is_no_session(settings):
    """Each kind of cookie has its own key: one kind never passes for another."""
    session = new_session(now=1_000_000)
    cookie = encode_session(session, signing_key(settings, _DEVICE_KEY_LABEL))
    assert decode_session(cookie, signing_key(settings), now=1_000_060) is None


@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", b"\x00\x00\x17", b"\xfb\xff\xbf"])
def test_cookie_base64_is_unpadded_and_round_trips(data):
    """No '=' (a cookie value holding one gets quoted), and nothing but the padding is stripped ("AAAX" keeps its X)."""
    text = _b64(data)
    assert re.fullmatch(r"[A-Za-z0-9_-]*", text)
    assert _unb64(text) == data


# Every state-changing request, with the form it needs (ids are the first seeded tweets).
ACTIONS = [
    ("/curate/approve", {"ids": "1"}),
    ("/curate/reject", {"ids": "1"}),
    ("/curate/tweets/1/edit", {"text": "edited by an attacker"}),
    ("/curate/tweets/2/requeue", {}),
    ("/curate/tweets/2/confirm-posted", {"x_link": "1790000000000000001"}),
    ("/curate/tweets/3/unqueue", {}),
    ("/curate/tweets/3/move", {"to": "bottom"}),
    ("/curate/post-next", {"idempotency_key": "curate-abc"}),
    ("/curate/upload", {}),
    ("/curate/sign-out", {}),
]


def test_the_guard_tests_cover_every_state_changing_route():
    changing = {route.path.rstrip("/") for route in curate_routes.router.routes if route.methods - {"GET", "HEAD"}}
    covered = {re.sub(r"/\d+/", "/{tweet_id}/", path) for path, _form in ACTIONS}
    assert changing - {"/curate/sign-in"} == covered


@pytest.fixture
def seeded(session_factory) -> list[tuple]:
    add(session_factory, "pending one")
    add(session_factory, "rejected two", status=TweetStatus.rejected)
    add(session_factory, "queued three", "queued four", status=TweetStatus.queued)
    return snapshot(session_factory)


@SQLITE_ONLY
@pytest.mark.parametrize("path, form", ACTIONS)
@pytest.mark.parametrize("how", ["no cookie", "forged cookie"])
def test_actions_without_a_session_are_401_and_change_nothing(app, session_factory, seeded, path, form, how):
    headers = dict(JSON)
    if how == "forged cookie":  # as a header: the test client's jar does not send cookies set for "testserver"
        headers["Cookie"] = f"{COOKIE_NAME}={encode_session(new_session(), b'not the key')}"
    with TestClient(app, base_url="https://testserver") as client:
        response = client.post(path, data={**form, "csrf_token": "anything"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"] == (
        "Nothing was changed: not signed in, or the session expired: sign in again at /curate/sign-in."
    )
    assert snapshot(session_factory) == seeded


@SQLITE_ONLY
@pytest.mark.parametrize("path, form", ACTIONS)
@pytest.mark.parametrize("how", ["no cookie", "forged cookie"])
def test_forms_without_a_session_go_to_sign_in_with_the_reason_and_change_nothing(app, session_factory, seeded, path, form, how):
    """A plain form post (the page without its script) after the session expired: the sign-in form, not JSON."""
    headers = {}
    if how == "forged cookie":
        headers["Cookie"] = f"{COOKIE_NAME}={encode_session(new_session(), b'not the key')}"
    with TestClient(app, base_url="https://testserver") as client:
        response = client.post(path, data={**form, "csrf_token": "anything"}, headers=headers, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/curate/sign-in"
        page = client.get(response.headers["location"])
    assert page.status_code == 200 and 'id="token"' in page.text
    assert "Nothing was changed" in flash_on(page.text) and "sign in again" in flash_on(page.text)
    assert snapshot(session_factory) == seeded


@SQLITE_ONLY
@pytest.mark.parametrize("path, form", ACTIONS)
@pytest.mark.parametrize("csrf", [None, "wrong-token"])
def test_actions_without_the_csrf_token_are_403_and_change_nothing(curator, session_factory, seeded, path, form, csrf):
    data = dict(form) if csrf is None else {**form, "csrf_token": csrf}
    response = curator.post(path, data=data, headers=JSON)
    assert response.status_code == 403
    assert response.json()["detail"] == (
        f"{'missing' if csrf is None else 'wrong'} CSRF token: reload the curation page and try again (nothing was changed)"
    )
    assert snapshot(session_factory) == seeded
    assert curator.get("/curate", follow_redirects=False).status_code == 200  # still signed in


@SQLITE_ONLY
def test_upload_without_csrf_is_403_and_stores_nothing(curator, session_factory):
    response = curator.post("/curate/upload", files={"file": ("gen.txt", curated("sneaky"))})
    assert response.status_code == 403
    assert snapshot(session_factory) == []


@SQLITE_ONLY
def test_another_sessions_csrf_token_does_not_work(app, curator, session_factory, seeded):
    with TestClient(app, base_url="https://testserver") as other:
        other_csrf = sign_in(other)
    response = curator.post("/curate/approve", data={"ids": "1", "csrf_token": other_csrf}, headers=JSON)
    assert response.status_code == 403
    assert snapshot(session_factory) == seeded


@SQLITE_ONLY
def test_sign_out_clears_the_cookie(curator):
    """The deletion names the cookie's path (a browser replaces only the cookie of that name and path) and its flags."""
    response = curator.post("/curate/sign-out", data={"csrf_token": curator.csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/curate/sign-in"
    deletion = set_cookie_line(response, COOKIE_NAME)
    assert re.match(rf'{COOKIE_NAME}="?"?; ', deletion)
    for flag in ("Max-Age=0", "Path=/curate", "Secure", "HttpOnly", "SameSite=strict"):
        assert flag in deletion
    assert curator.get("/curate", follow_redirects=False).headers["location"] == "/curate/sign-in"


@SQLITE_ONLY
def test_pages_are_not_cached_and_only_run_our_scripts(curator):
    response = curator.get("/curate")
    assert response.headers["cache-control"] == "no-store"
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp


# ---- escaping -----------------------------------------------------------------------------

@SQLITE_ONLY
def test_tweet_text_is_escaped_on_every_page(curator, session_factory):
    add(session_factory, HOSTILE[0])
    add(session_factory, HOSTILE[1], status=TweetStatus.queued)
    rejected_id, = add(session_factory, HOSTILE[0] + " rejected", status=TweetStatus.rejected)
    with session_factory() as session:
        store.update_tweet(session, session.get(Tweet, rejected_id), error='X said <b onmouseover="x()">no</b>')
        session.commit()
    pages = {path: curator.get(path).text for path in ("/curate", "/curate/queue", "/curate/history")}
    for page in pages.values():
        for raw in HOSTILE + ['<b onmouseover="x()">']:
            assert raw not in page
    assert HOSTILE[0] in texts_on(pages["/curate"])
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;</textarea>" in pages["/curate"]  # the editor too
    assert HOSTILE[1] in texts_on(pages["/curate/queue"])
    assert f"{HOSTILE[0]} rejected" in texts_on(pages["/curate/history"])
    assert "&lt;b onmouseover=&#34;x()&#34;&gt;no&lt;/b&gt;" in pages["/curate/history"]


# ---- upload -------------------------------------------------------------------------------

def test_upload_stores_pending_candidates_with_the_same_summary_as_the_api(curator, session_factory):
    add(session_factory, "already stored", status=TweetStatus.queued)
    data = curated("fresh one", "already stored", "x" * 281, "fresh two", "<|endoftext|> marker")
    response = curator.post("/curate/upload", data={"csrf_token": curator.csrf}, files={"file": ("gen.txt", data)})
    assert response.status_code == 201
    page = response.text
    assert "<strong>2</strong> added" in page and "<strong>1</strong> duplicate skipped" in page
    assert "<strong>2</strong> rejected" in page
    assert "Sample #3: tweet is 281 weighted characters, over X&#39;s limit of 280" in page
    assert "Sample #5: tweet contains the generation marker" in page
    assert texts_on(page) == ["fresh one", "fresh two"]
    with session_factory() as session:
        stored = {t.text: t.status for t in session.scalars(select(Tweet))}
    assert stored == {"already stored": TweetStatus.queued, "fresh one": TweetStatus.pending, "fresh two": TweetStatus.pending}


@pytest.mark.parametrize(
    "data, code, message",
    [
        (b"   ", 400, "file is empty"),
        (b"\xff\xfe bad", 400, "not UTF-8"),
        (curated("x" * 300), 422, "file holds no valid tweet"),
    ],
)
def test_bad_upload_says_why_and_stores_nothing(curator, session_factory, data, code, message):
    response = curator.post("/curate/upload", data={"csrf_token": curator.csrf}, files={"file": ("gen.txt", data)})
    assert response.status_code == code
    assert "Nothing was stored" in response.text and message in response.text
    assert snapshot(session_factory) == []


def test_upload_over_the_size_limit_is_413(session_factory, settings_values, engine):
    small = create_app(Settings(**{**settings_values, "MAX_UPLOAD_BYTES": 50}), engine=engine, configure_logs=False)
    with TestClient(small, base_url="https://testserver") as client:
        csrf = sign_in(client)
        response = client.post("/curate/upload", data={"csrf_token": csrf}, files={"file": ("gen.txt", curated("y" * 60))})
    assert response.status_code == 413
    assert "MAX_UPLOAD_BYTES" in response.text
    assert snapshot(session_factory) == []


@SQLITE_ONLY
def test_an_upload_over_the_body_limit_is_refused_unread_with_the_pages_answer(session_factory, settings_values, engine):
    """Over MAX_UPLOAD_BYTES and the form's framing, the upload is refused before it is read: the page's
    form goes back to the review list with the reason, the page's script (JSON) gets a 413."""
    small = create_app(Settings(**{**settings_values, "MAX_UPLOAD_BYTES": 50}), engine=engine, configure_logs=False)
    data = curated("y" * 100) * (PAGE_DISCARD_FACTOR * UPLOAD_FORM_OVERHEAD_BYTES // 100)  # too large even to drop
    with TestClient(small, base_url="https://testserver") as client:
        csrf = sign_in(client)
        response = client.post(
            "/curate/upload", data={"csrf_token": csrf}, files={"file": ("gen.txt", data)}, follow_redirects=False
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/curate"
        assert response.headers["connection"] == "close"
        page = client.get(response.headers["location"])
        asked_for_json = client.post("/curate/upload", data={"csrf_token": csrf}, files={"file": ("gen.txt", data)}, headers=JSON)
    assert page.status_code == 200 and 'class="flash flash-error"' in page.text
    assert "50 bytes (MAX_UPLOAD_BYTES)" in flash_on(page.text) and "split the file" in flash_on(page.text)
    assert flash_on(client.get("/curate").text) == ""  # shown once
    assert asked_for_json.status_code == 413
    assert "50 bytes (MAX_UPLOAD_BYTES)" in asked_for_json.json()["detail"]
    assert snapshot(session_factory) == []


# ---- review -------------------------------------------------------------------------------

@SQLITE_ONLY
def test_review_lists_pending_in_upload_order_with_lengths(curator, session_factory):
    add(session_factory, "first", "日本語 😷 https://example.com")
    add(session_factory, "queued elsewhere", status=TweetStatus.queued)
    page = curator.get("/curate").text
    assert texts_on(page) == ["first", "日本語 😷 https://example.com"]
    assert ">33/280<" in page  # 3 CJK (6) + space + emoji (2) + space + URL (23)
    for key in ("<kbd>a</kbd>", "<kbd>r</kbd>", "<kbd>e</kbd>", "<kbd>j</kbd>", "<kbd>k</kbd>"):
        assert key in page  # the shortcuts are listed


def test_approve_and_reject_in_bulk_report_what_they_skipped(curator, session_factory):
    one, two, three = add(session_factory, "one", "two", "three")
    queued, = add(session_factory, "already queued", status=TweetStatus.queued)
    response = curator.post("/curate/approve", data={"ids": [one, two, queued], "csrf_token": curator.csrf}, headers=JSON)
    assert response.status_code == 200
    body = response.json()
    assert body["changed"] == [one, two]
    assert body["skipped"] == [{"id": queued, "reason": f"tweet {queued} is queued, no longer pending"}]
    assert body["counts"]["queued"] == 3 and body["counts"]["pending"] == 1
    response = curator.post("/curate/reject", data={"ids": [three], "csrf_token": curator.csrf}, headers=JSON)
    assert response.json()["changed"] == [three]
    with session_factory() as session:
        rejected = session.get(Tweet, three)
        assert (rejected.status, rejected.error) == (TweetStatus.rejected, "rejected by the curator")


@SQLITE_ONLY
def test_actions_without_javascript_redirect_back_with_a_message(curator, session_factory):
    one, = add(session_factory, "approve me")
    response = curator.post("/curate/approve", data={"ids": one, "csrf_token": curator.csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/curate"
    page = curator.get("/curate").text
    assert "Approved 1 tweet." in page
    assert "Approved 1 tweet." not in curator.get("/curate").text  # shown once
    assert status_of(session_factory, one) is TweetStatus.queued


def test_edit_then_approve_saves_the_new_text(curator, session_factory):
    one, = add(session_factory, "typo tweet")
    response = curator.post(f"/curate/tweets/{one}/edit", data={"text": "  fixed tweet \r\n", "csrf_token": curator.csrf}, headers=JSON)
    assert response.status_code == 200, response.text
    with session_factory() as session:
        tweet = session.get(Tweet, one)
        assert (tweet.text, tweet.status) == ("fixed tweet", TweetStatus.queued)


@pytest.mark.parametrize(
    "text, message",
    [
        ("x" * 281, "281 weighted characters"),
        ("日" * 141, "282 weighted characters"),
        ("😷" * 141, "282 weighted characters"),
        ("https://example.com/" + "a" * 300 + " " + "x" * 257, "281 weighted characters"),
        ("   ", "tweet is empty"),
        ("keep <|endoftext|>", "generation marker"),
    ],
)
def test_edit_breaking_the_rule_is_422_and_changes_nothing(curator, session_factory, text, message):
    one, = add(session_factory, "original")
    before = snapshot(session_factory)
    response = curator.post(f"/curate/tweets/{one}/edit", data={"text": text, "csrf_token": curator.csrf}, headers=JSON)
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert snapshot(session_factory) == before


def test_edit_to_exactly_280_weighted_is_accepted(curator, session_factory):
    one, = add(session_factory, "original")
    response = curator.post(f"/curate/tweets/{one}/edit", data={"text": "日" * 140, "csrf_token": curator.csrf}, headers=JSON)
    assert response.status_code == 200


def test_edit_conflicts_are_409(curator, session_factory):
    one, = add(session_factory, "original")
    add(session_factory, "taken text", status=TweetStatus.queued)
    response = curator.post(f"/curate/tweets/{one}/edit", data={"text": "Taken  TEXT", "csrf_token": curator.csrf}, headers=JSON)
    assert response.status_code == 409 and "already has this text" in response.json()["detail"]
    queued, = add(session_factory, "not pending", status=TweetStatus.queued)
    response = curator.post(f"/curate/tweets/{queued}/edit", data={"text": "new", "csrf_token": curator.csrf}, headers=JSON)
    assert response.status_code == 409 and "no longer pending" in response.json()["detail"]
    response = curator.post("/curate/tweets/999/edit", data={"text": "new", "csrf_token": curator.csrf}, headers=JSON)
    assert response.status_code == 404


# ---- queue --------------------------------------------------------------------------------

def queue_order(curator) -> list[str]:
    return texts_on(curator.get("/curate/queue").text)


def test_queue_shows_posting_order_and_reorders(curator, session_factory):
    a, b, c, d = add(session_factory, "a", "b", "c", "d", status=TweetStatus.queued)
    add(session_factory, "pending is not queued")
    assert queue_order(curator) == ["a", "b", "c", "d"]

    def move(tweet_id, to):
        response = curator.post(f"/curate/tweets/{tweet_id}/move", data={"to": to, "csrf_token": curator.csrf}, headers=JSON)
        assert response.status_code == 200, response.text

    move(c, "up")
    assert queue_order(curator) == ["a", "c", "b", "d"]
    move(a, "bottom")
    assert queue_order(curator) == ["c", "b", "d", "a"]
    move(a, "top")
    assert queue_order(curator) == ["a", "c", "b", "d"]
    move(c, "down")
    assert queue_order(curator) == ["a", "b", "c", "d"]
    move(a, "up")  # already first: nothing to do
    assert queue_order(curator) == ["a", "b", "c", "d"]


def test_moving_through_equal_positions_changes_the_order(curator, session_factory):
    a, b, c = add(session_factory, "a", "b", "c", status=TweetStatus.queued)
    with session_factory() as session:
        for tweet_id in (a, b, c):
            session.get(Tweet, tweet_id).position = 5
        session.commit()
    curator.post(f"/curate/tweets/{c}/move", data={"to": "up", "csrf_token": curator.csrf})
    assert queue_order(curator) == ["a", "c", "b"]


def test_remove_from_queue_goes_back_to_review(curator, session_factory):
    a, = add(session_factory, "queued", status=TweetStatus.queued)
    response = curator.post(f"/curate/tweets/{a}/unqueue", data={"csrf_token": curator.csrf}, headers=JSON)
    assert response.status_code == 200
    assert status_of(session_factory, a) is TweetStatus.pending
    assert texts_on(curator.get("/curate").text) == ["queued"]


def test_random_order_shows_the_pool_without_reordering(session_factory, settings_values, engine):
    add(session_factory, "b", "a", status=TweetStatus.queued)
    random_app = create_app(Settings(**{**settings_values, "TWEET_ORDER": "random"}), engine=engine, configure_logs=False)
    with TestClient(random_app, base_url="https://testserver") as client:
        sign_in(client)
        page = client.get("/curate/queue").text
    assert "TWEET_ORDER=random" in page
    assert "/move" not in page
    assert texts_on(page) == ["b", "a"]


def test_a_bots_random_order_names_its_prefixed_variable(monkeypatch, session_factory, settings_values, engine):
    monkeypatch.setenv("BOT_BOB_TWEET_ORDER", "random")
    add_for(session_factory, "bob", "bob's", status=TweetStatus.queued)
    values = {key: value for key, value in settings_values.items() if key != "ACCOUNT"}
    with TestClient(create_app(Settings(**values, BOTS="alice,bob"), engine=engine, configure_logs=False),
                    base_url="https://testserver") as client:
        sign_in(client)
        page = client.get("/curate/queue?bot=bob").text
    assert "BOT_BOB_TWEET_ORDER=random: each post picks" in page


@pytest.mark.parametrize("queued, warned", [(6, True), (7, False)])
def test_queue_warning_below_the_threshold(curator, session_factory, queued, warned):
    add(session_factory, *[f"tweet {n}" for n in range(queued)], status=TweetStatus.queued)
    page = curator.get("/curate/queue").text
    assert ('id="queue-warning"' in page) is warned
    if warned:
        assert f"Only {queued} approved tweets left" in page


# ---- history and posting ------------------------------------------------------------------

def test_history_shows_posts_with_links_and_problems_with_reasons(curator, session_factory):
    posted, dry, failed, unconfirmed = add(session_factory, "real post", "dry post", "failed one", "unsure one", status=TweetStatus.queued)
    with session_factory() as session:
        now = utcnow()
        real = session.get(Tweet, posted)
        real.status, real.posted_at, real.x_tweet_id = TweetStatus.posted, now - timedelta(hours=1), "1790000000000000001"
        real.x_url = f"https://x.com/{ACCOUNT}/status/1790000000000000001"
        fake = session.get(Tweet, dry)
        fake.status, fake.posted_at, fake.dry_run = TweetStatus.posted, now, True
        for tweet_id, status, error in ((failed, TweetStatus.failed, "X failed (503)"),
                                        (unconfirmed, TweetStatus.unconfirmed, "X's answer was lost")):
            tweet = session.get(Tweet, tweet_id)
            tweet.status, tweet.error, tweet.idempotency_key = status, error, f"key-{tweet_id}"
        session.commit()
    page = curator.get("/curate/history").text
    assert f'href="https://x.com/{ACCOUNT}/status/1790000000000000001"' in page
    assert now.strftime("%Y-%m-%d %H:%M UTC") in page
    assert texts_on(page)[-2:] == ["dry post", "real post"]  # newest post first
    assert '<span class="status status-dry-run">dry run</span>' in page
    assert "X failed (503)" in page and "X&#39;s answer was lost" in page
    assert "data-confirm=" in page  # requeueing an unconfirmed tweet asks first

    for tweet_id in (failed, unconfirmed):
        response = curator.post(f"/curate/tweets/{tweet_id}/requeue", data={"csrf_token": curator.csrf}, headers=JSON)
        assert response.status_code == 200
        assert status_of(session_factory, tweet_id) is TweetStatus.queued
    response = curator.post(f"/curate/tweets/{posted}/requeue", data={"csrf_token": curator.csrf}, headers=JSON)
    assert response.status_code == 409  # a posted tweet is never requeued


def make_unconfirmed(session_factory, text: str) -> int:
    """A tweet whose posting call lost X's answer, as posting.job leaves it."""
    tweet_id, = add(session_factory, text, status=TweetStatus.queued)
    with session_factory() as session:
        tweet = session.get(Tweet, tweet_id)
        tweet.status, tweet.claimed_at, tweet.idempotency_key = TweetStatus.unconfirmed, utcnow() - timedelta(hours=2), f"key-{tweet_id}"
        tweet.error = "X did not answer in time; X may have posted it"
        session.commit()
    return tweet_id


@pytest.mark.parametrize(
    "link, x_tweet_id",
    [
        ("", None),
        ("  1790000000000000001 ", "1790000000000000001"),
        (f"https://x.com/{ACCOUNT}/status/1790000000000000001", "1790000000000000001"),
        ("https://twitter.com/Someone_Else/status/1790000000000000001?s=20&t=abc", "1790000000000000001"),
        ("http://mobile.twitter.com/a/statuses/42/photo/1", "42"),
    ],
)
def test_unconfirmed_tweet_is_marked_posted_from_the_history(curator, session_factory, link, x_tweet_id):
    tweet_id = make_unconfirmed(session_factory, "found on X after all")
    page = curator.get("/curate/history").text
    assert f'action="/curate/tweets/{tweet_id}/confirm-posted"' in page
    response = curator.post(f"/curate/tweets/{tweet_id}/confirm-posted", data={"x_link": link, "csrf_token": curator.csrf}, headers=JSON)
    assert response.status_code == 200, response.text
    with session_factory() as session:
        tweet = session.get(Tweet, tweet_id)
        assert (tweet.status, tweet.x_tweet_id, tweet.error, tweet.dry_run) == (TweetStatus.posted, x_tweet_id, None, False)
        assert tweet.posted_at == tweet.claimed_at  # when its posting call sent it, not when it was confirmed
        expected_url = None if x_tweet_id is None else f"https://x.com/{ACCOUNT}/status/{x_tweet_id}"
        assert tweet.x_url == expected_url
    page = curator.get("/curate/history").text
    assert f'action="/curate/tweets/{tweet_id}/confirm-posted"' not in page
    if expected_url:
        assert f'href="{expected_url}"' in page
    else:
        assert "Marked posted by hand; no link recorded." in page


@pytest.mark.parametrize(
    "link", ["https://example.com/a/status/1", "javascript:alert(1)", "https://x.com/a/status/12ab", "1" * 20, "https://x.com/a"],
)
def test_marking_posted_with_a_bad_link_is_422_and_changes_nothing(curator, session_factory, link):
    tweet_id = make_unconfirmed(session_factory, "still unconfirmed")
    before = snapshot(session_factory)
    response = curator.post(f"/curate/tweets/{tweet_id}/confirm-posted", data={"x_link": link, "csrf_token": curator.csrf}, headers=JSON)
    assert response.status_code == 422
    assert "not a link to a post on X" in response.json()["detail"]
    assert snapshot(session_factory) == before


def test_only_unconfirmed_tweets_are_marked_posted(curator, session_factory):
    queued, failed = add(session_factory, "queued", "failed", status=TweetStatus.queued)
    with session_factory() as session:
        session.get(Tweet, failed).status = TweetStatus.failed
        session.commit()
    before = snapshot(session_factory)
    for tweet_id in (queued, failed):
        response = curator.post(f"/curate/tweets/{tweet_id}/confirm-posted", data={"csrf_token": curator.csrf}, headers=JSON)
        assert response.status_code == 409 and "only unconfirmed tweets" in response.json()["detail"]
    assert snapshot(session_factory) == before


def post_next_key(curator) -> str:
    return re.search(r'name="idempotency_key" value="([^"]+)"', curator.get("/curate/queue").text).group(1)


def test_post_next_now_posts_once_per_rendered_key(curator, session_factory):
    first, second = add(session_factory, "first", "second", status=TweetStatus.queued)
    key = post_next_key(curator)
    form = {"idempotency_key": key, "csrf_token": curator.csrf}
    response = curator.post("/curate/post-next", data=form, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/curate/history"
    again = curator.post("/curate/post-next", data=form, headers=JSON)  # the double click
    assert again.status_code == 200 and "nothing new was posted" in again.json()["message"]
    assert again.json()["tweet_id"] == first
    assert status_of(session_factory, first) is TweetStatus.posted
    assert status_of(session_factory, second) is TweetStatus.queued
    history = curator.get("/curate/history").text
    assert "Dry run: tweet" in history and "dry run</span>" in history

    fresh = post_next_key(curator)
    assert fresh != key
    curator.post("/curate/post-next", data={"idempotency_key": fresh, "csrf_token": curator.csrf})
    assert status_of(session_factory, second) is TweetStatus.posted


def test_post_next_needs_the_pages_key_and_reports_an_empty_queue(curator, session_factory):
    response = curator.post("/curate/post-next", data={"csrf_token": curator.csrf}, headers=JSON)
    assert response.status_code == 400 and "key is missing" in response.json()["detail"]
    response = curator.post("/curate/post-next", data={"idempotency_key": post_next_key(curator), "csrf_token": curator.csrf}, headers=JSON)
    assert response.status_code == 404 and response.json()["detail"] == "No more tweets left"


# ---- the counter's rule -------------------------------------------------------------------

@SQLITE_ONLY
def test_rule_script_is_served_with_an_etag(stranger):
    response = stranger.get("/curate/tweet-rule.js")
    assert response.status_code == 200
    assert response.text.startswith("window.TWEET_RULE = {")
    again = stranger.get("/curate/tweet-rule.js", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "python, javascript",
    [
        (r"\U0001F600|\U0000200D", r"\u{1F600}|\u{200D}"),
        (r"[^\!'\-\.\/]", r"[^!'\-\.\/]"),
        (r"\-x", "-x"),
        (r"[]a]", r"[\]a]"),
        (r"(?:a)(?=b)(?<!c)", r"(?:a)(?=b)(?<!c)"),
        (r"\x09\u202A\n", r"\x09\u202A\n"),
    ],
)
def test_python_patterns_become_javascript(python, javascript):
    assert js_regex_source(python) == javascript


@pytest.mark.parametrize("pattern", [r"\d", r"\w+", r"\bword", r"(?i)x", r"(?P<name>x)"])
def test_patterns_that_differ_between_the_two_are_refused(pattern):
    with pytest.raises(ValueError, match="no JavaScript twin"):
        js_regex_source(pattern)


def test_python_word_class_stands_for_backslash_w_with_exactly_pythons_word_characters():
    assert js_regex_source(r"(?<![=/\w])@[\w.-]+\w", word="a-z_") == "(?<![=/a-z_])@[a-z_.-]+[a-z_]"
    ranges = re.findall(r"\\u\{([0-9A-F]+)\}(?:-\\u\{([0-9A-F]+)\})?", python_word_class())
    covered = {cp for first, last in ranges for cp in range(int(first, 16), int(last or first, 16) + 1)}
    assert covered == {cp for cp in range(0x110000) if re.match(r"\w", chr(cp))}
    assert {0x5F, 0x30, 0xE9, 0x65E5, 0x0661}.issubset(covered) and not {0x20, 0x2D, 0x301, 0x1F600} & covered


def test_nameprep_tables_match_stringprep_on_the_basic_plane():
    tables = nameprep_tables()

    def covered(ranges, code_point):
        index = bisect.bisect_right(ranges, [code_point, 0x110000]) - 1
        return index >= 0 and ranges[index][0] <= code_point <= ranges[index][1]

    def prohibited(char):
        return any(getattr(stringprep, f"in_table_{t}")(char) for t in ("c12", "c22", "c3", "c4", "c5", "c6", "c7", "c8", "c9"))

    for code_point in range(0x10000):
        char = chr(code_point)
        assert covered(tables["prohibited"], code_point) == prohibited(char), hex(code_point)
        assert covered(tables["randAL"], code_point) == stringprep.in_table_d1(char), hex(code_point)
        assert covered(tables["leftToRight"], code_point) == stringprep.in_table_d2(char), hex(code_point)
        assert covered(tables["mappedToNothing"], code_point) == stringprep.in_table_b1(char), hex(code_point)


# ---- several bots and their destinations --------------------------------------------------

def add_for(session_factory, account: str, *texts: str, status: TweetStatus = TweetStatus.pending) -> list[int]:
    """Store texts as `account`'s tweets, in order; their ids."""
    with session_factory() as session:
        store.ingest_texts(session, account=account, texts=list(texts), status=status)
        session.commit()
        return list(session.scalars(select(Tweet.id).where(Tweet.account == account, Tweet.text.in_(texts)).order_by(Tweet.position)))


@pytest.fixture
def network_rules(monkeypatch):
    """Mastodon's and Bluesky's text rules stood in by short ones (over 40 and 20 characters), to show a
    text over two destinations' rules with short texts: the page shows what each rule says."""
    def over(limit: int, name: str):
        return lambda text, *_max: f"{len(text)} characters, over {name}'s {limit}" if len(text) > limit else None

    monkeypatch.setattr(tweet_text, "mastodon_text_problem", over(40, "Mastodon"))
    monkeypatch.setattr(tweet_text, "bluesky_text_problem", over(20, "Bluesky"))


@pytest.fixture
def two_bots_app(monkeypatch, settings_values, engine):
    """alice posts to X and Mastodon, bob to X, Mastodon and Bluesky (as bob.bsky.social); every destination a dry run."""
    monkeypatch.setenv("BOT_ALICE_DESTINATIONS", "x,mastodon")
    monkeypatch.setenv("BOT_BOB_DESTINATIONS", "x,mastodon,bluesky")
    monkeypatch.setenv("BOT_BOB_BLUESKY_HANDLE", "bob.bsky.social")
    for name in ("ALICE", "BOB"):
        monkeypatch.setenv(f"BOT_{name}_TWEET_ORDER", "oldest")
        for variable in ("TWITTER_DRY_RUN", "MASTODON_DRY_RUN", "BLUESKY_DRY_RUN"):
            monkeypatch.setenv(f"BOT_{name}_{variable}", "true")
    values = {key: value for key, value in settings_values.items() if key != "ACCOUNT"}
    return create_app(Settings(**values, BOTS="alice,bob"), engine=engine, configure_logs=False)


@pytest.fixture
def two_bots(two_bots_app):
    with TestClient(two_bots_app, base_url="https://testserver") as test_client:
        test_client.csrf = sign_in(test_client)
        yield test_client


def test_the_sign_in_page_of_several_bots_names_them_all(two_bots_app):
    """Signing in is for every bot: the page before it does not present itself as the first bot's."""
    with TestClient(two_bots_app, base_url="https://testserver") as client:
        page = client.get("/curate/sign-in").text
    assert "<title>Sign in · @alice, @bob</title>" in page
    assert '<span class="brand">@alice, @bob <small>curation</small></span>' in page


def bot_links(page: str) -> list[tuple[str, bool]]:
    """The bot picker's links: (href, is the current bot)."""
    nav = re.search(r'<nav class="wrap bots" aria-label="Bots">(.*?)</nav>', page, re.S)
    return [(href, bool(current)) for href, current in re.findall(r'<a href="([^"]+)" ?(aria-current="true")?>', nav.group(1))]


def test_each_bots_page_lists_only_its_own_tweets_and_keeps_the_bot_in_every_url(two_bots, session_factory):
    add_for(session_factory, "alice", "alice's candidate")
    add_for(session_factory, "alice", "alice's queued tweet", status=TweetStatus.queued)
    add_for(session_factory, "bob", "bob's candidate")
    add_for(session_factory, "bob", "bob's queued tweet", status=TweetStatus.queued)

    default, alice, bob = (two_bots.get(path).text for path in ("/curate", "/curate?bot=alice", "/curate?bot=bob"))
    assert texts_on(default) == texts_on(alice) == ["alice's candidate"]  # no bot named: ACCOUNT, else the first of BOTS
    assert texts_on(bob) == ["bob's candidate"]
    assert texts_on(two_bots.get("/curate/queue?bot=bob").text) == ["bob's queued tweet"]
    assert texts_on(two_bots.get("/curate/queue?bot=alice").text) == ["alice's queued tweet"]
    assert bot_links(bob) == [("/curate?bot=alice", False), ("/curate?bot=bob", True)]
    assert bot_links(two_bots.get("/curate/history?bot=bob").text) == [
        ("/curate/history?bot=alice", False), ("/curate/history?bot=bob", True)]
    assert "<title>Review · @bob</title>" in bob
    # Every form and link of bob's page stays on bob.
    targets = re.findall(r'(?:action|formaction|href)="(/curate[^"]*)"', bob)
    assert targets and all(target.endswith("?bot=bob") or target.startswith("/curate/static/")
                           or target in ("/curate/sign-out", "/curate/tweet-rule.js", "/curate?bot=alice")
                           for target in targets), targets
    assert re.search(r'<span class="badge" data-count="pending">1</span>', bob)


@SQLITE_ONLY
def test_the_one_bots_page_has_no_picker_and_todays_urls(curator, session_factory):
    add(session_factory, "a candidate")
    page = curator.get("/curate").text
    assert 'aria-label="Bots"' not in page and "?bot=" not in page
    assert 'action="/curate/approve"' in page
    assert "Dry run (TWITTER_DRY_RUN=true): posts are recorded here and never sent to X." in page


def test_an_action_on_another_bots_tweet_is_refused_and_changes_nothing(two_bots, session_factory):
    alices_candidate, = add_for(session_factory, "alice", "alice's candidate")
    alices_queued, = add_for(session_factory, "alice", "alice's queued tweet", status=TweetStatus.queued)
    before = snapshot(session_factory)
    form = {"csrf_token": two_bots.csrf}

    response = two_bots.post("/curate/approve?bot=bob", data={**form, "ids": [alices_candidate]}, headers=JSON)
    assert response.status_code == 200 and response.json()["changed"] == []
    assert response.json()["skipped"] == [{"id": alices_candidate, "reason": f"no tweet with id {alices_candidate}"}]
    for path, data in [
        (f"/curate/tweets/{alices_candidate}/edit?bot=bob", {"text": "taken over"}),
        (f"/curate/tweets/{alices_queued}/unqueue?bot=bob", {}),
        (f"/curate/tweets/{alices_queued}/move?bot=bob", {"to": "top"}),
        (f"/curate/tweets/{alices_queued}/requeue?bot=bob", {}),
    ]:
        response = two_bots.post(path, data={**form, **data}, headers=JSON)
        assert response.status_code == 404, (path, response.text)
    assert snapshot(session_factory) == before

    # The same action on the right bot works, and a plain form goes back to that bot's page.
    response = two_bots.post("/curate/approve?bot=alice", data={**form, "ids": [alices_candidate]}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/curate?bot=alice"
    assert status_of(session_factory, alices_candidate) is TweetStatus.queued
    response = two_bots.post(f"/curate/tweets/{alices_queued}/move?bot=alice", data={**form, "to": "bottom"}, follow_redirects=False)
    assert response.headers["location"] == f"/curate/queue?bot=alice#tweet-{alices_queued}"


def test_an_upload_goes_to_the_pages_bot(two_bots, session_factory):
    response = two_bots.post("/curate/upload?bot=bob", data={"csrf_token": two_bots.csrf},
                             files={"file": ("generated.txt", curated("bob's upload"), "text/plain")})
    assert response.status_code == 201, response.text
    assert texts_on(response.text) == ["bob's upload"]
    with session_factory() as session:
        assert session.scalars(select(Tweet.account)).all() == ["bob"]


@SQLITE_ONLY
def test_an_upload_over_the_body_limit_goes_back_to_the_same_bots_review_list(settings_values, engine, monkeypatch):
    monkeypatch.setenv("BOT_BOB_TWITTER_DRY_RUN", "true")
    values = {key: value for key, value in settings_values.items() if key != "ACCOUNT"}
    small = create_app(Settings(**values, BOTS="alice,bob", MAX_UPLOAD_BYTES=50), engine=engine, configure_logs=False)
    data = curated("y" * 100) * (PAGE_DISCARD_FACTOR * UPLOAD_FORM_OVERHEAD_BYTES // 100)
    with TestClient(small, base_url="https://testserver") as client:
        csrf = sign_in(client)
        response = client.post(
            "/curate/upload?bot=bob", data={"csrf_token": csrf}, files={"file": ("gen.txt", data)}, follow_redirects=False
        )
        assert response.status_code == 303 and response.headers["location"] == "/curate?bot=bob"
        assert "50 bytes (MAX_UPLOAD_BYTES)" in flash_on(client.get(response.headers["location"]).text)


@pytest.mark.parametrize("bot", ["carol", "<script>alert(1)</script>", "a" * 300, "\x00"])
def test_an_unknown_bot_is_a_404_for_the_script_and_a_message_for_a_form(two_bots, session_factory, bot):
    alices, = add_for(session_factory, "alice", "alice's candidate")
    before = snapshot(session_factory)
    response = two_bots.post("/curate/approve", params={"bot": bot}, data={"csrf_token": two_bots.csrf, "ids": [alices]}, headers=JSON)
    assert response.status_code == 404
    assert response.json()["detail"].startswith("no bot is named") and "the bots are alice, bob" in response.json()["detail"]
    for method, path in [("GET", "/curate/queue"), ("POST", "/curate/post-next")]:
        response = two_bots.request(method, path, params={"bot": bot}, data={"csrf_token": two_bots.csrf}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/curate"
        page = two_bots.get("/curate").text
        assert flash_on(page).startswith("no bot is named") and "<script>alert" not in page
    assert snapshot(session_factory) == before


def test_post_next_now_posts_the_pages_bot_and_says_what_each_destination_did(two_bots, session_factory):
    alices, = add_for(session_factory, "alice", "alice's next tweet", status=TweetStatus.queued)
    bobs, = add_for(session_factory, "bob", "bob's next tweet", status=TweetStatus.queued)
    page = two_bots.get("/curate/queue?bot=bob").text
    assert 'action="/curate/post-next?bot=bob"' in page and "Post next now as @bob" in page
    assert "to X, Mastodon, Bluesky (dry run on X, Mastodon, Bluesky: recorded, not sent)" in page
    assert ("Dry run (BOT_BOB_TWITTER_DRY_RUN=true, BOT_BOB_MASTODON_DRY_RUN=true, BOT_BOB_BLUESKY_DRY_RUN=true): "
            "posts are recorded here and never sent to X, Mastodon or Bluesky.") in page
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)
    response = two_bots.post("/curate/post-next?bot=bob", data={"idempotency_key": key, "csrf_token": two_bots.csrf},
                             follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/curate/history?bot=bob"
    assert status_of(session_factory, bobs) is TweetStatus.posted
    assert status_of(session_factory, alices) is TweetStatus.queued
    history = two_bots.get("/curate/history?bot=bob").text
    assert flash_on(history) == (f"Dry run: tweet {bobs} recorded as posted; nothing was sent to X; "
                                 "Mastodon: dry run, nothing sent; Bluesky: dry run, nothing sent")
    assert texts_on(history) == ["bob's next tweet"]
    assert re.findall(r'data-network="(\w+)" data-status="(\w[\w-]*)"', history) == [
            ("x", "posted"), ("mastodon", "posted"), ("bluesky", "posted")]
    assert history.count('<span class="delivery delivery-dry-run">dry run</span>') == 3
    assert texts_on(two_bots.get("/curate/history?bot=alice").text) == []


def set_deliveries(session_factory, tweet_id: int, *, status: TweetStatus | None = None, **by_network: dict) -> None:
    """Give a tweet (a status and) a delivery per network, with the given fields."""
    with session_factory() as session:
        tweet = session.get(Tweet, tweet_id)
        if status is not None:
            tweet.status = status
            if status is TweetStatus.posted:
                tweet.posted_at = utcnow()
        for network, fields in by_network.items():
            session.add(Delivery(tweet_id=tweet_id, destination=network, **fields))
        session.commit()


def destinations_on(page: str, tweet_id: int) -> list[tuple[str, str, str]]:
    """A card's destinations: (network, state, the text shown, tags stripped and spaces squeezed)."""
    card = re.search(rf'<li class="card" id="tweet-{tweet_id}".*?</li>\s*(?=<li class="card"|</ol>)', page, re.S).group(0)
    return [
        (network, state, " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split()))
        for network, state, body in re.findall(r'<li class="destination" data-network="(\w+)" data-status="([\w-]+)">(.*?)</li>', card, re.S)
    ]


def test_queue_and_history_show_each_destinations_state_and_link_escaped(two_bots, session_factory):
    partly, fresh = add_for(session_factory, "bob", "posted on X, Mastodon to retry", "not tried yet", status=TweetStatus.queued)
    set_deliveries(
        session_factory, partly,
        x={"status": DeliveryStatus.posted, "remote_id": "1790000000000000001", "url": "https://x.com/bob/status/1790000000000000001"},
        mastodon={"status": DeliveryStatus.queued, "error": f"Mastodon's rate limit is reached {HOSTILE[0]}"},
    )
    queue = two_bots.get("/curate/queue?bot=bob").text
    assert destinations_on(queue, partly) == [
        ("x", "posted", "X posted View on X"),
        ("mastodon", "queued", f"Mastodon queued Mastodon's rate limit is reached {HOSTILE[0]}"),
        ("bluesky", "not-posted", "Bluesky not posted yet"),
    ]
    assert destinations_on(queue, fresh) == [
        ("x", "not-posted", "X not posted yet"), ("mastodon", "not-posted", "Mastodon not posted yet"),
        ("bluesky", "not-posted", "Bluesky not posted yet"),
    ]
    assert 'href="https://x.com/bob/status/1790000000000000001"' in queue

    posted, unsure = add_for(session_factory, "bob", "everywhere", "lost on Bluesky", status=TweetStatus.queued)
    set_deliveries(
        session_factory, posted, status=TweetStatus.posted,
        x={"status": DeliveryStatus.posted, "dry_run": True},
        mastodon={"status": DeliveryStatus.posted, "url": 'https://mastodon.example/@bob/1?a="><script>alert(1)</script>'},
        bluesky={"status": DeliveryStatus.posted, "url": "javascript:alert(1)"},
    )
    set_deliveries(
        session_factory, unsure, status=TweetStatus.unconfirmed,
        x={"status": DeliveryStatus.posted, "url": "https://x.com/bob/status/2"},
        bluesky={"status": DeliveryStatus.unconfirmed, "error": f"Bluesky did not answer in time {HOSTILE[1]}"},
    )
    history = two_bots.get("/curate/history?bot=bob").text
    assert destinations_on(history, posted) == [
        ("x", "posted", "X dry run Not sent to X (dry run)."),
        ("mastodon", "posted", "Mastodon posted View on Mastodon"),
        ("bluesky", "posted", "Bluesky posted Marked posted by hand; no link recorded."),  # never a javascript: link
    ]
    assert destinations_on(history, unsure) == [
        ("x", "posted", "X posted View on X"),
        ("mastodon", "not-posted", "Mastodon not posted yet"),
        ("bluesky", "unconfirmed", f"Bluesky unconfirmed Bluesky did not answer in time {HOSTILE[1]}"),
    ]
    assert 'href="https://mastodon.example/@bob/1?a=&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in history
    assert "javascript:" not in history
    for page in (queue, history):
        assert "<script>alert" not in page and "<img src=x" not in page

    # Unconfirmed on Bluesky only: checked there, without X's link field; marked posted, Bluesky has it.
    unsure_card = card_html(history, unsure)
    assert "Found it on Bluesky?" in unsure_card and 'name="x_link"' not in unsure_card
    assert "Check @bob on X" not in unsure_card
    assert '<a class="small-link" href="https://bsky.app/profile/bob.bsky.social" rel="noopener noreferrer" ' \
           'target="_blank">Check @bob.bsky.social on Bluesky</a>' in unsure_card
    assert 'data-confirm="Bluesky may already have posted tweet' in unsure_card
    response = two_bots.post(f"/curate/tweets/{unsure}/confirm-posted?bot=bob", data={"csrf_token": two_bots.csrf}, follow_redirects=False)
    assert response.headers["location"] == "/curate/history?bot=bob"
    assert destinations_on(two_bots.get("/curate/history?bot=bob").text, unsure)[2][:2] == ("bluesky", "posted")


def test_a_candidate_valid_for_some_destinations_says_where_it_will_go(two_bots, session_factory, network_rules):
    short, medium = add_for(session_factory, "bob", "short enough", "between twenty and forty characters")
    long_one, = add_for(session_factory, "bob", "queued: longer than forty characters, too long for Mastodon",
                        status=TweetStatus.queued)
    review = two_bots.get("/curate?bot=bob").text
    assert "text-problems" not in card_html(review, short)
    assert problems_on(card_html(review, medium)) == [
        "Not valid for Bluesky: 35 characters, over Bluesky's 20",
        "It will be posted only to X, Mastodon: edit it to post it everywhere.",
    ]
    queue = two_bots.get("/curate/queue?bot=bob").text
    assert problems_on(card_html(queue, long_one)) == [
        "Not valid for Mastodon: 59 characters, over Mastodon's 40",
        "Not valid for Bluesky: 59 characters, over Bluesky's 20",
        "It will be posted only to X.",
    ]
    # alice does not post to Bluesky: her page says nothing about Bluesky's rule.
    alices, = add_for(session_factory, "alice", "between twenty and forty characters")
    assert "text-problems" not in two_bots.get("/curate?bot=alice").text


def card_html(page: str, tweet_id: int) -> str:
    return re.search(rf'<li class="card" id="tweet-{tweet_id}".*?(?=<li class="card"|</ol>)', page, re.S).group(0)


def problems_on(card: str) -> list[str]:
    box = re.search(r'<div class="text-problems" role="note">(.*?)</div>', card, re.S)
    return [] if box is None else [
        " ".join(html.unescape(text).split()) for text in re.findall(r"<(?:li|p)[^>]*>(.*?)</(?:li|p)>", box.group(1), re.S)]


@SQLITE_ONLY
def test_candidates_over_mastodons_or_blueskys_own_rule_say_where_they_will_go(settings_values, engine, session_factory, monkeypatch):
    """The networks' own rules (core.tweet_text), no stand-ins: a link counts 23 on X and Mastodon, whole on Bluesky."""
    monkeypatch.setenv("BOT_BOB_DESTINATIONS", "x,mastodon,bluesky")
    monkeypatch.setenv("BOT_BOB_MASTODON_MAX_CHARACTERS", "100")
    values = {key: value for key, value in settings_values.items() if key != "ACCOUNT"}
    app = create_app(Settings(**values, BOTS="alice,bob"), engine=engine, configure_logs=False)
    long_link, wordy = "see https://example.com/" + "a" * 300, "w" * 150
    link_id, wordy_id = add_for(session_factory, "bob", long_link, wordy)
    with TestClient(app, base_url="https://testserver") as client:
        csrf = sign_in(client)
        review = client.get("/curate?bot=bob").text
        assert problems_on(card_html(review, link_id)) == [
            f"Not valid for Bluesky: {len(long_link)} graphemes over Bluesky's 300",
            "It will be posted only to X, Mastodon: edit it to post it everywhere.",
        ]
        assert problems_on(card_html(review, wordy_id)) == [
            "Not valid for Mastodon: 150 characters, 50 over Mastodon's 100",
            "It will be posted only to X, Bluesky: edit it to post it everywhere.",
        ]
        assert client.post("/curate/approve?bot=bob", data={"csrf_token": csrf, "ids": [link_id]}).status_code == 200
        assert problems_on(card_html(client.get("/curate/queue?bot=bob").text, link_id))[-1] == "It will be posted only to X, Mastodon."


@SQLITE_ONLY
def test_a_text_over_a_destinations_rule_is_escaped_like_the_text(two_bots, session_factory, monkeypatch):
    monkeypatch.setattr(tweet_text, "bluesky_text_problem", lambda text: f"refused: {text}")
    add_for(session_factory, "bob", HOSTILE[0], HOSTILE[1])
    page = two_bots.get("/curate?bot=bob").text
    assert "<script>" not in page and "<img" not in page
    assert f"Not valid for Bluesky: refused: {HOSTILE[0]}" in [" ".join(t.split()) for t in problems_on(page)]


def test_listings_load_deliveries_in_the_same_number_of_queries_for_any_number_of_tweets(two_bots, session_factory, engine):
    statements: list[str] = []
    sqlalchemy.event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: statements.append(statement))

    def queries_for(path: str) -> int:
        statements.clear()
        assert two_bots.get(path).status_code == 200
        return len(statements)

    def add_posted(n: int) -> None:
        for tweet_id in add_for(session_factory, "bob", *(f"posted tweet {n}-{i}" for i in range(n)), status=TweetStatus.queued):
            set_deliveries(session_factory, tweet_id, status=TweetStatus.posted,
                           **{network: {"status": DeliveryStatus.posted, "dry_run": True} for network in ("x", "mastodon", "bluesky")})

    add_posted(1)
    add_for(session_factory, "bob", "queued 1", status=TweetStatus.queued)
    few = {path: queries_for(path) for path in ("/curate/history?bot=bob", "/curate/queue?bot=bob", "/curate?bot=bob")}
    add_posted(5)
    add_for(session_factory, "bob", "queued 2", "queued 3", "queued 4", status=TweetStatus.queued)
    many = {path: queries_for(path) for path in few}
    assert many == few
    assert len(texts_on(two_bots.get("/curate/history?bot=bob").text)) == 6


@SQLITE_ONLY
def test_the_pages_edit_and_upload_keep_a_text_one_of_the_bots_destinations_takes(two_bots, session_factory):
    """The page's rule is the bot's (posting.destinations.text_rule), as the API's: alice posts to X and
    Mastodon, so a text over X's 280 but within Mastodon's 500 is kept (and posted only to Mastodon)."""
    edited, uploaded, too_long = "e" * 400, "u" * 450, "z" * 501
    candidate, other = add_for(session_factory, "alice", "alice's candidate", "alice's other candidate")
    response = two_bots.post(f"/curate/tweets/{candidate}/edit?bot=alice", data={"text": edited, "csrf_token": two_bots.csrf},
                             headers=JSON)
    assert response.status_code == 200, response.text
    response = two_bots.post(f"/curate/tweets/{other}/edit?bot=alice", data={"text": too_long, "csrf_token": two_bots.csrf},
                             headers=JSON)
    assert response.status_code == 422
    assert response.json()["detail"] == ("Not saved: X: tweet is 501 weighted characters, over X's limit of 280; "
                                         "Mastodon: 501 characters, 1 over Mastodon's 500.")
    response = two_bots.post("/curate/upload?bot=alice", data={"csrf_token": two_bots.csrf},
                             files={"file": ("gen.txt", f"{uploaded}\n{DELIM}\n{too_long}\n{DELIM}\n".encode())}, headers=JSON)
    assert response.status_code == 201
    with session_factory() as session:
        kept = {tweet.text: tweet.status for tweet in session.scalars(select(Tweet).where(Tweet.account == "alice"))}
    assert kept == {edited: TweetStatus.queued, "alice's other candidate": TweetStatus.pending, uploaded: TweetStatus.pending}
    upload_summary = re.search(r'<ul class="rejections">(.*?)</ul>', response.text, re.S).group(1)
    assert "Sample #2: X: tweet is 501 weighted characters, over X&#39;s limit of 280; Mastodon: 501 characters, 1 over Mastodon&#39;s 500" in upload_summary



@SQLITE_ONLY
def test_the_review_page_counts_each_text_on_each_of_the_bots_destinations(settings_values, engine, session_factory, monkeypatch):
    """The count the live counter starts from, and what it needs to follow the bot: its destinations and
    its instance's Mastodon limit. One destination: the count alone, as for an X-only bot."""
    monkeypatch.setenv("BOT_ALICE_DESTINATIONS", "mastodon")
    monkeypatch.setenv("BOT_ALICE_MASTODON_MAX_CHARACTERS", "1000")
    monkeypatch.setenv("BOT_BOB_DESTINATIONS", "x,mastodon,bluesky")
    values = {key: value for key, value in settings_values.items() if key != "ACCOUNT"}
    app = create_app(Settings(**values, BOTS="alice,bob"), engine=engine, configure_logs=False)
    text = "see example.com 👨\u200d👩\u200d👧"  # a link without http(s):// counts 23 on X only; the family 2 on X, 1 elsewhere
    bobs, = add_for(session_factory, "bob", text)
    alices, = add_for(session_factory, "alice", "m" * 250)
    with TestClient(app, base_url="https://testserver") as client:
        sign_in(client)
        bobs_card = card_html(client.get("/curate?bot=bob").text, bobs)
        alices_card = card_html(client.get("/curate?bot=alice").text, alices)
    shown = lambda card: re.findall(r'(?:class="length"|<output )[^>]*>([^<]*)<', card)  # noqa: E731
    assert shown(bobs_card) == ["X 30/280 · Mastodon 17/500 · Bluesky 17/300"] * 2
    assert 'data-destinations="x,mastodon,bluesky" data-mastodon-max-characters="500"' in bobs_card
    assert shown(alices_card) == ["250/1000"] * 2
    assert 'data-destinations="mastodon" data-mastodon-max-characters="1000"' in alices_card
