"""Hostile request bodies: refused before they are read (no credential), or while they stream (too large).

The app is called at the ASGI level with a `receive` that counts the body bytes the app pulls,
so "answered before reading" is measured, not inferred. One test runs a real uvicorn server to
check what happens to the connection after an answer that left the body unread.
"""
from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from api import request_limits
from api.curate.rendering import FLASH_COOKIE
from api.curate.session import COOKIE_NAME, encode_session, new_session, signing_key
from api.request_limits import (
    PAGE_DISCARD_FACTOR, SMALL_BODY_BYTES, UNAUTHENTICATED_DISCARD_BYTES, UPLOAD_FORM_OVERHEAD_BYTES,
)
from bench.serving import serve_in_thread
from core.config import Settings
from db.models import Tweet
from tests.conftest import TOKEN

# The guards and limits do not depend on the database: SQLite only.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"])

CHUNK = 16 * 1024
BIG = 1024 * 1024
FEW_KB = 4 * 1024
SMALL_UPLOAD_LIMIT = 10_000
BOUNDARY = "hostileboundary"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    pulled: int  # body bytes the app took from `receive` before it finished

    def json(self):
        return json.loads(self.body)

    def flash(self) -> dict:
        """The one-time message this answer sets for the next page."""
        cookie = self.headers["set-cookie"]
        assert cookie.startswith(f"{FLASH_COOKIE}="), cookie
        return json.loads(base64.urlsafe_b64decode(cookie.split(";")[0].split("=", 1)[1]))


def call(
    app, method: str, path: str, *, headers: dict[str, str], body: Iterator[bytes], query: str = "", stalls: bool = False
) -> Answer:
    """Run one request through the app; `body` is handed out chunk by chunk as the app asks.

    Without a content-length header the body is chunked, as HTTP/1.1 says (transfer-encoding).
    A client that `stalls` sends nothing more after `body` and stays connected.
    """
    if "content-length" not in headers:
        headers = {**headers, "transfer-encoding": "chunked"}
    pulled = 0
    chunks = iter(body)
    pending = next(chunks, None)
    messages = []

    async def receive():
        nonlocal pulled, pending
        if pending is None:
            if stalls:
                await asyncio.Event().wait()
            return {"type": "http.disconnect"}
        chunk, pending = pending, next(chunks, None)
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": stalls or pending is not None}

    async def send(message):
        messages.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "https", "server": ("testserver", 443), "client": ("127.0.0.1", 50000),
        "root_path": "", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in messages if m["type"] == "http.response.start")
    return Answer(
        status=start["status"],
        headers={name.decode(): value.decode() for name, value in start["headers"]},
        body=b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body"),
        pulled=pulled,
    )


def filler(size: int, prefix: bytes = b"") -> Iterator[bytes]:
    """`size` bytes (starting with `prefix`) in CHUNK pieces, made as they are asked for."""
    yield prefix
    left = size - len(prefix)
    while left > 0:
        yield b"x" * min(CHUNK, left)
        left -= CHUNK


def multipart_file(size: int, *, fields: dict[str, str] | None = None) -> Iterator[bytes]:
    """A multipart body with text `fields` and one file of `size` bytes of tweets, streamed."""
    head = "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in (fields or {}).items()
    )
    head += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="gen.txt"\r\n\r\n'
    yield head.encode()
    yield from filler(size)
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def many_files(count: int, size: int) -> Iterator[bytes]:
    part = b"y" * size
    for n in range(count):
        yield f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="p{n}.txt"\r\n\r\n'.encode()
        yield part + b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
JSON_BODY = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
ASKS_FOR_JSON = {"accept": "application/json"}  # the curation page's script; its plain forms do not


@pytest.fixture
def settings_values(settings_values) -> dict:
    settings_values.update(MAX_UPLOAD_BYTES=SMALL_UPLOAD_LIMIT, TWITTER_DRY_RUN=True)
    return settings_values


@pytest.fixture
def session_cookie(settings: Settings) -> dict[str, str]:
    return {"cookie": f"{COOKIE_NAME}={encode_session(new_session(), signing_key(settings))}"}


# ---- no credential: answered before the body -------------------------------------------

