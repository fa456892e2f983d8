"""The generation HTTP service for uvicorn (`uvicorn ml.serve:app`): reads the settings or exits with one line."""
from __future__ import annotations

import sys

from api.config import ConfigError
from ml.config import load_generation_settings
from ml.service import create_app

try:
    settings = load_generation_settings()
except ConfigError as exc:
    print(f"Configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

app = create_app(settings)
