"""Settings: every knob of the service, read once from the environment and an optional `.env`.

Each variable is documented in `.env_reference`. `load_settings()` turns a missing or
invalid value into one `ConfigError` line naming the variable.
"""
from __future__ import annotations

import re
from enum import Enum
from functools import cached_property
from urllib.parse import quote

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

X_CREDENTIAL_VARS = ("CONSUMER_KEY", "CONSUMER_SECRET", "ACCESS_KEY", "ACCESS_SECRET")
PLACEHOLDER_SECRETS = {"changethis", "change-me", "secret", "your_secret_token"}


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it and says what to do."""


class UnknownBot(LookupError):
    """A request or command named a bot that BOTS (or ACCOUNT) does not have."""


class TweetOrder(str, Enum):
    random = "random"
    oldest = "oldest"


class LogFormat(str, Enum):
    text = "text"
    json = "json"


class DatabaseSettings(BaseSettings):
    """The variables that pick the database; enough for migrations, which need no token."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    # DATABASE_URL, else Cloud SQL (CONNECTION_NAME), else Postgres over TCP (DB_HOST), else SQLite.
    DATABASE_URL: str | None = None
    CONNECTION_NAME: str | None = None
    DB_HOST: str | None = None
    DB_PORT: int = 5432
    DB_USERNAME: str = "postgres"
    DB_PASSWORD: SecretStr = SecretStr("")
    DB_NAME: str = "tweets"
    SQLITE_PATH: str = "tweets.db"

    @cached_property
    def database_url(self) -> str:
        """The SQLAlchemy URL, chosen by which variables are set (see above)."""
        if self.DATABASE_URL:
            return self.DATABASE_URL
        user = quote(self.DB_USERNAME, safe="")
        password = quote(self.DB_PASSWORD.get_secret_value(), safe="")
        auth = f"{user}:{password}" if password else user
        if self.CONNECTION_NAME:
            socket = f"/cloudsql/{self.CONNECTION_NAME}/.s.PGSQL.5432"
            return f"postgresql+pg8000://{auth}@/{self.DB_NAME}?unix_sock={socket}"
        if self.DB_HOST:
            return f"postgresql+psycopg2://{auth}@{self.DB_HOST}:{self.DB_PORT}/{self.DB_NAME}"
        return f"sqlite:///{self.SQLITE_PATH}"


