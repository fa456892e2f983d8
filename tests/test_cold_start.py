"""What the service loads at start: what every request needs, and the posting path (so the
first post after a start does not pay for imports), but not what only the curation page, the
/tweets routes or a text's full length check need (twitter-text's pattern tables, Jinja2 and its
templates): those load on the first request that needs them (api/app.py's deferred routes); nor
Mastodon.py or atproto, which the first Mastodon or Bluesky destination imports."""
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import fastapi.routing
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from api.request_limits import SMALL_BODY_BYTES
from core.config import Settings
from db.models import Tweet, TweetStatus, utcnow
from posting.job import prepare_claim_statements
from tests.conftest import TOKEN, store_texts

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
import api.main
{also}
print(json.dumps(sorted(sys.modules)))
"""
# The modules of the routes deferred to their first request.
DEFERRED_ROUTES = {"api.routes.tweets", "api.curate.routes", "api.curate.rendering"}
PROBE_FIRST_PAGE_REQUEST = """
import json, sys
from fastapi.testclient import TestClient
import api.main
before = sorted(sys.modules)
with TestClient(api.main.app) as client:
    assert client.get("/health").status_code == 503  # a start route (no tables here): nothing more loads
    after_start_routes = sorted(sys.modules)
    assert client.get("/curate/sign-in").status_code == 200
print(json.dumps([before, after_start_routes, sorted(sys.modules)]))
"""


def run_probe(tmp_path, probe: str):
    """Run `probe` in a fresh interpreter with the service's settings; what it prints, as JSON."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("TWITTER_", "DATABASE_", "SQLITE_"))
    }
    environment.update(
        SECRET_TOKEN="cold-start-token-0123456789", ACCOUNT="bot", TWITTER_DRY_RUN="true",
        SQLITE_PATH=str(tmp_path / "tweets.db"),
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env={**environment, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_importing_the_app_loads_the_posting_path_but_not_the_page_the_tweets_routes_or_twitter_text(tmp_path):
    loaded = set(run_probe(tmp_path, PROBE.format(also="")))
    assert {"tweepy", "posting.job", "db.post_queue", "sqlalchemy", "api.routes.posting"} <= loaded
    deferred = {"twitter_text", "jinja2", "fastapi.templating", "pkg_resources", "mastodon", "regex", *DEFERRED_ROUTES}
    assert not deferred & loaded, f"loaded at start: {sorted(deferred & loaded)}"


def test_the_bluesky_client_loads_atproto_only_when_it_posts(tmp_path):
    """atproto's models take most of a second to import: a service that never posts to Bluesky never pays it."""
    loaded = set(run_probe(tmp_path, PROBE.format(also="import posting.bluesky_client")))
    assert "posting.bluesky_client" in loaded
    deferred = {"atproto", "atproto_client", "cryptography", "httpx", "regex"}
    assert not deferred & loaded, f"loaded at start: {sorted(deferred & loaded)}"


def test_the_deferred_routes_load_on_the_first_request_no_start_route_serves(tmp_path):
    before, after_start_routes, after_page = map(set, run_probe(tmp_path, PROBE_FIRST_PAGE_REQUEST))
    assert not DEFERRED_ROUTES & (before | after_start_routes)
    assert DEFERRED_ROUTES <= after_page


def test_the_first_request_to_a_deferred_route_gets_its_body_limit(settings, engine):
    """The body limits know a deferred route on its first request: an upload over the small-body
    limit (64 KiB), within MAX_UPLOAD_BYTES, reaches the route."""
    samples = "".join(f"deferred upload tweet {n:05d} {'x' * 180}\n{'=' * 20}\n" for n in range(400))
    assert len(samples) > SMALL_BODY_BYTES and len(samples) < settings.MAX_UPLOAD_BYTES
    app = create_app(settings, engine=engine, configure_logs=False)
    with TestClient(app, headers={"x-token": TOKEN}) as client:
        answer = client.post("/add_tweets_file/", files={"file": ("queue.txt", samples, "text/plain")})
    assert answer.status_code == 201 and answer.json()["added"] == 400, answer.text[:300]


def test_the_openapi_schema_holds_the_deferred_routes(app):
    paths = app.openapi()["paths"]
    assert {"/health", "/tweet_curated/", "/tweets/", "/add_tweets_file/"} <= set(paths)


def test_the_start_routes_are_prepared_at_start(settings_values, engine, monkeypatch):
    """FastAPI prepares an included router's routes (dependencies, parameter models) when a
    request is first matched against them: the start does it, not /health or the first post."""
    app = create_app(Settings(**settings_values, TWITTER_DRY_RUN=True), engine=engine, configure_logs=False)
    with TestClient(app, headers={"x-token": TOKEN}) as client:
        prepared = []
        build = fastapi.routing.get_dependant
        monkeypatch.setattr(fastapi.routing, "get_dependant", lambda *args, **kwargs: prepared.append(kwargs) or build(*args, **kwargs))
        assert client.get("/health").status_code == 200
        assert client.post("/tweet_curated/").status_code == 404  # the queue is empty: the whole path ran
    assert prepared == []


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
