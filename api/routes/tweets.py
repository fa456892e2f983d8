"""The tweet store's endpoints: list, read, edit, delete and add tweets (one or a curated file).

The store's errors become HTTP answers through api/request_errors.py's one table."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, File, Query, Response, UploadFile, status

from api.deps import SessionDep, SettingsDep, require_token
from api.request_limits import UPLOAD_FORM_LIMITS
from api.routes import SlashAgnosticRouter
from api.schemas import (
    OFFSET_MAX,
    AccountText,
    BotQuery,
    Rejection,
    TweetCreate,
    TweetIdPath,
    TweetPublic,
    TweetsPublic,
    TweetUpdate,
    UploadResult,
    UploadStatus,
)
from core.tweet_text import TweetRejected, content_hash, x_text_problem
from db import queries, store
from db.models import TweetStatus
from posting.destinations import text_rule

router = SlashAgnosticRouter(tags=["tweets"], dependencies=[Depends(require_token)])


@router.get("/tweets/", response_model=TweetsPublic)
def list_tweets(
    session: SessionDep,
    status_: Annotated[
        list[TweetStatus], Query(alias="status", max_length=len(TweetStatus), description="Repeat to match several.")
    ] = [],  # noqa: B006 (FastAPI copies defaults)
    account: AccountText | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
):
    tweets, count = queries.list_tweets(session, account=account, statuses=status_, limit=limit, offset=offset)
    return TweetsPublic(data=tweets, count=count)


@router.get("/tweets/{tweet_id}", response_model=TweetPublic)
def read_tweet(session: SessionDep, tweet_id: TweetIdPath):
    return store.get_tweet(session, tweet_id)


@router.patch("/tweets/{tweet_id}", response_model=TweetPublic)
def update_tweet(session: SessionDep, settings: SettingsDep, tweet_id: TweetIdPath, changes: TweetUpdate):
    tweet = store.get_tweet(session, tweet_id, for_update=True)
    bot = settings.bots.get(tweet.account)  # a tweet of no configured bot keeps X's rule
    rule = text_rule(bot) if bot is not None else x_text_problem
    store.update_tweet(session, tweet, **changes.model_dump(exclude_unset=True), rule=rule)
    session.commit()
    return tweet


@router.delete("/tweets/{tweet_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_tweet(session: SessionDep, tweet_id: TweetIdPath):
    tweet = store.get_tweet(session, tweet_id, for_update=True)
    store.delete_tweet(session, tweet)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/add_tweets/", response_model=TweetPublic, status_code=status.HTTP_201_CREATED)
def add_tweet(session: SessionDep, settings: SettingsDep, body: TweetCreate, bot: BotQuery = None):
    bot_settings = settings.bot(bot)
    account = bot_settings.name
    result = store.ingest_texts(
        session, account=account, texts=[body.tweet], status=TweetStatus(body.status), rule=text_rule(bot_settings)
    )
    if result.rejected:
        raise TweetRejected(result.rejected[0][1])
    if result.duplicates:
        raise store.TweetConflict("this tweet is already stored for the account")
    session.commit()
    return queries.get_by_hash(session, account, content_hash(body.tweet))


@router.post("/add_tweets_file/", response_model=UploadResult, status_code=status.HTTP_201_CREATED, form_limits=UPLOAD_FORM_LIMITS)
def add_tweets_file(
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="gpt_2_simple output (samples separated by 20 '=') or a CSV with a tweets column.")],
    status_: Annotated[UploadStatus, Query(alias="status")] = "queued",
    bot: BotQuery = None,
):
    filename = file.filename or ""
    bot_settings = settings.bot(bot)
    result = store.store_curated_file(
        session, account=bot_settings.name, data=file.file.read(settings.MAX_UPLOAD_BYTES + 1), filename=filename,
        status=TweetStatus(status_), max_bytes=settings.MAX_UPLOAD_BYTES, rule=text_rule(bot_settings),
    )
    return upload_result(filename, result)


def upload_result(filename: str, result: store.IngestResult) -> UploadResult:
    return UploadResult(
        filename=filename,
        added=result.added,
        duplicates=result.duplicates,
        rejected=[Rejection(index=n, reason=reason) for n, reason in result.rejected],
    )
