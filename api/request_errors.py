"""How errors become HTTP answers.

- The store's errors (db.store, core.tweet_text, the curation page's actions) map to a status in
  one table, STORE_ERROR_STATUS: the app registers a handler for each, and the curation page
  reads the same table when it answers a form.
- The 422 answer to a request that fails validation, in FastAPI's shape but encodable whatever
  was sent: FastAPI's own echoes each wrong input whole, and fails on non-finite numbers (JSON's
  1e999, NaN), lone surrogates and inputs nested past the encoder's recursion limit.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from itertools import islice

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.curate.actions import BadXLink
from core.config import UnknownBot
from core.tweet_text import CuratedFileError, TweetRejected
from db.store import NoValidTweet, TweetConflict, TweetNotFound, UploadTooLarge

# Each error's str() is the answer's detail: it says what was wrong and what to do.
STORE_ERROR_STATUS: dict[type[Exception], int] = {
    TweetNotFound: status.HTTP_404_NOT_FOUND,
    UnknownBot: status.HTTP_404_NOT_FOUND,
    TweetConflict: status.HTTP_409_CONFLICT,
    TweetRejected: status.HTTP_422_UNPROCESSABLE_CONTENT,
    BadXLink: status.HTTP_422_UNPROCESSABLE_CONTENT,
    NoValidTweet: status.HTTP_422_UNPROCESSABLE_CONTENT,
    CuratedFileError: status.HTTP_400_BAD_REQUEST,
    UploadTooLarge: status.HTTP_413_CONTENT_TOO_LARGE,
}

ECHO_MAX_CHARS = 200
ECHO_MAX_ITEMS = 20
ECHO_MAX_DEPTH = 4
CUT = "…"
NON_FINITE_NUMBER = "JSON number out of range (NaN, Infinity or beyond ±1.8e308): send a finite number"
_SURROGATES = re.compile("[\ud800-\udfff]")


def echo(value, *, max_chars: int = ECHO_MAX_CHARS, depth: int = 0):
    """`value` as JSON can carry it: strings cut to `max_chars`, lone surrogates as U+FFFD,
    containers cut to ECHO_MAX_ITEMS items and ECHO_MAX_DEPTH levels, non-finite numbers as
    JSON's names for them (strings)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, BaseException):
        value = str(value)
    if isinstance(value, str):
        cut = value[:max_chars] + (CUT if len(value) > max_chars else "")
        return _SURROGATES.sub("\ufffd", cut)
    if isinstance(value, (Mapping, list, tuple)) and depth >= ECHO_MAX_DEPTH:
        return CUT
    if isinstance(value, Mapping):
        return {
            echo(str(key), max_chars=max_chars): echo(item, max_chars=max_chars, depth=depth + 1)
            for key, item in islice(value.items(), ECHO_MAX_ITEMS)
        }
    if isinstance(value, (list, tuple)):
        return [echo(item, max_chars=max_chars, depth=depth + 1) for item in value[:ECHO_MAX_ITEMS]]
    return type(value).__name__


def describe_errors(errors) -> list[dict]:
    """FastAPI's error list, each entry made encodable; a non-finite number is named as such."""
    described = []
    for error in errors:
        non_finite = isinstance(error.get("input"), float) and not math.isfinite(error["input"])
        entry = {}
        for key, value in error.items():
            if key == "loc":
                entry[key] = [echo(part) for part in value]
            elif key == "msg":
                entry[key] = NON_FINITE_NUMBER if non_finite else echo(value, max_chars=1000)
            else:
                entry[key] = echo(value)
        described.append(entry)
    return described


async def validation_error_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": describe_errors(exc.errors())}, status_code=422)


def store_error_status(error: Exception) -> int:
    """The HTTP status of one of STORE_ERROR_STATUS's errors."""
    return next(code for kind, code in STORE_ERROR_STATUS.items() if isinstance(error, kind))


async def store_error_response(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=store_error_status(error))


def register_error_answers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error_response)
    for kind in STORE_ERROR_STATUS:
        app.add_exception_handler(kind, store_error_response)
