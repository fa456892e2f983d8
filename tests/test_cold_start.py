"""What the service loads at start: what every request needs, and the posting path (so the
first post after a start does not pay for imports), but not what only the curation page or
a text's full length check needs (twitter-text's pattern tables, Jinja2 and its templates), nor
Mastodon.py, which the first Mastodon destination imports."""
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from db.models import Tweet, TweetStatus, utcnow
from posting.job import prepare_claim_statements
from tests.conftest import store_texts

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
import api.main
{also}
print(json.dumps(sorted(sys.modules)))
"""


def modules_after_importing_the_app(tmp_path, also: str = "") -> set[str]:
    """The modules loaded once api.main (and the statement `also`) is imported in a fresh interpreter."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("TWITTER_", "DATABASE_", "SQLITE_"))
    }
    environment.update(
        SECRET_TOKEN="cold-start-token-0123456789", ACCOUNT="bot", TWITTER_DRY_RUN="true",
        SQLITE_PATH=str(tmp_path / "tweets.db"),
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(also=also)], cwd=tmp_path, env={**environment, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def test_importing_the_app_loads_the_posting_path_but_not_the_page_or_twitter_text(tmp_path):
    loaded = modules_after_importing_the_app(tmp_path)
    assert {"tweepy", "posting.job", "db.post_queue", "sqlalchemy"} <= loaded
    deferred = {"twitter_text", "jinja2", "fastapi.templating", "pkg_resources", "mastodon", "regex"}
    assert not deferred & loaded, f"loaded at start: {sorted(deferred & loaded)}"


def test_the_bluesky_client_loads_atproto_only_when_it_posts(tmp_path):
    """atproto's models take most of a second to import: a service that never posts to Bluesky never pays it."""
    loaded = modules_after_importing_the_app(tmp_path, also="import posting.bluesky_client")
    assert "posting.bluesky_client" in loaded
    deferred = {"atproto", "atproto_client", "cryptography", "httpx", "regex"}
    assert not deferred & loaded, f"loaded at start: {sorted(deferred & loaded)}"


def test_preparing_the_claim_at_start_changes_nothing(session_factory, settings):
    """The start runs the claim's statements (for no account) and rolls back: a stale lease stays
    for the first real call to sweep, and queued tweets stay queued."""
    stale_id, queued_id = store_texts(session_factory, "stale lease", "queued", status=TweetStatus.queued)
    with session_factory() as session:
        stale = session.get(Tweet, stale_id)
        stale.status, stale.claimed_at = TweetStatus.posting, utcnow() - timedelta(days=1)
        session.commit()
    prepare_claim_statements(session_factory, settings)
    with session_factory() as session:
        assert session.get(Tweet, stale_id).status is TweetStatus.posting
        assert session.get(Tweet, queued_id).status is TweetStatus.queued
        assert session.scalar(select(func.count()).select_from(Tweet)) == 2


def test_a_start_before_the_migration_still_serves_and_reports_it(settings, empty_engine):
    """No table yet: preparing the claim is skipped, and /health says what is missing."""
    app = create_app(settings, engine=empty_engine, configure_logs=False)
    with TestClient(app) as client:
        health = client.get("/health")
    assert health.status_code == 503 and "migrate" in health.text


def test_posting_routes_come_right_after_health(app):
    """FastAPI prepares a router's routes when a request first reaches it, in include order: with
    posting right after health, the first post after a start prepares no other router's routes."""
    paths = list(app.openapi()["paths"])
    assert paths[:2] == ["/health", "/tweet_curated/"], paths[:4]
