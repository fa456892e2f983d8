"""A fake X API v2 on loopback for tests and benches: real HTTP that tweepy reaches via TWITTER_API_BASE_URL.

It checks authentication the way X does (an OAuth 1.0a header whose HMAC-SHA1 signature
verifies against the test credentials, or the bearer token), answers with X's status
codes, headers and bodies, and records every request so tests can count posts.

Behaviour is scriptable per test:
- `fake_x.enqueue("POST", "/2/tweets", FakeX.rate_limited(), FakeX.created())` queues
  canned answers for a route, used first (one per request) before the route's handler;
- `fake_x.route("GET", "/2/users/:id/tweets", handler)` adds or replaces a route; the
  handler gets a `ReceivedRequest` (with `path_params`) and returns a `FakeResponse`.
Built in: `POST /2/tweets`, which posts like X does (duplicate texts get X's 403), and the
read side for accounts given with `add_user`: `GET /2/users/by/username/:username` and
`GET /2/users/:id/tweets` (pages of `max_results` linked by `next_token`, `exclude`
honoured, only the newest 3,200 served, unknown accounts answered as X does).
A `FakeResponse` can also hang (`delay`, to trigger client timeouts) or drop the
connection without answering (`drop`).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from oauthlib.oauth1.rfc5849 import signature as oauth_signature
from oauthlib.oauth1.rfc5849 import utils as oauth_utils

# Test credentials: FakeX.settings_values() hands them to the service's Settings.
CONSUMER_KEY = "fake-consumer-key"
CONSUMER_SECRET = "fake-consumer-secret"
ACCESS_KEY = "123456-fake-access-key"
ACCESS_SECRET = "fake-access-secret"
BEARER_TOKEN = "fake-bearer-token"
OAUTH_REQUIRED = (
    "oauth_consumer_key", "oauth_token", "oauth_signature_method", "oauth_signature",
    "oauth_nonce", "oauth_timestamp", "oauth_version",
)
FIRST_TWEET_ID = 1_790_000_000_000_000_000  # X ids are 19-digit snowflakes
FIRST_USER_ID = 4_000_000_000
TIMELINE_CAP = 3200  # X serves only the newest 3,200 tweets of a timeline
DUPLICATE_DETAIL = "You are not allowed to create a Tweet with duplicate content."


@dataclass
class FakeResponse:
    status: int
    body: dict | list | str | None = None
    headers: dict[str, str | None] = field(default_factory=dict)  # None: leave out a default header
    delay: float = 0.0  # seconds to wait before answering (the client times out first)
    drop: bool = False  # close the connection without answering


@dataclass
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    query_string: str
    headers: dict[str, str]
    body: bytes
    auth: str | None = None  # "oauth1" (user context) or "bearer" (app only) once checked
    oauth: dict[str, str] = field(default_factory=dict)
    path_params: dict[str, str] = field(default_factory=dict)

    @property
    def json(self):
        return json.loads(self.body) if self.body else None


Handler = Callable[[ReceivedRequest], FakeResponse]


@dataclass
class Route:
    method: str
    pattern: str
    regex: re.Pattern
    handler: Handler
    user_auth_only: bool


def problem(status: int, title: str, detail: str, type_: str = "about:blank", **extra) -> FakeResponse:
    """X API v2's error body (RFC 7807 style)."""
    return FakeResponse(status, {"detail": detail, "type": type_, "title": title, "status": status, **extra})


