"""A fake Bluesky PDS on loopback for tests: real HTTP (XRPC) that atproto's Client reaches via its base_url.

It serves what posting needs the way bluesky-social/atproto's PDS does (packages/pds, read for
this): createSession (handle or DID and the app password; Bluesky's 30 per 5 minutes and 300 a
day, as 429 with its RateLimit-* headers), refreshSession (rotating the refresh token),
getSession, resolveHandle, createRecord (lexicon checks of app.bsky.feed.post: a TID record key,
300 graphemes and 3000 bytes of text) and getRecord. Tokens are JWTs whose `exp` atproto reads;
the fake keeps its own view of them, so a test can expire them on the server side only.

A createRecord on a record key the repo already holds gets what the real PDS answers: 500
{"error": "InternalServerError", "message": "Internal Server Error"} (the repo's MST refuses the
key with a plain Error, which the XRPC server turns into a 500 without details).

Scripting reuses tests/fake_x.py's machinery: `enqueue(method, path, *responses)` answers the next
requests to a route with canned FakeResponses (`rate_limited()`, `server_error()`,
`bad_credentials()`, `expired_token()`, `hang()`, `dropped()`), and `lands_then_hangs()` /
`lands_then_drops()` let the route act (the record lands) before answering too late or never.
"""
from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler

from atproto_client.models.string_formats import TID_RE

from core.tweet_text import BLUESKY_MAX_BYTES, BLUESKY_MAX_GRAPHEMES, grapheme_count
from tests.fake_x import FakeResponse, FakeX, ReceivedRequest, Route

HANDLE = "fakebot.bsky.social"
DID = "did:plc:fakebot2fakebot2fakebot2"
APP_PASSWORD = "abcd-efgh-ijkl-mnop"
POST = "app.bsky.feed.post"
CREATE_SESSION = "/xrpc/com.atproto.server.createSession"
REFRESH_SESSION = "/xrpc/com.atproto.server.refreshSession"
GET_SESSION = "/xrpc/com.atproto.server.getSession"
RESOLVE_HANDLE = "/xrpc/com.atproto.identity.resolveHandle"
CREATE_RECORD = "/xrpc/com.atproto.repo.createRecord"
GET_RECORD = "/xrpc/com.atproto.repo.getRecord"
# The PDS's limits on createSession per account (and IP): (window in seconds, calls).
CREATE_SESSION_LIMITS = ((300, 30), (86400, 300))
ACCESS_LIFETIME = 2 * 3600  # the PDS's access tokens last 2 hours
REFRESH_LIFETIME = 90 * 86400  # refresh tokens 90 days
# X's headers that FakeX adds to every answer: not Bluesky's.
X_DEFAULT_HEADERS = {"x-rate-limit-limit": None, "x-rate-limit-remaining": None, "x-rate-limit-reset": None}


def xrpc_error(status: int, error: str, message: str) -> FakeResponse:
    """An XRPC error answer: {"error": name, "message": text}."""
    return FakeResponse(status, {"error": error, "message": message})