class XSettings(BaseSettings):
    """X's API credentials and address; enough for scripts that read X (download_tweets.py)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    CONSUMER_KEY: SecretStr | None = None
    CONSUMER_SECRET: SecretStr | None = None
    ACCESS_KEY: SecretStr | None = None
    ACCESS_SECRET: SecretStr | None = None
    BEARER_TOKEN: SecretStr | None = None
    TWITTER_API_BASE_URL: str = "https://api.x.com"
    TWITTER_TIMEOUT_SECONDS: float = Field(default=20.0, gt=0)

    @field_validator("TWITTER_API_BASE_URL")
    @classmethod
    def _base_url_has_scheme(cls, value: str) -> str:
        if not re.match(r"https?://", value):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def missing_x_credentials(self) -> list[str]:
        return [name for name in X_CREDENTIAL_VARS if not getattr(self, name)]


NETWORKS = ("x", "mastodon", "bluesky")
BOT_NAME = re.compile(r"[A-Za-z0-9_]{1,15}")
# How many request timeouts one delivery may wait for: Bluesky may wait for another run's login (at most
# posting.bluesky_client.LOGIN_WAIT_REQUESTS = 3 timeouts), refresh or make its session, post, and after
# a refusal of an existing record read it back.
CALLS_PER_DELIVERY = {"x": 1, "mastodon": 1, "bluesky": 6}


def _bot_name(value: str, variable: str) -> str:
    value = value.strip().lstrip("@")
    if not BOT_NAME.fullmatch(value):
        raise ValueError(f"{variable}: {value[:40]!r} is no bot name: 1-15 letters, digits or underscores (an X handle)")
    return value


class BotSettings(BaseSettings):
    """One bot: where it posts, with which credentials, and when.

    With one bot (BOTS unset) these are the plain variables (CONSUMER_KEY, MASTODON_ACCESS_TOKEN...).
    With several, each bot reads them with its own prefix, BOT_<NAME>_ (BOT_ALICE_CONSUMER_KEY...),
    and never falls back on another bot's or the plain ones: a bot posts only with its own credentials.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    _name: str = PrivateAttr(default="")
    _prefix: str = PrivateAttr(default="")
    # Where this bot posts: a comma-separated list of x, mastodon, bluesky.
    DESTINATIONS: str = "x"
    # X (OAuth 1.0a user context)
    CONSUMER_KEY: SecretStr | None = None
    CONSUMER_SECRET: SecretStr | None = None
    ACCESS_KEY: SecretStr | None = None
    ACCESS_SECRET: SecretStr | None = None
    TWITTER_DRY_RUN: bool = False
    # Mastodon: the instance and an access token with the write:statuses scope
    MASTODON_API_BASE_URL: str | None = None
    MASTODON_ACCESS_TOKEN: SecretStr | None = None
    MASTODON_MAX_CHARACTERS: int = Field(default=500, ge=1, le=100_000)
    MASTODON_DRY_RUN: bool = False
    # Bluesky: the handle and an app password; the PDS that hosts the account
    BLUESKY_HANDLE: str | None = None
    BLUESKY_APP_PASSWORD: SecretStr | None = None
    BLUESKY_PDS_URL: str = "https://bsky.social"
    BLUESKY_DRY_RUN: bool = False
    # Which queued tweet to post next, and when (five-field cron in TIME_ZONE)
    TWEET_ORDER: TweetOrder = TweetOrder.random
    SCHEDULE: str = "0 9 * * *"
    TIME_ZONE: str = "Etc/UTC"

    @field_validator("DESTINATIONS")
    @classmethod
    def _destinations_are_networks(cls, value: str) -> str:
        names = [name.strip().lower() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in NETWORKS]
        if unknown or not names:
            raise ValueError(f"must list one or more of {', '.join(NETWORKS)}, comma-separated (got {value[:80]!r})")
        if len(set(names)) != len(names):
            raise ValueError("names a network twice")
        return ",".join(names)

    @field_validator("MASTODON_API_BASE_URL", "BLUESKY_HANDLE", "BLUESKY_PDS_URL", mode="before")
    @classmethod
    def _empty_is_unset(cls, value, info):
        """`NAME=` with nothing after it (as .env_reference has them) means not set: the default."""
        if isinstance(value, str) and not value.strip():
            return cls.model_fields[info.field_name].default
        return value

    @field_validator("MASTODON_API_BASE_URL", "BLUESKY_PDS_URL")
    @classmethod
    def _url_has_scheme(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/\s]+", value):
            raise ValueError("must be a URL starting with https:// (or http:// for a local test server)")
        return value.rstrip("/") if value is not None else None

    @field_validator("BLUESKY_HANDLE")
    @classmethod
    def _handle_is_a_domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lstrip("@")
        if not re.fullmatch(r"(?=.{3,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]*", value):
            raise ValueError("must be a Bluesky handle such as name.bsky.social")
        return value

    @property
    def name(self) -> str:
        """The bot's name: the account its tweets are stored under."""
        return self._name

    @property
    def prefix(self) -> str:
        """What this bot's variables start with: BOT_<NAME>_, or nothing for the one bot."""
        return self._prefix

    @property
    def destinations(self) -> tuple[str, ...]:
        return tuple(self.DESTINATIONS.split(","))

    def dry_run(self, network: str) -> bool:
        return {"x": self.TWITTER_DRY_RUN, "mastodon": self.MASTODON_DRY_RUN, "bluesky": self.BLUESKY_DRY_RUN}[network]

    def credential_vars(self, network: str) -> tuple[str, ...]:
        """The variables (without prefix) a network needs to post."""
        return {
            "x": X_CREDENTIAL_VARS,
            "mastodon": ("MASTODON_API_BASE_URL", "MASTODON_ACCESS_TOKEN"),
            "bluesky": ("BLUESKY_HANDLE", "BLUESKY_APP_PASSWORD"),
        }[network]

    def missing_credentials(self, network: str) -> list[str]:
        """The variables, as the operator sets them (with this bot's prefix), a network lacks."""
        return [self.prefix + name for name in self.credential_vars(network) if not getattr(self, name)]


