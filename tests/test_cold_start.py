"""What the service loads at start: what every request needs, and the posting path (so the
first post after a start does not pay for imports), but not what only the curation page or
a text's full length check needs (twitter-text's pattern tables, Jinja2 and its templates)."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
import api.main
print(json.dumps(sorted(sys.modules)))
"""


def modules_after_importing_the_app(tmp_path) -> set[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("TWITTER_", "DATABASE_", "SQLITE_"))
    }
    environment.update(
        SECRET_TOKEN="cold-start-token-0123456789", ACCOUNT="bot", TWITTER_DRY_RUN="true",
        SQLITE_PATH=str(tmp_path / "tweets.db"),
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, env={**environment, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def test_importing_the_app_loads_the_posting_path_but_not_the_page_or_twitter_text(tmp_path):
    loaded = modules_after_importing_the_app(tmp_path)
    assert {"tweepy", "posting.job", "db.post_queue", "sqlalchemy"} <= loaded
    deferred = {"twitter_text", "jinja2", "fastapi.templating", "pkg_resources"}
    assert not deferred & loaded, f"loaded at start: {sorted(deferred & loaded)}"
