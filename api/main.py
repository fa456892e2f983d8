"""The ASGI app for uvicorn (`uvicorn api.main:app`): reads the settings or exits with one line."""
from __future__ import annotations

import sys

from api.app import create_app
from core.config import ConfigError, load_settings

try:
    settings = load_settings()
except ConfigError as exc:
    print(f"Configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

app = create_app(settings)
