"""Settings of the generation service (`uvicorn ml.serve:app`), read once from the environment and `.env`.

Each variable is documented in `.env_reference` under "Generation service". The service does not
read the tweet store's settings (no database, no SECRET_TOKEN), so it can run on its own.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.config import PLACEHOLDER_SECRETS, LogFormat, load_settings

MIN_TOKEN_LENGTH = 16


class GenerationSettings(BaseSettings):
    """Everything `ml.serve` reads."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    # The run to serve: GENERATION_CHECKPOINT_DIR/GENERATION_RUN_NAME, as ml.model / finetune wrote it.
    GENERATION_CHECKPOINT_DIR: Path = Path("ml/checkpoint")
    GENERATION_RUN_NAME: str = "run1"
    GENERATION_BATCH_SIZE: int = Field(default=8, ge=1, le=64)
    GENERATION_MAX_LENGTH: int = Field(default=1023, ge=1, le=100_000)
    GENERATION_MAX_WAITING: int = Field(default=64, ge=1)
    GENERATION_CORS_ORIGIN: str = "*"
    GENERATION_TOKEN: SecretStr | None = None
    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: LogFormat = LogFormat.text

    @field_validator("GENERATION_TOKEN", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value):
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return value or None

    @field_validator("GENERATION_TOKEN")
    @classmethod
    def _token_is_usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if len(secret) < MIN_TOKEN_LENGTH:
            raise ValueError(f"must be at least {MIN_TOKEN_LENGTH} characters (or empty: no token)")
        if secret.lower() in PLACEHOLDER_SECRETS:
            raise ValueError("is a placeholder: generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
        return value

    @field_validator("GENERATION_CORS_ORIGIN")
    @classmethod
    def _origin_is_star_or_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value != "*" and not value.startswith(("http://", "https://")):
            raise ValueError("must be * or an origin such as https://example.com")
        return value

    @property
    def run_folder(self) -> Path:
        return self.GENERATION_CHECKPOINT_DIR / self.GENERATION_RUN_NAME


def load_generation_settings(**overrides) -> GenerationSettings:
    """Read the settings, or raise core.config.ConfigError naming the first bad variable."""
    return load_settings(GenerationSettings, **overrides)
