"""Self-hosted scheduler: posts each bot's next curated tweet on its cron SCHEDULE, as Cloud Scheduler would.

`python -m posting.scheduler` sleeps until each fire time of SCHEDULE (in TIME_ZONE), then runs
`python -m posting.post_next [--bot <name>] --idempotency-key <scheduled time>` (--bot with several
bots). The key is the scheduled time, not the clock at the call, so every retry of one run carries
the same key and the posting code answers it with the first attempt's result instead of posting
again. Keys are per bot (per account), so bots firing at the same minute share a key without
sharing a run.
With several bots (BOTS), each runs its own SCHEDULE and TIME_ZONE (BOT_<NAME>_SCHEDULE...) in a
thread of its own: one bot's retries never delay another's runs.
`python -m posting.scheduler --show 5` prints each bot's next five fire times and exits.
"""
from __future__ import annotations

import argparse
import functools
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from core.config import ConfigError, Settings, load_settings
from core.logs import configure_logging
from posting.outcomes import ExitCode

log = logging.getLogger("posting.scheduler")

# The posting command's exit codes worth another attempt with the same key (any other code is final).
RETRYABLE = frozenset(code for code in ExitCode if code.retryable)

# Seconds between attempts of one run whose post failed (a retry never outlives the next run).
RETRY_DELAYS = (30.0, 120.0, 600.0)
# Longest single sleep: the clock is read again after each nap, so a clock that was set or a host
# that was suspended delays a run by at most this much.
MAX_NAP_SECONDS = 60.0
# A post that takes longer than this is stopped; its tweet's lease then expires into `unconfirmed`.
POST_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class Schedule:
    """A five-field cron expression evaluated in a time zone."""

    expression: str
    time_zone: ZoneInfo


def parse_schedule(expression: str, time_zone: str, prefix: str = "") -> Schedule:
    """Check SCHEDULE and TIME_ZONE; raise ConfigError naming the one that is wrong, as the operator
    sets it (with the bot's prefix, e.g. BOT_ALICE_SCHEDULE)."""
    expression = " ".join(expression.split())
    if len(expression.split(" ")) != 5 or not croniter.is_valid(expression):
        raise ConfigError(
            f"{prefix}SCHEDULE is invalid: {expression!r} is not a five-field cron expression "
            "(minute hour day-of-month month day-of-week), e.g. '0 9 * * *' for 09:00 every day."
        )
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{prefix}TIME_ZONE is invalid: {time_zone!r} is not an IANA time zone name, e.g. Etc/UTC or Europe/Paris."
        ) from None
    return Schedule(expression, zone)


def bot_schedules(settings: Settings) -> dict[str, Schedule]:
    """Every bot's schedule by name, in the order of BOTS; ConfigError names the first bad variable."""
    return {name: parse_schedule(bot.SCHEDULE, bot.TIME_ZONE, bot.prefix) for name, bot in settings.bots.items()}


def next_fire_time(schedule: Schedule, after: datetime) -> datetime:
    """The first fire time strictly after `after` (an aware datetime), in UTC.

    A wall-clock time that happens twice when the clocks go back fires only the first time, so a
    daily schedule inside the repeated hour still posts once that day.
    """
    candidate = after.astimezone(schedule.time_zone)
    while True:
        candidate = croniter(schedule.expression, candidate).get_next(datetime)
        wall_clock = candidate.replace(tzinfo=None)
        first_occurrence = wall_clock.replace(tzinfo=schedule.time_zone, fold=0)
        if first_occurrence.astimezone(timezone.utc) == candidate.astimezone(timezone.utc):
            return candidate.astimezone(timezone.utc)


def idempotency_key(fire_time: datetime) -> str:
    """The run's key: its scheduled time in UTC, e.g. 2026-11-23T09:00:00Z."""
    return fire_time.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_until(moment: datetime, *, now: Callable[[], datetime], sleep: Callable[[float], bool]) -> bool:
    """Sleep until `moment` in naps of at most MAX_NAP_SECONDS; False if `sleep` reports a stop."""
    while True:
        remaining = (moment - now()).total_seconds()
        if remaining <= 0:
            return True
        if sleep(min(remaining, MAX_NAP_SECONDS)):
            return False


def said_for(bot: str | None) -> str:
    """What starts a log line about `bot`: its name when the scheduler runs several, else (None) nothing."""
    return f"bot {bot}: " if bot else ""


