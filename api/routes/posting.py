"""POST /tweet_curated/ (and the original's /tweet_currated/): Cloud Scheduler's call to post the next tweet."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse

from api.deps import SettingsDep, require_token
from api.routes import SlashAgnosticRouter
from api.schemas import BotQuery, IdempotencyKeyText, TweetPublic
from posting.job import PostResult, post_next
from posting.outcomes import PostOutcome

router = SlashAgnosticRouter(tags=["posting"], dependencies=[Depends(require_token)])

RESPONSES = {
    200: {"description": 'Posted: `{"response": "New tweet posted @ <url>", "tweet": {...}}` '
                         "(also the replay for an idempotency key already used)."},
    404: {"description": '`{"detail": "No more tweets left"}`, or no bot has that name.'},
    409: {"description": "A call with the same idempotency key is still posting (or its tweet was since moved)."},
    502: {"description": "A network refused the texts, the credentials, failed, or its answer was lost (tweet "
                         "unconfirmed). Destinations that took the tweet keep it: a retry posts only where it is missing."},
    503: {"description": "A network's rate limit, or every queued tweet locked at that instant by a curator's change "
                         "or another call's claim (see Retry-After), or a destination's credentials are not set."},
}
KeyHeader = Annotated[IdempotencyKeyText | None, Header()]


def posting_response(result: PostResult) -> JSONResponse:
    """The HTTP form of a posting result."""
    tweet = TweetPublic.model_validate(result.tweet).model_dump(mode="json") if result.tweet is not None else None
    headers = {}
    if result.retry_after is not None:
        headers["Retry-After"] = str(result.retry_after)
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    if result.outcome is PostOutcome.posted:
        body = {"response": result.message, "tweet": tweet}
    elif result.outcome is PostOutcome.queue_empty:
        body = {"detail": result.message}
    else:
        body = {"detail": result.message, "outcome": result.outcome.value, "tweet": tweet}
    return JSONResponse(body, status_code=result.outcome.http_status, headers=headers)


@router.post("/tweet_curated/", responses=RESPONSES)
def tweet_curated(
    request: Request,
    settings: SettingsDep,
    x_cloudscheduler_scheduletime: KeyHeader = None,
    idempotency_key: KeyHeader = None,
    bot: BotQuery = None,
):
    """Post the next queued tweet of a bot to each of its destinations (X, Mastodon, Bluesky).
    Retries carrying the same `Idempotency-Key` (or Cloud Scheduler's `X-CloudScheduler-ScheduleTime`)
    answer with the first call's result."""
    result = post_next(
        session_factory=request.app.state.session_factory,
        settings=settings,
        bot=bot,
        idempotency_key=idempotency_key or x_cloudscheduler_scheduletime,
    )
    return posting_response(result)


router.add_api_route(
    "/tweet_currated/", tweet_curated, methods=["POST"], responses=RESPONSES,
    summary="Tweet Curated (the original's spelling, kept for existing scheduler jobs)",
)
