"""Bluesky as a destination: one post per delivery, written with a record key the delivery keeps.

Bluesky has no idempotency header. Each delivery gets its record key once (`new_key`, a TID as
app.bsky.feed.post's lexicon wants) and every attempt writes that key: a retry of a post that
did land is refused by the PDS, which answers 500 InternalServerError for a createRecord on an
existing key (its repo refuses to add a key it holds, an error the XRPC server does not name);
getRecord then shows whether the record there is ours, and the delivery is recorded as posted.

Logging in (createSession) is limited to 30 per 5 minutes and 300 a day per account, so the
session is kept between runs in a `SessionStore` (one opaque blob per bot), sealed with a key
only the app password gives, and every createSession is counted in the same blob: past 25 per
5 minutes or 250 a day we refuse locally as rate_limited, under Bluesky's own limits.
Renewing the session (a refresh, or a login) happens under the store's login lock, one run at a
time per bot: the run that takes it reads the store again, and a session another run stored
meanwhile is used as is. A storm of runs with no stored session logs in once, and the refresh
token (which each refresh rotates) is never spent by two runs at once. A run waits for the lock
at most LOGIN_WAIT_REQUESTS times its request timeout, then fails as not_sent.

atproto (and httpx and cryptography) are imported on first use: importing this module costs the
service's start nothing (atproto's models take most of a second to import).
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Protocol

from core.delivery import DeliveryError, DeliveryFailed, ErrorKind, RemotePost
from core.tweet_text import bluesky_text_problem
from core.x_client import reset_time
from posting.login_locks import LoginLockTimeout, holding

log = logging.getLogger(__name__)

POST_COLLECTION = "app.bsky.feed.post"
# Bluesky allows 30 createSession per 5 minutes and 300 a day per account; we stop short of both.
CREATE_SESSION_BUDGET = ((timedelta(minutes=5), 25), (timedelta(days=1), 250))
# A TID: 64 bits in base32-sortable, the top bit 0, then microseconds since 1970 (53 bits) and a
# clock id (10 bits). https://atproto.com/specs/tid
TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
TID = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")
# The PDS's answer to a record its lexicon refuses, whatever part of the text broke it.
INVALID_POST = f"Invalid {POST_COLLECTION} record"
# Errors of a session a refresh or a new login can fix (the PDS answers them with 400 or 401).
SESSION_ERRORS = {"ExpiredToken", "InvalidToken"}
BLOB_VERSION = 1
SEAL_SALT = b"gpt2-bot bluesky session v1"
# How long a run waits for another's login, in request timeouts: the lock's holder sends at most
# a refresh and a createSession, and writes the store a few times.
LOGIN_WAIT_REQUESTS = 3


class SessionStore(Protocol):
    """Where a bot's Bluesky session blob is kept between runs (posting.destinations.DatabaseSessionStore:
    a database row), and the lock under which one run at a time renews it."""

    def load(self) -> str | None: ...

    def save(self, blob: str) -> None: ...

    def login_lock(self, timeout: float) -> AbstractContextManager[None]:
        """Held around "read the blob again, refresh or log in if still needed, save": one holder at
        a time among the runs sharing the store. Raises posting.login_locks.LoginLockTimeout when
        not had within `timeout` seconds."""
        ...


class MemorySessionStore:
    """A SessionStore in memory: for tests and dry runs (its lock orders this process's threads)."""

    def __init__(self, blob: str | None = None):
        self.blob = blob
        self._login = threading.Lock()

    def load(self) -> str | None:
        return self.blob

    def save(self, blob: str) -> None:
        self.blob = blob

    def login_lock(self, timeout: float) -> AbstractContextManager[None]:
        return holding(self._login, timeout)


def make_tid(micros: int, clock_id: int) -> str:
    value = (micros & (2**53 - 1)) << 10 | (clock_id & 0x3FF)
    return "".join(TID_ALPHABET[(value >> shift) & 31] for shift in range(60, -1, -5))


def bluesky_facets(text: str, resolve_handle: Callable[[str], str | None]) -> list[dict]:
    """The facets that make `text`'s links, #tags and @mentions clickable, as app.bsky.richtext.facet
    records (byte offsets in UTF-8), sorted by where they start.

    Detection is atproto's port of Bluesky's own (links with or without a scheme when the domain
    has a known TLD, trailing punctuation left out). A mention links to the DID `resolve_handle`
    gives for its handle; a handle it cannot resolve (None) gets no facet.
    """
    from atproto_client import models
    from atproto_client.models.utils import get_model_as_dict
    from atproto_client.utils import facet_detection

    facets = facet_detection.detect_facets(text)
    dids: dict[str, str | None] = {}
    for mention in facet_detection.detect_mentions(text):
        handle = mention.handle.lower()
        if handle not in dids:
            dids[handle] = resolve_handle(handle)
        if dids[handle]:
            facets.append(models.AppBskyRichtextFacet.Main(
                features=[models.AppBskyRichtextFacet.Mention(did=dids[handle])],
                index=models.AppBskyRichtextFacet.ByteSlice(byte_start=mention.byte_start, byte_end=mention.byte_end),
            ))
    facets.sort(key=lambda facet: facet.index.byte_start)
    return [get_model_as_dict(facet) for facet in facets]


class SessionVault:
    """A bot's session blob: atproto's session string sealed (Fernet: AES and HMAC) with a key
    derived from the app password and handle, beside the times of recent createSession calls.

    The times are kept in clear: they are not secret, and a new app password must not forget the
    logins the old one made (Bluesky counts them per account). A session that does not open
    (another password, a tampered blob) is ignored; so are times that are not times.
    HKDF suits an app password (Bluesky makes it: 16 random letters and digits, 80 bits); it
    would not slow down guessing a person's own password, which BLUESKY_APP_PASSWORD must not be.
    One vault per post() call: it holds that call's state.
    """

    def __init__(self, store: SessionStore, handle: str, app_password: str):
        self._store = store
        self._handle = handle
        self._app_password = app_password
        self._fernet = None
        self.session: str | None = None
        self.create_session_times: list[float] = []
        self.secrets = {app_password}  # and the tokens of every session seen: never in a message

    def _seal(self):
        if self._fernet is None:
            from cryptography.fernet import Fernet
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF

            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=SEAL_SALT, info=self._handle.lower().encode())
            self._fernet = Fernet(base64.urlsafe_b64encode(key.derive(self._app_password.encode())))
        return self._fernet

    def load(self) -> None:
        """Read the store; what cannot be read or opened is left out (and logged, without its content)."""
        from cryptography.fernet import InvalidToken

        self.session, self.create_session_times = None, []
        try:
            blob = self._store.load()
        except Exception as exc:  # noqa: BLE001 (no stored session only costs a login)
            log.warning("could not load the Bluesky session of %s (%s): logging in again", self._handle, type(exc).__name__)
            return
        if not blob:
            return
        try:
            content = json.loads(blob)
            times = content.get("create_session_times", [])
            sealed = content.get("session")
        except (ValueError, AttributeError):
            log.warning("the stored Bluesky session of %s is not a session blob: ignored", self._handle)
            return
        now = time.time()
        if isinstance(times, list):
            self.create_session_times = [t for t in times if isinstance(t, (int, float)) and now - 86400 <= t <= now + 60]
        if isinstance(sealed, str):
            try:
                self.session = self._seal().decrypt(sealed.encode()).decode()
            except (InvalidToken, UnicodeDecodeError):
                log.warning("the stored Bluesky session of %s does not open (another app password, or altered): "
                            "logging in again", self._handle)

    def save(self) -> None:
        """Write the blob; a failure is logged, not raised (it only costs a login next run)."""
        day_ago = time.time() - 86400
        content = {
            "v": BLOB_VERSION,
            "create_session_times": [t for t in self.create_session_times if t >= day_ago],
            "session": self._seal().encrypt(self.session.encode()).decode() if self.session else None,
        }
        try:
            self._store.save(json.dumps(content))
        except Exception as exc:  # noqa: BLE001
            log.warning("could not save the Bluesky session of %s (%s)", self._handle, type(exc).__name__)

    def login_lock(self, timeout: float) -> AbstractContextManager[None]:
        """The store's lock for renewing the session (see SessionStore.login_lock)."""
        return self._store.login_lock(timeout)

    def create_session_refusal(self) -> DeliveryError | None:
        """A rate_limited error when one more createSession would pass our budget, else None."""
        now = time.time()
        for window, allowed in CREATE_SESSION_BUDGET:
            recent = sorted(t for t in self.create_session_times if t > now - window.total_seconds())
            if len(recent) >= allowed:
                frees_at = datetime.fromtimestamp(recent[len(recent) - allowed] + window.total_seconds(), timezone.utc)
                return DeliveryError(
                    ErrorKind.rate_limited,
                    f"not logging in to Bluesky again: {len(recent)} logins in the last {_duration(window)}, our limit "
                    f"under Bluesky's (sessions are reused between runs: so many means they keep being lost)",
                    retry_at=frees_at,
                )
        return None

    def scrubbed(self, error: DeliveryError) -> DeliveryError:
        """The error without any secret an answer might have echoed."""
        message = error.message
        for secret in self.secrets:
            if secret:
                message = message.replace(secret, "[secret]")
        return replace(error, message=message)

    def count_create_session(self) -> None:
        """Count a createSession about to be sent, and save before sending it (a crash still counts it)."""
        self.create_session_times.append(time.time())
        self.save()


