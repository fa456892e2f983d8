"""Schemathesis fuzzes every operation of the service's own OpenAPI schema with valid and
invalid requests, on SQLite and on Postgres through psycopg2 and pg8000: no answer is a 5xx,
and no operation but /health answers without the x-token. The example budget is fixed and the
generation derandomized, so a run is repeatable and its time bounded."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import ignored_auth

from db.models import TweetStatus
from tests.conftest import TOKEN, store_texts

EXAMPLES_PER_OPERATION = {GenerationMode.POSITIVE: 100, GenerationMode.NEGATIVE: 100}
NO_TOKEN_EXAMPLES_PER_OPERATION = 5
OPEN_PATHS = {"/health"}


def fuzz(operation, mode: GenerationMode, examples: int, check) -> None:
    """Run `check(case)` on `examples` derandomized cases of one operation."""

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=examples, derandomize=True, database=None, deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        check(case)

    run()


def takes_input(operation) -> bool:
    return any(True for _ in operation.iter_parameters()) or len(operation.body) > 0


@pytest.fixture
def settings_values(settings_values) -> dict:
    settings_values.update(TWITTER_DRY_RUN=True)
    return settings_values


@pytest.fixture
def operations(app, session_factory) -> list:
    """The app's operations, served over ASGI, with tweets the fuzzer can reach by id."""
    store_texts(session_factory, "fuzz seed one", "fuzz seed two", status=TweetStatus.pending)
    store_texts(session_factory, "fuzz seed three", "fuzz seed four", status=TweetStatus.queued)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    found = [result.ok() for result in schema.get_all_operations()]
    assert {"GET /tweets/{tweet_id}", "POST /add_tweets_file/", "POST /tweet_curated/"} <= {op.label for op in found}
    return found


@pytest.mark.parametrize("mode", list(EXAMPLES_PER_OPERATION), ids=lambda mode: mode.value)
def test_no_server_errors_and_no_ignored_auth(operations, mode):
    def check(case):
        case.call_and_validate(headers={"x-token": TOKEN}, checks=[not_a_server_error, ignored_auth])

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not takes_input(operation):
            continue  # nothing to make invalid (GET /health)
        fuzz(operation, mode, EXAMPLES_PER_OPERATION[mode], check)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_every_operation_but_health_needs_the_token(operations):
    def check(case):
        case.headers = {key: value for key, value in (case.headers or {}).items() if key.lower() != "x-token"}
        response = case.call()
        if case.path in OPEN_PATHS:
            assert response.status_code == 200, response.text[:300]
        else:
            assert response.status_code == 401, (case.method, case.path, response.text[:300])

    for operation in operations:
        fuzz(operation, GenerationMode.POSITIVE, NO_TOKEN_EXAMPLES_PER_OPERATION, check)
