"""An upload being validated holds no database lock: /health and posting answer meanwhile.

On SQLite every transaction begins with BEGIN IMMEDIATE (db/engine.py), so an upload that
opened its transaction before validating would stop the bot posting for as long as it validates.
"""
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from db import store
from db.models import TweetStatus
from tests.conftest import store_texts
from tests.test_curate import sign_in

DELIM = "=" * 20
# Long enough for a loaded machine; on SQLite a blocked request waits 30 s (the busy timeout).
ANSWER_WITHIN_SECONDS = 15


@pytest.fixture
def settings_values(settings_values):
    return {**settings_values, "TWITTER_DRY_RUN": True}


def answer_of(request: Future, what: str):
    try:
        return request.result(timeout=ANSWER_WITHIN_SECONDS)
    except TimeoutError:
        pytest.fail(f"{what} did not answer within {ANSWER_WITHIN_SECONDS} s")


PAUSED_TEXT = "uploaded tweet 1"


@pytest.fixture
def validation_paused(monkeypatch):
    """Make validation stop at PAUSED_TEXT until `release` is set; `validating` says it got there."""
    validating, release = threading.Event(), threading.Event()
    validate = store.clean_text

    def paused_validate(text: str) -> str:
        if text == PAUSED_TEXT:
            validating.set()
            assert release.wait(ANSWER_WITHIN_SECONDS * 2), "the test never released the upload"
        return validate(text)

    monkeypatch.setattr(store, "clean_text", paused_validate)
    yield validating, release
    release.set()


@pytest.mark.parametrize("route", ["/add_tweets_file/", "/curate/upload"])
def test_health_and_posting_answer_while_an_upload_is_validated(app, client, session_factory, validation_paused, route):
    validating, release = validation_paused
    (queued_id,) = store_texts(session_factory, "already queued", status=TweetStatus.queued)
    samples = [f"uploaded tweet {n}" for n in range(3)]
    data = "".join(f"{s}\n{DELIM}\n" for s in samples).encode()
    uploader, form, stored_as = client, {}, "queued"
    if route == "/curate/upload":
        uploader = TestClient(app, base_url="https://testserver")
        form, stored_as = {"csrf_token": sign_in(uploader)}, "pending"

    with uploader, ThreadPoolExecutor(3) as pool:
        uploading = pool.submit(uploader.post, route, data=form, files={"file": ("up.txt", data)})
        assert validating.wait(ANSWER_WITHIN_SECONDS), "the upload never started validating"
        health = pool.submit(client.get, "/health")
        posting = pool.submit(client.post, "/tweet_curated/")
        try:
            health_response = answer_of(health, "GET /health, during the upload's validation,")
            posting_response = answer_of(posting, "POST /tweet_curated/, during the upload's validation,")
        finally:
            release.set()
        upload_response = answer_of(uploading, "the upload, once released,")

    assert health_response.status_code == 200, health_response.text
    assert posting_response.status_code == 200, posting_response.text
    assert posting_response.json()["tweet"]["id"] == queued_id
    assert upload_response.status_code == 201, upload_response.text
    stored = client.get("/tweets/", params={"status": stored_as}).json()
    assert sorted(t["text"] for t in stored["data"]) == sorted(samples)
