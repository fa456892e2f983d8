"""A fake Mastodon on loopback for tests and benches: real HTTP that Mastodon.py reaches at `base_url`.

It is FakeX's server (tests/fake_x.py: the thread, the recording of every request, canned answers
per route with `enqueue`, `route`, hanging and dropped answers) speaking Mastodon instead of X:
- `POST /api/v1/statuses` checks the Bearer token, counts the text as Mastodon does against
  `max_characters` (422 with Mastodon's error body), and honours `Idempotency-Key` like Mastodon:
  the same key within an hour returns the status it created, and creates nothing;
- `GET /api/v2/instance` (no token needed) gives `configuration.statuses.max_characters`;
- every answer carries Mastodon's X-RateLimit-Limit, -Remaining and -Reset (an ISO 8601 time).
Canned Mastodon answers: `status`, `rate_limited`, `validation_failed`, `unauthorized`,
`forbidden_scope`, `server_error`, `hang` (nothing created, the answer comes too late), `dropped`
(FakeX's), and `ThenAnswer` (the status is created, then the answer comes late or never).
"""
from __future__ import annotations

import dataclasses
import html
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs


from core.tweet_text import MASTODON_MAX_CHARACTERS, mastodon_length
from tests.fake_x import FakeResponse, FakeX, ReceivedRequest, Route

ACCESS_TOKEN = "fake-mastodon-access-token-3f9a1c"
USERNAME = "gpt2bot"
ACCOUNT_ID = "109000000000000001"
FIRST_STATUS_ID = 113_500_000_000_000_000  # Mastodon ids are 18-digit snowflakes
STATUSES_PATH = "/api/v1/statuses"
INSTANCE_PATH = "/api/v2/instance"
IDEMPOTENCY_SECONDS = 3600  # PostStatusService keeps a key in Redis for an hour
API_WINDOW_SECONDS = 300  # rack-attack's throttle_per_token_api: 300 requests per 5 minutes
STATUSES_WINDOW_SECONDS = 3 * 3600  # RateLimiter's statuses family: 300 statuses per 3 hours
RATE_LIMIT = 300
# FakeX adds X's rate-limit headers to every answer: None leaves them out.
X_HEADERS_LEFT_OUT = dict.fromkeys(("x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset"))


def window_reset(period: int, now: float | None = None) -> datetime:
    """The end of the current rate-limit window, as Mastodon computes it (now + period - now % period)."""
    now = time.time() if now is None else now
    return datetime.fromtimestamp(int(now) + period - int(now) % period, timezone.utc)


