"""A bot's destinations: the client for each network it posts to, and each network's text rule.

The Mastodon and Bluesky clients are imported only when a bot posts there for real: the API
starts without them (its cold start), and an X-only bot never loads them.
"""
from __future__ import annotations

from collections.abc import Callable

import tweepy
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core import tweet_text
from core.config import BotSettings, Settings, XSettings
from core.delivery import Destination
from core.x_client import XDestination, make_x_client
from db.models import NetworkSession, utcnow

NETWORK_NAMES = {"x": "X", "mastodon": "Mastodon", "bluesky": "Bluesky"}


def text_problem(network: str, text: str, bot: BotSettings) -> str | None:
    """Why a text (as core.tweet_text.clean_text returns it) breaks the network's rule (one line),
    or None when it may be posted there."""
    if network == "mastodon":
        return tweet_text.mastodon_text_problem(text, bot.MASTODON_MAX_CHARACTERS)
    if network == "bluesky":
        return tweet_text.bluesky_text_problem(text)
    return tweet_text.x_text_problem(text)


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


def missing_configuration(bot: BotSettings) -> str | None:
    """Why this bot cannot post with its settings, or None when it can."""
    problems = []
    for network in bot.destinations:
        missing = [] if bot.dry_run(network) else bot.missing_credentials(network)
        if missing:
            dry_run = f"{bot.prefix}{'TWITTER' if network == 'x' else network.upper()}_DRY_RUN"
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
                bot.MASTODON_API_BASE_URL, bot.MASTODON_ACCESS_TOKEN.get_secret_value(), settings.MASTODON_TIMEOUT_SECONDS
            )
        else:
            from posting.bluesky_client import BlueskyDestination

            clients[network] = BlueskyDestination(
                bot.BLUESKY_PDS_URL, bot.BLUESKY_HANDLE, bot.BLUESKY_APP_PASSWORD.get_secret_value(),
                settings.BLUESKY_TIMEOUT_SECONDS, DatabaseSessionStore(session_factory, account=bot.name, network=network),
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
    Two runs refreshing at once: the last save wins, and the other's session still works or is made anew.
    """

    def __init__(self, session_factory: sessionmaker[Session], *, account: str, network: str):
        self.session_factory = session_factory
        self.account = account
        self.network = network

    def load(self) -> str | None:
        with self.session_factory() as session:
            return session.scalar(select(NetworkSession.sealed).where(
                NetworkSession.account == self.account, NetworkSession.network == self.network))

    def save(self, blob: str) -> None:
        for _attempt in range(2):  # a first save racing another run's first save inserts once, then updates
            with self.session_factory() as session:
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
