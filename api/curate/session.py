"""The curation page's sign-in session: an HMAC-signed cookie carrying a per-session CSRF token.

The curator signs in once with the service token; the page then works from a cookie that is

- signed with a key derived from SECRET_TOKEN (rotating the token signs everyone out),
- HttpOnly (page scripts cannot read it), SameSite=Strict (other sites' forms and links do
  not carry it), scoped to /curate and valid for SESSION_MAX_AGE_SECONDS,
- Secure, except when the page is served over plain http on a loopback host (`make run-local`,
  tests): browsers drop Secure cookies set over http, and loopback traffic never leaves the
  machine. Behind Cloud Run the app sees http from the proxy, but the Host is the public one,
  so the cookie stays Secure.

Every POST must also send the session's CSRF token as the `csrf_token` form field; the page
embeds it in its forms. A missing or bad session answers 401, a missing or wrong CSRF token
403, both before anything is changed. The session is stateless: signing out deletes the cookie
in the browser, and a stolen cookie stays valid until it expires or SECRET_TOKEN changes.

Wrong tokens on the sign-in form are counted (`SignInThrottle`) per browser that has signed in
here before, else per client address: after SIGN_IN_MAX_FAILURES within SIGN_IN_WINDOW_SECONDS,
that browser's or address's sign-ins are refused with 429 until the oldest of those failures
leaves the window, whatever token it sends. A browser is known by a device cookie (`curate_device`,
signed like the session, valid DEVICE_MAX_AGE_SECONDS) set at each successful sign-in and kept at
sign-out, as OWASP's "device cookies" advise: behind a proxy every visitor has the proxy's
address, and someone guessing there locks out only browsers that never signed in, not the
curator's.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Form, HTTPException, Request, Response, status
from starlette.requests import HTTPConnection

from api.deps import SettingsDep
from core.config import Settings

COOKIE_NAME = "curate_session"
COOKIE_PATH = "/curate"
SESSION_MAX_AGE_SECONDS = 12 * 60 * 60
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
DEVICE_COOKIE_NAME = "curate_device"
DEVICE_MAX_AGE_SECONDS = 365 * 24 * 60 * 60
_KEY_LABEL = b"gpt2-tweet-bot curation session v1"
_DEVICE_KEY_LABEL = b"gpt2-tweet-bot curation device v1"
SIGN_IN_MAX_FAILURES = 5
SIGN_IN_WINDOW_SECONDS = 15 * 60

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurationSession:
    csrf_token: str
    issued_at: int

    def csrf_matches(self, given: str | None) -> bool:
        return given is not None and secrets.compare_digest(given.encode(), self.csrf_token.encode())


def signing_key(settings: Settings, label: bytes = _KEY_LABEL) -> bytes:
    """A key for one kind of cookie (session by default), derived from SECRET_TOKEN (never the token itself)."""
    return hmac.new(settings.SECRET_TOKEN.get_secret_value().encode(), label, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_session(now: float | None = None) -> CurationSession:
    return CurationSession(csrf_token=secrets.token_urlsafe(32), issued_at=int(now if now is not None else time.time()))


def _signed(data: dict, key: bytes) -> str:
    payload = _b64(json.dumps(data).encode())
    return f"{payload}.{_b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())}"


def _verified(value: str | None, key: bytes, max_age: int, now: float | None) -> dict | None:
    """The data of a `_signed` value issued (`iat`) at most `max_age` seconds ago, or None."""
    if not value or value.count(".") != 1:
        return None
    payload, signature = value.split(".")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not secrets.compare_digest(signature.encode(), expected.encode()):
        return None
    try:
        data = json.loads(_unb64(payload))
        age = (now if now is not None else time.time()) - int(data["iat"])
    except (ValueError, KeyError, TypeError):
        return None
    return data if 0 <= age <= max_age else None


def encode_session(session: CurationSession, key: bytes) -> str:
    return _signed({"csrf": session.csrf_token, "iat": session.issued_at}, key)


def decode_session(cookie: str | None, key: bytes, now: float | None = None) -> CurationSession | None:
    """The session in a cookie value, or None when it is missing, tampered with or expired."""
    data = _verified(cookie, key, SESSION_MAX_AGE_SECONDS, now)
    if data is None or not isinstance(data.get("csrf"), str):
        return None
    return CurationSession(csrf_token=data["csrf"], issued_at=int(data["iat"]))


class SignInThrottle:
    """Wrong sign-in tokens per source (a known browser, or a client address: `sign_in_attempt_source`),
    in this process's memory (thread-safe).

    A source with `max_failures` wrong tokens in the last `window_seconds` is locked out
    until the oldest of them is `window_seconds` old. The count is per process: with several
    instances an attacker gets `max_failures` guesses per window on each.
    """

    def __init__(
        self,
        *,
        max_failures: int = SIGN_IN_MAX_FAILURES,
        window_seconds: float = SIGN_IN_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _forget_old(self, now: float) -> None:
        for source in list(self._failures):
            times = self._failures[source]
            while times and times[0] <= now - self.window_seconds:
                times.popleft()
            if not times:
                del self._failures[source]

    def retry_after(self, source: str) -> int | None:
        """Seconds until `source` may try again, or None when it may try now."""
        with self._lock:
            now = self.clock()
            self._forget_old(now)
            times = self._failures.get(source)
            if times is None or len(times) < self.max_failures:
                return None
            return max(1, math.ceil(times[0] + self.window_seconds - now))

    def record_failure(self, source: str) -> None:
        with self._lock:
            now = self.clock()
            self._forget_old(now)
            times = self._failures.setdefault(source, deque(maxlen=self.max_failures))
            times.append(now)
            locked = len(times) == self.max_failures
        if locked:
            log.warning(
                "curation sign-in: %d wrong tokens from %s within %g minutes; its sign-ins are refused for a while",
                self.max_failures, source, self.window_seconds / 60,
            )

    def forget(self, source: str) -> None:
        """A right token: the source's earlier mistakes no longer count."""
        with self._lock:
            self._failures.pop(source, None)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def known_device(request: Request, settings: Settings) -> str | None:
    """The id in the browser's valid device cookie (it signed in here before), or None."""
    data = _verified(request.cookies.get(DEVICE_COOKIE_NAME), signing_key(settings, _DEVICE_KEY_LABEL),
                     DEVICE_MAX_AGE_SECONDS, None)
    return data["dev"] if data is not None and isinstance(data.get("dev"), str) else None