TOKEN_ROUTES = [
    ("POST", "/add_tweets/", JSON_BODY),
    ("POST", "/add_tweets", JSON_BODY),
    ("POST", "/add_tweets_file/", MULTIPART),
    ("PATCH", "/tweets/1", JSON_BODY),
    ("POST", "/tweet_curated/", JSON_BODY),
]
SESSION_ROUTES = [
    ("POST", "/curate/upload", MULTIPART),
    ("POST", "/curate/approve", FORM),
    ("POST", "/curate/tweets/1/edit", FORM),
    ("POST", "/curate/post-next", FORM),
]


@pytest.mark.parametrize("method, path, content_type", TOKEN_ROUTES)
@pytest.mark.parametrize("token, message", [(None, "missing x-token"), ("wrong-token", "wrong x-token")])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_token_routes_refuse_a_body_without_the_token_before_reading_it(app, method, path, content_type, token, message, declared):
    headers = dict(content_type)
    if token is not None:
        headers["x-token"] = token
    if declared:
        headers["content-length"] = str(BIG + 1)
    answer = call(app, method, path, headers=headers, body=filler(BIG))
    assert answer.status == 401
    assert message in answer.json()["detail"] and "SECRET_TOKEN" in answer.json()["detail"]
    assert answer.headers["www-authenticate"] == "x-token"
    assert answer.pulled <= FEW_KB


@pytest.mark.parametrize("method, path, content_type", SESSION_ROUTES)
@pytest.mark.parametrize("cookie", ["none", "forged"])
def test_curation_actions_refuse_a_body_without_a_session_before_reading_it(app, method, path, content_type, cookie):
    headers = {**content_type, "content-length": str(BIG + 1), "accept": "application/json"}
    if cookie == "forged":
        headers["cookie"] = f"{COOKIE_NAME}={encode_session(new_session(), b'not the key')}"
    answer = call(app, method, path, headers=headers, body=filler(BIG))
    assert answer.status == 401
    assert "sign in again" in answer.json()["detail"]
    assert answer.pulled <= FEW_KB


@pytest.mark.parametrize("method, path, content_type", SESSION_ROUTES)
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_curation_forms_without_a_session_go_to_sign_in_with_the_reason_before_reading_the_body(
    app, method, path, content_type, declared
):
    """A plain form post (no script) gets the page's answer, as the page's own GETs do: the sign-in form."""
    headers = {**content_type, "content-length": str(BIG + 1)} if declared else dict(content_type)
    answer = call(app, method, path, headers=headers, body=filler(BIG))
    assert answer.status == 303
    assert answer.headers["location"] == "/curate/sign-in"
    flash = answer.flash()
    assert flash["error"] and "sign in again" in flash["text"] and "Nothing was changed" in flash["text"]
    assert answer.headers["connection"] == "close"
    assert answer.pulled <= FEW_KB


def test_a_refusal_that_leaves_the_body_unread_closes_the_connection(app):
    answer = call(app, "POST", "/add_tweets/", headers={**JSON_BODY, "content-length": str(BIG)}, body=filler(BIG))
    assert answer.status == 401
    assert answer.headers["connection"] == "close"


