"""The generation HTTP service for uvicorn (`uvicorn ml.serve:app`): reads the settings or exits with one line."""
from __future__ import annotations

import sys

from core.config import ConfigError
from ml.app import create_app
from ml.config import load_generation_settings
from ml.sampler import SamplerError, resolve_run_folder

try:
    settings = load_generation_settings()
    resolve_run_folder(settings.run_folder)
except ConfigError as exc:
    print(f"Configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
except SamplerError as exc:
    print(f"Configuration error: {exc}; set GENERATION_CHECKPOINT_DIR and GENERATION_RUN_NAME", file=sys.stderr)
    raise SystemExit(2) from None

app = create_app(settings)
