"""The Mastodon destination: one status per delivery through Mastodon.py, and Mastodon's answers
sorted into the ErrorKinds of core/delivery.py, the way core/x_client.py sorts X's.

Every post carries an Idempotency-Key derived from the delivery: Mastodon keeps a key for an hour
per account, and a post repeated with the same key within that hour returns the status the first
one created instead of creating another. A retry after a lost answer therefore posts nothing new.

Mastodon.py is imported when a destination is first built, not with this module: the service's
start never needs it. Its exceptions carry no headers (a 429 raises a bare MastodonRatelimitError),
so the session below keeps what the last answer said for the classification.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from core.delivery import DeliveryError, DeliveryFailed, ErrorKind, RemotePost
from core.x_client import _connection_never_made, _network_reason, reset_time

log = logging.getLogger(__name__)

RATE_LIMIT_RESET_HEADER = "X-RateLimit-Reset"  # an ISO 8601 time on Mastodon, Unix seconds on GoToSocial
# Mastodon's longest limits count over a day (follows, reports; statuses over 3 hours, the API over
# 5 minutes): a reset further away is no time Mastodon meant.
MAX_RATE_LIMIT_WAIT = timedelta(days=1)
# Mastodon's status ids are decimal snowflakes; other servers speaking its API use alphanumeric ones.
STATUS_ID = re.compile(r"[0-9A-Za-z]{1,64}")
MAX_LINK_LENGTH = 2048
MAX_SAID_LENGTH = 300  # of an instance's own error message, quoted in ours
# requests refuses these before connecting: the base URL is no address.
_UNUSABLE_ADDRESS = (
    requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema,
    urllib3.exceptions.LocationValueError,
)


def credentials_hint(variable_prefix: str) -> str:
    """What to check when Mastodon refuses the token; `variable_prefix` is the bot's (BotSettings.prefix)."""
    return f"check {variable_prefix}MASTODON_ACCESS_TOKEN: it must be valid and have the write:statuses scope"


def address_hint(variable_prefix: str) -> str:
    """What to check when the instance's address is wrong; `variable_prefix` is the bot's (BotSettings.prefix)."""
    return f"check {variable_prefix}MASTODON_API_BASE_URL: the instance's address, such as https://mastodon.social"



def mastodon_reset_time(value: str | None) -> datetime | None:
    """A rate-limit reset header as a time; None unless it is an ISO 8601 time with its zone (or Unix
    seconds) at most MAX_RATE_LIMIT_WAIT from now (anything else is ignored, not trusted or clamped)."""
    value = (value or "").strip()
    if value.isdigit():
        when = reset_time(value)
    else:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
        if when.tzinfo is None:
            return None
    if when is None or when > datetime.now(timezone.utc) + MAX_RATE_LIMIT_WAIT:
        return None
    return when.astimezone(timezone.utc)


@dataclass(frozen=True)
class MastodonAnswer:
    """What the last HTTP answer said that Mastodon.py's exceptions leave out."""

    status_code: int
    retry_at: datetime | None  # its X-RateLimit-Reset, when usable


class AnswerKeepingSession(requests.Session):
    """A requests session that keeps, per thread, the status and rate-limit reset of its last answer.

    It takes X-RateLimit-Reset out of the answer Mastodon.py sees: Mastodon.py parses it for its own
    pacing, which we never use, and raises MastodonRatelimitError when it cannot, even on the answer
    to a status it just created (a post that landed would pass for a rate limit).
    """

    def __init__(self) -> None:
        super().__init__()
        self._last = threading.local()

    @property
    def last_answer(self) -> MastodonAnswer | None:
        return getattr(self._last, "answer", None)

    def forget_answer(self) -> None:
        self._last.answer = None

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        response = super().request(method, url, *args, **kwargs)
        reset = response.headers.pop(RATE_LIMIT_RESET_HEADER, None)
        self._last.answer = MastodonAnswer(response.status_code, mastodon_reset_time(reset))
        return response