def _duration(window: timedelta) -> str:
    return "day" if window == timedelta(days=1) else f"{int(window.total_seconds() // 60)} minutes"


class BlueskyDestination:
    """One Bluesky account a bot posts to, through its PDS (https://bsky.social for most accounts:
    atproto then follows the session to the account's own PDS host)."""

    network = "bluesky"
    # A repeat under the delivery's record key is refused as an existing record and read back
    # (getRecord): it can never make a second post, however late it comes.
    safe_retry_window = timedelta.max

    def __init__(
        self, pds_url: str, handle: str, app_password: str, timeout: float, session_store: SessionStore,
        *, langs: Sequence[str] = (), variable_prefix: str = "",
    ):
        self.pds_url = pds_url
        self.variable_prefix = variable_prefix  # the bot's, for the variables its errors name
        self.handle = handle.removeprefix("@")
        self.timeout = timeout
        self.langs = list(langs)
        self.login_wait = LOGIN_WAIT_REQUESTS * timeout
        self._app_password = app_password
        self._session_store = session_store

    def __repr__(self) -> str:
        return f"BlueskyDestination({self.pds_url!r}, {self.handle!r})"

    def new_key(self, seed: str) -> str:
        """A record key for one delivery: a TID of the current time, its clock id taken from `seed`.
        Store it with the delivery and pass it to every attempt."""
        clock_id = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:2], "big")
        return make_tid(time.time_ns() // 1000, clock_id)

    def post(self, text: str, *, key: str) -> RemotePost:
        """Write `text` as an app.bsky.feed.post under record key `key`, once; or raise DeliveryFailed.

        Before the createRecord, a session is made ready (the stored one, refreshed if it expires
        within 15 minutes; else a new login) and mentions are resolved: a failure there sent no
        post, so it is never unknown_outcome. A createRecord the PDS refuses for an expired session
        did nothing: it is sent once more after a refresh. A text Bluesky's rule refuses is
        refused here, before any request. Each call keeps its own state: calls may run in threads.
        """
        if not TID.fullmatch(key):
            raise ValueError(f"record key {key!r} is not a TID: make it with new_key() and keep it for the delivery")
        problem = bluesky_text_problem(text)
        if problem is not None:
            raise DeliveryFailed(DeliveryError(ErrorKind.text_refused, problem))
        vault = SessionVault(self._session_store, self.handle, self._app_password)
        client = self._client(vault)
        try:
            self._before_the_post(vault, self._start_session, client, vault)
            record = self._before_the_post(vault, self._record, client, text)
            return self._create_record(client, vault, key, record)
        finally:
            client.request.close()

    # ---- the steps of a post ----
    def _client(self, vault: SessionVault):
        from atproto_client import Client
        from atproto_client.request import Request

        client = Client(base_url=self.pds_url, request=Request(timeout=self.timeout))
        client.on_session_change(lambda event, session: self._session_changed(vault, event, session))
        return client

    def _before_the_post(self, vault: SessionVault, step, *args):
        """Run a step that comes before the createRecord: whatever went wrong, no post was sent."""
        try:
            return step(*args)
        except DeliveryFailed:
            raise
        except Exception as exc:
            error = self._error(exc)
            if error.kind is ErrorKind.unknown_outcome:
                error = replace(error, kind=ErrorKind.not_sent, message=f"{error.message} (before the post was sent)")
            raise DeliveryFailed(vault.scrubbed(error)) from exc

    def _start_session(self, client, vault: SessionVault) -> None:
        vault.load()
        if not self._resume(client, vault):
            self._renew_session(client, vault, stale=None)
        # atproto refreshes an access token that expires within 15 minutes before any call; done
        # here, under the login lock, and a refresh token Bluesky no longer takes leads to a new
        # login, not a failed post.
        elif client._should_refresh_session():
            self._renew_session(client, vault, stale=vault.session)

    def _resume(self, client, vault: SessionVault) -> bool:
        """Give the client the vault's session; False when the vault holds none that can be used."""
        from atproto_client.client.session import Session

        if not vault.session:
            return False
        try:
            session = Session.decode(vault.session)
        except ValueError:
            log.warning("the stored Bluesky session of %s is not a session string: logging in again", self.handle)
            return False
        vault.secrets |= {session.access_jwt, session.refresh_jwt}
        client.login(session_string=vault.session, fetch_bsky_profile=False)
        return True

    def _renew_session(self, client, vault: SessionVault, *, stale: str | None) -> None:
        """Replace the session `stale` (None: there is none) under the store's login lock: by one
        another run stored meanwhile, else by a refresh, else (no session, or Bluesky no longer
        takes its refresh token) by a new login. Nothing is posted while the lock is held."""
        try:
            with vault.login_lock(self.login_wait):
                vault.load()
                if vault.session != stale and self._resume(client, vault):
                    log.info("another run renewed the Bluesky session of %s: using it", self.handle)
                elif stale is None:
                    self._create_session(client, vault)
                else:
                    self._refresh_session(client, vault)
        except LoginLockTimeout:
            raise DeliveryFailed(DeliveryError(
                ErrorKind.not_sent,
                f"another run was logging in to Bluesky as {self.handle}: waited {self.login_wait:g} s for it",
            )) from None

    def _refresh_session(self, client, vault: SessionVault) -> None:
        """Refresh the client's session; when Bluesky no longer takes its refresh token, log in again."""
        try:
            client._refresh_and_set_session()
            log.info("refreshed the Bluesky session of %s", self.handle)
        except Exception as exc:
            if not _session_refused(exc):
                raise
            log.info("Bluesky refused to refresh the session of %s (%s): logging in again",
                     self.handle, self._error(exc).message)
            self._create_session(client, vault)

    def _create_session(self, client, vault: SessionVault) -> None:
        refusal = vault.create_session_refusal()
        if refusal is not None:
            raise DeliveryFailed(refusal)
        vault.count_create_session()
        client.login(self.handle, self._app_password, fetch_bsky_profile=False)
        log.info("logged in to Bluesky as %s (%d logins in the last day)", self.handle, len(vault.create_session_times))

    def _session_changed(self, vault: SessionVault, event, session) -> None:
        """atproto's callback on every new or refreshed session: seal and save it."""
        from atproto_client.client.session import SessionEvent

        vault.secrets |= {session.access_jwt, session.refresh_jwt}
        if event in (SessionEvent.CREATE, SessionEvent.REFRESH):
            vault.session = session.export()
            vault.save()

    def _record(self, client, text: str) -> dict:
        record = {
            "$type": POST_COLLECTION,
            "text": text,
            "createdAt": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        facets = bluesky_facets(text, lambda handle: _resolve_handle(client, handle))
        if facets:
            record["facets"] = facets
        if self.langs:
            record["langs"] = self.langs
        return record

    def _create_record(self, client, vault: SessionVault, key: str, record: dict) -> RemotePost:
        from atproto_client import models

        data = models.ComAtprotoRepoCreateRecord.Data(
            repo=_session_did(client), collection=POST_COLLECTION, rkey=key, record=record,
        )
        try:
            try:
                created = client.com.atproto.repo.create_record(data)
            except Exception as exc:
                if not _session_refused(exc):
                    raise
                self._before_the_post(vault, lambda: self._renew_session(client, vault, stale=vault.session))
                created = client.com.atproto.repo.create_record(data)
        except DeliveryFailed:
            raise
        except Exception as exc:
            landed = self._landed_earlier(client, key, record["text"], exc)
            if landed is not None:
                return landed
            raise DeliveryFailed(vault.scrubbed(self._error(exc))) from exc
        return self._remote_post(created.uri.rsplit("/", 1)[-1])

    def _landed_earlier(self, client, key: str, text: str, exc: BaseException) -> RemotePost | None:
        """After a 5xx (the PDS's answer to an existing record key) or a 409: the post already
        there under `key` when it is ours, else None (the error stands).

        A record of another text under the key is refused: the key was reused by another delivery.
        """
        from atproto_client import models

        status = _answer_status(exc)
        if status is None or not (status >= 500 or status == 409):
            return None
        try:
            stored = client.com.atproto.repo.get_record(
                models.ComAtprotoRepoGetRecord.Params(repo=_session_did(client), collection=POST_COLLECTION, rkey=key)
            )
        except Exception as lookup:  # noqa: BLE001 (not found, or unreachable: the first error stands)
            log.info("no earlier Bluesky post under key %s (%s)", key, self._error(lookup).message)
            return None
        stored_text = getattr(stored.value, "text", None)
        if stored_text != text:
            raise DeliveryFailed(DeliveryError(
                ErrorKind.refused,
                f"Bluesky already holds another post under record key {key} ({stored.uri}): the key was reused",
                status,
            ))
        log.info("Bluesky already holds this post under key %s: an earlier attempt landed", key)
        return self._remote_post(key)

    def _error(self, exc: BaseException) -> DeliveryError:
        """classify_bluesky_error, naming this bot's variables."""
        return classify_bluesky_error(exc, variable_prefix=self.variable_prefix)

    def _remote_post(self, rkey: str) -> RemotePost:
        return RemotePost(id=rkey, url=f"https://bsky.app/profile/{self.handle}/post/{rkey}")


def _session_did(client) -> str:
    return client._session.did


def _resolve_handle(client, handle: str) -> str | None:
    """The DID behind `handle`; None when Bluesky cannot resolve it (its 400)."""
    from atproto_client.exceptions import BadRequestError

    try:
        return client.resolve_handle(handle).did
    except BadRequestError:
        return None


def _answer_status(exc: BaseException) -> int | None:
    """The HTTP status of Bluesky's answer carried by an atproto error, None when no answer came."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _answer_error(exc: BaseException) -> tuple[str | None, str | None]:
    """The XRPC error name and message of an answer (None, None when it has none)."""
    content = getattr(getattr(exc, "response", None), "content", None)
    name, message = getattr(content, "error", None), getattr(content, "message", None)
    return (name if isinstance(name, str) else None), (message if isinstance(message, str) else None)


def _session_refused(exc: BaseException) -> bool:
    """Bluesky refused the session's token (expired, revoked, unknown): a new token may do."""
    status = _answer_status(exc)
    return status == 401 or (status == 400 and _answer_error(exc)[0] in SESSION_ERRORS)


def credentials_hint(variable_prefix: str) -> str:
    """What to check when Bluesky refuses the login; `variable_prefix` is the bot's (BotSettings.prefix)."""
    return f"check {variable_prefix}BLUESKY_HANDLE and {variable_prefix}BLUESKY_APP_PASSWORD"


def classify_bluesky_error(exc: BaseException, *, variable_prefix: str = "") -> DeliveryError:
    """Sort an exception raised by an atproto call into one ErrorKind (see core/delivery.py); its
    message names the variables to check with the bot's `variable_prefix`.

    Never raises: when the details cannot be read, the kind follows from whether Bluesky answered.
    Messages hold Bluesky's own words or the network failure's kind, never a request's content.
    """
    try:
        return _classify(exc, variable_prefix)
    except Exception as failure:  # noqa: BLE001 (the caller must settle its delivery whatever happened)
        log.error("could not read the details of a failed Bluesky call (%s): sorting it by whether Bluesky answered",
                  type(failure).__name__)
        status = _answer_status(exc)
        if status is not None:
            return DeliveryError(_kind_of_status(status), f"Bluesky answered {status} (its details could not be read)", status)
        return DeliveryError(ErrorKind.unknown_outcome, f"{type(exc).__name__} while talking to Bluesky (its details could not be read)")


def _classify(exc: BaseException, variable_prefix: str) -> DeliveryError:
    import httpx
    from atproto_client.exceptions import LoginRequiredError

    status = _answer_status(exc)
    if status is not None:
        return _classify_answer(exc, status, variable_prefix)
    if isinstance(exc, LoginRequiredError):
        return DeliveryError(ErrorKind.credentials, f"no Bluesky session to post with: {credentials_hint(variable_prefix)}")
    # atproto wraps httpx's timeouts and network errors (keeping them as the cause); others come raw.
    cause = exc.__cause__ if isinstance(exc.__cause__, httpx.TransportError) else exc
    reason = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
    if isinstance(cause, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)):
        return DeliveryError(ErrorKind.not_sent, f"could not connect to Bluesky: {reason}")
    if isinstance(cause, httpx.TimeoutException):
        return DeliveryError(ErrorKind.unknown_outcome, f"Bluesky did not answer in time: {reason}")
    if isinstance(cause, httpx.TransportError):
        return DeliveryError(ErrorKind.unknown_outcome, f"the connection to Bluesky failed mid-request: {reason}")
    # Not str(exc): an answer atproto could not read (a pydantic error) quotes its content, tokens included.
    return DeliveryError(ErrorKind.unknown_outcome, f"unexpected {type(exc).__name__} while talking to Bluesky")


def _classify_answer(exc: BaseException, status: int, variable_prefix: str) -> DeliveryError:
    name, said = _answer_error(exc)
    words = ": ".join(part for part in (name, said) if part) or "no message"
    message = f"Bluesky answered {status} {words}"
    if status == 429:
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        return DeliveryError(ErrorKind.rate_limited, message, status, reset_time(headers.get("ratelimit-reset")))
    if status in (401, 403) or (status == 400 and name in SESSION_ERRORS):
        return DeliveryError(ErrorKind.credentials, f"{message} ({credentials_hint(variable_prefix)})", status)
    if status == 400 and (said or "").startswith(INVALID_POST):
        return DeliveryError(ErrorKind.text_refused, message, status)
    return DeliveryError(_kind_of_status(status), message, status)


def _kind_of_status(status: int) -> ErrorKind:
    if status == 429:
        return ErrorKind.rate_limited
    if status in (401, 403):
        return ErrorKind.credentials
    if status >= 500:
        return ErrorKind.server_error
    return ErrorKind.refused