class FakeX:
    """The fake X API server; `start()` binds 127.0.0.1 on an ephemeral port."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.posted: list[dict] = []  # {"id", "text"} of every tweet created, in order
        self.rate_limit = {"limit": 100, "remaining": 99}
        # The accounts that may post: access token -> its secret (one app, CONSUMER_KEY, for all of them).
        self.access_secrets: dict[str, str] = {ACCESS_KEY: ACCESS_SECRET}
        self._routes: list[Route] = []
        self._canned: dict[tuple[str, str], deque[FakeResponse]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._ids = itertools.count(FIRST_TWEET_ID)
        self._nonces: set[str] = set()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self.users: dict[str, dict] = {}  # lower-cased username -> X's user object
        self.timelines: dict[str, list[dict]] = {}  # user id -> X's tweet objects, newest first
        self._user_ids = itertools.count(FIRST_USER_ID)
        self.route("POST", "/2/tweets", self._create_tweet, user_auth_only=True)
        self.route("GET", "/2/users/by/username/:username", self._user_by_username)
        self.route("GET", "/2/users/:id/tweets", self._user_tweets)

    # ---- lifecycle ----
    def start(self) -> FakeX:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format, *args) -> None:  # noqa: A002 (stdlib's name)
                pass

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-x", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()  # releases hanging answers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def settings_values(self, timeout: float = 5.0) -> dict:
        """Settings overrides that point the service at this server with valid credentials."""
        return {
            "CONSUMER_KEY": CONSUMER_KEY,
            "CONSUMER_SECRET": CONSUMER_SECRET,
            "ACCESS_KEY": ACCESS_KEY,
            "ACCESS_SECRET": ACCESS_SECRET,
            "BEARER_TOKEN": BEARER_TOKEN,
            "TWITTER_API_BASE_URL": self.base_url,
            "TWITTER_TIMEOUT_SECONDS": timeout,
        }

    # ---- scripting ----
    def route(self, method: str, pattern: str, handler: Handler, *, user_auth_only: bool = False) -> None:
        """Serve `method pattern` with `handler`; `:name` segments become `path_params`.

        A route registered again replaces the earlier one; user_auth_only refuses bearer
        tokens the way X does on endpoints that act for a user.
        """
        regex = re.compile("^" + re.sub(r":(\w+)", r"(?P<\1>[^/]+)", pattern) + "$")
        with self._lock:
            self._routes = [r for r in self._routes if (r.method, r.pattern) != (method, pattern)]
            self._routes.append(Route(method, pattern, regex, handler, user_auth_only))

    def enqueue(self, method: str, pattern: str, *responses: FakeResponse) -> None:
        """Answer the next requests to a route with these, in order, then with its handler."""
        with self._lock:
            self._canned[(method, pattern)].extend(responses)

    def received(self, method: str | None = None, path: str | None = None) -> list[ReceivedRequest]:
        with self._lock:
            return [r for r in self.requests if method in (None, r.method) and path in (None, r.path)]

    @property
    def post_attempts(self) -> list[ReceivedRequest]:
        return self.received("POST", "/2/tweets")

    def add_user(self, username: str, tweets: list[dict] = ()) -> str:
        """Give the fake an account whose timeline holds `tweets` (newest first); returns its id."""
        user_id = str(next(self._user_ids))
        with self._lock:
            self.users[username.lower()] = {"id": user_id, "name": username.title(), "username": username}
            self.timelines[user_id] = list(tweets)
        return user_id

    @staticmethod
    def timeline_tweet(
        tweet_id: int, text: str, created_at: str = "2024-03-05T18:04:12.000Z", *,
        in_reply_to_user_id: str | None = None, retweet_of: str | None = None, note_text: str | None = None,
    ) -> dict:
        """A tweet as X's v2 API holds it (text HTML-escaped like X's); fields appear when asked for."""
        tweet = {"id": str(tweet_id), "text": text, "edit_history_tweet_ids": [str(tweet_id)], "created_at": created_at}
        if in_reply_to_user_id is not None:
            tweet["in_reply_to_user_id"] = in_reply_to_user_id
            tweet["referenced_tweets"] = [{"type": "replied_to", "id": str(tweet_id - 1)}]
        if retweet_of is not None:
            tweet["referenced_tweets"] = [{"type": "retweeted", "id": retweet_of}]
        if note_text is not None:
            tweet["note_tweet"] = {"text": note_text}
        return tweet

    # ---- X's answers ----
    @staticmethod
    def created(tweet_id: str | None = None, text: str = "") -> FakeResponse:
        """A 201 for POST /2/tweets without recording a post (use the handler for that)."""
        tweet_id = tweet_id or str(FIRST_TWEET_ID - 1)
        return FakeResponse(201, {"data": {"id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id]}})

    @staticmethod
    def duplicate_content() -> FakeResponse:
        return problem(403, "Forbidden", DUPLICATE_DETAIL)

    @staticmethod
    def bad_request(message: str = "Invalid 'text': Tweet text is too long.") -> FakeResponse:
        return FakeResponse(400, {
            "errors": [{"parameters": {"text": ["..."]}, "message": message}],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request",
        })

    @staticmethod
    def rate_limited(reset: int | None = None, *, daily: bool = False) -> FakeResponse:
        """429 with X's headers; `daily` exhausts the 24-hour user cap instead of the window."""
        reset = reset if reset is not None else int(time.time()) + 900
        headers = {"x-rate-limit-limit": "100", "x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)}
        if daily:
            headers.update({
                "x-rate-limit-remaining": "99",
                "x-rate-limit-reset": str(int(time.time()) + 900),
                "x-user-limit-24hour-limit": "17",
                "x-user-limit-24hour-remaining": "0",
                "x-user-limit-24hour-reset": str(reset),
            })
        response = problem(429, "Too Many Requests", "Too Many Requests")
        response.headers = headers
        return response

    @staticmethod
    def unauthorized() -> FakeResponse:
        return problem(401, "Unauthorized", "Unauthorized")

    @staticmethod
    def forbidden(detail: str = "You are not permitted to perform this action.") -> FakeResponse:
        return problem(403, "Forbidden", detail)

    @staticmethod
    def server_error(status: int = 503) -> FakeResponse:
        titles = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
        return problem(status, titles.get(status, "Server Error"), "Service Unavailable", "about:blank")

    @staticmethod
    def hang(seconds: float = 60.0) -> FakeResponse:
        """Receive the request, then answer too late (after 201 would have been sent)."""
        return FakeResponse(201, {"data": {"id": "0", "text": ""}}, delay=seconds)

    @staticmethod
    def dropped() -> FakeResponse:
        return FakeResponse(0, drop=True)

    @staticmethod
    def not_found_in_body(parameter: str, value: str) -> FakeResponse:
        """X's answer for an unknown account: 200 with the problem in `errors` (not a 404)."""
        return FakeResponse(200, {"errors": [{
            "value": value, "detail": f"Could not find user with {parameter}: [{value}].",
            "title": "Not Found Error", "resource_type": "user", "parameter": parameter, "resource_id": value,
            "type": "https://api.twitter.com/2/problems/resource-not-found",
        }]})

    @staticmethod
    def invalid_parameter(message: str) -> FakeResponse:
        return FakeResponse(400, {
            "errors": [{"parameters": {}, "message": message}],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request",
        })

    # ---- serving ----
    def _user_by_username(self, request: ReceivedRequest) -> FakeResponse:
        username = request.path_params["username"]
        with self._lock:
            user = self.users.get(username.lower())
        if user is None:
            return self.not_found_in_body("username", username)
        return FakeResponse(200, {"data": dict(user)})

    def _user_tweets(self, request: ReceivedRequest) -> FakeResponse:
        user_id = request.path_params["id"]
        with self._lock:
            timeline = self.timelines.get(user_id)
        if timeline is None:
            return self.not_found_in_body("id", user_id)
        max_results = request.query.get("max_results", ["10"])[0]
        if not max_results.isdigit() or not 5 <= int(max_results) <= 100:
            return self.invalid_parameter(f"The `max_results` query parameter value [{max_results}] is not between 5 and 100")
        excluded = set(",".join(request.query.get("exclude", [])).split(",")) - {""}
        if excluded - {"replies", "retweets"}:
            return self.invalid_parameter(f"The `exclude` query parameter value {sorted(excluded)} is not one of [replies, retweets]")
        token = request.query.get("pagination_token", ["0"])[0]
        offset = int(token, 16) if re.fullmatch(r"[0-9a-f]+", token) else -1
        if offset < 0:
            return self.invalid_parameter(f"The `pagination_token` query parameter value [{token}] is not valid")
        fields = {"id", "text", "edit_history_tweet_ids"} | set(",".join(request.query.get("tweet.fields", [])).split(","))
        served = [
            tweet for tweet in timeline[:TIMELINE_CAP]
            if not ("replies" in excluded and "in_reply_to_user_id" in tweet)
            and not ("retweets" in excluded and any(r["type"] == "retweeted" for r in tweet.get("referenced_tweets", [])))
        ]
        page = [{k: v for k, v in tweet.items() if k in fields} for tweet in served[offset:offset + int(max_results)]]
        meta: dict = {"result_count": len(page)}
        if page:
            meta.update(newest_id=page[0]["id"], oldest_id=page[-1]["id"])
        if offset + int(max_results) < len(served):
            meta["next_token"] = format(offset + int(max_results), "x")
        return FakeResponse(200, {"data": page, "meta": meta} if page else {"meta": meta})

    def _create_tweet(self, request: ReceivedRequest) -> FakeResponse:
        text = (request.json or {}).get("text")
        if not isinstance(text, str) or not text:
            return self.bad_request("Invalid Request: 'text' is required")
        with self._lock:
            if any(p["text"] == text for p in self.posted):
                return self.duplicate_content()
            tweet = {"id": str(next(self._ids)), "text": text}
            self.posted.append(tweet)
        return FakeResponse(201, {"data": {**tweet, "edit_history_tweet_ids": [tweet["id"]]}})

    def _serve(self, http: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(http.path)
        length = int(http.headers.get("Content-Length") or 0)
        request = ReceivedRequest(
            method=http.command,
            path=parts.path,
            query=parse_qs(parts.query),
            query_string=parts.query,
            headers={k.lower(): v for k, v in http.headers.items()},
            body=http.rfile.read(length) if length else b"",
        )
        with self._lock:
            self.requests.append(request)
            route = next((r for r in self._routes if r.method == request.method and r.regex.match(request.path)), None)
        response = self._answer(request, route, http.headers.get("Host", ""))
        if response.delay:
            self._stop.wait(response.delay)
        if response.drop:
            http.close_connection = True
            return
        self._send(http, response)

    def _answer(self, request: ReceivedRequest, route: Route | None, host: str) -> FakeResponse:
        if route is None:
            return problem(404, "Not Found Error", f"Could not find {request.method} {request.path}",
                           "https://api.twitter.com/2/problems/resource-not-found")
        auth_failure = self._authenticate(request, host)
        if auth_failure is not None:
            return auth_failure
        if route.user_auth_only and request.auth != "oauth1":
            return problem(
                403, "Unsupported Authentication",
                "Authenticating with OAuth 2.0 Application-Only is forbidden for this endpoint.  "
                "Supported authentication types are [OAuth 1.0a User Context, OAuth 2.0 User Context].",
                "https://api.twitter.com/2/problems/unsupported-authentication",
            )
        request.path_params = route.regex.match(request.path).groupdict()
        with self._lock:
            canned = self._canned[(route.method, route.pattern)]
            response = canned.popleft() if canned else None
        return response if response is not None else route.handler(request)

    def _authenticate(self, request: ReceivedRequest, host: str) -> FakeResponse | None:
        """None when the request carries a valid OAuth 1.0a signature or the bearer token."""
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            if header.removeprefix("Bearer ") != BEARER_TOKEN:
                return self.unauthorized()
            request.auth = "bearer"
            return None
        if not header.startswith("OAuth "):
            return self.unauthorized()
        try:
            params = {k: oauth_utils.unescape(v) for k, v in oauth_utils.parse_authorization_header(header)}
        except ValueError:
            return self.unauthorized()
        request.oauth = params
        well_formed = (
            all(params.get(name) for name in OAUTH_REQUIRED)
            and params["oauth_signature_method"] == "HMAC-SHA1"
            and params["oauth_version"] == "1.0"
            and params["oauth_timestamp"].isdigit()
            and abs(int(params["oauth_timestamp"]) - time.time()) < 300
        )
        if not well_formed or params["oauth_consumer_key"] != CONSUMER_KEY or params["oauth_token"] not in self.access_secrets:
            return self.unauthorized()
        collected = oauth_signature.collect_parameters(
            uri_query=request.query_string, headers={"Authorization": header}, exclude_oauth_signature=True
        )
        base = oauth_signature.signature_base_string(
            request.method,
            oauth_signature.base_string_uri(f"http://{host}{request.path}"),
            oauth_signature.normalize_parameters(collected),
        )
        key = f"{oauth_utils.escape(CONSUMER_SECRET)}&{oauth_utils.escape(self.access_secrets[params['oauth_token']])}"
        expected = base64.b64encode(hmac.new(key.encode(), base.encode(), hashlib.sha1).digest()).decode()
        with self._lock:
            replayed = params["oauth_nonce"] in self._nonces
            self._nonces.add(params["oauth_nonce"])
        if replayed or params["oauth_signature"] != expected:
            return self.unauthorized()
        request.auth = "oauth1"
        return None

    def _send(self, http: BaseHTTPRequestHandler, response: FakeResponse) -> None:
        if isinstance(response.body, (dict, list)):
            payload, content_type = json.dumps(response.body).encode(), "application/json; charset=utf-8"
        else:
            payload, content_type = (response.body or "").encode(), "text/plain; charset=utf-8"
        headers = {
            "x-rate-limit-limit": str(self.rate_limit["limit"]),
            "x-rate-limit-remaining": str(self.rate_limit["remaining"]),
            "x-rate-limit-reset": str(int(time.time()) + 900),
            **response.headers,
        }
        http.send_response(response.status)
        http.send_header("Content-Type", content_type)
        http.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            if value is not None:
                http.send_header(name, value)
        http.end_headers()
        http.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 resets connections under a storm of posts

    def handle_error(self, request, client_address) -> None:
        """A client that gave up (timeout tests) closes its socket mid-answer: expected, not news."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
