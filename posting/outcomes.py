"""What a posting call can end in, and what each ending means to every caller.

Each outcome carries its HTTP status (the route and the curation page), its exit code (the command
line) and so whether it is done, worth retrying later, or needs an operator (the scheduler). The
scheduler reads only exit codes, from a child process: `ExitCode.retryable` is its one rule.
"""
from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit codes of `python -m posting.post_next`."""

    posted = 0  # or recorded as a dry run, or already posted by an earlier run with this key
    unexpected = 1  # a bug or an outage the log explains; another attempt may succeed
    configuration = 2  # bad settings, or X credentials missing without TWITTER_DRY_RUN
    queue_empty = 3
    retry_later = 4  # X's rate limit, X failed or unreachable, the key in flight, the queue busy
    needs_operator = 5  # X refused the credentials or the texts, a tweet is unconfirmed, the key's tweet moved

    @property
    def retryable(self) -> bool:
        """Worth another attempt with the same idempotency key."""
        return self in {ExitCode.unexpected, ExitCode.retry_later}


class PostOutcome(str, enum.Enum):
    """What one posting call did.

    posted          a tweet was posted (or recorded as a dry run); `tweet` says which
    queue_empty     no queued tweet is left
    in_flight       an earlier call with the same idempotency key is still posting
    queue_busy      every queued tweet is locked at this moment (a curator's change, another call's claim); ask again
    key_reused      the key belongs to a tweet an operator has since moved (e.g. closed an
                    unconfirmed one); nothing posted
    not_configured  X credentials are missing and TWITTER_DRY_RUN is off
    rate_limited    X's rate limit or usage cap; tweet back in the queue; see retry_after
    texts_refused   X refused MAX_REJECTED_PER_CALL texts in a row; they are `rejected`
    x_credentials   X rejected the credentials or a permission; tweet back in the queue
    x_failed        X failed (5xx), refused the request, or could not be reached; back in the queue
    unconfirmed     X may or may not have posted the tweet; it is `unconfirmed`
    """

    http_status: int
    exit_code: ExitCode

    def __new__(cls, value: str, http_status: int, exit_code: ExitCode) -> PostOutcome:
        member = str.__new__(cls, value)
        member._value_ = value
        member.http_status = http_status
        member.exit_code = exit_code
        return member

    posted = "posted", 200, ExitCode.posted
    queue_empty = "queue_empty", 404, ExitCode.queue_empty
    in_flight = "in_flight", 409, ExitCode.retry_later
    queue_busy = "queue_busy", 503, ExitCode.retry_later
    key_reused = "key_reused", 409, ExitCode.needs_operator
    not_configured = "not_configured", 503, ExitCode.configuration
    rate_limited = "rate_limited", 503, ExitCode.retry_later
    texts_refused = "texts_refused", 502, ExitCode.needs_operator
    x_credentials = "x_credentials", 502, ExitCode.needs_operator
    x_failed = "x_failed", 502, ExitCode.retry_later
    unconfirmed = "unconfirmed", 502, ExitCode.needs_operator

    @property
    def retryable(self) -> bool:
        return self.exit_code.retryable

    @property
    def needs_operator(self) -> bool:
        return self.exit_code in {ExitCode.needs_operator, ExitCode.configuration}
