"""Settings: every knob of the service, read once from the environment and an optional `.env`.

Each variable is documented in `.env_reference`. `load_settings()` turns a missing or
invalid value into one `ConfigError` line naming the variable.
"""
from __future__ import annotations

import re
from enum import Enum
from functools import cached_property
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

X_CREDENTIAL_VARS = ("CONSUMER_KEY", "CONSUMER_SECRET", "ACCESS_KEY", "ACCESS_SECRET")
PLACEHOLDER_SECRETS = {"changethis", "change-me", "secret", "your_secret_token"}


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it and says what to do."""


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


class Settings(DatabaseSettings, XSettings):
    """Everything the service reads; one object, built once by load_settings()."""

    # Service
    SECRET_TOKEN: SecretStr = Field(min_length=16)
    ACCOUNT: str
    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: LogFormat = LogFormat.text
    MAX_UPLOAD_BYTES: int = Field(default=5 * 1024 * 1024, gt=0)

    # X (Twitter) posting; the credentials and API address are in XSettings
    TWITTER_DRY_RUN: bool = False
    TWEET_ORDER: TweetOrder = TweetOrder.random
    POSTING_LEASE_MINUTES: float = Field(default=10.0, gt=0)
    MAX_REJECTED_PER_CALL: int = Field(default=3, ge=1, le=20)
    QUEUE_WARNING_THRESHOLD: int = Field(default=7, ge=0)

    # Google Cloud (used by the Makefile's deploy targets; documented here so one file lists them all)
    PROJECT_ID: str | None = None
    DOCKER_INSTANCE_NAME: str | None = None
    SCHEDULER_JOB_NAME: str | None = None
    CLOUD_RUN_URL: str | None = None
    DB_INSTANCE: str | None = None
    # When to post: a five-field cron read by Cloud Scheduler (make add-scheduler) and by the
    # self-hosted `python -m posting.scheduler`, which checks it (posting.scheduler.parse_schedule).
    SCHEDULE: str = "0 9 * * *"
    TIME_ZONE: str = "Etc/UTC"

    @field_validator("ACCOUNT")
    @classmethod
    def _account_is_a_handle(cls, value: str) -> str:
        value = value.strip().lstrip("@")
        if not re.fullmatch(r"[A-Za-z0-9_]{1,15}", value):
            raise ValueError("must be an X handle: 1-15 letters, digits or underscores")
        return value

    @field_validator("POSTING_LEASE_MINUTES")
    @classmethod
    def _lease_outlasts_a_call_to_x(cls, value: float, info: ValidationInfo) -> float:
        """A posting call still waiting for X must never be swept as stopped mid-post."""
        timeout = info.data.get("TWITTER_TIMEOUT_SECONDS")
        if timeout is not None and value * 60 < 2 * timeout:
            raise ValueError(
                f"must be at least twice TWITTER_TIMEOUT_SECONDS ({timeout:g} s), or calls still waiting "
                "for X would be taken as stopped mid-post"
            )
        return value

    @field_validator("SECRET_TOKEN")
    @classmethod
    def _token_is_not_a_placeholder(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("is a placeholder: generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
        return value


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
