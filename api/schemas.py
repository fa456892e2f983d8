"""Request and response shapes of the API."""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.posting import X_POST_ID_PATTERN
from db.models import TweetStatus

UploadStatus = Literal["queued", "pending"]


class TweetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tweet: str = Field(description="The tweet text (at most 280 weighted characters).")
    status: UploadStatus = Field(default="queued", description="queued to post, pending to review first.")


class TweetUpdate(BaseModel):
    """Fields to change; leave out what stays. Status changes follow db.models.TweetStatus."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    status: TweetStatus | None = None
    position: int | None = None
    error: str | None = Field(default=None, description="Reason to record, e.g. when rejecting.")
    x_tweet_id: str | None = Field(
        default=None, pattern=f"^{X_POST_ID_PATTERN}$",
        description="X's id of the post, when setting an unconfirmed tweet to posted (it was found on X).",
    )


class TweetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    account: str
    text: str
    status: TweetStatus
    position: int
    created_at: datetime
    updated_at: datetime
    posted_at: datetime | None
    x_tweet_id: str | None
    x_url: str | None
    error: str | None
    dry_run: bool


class TweetsPublic(BaseModel):
    data: list[TweetPublic]
    count: int = Field(description="Total number of tweets matching the filters.")


class Rejection(BaseModel):
    index: int = Field(description="The sample's number in the file, counting from 1.")
    reason: str


class UploadResult(BaseModel):
    filename: str
    added: int
    duplicates: int
    rejected: list[Rejection]
