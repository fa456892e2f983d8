"""Request and response shapes of the API."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from core.tweet_text import control_character
from core.x_client import X_POST_ID_PATTERN
from db.models import DeliveryStatus, Tweet, TweetStatus
from posting.job import MAX_IDEMPOTENCY_KEY_LENGTH

UploadStatus = Literal["queued", "pending"]

# Bounds of what reaches the tweets table (db/models.py), checked before any query.
INT4_MAX = 2**31 - 1  # Integer columns are int4 on Postgres
ID_MAX = INT4_MAX
OFFSET_MAX = INT4_MAX  # no table of int4 ids has more rows
# Half the column's range: new tweets go after the last position (+1 each) and moves to the
# top or bottom step past the ends (-1, +1), so they keep a billion steps of room.
POSITION_MIN, POSITION_MAX = -(2**30), 2**30
ERROR_MAX_LENGTH = 2000
ACCOUNT_MAX_LENGTH = Tweet.__table__.c.account.type.length


def storable_text(value):
    """Refuse text with characters the databases cannot store (NUL on Postgres, lone surrogates
    anywhere) or other control characters, by the rule tweet text follows. It runs before the
    string's own checks, whose message for a lone surrogate would not name it."""
    character = control_character(value) if isinstance(value, str) else None
    if character is not None:
        raise ValueError(f"contains the control character U+{ord(character):04X}: remove it")
    return value


AccountText = Annotated[str, Field(max_length=ACCOUNT_MAX_LENGTH), BeforeValidator(storable_text)]
ErrorText = Annotated[str, Field(max_length=ERROR_MAX_LENGTH), BeforeValidator(storable_text)]
IdempotencyKeyText = Annotated[str, Field(max_length=MAX_IDEMPOTENCY_KEY_LENGTH), BeforeValidator(storable_text)]
BotQuery = Annotated[
    AccountText | None,
    Query(description="The bot (one of BOTS); default: ACCOUNT, or the first of BOTS."),
]
TweetIdValue = Annotated[int, Field(ge=1, le=ID_MAX)]
TweetIdPath = Annotated[int, Path(ge=1, le=ID_MAX, description="The tweet's id.")]


class TweetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tweet: str = Field(description="The tweet text (at most 280 weighted characters).")
    status: UploadStatus = Field(default="queued", description="queued to post, pending to review first.")


class TweetUpdate(BaseModel):
    """Fields to change; leave out what stays. Status changes follow db.models.TweetStatus."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    status: TweetStatus | None = None
    position: int | None = Field(
        default=None, ge=POSITION_MIN, le=POSITION_MAX,
        description="Posting order for TWEET_ORDER=oldest (lower first).",
    )
    error: ErrorText | None = Field(
        default=None, description="Reason to record, e.g. when rejecting (no control characters but newline and tab).",
    )
    x_tweet_id: str | None = Field(
        default=None, pattern=f"^{X_POST_ID_PATTERN}$",
        description="X's id of the post, when setting an unconfirmed tweet to posted (it was found on X).",
    )


class DeliveryPublic(BaseModel):
    """The tweet on one destination of its bot."""

    model_config = ConfigDict(from_attributes=True)
    destination: str = Field(description="x, mastodon or bluesky")
    status: DeliveryStatus
    remote_id: str | None = Field(description="The network's id of the post.")
    url: str | None
    error: str | None
    dry_run: bool
    posted_at: datetime | None
    updated_at: datetime


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
    deliveries: list[DeliveryPublic] = Field(description="Where it went: one entry per destination tried.")


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