def iso_time(when: datetime) -> str:
    """Ruby's Time#iso8601(6) in UTC, the form of Mastodon's X-RateLimit-Reset."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class ThenAnswer(FakeResponse):
    """A canned answer that lets the route's handler act (the status is created) and then answers
    its answer after `delay` seconds, or drops the connection (`drop`)."""

    status: int = 0


class FakeMastodon(FakeX):
    """The fake Mastodon server; `start()` binds 127.0.0.1 on an ephemeral port."""

    def __init__(self, max_characters: int = MASTODON_MAX_CHARACTERS) -> None:
        super().__init__()
        self._routes.clear()  # FakeX's own routes are X's
        self.max_characters = max_characters
        self.rate_limit = {"limit": RATE_LIMIT, "remaining": RATE_LIMIT - 1}
        self.clock: Callable[[], float] = time.time  # what the idempotency keys' hour is measured on
        self.idempotency: dict[str, tuple[float, dict]] = {}  # key -> (when, the status it created)
        self._ids = itertools.count(FIRST_STATUS_ID)
        self.route("POST", STATUSES_PATH, self._create_status)
        for path in (INSTANCE_PATH, INSTANCE_PATH + "/"):  # Mastodon.py asks with the slash, Rails serves both
            self.route("GET", path, self._instance)

    def start(self) -> FakeMastodon:
        super().start()
        # FakeX's handler writes an answer's headers and body apart: with Nagle's algorithm the body
        # waits for the client's delayed ACK (40 ms on Linux) on a kept-alive connection.
        self._server.RequestHandlerClass.disable_nagle_algorithm = True
        return self

    def settings_values(self, timeout: float = 5.0) -> dict:
        """Settings overrides that point a Mastodon destination at this server with a valid token."""
        return {"MASTODON_API_BASE_URL": self.base_url, "MASTODON_ACCESS_TOKEN": ACCESS_TOKEN,
                "MASTODON_TIMEOUT_SECONDS": timeout}

    @property
    def post_attempts(self) -> list[ReceivedRequest]:
        return self.received("POST", STATUSES_PATH)

    # ---- Mastodon's answers ----
    @staticmethod
    def status(status_id: str, text: str, base_url: str = "https://mastodon.example") -> dict:
        """A Status entity as Mastodon returns it for a status just posted."""
        return {
            "id": status_id,
            "created_at": iso_time(datetime.now(timezone.utc)),
            "in_reply_to_id": None, "in_reply_to_account_id": None,
            "sensitive": False, "spoiler_text": "", "visibility": "public", "language": "en",
            "uri": f"{base_url}/users/{USERNAME}/statuses/{status_id}",
            "url": f"{base_url}/@{USERNAME}/{status_id}",
            "replies_count": 0, "reblogs_count": 0, "favourites_count": 0, "edited_at": None,
            "content": "<p>" + html.escape(text).replace("\n", "<br />") + "</p>",
            "reblog": None, "application": {"name": "gpt2-bot", "website": None},
            "account": {"id": ACCOUNT_ID, "username": USERNAME, "acct": USERNAME, "display_name": "GPT-2 bot",
                        "url": f"{base_url}/@{USERNAME}"},
            "media_attachments": [], "mentions": [], "tags": [], "emojis": [], "card": None, "poll": None,
        }

    @staticmethod
    def rate_limited(reset: datetime | str | None = None, *, statuses: bool = False) -> FakeResponse:
        """429 with Mastodon's headers: the per-token API window (300 per 5 minutes), or with
        `statuses` the account's status limit (300 per 3 hours). `reset` as a time, or a raw header."""
        if reset is None:
            reset = window_reset(STATUSES_WINDOW_SECONDS if statuses else API_WINDOW_SECONDS)
        headers = {
            "X-RateLimit-Limit": str(RATE_LIMIT), "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": reset if isinstance(reset, str) else iso_time(reset),
        }
        return FakeResponse(429, {"error": "Too many requests"}, headers)

    @staticmethod
    def validation_failed(max_characters: int = MASTODON_MAX_CHARACTERS) -> FakeResponse:
        return FakeResponse(422, {"error": f"Validation failed: Text character limit of {max_characters} exceeded"})

    @staticmethod
    def unauthorized() -> FakeResponse:
        return FakeResponse(401, {"error": "The access token is invalid"})

    @staticmethod
    def forbidden_scope() -> FakeResponse:
        """A token without write:statuses."""
        return FakeResponse(403, {"error": "This action is outside the authorized scopes"})

    @staticmethod
    def server_error(status: int = 503) -> FakeResponse:
        """Mastodon's own 500 is JSON; a 502, 503 or 504 comes from the proxy in front of it, as HTML."""
        if status == 500:
            return FakeResponse(500, {"error": "We're sorry, but something went wrong on our end."})
        return FakeResponse(status, f"<html><body><center><h1>{status}</h1></center><hr><center>nginx</center></body></html>")

    @staticmethod
    def hang(seconds: float = 60.0) -> FakeResponse:
        """Receive the request, create nothing, and answer too late (after the client gave up)."""
        return FakeResponse(503, {"error": "too late"}, delay=seconds)

    # ---- serving ----
    def _create_status(self, request: ReceivedRequest) -> FakeResponse:
        form = request.json if request.headers.get("content-type", "").startswith("application/json") else {
            name: values[0] for name, values in parse_qs(request.body.decode(), keep_blank_values=True).items()
        }
        text = str(form.get("status") or "")
        key = request.headers.get("idempotency-key")
        with self._lock:  # one request at a time: twins with one key create one status
            if key in self.idempotency and self.clock() - self.idempotency[key][0] < IDEMPOTENCY_SECONDS:
                return FakeResponse(200, self.idempotency[key][1])
            if not text.strip():
                return FakeResponse(422, {"error": "Validation failed: Text can't be blank"})
            if mastodon_length(text) > self.max_characters:
                return self.validation_failed(self.max_characters)
            status_id = str(next(self._ids))
            status = self.status(status_id, text, self.base_url)
            self.posted.append({"id": status_id, "text": text, "idempotency_key": key})
            if key:
                self.idempotency[key] = (self.clock(), status)
        return FakeResponse(200, status)

    def _instance(self, request: ReceivedRequest) -> FakeResponse:
        host = self.base_url.split("://", 1)[1]
        return FakeResponse(200, {
            "domain": host, "title": "Fake Mastodon", "version": "4.3.0", "source_url": "https://github.com/mastodon/mastodon",
            "configuration": {
                "urls": {"streaming": f"ws://{host}"},
                "statuses": {"max_characters": self.max_characters, "max_media_attachments": 4,
                             "characters_reserved_per_url": 23},
            },
        })

    def _answer(self, request: ReceivedRequest, route: Route | None, host: str) -> FakeResponse:
        if route is None:
            return FakeResponse(404, {"error": "Record not found"})
        response = super()._answer(request, route, host)
        if isinstance(response, ThenAnswer):
            return dataclasses.replace(route.handler(request), delay=response.delay, drop=response.drop)
        return response

    def _authenticate(self, request: ReceivedRequest, host: str) -> FakeResponse | None:
        """None when the request carries the access token (the instance's description needs none)."""
        if request.path.rstrip("/") == INSTANCE_PATH:
            return None
        if request.headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
            return self.unauthorized()
        request.auth = "bearer"
        return None

    def _send(self, http: BaseHTTPRequestHandler, response: FakeResponse) -> None:
        headers = {
            **X_HEADERS_LEFT_OUT,
            "X-RateLimit-Limit": str(self.rate_limit["limit"]),
            "X-RateLimit-Remaining": str(self.rate_limit["remaining"]),
            "X-RateLimit-Reset": iso_time(window_reset(API_WINDOW_SECONDS)),
            **response.headers,
        }
        super()._send(http, dataclasses.replace(response, headers=headers))
