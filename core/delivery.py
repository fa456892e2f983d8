"""What every destination (X, Mastodon, Bluesky) has in common: one post, and one way to say how it failed.

A destination client (core/x_client.py, posting/mastodon_client.py, posting/bluesky_client.py) turns a
text into one post on its network, or raises `DeliveryFailed` carrying a `DeliveryError` whose
kind tells posting/ what happened, without posting/ ever looking at a network's status codes.
The clients never sleep and never retry: posting/ decides what a failure means for the tweet.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol


class ErrorKind(str, enum.Enum):
    """What a failed call to a network means, whatever the call was.

    rate_limited     429 (rate limit or usage cap): nothing done; retry after `retry_at`
    text_refused     the network will never accept this text (too long, duplicate, invalid)
    credentials      the credentials are wrong, revoked, expired or lack a permission
    server_error     5xx: the network failed; nothing done as far as it says; retry later
    refused          any other 4xx (e.g. 404 from a wrong base URL): nothing done
    not_sent         the connection was never made (refused, DNS, connect timeout):
                     the network cannot have received anything; safe to retry
    unknown_outcome  the request may have reached the network but no answer came back (read
                     timeout, connection dropped, unreadable answer): it may or may not have acted
    """

    rate_limited = "rate_limited"
    text_refused = "text_refused"
    credentials = "credentials"
    server_error = "server_error"
    refused = "refused"
    not_sent = "not_sent"
    unknown_outcome = "unknown_outcome"


@dataclass(frozen=True)
class DeliveryError:
    kind: ErrorKind
    message: str  # one line, safe to log and to show: the network's own words or the network failure
    status_code: int | None = None
    retry_at: datetime | None = None  # rate_limited only, when the answer says


class DeliveryFailed(Exception):
    """A destination client's post failed; `error` says how (never raised for a post that landed)."""

    def __init__(self, error: DeliveryError):
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class RemotePost:
    """A post that landed: the network's id for it and a link a person can open."""

    id: str
    url: str


class Destination(Protocol):
    """One network account a bot posts to."""

    network: str  # "x", "mastodon" or "bluesky"
    # How long after a delivery's first attempt the network still recognises its key, so that
    # posting again after a lost answer cannot make a second post; None: never (X has no such key).
    safe_retry_window: timedelta | None

    def new_key(self, seed: str) -> str:
        """The key of a new delivery, made once from `seed` (unique per run, tweet and destination)."""
        ...

    def post(self, text: str, *, key: str) -> RemotePost:
        """Post `text` once, or raise DeliveryFailed.

        `key` is the delivery's own key, the same on every attempt of one delivery: Mastodon
        sends it as the Idempotency-Key, Bluesky derives the record key from it, X ignores it.
        """
        ...
