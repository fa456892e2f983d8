"""A bot's destinations: the client for each network it posts to, and each network's text rule.

The Mastodon and Bluesky clients are imported only when a bot posts there for real: the API
starts without them (its cold start), and an X-only bot never loads them.
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager

import tweepy
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core import tweet_text
from core.config import BotSettings, Settings, XSettings
from core.delivery import Destination
from core.x_client import XDestination, make_x_client
from db.models import NetworkSession, utcnow
from posting.login_locks import LoginLockTimeout, holding, holding_file, process_lock

NETWORK_NAMES = {"x": "X", "mastodon": "Mastodon", "bluesky": "Bluesky"}
LOCK_NOT_AVAILABLE = "55P03"  # Postgres: lock_timeout ran out
# A session's login lock on Postgres: one advisory lock per schema, bot and network (:name).
ADVISORY_KEY = "hashtextextended(current_schema() || :name, 0)"


def text_problem(network: str, text: str, bot: BotSettings) -> str | None:
    """Why a text (as core.tweet_text.clean_text returns it) breaks the network's rule (one line),
    or None when it may be posted there."""
    if network == "mastodon":
        return tweet_text.mastodon_text_problem(text, bot.MASTODON_MAX_CHARACTERS)
    if network == "bluesky":
        return tweet_text.bluesky_text_problem(text)
    return tweet_text.x_text_problem(text)


def text_count(network: str, text: str, bot: BotSettings) -> tuple[int, int]:
    """The network's count of a text (as core.tweet_text.clean_text returns it) and its limit: what
    the curation page shows (X's weighted length, Mastodon's characters, Bluesky's graphemes)."""
    if network == "mastodon":
        return tweet_text.mastodon_length(text), bot.MASTODON_MAX_CHARACTERS
    if network == "bluesky":
        return tweet_text.grapheme_count(text), tweet_text.BLUESKY_MAX_GRAPHEMES
    return tweet_text.weighted_length(text), tweet_text.MAX_WEIGHTED_LENGTH


def text_rule(bot: BotSettings) -> Callable[[str], str | None]:
    """The store's rule for the bot's tweets: a text is kept when at least one of its destinations
    may post it (it is then posted only there); else the function says why, per destination."""
    def problem(text: str) -> str | None:
        problems = [(network, text_problem(network, text, bot)) for network in bot.destinations]
        if any(found is None for _, found in problems):
            return None
        if len(problems) == 1:
            return problems[0][1]
        return "; ".join(f"{NETWORK_NAMES[network]}: {found}" for network, found in problems)

    return problem


def dry_run_variable(bot: BotSettings, network: str) -> str:
    """The variable, as the operator sets it, that makes the bot's posts to `network` dry runs."""
    return f"{bot.prefix}{'TWITTER' if network == 'x' else network.upper()}_DRY_RUN"


def address_variable(bot: BotSettings, network: str) -> str:
    """The variable, as the operator sets it, holding the address the bot posts to on `network`
    (X's is the service's, for every bot)."""
    if network == "x":
        return "TWITTER_API_BASE_URL"
    return f"{bot.prefix}{'MASTODON_API_BASE_URL' if network == 'mastodon' else 'BLUESKY_PDS_URL'}"


def bot_variables(bot: BotSettings, *names: str) -> str:
    """The bot's variables `names`, as the operator sets them (with its prefix): `A`, `A and B`, `A, B and C`."""
    return _and([bot.prefix + name for name in names])


def public_profile(bot: BotSettings, network: str) -> tuple[str, str] | None:
    """The bot's account on `network` as people see it, (`@name`, its page's URL); None for Mastodon
    (the profile's path needs a lookup) and for a Bluesky bot whose handle is no longer set."""
    if network == "x":
        return f"@{bot.name}", f"https://x.com/{bot.name}"
    if network == "bluesky" and bot.BLUESKY_HANDLE:
        return f"@{bot.BLUESKY_HANDLE}", f"https://bsky.app/profile/{bot.BLUESKY_HANDLE}"
    return None


def unconfirmed_note(bot: BotSettings, networks: Collection[str]) -> str:
    """What an unconfirmed tweet's error says after its reason: which of the bot's networks may have
    posted it (those of its unconfirmed deliveries), where to look on each, and what to do then."""
    ordered = [network for network in NETWORK_NAMES if network in networks]
    # Settings unset only when the bot no longer posts there for real (a dry run since the delivery was attempted).
    places = {}
    for network in ordered:
        if profile := public_profile(bot, network):
            places[network] = profile[1]
        elif network == "mastodon" and bot.MASTODON_API_BASE_URL:
            places[network] = f"the bot's profile on {bot.MASTODON_API_BASE_URL}"
        else:
            places[network] = f"the bot's {NETWORK_NAMES[network]} profile"
    then = " and" if len(ordered) == 1 else ", then"
    return (f"{_and([NETWORK_NAMES[n] for n in ordered])} may have posted it: "
            f"check {_and([places[n] for n in ordered])}{then} set it to posted or queued")


def _and(items: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def missing_configuration(bot: BotSettings) -> str | None:
    """Why this bot cannot post with its settings, or None when it can."""
    problems = []
    for network in bot.destinations:
        missing = [] if bot.dry_run(network) else bot.missing_credentials(network)
        if missing:
            dry_run = dry_run_variable(bot, network)
            problems.append(f"posting to {NETWORK_NAMES[network]} is not configured: {', '.join(missing)} "
                            f"not set (see .env_reference), or set {dry_run}=true")
    return "; ".join(problems) or None


def make_destinations(
    bot: BotSettings,
    settings: Settings,
    session_factory: sessionmaker[Session],
    *,
    x_client: tweepy.Client | None = None,
) -> dict[str, Destination]:
    """A client for each destination the bot posts to for real (none for a dry-run one)."""
    clients: dict[str, Destination] = {}
    for network in bot.destinations:
        if bot.dry_run(network):
            continue
        if network == "x":
            clients[network] = XDestination(x_client or make_x_client(_x_settings(bot, settings)), bot.name)
        elif network == "mastodon":
            from posting.mastodon_client import MastodonDestination

            clients[network] = MastodonDestination(
                bot.MASTODON_API_BASE_URL, bot.MASTODON_ACCESS_TOKEN.get_secret_value(), settings.MASTODON_TIMEOUT_SECONDS,
                variable_prefix=bot.prefix,
            )
        else:
            from posting.bluesky_client import BlueskyDestination

            clients[network] = BlueskyDestination(
                bot.BLUESKY_PDS_URL, bot.BLUESKY_HANDLE, bot.BLUESKY_APP_PASSWORD.get_secret_value(),
                settings.BLUESKY_TIMEOUT_SECONDS, DatabaseSessionStore(session_factory, account=bot.name, network=network),
                variable_prefix=bot.prefix,
            )
    return clients


def _x_settings(bot: BotSettings, settings: Settings) -> XSettings:
    """The bot's X credentials with the service's X address and timeout."""
    if bot is settings:  # the one bot: its settings are the service's
        return settings
    return XSettings(
        _env_file=None, CONSUMER_KEY=bot.CONSUMER_KEY, CONSUMER_SECRET=bot.CONSUMER_SECRET, ACCESS_KEY=bot.ACCESS_KEY,
        ACCESS_SECRET=bot.ACCESS_SECRET, TWITTER_API_BASE_URL=settings.TWITTER_API_BASE_URL,
        TWITTER_TIMEOUT_SECONDS=settings.TWITTER_TIMEOUT_SECONDS,
    )


class DatabaseSessionStore:
    """Where a bot keeps its sealed network session between runs: one row per bot and network.

    Each load and save is its own short transaction, never held while the network answers.
    Renewing the session (a refresh or a login) happens under `login_lock`, one run at a time
    per bot and network, so a storm of runs that find no session log in once.
    """

    def __init__(self, session_factory: sessionmaker[Session], *, account: str, network: str):
        self.session_factory = session_factory
        self.account = account
        self.network = network
        self._held = threading.local()  # the login lock's session, in the thread holding the lock

    def load(self) -> str | None:
        with self._session() as session:
            return session.scalar(select(NetworkSession.sealed).where(
                NetworkSession.account == self.account, NetworkSession.network == self.network))

    def save(self, blob: str) -> None:
        for _attempt in range(2):  # a first save racing another run's first save inserts once, then updates
            with self._session() as session:
                row = session.scalar(select(NetworkSession).where(
                    NetworkSession.account == self.account, NetworkSession.network == self.network).with_for_update())
                if row is None:
                    session.add(NetworkSession(account=self.account, network=self.network, sealed=blob))
                else:
                    row.sealed, row.updated_at = blob, utcnow()
                try:
                    session.commit()
                    return
                except IntegrityError:
                    session.rollback()
        raise RuntimeError("could not save the network session")

    @contextmanager
    def login_lock(self, timeout: float) -> Iterator[None]:
        """One run at a time, per bot and network, in any thread or process on this database;
        raises LoginLockTimeout after `timeout` seconds of waiting.

        Postgres: a session-level advisory lock keyed on the schema, bot and network, taken with
        lock_timeout as the bound on a connection of its own; it outlives that connection's
        transactions and dies with the connection (a killed run frees it). While the lock is held,
        this thread's loads and saves go through that connection: runs waiting for the lock each
        hold a pooled connection, and must not leave the holder none to save with.
        SQLite (one host): an flock on a file beside the database, `<database>.<digest>.login-lock`,
        which orders threads and processes alike; SQLite serialises the saves themselves. Any other
        database (SQLite in memory): a lock of this process.
        """
        engine = self.session_factory.kw["bind"]
        if engine.dialect.name == "postgresql":
            with self._advisory_lock(timeout):
                yield
            return
        name = f"{self.network}/{self.account}"
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            digest = hashlib.sha256(name.encode()).hexdigest()[:16]
            with holding_file(f"{database}.{digest}.login-lock", timeout):
                yield
            return
        with holding(process_lock((str(engine.url), name)), timeout):
            yield

    @contextmanager
    def _advisory_lock(self, timeout: float) -> Iterator[None]:
        key = {"name": f" login {self.network}/{self.account}"}
        with self.session_factory.kw["bind"].connect() as connection:
            try:
                connection.execute(select(func.set_config("lock_timeout", f"{max(1, round(timeout * 1000))}ms", True)))
                connection.execute(text(f"SELECT pg_advisory_lock({ADVISORY_KEY})"), key)
                connection.commit()  # lock_timeout was this transaction's; the lock is the connection's
            except DBAPIError as exc:
                if _sqlstate(exc) != LOCK_NOT_AVAILABLE:
                    raise
                raise LoginLockTimeout(f"the login lock was busy for {timeout:g} s") from None
            try:
                with self.session_factory(bind=connection) as session:
                    self._held.session = session
                    yield
            finally:
                self._held.session = None
                try:
                    connection.rollback()
                    connection.execute(text(f"SELECT pg_advisory_unlock({ADVISORY_KEY})"), key)
                    connection.commit()
                except DBAPIError:
                    connection.invalidate()  # closing the connection frees its lock

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """A session for one load or save: the login lock's own while this thread holds it."""
        held = getattr(self._held, "session", None)
        if held is None:
            with self.session_factory() as session:
                yield session
            return
        try:
            yield held
        finally:
            held.rollback()  # ends a load's transaction; a save has committed


def _sqlstate(exc: DBAPIError) -> str | None:
    """The SQLSTATE of a Postgres error, from psycopg2 (pgcode) or pg8000 (its fields' "C")."""
    code = getattr(exc.orig, "pgcode", None)
    if code is None and exc.orig is not None and exc.orig.args and isinstance(exc.orig.args[0], dict):
        code = exc.orig.args[0].get("C")
    return code