@dataclass
class Lands(FakeResponse):
    """Not an answer: the route acts as usual (a record lands), then its answer comes `delay` late or is `drop`ped."""


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class FakeBluesky(FakeX):
    """The fake PDS; `start()` binds 127.0.0.1 on an ephemeral port. One account: HANDLE / DID / APP_PASSWORD."""

    def __init__(self) -> None:
        super().__init__()
        self._routes: list[Route] = []  # none of X's
        self.app_password = APP_PASSWORD
        self.handles = {HANDLE: DID}  # what resolveHandle knows, handle -> DID
        self.records: dict[str, dict] = {}  # record key -> {"uri", "cid", "value"}
        self.access_lifetime = ACCESS_LIFETIME  # what new tokens' `exp` says
        self.refresh_lifetime = REFRESH_LIFETIME
        self._access_tokens: dict[str, float] = {}  # token -> when it expires, as the server sees it
        self._refresh_tokens: dict[str, float] = {}
        self._revoked: set[str] = set()
        self._create_session_times: list[float] = []
        self._state = threading.Lock()
        self.route("POST", CREATE_SESSION, self._create_session)
        self.route("POST", REFRESH_SESSION, self._refresh_session)
        self.route("GET", GET_SESSION, self._get_session)
        self.route("GET", RESOLVE_HANDLE, self._resolve_handle)
        self.route("POST", CREATE_RECORD, self._create_record)
        self.route("GET", GET_RECORD, self._get_record)

    # ---- what tests look at ----
    @property
    def create_session_calls(self) -> int:
        return len(self.received("POST", CREATE_SESSION))

    @property
    def create_record_calls(self) -> int:
        return len(self.received("POST", CREATE_RECORD))

    def issued_tokens(self) -> set[str]:
        with self._state:
            return set(self._access_tokens) | set(self._refresh_tokens) | self._revoked

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired for the server (their `exp` still says otherwise)."""
        with self._state:
            self._access_tokens = dict.fromkeys(self._access_tokens, 0.0)

    def expire_refresh_tokens(self) -> None:
        with self._state:
            self._refresh_tokens = dict.fromkeys(self._refresh_tokens, 0.0)

    def forget_sessions(self) -> None:
        """The server no longer knows any token issued so far (a reset, or revoked app password sessions)."""
        with self._state:
            self._access_tokens, self._refresh_tokens = {}, {}

    # ---- canned answers ----
    @staticmethod
    def rate_limited(reset: int | None = None, *, limit: int = 5000, window: int = 3600) -> FakeResponse:
        """429 with Bluesky's headers; the default is the repo-write limit (5000 points an hour)."""
        reset = reset if reset is not None else int(time.time()) + window
        response = xrpc_error(429, "RateLimitExceeded", "Rate Limit Exceeded")
        response.headers = {
            "ratelimit-limit": str(limit), "ratelimit-remaining": "0",
            "ratelimit-reset": str(reset), "ratelimit-policy": f"{limit};w={window}",
        }
        return response

    @staticmethod
    def server_error(status: int = 500) -> FakeResponse:
        names = {500: "InternalServerError", 502: "UpstreamFailure", 503: "NotEnoughResources"}
        messages = {500: "Internal Server Error", 502: "Upstream Failure", 503: "Not Enough Resources"}
        return xrpc_error(status, names.get(status, "InternalServerError"), messages.get(status, "Internal Server Error"))

    @staticmethod
    def bad_credentials() -> FakeResponse:
        return xrpc_error(401, "AuthenticationRequired", "Invalid identifier or password")

    @staticmethod
    def expired_token() -> FakeResponse:
        return xrpc_error(400, "ExpiredToken", "Token has expired")

    @staticmethod
    def hang(seconds: float = 60.0) -> FakeResponse:
        """Receive the request and answer too late, without acting."""
        return FakeResponse(200, {}, delay=seconds)

    @staticmethod
    def lands_then_hangs(seconds: float = 60.0) -> Lands:
        return Lands(0, delay=seconds)

    @staticmethod
    def lands_then_drops() -> Lands:
        return Lands(0, drop=True)

    # ---- serving ----
    def _answer(self, request: ReceivedRequest, route: Route | None, host: str) -> FakeResponse:
        if route is None:
            return xrpc_error(501, "MethodNotImplemented", "Method Not Implemented")
        request.path_params = route.regex.match(request.path).groupdict()
        with self._lock:
            canned = self._canned[(route.method, route.pattern)]
            response = canned.popleft() if canned else None
        if response is None:
            return route.handler(request)
        if isinstance(response, Lands):
            return replace(route.handler(request), delay=response.delay, drop=response.drop)
        return response

    def _serve(self, http: BaseHTTPRequestHandler) -> None:
        # The answer goes out in two writes (headers, body): without NODELAY the second waits for
        # the client's delayed ACK, 40 ms per request.
        http.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super()._serve(http)

    def _send(self, http: BaseHTTPRequestHandler, response: FakeResponse) -> None:
        super()._send(http, replace(response, headers={**X_DEFAULT_HEADERS, **response.headers}))

    def _mint(self, scope: str, lifetime: float) -> str:
        now = int(time.time())
        payload = {"scope": scope, "sub": DID, "aud": "did:web:fake.pds.test", "iat": now, "exp": now + int(lifetime),
                   "jti": secrets.token_hex(8)}
        return f"{_b64({'typ': 'at+jwt', 'alg': 'ES256K'})}.{_b64(payload)}.{secrets.token_urlsafe(32)}"

    def _new_session(self) -> FakeResponse:
        access, refresh = self._mint("com.atproto.appPass", self.access_lifetime), self._mint("com.atproto.refresh", self.refresh_lifetime)
        with self._state:
            self._access_tokens[access] = time.time() + self.access_lifetime
            self._refresh_tokens[refresh] = time.time() + self.refresh_lifetime
        return FakeResponse(200, {
            "accessJwt": access, "refreshJwt": refresh, "handle": HANDLE, "did": DID, "active": True,
            "didDoc": {
                "@context": ["https://www.w3.org/ns/did/v1"], "id": DID, "alsoKnownAs": [f"at://{HANDLE}"],
                "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": self.base_url}],
            },
        })

    def _bearer(self, request: ReceivedRequest) -> str | None:
        header = request.headers.get("authorization", "")
        return header.removeprefix("Bearer ") if header.startswith("Bearer ") else None

    def _check_access(self, request: ReceivedRequest) -> FakeResponse | None:
        """None when the request carries a live access token, else the PDS's refusal."""
        token = self._bearer(request)
        if token is None:
            return xrpc_error(401, "AuthMissing", "Authentication Required")
        with self._state:
            if token in self._refresh_tokens:
                return xrpc_error(400, "InvalidToken", "Bad token scope")
            expires = self._access_tokens.get(token)
        if expires is None:
            return xrpc_error(400, "InvalidToken", "Token could not be verified")
        if expires <= time.time():
            return xrpc_error(400, "ExpiredToken", "Token has expired")
        return None

    def _create_session(self, request: ReceivedRequest) -> FakeResponse:
        now = time.time()
        with self._state:
            self._create_session_times.append(now)
            for window, limit in CREATE_SESSION_LIMITS:
                recent = [t for t in self._create_session_times if t > now - window]
                if len(recent) > limit:
                    return self.rate_limited(int(min(recent) + window), limit=limit, window=window)
        body = request.json or {}
        identifier = str(body.get("identifier", "")).lower()
        if identifier not in (HANDLE, DID) or body.get("password") != self.app_password:
            return self.bad_credentials()
        return self._new_session()

    def _refresh_session(self, request: ReceivedRequest) -> FakeResponse:
        token = self._bearer(request)
        if token is None:
            return xrpc_error(401, "AuthMissing", "Authentication Required")
        with self._state:
            if token in self._revoked:
                return xrpc_error(400, "ExpiredToken", "Token has been revoked")
            expires = self._refresh_tokens.get(token)
            if expires is not None and expires > time.time():
                del self._refresh_tokens[token]
                self._revoked.add(token)
        if expires is None:
            return xrpc_error(400, "InvalidToken", "Token could not be verified")
        if expires <= time.time():
            return xrpc_error(400, "ExpiredToken", "Token has expired")
        return self._new_session()

    def _get_session(self, request: ReceivedRequest) -> FakeResponse:
        return self._check_access(request) or FakeResponse(200, {"handle": HANDLE, "did": DID, "active": True})

    def _resolve_handle(self, request: ReceivedRequest) -> FakeResponse:
        handle = request.query.get("handle", [""])[0].lower()
        did = self.handles.get(handle)
        if did is None:
            return xrpc_error(400, "InvalidRequest", "Unable to resolve handle")
        return FakeResponse(200, {"did": did})

    def _create_record(self, request: ReceivedRequest) -> FakeResponse:
        refusal = self._check_access(request)
        if refusal is not None:
            return refusal
        body = request.json or {}
        repo, collection, rkey, record = (body.get(k) for k in ("repo", "collection", "rkey", "record"))
        if repo not in (DID, HANDLE):
            return xrpc_error(400, "InvalidRequest", f"Could not find repo: {repo}")
        if not isinstance(record, dict) or record.get("$type") != collection:
            return xrpc_error(400, "InvalidRequest", "Invalid $type: must be a lex:" + str(collection))
        if collection == POST:
            if not isinstance(rkey, str) or not TID_RE.match(rkey):
                return xrpc_error(400, "InvalidRequest", f"Invalid record key for {POST}: Invalid TID")
            problem = self._post_problem(record)
            if problem is not None:
                return xrpc_error(400, "InvalidRequest", f"Invalid {POST} record: {problem}")
        uri = f"at://{DID}/{collection}/{rkey}"
        cid = "bafyrei" + base64.b32encode(secrets.token_bytes(32)).decode().lower().rstrip("=")
        with self._state:
            if rkey in self.records:
                return xrpc_error(500, "InternalServerError", "Internal Server Error")
            self.records[rkey] = {"uri": uri, "cid": cid, "value": record}
        rev = "3" + base64.b32encode(secrets.token_bytes(8)).decode().lower()[:12]
        return FakeResponse(200, {"uri": uri, "cid": cid, "commit": {"cid": cid, "rev": rev}, "validationStatus": "valid"})

    @staticmethod
    def _post_problem(record: dict) -> str | None:
        """What app.bsky.feed.post's lexicon says is wrong with `record` (the PDS's wording), None when valid."""
        text = record.get("text")
        if not isinstance(text, str):
            return "Expected string value type (got undefined) at $.record.text"
        size = len(text.encode())
        if size > BLUESKY_MAX_BYTES:
            return f"string too big (maximum {BLUESKY_MAX_BYTES}, got {size}) at $.record.text"
        graphemes = grapheme_count(text)
        if graphemes > BLUESKY_MAX_GRAPHEMES:
            return f"grapheme too big (maximum {BLUESKY_MAX_GRAPHEMES}, got {graphemes}) at $.record.text"
        if not isinstance(record.get("createdAt"), str):
            return "Expected string value type (got undefined) at $.record.createdAt"
        return None

    def _get_record(self, request: ReceivedRequest) -> FakeResponse:
        rkey = request.query.get("rkey", [""])[0]
        collection = request.query.get("collection", [""])[0]
        with self._state:
            stored = self.records.get(rkey) if collection == POST else None
        if stored is None:
            return xrpc_error(400, "RecordNotFound", f"Could not locate record: at://{DID}/{collection}/{rkey}")
        return FakeResponse(200, stored)
