"""Command line: post the next curated tweet (cron or a scheduler container), the endpoint's code path.

    python -m posting.post_next [--bot NAME] [--idempotency-key KEY]

Prints one line saying what happened and exits with the outcome's code (posting.outcomes.ExitCode):
  0 posted (or recorded as a dry run, or already posted by an earlier run with this key)
  3 the queue is empty
  2 configuration: bad settings, no such bot, or a destination's credentials missing without its dry run
  4 try again later: X's rate limit, X failed or was unreachable, the same key is in flight, or a
    curator is changing the queued tweets at this moment
  5 needs an operator: X rejected the credentials, a tweet is unconfirmed, texts were refused,
    or the key's tweet was moved since
  1 unexpected error (the log has the traceback)
"""
from __future__ import annotations

import argparse
import logging
import sys

from core.config import ConfigError, Settings, UnknownBot, load_settings
from core.logs import configure_logging
from db.engine import make_engine, make_session_factory
from posting.job import MAX_IDEMPOTENCY_KEY_LENGTH, log_posting_configuration, post_next
from posting.outcomes import ExitCode

log = logging.getLogger("posting.post_next")



def idempotency_key(value: str) -> str:
    if not value.strip() or len(value) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m posting.post_next", description=__doc__.split("\n")[0])
    parser.add_argument("--bot", help="the bot to post for (one of BOTS); default: ACCOUNT, or the first of BOTS")
    parser.add_argument(
        "--idempotency-key",
        type=idempotency_key,
        help="e.g. the scheduled time of this run: runs with the same key post at most one tweet",
    )
    return parser.parse_args(argv)


def run(settings: Settings, key: str | None, bot: str | None = None) -> int:
    """Post once with these settings; print the one-line outcome; return the exit code."""
    try:
        settings.bot(bot)
    except UnknownBot as exc:
        print(f"Configuration error: {exc}")
        return ExitCode.configuration
    engine = make_engine(settings.database_url)
    try:
        result = post_next(session_factory=make_session_factory(engine), settings=settings, bot=bot, idempotency_key=key)
    except Exception:
        log.exception("posting failed unexpectedly")
        print("posting failed unexpectedly: see the log above")
        return ExitCode.unexpected
    finally:
        engine.dispose()
    line = result.message
    if result.replayed:
        line = f"{line} (answer of an earlier run with this idempotency key)"
    if result.retry_after is not None:
        line = f"{line}; retry after {result.retry_after} s"
    print(line)
    return result.outcome.exit_code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"Configuration error: {exc}")
        return ExitCode.configuration
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    log_posting_configuration(settings)
    return run(settings, args.idempotency_key, args.bot)


if __name__ == "__main__":
    sys.exit(main())
