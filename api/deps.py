"""Request dependencies: the database session, the settings and the x-token guard."""
from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from core.config import Settings

token_header = APIKeyHeader(
    name="x-token",
    auto_error=False,
    description="The service's SECRET_TOKEN.",
)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    """One session per request; committed by the route's logic, rolled back on error."""
    with request.app.state.session_factory() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_db)]


def token_matches(given: str | None, settings: Settings) -> bool:
    """Constant-time comparison with SECRET_TOKEN."""
    expected = settings.SECRET_TOKEN.get_secret_value().encode()
    return given is not None and secrets.compare_digest(given.encode(), expected)


def token_refusal(x_token: str | None, settings: Settings) -> HTTPException | None:
    """The 401 for a missing or wrong x-token, or None when it matches."""
    if token_matches(x_token, settings):
        return None
    detail = "missing x-token header" if x_token is None else "wrong x-token"
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=f"{detail}: send the service's SECRET_TOKEN in the x-token header",
        headers={"WWW-Authenticate": "x-token"},
    )


def require_token(settings: SettingsDep, x_token: str | None = Security(token_header)) -> None:
    if (refusal := token_refusal(x_token, settings)) is not None:
        raise refusal