class MastodonDestination:
    """One Mastodon account, reached at `api_base_url` with an access token holding write:statuses.

    `timeout` bounds, in seconds, the connection and each wait for the answer's bytes. Building one
    makes no network call; `post` makes exactly one request, never sleeps and never retries.
    """

    network = "mastodon"
    # Mastodon remembers an Idempotency-Key for an hour: a repeat within it returns the first status.
    # The margin covers clocks and the time the first request took.
    safe_retry_window = timedelta(minutes=50)

    def __init__(self, api_base_url: str, access_token: str, timeout: float, *, variable_prefix: str = ""):
        from mastodon import Mastodon

        self._access_token = access_token
        self._variable_prefix = variable_prefix  # the bot's, for the variables its errors name
        self._session = AnswerKeepingSession()
        self._api = Mastodon(
            api_base_url=api_base_url,
            access_token=access_token,
            request_timeout=timeout,
            version_check_mode="none",  # no request to learn the instance's version
            ratelimit_method="throw",  # a 429 raises instead of sleeping until the reset
            session=self._session,
        )

    def new_key(self, seed: str) -> str:
        """The Idempotency-Key for the delivery `seed` names: its SHA-256 in hex, the same for every attempt."""
        return hashlib.sha256(seed.encode("utf-8")).hexdigest()

    def post(self, text: str, *, key: str) -> RemotePost:
        """Post `text` as a status with `key` as its Idempotency-Key, or raise DeliveryFailed."""
        self._session.forget_answer()
        try:
            status = self._api.status_post(text, idempotency_key=key)
        except Exception as exc:  # noqa: BLE001 (every failure is sorted into a kind)
            # from None: the chained exception would carry the instance's own words unfiltered
            raise DeliveryFailed(self._without_token(classify_mastodon_error(
                exc, self._session.last_answer, variable_prefix=self._variable_prefix))) from None
        posted = remote_post(status)
        if posted is None:
            answer = self._session.last_answer
            status_code = answer.status_code if answer else None
            raise DeliveryFailed(DeliveryError(
                ErrorKind.unknown_outcome,
                f"Mastodon answered {status_code} without a usable status id and link: the status may have been created",
                status_code,
            ))
        return posted

    def _without_token(self, error: DeliveryError) -> DeliveryError:
        """The error with the access token masked, should an instance's message repeat it."""
        if not self._access_token or self._access_token not in error.message:
            return error
        return dataclasses.replace(error, message=error.message.replace(self._access_token, "[access token]"))


def remote_post(status: object) -> RemotePost | None:
    """The id and link of a status Mastodon returned; None unless both look like what Mastodon sends."""
    if not isinstance(status, dict):
        return None
    status_id = status.get("id")
    if isinstance(status_id, bool) or not isinstance(status_id, (str, int)) or not STATUS_ID.fullmatch(str(status_id)):
        return None
    # `url` is the page a person opens; `uri` (the ActivityPub id) also opens on the instance.
    link = next((value for value in (status.get("url"), status.get("uri")) if _is_web_link(value)), None)
    return RemotePost(str(status_id), link) if link else None


def _is_web_link(value: object) -> bool:
    if not isinstance(value, str) or len(value) > MAX_LINK_LENGTH or not value.isprintable() or " " in value:
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def classify_mastodon_error(
    exc: BaseException, answer: MastodonAnswer | None = None, *, variable_prefix: str = ""
) -> DeliveryError:
    """Sort an exception raised by a Mastodon.py call into one ErrorKind (see core/delivery.py).

    `answer` is what the call's HTTP answer said, when one came (AnswerKeepingSession.last_answer):
    the reset time of a 429 comes only from there. Messages name the variables to check with the
    bot's `variable_prefix`. Never raises: when the details of the failure
    cannot be read, the kind follows from the answer's status, or unknown_outcome without one.
    """
    try:
        return _classify(exc, answer, variable_prefix)
    except Exception as failure:  # noqa: BLE001 (the caller must settle its delivery whatever happened)
        log.error("could not read the details of a failed Mastodon call (%s: %s): sorting it by its status",
                  type(failure).__name__, failure)
        if answer is not None and answer.status_code >= 400:
            return DeliveryError(_kind_of_status(answer.status_code), f"Mastodon answered {answer.status_code} "
                                 "(its details could not be read)", answer.status_code)
        return DeliveryError(ErrorKind.unknown_outcome,
                             f"{type(exc).__name__} while talking to Mastodon (its details could not be read)")


