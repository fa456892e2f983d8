"""An APIRouter whose paths answer with and without the trailing slash (no redirects)."""
from __future__ import annotations

from fastapi import APIRouter


class SlashAgnosticRouter(APIRouter):
    """Registers `/path/` and `/path` for every route; only the written form is documented.

    Scheduler jobs and scripts from the original project call `/tweet_currated/` with the
    slash and people type it without; a 307 redirect would drop POST bodies in some clients.
    """

    def add_api_route(self, path: str, endpoint, **kwargs) -> None:  # type: ignore[override]
        super().add_api_route(path, endpoint, **kwargs)
        twin = path[:-1] if path.endswith("/") else f"{path}/"
        if twin and twin != "/" and path != "/":
            kwargs = {**kwargs, "include_in_schema": False, "operation_id": None}
            super().add_api_route(twin, endpoint, **kwargs)