def run_once(
    key: str,
    *,
    post: Callable[[str], int],
    now: Callable[[], datetime],
    sleep: Callable[[float], bool],
    retry_until: datetime,
    retry_delays: Sequence[float] = RETRY_DELAYS,
    bot: str | None = None,
) -> int:
    """Post for one scheduled run, retrying RETRYABLE failures with the same key; return the last exit code.

    A retry that would start at or after `retry_until` (the next run) is dropped. `bot` names the bot
    in the log lines (None: one bot).
    """
    said = said_for(bot)
    code = post(key)
    for attempt, delay in enumerate(retry_delays, start=2):
        if code not in RETRYABLE:
            break
        retry_at = now().timestamp() + delay
        if retry_at >= retry_until.timestamp():
            log.warning("%srun %s failed (exit %s); no retry fits before the next run", said, key, code)
            break
        log.warning("%srun %s failed (exit %s); attempt %s in %.0f s with the same key", said, key, code, attempt, delay)
        if not wait_until(datetime.fromtimestamp(retry_at, timezone.utc), now=now, sleep=sleep):
            break
        code = post(key)
    if code == ExitCode.posted:
        log.info("%srun %s posted", said, key)
    elif code == ExitCode.queue_empty:
        log.warning("%srun %s: the queue is empty; approve more tweets", said, key)
    elif code in RETRYABLE:
        log.error("%srun %s failed (exit %s); the next run is the next scheduled time", said, key, code)
    else:
        log.error("%srun %s needs an operator (exit %s): see the posting command's line above", said, key, code)
    return code


def run_forever(
    schedule: Schedule,
    *,
    post: Callable[[str], int],
    now: Callable[[], datetime],
    sleep: Callable[[float], bool],
    retry_delays: Sequence[float] = RETRY_DELAYS,
    bot: str | None = None,
) -> None:
    """Fire at every fire time of `schedule` until `sleep` reports a stop.

    Runs missed while a previous run was still retrying are skipped, not caught up.
    """
    said = said_for(bot)
    fire = next_fire_time(schedule, now())
    while True:
        log.info("%snext run at %s", said, idempotency_key(fire))
        if not wait_until(fire, now=now, sleep=sleep):
            return
        following = next_fire_time(schedule, fire)
        run_once(idempotency_key(fire), post=post, now=now, sleep=sleep, retry_until=following,
                 retry_delays=retry_delays, bot=bot)
        current = now()
        if following <= current:
            skipped_to = next_fire_time(schedule, current)
            log.warning("%sskipped the runs from %s to before %s", said, idempotency_key(following), idempotency_key(skipped_to))
            following = skipped_to
        fire = following


def run_bots(
    schedules: Mapping[str, Schedule],
    *,
    post: Callable[[str, str | None], int],
    now: Callable[[], datetime],
    sleep: Callable[[float], bool],
    stop: threading.Event,
) -> bool:
    """Run every bot's schedule (run_forever) in a thread of its own until `sleep` reports a stop.

    `post(key, bot)` posts for a bot; with one bot, `bot` is None (the default bot) and the log lines
    name no bot, as before there were several. A bot whose loop fails sets `stop`, so that every
    bot stops and the process exits with an error for its supervisor to restart it, rather than
    going on with that bot silently stopped. Returns False when a loop failed.
    """
    several = len(schedules) > 1
    failed: list[str] = []

    def run(name: str, schedule: Schedule) -> None:
        bot = name if several else None
        try:
            run_forever(schedule, post=functools.partial(post, bot=bot), now=now, sleep=sleep, bot=bot)
        except Exception:
            log.exception("%sthe schedule's loop failed; stopping every bot", said_for(bot))
            failed.append(name)
            stop.set()

    threads = [threading.Thread(target=run, args=item, name=f"schedule-{item[0]}") for item in schedules.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return not failed


def post_with_cli(key: str, bot: str | None = None) -> int:
    """Run the posting command in a fresh process, for `bot` (None: the default one); its one-line report goes to our output."""
    command = [sys.executable, "-m", "posting.post_next", *(["--bot", bot] if bot else []), "--idempotency-key", key]
    try:
        return subprocess.run(command, timeout=POST_TIMEOUT_SECONDS, check=False).returncode
    except subprocess.TimeoutExpired:
        log.error("%srun %s: the posting command took over %.0f s and was stopped", said_for(bot), key, POST_TIMEOUT_SECONDS)
        return ExitCode.unexpected


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m posting.scheduler", description=__doc__.split("\n")[0])
    parser.add_argument("--show", type=int, metavar="N", help="print each bot's next N fire times and exit")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        schedules = bot_schedules(settings)
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    several = len(schedules) > 1
    if args.show is not None:
        for name, schedule in schedules.items():
            fire = datetime.now(timezone.utc)
            for _ in range(args.show):
                fire = next_fire_time(schedule, fire)
                line = f"{idempotency_key(fire)}  ({fire.astimezone(schedule.time_zone).isoformat()})"
                print(f"{name}  {line}" if several else line)
        return 0

    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    for name, schedule in schedules.items():
        log.info("%sscheduler started: SCHEDULE=%r TIME_ZONE=%s", said_for(name if several else None),
                 schedule.expression, schedule.time_zone.key)
    finished = run_bots(schedules, post=post_with_cli, now=lambda: datetime.now(timezone.utc), sleep=stop.wait, stop=stop)
    log.info("scheduler stopped")
    return 0 if finished else 1


if __name__ == "__main__":
    sys.exit(main())
