"""The generation service's app and worker: one run's checkpoint, loaded once, sampled on request.

As the original gpt-2-cloud-run app: `GET /` (query parameters) and `POST /` (JSON body) take
length, temperature, top_k, top_p, prefix, truncate and include_prefix and answer `{"text": ...}`;
`HEAD /` answers `{"text": ""}`. Requests do not each run the model: one worker thread owns the
`Sampler`, and requests that arrive while it runs join its batch as rows free up.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import secrets
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, Security, status
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field

from api.logs import configure_logging
from ml.config import GenerationSettings
from ml.sampler import Sampler, SampleJob, SampleRequest

log = logging.getLogger(__name__)

MAX_PREFIX_CHARS = 500
DEFAULT_LENGTH = 1023


class GenerationParams(BaseModel):
    """A request's parameters, with the original app's defaults."""

    model_config = ConfigDict(extra="forbid")

    length: int | None = Field(
        default=None, ge=1, description="Tokens to generate at most (default 1023, or GENERATION_MAX_LENGTH if lower)."
    )
    temperature: float = Field(default=0.7, gt=0, le=100, description="Randomness; > 0.")
    top_k: int = Field(default=0, ge=0, description="Sample from the k likeliest tokens (0: all).")
    top_p: float = Field(default=0.0, ge=0, le=1, description="Nucleus sampling (0: off; overrides top_k).")
    prefix: str = Field(default="", max_length=MAX_PREFIX_CHARS, description="Text to continue.")
    truncate: str | None = Field(default=None, min_length=1, description="Stop where this text appears.")
    include_prefix: bool = Field(default=True, description="Start the answer with the prefix.")

    def sample_request(self, default_length: int) -> SampleRequest:
        return SampleRequest(
            length=self.length or default_length, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
            prefix=self.prefix or None, truncate=self.truncate, include_prefix=self.include_prefix,
        )


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
        self.batches = 0  # sampler runs so far; fewer than requests when requests shared a batch

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def submit(self, request: SampleRequest) -> concurrent.futures.Future:
        if not self.alive:
            raise WorkerStopped("the generation worker is not running")
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            self._waiting.put_nowait(_ServiceJob(request, lambda sample: _settle(future, sample.text), future))
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

            try:
                self.sampler.run(take_job)
                self.batches += 1
            except Exception as exc:  # noqa: BLE001 - the worker must survive to answer later requests
                log.exception("generation failed")
                for job in taken + pending:
                    _settle(job.future, exc)
        while True:
            try:
                job = self._waiting.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                _settle(job.future, WorkerStopped("the generation service is shutting down"))


@dataclass
class _ServiceJob(SampleJob):
    future: concurrent.futures.Future = None


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


SettingsDep = Annotated[GenerationSettings, Depends(get_settings)]


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


def _check_length(params: GenerationParams, settings: GenerationSettings, where: str) -> None:
    limit = settings.GENERATION_MAX_LENGTH
    if params.length is not None and params.length > limit:
        raise RequestValidationError([{
            "type": "less_than_equal", "loc": (where, "length"), "input": params.length,
            "msg": f"Input should be less than or equal to {limit} (GENERATION_MAX_LENGTH)",
            "ctx": {"le": limit},
        }])


async def _generate(request: Request, params: GenerationParams) -> dict:
    worker: GenerationWorker = request.app.state.worker
    default_length = min(DEFAULT_LENGTH, request.app.state.settings.GENERATION_MAX_LENGTH)
    try:
        future = worker.submit(params.sample_request(default_length))
    except ServiceBusy as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"busy: {exc}; retry shortly",
                            headers={"Retry-After": "5"}) from None
    except WorkerStopped as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return {"text": await asyncio.wrap_future(future)}


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
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[settings.GENERATION_CORS_ORIGIN],
        allow_methods=["GET", "POST", "HEAD"],
        allow_headers=["content-type", "x-token"],
    )
    guarded = [Depends(require_token)]

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the service log has the details"}, status_code=500)

    @app.head("/", dependencies=guarded, response_model=GeneratedText)
    def head_root():
        return {"text": ""}

    @app.get("/", dependencies=guarded, response_model=GeneratedText)
    async def generate_get(request: Request, params: Annotated[GenerationParams, Query()], settings: SettingsDep):
        _check_length(params, settings, "query")
        return await _generate(request, params)

    @app.post("/", dependencies=guarded, response_model=GeneratedText)
    async def generate_post(request: Request, settings: SettingsDep,
                            params: Annotated[GenerationParams, Body()] = GenerationParams()):
        _check_length(params, settings, "body")
        return await _generate(request, params)

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
