"""The FastAPI application factory: settings in, app out (tests build one per database).

At start the app holds only /health and the posting routes: Cloud Run starts one per scheduled
post, which needs nothing else. The /tweets routes and the curation page (with its static files)
are added before the first request that those do not serve, or when the OpenAPI schema is asked
for (`include_deferred_routes`).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from api.curate.session import SignInThrottle
from api.request_errors import register_error_answers
from api.request_limits import RequestBodyLimits
from api.routes import health, posting
from core.config import Settings
from core.logs import configure_logging
from db.engine import make_engine, make_session_factory
from posting.job import log_posting_configuration, prepare_claim_statements

log = logging.getLogger(__name__)

DESCRIPTION = """
The curated tweet store of a GPT-2 bot. Click **Authorize** and paste the service's
`SECRET_TOKEN` (sent as the `x-token` header), then upload a curated file with
`POST /add_tweets_file/` and list what was stored with `GET /tweets/`.
"""


class ServiceApp(FastAPI):
    """The service's FastAPI app: its OpenAPI schema includes the deferred routes."""

    def openapi(self) -> dict[str, Any]:
        include_deferred_routes(self)
        return super().openapi()


def include_routers(app: FastAPI, *routers: APIRouter) -> None:
    """Include `routers` in the app, and their routes in app.state.api_routes (read by the body limits)."""
    for router in routers:
        app.include_router(router)
        app.state.api_routes.extend(router.routes)


_including = threading.Lock()


def include_deferred_routes(app: FastAPI) -> None:
    """Add the routes not loaded at start (their modules are imported here, not with the app), once.
    They come after the start-up routes, so a posting request still prepares only its own."""
    with _including:
        if app.state.deferred_routes_included:
            return
        from api.curate import routes as curate
        from api.curate.rendering import STATIC_PATH, static_files
        from api.routes import tweets

        include_routers(app, tweets.router, curate.router)
        app.mount(STATIC_PATH, static_files(), name="curate-static")
        app.state.deferred_routes_included = True


class DeferredRoutes:
    """ASGI middleware: before the first request that none of `start_routes` serves, `include`
    adds the other routes, so that request and every later one are routed among them all (their
    imports, some tens of milliseconds, hold the event loop that once)."""

    def __init__(self, app: ASGIApp, *, start_routes: list[BaseRoute], include: Callable[[], None]):
        self.app = app
        self.start_routes = start_routes
        self.include: Callable[[], None] | None = include

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.include is not None and scope["type"] == "http" and not any(
            route.matches(scope)[0] is Match.FULL for route in self.start_routes
        ):
            self.include()
            self.include = None
        await self.app(scope, receive, send)


def prepare_routes(app: FastAPI) -> None:
    """Prepare the routes the app holds now: FastAPI prepares an included router's routes (their
    dependencies and parameter models) when a request is first matched against them."""
    nowhere = {"type": "http", "method": "GET", "path": "", "root_path": "", "headers": [], "query_string": b""}
    for route in app.router.routes:
        route.matches(nowhere)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Before the first request: the posting path's one-time costs, so the first post after a
    start (Cloud Run scales to zero) is as quick as the next ones."""
    prepare_routes(app)
    prepare_claim_statements(app.state.session_factory, app.state.settings)
    yield


def create_app(settings: Settings, *, engine: Engine | None = None, configure_logs: bool = True) -> FastAPI:
    """Build the app; `engine` overrides the one made from settings.database_url (tests)."""
    if configure_logs:
        configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    app = ServiceApp(
        title="GPT-2 tweet bot",
        description=DESCRIPTION,
        version="1.0.0",
        redirect_slashes=False,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine or make_engine(settings.database_url)
    app.state.session_factory = make_session_factory(app.state.engine)
    app.state.sign_in_throttle = SignInThrottle()
    app.state.deferred_routes_included = False

    # FastAPI prepares a router's routes (their dependencies and parameter models) when a request
    # first reaches it, trying routers in this order: posting comes right after health so that the
    # first post after a start (Cloud Scheduler's call) prepares only its own routes.
    app.state.api_routes = []
    include_routers(app, health.router, posting.router)
    # The limits read app.state.api_routes as it is when a request comes, so the deferred routes count
    # too; DeferredRoutes is added last, so it runs first: the limits then see the routes it added.
    app.add_middleware(RequestBodyLimits, settings=settings, routes=app.state.api_routes)
    app.add_middleware(DeferredRoutes, start_routes=list(app.router.routes), include=lambda: include_deferred_routes(app))
    log_posting_configuration(settings)
    register_error_answers(app)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the service log has the details"}, status_code=500)

    return app
