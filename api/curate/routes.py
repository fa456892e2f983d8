"""The curation page at /curate: sign in, upload, review, queue, history and "post next now".

Thin HTTP shell over api.curate.actions, posting.job and the shared upload logic. Pages are
rendered server-side (api.curate.rendering); every form works without JavaScript (POST, then a
303 back to the page with a one-time message), and api/curate/static/curate.js upgrades the
review actions to in-place requests that ask for JSON.
"""
from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, File, Form, HTTPException, Request, UploadFile, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.curate import actions
from api.curate.counter_rule import counter_rule_script
from api.curate.rendering import answer, bot_query, render, set_flash, to_sign_in
from api.curate.session import (
    CuratorPostDep,
    OptionalCuratorDep,
    SignInThrottleDep,
    clear_session_cookie,
    new_session,
    set_device_cookie,
    set_session_cookie,
    sign_in_attempt_source,
)
from api.deps import SessionDep, SettingsDep, token_matches
from api.request_errors import STORE_ERROR_STATUS, store_error_status
from api.request_limits import UPLOAD_FORM_LIMITS, PageRoute
from api.routes import SlashAgnosticRouter
from api.routes.tweets import upload_result
from api.schemas import IdempotencyKeyText, TweetIdPath, TweetIdValue
from core.config import BotSettings, UnknownBot
from db import store
from db.models import TweetStatus
from posting.destinations import bot_variables, text_rule
from posting.job import post_next
from posting.outcomes import PostOutcome

POST_NEXT_KEY_PREFIX = "curate-"
STORE_ERRORS = tuple(STORE_ERROR_STATUS)


class CurationPageRoute(PageRoute):
    @staticmethod
    def early_answer(request: Request, refusal: HTTPException) -> Response:
        """The page's answer when api/request_limits.py refuses a request before its route runs
        (not signed in, body too large): the script gets JSON; a plain form goes to the sign-in
        form or back to the review list, with the reason shown there once."""
        signed_out = refusal.status_code == status.HTTP_401_UNAUTHORIZED
        signing_in = request.url.path.rstrip("/") == "/curate/sign-in"
        same_bot = "?" + urlencode({"bot": request.query_params["bot"]}) if "bot" in request.query_params else ""
        return answer(
            request, f"Nothing was changed: {refusal.detail}.",
            back_to="/curate/sign-in" if signed_out or signing_in else "/curate" + same_bot, status_code=refusal.status_code,
        )

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """A page or form naming a bot the service does not have is answered as the page answers a
        refusal (a 404 for the script; the review list with the reason for a plain form), not with
        the API's JSON."""
        handle = super().get_route_handler()

        async def handle_unknown_bot(request: Request) -> Response:
            try:
                return await handle(request)
            except UnknownBot as exc:
                return answer(request, str(exc), back_to="/curate", status_code=status.HTTP_404_NOT_FOUND)

        return handle_unknown_bot


def curated_bot(settings: SettingsDep, bot: str | None = None) -> BotSettings:
    """The bot the page or form is about (`?bot=NAME`; none: the default bot): every listing and
    action is scoped to its account. Any text is taken: a name no bot has raises UnknownBot (see
    CurationPageRoute.get_route_handler), never the API's 422."""
    return settings.bot(bot)


BotDep = Annotated[BotSettings, Depends(curated_bot)]


router = SlashAgnosticRouter(tags=["curation page"], include_in_schema=False, route_class=CurationPageRoute)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _bulk_action(request: Request, session, settings, bot: BotSettings, action, ids: list[int], verb: str):
    """Run a bulk review action; the answer counts what changed and says why the rest was skipped."""
    result: actions.BulkResult = action(session, bot.name, ids)
    session.commit()
    message = f"{verb} {_plural(len(result.changed), 'tweet')}."
    if result.skipped:
        message += " Skipped: " + "; ".join(reason for _id, reason in result.skipped) + "."
    return answer(
        request, message, back_to="/curate" + bot_query(settings, bot), session=session, account=bot.name,
        changed=result.changed, skipped=[{"id": i, "reason": r} for i, r in result.skipped],
    )


# ---- sign in and out ----

