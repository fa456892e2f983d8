"""Settings: the database choice, clear start-up errors, and the local .env."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ConfigError, DatabaseSettings, Settings, load_settings
from scripts.init_local_env import ensure_local_env

ROOT = Path(__file__).resolve().parent.parent
BASE = {"SECRET_TOKEN": "a-long-enough-token-123", "ACCOUNT": "bot", "_env_file": None}


@pytest.mark.parametrize(
    "values, url",
    [
        ({"DATABASE_URL": "sqlite:///x.db", "DB_HOST": "h"}, "sqlite:///x.db"),
        (
            {"CONNECTION_NAME": "proj:region:inst", "DB_USERNAME": "u", "DB_PASSWORD": "p@ss", "DB_NAME": "d", "DB_HOST": "h"},
            "postgresql+pg8000://u:p%40ss@/d?unix_sock=/cloudsql/proj:region:inst/.s.PGSQL.5432",
        ),
        ({"DB_HOST": "db", "DB_USERNAME": "u", "DB_PASSWORD": "p", "DB_NAME": "d"}, "postgresql+psycopg2://u:p@db:5432/d"),
        ({"DB_HOST": "db", "DB_PORT": 6543, "DB_NAME": "d"}, "postgresql+psycopg2://postgres@db:6543/d"),
        ({}, "sqlite:///tweets.db"),
    ],
)
def test_database_is_chosen_by_settings(values, url):
    assert DatabaseSettings(_env_file=None, **values).database_url == url


@pytest.mark.parametrize(
    "override, message",
    [
        ({"SECRET_TOKEN": None}, "SECRET_TOKEN is not set"),
        ({"SECRET_TOKEN": "short"}, "SECRET_TOKEN is invalid"),
        ({"SECRET_TOKEN": "changethis"}, "SECRET_TOKEN is invalid"),
        ({"ACCOUNT": None}, "ACCOUNT is not set"),
        ({"ACCOUNT": "not a handle!"}, "ACCOUNT is invalid"),
        ({"TWEET_ORDER": "sideways"}, "TWEET_ORDER is invalid"),
        ({"TWITTER_API_BASE_URL": "api.x.com"}, "TWITTER_API_BASE_URL is invalid"),
        ({"POSTING_LEASE_MINUTES": "0.1"}, r"POSTING_LEASE_MINUTES is invalid.*twice TWITTER_TIMEOUT_SECONDS \(20 s\)"),
        ({"POSTING_LEASE_MINUTES": "1", "TWITTER_TIMEOUT_SECONDS": "31"}, "POSTING_LEASE_MINUTES is invalid"),
    ],
)
def test_bad_settings_name_the_variable(override, message):
    values = {**BASE, **override}
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        load_settings(**values)


def test_env_reference_copied_to_env_is_a_valid_configuration(tmp_path):
    """The documented start (cp .env_reference .env, then fill in the token and the account): every value it
    leaves empty, such as MASTODON_API_BASE_URL= or BLUESKY_HANDLE=, means "not set", never "invalid"."""
    env_file = tmp_path / ".env"
    env_file.write_text((ROOT / ".env_reference").read_text() + "SECRET_TOKEN=a-long-enough-token-123\nACCOUNT=bot\n")
    settings = load_settings(_env_file=env_file)
    assert (settings.MASTODON_API_BASE_URL, settings.BLUESKY_HANDLE, settings.BOTS) == (None, None, None)
    assert settings.bot(None).destinations == ("x",)


def test_account_accepts_a_leading_at():
    assert Settings(**{**BASE, "ACCOUNT": "@my_bot"}).ACCOUNT == "my_bot"


def test_service_refuses_to_start_without_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_TOKEN", "ACCOUNT")}
    result = subprocess.run(
        [sys.executable, "-c", "import api.main"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Configuration error: SECRET_TOKEN is not set. Set it in the environment or in .env (see .env_reference)."
    ]


def test_local_env_gets_a_token_once(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("ACCOUNT=mine")
    token = ensure_local_env(env_file)
    assert len(token) >= 32
    assert ensure_local_env(env_file) == token
    content = env_file.read_text()
    assert "ACCOUNT=mine\n" in content and "local_bot" not in content
    assert "TWITTER_DRY_RUN=true" in content
    assert oct(env_file.stat().st_mode)[-3:] == "600"
