"""Prepare `.env` for local development: a random SECRET_TOKEN, dry-run posting, SQLite.

Run by `make run-local`. Keeps every value already in `.env`; prints the token so the
operator can paste it into /docs (Authorize) or the curation page.
"""
from __future__ import annotations

import secrets
import sys
from pathlib import Path

from dotenv import dotenv_values

LOCAL_DEFAULTS = {
    "ACCOUNT": "local_bot",
    "TWITTER_DRY_RUN": "true",
}


def ensure_local_env(path: Path) -> str:
    """Add what local development needs to `path`; return the SECRET_TOKEN in use."""
    values = dotenv_values(path) if path.exists() else {}
    additions = {name: value for name, value in LOCAL_DEFAULTS.items() if not values.get(name)}
    token = values.get("SECRET_TOKEN")
    if not token:
        token = secrets.token_urlsafe(32)
        additions["SECRET_TOKEN"] = token
    if additions:
        existing = path.read_text(encoding="utf-8") if path.exists() else ""
        if existing and not existing.endswith("\n"):
            existing += "\n"
        lines = "".join(f"{name}={value}\n" for name, value in additions.items())
        path.write_text(existing + "# added by make run-local\n" + lines, encoding="utf-8")
        path.chmod(0o600)
    return token


if __name__ == "__main__":
    env_path = Path(sys.argv[1] if len(sys.argv) > 1 else ".env")
    token = ensure_local_env(env_path)
    print(f"SECRET_TOKEN (x-token for /docs): {token}")