@router.get("/curate/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request, settings: SettingsDep, curator: OptionalCuratorDep):
    if curator is not None:
        return RedirectResponse("/curate", status.HTTP_303_SEE_OTHER)
    return render(request, "sign_in.html", settings=settings)


@router.post("/curate/sign-in", response_class=HTMLResponse)
def sign_in(request: Request, settings: SettingsDep, throttle: SignInThrottleDep, token: Annotated[str, Form()] = ""):
    source, source_kind = sign_in_attempt_source(request, settings)
    wait = throttle.retry_after(source)
    if wait is not None:
        minutes = math.ceil(wait / 60)
        response = render(
            request, "sign_in.html", settings=settings, status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            flash={"text": f"Too many wrong tokens from this {source_kind}: try again in {_plural(minutes, 'minute')}.",
                   "error": True},
        )
        response.headers["Retry-After"] = str(wait)
        return response
    if not token_matches(token, settings):
        if token:
            throttle.record_failure(source)
        problem = "Enter the service token (SECRET_TOKEN)." if not token else "That is not the service token."
        return render(
            request, "sign_in.html", settings=settings, status_code=status.HTTP_401_UNAUTHORIZED,
            flash={"text": problem, "error": True},
        )
    throttle.forget(source)
    response = RedirectResponse("/curate", status.HTTP_303_SEE_OTHER, headers={"Cache-Control": "no-store"})
    set_session_cookie(response, request, settings, new_session())
    set_device_cookie(response, request, settings)
    return response


@router.post("/curate/sign-out")
def sign_out(request: Request, curator: CuratorPostDep):
    response = RedirectResponse("/curate/sign-in", status.HTTP_303_SEE_OTHER, headers={"Cache-Control": "no-store"})
    clear_session_cookie(response, request)
    set_flash(response, request, "Signed out.")
    return response


# ---- pages ----

@router.get("/curate", response_class=HTMLResponse)
def review_page(request: Request, session: SessionDep, settings: SettingsDep, bot: BotDep, curator: OptionalCuratorDep):
    if curator is None:
        return to_sign_in()
    listing = actions.pending(session, bot.name)
    return render(
        request, "review.html", settings=settings, bot=bot, session=session, curator=curator, listing=listing, upload=None
    )


@router.get("/curate/queue", response_class=HTMLResponse)
def queue_page(request: Request, session: SessionDep, settings: SettingsDep, bot: BotDep, curator: OptionalCuratorDep):
    if curator is None:
        return to_sign_in()
    return render(
        request, "queue.html", settings=settings, bot=bot, session=session, curator=curator,
        queue=actions.queue(session, bot, settings.QUEUE_WARNING_THRESHOLD), moves=list(actions.Move),
        post_next_key=POST_NEXT_KEY_PREFIX + secrets.token_urlsafe(16), order_variable=bot_variables(bot, "TWEET_ORDER"),
    )


@router.get("/curate/history", response_class=HTMLResponse)
def history_page(request: Request, session: SessionDep, settings: SettingsDep, bot: BotDep, curator: OptionalCuratorDep):
    if curator is None:
        return to_sign_in()
    return render(
        request, "history.html", settings=settings, bot=bot, session=session, curator=curator,
        history=actions.history(session, bot.name),
    )


@router.get("/curate/tweet-rule.js")
def tweet_rule_script(request: Request):
    """The server's tweet rule for the live counter (see api/curate/counter_rule.py)."""
    body, version = counter_rule_script()
    etag = f'"{version}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(body, media_type="text/javascript", headers=headers)


# ---- actions ----

@router.post("/curate/upload", response_class=HTMLResponse, form_limits=UPLOAD_FORM_LIMITS)
def upload(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    curator: CuratorPostDep,
    bot: BotDep,
    file: Annotated[UploadFile, File()],
):
    """Store a generated file as the bot's pending candidates; same parser, rule (the bot's destinations') and
    summary as /add_tweets_file/."""
    filename = file.filename or ""
    try:
        stored = store.store_curated_file(
            session, account=bot.name, data=file.file.read(settings.MAX_UPLOAD_BYTES + 1), filename=filename,
            status=TweetStatus.pending, max_bytes=settings.MAX_UPLOAD_BYTES, rule=text_rule(bot),
        )
    except STORE_ERRORS as exc:
        flash = {"text": f"Nothing was stored: {exc}", "error": True}
        return render(
            request, "review.html", settings=settings, bot=bot, session=session, curator=curator,
            listing=actions.pending(session, bot.name), upload=None,
            status_code=store_error_status(exc), flash=flash,
        )
    result = upload_result(filename, stored)
    flash = {
        "text": f"{result.filename or 'File'}: {_plural(result.added, 'tweet')} added for review, "
                f"{_plural(result.duplicates, 'duplicate')} skipped, {len(result.rejected)} rejected.",
        "error": False,
    }
    return render(
        request, "review.html", settings=settings, bot=bot, session=session, curator=curator,
        listing=actions.pending(session, bot.name), upload=result, flash=flash,
        status_code=status.HTTP_201_CREATED,
    )


@router.get("/curate/upload")
def after_upload(settings: SettingsDep, bot: BotDep):
    """The upload's result page reloaded or reached through history: back to the review list."""
    return RedirectResponse("/curate" + bot_query(settings, bot), status.HTTP_303_SEE_OTHER)


@router.post("/curate/approve")
def approve(
    request: Request, session: SessionDep, settings: SettingsDep, curator: CuratorPostDep, bot: BotDep,
    ids: Annotated[list[TweetIdValue], Form(max_length=actions.REVIEW_PAGE_SIZE)],
):
    return _bulk_action(request, session, settings, bot, actions.approve, ids, "Approved")


@router.post("/curate/reject")
def reject(
    request: Request, session: SessionDep, settings: SettingsDep, curator: CuratorPostDep, bot: BotDep,
    ids: Annotated[list[TweetIdValue], Form(max_length=actions.REVIEW_PAGE_SIZE)],
):
    return _bulk_action(request, session, settings, bot, actions.reject, ids, "Rejected")


def _tweet_action(
    request: Request, session, settings, bot: BotSettings, action, tweet_id: int, done: str, back_to: str,
    *, fragment: str = "", **kwargs,
):
    """Run a one-tweet action on the bot's tweet (another bot's is not found); answer its refusals (the
    store's error table) with nothing changed, back to the page `back_to` (a path) of the same bot."""
    back_to = back_to + bot_query(settings, bot) + fragment
    try:
        action(session, bot.name, tweet_id, **kwargs)
    except store.TweetNotFound as exc:
        return answer(request, str(exc), back_to=back_to, status_code=store_error_status(exc))
    except STORE_ERRORS as exc:
        session.rollback()
        return answer(request, f"Not saved: {exc}.", back_to=back_to, status_code=store_error_status(exc))
    session.commit()
    return answer(request, done, back_to=back_to, session=session, account=bot.name, changed=[tweet_id])


@router.post("/curate/tweets/{tweet_id}/edit")
def edit_and_approve(
    request: Request, session: SessionDep, settings: SettingsDep, curator: CuratorPostDep, bot: BotDep,
    tweet_id: TweetIdPath, text: Annotated[str, Form()] = "",
):
    return _tweet_action(
        request, session, settings, bot, actions.edit_and_approve, tweet_id,
        f"Tweet {tweet_id} edited and approved.", "/curate", text=text, rule=text_rule(bot),
    )


@router.post("/curate/tweets/{tweet_id}/requeue")
def requeue(request: Request, session: SessionDep, settings: SettingsDep, curator: CuratorPostDep, bot: BotDep, tweet_id: TweetIdPath):
    return _tweet_action(
        request, session, settings, bot, actions.requeue, tweet_id, f"Tweet {tweet_id} is back in the queue.", "/curate/history"
    )


@router.post("/curate/tweets/{tweet_id}/confirm-posted")
def confirm_posted(
    request: Request, session: SessionDep, settings: SettingsDep, curator: CuratorPostDep, bot: BotDep,
    tweet_id: TweetIdPath, x_link: Annotated[str, Form(max_length=500)] = "",
):
    return _tweet_action(
        request, session, settings, bot, actions.confirm_posted, tweet_id,
        f"Tweet {tweet_id} is recorded as posted.", "/curate/history", x_link=x_link,
    )


@router.post("/curate/tweets/{tweet_id}/unqueue")
def unqueue(request: Request, session: SessionDep, settings: SettingsDep, curator: CuratorPostDep, bot: BotDep, tweet_id: TweetIdPath):
    return _tweet_action(
        request, session, settings, bot, actions.unqueue, tweet_id,
        f"Tweet {tweet_id} left the queue; it is back in the review list.", "/curate/queue",
    )


@router.post("/curate/tweets/{tweet_id}/move")
def move(
    request: Request, session: SessionDep, settings: SettingsDep, curator: CuratorPostDep, bot: BotDep,
    tweet_id: TweetIdPath, to: Annotated[actions.Move, Form()],
):
    return _tweet_action(
        request, session, settings, bot, actions.move_in_queue, tweet_id,
        f"Tweet {tweet_id} moved {to.value}.", "/curate/queue", fragment=f"#tweet-{tweet_id}", move=to,
    )


@router.post("/curate/post-next")
def post_next_now(
    request: Request, settings: SettingsDep, curator: CuratorPostDep, bot: BotDep,
    idempotency_key: Annotated[IdempotencyKeyText, Form()] = "",
):
    """The scheduler's code path (posting.job.post_next) for the page's bot, with the key the page was
    rendered with: a double click, or a resent form, posts once. The message lists each destination's result."""
    query = bot_query(settings, bot)
    if not idempotency_key.startswith(POST_NEXT_KEY_PREFIX):
        return answer(
            request, "The button's key is missing: reload the queue page and press it again (nothing was posted).",
            back_to="/curate/queue" + query, status_code=status.HTTP_400_BAD_REQUEST,
        )
    result = post_next(
        session_factory=request.app.state.session_factory, settings=settings, bot=bot.name,
        idempotency_key=idempotency_key,
    )
    message = result.message
    if result.replayed and result.outcome is PostOutcome.posted:
        message += " (this button had already posted it; nothing new was posted)"
    posted = result.outcome is PostOutcome.posted
    return answer(
        request, message,
        back_to=("/curate/history" if posted else "/curate/queue") + query,
        status_code=result.outcome.http_status,
        outcome=result.outcome.value,
        tweet_id=result.tweet.id if result.tweet is not None else None,
    )
