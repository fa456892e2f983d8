"""The FastAPI application factory: settings in, app out (tests build one per database)."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from api.curate import routes as curate
from api.curate.rendering import STATIC_PATH as CURATE_STATIC_PATH, static_files as curate_static_files
from api.curate.session import SignInThrottle
from api.request_errors import register_error_answers
from api.request_limits import RequestBodyLimits
from api.routes import health, posting, tweets
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


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Before the first request: the posting path's one-time costs, so the first post after a
    start (Cloud Run scales to zero) is as quick as the next ones."""
    prepare_claim_statements(app.state.session_factory, app.state.settings)
    yield


def create_app(settings: Settings, *, engine: Engine | None = None, configure_logs: bool = True) -> FastAPI:
    """Build the app; `engine` overrides the one made from settings.database_url (tests)."""
    if configure_logs:
        configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    app = FastAPI(
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

    # FastAPI prepares a router's routes (their dependencies and parameter models) when a request
    # first reaches it, trying routers in this order: posting comes right after health so that the
    # first post after a start (Cloud Scheduler's call) prepares only its own routes.
    routers = (health.router, posting.router, tweets.router, curate.router)
    for router in routers:
        app.include_router(router)
    app.add_middleware(RequestBodyLimits, settings=settings, routes=[route for router in routers for route in router.routes])
    app.mount(CURATE_STATIC_PATH, curate_static_files(), name="curate-static")
    log_posting_configuration(settings)
    register_error_answers(app)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the service log has the details"}, status_code=500)

    return app
