"""How the curation page answers: Jinja2 pages (autoescaping on: tweet text is untrusted) with
versioned static files, and the one-time message a plain form's 303 carries to the next page.
Jinja2 and the templates load on the first page rendered, so a service that only posts never
pays for them."""
from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from fastapi import Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.curate import actions
from api.curate.session import COOKIE_PATH, cookie_is_secure
from core.config import BotSettings
from db.models import DeliveryStatus, TweetStatus
from posting.destinations import NETWORK_NAMES, dry_run_variable, public_profile

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
STATIC_PATH = "/curate/static"
FLASH_COOKIE = "curate_flash"
# Pages carry CSRF tokens and tweet text: never cached, never framed, scripts only from us.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@cache
def static_version(name: str) -> str:
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    return f"{STATIC_PATH}/{name}?v={static_version(name)}"


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)


def format_time(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


@cache
def templates() -> Jinja2Templates:
    """The page templates, made on first use."""
    import jinja2
    from fastapi.templating import Jinja2Templates

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals.update(static_url=static_url)
    environment.filters.update(when=format_time)
    return Jinja2Templates(env=environment)


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def set_flash(response: Response, request: Request, text: str, *, error: bool = False) -> None:
    """A one-time message for the next page (a cookie, so no text from us ends up in a URL)."""
    value = base64.urlsafe_b64encode(json.dumps({"text": text, "error": error}).encode()).decode()
    response.set_cookie(
        FLASH_COOKIE, value, max_age=60, path=COOKIE_PATH,
        secure=cookie_is_secure(request), httponly=True, samesite="strict",
    )


def pop_flash(request: Request) -> dict | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        flash = json.loads(base64.urlsafe_b64decode(raw))
        return {"text": str(flash["text"]), "error": bool(flash["error"])}
    except (ValueError, KeyError, TypeError):
        return None


def bot_query(settings, bot: BotSettings) -> str:
    """What the page's URLs carry to stay on `bot`: `?bot=NAME` when there are several bots, else nothing
    (the one bot's page keeps today's URLs)."""
    return "?" + urlencode({"bot": bot.name}) if len(settings.bots) > 1 else ""


def dry_runs(bot: BotSettings) -> list[tuple[str, str]]:
    """(network's name, variable) of each destination the bot only records posts for."""
    return [(NETWORK_NAMES[network], dry_run_variable(bot, network)) for network in bot.destinations if bot.dry_run(network)]


def render(
    request: Request,
    name: str,
    *,
    settings,
    bot: BotSettings | None = None,
    session=None,
    curator=None,
    status_code: int = 200,
    flash: dict | None = None,
    **context,
) -> HTMLResponse:
    """A page about one bot (None: the default one) with the common frame: bot picker, counts,
    queue warning, CSRF token, one-time message."""
    bot = bot or settings.default_bot
    counts = actions.status_counts(session, bot.name) if session is not None else None
    had_flash = FLASH_COOKIE in request.cookies
    response = templates().TemplateResponse(
        request,
        name,
        {
            "account": bot.name,
            "bots": list(settings.bots) if len(settings.bots) > 1 else [],
            "bot_query": bot_query(settings, bot),
            "dry_runs": dry_runs(bot),
            "destinations": bot.destinations,
            "mastodon_max_characters": bot.MASTODON_MAX_CHARACTERS,
            "destination_names": [NETWORK_NAMES[network] for network in bot.destinations],
            "destinations_of": partial(actions.destination_states, bot=bot),
            "text_check_of": partial(actions.text_check, bot=bot),
            "text_counts_of": partial(actions.text_counts, bot=bot),
            "unsure_of": partial(actions.unsure_destinations, bot=bot),
            "profile_on": partial(public_profile, bot),
            "warning_threshold": settings.QUEUE_WARNING_THRESHOLD,
            "max_upload_bytes": settings.MAX_UPLOAD_BYTES,
            "counts": counts,
            "csrf_token": curator.csrf_token if curator else None,
            "flash": flash or pop_flash(request),
            "Status": TweetStatus,
            "Delivery": DeliveryStatus,
            **context,
        },
        status_code=status_code,
        headers=PAGE_HEADERS,
    )
    if had_flash:
        response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH, secure=cookie_is_secure(request), httponly=True, samesite="strict")
    return response


def to_sign_in() -> RedirectResponse:
    return RedirectResponse("/curate/sign-in", status.HTTP_303_SEE_OTHER, headers={"Cache-Control": "no-store"})


def answer(
    request: Request,
    message: str,
    *,
    back_to: str,
    status_code: int = 200,
    session=None,
    account: str | None = None,
    **data,
) -> Response:
    """JSON for the page's scripts (with the account's new counts when given); otherwise a 303 back
    to the page with `message` shown once."""
    failed = status_code >= 400
    if wants_json(request):
        body = {"detail" if failed else "message": message, **data}
        if session is not None and account is not None:
            counts = actions.status_counts(session, account)
            body["counts"] = {status_.value: n for status_, n in counts.items()}
        return JSONResponse(body, status_code=status_code, headers={"Cache-Control": "no-store"})
    response = RedirectResponse(back_to, status.HTTP_303_SEE_OTHER, headers={"Cache-Control": "no-store"})
    set_flash(response, request, message, error=failed)
    return response