def test_uvicorn_does_not_read_the_unread_body_as_a_next_request(app):
    """The body holds a well-formed request: after the 401, the server must close, never answer it."""
    smuggled = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with serve_in_thread(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(
                b"POST /add_tweets/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(smuggled)}\r\n\r\n".encode() + smuggled
            )
            received = b""
            while chunk := connection.recv(65536):  # until the server closes
                received += chunk
    assert received.startswith(b"HTTP/1.1 401 ")
    assert received.count(b"HTTP/1.1 ") == 1


# ---- authenticated but too large: 413 while streaming -----------------------------------

@pytest.mark.parametrize("path", ["/add_tweets_file/", "/curate/upload"])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_oversize_upload_is_413_before_the_rest_is_read(app, session_cookie, path, declared):
    headers = {**MULTIPART, "x-token": TOKEN} if path.startswith("/add") else {**MULTIPART, **session_cookie, **ASKS_FOR_JSON}
    if declared:
        headers["content-length"] = str(BIG + 200)
    answer = call(app, "POST", path, headers=headers, body=multipart_file(BIG, fields={"csrf_token": "any"}))
    assert answer.status == 413
    detail = answer.json()["detail"]
    assert "MAX_UPLOAD_BYTES" in detail and f"{SMALL_UPLOAD_LIMIT:,}" in detail and "split" in detail
    assert answer.headers["connection"] == "close"
    limit = SMALL_UPLOAD_LIMIT + UPLOAD_FORM_OVERHEAD_BYTES
    assert answer.pulled <= (0 if declared else limit + CHUNK)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_oversize_upload_from_the_pages_form_goes_back_to_the_page_with_the_reason(app, session_cookie, declared):
    """No script asked for JSON: the curator sees the review page again, with the limit and what to do."""
    headers = {**MULTIPART, **session_cookie}
    if declared:
        headers["content-length"] = str(BIG + 200)
    answer = call(app, "POST", "/curate/upload", headers=headers, body=multipart_file(BIG, fields={"csrf_token": "any"}))
    assert answer.status == 303
    assert answer.headers["location"] == "/curate"
    flash = answer.flash()
    assert flash["error"]
    assert f"{SMALL_UPLOAD_LIMIT:,} bytes (MAX_UPLOAD_BYTES)" in flash["text"] and "split the file" in flash["text"]
    assert answer.headers["connection"] == "close"
    limit = SMALL_UPLOAD_LIMIT + UPLOAD_FORM_OVERHEAD_BYTES
    assert answer.pulled <= (0 if declared else limit + CHUNK)


def test_an_upload_at_the_limit_still_reaches_the_route(app):
    """The form's own bytes do not count against MAX_UPLOAD_BYTES: a file of exactly the limit is parsed."""
    answer = call(
        app, "POST", "/add_tweets_file/", headers={**MULTIPART, "x-token": TOKEN},
        body=multipart_file(SMALL_UPLOAD_LIMIT),
    )
    assert answer.status == 422  # parsed and validated: one 10,000-character "tweet" is rejected
    assert "no valid tweet" in answer.json()["detail"]


@pytest.mark.parametrize("method, path, content_type", [("POST", "/add_tweets/", JSON_BODY), ("PATCH", "/tweets/1", JSON_BODY)])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_other_token_routes_take_a_small_body(app, method, path, content_type, declared):
    headers = {**content_type, "x-token": TOKEN}
    if declared:
        headers["content-length"] = str(BIG)
    answer = call(app, method, path, headers=headers, body=filler(BIG, b'{"tweet": "'))
    assert answer.status == 413
    assert f"{SMALL_BODY_BYTES:,}-byte" in answer.json()["detail"]
    assert answer.pulled <= (0 if declared else SMALL_BODY_BYTES + CHUNK)


def test_a_route_without_a_body_answers_without_reading_one_and_closes(app):
    answer = call(app, "POST", "/tweet_curated/", headers={**JSON_BODY, "x-token": TOKEN}, body=filler(BIG))
    assert answer.status == 404  # the queue is empty
    assert answer.pulled == 0
    assert answer.headers["connection"] == "close"


def test_a_body_read_to_the_end_keeps_the_connection(app):
    answer = call(app, "POST", "/add_tweets/", headers={**JSON_BODY, "x-token": TOKEN}, body=[b'{"tweet": ', b'"hello"}'])
    assert answer.status == 201
    assert "connection" not in answer.headers


@pytest.mark.parametrize("path, page", [("/curate/approve", "/curate"), ("/curate/sign-in", "/curate/sign-in")])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_curation_forms_and_the_sign_in_form_take_a_small_body(app, session_cookie, path, page, declared):
    headers = {**FORM, **session_cookie, **({"content-length": str(BIG)} if declared else {})}
    answer = call(app, "POST", path, headers=headers, body=filler(BIG, b"token="))
    assert answer.status == 303
    assert answer.headers["location"] == page
    assert f"{SMALL_BODY_BYTES:,}-byte" in answer.flash()["text"]
    assert answer.headers["connection"] == "close"
    assert answer.pulled <= (0 if declared else SMALL_BODY_BYTES + CHUNK)

    answer = call(app, "POST", path, headers={**headers, **ASKS_FOR_JSON}, body=filler(BIG, b"token="))
    assert answer.status == 413
    assert f"{SMALL_BODY_BYTES:,}-byte" in answer.json()["detail"]


# ---- multipart parts ----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/add_tweets_file/", "/curate/upload"])
@pytest.mark.parametrize("count, size", [(2, 10), (500, 10)])
def test_uploads_take_one_file(app, session_cookie, path, count, size):
    headers = {**MULTIPART, "x-token": TOKEN} if path.startswith("/add") else {**MULTIPART, **session_cookie}
    answer = call(app, "POST", path, headers=headers, body=many_files(count, size))
    assert answer.status == 400
    assert "Maximum number of files is 1" in answer.json()["detail"]
    assert answer.pulled <= 4 * (size + 100)  # stopped at the second file


@pytest.mark.parametrize("path", ["/add_tweets_file/", "/curate/upload"])
def test_uploads_take_a_few_short_fields(app, session_cookie, path):
    headers = {**MULTIPART, "x-token": TOKEN} if path.startswith("/add") else {**MULTIPART, **session_cookie}
    fields = {f"field{n}": "v" for n in range(50)}
    answer = call(app, "POST", path, headers=headers, body=multipart_file(10, fields=fields))
    assert answer.status == 400
    assert "Maximum number of fields" in answer.json()["detail"]


# ---- page routes: a refused body the browser is still sending is dropped, within bounds ----
# (A browser cut off while it sends shows "connection reset", never the page's answer.)

UPLOAD_LIMIT = SMALL_UPLOAD_LIMIT + UPLOAD_FORM_OVERHEAD_BYTES


def declared(body: list[bytes]) -> dict[str, str]:
    return {"content-length": str(sum(map(len, body)))}


def test_a_page_upload_refused_within_twice_the_limit_is_read_to_its_end_and_dropped(app, session_cookie, session_factory):
    body = list(multipart_file(PAGE_DISCARD_FACTOR * UPLOAD_LIMIT - 1024, fields={"csrf_token": "any"}))
    answer = call(app, "POST", "/curate/upload", headers={**MULTIPART, **session_cookie, **declared(body)}, body=body)
    assert answer.status == 303
    assert "split the file" in answer.flash()["text"]
    assert answer.pulled == sum(map(len, body))
    assert "connection" not in answer.headers  # read to the end: the connection can carry the next request
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Tweet)) == 0


