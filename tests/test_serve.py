"""The generation service (ml.service) on the tiny model: GET, POST, HEAD, validation, token, CORS, concurrency."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from ml.config import GenerationSettings
from ml.sampler import Sampler
from ml.service import create_app
from ml.tiny import write_tiny_run

pytestmark = pytest.mark.ml

TOKEN = "generation-token-0123456789"


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    with Sampler.load(write_tiny_run(root / "checkpoint", "run1", root / "models"), batch_size=4) as loaded:
        yield loaded


def make_client(sampler: Sampler, **settings) -> TestClient:
    values = {"GENERATION_MAX_LENGTH": 64, "_env_file": None, **settings}
    return TestClient(create_app(GenerationSettings(**values), sampler=sampler, configure_logs=False))


@pytest.fixture(scope="module")
def client(sampler):
    with make_client(sampler) as test_client:
        yield test_client


def test_get_and_post_generate_with_the_given_parameters(client):
    params = {"length": 12, "top_k": 1, "prefix": "Hello", "include_prefix": "false"}
    got = client.get("/", params=params)
    assert got.status_code == 200
    posted = client.post("/", json={**params, "include_prefix": False})
    assert posted.status_code == 200
    assert got.json() == posted.json()
    assert isinstance(got.json()["text"], str) and not got.json()["text"].startswith("Hello")
    with_prefix = client.post("/", json={"length": 12, "top_k": 1, "prefix": "Hello"}).json()["text"]
    assert with_prefix.startswith("Hello")


def test_defaults_need_no_parameters_and_length_defaults_to_the_limit(client, sampler):
    assert client.post("/").status_code == 200
    assert client.get("/").status_code == 200
    assert sampler.last_run.generated_tokens <= 64  # GENERATION_MAX_LENGTH, below the original's 1023


def test_head_answers_an_empty_text(client):
    response = client.head("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(b'{"text":""}')


@pytest.mark.parametrize(
    "params, field, words",
    [
        ({"temperature": 0}, "temperature", "greater than 0"),
        ({"top_p": 1.5}, "top_p", "less than or equal to 1"),
        ({"top_k": -1}, "top_k", "greater than or equal to 0"),
        ({"length": 0}, "length", "greater than or equal to 1"),
        ({"length": 65}, "length", "GENERATION_MAX_LENGTH"),
        ({"prefix": "x" * 501}, "prefix", "at most 500 characters"),
        ({"length": "many"}, "length", "valid integer"),
        ({"truncate": ""}, "truncate", "at least 1 character"),
    ],
)
def test_bad_parameters_get_a_422_naming_the_field(client, params, field, words):
    for response, where in ((client.get("/", params=params), "query"), (client.post("/", json=params), "body")):
        assert response.status_code == 422, response.text
        error = response.json()["detail"][0]
        assert error["loc"] == [where, field]
        assert words in error["msg"]


def test_unknown_parameters_are_refused(client):
    for response, where in ((client.get("/", params={"lenght": 5}), "query"), (client.post("/", json={"lenght": 5}), "body")):
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == [where, "lenght"]


def test_the_token_guards_generation_when_set(sampler):
    with make_client(sampler, GENERATION_TOKEN=TOKEN) as guarded:
        assert guarded.get("/", params={"length": 2}).status_code == 401
        wrong = guarded.post("/", json={"length": 2}, headers={"x-token": "wrong-token-0123456789"})
        assert wrong.status_code == 401 and "wrong x-token" in wrong.json()["detail"]
        assert guarded.head("/").status_code == 401
        assert guarded.get("/", params={"length": 2}, headers={"x-token": TOKEN}).status_code == 200
        assert guarded.get("/health").status_code == 200


def test_cors_origin_is_star_by_default_and_configurable(client, sampler):
    response = client.get("/", params={"length": 2}, headers={"Origin": "https://somewhere.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    with make_client(sampler, GENERATION_CORS_ORIGIN="https://bot.example") as configured:
        allowed = configured.get("/", params={"length": 2}, headers={"Origin": "https://bot.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://bot.example"
        other = configured.get("/", params={"length": 2}, headers={"Origin": "https://other.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = configured.options("/", headers={
            "Origin": "https://bot.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-token",
        })
        assert preflight.status_code == 200


def test_concurrent_requests_each_get_their_own_text(client):
    """Different prompts sent at once share batches; each answer equals the one it gets alone."""
    bodies = [{"length": 10 + i % 3, "top_k": 1, "prefix": f"request {i}", "include_prefix": False}
              for i in range(12)]
    alone = [client.post("/", json=body).json()["text"] for body in bodies]
    worker = client.app.state.worker
    batches_before = worker.batches
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda body: client.post("/", json=body), bodies))
    assert [response.status_code for response in together] == [200] * len(bodies)
    assert [response.json()["text"] for response in together] == alone
    assert worker.batches - batches_before < len(bodies)  # requests that arrived together shared batches


def test_two_hundred_requests_leave_the_graph_unchanged(client, sampler):
    before = sampler.operation_count
    for i in range(200):
        response = client.get("/", params={"length": 2, "top_p": 0.9 if i % 2 else 0, "prefix": f"p{i % 7}"})
        assert response.status_code == 200
    assert sampler.operation_count == before


def test_health_says_the_model_is_loaded(client, sampler):
    body = client.get("/health").json()
    assert body["model_loaded"] is True and body["status"] == "ok"
    assert body["checkpoint"] == sampler.checkpoint


def test_a_failed_generation_answers_500_and_the_worker_goes_on(sampler, monkeypatch):
    settings = GenerationSettings(_env_file=None)
    app = create_app(settings, sampler=sampler, configure_logs=False)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        def broken_run(*args, **kwargs):
            raise RuntimeError("model exploded")

        monkeypatch.setattr(sampler, "run", broken_run)
        response = test_client.get("/", params={"length": 2})
        assert response.status_code == 500
        assert response.json() == {"detail": "internal error; the service log has the details"}
        monkeypatch.undo()
        assert test_client.get("/", params={"length": 2}).status_code == 200
        assert test_client.get("/health").json()["model_loaded"] is True
