"""The generation service's app and worker: one run's checkpoint, loaded once, sampled on request.

As the original gpt-2-cloud-run app: `GET /` (query parameters) and `POST /` (JSON body) take
length, temperature, top_k, top_p, prefix, truncate and include_prefix and answer `{"text": ...}`;
`HEAD /` answers `{"text": ""}`. Requests do not each run the model: one worker thread owns the
`Sampler`, and requests that arrive while it runs join its batch as rows free up; a request that
fails in a batch fails alone. Every parameter has a bound, stated in the OpenAPI schema and checked
before the request is queued; a POST body is refused past MAX_BODY_BYTES before it is parsed.
"""
# No `from __future__ import annotations`: the routes' parameter model is made in create_app (its
# length bound is a setting), and FastAPI could not resolve that local name from a string annotation.
import asyncio
import concurrent.futures
import logging
import queue
import secrets
import threading
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, Security, status
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator

from core.logs import configure_logging
from ml.config import GenerationSettings
from ml.sampler import (
    MAX_TEMPERATURE, MAX_TOP_K, MAX_TRUNCATE_CHARS, MIN_TEMPERATURE, MIN_TOP_P, Sampler, SampleJob, SampleRequest,
    SamplerError, check_text,
)

log = logging.getLogger(__name__)

MAX_PREFIX_CHARS = 500
DEFAULT_LENGTH = 1023
# The largest parameters take a few kilobytes even written as JSON escapes (12 bytes a character at worst).
MAX_BODY_BYTES = 16_384


class GenerationParams(BaseModel):
    """A request's parameters, with the original app's defaults and ml.sampler's bounds.

    `length` is bounded by the service's GENERATION_MAX_LENGTH: see `params_model`.
    """

    model_config = ConfigDict(extra="forbid")

    length: int = Field(default=DEFAULT_LENGTH, ge=1, description="Tokens to generate at most.")
    temperature: float = Field(
        default=0.7, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, allow_inf_nan=False,
        description=f"Randomness: logits are divided by it; {MIN_TEMPERATURE} to {MAX_TEMPERATURE:g}.",
    )
    top_k: int = Field(
        default=0, ge=0, le=MAX_TOP_K,
        description=f"Sample from the k likeliest tokens (0: all; at most {MAX_TOP_K}, GPT-2's vocabulary).",
    )
    top_p: float = Field(
        default=0.0, ge=0, le=1, allow_inf_nan=False,
        description=f"Nucleus sampling (0: off; overrides top_k); below {MIN_TOP_P} acts as {MIN_TOP_P}: "
                    "the likeliest token only.",
    )
    prefix: str = Field(
        default="", max_length=MAX_PREFIX_CHARS,
        description="Text to continue, at most the model's window in tokens; no NUL, no lone surrogate.",
    )
    truncate: str | None = Field(
        default=None, min_length=1, max_length=MAX_TRUNCATE_CHARS,
        description="Stop where this text appears; no NUL, no lone surrogate.",
    )
    include_prefix: bool = Field(default=True, description="Start the answer with the prefix.")

    @field_validator("prefix", "truncate")
    @classmethod
    def _plain_text(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_text(info.field_name, value)

    def sample_request(self) -> SampleRequest:
        return SampleRequest(
            length=self.length, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
            prefix=self.prefix or None, truncate=self.truncate, include_prefix=self.include_prefix,
        )


def params_model(max_length: int) -> type[GenerationParams]:
    """GenerationParams with `length` at most `max_length` (GENERATION_MAX_LENGTH), in the schema too."""
    length = Field(
        default=min(DEFAULT_LENGTH, max_length), ge=1, le=max_length,
        description=f"Tokens to generate at most: 1 to {max_length} (GENERATION_MAX_LENGTH).",
    )
    return create_model("GenerationParams", __base__=GenerationParams, length=(int, length))


class GeneratedText(BaseModel):
    text: str


class ServiceBusy(Exception):
    """More requests are waiting than GENERATION_MAX_WAITING."""


class WorkerStopped(Exception):
    """The generation worker is not running."""


_STOP = object()


class GenerationWorker:
    """Owns the sampler and runs it in one thread; requests that arrive together share a batch.

    `submit` queues a request and returns a Future of its text. The thread waits for a request,
    then runs the sampler, which takes further queued requests whenever a row is free; when every
    row is idle it waits again.
    """

    def __init__(self, sampler: Sampler, *, max_waiting: int):
        self.sampler = sampler
        self._waiting: queue.Queue = queue.Queue(maxsize=max_waiting)
        self._thread = threading.Thread(target=self._serve, name="generation-worker", daemon=True)
        self._stopping = False
        self.batches = 0  # sampler runs started; fewer than requests when requests shared a batch

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def submit(self, request: SampleRequest) -> concurrent.futures.Future:
        if not self.alive:
            raise WorkerStopped("the generation worker is not running")
        future: concurrent.futures.Future = concurrent.futures.Future()
        job = SampleJob(request, lambda sample: _settle(future, sample.text), lambda exc: _settle(future, exc))
        try:
            self._waiting.put_nowait(job)
        except queue.Full:
            raise ServiceBusy(f"{self._waiting.maxsize} requests are already waiting") from None
        return future

    def stop(self, timeout: float | None = None) -> None:
        """Finish the samples in progress, then end the thread; requests still waiting fail."""
        self._stopping = True
        try:
            self._waiting.put_nowait(_STOP)  # wakes the thread if it waits for a request
        except queue.Full:
            pass  # the thread is busy and will see _stopping when the samples in progress end
        self._thread.join(timeout)

    def _take_waiting(self) -> SampleJob | None:
        if self._stopping:
            return None
        try:
            job = self._waiting.get_nowait()
        except queue.Empty:
            return None
        if job is _STOP:
            self._stopping = True
            return None
        return job

    def _serve(self) -> None:
        while not self._stopping:
            first = self._waiting.get()
            if first is _STOP:
                break
            pending, taken = [first], []

            def take_job() -> SampleJob | None:
                job = pending.pop() if pending else self._take_waiting()
                if job is not None:
                    taken.append(job)
                return job

            self.batches += 1  # before the run answers anyone, so a caller that has its answer sees it counted
            try:
                self.sampler.run(take_job)
            except Exception as exc:  # noqa: BLE001 - the worker must survive to answer later requests
                log.exception("generation failed")
                for job in taken + pending:
                    job.fail(exc)
        while True:
            try:
                job = self._waiting.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                job.fail(WorkerStopped("the generation service is shutting down"))


def _settle(future: concurrent.futures.Future, result) -> None:
    """Give `future` its text (or exception), unless the client already gave up on it."""
    try:
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


# ---- HTTP ----

token_header = APIKeyHeader(name="x-token", auto_error=False, description="GENERATION_TOKEN, when it is set.")


def get_settings(request: Request) -> GenerationSettings:
    return request.app.state.settings


def require_token(request: Request, x_token: str | None = Security(token_header)) -> None:
    """When GENERATION_TOKEN is set, the x-token header must equal it (constant-time comparison)."""
    expected = get_settings(request).GENERATION_TOKEN
    if expected is None:
        return
    if x_token is None or not secrets.compare_digest(x_token.encode(), expected.get_secret_value().encode()):
        detail = "missing x-token header" if x_token is None else "wrong x-token"
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=f"{detail}: send the service's GENERATION_TOKEN in the x-token header",
            headers={"WWW-Authenticate": "x-token"},
        )


