"""Request bodies are bounded before FastAPI reads them: a route's credential is checked first, then its size.

FastAPI reads and parses a body before it runs a route's dependencies, so the x-token and
session guards alone would let anyone make the service buffer or spool any amount of data
before its 401. This pure ASGI middleware answers first: it finds the route, runs the
guard the route declares (`require_token`, `require_session`) on the headers alone, refuses
a declared Content-Length over the route's limit, and counts the bytes of a chunked (or
lying) body as the app reads them, stopping at the limit. Answers that leave a body unread
close the connection, so its rest is never read as a next request.

Refusals are answered as FastAPI answers an HTTPException (JSON), except on the routes of a
server-rendered page (`PageRoute`): there the page's own `early_answer` renders them, so a
plain form post gets what the page answers itself (a redirect with a message), not JSON.
A browser cut off while it still sends a body shows "connection reset" instead of any answer,
so a page route's refused body is first read and dropped (never parsed or kept) when its
declared length is within PAGE_DISCARD_FACTOR times the route's limit (for a signed-in curator's
upload over the limit) or within UNAUTHENTICATED_DISCARD_BYTES (a form sent after the session
ended: whoever is not signed in makes the service read no more than that), and it arrives within
DISCARD_SECONDS; a larger, undeclared or slower one is cut off as on the other routes.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

from fastapi import HTTPException, params, status
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.curate.session import current_session, not_signed_in, require_session
from api.deps import require_token, token_refusal
from core.config import Settings

# JSON edits, the curation page's forms and the sign-in form: a bulk approval of a full
# review page is a few KB.
SMALL_BODY_BYTES = 64 * 1024
# An upload's multipart framing and its few text fields, on top of MAX_UPLOAD_BYTES.
UPLOAD_FORM_OVERHEAD_BYTES = 16 * 1024
# Upload routes take one file and a few short fields (the curation page's CSRF token).
UPLOAD_FORM_LIMITS = {"max_files": 1, "max_fields": 4, "max_part_size": 4 * 1024}

# See the module docstring: how much of a refused body a page route reads and drops, and how long it waits.
PAGE_DISCARD_FACTOR = 2
UNAUTHENTICATED_DISCARD_BYTES = 4 * 1024
DISCARD_SECONDS = 30.0

PreBodyCheck = Callable[[HTTPConnection, Settings], HTTPException | None]
# Renders a refusal made before the route runs; the request's body must not be read.
EarlyAnswer = Callable[[Request, HTTPException], Response]


def _token_check(connection: HTTPConnection, settings: Settings) -> HTTPException | None:
    return token_refusal(connection.headers.get("x-token"), settings)


def _session_check(connection: HTTPConnection, settings: Settings) -> HTTPException | None:
    return not_signed_in() if current_session(connection, settings) is None else None


# A route guarded by the dependency on the left is checked, before its body, by the function on the right.
PRE_BODY_CHECKS: dict[Callable, PreBodyCheck] = {require_token: _token_check, require_session: _session_check}


def dependency_calls(dependant: Dependant) -> Iterator[Callable]:
    for sub_dependant in dependant.dependencies:
        if sub_dependant.call is not None:
            yield sub_dependant.call
        yield from dependency_calls(sub_dependant)


def json_answer(request: Request, refusal: HTTPException) -> Response:
    """The answer FastAPI gives for an HTTPException."""
    return JSONResponse({"detail": refusal.detail}, status_code=refusal.status_code, headers=refusal.headers)


class PageRoute(APIRoute):
    """A route of a server-rendered page (a router's `route_class`): the refusals made here for it
    are rendered by its `early_answer`, as the page answers the same situations itself."""

    early_answer: ClassVar[EarlyAnswer]


def takes_a_file(route: APIRoute) -> bool:
    return any(isinstance(field.field_info, params.File) for field in route.dependant.body_params)


@dataclass(frozen=True)
class BodyRule:
    """What a route needs before its body (checks), how large the body may be, and how it answers a refusal."""

    checks: tuple[PreBodyCheck, ...]
    max_bytes: int
    what_to_do: str
    early_answer: EarlyAnswer = json_answer
    discard_bytes: int = 0  # a refused body declared up to this size is read and dropped before the answer

    def too_large(self) -> HTTPException:
        return HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"request body is over this route's {self.max_bytes:,}-byte limit: {self.what_to_do}",
        )

    async def discard_body(self, receive: Receive, length: int | None, *, authenticated: bool) -> bool:
        """Read and drop a refused body the client is still sending, if it is declared and small
        enough to wait for; True when it was read to its end."""
        budget = self.discard_bytes if authenticated else min(self.discard_bytes, UNAUTHENTICATED_DISCARD_BYTES)
        if length is None or length > budget:
            return False
        received = 0
        try:
            async with asyncio.timeout(DISCARD_SECONDS):
                while (message := await receive())["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > budget:
                        return False
                    if not message.get("more_body", False):
                        return True
        except TimeoutError:
            pass
        return False

    def answer(self, scope: Scope, refusal: HTTPException, *, close: bool) -> Response:
        """The route's answer to `refusal`, closing the connection when a body is left unread."""
        response = self.early_answer(Request(scope), refusal)
        if close:
            response.headers["Connection"] = "close"
        return response


# Paths no API route matches (static files, 404s, 405s) take no body worth reading.
UNMATCHED = BodyRule((), SMALL_BODY_BYTES, "send a smaller body")


def body_rule(route: BaseRoute, settings: Settings) -> BodyRule:
    """The rule for a route, read from its own dependencies and parameters."""
    if not isinstance(route, APIRoute):
        return UNMATCHED
    calls = set(dependency_calls(route.dependant))
    checks = tuple(check for guard, check in PRE_BODY_CHECKS.items() if guard in calls)
    if takes_a_file(route):
        max_bytes = settings.MAX_UPLOAD_BYTES + UPLOAD_FORM_OVERHEAD_BYTES
        what_to_do = f"files may hold up to {settings.MAX_UPLOAD_BYTES:,} bytes (MAX_UPLOAD_BYTES): split the file and upload the parts"
    else:
        max_bytes = SMALL_BODY_BYTES
        what_to_do = "one tweet, or a page of ids, fits well within it; many tweets go in a file to POST /add_tweets_file/"
    if isinstance(route, PageRoute):
        return BodyRule(checks, max_bytes, what_to_do, route.early_answer, PAGE_DISCARD_FACTOR * max_bytes)
    return BodyRule(checks, max_bytes, what_to_do)


def declared_length(connection: HTTPConnection) -> int | None:
    try:
        return int(connection.headers["content-length"])
    except (KeyError, ValueError):
        return None


def has_body(connection: HTTPConnection) -> bool:
    return bool(declared_length(connection)) or "transfer-encoding" in connection.headers


class RequestBodyLimits:
    """ASGI middleware: each route's guard before its body, and its body limit while the body streams."""

    def __init__(self, app: ASGIApp, *, settings: Settings, routes: Sequence[BaseRoute]):
        """`routes`: a list that may grow after start (api/app.py adds routes on the first request
        that needs them): the rules follow it."""
        self.app = app
        self.settings = settings
        self.routes = routes
        self.rules: list[tuple[BaseRoute, BodyRule]] = []

    def rule_for(self, scope: Scope) -> BodyRule:
        """The rule of the route the router will run (the first full match), as Starlette matches."""
        if len(self.rules) != len(self.routes):
            self.rules = [(route, body_rule(route, self.settings)) for route in self.routes]
        for route, rule in self.rules:
            if route.matches(scope)[0] is Match.FULL:
                return rule
        return UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.rule_for(scope)
        connection = HTTPConnection(scope)
        refusals = (check(connection, self.settings) for check in rule.checks)
        refusal = next((found for found in refusals if found is not None), None)
        authenticated = refusal is None
        length = declared_length(connection)
        if refusal is None and length is not None and length > rule.max_bytes:
            refusal = rule.too_large()
        if refusal is not None:
            unread = has_body(connection) and not await rule.discard_body(receive, length, authenticated=authenticated)
            await rule.answer(scope, refusal, close=unread)(scope, receive, send)
            return
        await BodyStream(rule, expecting=has_body(connection)).run(self.app, scope, receive, send)


class BodyStream:
    """One request's body as the app reads it: counted against the rule, and whether it was read to the end."""

    def __init__(self, rule: BodyRule, *, expecting: bool):
        self.rule = rule
        self.received = 0
        self.finished = not expecting
        self.started = False
        # Over the limit before the app began its answer: the rule answers instead of the app.
        self.refused = False

    async def run(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_within_limit() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.rule.max_bytes:
                    self.refused = not self.started
                    raise self.rule.too_large()  # stops the app's reading; FastAPI answers it like any HTTPException
                self.finished = not message.get("more_body", False)
            return message

        async def send_closing_if_unread(message: Message) -> None:
            """An answer before the end of the body closes the connection: its rest is never read."""
            if self.refused:
                return  # the app's JSON for the refusal: the rule's own answer follows
            if message["type"] == "http.response.start":
                self.started = True
                if not self.finished:
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await app(scope, receive_within_limit, send_closing_if_unread)
        if self.refused:
            await self.rule.answer(scope, self.rule.too_large(), close=True)(scope, receive, send)