def sign_in_attempt_source(request: Request, settings: Settings) -> tuple[str, str]:
    """Whom wrong tokens count against: (throttle key, "browser" or "address" for messages)."""
    device = known_device(request, settings)
    if device is not None:
        return f"browser {device}", "browser"
    return client_address(request), "address"


def sign_in_throttle(request: Request) -> SignInThrottle:
    return request.app.state.sign_in_throttle


SignInThrottleDep = Annotated[SignInThrottle, Depends(sign_in_throttle)]


def cookie_is_secure(request: Request) -> bool:
    """Secure everywhere but plain http on a loopback host (see the module docstring)."""
    host = (request.url.hostname or "").lower()
    return not (request.url.scheme == "http" and host in LOOPBACK_HOSTS)


def set_session_cookie(response: Response, request: Request, settings: Settings, session: CurationSession) -> None:
    response.set_cookie(
        COOKIE_NAME,
        encode_session(session, signing_key(settings)),
        max_age=SESSION_MAX_AGE_SECONDS,
        path=COOKIE_PATH,
        secure=cookie_is_secure(request),
        httponly=True,
        samesite="strict",
    )


def set_device_cookie(response: Response, request: Request, settings: Settings) -> None:
    """(Re)issue the browser's device cookie after a right token, keeping its id when it has one."""
    device = known_device(request, settings) or secrets.token_urlsafe(16)
    response.set_cookie(
        DEVICE_COOKIE_NAME,
        _signed({"dev": device, "iat": int(time.time())}, signing_key(settings, _DEVICE_KEY_LABEL)),
        max_age=DEVICE_MAX_AGE_SECONDS,
        path=COOKIE_PATH,
        secure=cookie_is_secure(request),
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE_NAME, path=COOKIE_PATH, secure=cookie_is_secure(request), httponly=True, samesite="strict"
    )


def current_session(request: HTTPConnection, settings: SettingsDep) -> CurationSession | None:
    """The signed-in curator's session, or None (page GETs redirect to the sign-in form)."""
    return decode_session(request.cookies.get(COOKIE_NAME), signing_key(settings))


OptionalCuratorDep = Annotated[CurationSession | None, Depends(current_session)]


def not_signed_in() -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "not signed in, or the session expired: sign in again at /curate/sign-in",
    )


def require_session(session: OptionalCuratorDep) -> CurationSession:
    if session is None:
        raise not_signed_in()
    return session


def require_session_and_csrf(
    session: Annotated[CurationSession, Depends(require_session)],
    csrf_token: Annotated[str | None, Form()] = None,
) -> CurationSession:
    """Guard for every state-changing request: 401 without a session, 403 without its CSRF token."""
    if not session.csrf_matches(csrf_token):
        detail = "missing CSRF token" if csrf_token is None else "wrong CSRF token"
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{detail}: reload the curation page and try again (nothing was changed)",
        )
    return session


CuratorPostDep = Annotated[CurationSession, Depends(require_session_and_csrf)]
