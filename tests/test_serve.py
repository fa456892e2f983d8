"""The generation service (ml.app) on the tiny model: GET, POST, HEAD, validation, token, CORS, concurrency."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from ml.app import create_app
from ml.config import GenerationSettings
from ml.sampler import Sampler
from ml.tiny import write_tiny_run

pytestmark = pytest.mark.ml

TOKEN = "generation-token-0123456789"


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    with Sampler.load(write_tiny_run(root / "checkpoint", "run1", root / "models"), batch_size=4) as loaded:
        yield loaded


def make_client(sampler: Sampler, raise_server_exceptions: bool = True, **settings) -> TestClient:
    values = {"GENERATION_MAX_LENGTH": 64, "_env_file": None, **settings}
    return TestClient(create_app(GenerationSettings(**values), sampler=sampler, configure_logs=False),
                      raise_server_exceptions=raise_server_exceptions)


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
        ({"temperature": 0}, "temperature", "greater than or equal to 0.0001"),
        ({"top_p": 1.5}, "top_p", "less than or equal to 1"),
        ({"top_k": -1}, "top_k", "greater than or equal to 0"),
        ({"length": 0}, "length", "greater than or equal to 1"),
        ({"length": 65}, "length", "less than or equal to 64"),
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


def test_a_batch_is_counted_before_its_answers_are_sent(sampler, monkeypatch):
    """Tests compare the count before and after a request; a run counted after it answered made them flaky."""
    finished = threading.Event()
    real_run = sampler.run

    def run_that_lingers(*args, **kwargs):
        try:
            return real_run(*args, **kwargs)
        finally:
            finished.wait(10)  # the answers are out; the run has not returned yet

    with make_client(sampler) as test_client:
        worker = test_client.app.state.worker
        monkeypatch.setattr(sampler, "run", run_that_lingers)
        before = worker.batches
        try:
            assert test_client.post("/", json={"length": 2}).status_code == 200
            assert worker.batches == before + 1
        finally:
            finished.set()


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


def post_raw(client: TestClient, body: bytes, **headers):
    return client.post("/", content=body, headers={"content-type": "application/json", **headers})


@pytest.mark.parametrize(
    "body, field, words",
    [
        (b'{"top_k": 2147483648}', "top_k", "less than or equal to 50257"),
        (b'{"temperature": 1e-50}', "temperature", "greater than or equal to 0.0001"),
        (b'{"temperature": NaN}', "temperature", "finite number"),
        (b'{"temperature": Infinity}', "temperature", "finite number"),
        (b'{"top_p": -Infinity}', "top_p", "finite number"),
        (b'{"temperature": -1}', "temperature", "greater than or equal to 0.0001"),
        (b'{"top_p": -0.5}', "top_p", "greater than or equal to 0"),
        (b'{"length": 1000000000000000000000000000000}', "length", "less than or equal to 64"),
        (b'{"length": -3}', "length", "greater than or equal to 1"),
        (b'{"truncate": "' + b"x" * 201 + b'"}', "truncate", "at most 200 characters"),
        (b'{"prefix": "a\\ud800b"}', "prefix", "unicode string"),
        (b'{"truncate": "\xed\xa0\x80"}', "truncate", "unicode string"),
        (b'{"truncate": "a\\u0000"}', "truncate", "NUL"),
    ],
)
def test_hostile_values_get_a_422_and_the_next_request_is_served(client, body, field, words):
    response = post_raw(client, body)
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", field] and words in error["msg"]
    assert "input" not in error  # not echoed back: it may be huge, NaN or not encodable
    assert client.post("/", json={"length": 2}).status_code == 200


def test_hostile_query_values_get_a_422(client):
    for params, field in (({"truncate": "x" * 60_000}, "truncate"), ({"top_k": 2**31}, "top_k"),
                          ({"temperature": "nan"}, "temperature"), ({"temperature": "1e-50"}, "temperature"),
                          ({"prefix": "a\x00"}, "prefix")):
        response = client.get("/", params={"length": 2, **params})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["query", field]
    assert client.get("/", params={"length": 2}).status_code == 200


def test_a_prefix_longer_than_the_models_window_gets_a_422(client, sampler):
    prefix = "\U0001F600" * 300  # 300 characters, 1,200 tokens of the byte-level vocabulary
    assert len(sampler.encoder.encode(prefix)) > sampler.hparams.n_ctx
    response = client.post("/", json={"length": 2, "prefix": prefix})
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "prefix"] and "1200 tokens" in error["msg"] and "1024" in error["msg"]
    assert client.post("/", json={"length": 2}).status_code == 200


def test_a_body_over_the_limit_gets_a_413_before_it_is_read(client):
    declared = post_raw(client, b'{"length": 2}', **{"content-length": str(10**12), "origin": "https://a.example"})
    assert declared.status_code == 413 and "16384 bytes" in declared.json()["detail"]
    assert declared.headers["access-control-allow-origin"] == "*"

    def chunks():  # no Content-Length: sent in chunks, refused once the limit is passed
        yield b'{"truncate": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    streamed = client.post("/", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.post("/", json={"length": 2}).status_code == 200


def test_the_schema_states_every_bound(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    fields = next(s for name, s in schema.items() if name.startswith("GenerationParams"))["properties"]
    assert (fields["length"]["minimum"], fields["length"]["maximum"], fields["length"]["default"]) == (1, 64, 64)
    assert (fields["temperature"]["minimum"], fields["temperature"]["maximum"]) == (1e-4, 100)
    assert (fields["top_k"]["minimum"], fields["top_k"]["maximum"]) == (0, 50257)
    assert (fields["top_p"]["minimum"], fields["top_p"]["maximum"]) == (0, 1)
    assert fields["prefix"]["maxLength"] == 500
    truncate = next(option for option in fields["truncate"]["anyOf"] if option.get("type") == "string")
    assert (truncate["minLength"], truncate["maxLength"]) == (1, 200)


@pytest.mark.parametrize("poison, status_code", [("internal", 500), ("too long", 422)])
def test_a_request_that_fails_in_a_batch_fails_alone(sampler, monkeypatch, poison, status_code):
    """Four requests share one batch (the batch waits until all four are queued); one fails to start."""
    bodies = [{"length": 6, "top_k": 1, "prefix": f"good {i}", "include_prefix": False} for i in range(3)]
    bad_prefix = "\U0001F600" * 300 if poison == "too long" else "poison"
    real_context_tokens = sampler._context_tokens

    def poisoned_context_tokens(prefix):
        if prefix == "poison":
            raise RuntimeError("injected failure")
        return real_context_tokens(prefix)

    monkeypatch.setattr(sampler, "_context_tokens", poisoned_context_tokens)
    with make_client(sampler, raise_server_exceptions=False) as test_client:
        alone = [test_client.post("/", json=body).json()["text"] for body in bodies]
        worker = test_client.app.state.worker
        all_queued = threading.Event()
        real_submit, real_run = worker.submit, sampler.run
        submitted = []

        def counting_submit(request):
            future = real_submit(request)
            submitted.append(future)
            if len(submitted) == 4:
                all_queued.set()
            return future

        def gated_run(*args, **kwargs):
            all_queued.wait()
            return real_run(*args, **kwargs)

        monkeypatch.setattr(worker, "submit", counting_submit)
        monkeypatch.setattr(sampler, "run", gated_run)
        batches_before = worker.batches
        everything = [*bodies[:2], {"length": 6, "prefix": bad_prefix}, bodies[2]]
        with ThreadPoolExecutor(max_workers=4) as pool:
            responses = list(pool.map(lambda body: test_client.post("/", json=body), everything))
        assert worker.batches - batches_before == 1
    assert [r.status_code for r in responses] == [200, 200, status_code, 200]
    assert [responses[i].json()["text"] for i in (0, 1, 3)] == alone