async def _generate(request: Request, params: GenerationParams, where: str) -> dict:
    """The request's text; a parameter the sampler refuses (a prefix too long in tokens) gets a 422."""
    worker: GenerationWorker = request.app.state.worker
    try:
        future = worker.submit(params.sample_request())
        return {"text": await asyncio.wrap_future(future)}
    except SamplerError as exc:
        loc = (where, exc.field) if exc.field else (where,)
        raise RequestValidationError([{"type": "value_error", "loc": loc, "msg": str(exc)}]) from None
    except ServiceBusy as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"busy: {exc}; retry shortly",
                            headers={"Retry-After": "5"}) from None
    except WorkerStopped as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None


class BodySizeLimit:
    """ASGI middleware: a request body over `max_bytes` gets a 413 before any of it is parsed.

    A Content-Length over the limit is refused before the body is read; a body without one (chunked)
    is read until it passes the limit. The body, once whole, is handed on to the app.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay():
            nonlocal body
            if body is None:
                return await receive()
            message, body = body, None
            return message

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        response = JSONResponse(
            {"detail": f"request body over {self.max_bytes} bytes: the parameters fit in far less "
                       f"(prefix at most {MAX_PREFIX_CHARS} characters, truncate {MAX_TRUNCATE_CHARS})"},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        )
        await response(scope, receive, send)


def create_app(settings: GenerationSettings, *, sampler: Sampler | None = None,
               configure_logs: bool = True) -> FastAPI:
    """Build the service; the checkpoint is loaded at start-up, or `sampler` is used (tests, benches)."""
    if configure_logs:
        configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = sampler or Sampler.load(settings.run_folder, batch_size=settings.GENERATION_BATCH_SIZE)
        worker = GenerationWorker(loaded, max_waiting=settings.GENERATION_MAX_WAITING)
        worker.start()
        app.state.worker = worker
        log.info("serving %s", loaded.checkpoint)
        try:
            yield
        finally:
            await asyncio.to_thread(worker.stop)
            if sampler is None:
                loaded.close()

    app = FastAPI(
        title="GPT-2 tweet bot: generation",
        description="Generates text from one fine-tuned GPT-2 run, as the original gpt-2-cloud-run app did.",
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.worker = None
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)  # inside CORS: a 413 carries its headers
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[settings.GENERATION_CORS_ORIGIN],
        allow_methods=["GET", "POST", "HEAD"],
        allow_headers=["content-type", "x-token"],
    )
    guarded = [Depends(require_token)]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        """FastAPI's 422 without the `input` it echoes: it may be huge, NaN (not JSON) or not encodable."""
        errors = [{"type": error["type"], "loc": error["loc"], "msg": error["msg"]} for error in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the service log has the details"}, status_code=500)

    @app.head("/", dependencies=guarded, response_model=GeneratedText)
    def head_root():
        return {"text": ""}

    params = params_model(settings.GENERATION_MAX_LENGTH)

    @app.get("/", dependencies=guarded, response_model=GeneratedText)
    async def generate_get(request: Request, query: Annotated[params, Query()]):
        return await _generate(request, query, "query")

    @app.post("/", dependencies=guarded, response_model=GeneratedText,
              description=f"The parameters as a JSON object of at most {MAX_BODY_BYTES} bytes.")
    async def generate_post(request: Request, body: Annotated[params, Body()] = params()):
        return await _generate(request, body, "body")

    @app.get("/health")
    def health(request: Request):
        worker: GenerationWorker | None = request.app.state.worker
        loaded = worker is not None and worker.alive
        body = {"status": "ok" if loaded else "unavailable", "model_loaded": loaded,
                "run": settings.GENERATION_RUN_NAME}
        if loaded:
            body["checkpoint"] = worker.sampler.checkpoint
        return JSONResponse(body, status_code=200 if loaded else 503)

    return app