class Settings(DatabaseSettings, XSettings, BotSettings):
    """Everything the service reads; one object, built once by load_settings()."""

    # Service
    SECRET_TOKEN: SecretStr = Field(min_length=16)
    # The one bot's name (its X handle); with several bots, BOTS names them and ACCOUNT (optional)
    # picks the one that requests naming no bot are about (default: the first in BOTS).
    ACCOUNT: str | None = None
    BOTS: str | None = None
    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: LogFormat = LogFormat.text
    MAX_UPLOAD_BYTES: int = Field(default=5 * 1024 * 1024, gt=0)

    # Posting: X's credentials and API address are in XSettings; the one bot's destinations, credentials,
    # order and schedule in BotSettings (plain names; several bots read them with their prefixes)
    MASTODON_TIMEOUT_SECONDS: float = Field(default=20.0, gt=0, le=600)
    BLUESKY_TIMEOUT_SECONDS: float = Field(default=20.0, gt=0, le=600)
    POSTING_LEASE_MINUTES: float = Field(default=10.0, gt=0)
    MAX_REJECTED_PER_CALL: int = Field(default=3, ge=1, le=20)
    QUEUE_WARNING_THRESHOLD: int = Field(default=7, ge=0)

    # Google Cloud (used by the Makefile's deploy targets; documented here so one file lists them all)
    PROJECT_ID: str | None = None
    DOCKER_INSTANCE_NAME: str | None = None
    SCHEDULER_JOB_NAME: str | None = None
    CLOUD_RUN_URL: str | None = None
    DB_INSTANCE: str | None = None

    _bots: dict[str, BotSettings] = PrivateAttr(default_factory=dict)

    def __init__(self, **values):
        super().__init__(**values)
        env_file = values.get("_env_file", self.model_config.get("env_file"))
        self._bots = self._read_bots(env_file)
        self._check_lease()

    @field_validator("ACCOUNT")
    @classmethod
    def _account_is_a_handle(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lstrip("@")
        if not BOT_NAME.fullmatch(value):
            raise ValueError("must be an X handle: 1-15 letters, digits or underscores")
        return value

    @field_validator("BOTS")
    @classmethod
    def _bots_are_names(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        names = [_bot_name(name, "BOTS") for name in value.split(",") if name.strip()]
        if len({name.lower() for name in names}) != len(names):
            raise ValueError("names a bot twice")
        return ",".join(names)

    @field_validator("SECRET_TOKEN")
    @classmethod
    def _token_is_not_a_placeholder(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("is a placeholder: generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
        return value

    def _read_bots(self, env_file) -> dict[str, BotSettings]:
        if self.BOTS is None:
            if self.ACCOUNT is None:
                raise ConfigError(
                    "ACCOUNT is not set: set it to the bot's X handle (or BOTS to several bots' names). "
                    "Set it in the environment or in .env (see .env_reference)."
                )
            return {}
        names = self.BOTS.split(",")
        if self.ACCOUNT is not None and self.ACCOUNT not in names:
            raise ConfigError(f"ACCOUNT is invalid: {self.ACCOUNT!r} is not one of BOTS ({self.BOTS}).")
        return {name: _bot_settings(name, f"BOT_{name.upper()}_", _env_file=env_file) for name in names}

    def _check_lease(self) -> None:
        """A posting call still waiting for a network must never be swept as stopped mid-post."""
        timeouts = {"x": ("TWITTER_TIMEOUT_SECONDS", self.TWITTER_TIMEOUT_SECONDS),
                    "mastodon": ("MASTODON_TIMEOUT_SECONDS", self.MASTODON_TIMEOUT_SECONDS),
                    "bluesky": ("BLUESKY_TIMEOUT_SECONDS", self.BLUESKY_TIMEOUT_SECONDS)}
        used = [network for network in NETWORKS if any(network in bot.destinations for bot in self.bots.values())]
        longest = sum(CALLS_PER_DELIVERY[network] * timeouts[network][1] for network in used)
        if self.POSTING_LEASE_MINUTES * 60 < 2 * longest:
            terms = " + ".join(
                f"{CALLS_PER_DELIVERY[network]} x {timeouts[network][0]}" if CALLS_PER_DELIVERY[network] > 1
                else timeouts[network][0] for network in used
            )
            raise ConfigError(
                f"POSTING_LEASE_MINUTES is invalid: must be at least twice {terms} ({longest:g} s), or calls still "
                "waiting for a network would be taken as stopped mid-post. "
                "Set it in the environment or in .env (see .env_reference)."
            )

    @property
    def name(self) -> str:
        return self.ACCOUNT or ""

    @property
    def bots(self) -> dict[str, BotSettings]:
        """Every bot by name, in the order BOTS gives; or the one bot, ACCOUNT, whose settings are
        these (so a copy of them with other values is that bot with those values)."""
        return self._bots if self.BOTS is not None else {self.ACCOUNT: self}

    @property
    def default_bot(self) -> BotSettings:
        """The bot a request or command naming none is about: ACCOUNT, else the first of BOTS."""
        bots = self.bots
        return bots[self.ACCOUNT] if self.ACCOUNT is not None else next(iter(bots.values()))

    def bot(self, name: str | None) -> BotSettings:
        """The named bot (None: the default one); raises UnknownBot."""
        if name is None:
            return self.default_bot
        found = self.bots.get(name.strip().lstrip("@"))
        if found is None:
            raise UnknownBot(f"no bot is named {name[:40]!r}: the bots are {', '.join(self.bots)}")
        return found


def _bot_settings(name: str, prefix: str, **values) -> BotSettings:
    """A bot's settings; a bad value is a ConfigError naming the variable with the bot's prefix."""
    try:
        bot = BotSettings(_env_prefix=prefix, **values)
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = prefix + ".".join(str(part) for part in error["loc"])
        raise ConfigError(
            f"{variable} is invalid: {error['msg']}. Set it in the environment or in .env (see .env_reference)."
        ) from None
    bot._name, bot._prefix = name, prefix
    return bot


def load_settings(cls: type[BaseSettings] = Settings, **overrides):
    """Read the settings, or raise ConfigError with one line naming the first bad variable."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        if error["type"] == "missing":
            problem = "is not set"
        else:
            problem = f"is invalid: {error['msg']}"
        raise ConfigError(
            f"{name} {problem}. Set it in the environment or in .env (see .env_reference)."
        ) from None
