"""The tweet store's endpoints: list, read, edit, delete and add tweets (one or a curated file)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, File, HTTPException, Query, Response, UploadFile, status

from db import store
from api.deps import SessionDep, SettingsDep, require_token
from api.request_limits import UPLOAD_FORM_LIMITS
from api.routing import SlashAgnosticRouter
from api.schemas import (
    OFFSET_MAX,
    AccountText,
    Rejection,
    TweetCreate,
    TweetIdPath,
    TweetPublic,
    TweetsPublic,
    TweetUpdate,
    UploadResult,
    UploadStatus,
)
from core.tweet_text import CuratedFileError, TweetRejected, content_hash, parse_curated_file
from db import queries
from db.models import TweetStatus

router = SlashAgnosticRouter(tags=["tweets"], dependencies=[Depends(require_token)])


def _load(session, tweet_id: int, *, for_update: bool = False):
    try:
        return store.get_tweet(session, tweet_id, for_update=for_update)
    except store.TweetNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


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
    return _load(session, tweet_id)


@router.patch("/tweets/{tweet_id}", response_model=TweetPublic)
def update_tweet(session: SessionDep, tweet_id: TweetIdPath, changes: TweetUpdate):
    tweet = _load(session, tweet_id, for_update=True)
    try:
        store.update_tweet(session, tweet, **changes.model_dump(exclude_unset=True))
    except TweetRejected as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except store.TweetConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    session.commit()
    return tweet


@router.delete("/tweets/{tweet_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_tweet(session: SessionDep, tweet_id: TweetIdPath):
    tweet = _load(session, tweet_id, for_update=True)
    try:
        store.delete_tweet(session, tweet)
    except store.TweetConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/add_tweets/", response_model=TweetPublic, status_code=status.HTTP_201_CREATED)
def add_tweet(session: SessionDep, settings: SettingsDep, body: TweetCreate):
    try:
        result = store.ingest_texts(
            session, account=settings.ACCOUNT, texts=[body.tweet], status=TweetStatus(body.status)
        )
    except store.TweetConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    if result.rejected:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, result.rejected[0][1])
    if result.duplicates:
        raise HTTPException(status.HTTP_409_CONFLICT, "this tweet is already stored for the account")
    session.commit()
    return queries.get_by_hash(session, settings.ACCOUNT, content_hash(body.tweet))


def store_curated_file(session, settings, *, data: bytes, filename: str, status_: TweetStatus) -> UploadResult:
    """Parse, validate and store a whole file in one transaction, or raise HTTPException."""
    if len(data) > settings.MAX_UPLOAD_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"file is over the {settings.MAX_UPLOAD_BYTES:,}-byte limit (MAX_UPLOAD_BYTES): split it and upload the parts",
        )
    try:
        texts = parse_curated_file(data, filename)
    except CuratedFileError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    if not texts:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "file holds no tweets: samples must be separated by a line of 20 '='")
    try:
        result = store.ingest_texts(session, account=settings.ACCOUNT, texts=texts, status=status_)
    except store.TweetConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    if result.added == 0 and result.duplicates == 0:
        session.rollback()
        reasons = "; ".join(f"#{n}: {reason}" for n, reason in result.rejected[:3])
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"file holds no valid tweet ({len(result.rejected)} rejected: {reasons}); nothing was stored",
        )
    session.commit()
    return UploadResult(
        filename=filename,
        added=result.added,
        duplicates=result.duplicates,
        rejected=[Rejection(index=n, reason=reason) for n, reason in result.rejected],
    )


@router.post("/add_tweets_file/", response_model=UploadResult, status_code=status.HTTP_201_CREATED, form_limits=UPLOAD_FORM_LIMITS)
def add_tweets_file(
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="gpt_2_simple output (samples separated by 20 '=') or a CSV with a tweets column.")],
    status_: Annotated[UploadStatus, Query(alias="status")] = "queued",
):
    data = file.file.read(settings.MAX_UPLOAD_BYTES + 1)
    return store_curated_file(session, settings, data=data, filename=file.filename or "", status_=TweetStatus(status_))