def _classify(exc: BaseException, answer: MastodonAnswer | None, variable_prefix: str) -> DeliveryError:
    from mastodon.errors import MastodonAPIError, MastodonNetworkError, MastodonRatelimitError

    status_code = _status_of(exc, answer)
    # In "throw" mode Mastodon.py answers a 429 with a bare MastodonRatelimitError.
    if isinstance(exc, MastodonRatelimitError) and status_code in (None, 429):
        return DeliveryError(ErrorKind.rate_limited, "Mastodon answered 429: too many requests", 429,
                             answer.retry_at if answer else None)
    if isinstance(exc, MastodonAPIError) and status_code is not None and status_code >= 400:
        return _classify_http_answer(exc, status_code, variable_prefix)
    if isinstance(exc, MastodonAPIError):  # a success (or redirect) whose body could not be read
        answered = "Mastodon answered" + (f" {status_code}" if status_code else "")
        return DeliveryError(ErrorKind.unknown_outcome, f"{answered} but its answer could not be read: "
                             "the status may have been created", status_code)
    if isinstance(exc, MastodonNetworkError):
        return _classify_network_failure(exc.__cause__ or exc.__context__ or exc, variable_prefix)
    return DeliveryError(ErrorKind.unknown_outcome, f"unexpected {type(exc).__name__} while talking to Mastodon: {exc}")


def _status_of(exc: BaseException, answer: MastodonAnswer | None) -> int | None:
    """The HTTP status the failure came with: Mastodon.py's error arguments are
    (message, status, reason, the instance's error); else the session's last answer."""
    args = getattr(exc, "args", ())
    if len(args) > 1 and isinstance(args[1], int):
        return args[1]
    return answer.status_code if answer else None


def _classify_http_answer(exc: BaseException, status_code: int, variable_prefix: str) -> DeliveryError:
    _, _, reason, instance_said = (*exc.args, None, None, None, None)[:4]
    said = " ".join(str(instance_said or reason or "no message").split())[:MAX_SAID_LENGTH]  # one line, short
    kind = _kind_of_status(status_code)
    hint = (credentials_hint(variable_prefix) if kind is ErrorKind.credentials
            else address_hint(variable_prefix) if status_code == 404 else None)
    message = f"Mastodon answered {status_code}: {said}" + (f" ({hint})" if hint else "")
    return DeliveryError(kind, message, status_code)


def _kind_of_status(status_code: int) -> ErrorKind:
    if status_code == 429:
        return ErrorKind.rate_limited
    if status_code == 422:  # "Validation failed: Text character limit of 500 exceeded" and the like
        return ErrorKind.text_refused
    if status_code in (401, 403):  # an invalid or revoked token, or one without write:statuses
        return ErrorKind.credentials
    if status_code >= 500:
        return ErrorKind.server_error
    return ErrorKind.refused


def _classify_network_failure(cause: BaseException, variable_prefix: str) -> DeliveryError:
    """Mastodon.py wraps every requests failure in a MastodonNetworkError raised while handling it."""
    if isinstance(cause, _UNUSABLE_ADDRESS):
        return DeliveryError(ErrorKind.not_sent, f"could not send to Mastodon: {cause} ({address_hint(variable_prefix)})")
    if isinstance(cause, requests.ConnectTimeout) or _connection_never_made(cause):
        return DeliveryError(ErrorKind.not_sent, f"could not connect to Mastodon: {_network_reason(cause)}")
    if isinstance(cause, requests.Timeout):
        return DeliveryError(ErrorKind.unknown_outcome, f"Mastodon did not answer in time: {_network_reason(cause)}")
    return DeliveryError(ErrorKind.unknown_outcome, f"the connection to Mastodon failed mid-request: {_network_reason(cause)}")