def test_a_page_form_without_a_session_is_read_to_its_end_and_sent_to_sign_in(app):
    body = [b"ids=1&csrf_token=stale"]
    answer = call(app, "POST", "/curate/approve", headers={**FORM, **declared(body)}, body=body)
    assert answer.status == 303
    assert answer.headers["location"] == "/curate/sign-in"
    assert answer.pulled == len(body[0])
    assert "connection" not in answer.headers


def test_a_page_upload_without_a_session_is_not_read_beyond_a_few_kb(app):
    """Only a signed-in curator's refused upload is drained: anyone else makes the service read a few KB at most."""
    body = list(multipart_file(UNAUTHENTICATED_DISCARD_BYTES + 1, fields={"csrf_token": "any"}))
    answer = call(app, "POST", "/curate/upload", headers={**MULTIPART, **declared(body)}, body=body)
    assert answer.status == 303
    assert answer.headers["location"] == "/curate/sign-in"
    assert answer.pulled == 0
    assert answer.headers["connection"] == "close"


def test_a_page_upload_over_twice_the_limit_is_not_read(app, session_cookie):
    body = list(multipart_file(PAGE_DISCARD_FACTOR * UPLOAD_LIMIT, fields={"csrf_token": "any"}))
    answer = call(app, "POST", "/curate/upload", headers={**MULTIPART, **session_cookie, **declared(body)}, body=body)
    assert answer.status == 303
    assert answer.pulled == 0
    assert answer.headers["connection"] == "close"


def test_a_refused_page_body_that_stops_arriving_is_cut_off_after_the_wait(app, monkeypatch):
    monkeypatch.setattr(request_limits, "DISCARD_SECONDS", 0.01)
    first_part = b"ids=1&"
    answer = call(app, "POST", "/curate/approve", headers={**FORM, "content-length": "1000"}, body=[first_part], stalls=True)
    assert answer.status == 303
    assert answer.headers["location"] == "/curate/sign-in"
    assert answer.pulled == len(first_part)
    assert answer.headers["connection"] == "close"
