"""The one place that builds tweepy clients for X's API v2 and sorts X's answers into outcomes.

`make_x_client` gives a `tweepy.Client` whose every request goes to `TWITTER_API_BASE_URL`
(tweepy hardcodes https://api.twitter.com) with `TWITTER_TIMEOUT_SECONDS`.
`classify_x_error` maps whatever a tweepy call raised to one `DeliveryError` kind, the way
tweepy's errors.py maps status codes to exceptions: callers decide what each kind means
for their work, never by looking at status codes themselves. It never raises, whatever X
answered: a caller must always be able to settle what it was doing.
"""
from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit, urlunsplit

import requests
import tweepy
import urllib3.exceptions

from core.config import X_CREDENTIAL_VARS, XSettings
from core.delivery import DeliveryError, DeliveryFailed, ErrorKind, RemotePost

log = logging.getLogger(__name__)

# tweepy logs request headers (the Bearer token) and requests_oauthlib the signed
# Authorization header at DEBUG; keep them quiet even when LOG_LEVEL=DEBUG.
for _noisy in ("tweepy", "requests_oauthlib", "oauthlib"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


class XCredentialsMissing(Exception):
    """The settings lack what the client needs; str(exc) names the variables."""

    def __init__(self, missing: list[str]):
        self.missing = missing
        super().__init__(f"X credentials are not set: {', '.join(missing)} (see .env_reference)")


class RebasedSession(requests.Session):
    """A requests session that sends every request to `base_url` and times out.

    tweepy builds URLs on https://api.twitter.com. The URL is rewritten in `request()`,
    before requests prepares the request: the OAuth 1.0a signature (made by
    requests_oauthlib while preparing) therefore covers the URL actually sent.
    """

    def __init__(self, base_url: str, timeout: float):
        super().__init__()
        self.base = urlsplit(base_url.rstrip("/"))
        self.timeout = timeout

    def rebase(self, url: str) -> str:
        parts = urlsplit(url)
        return urlunsplit(
            (self.base.scheme, self.base.netloc, self.base.path + parts.path, parts.query, parts.fragment)
        )

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        response = super().request(method, self.rebase(url), *args, **kwargs)
        # tweepy reads this header with int() on a 429 and would raise ValueError instead
        # of TooManyRequests for a value that is no time: the answer would pass for a
        # lost one. Without it the 429 stays a 429 whose reset is unknown.
        if reset_time(response.headers.get(WINDOW_RESET_HEADER)) is None:
            response.headers.pop(WINDOW_RESET_HEADER, None)
        return response


def make_x_client(settings: XSettings, *, app_only: bool = False) -> tweepy.Client:
    """A tweepy API v2 client for the settings' account (or app), aimed at TWITTER_API_BASE_URL.

    Parameters
    ----------
    settings
        Reads CONSUMER_KEY, CONSUMER_SECRET, ACCESS_KEY, ACCESS_SECRET (user context),
        BEARER_TOKEN (app only), TWITTER_API_BASE_URL and TWITTER_TIMEOUT_SECONDS.
    app_only
        False: OAuth 1.0a user context, needed to post (and enough to read).
        True: the app-only bearer token, enough to read public tweets and users.

    The client never sleeps on rate limits (a 429 raises `tweepy.TooManyRequests`), and
    its session never retries a request, so a post is sent at most once per call.
    Raises `XCredentialsMissing` naming the variables that are not set.
    """
    if app_only:
        if settings.BEARER_TOKEN is None:
            raise XCredentialsMissing(["BEARER_TOKEN"])
        client = tweepy.Client(bearer_token=settings.BEARER_TOKEN.get_secret_value(), wait_on_rate_limit=False)
    else:
        missing = settings.missing_x_credentials
        if missing:
            raise XCredentialsMissing(missing)
        key, secret, token, token_secret = (getattr(settings, name).get_secret_value() for name in X_CREDENTIAL_VARS)
        client = tweepy.Client(
            consumer_key=key,
            consumer_secret=secret,
            access_token=token,
            access_token_secret=token_secret,
            wait_on_rate_limit=False,
        )
    client.session = RebasedSession(settings.TWITTER_API_BASE_URL, settings.TWITTER_TIMEOUT_SECONDS)
    return client


# X's duplicate-content refusal: v2 says it in `detail`, v1.1 used error code 187.
DUPLICATE_MARKER = "duplicate"
DUPLICATE_CODE = 187
# Limits X reports on a 429: the 15-minute window and the daily caps.
RATE_LIMIT_HEADERS = ("x-rate-limit", "x-user-limit-24hour", "x-app-limit-24hour")
WINDOW_RESET_HEADER = "x-rate-limit-reset"
# X's longest limits count over a month (the usage caps): a reset further away is no time X meant.
MAX_RATE_LIMIT_WAIT = timedelta(days=31)
UNIX_TIME = re.compile(r"[0-9]{1,11}")  # enough digits for any time within MAX_RATE_LIMIT_WAIT


def reset_time(value: str | None) -> datetime | None:
    """A rate-limit reset header (Unix seconds) as a time; None unless it is a plain
    non-negative integer at most MAX_RATE_LIMIT_WAIT from now (absurd, negative, fractional
    or huge values are ignored rather than trusted or clamped)."""
    value = (value or "").strip()
    if not UNIX_TIME.fullmatch(value):
        return None
    when = datetime.fromtimestamp(int(value), timezone.utc)
    return when if when <= datetime.now(timezone.utc) + MAX_RATE_LIMIT_WAIT else None


def classify_x_error(exc: BaseException) -> DeliveryError:
    """Sort an exception raised by a tweepy call into one ErrorKind (see its docstring).

    Never raises: when the details of the failure cannot be read (a bug on our side, or an
    answer beyond anything foreseen), the kind follows from whether X answered at all.
    """
    try:
        return _classify(exc)
    except Exception as failure:  # noqa: BLE001 (the caller must settle its tweet whatever happened)
        log.error("could not read the details of a failed X call (%s: %s): sorting it by whether X answered",
                  type(failure).__name__, failure)
        return _classify_by_status_only(exc)


def _classify_by_status_only(exc: BaseException) -> DeliveryError:
    """An HTTP error answer means X did not act (its status code gives the kind); otherwise X may have."""
    if isinstance(exc, tweepy.HTTPException):
        status_code = exc.response.status_code
        return DeliveryError(_kind_of_status(status_code), f"X answered {status_code} (its details could not be read)", status_code)
    return DeliveryError(ErrorKind.unknown_outcome, f"{type(exc).__name__} while talking to X (its details could not be read)")


def _classify(exc: BaseException) -> DeliveryError:
    if isinstance(exc, tweepy.HTTPException):
        return _classify_http_answer(exc)
    if isinstance(exc, requests.ConnectTimeout) or _connection_never_made(exc):
        return DeliveryError(ErrorKind.not_sent, f"could not connect to X: {_network_reason(exc)}")
    if isinstance(exc, requests.Timeout):
        return DeliveryError(ErrorKind.unknown_outcome, f"X did not answer in time: {_network_reason(exc)}")
    if isinstance(exc, requests.RequestException):
        return DeliveryError(ErrorKind.unknown_outcome, f"the connection to X failed mid-request: {_network_reason(exc)}")
    return DeliveryError(ErrorKind.unknown_outcome, f"unexpected {type(exc).__name__} while talking to X: {exc}")


def _classify_http_answer(exc: tweepy.HTTPException) -> DeliveryError:
    status_code = exc.response.status_code
    said = "; ".join(str(m) for m in exc.api_messages) or exc.response.reason or "no message"
    message = f"X answered {status_code}: {said}"
    duplicate = status_code == 403 and (DUPLICATE_CODE in exc.api_codes or DUPLICATE_MARKER in said.lower())
    kind = _kind_of_status(status_code, duplicate=duplicate)
    retry_at = _rate_limit_reset(exc.response) if kind is ErrorKind.rate_limited else None
    return DeliveryError(kind, message, status_code, retry_at)


def _kind_of_status(status_code: int, *, duplicate: bool = False) -> ErrorKind:
    """The kind of an HTTP error answer; `duplicate`: a 403 that says the text is a duplicate."""
    if status_code == 429:
        return ErrorKind.rate_limited
    if status_code == 400 or (status_code == 403 and duplicate):
        return ErrorKind.text_refused
    if status_code in (401, 403):
        return ErrorKind.credentials
    if status_code >= 500:
        return ErrorKind.server_error
    return ErrorKind.refused


def _rate_limit_reset(response: requests.Response) -> datetime | None:
    """When the exhausted limit resets: the latest reset among limits with none remaining,
    else the 15-minute window's reset; None when X sent no usable header."""
    exhausted, window = [], None
    for prefix in RATE_LIMIT_HEADERS:
        when = reset_time(response.headers.get(f"{prefix}-reset"))
        if when is None:
            continue
        if prefix == "x-rate-limit":
            window = when
        if response.headers.get(f"{prefix}-remaining", "").strip() == "0":
            exhausted.append(when)
    return max(exhausted) if exhausted else window


def _connection_never_made(exc: BaseException) -> bool:
    """True when requests failed while opening the connection (nothing was sent)."""
    if not isinstance(exc, requests.ConnectionError) or isinstance(exc, requests.Timeout):
        return False
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _network_reason(exc: BaseException) -> str:
    """A short cause without the pool's repr (which can be long)."""
    reason = exc.args[0] if exc.args else exc
    if isinstance(reason, urllib3.exceptions.MaxRetryError) and reason.reason is not None:
        reason = reason.reason
    text = str(reason)
    if isinstance(reason, urllib3.exceptions.NewConnectionError) and ": " in text:
        text = text.split(": ", 1)[1]
    return f"{type(reason).__name__}: {text}" if text else type(reason).__name__


X_POST_ID_PATTERN = r"[0-9]{1,19}"  # X's post ids: 64-bit integers
X_POST_ID = re.compile(X_POST_ID_PATTERN)


def tweet_url(account: str, x_tweet_id: str) -> str:
    return f"https://x.com/{account}/status/{x_tweet_id}"


class XDestination:
    """X as one of a bot's destinations (core.delivery.Destination), through a user-context client."""

    network = "x"
    safe_retry_window = None  # X takes no idempotency key: a post whose answer was lost is unconfirmed

    def __init__(self, client: tweepy.Client, account: str):
        self.client = client
        self.account = account

    def new_key(self, seed: str) -> str:
        """Sent nowhere (X takes no key): it only names the delivery's attempts in the database."""
        return hashlib.sha256(seed.encode()).hexdigest()

    def post(self, text: str, *, key: str) -> RemotePost:
        try:
            response = self.client.create_tweet(text=text, user_auth=True)
            x_tweet_id = str(response.data["id"])
            if not X_POST_ID.fullmatch(x_tweet_id):
                raise ValueError(f"X answered with {x_tweet_id[:40]!r} as the new post's id, which is no post id")
        except Exception as exc:  # every failure is sorted by classify_x_error, which never raises
            raise DeliveryFailed(classify_x_error(exc)) from exc
        return RemotePost(x_tweet_id, tweet_url(self.account, x_tweet_id))
