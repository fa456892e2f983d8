"""GET /health: the only endpoint without the token; says whether the database answers."""
from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from api.routes import SlashAgnosticRouter
from db.models import Tweet

router = SlashAgnosticRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/health", responses={503: {"description": "The database is down or not migrated."}})
def health(request: Request):
    try:
        with request.app.state.session_factory() as session:
            session.execute(select(Tweet.id).limit(1))
    except SQLAlchemyError as exc:
        log.warning("health check failed: %s", exc.__class__.__name__, exc_info=True)
        detail = f"database: {exc.__class__.__name__}"
        if "no such table" in str(exc) or "does not exist" in str(exc):
            detail = "database: the tweets table is missing; run `make migrate`"
        return JSONResponse({"status": "error", "detail": detail}, status_code=503)
    return {"status": "ok"}
