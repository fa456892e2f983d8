"""The self-hosted scheduler (posting.scheduler): cron parsing, fire times across DST, retries, on a fake clock."""
from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from core.config import ConfigError
from posting import scheduler
from posting.outcomes import ExitCode
from posting.scheduler import (
    idempotency_key,
    next_fire_time,
    parse_schedule,
    run_bots,
    run_forever,
    run_once,
)

UTC = timezone.utc


class FakeClock:
    """A wall clock that moves only when the scheduler sleeps; `stop_after_posts` ends run_forever."""

    def __init__(self, start: datetime, stop_after_posts: int | None = None):
        self.current = start
        self.naps: list[float] = []
        self.stop_after_posts = stop_after_posts
        self.posts: list[tuple[str, datetime]] = []
        self.jumps: dict[int, timedelta] = {}  # nap number -> extra time passing during that nap

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> bool:
        if self.stop_after_posts is not None and len(self.posts) >= self.stop_after_posts:
            return True
        self.naps.append(seconds)
        self.current += timedelta(seconds=seconds) + self.jumps.get(len(self.naps), timedelta())
        return False

    def poster(self, codes=()):
        """A post function recording (key, time) and answering the given exit codes, then ExitCode.posted."""
        answers = list(codes)

        def post(key: str) -> int:
            self.posts.append((key, self.current))
            return answers.pop(0) if answers else ExitCode.posted

        return post


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ---- SCHEDULE and TIME_ZONE ----

@pytest.mark.parametrize("expression", ["0 9 * * *", "*/15 8-20 * * 1-5", "  0   9 * *   *  "])
def test_parse_schedule_accepts_five_field_cron(expression):
    schedule = parse_schedule(expression, "Europe/Paris")
    assert schedule.expression == " ".join(expression.split())
    assert schedule.time_zone == ZoneInfo("Europe/Paris")


@pytest.mark.parametrize("expression", ["0 9 * *", "0 0 9 * * *", "61 9 * * *", "0 9 * * mon-funday", "@daily", ""])
def test_parse_schedule_names_schedule_when_invalid(expression):
    with pytest.raises(ConfigError, match=r"^SCHEDULE is invalid: .*'0 9 \* \* \*'"):
        parse_schedule(expression, "Etc/UTC")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd"])
def test_parse_schedule_names_time_zone_when_invalid(zone):
    with pytest.raises(ConfigError, match="^TIME_ZONE is invalid"):
        parse_schedule("0 9 * * *", zone)


@pytest.mark.parametrize(("expression", "zone", "variable"), [
    ("every day at nine", "Etc/UTC", "BOT_ALICE_SCHEDULE"), ("0 9 * * *", "Mars/Olympus", "BOT_ALICE_TIME_ZONE"),
])
def test_parse_schedule_names_the_bots_own_variable(expression, zone, variable):
    with pytest.raises(ConfigError, match=f"^{variable} is invalid"):
        parse_schedule(expression, zone, "BOT_ALICE_")


# ---- fire times ----

def test_next_fire_time_is_strictly_after():
    daily = parse_schedule("0 9 * * *", "Etc/UTC")
    assert next_fire_time(daily, at("2026-11-22T08:59:59")) == at("2026-11-22T09:00:00")
    assert next_fire_time(daily, at("2026-11-22T09:00:00")) == at("2026-11-23T09:00:00")
    assert next_fire_time(daily, at("2026-11-22T09:00:00.500000")) == at("2026-11-23T09:00:00")


def test_next_fire_time_uses_the_time_zone():
    paris = parse_schedule("0 9 * * *", "Europe/Paris")
    assert next_fire_time(paris, at("2026-01-10T00:00:00")) == at("2026-01-10T08:00:00")  # CET, UTC+1
    assert next_fire_time(paris, at("2026-07-10T00:00:00")) == at("2026-07-10T07:00:00")  # CEST, UTC+2


def test_skipped_hour_fires_once_at_the_next_valid_time():
    """Clocks go forward at 02:00 on 2026-03-08 in New York: 02:30 does not exist that day."""
    schedule = parse_schedule("30 2 * * *", "America/New_York")
    fires = [next_fire_time(schedule, at("2026-03-07T00:00:00"))]
    for _ in range(2):
        fires.append(next_fire_time(schedule, fires[-1]))
    local = [fire.astimezone(ZoneInfo("America/New_York")) for fire in fires]
    assert [(t.day, t.hour, t.minute) for t in local] == [(7, 2, 30), (8, 3, 0), (9, 2, 30)]


def test_repeated_hour_fires_once():
    """Clocks go back at 02:00 on 2026-11-01 in New York: 01:30 happens twice, the bot posts once."""
    schedule = parse_schedule("30 1 * * *", "America/New_York")
    fires = [next_fire_time(schedule, at("2026-10-31T00:00:00"))]
    for _ in range(2):
        fires.append(next_fire_time(schedule, fires[-1]))
    assert fires == [at("2026-10-31T05:30:00"), at("2026-11-01T05:30:00"), at("2026-11-02T06:30:00")]


def test_daily_schedule_fires_once_per_local_day_for_a_year():
    schedule = parse_schedule("30 1 * * *", "America/New_York")
    fire, days = at("2026-01-01T00:00:00"), []
    while fire < at("2027-01-01T00:00:00"):
        fire = next_fire_time(schedule, fire)
        days.append(fire.astimezone(schedule.time_zone).date())
    assert len(days) == len(set(days)) == 366  # every day of 2026 plus 2027-01-01


def test_idempotency_key_is_the_scheduled_time_in_utc():
    paris_nine = datetime(2026, 1, 10, 9, tzinfo=ZoneInfo("Europe/Paris"))
    assert idempotency_key(paris_nine) == "2026-01-10T08:00:00Z"


# ---- the loop ----

def test_run_forever_posts_at_each_fire_time_with_its_key():
    clock = FakeClock(at("2026-11-22T08:00:00"), stop_after_posts=3)
    run_forever(parse_schedule("0 9 * * *", "Etc/UTC"), post=clock.poster(), now=clock.now, sleep=clock.sleep)
    assert clock.posts == [
        ("2026-11-22T09:00:00Z", at("2026-11-22T09:00:00")),
        ("2026-11-23T09:00:00Z", at("2026-11-23T09:00:00")),
        ("2026-11-24T09:00:00Z", at("2026-11-24T09:00:00")),
    ]
    assert max(clock.naps) <= scheduler.MAX_NAP_SECONDS


def test_failed_run_is_retried_with_the_same_key():
    clock = FakeClock(at("2026-11-22T08:59:00"), stop_after_posts=4)
    run_forever(
        parse_schedule("0 9 * * *", "Etc/UTC"), post=clock.poster([4, 1]), now=clock.now, sleep=clock.sleep,
        retry_delays=(30, 120, 600),
    )
    assert clock.posts == [
        ("2026-11-22T09:00:00Z", at("2026-11-22T09:00:00")),
        ("2026-11-22T09:00:00Z", at("2026-11-22T09:00:30")),
        ("2026-11-22T09:00:00Z", at("2026-11-22T09:02:30")),
        ("2026-11-23T09:00:00Z", at("2026-11-23T09:00:00")),
    ]


@pytest.mark.parametrize("code", [ExitCode.queue_empty, 2, 5], ids=["queue-empty", "configuration", "needs-operator"])
def test_final_answers_are_not_retried(code):
    clock = FakeClock(at("2026-11-22T08:59:00"), stop_after_posts=2)
    run_forever(parse_schedule("0 9 * * *", "Etc/UTC"), post=clock.poster([code]), now=clock.now, sleep=clock.sleep)
    assert [key for key, _ in clock.posts] == ["2026-11-22T09:00:00Z", "2026-11-23T09:00:00Z"]


def test_retries_never_reach_the_next_run():
    every_minute = parse_schedule("* * * * *", "Etc/UTC")
    clock = FakeClock(at("2026-11-22T09:00:00"))
    code = run_once(
        "2026-11-22T09:00:00Z", post=clock.poster([4, 4, 4]), now=clock.now, sleep=clock.sleep,
        retry_until=next_fire_time(every_minute, clock.now()), retry_delays=(30, 120),
    )
    assert code == 4
    assert [when for _, when in clock.posts] == [at("2026-11-22T09:00:00"), at("2026-11-22T09:00:30")]


def test_clock_jump_forward_fires_within_one_nap():
    """A host suspended past the fire time posts as soon as it wakes, not a day later."""
    clock = FakeClock(at("2026-11-22T08:00:00"), stop_after_posts=1)
    clock.jumps[3] = timedelta(hours=2)
    run_forever(parse_schedule("0 9 * * *", "Etc/UTC"), post=clock.poster(), now=clock.now, sleep=clock.sleep)
    [(key, when)] = clock.posts
    assert key == "2026-11-22T09:00:00Z"
    assert when == at("2026-11-22T10:03:00")


def test_clock_set_back_after_a_run_does_not_repeat_it():
    clock = FakeClock(at("2026-11-22T08:59:00"), stop_after_posts=2)
    post_and_rewind = clock.poster()

    def post(key):
        code = post_and_rewind(key)
        if len(clock.posts) == 1:
            clock.current -= timedelta(minutes=30)  # NTP corrects the clock backwards
        return code

    run_forever(parse_schedule("0 9 * * *", "Etc/UTC"), post=post, now=clock.now, sleep=clock.sleep)
    assert [key for key, _ in clock.posts] == ["2026-11-22T09:00:00Z", "2026-11-23T09:00:00Z"]


def test_runs_missed_while_retrying_are_skipped_not_bunched():
    every_minute = parse_schedule("* * * * *", "Etc/UTC")
    clock = FakeClock(at("2026-11-22T08:59:30"), stop_after_posts=2)

    def slow_post(key):
        clock.posts.append((key, clock.current))
        clock.current += timedelta(minutes=3)  # one post that outlives three fire times
        return ExitCode.posted

    run_forever(every_minute, post=slow_post, now=clock.now, sleep=clock.sleep)
    assert clock.posts == [
        ("2026-11-22T09:00:00Z", at("2026-11-22T09:00:00")),
        ("2026-11-22T09:04:00Z", at("2026-11-22T09:04:00")),
    ]


def test_stop_while_waiting_posts_nothing():
    clock = FakeClock(at("2026-11-22T08:00:00"), stop_after_posts=0)
    run_forever(parse_schedule("0 9 * * *", "Etc/UTC"), post=clock.poster(), now=clock.now, sleep=clock.sleep)
    assert clock.posts == []


# ---- several bots, one thread each ----

class VirtualClock:
    """Time shared by the bots' threads, moved only while every thread sleeps, to the earliest end of a nap:
    several bots run on one fake clock deterministically. A nap that would end after `until` stops its bot."""

    def __init__(self, start: datetime, until: datetime, threads: int):
        self.current, self.until, self.threads = start, until, threads
        self.naps_ending: dict[int, datetime] = {}  # thread id -> when its nap ends
        self.stopped = 0
        self.condition = threading.Condition()
        self.posts: dict[str | None, list[tuple[str, datetime]]] = {}

    def now(self) -> datetime:
        with self.condition:
            return self.current

    def sleep(self, seconds: float) -> bool:
        with self.condition:
            wake = self.current + timedelta(seconds=seconds)
            if wake > self.until:
                self.stopped += 1
                self._advance()
                return True
            self.naps_ending[threading.get_ident()] = wake
            self._advance()
            woke = self.condition.wait_for(lambda: self.current >= wake, timeout=60)
            del self.naps_ending[threading.get_ident()]
            assert woke, "the virtual clock stopped moving"
            return False

    def _advance(self) -> None:
        if self.naps_ending and len(self.naps_ending) + self.stopped == self.threads:
            self.current = max(self.current, min(self.naps_ending.values()))
            self.condition.notify_all()

    def poster(self, codes: dict[str, list[int]] | None = None):
        """post(key, bot) recording (key, time) per bot and answering its given codes, then ExitCode.posted."""
        answers = {bot: list(bot_codes) for bot, bot_codes in (codes or {}).items()}

        def post(key: str, bot: str | None) -> int:
            self.posts.setdefault(bot, []).append((key, self.now()))
            pending = answers.get(bot)
            return pending.pop(0) if pending else ExitCode.posted

        return post


def run_bots_on(clock: VirtualClock, schedules, post) -> bool:
    return run_bots(schedules, post=post, now=clock.now, sleep=clock.sleep, stop=threading.Event())


def test_each_bot_fires_on_its_own_schedule_and_time_zone():
    schedules = {"alice": parse_schedule("0 9 * * *", "Europe/Paris"), "bob": parse_schedule("30 9 * * 1-5", "America/New_York")}
    clock = VirtualClock(at("2026-11-20T00:00:00"), until=at("2026-11-24T00:00:00"), threads=2)  # Friday to Tuesday
    assert run_bots_on(clock, schedules, clock.poster())
    assert clock.posts == {
        "alice": [(f"2026-11-{day}T08:00:00Z", at(f"2026-11-{day}T08:00:00")) for day in (20, 21, 22, 23)],
        "bob": [(f"2026-11-{day}T14:30:00Z", at(f"2026-11-{day}T14:30:00")) for day in (20, 23)],
    }


def test_bots_firing_at_the_same_minute_each_post_with_the_scheduled_time():
    """Keys are per bot (tweets.account): the same key for two bots is two runs, each posting once."""
    daily = parse_schedule("0 9 * * *", "Etc/UTC")
    clock = VirtualClock(at("2026-11-22T08:00:00"), until=at("2026-11-22T12:00:00"), threads=2)
    assert run_bots_on(clock, {"alice": daily, "bob": daily}, clock.poster())
    assert clock.posts == {bot: [("2026-11-22T09:00:00Z", at("2026-11-22T09:00:00"))] for bot in ("alice", "bob")}


def test_one_bots_retries_never_delay_another_bots_run():
    schedules = {"alice": parse_schedule("0 9 * * *", "Etc/UTC"), "bob": parse_schedule("1 9 * * *", "Etc/UTC")}
    clock = VirtualClock(at("2026-11-22T08:00:00"), until=at("2026-11-22T12:00:00"), threads=2)
    assert run_bots_on(clock, schedules, clock.poster({"alice": [ExitCode.retry_later, ExitCode.retry_later]}))
    assert clock.posts == {
        "alice": [("2026-11-22T09:00:00Z", at(f"2026-11-22T{when}")) for when in ("09:00:00", "09:00:30", "09:02:30")],
        "bob": [("2026-11-22T09:01:00Z", at("2026-11-22T09:01:00"))],
    }


def test_one_bot_runs_as_before_with_no_bot_named():
    """One bot: the posting command is called for the default bot (no --bot), as before BOTS existed."""
    clock = VirtualClock(at("2026-11-22T08:00:00"), until=at("2026-11-23T12:00:00"), threads=1)
    assert run_bots_on(clock, {"my_bot": parse_schedule("0 9 * * *", "Etc/UTC")}, clock.poster())
    assert clock.posts == {None: [(f"2026-11-{day}T09:00:00Z", at(f"2026-11-{day}T09:00:00")) for day in (22, 23)]}


def test_a_failing_bot_loop_stops_every_bot(caplog):
    """A loop that raises must not leave its bot silently stopped: every bot stops and run_bots says it failed."""
    start = at("2026-11-22T09:00:00")
    minutes = itertools.count()
    stop = threading.Event()
    bob_posts = []

    def post(key, bot):
        if bot == "alice":
            raise RuntimeError("the posting command could not be started")
        bob_posts.append(key)
        return ExitCode.posted

    schedules = {"alice": parse_schedule("* * * * *", "Etc/UTC"), "bob": parse_schedule("0 9 1 1 *", "Etc/UTC")}
    finished = run_bots(schedules, post=post, now=lambda: start + timedelta(minutes=next(minutes)), sleep=stop.wait, stop=stop)
    assert finished is False
    assert stop.is_set()
    assert bob_posts == []
    assert "bot alice: the schedule's loop failed; stopping every bot" in caplog.text


# ---- the command ----

@pytest.fixture
def scheduler_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no developer .env
    monkeypatch.setenv("SECRET_TOKEN", "test-token-0123456789abcdef")
    monkeypatch.setenv("ACCOUNT", "test_bot")
    monkeypatch.setenv("SCHEDULE", "0 9 * * *")
    monkeypatch.setenv("TIME_ZONE", "Europe/Paris")
    return monkeypatch


def test_show_prints_the_next_fire_times(scheduler_env, capsys):
    assert scheduler.main(["--show", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    keys = [line.split()[0] for line in lines]
    assert keys == sorted(set(keys))
    assert all(line.endswith(":00+01:00)") or line.endswith(":00+02:00)") for line in lines)
    assert all("T09:00:00+0" in line for line in lines)


def test_show_zero_prints_nothing_and_exits(scheduler_env, capsys, monkeypatch):
    monkeypatch.setattr(scheduler, "run_forever", lambda *args, **kwargs: pytest.fail("--show 0 started the scheduler"))
    assert scheduler.main(["--show", "0"]) == 0
    assert capsys.readouterr().out == ""


def test_bad_schedule_exits_2_naming_it(scheduler_env, capsys):
    scheduler_env.setenv("SCHEDULE", "every day at nine")
    assert scheduler.main(["--show", "1"]) == 2
    assert capsys.readouterr().err.startswith("Configuration error: SCHEDULE is invalid")


@pytest.fixture
def queued_store(scheduler_env, tmp_path):
    """Makes the SQLite store the posting command reads (tables from the models) with the given queued tweets
    per account, and returns its session factory."""
    from db.store import ingest_texts
    from db.engine import make_engine, make_session_factory
    from db.models import Base, TweetStatus

    engines = []

    def make(queued: dict[str, list[str]]):
        database = tmp_path / "scheduler.db"
        scheduler_env.setenv("SQLITE_PATH", str(database))
        scheduler_env.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
        engines.append(make_engine(f"sqlite:///{database}"))
        Base.metadata.create_all(engines[-1])
        sessions = make_session_factory(engines[-1])
        with sessions.begin() as session:
            for account, texts in queued.items():
                ingest_texts(session, account=account, texts=texts, status=TweetStatus.queued)
        return sessions

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def dry_run_store(scheduler_env, queued_store):
    """Two queued tweets of the one bot, posting in dry run."""
    scheduler_env.setenv("TWITTER_DRY_RUN", "true")
    return queued_store({"test_bot": ["first queued tweet", "second queued tweet"]})


def posted_runs(sessions) -> list[tuple[str, str]]:
    """(account, idempotency key) of each posted tweet, all dry runs."""
    from sqlalchemy import select

    from db.models import Tweet, TweetStatus

    with sessions() as session:
        posted = session.scalars(select(Tweet).where(Tweet.status == TweetStatus.posted)).all()
    assert all(tweet.dry_run for tweet in posted)
    return sorted((tweet.account, tweet.idempotency_key) for tweet in posted)


def posted_keys(sessions) -> list[str]:
    return [key for _, key in posted_runs(sessions)]


def test_post_with_cli_runs_the_posting_command_once_per_key(dry_run_store):
    """The real `python -m posting.post_next` in a child process, on SQLite with dry-run posting."""
    assert scheduler.post_with_cli("2026-11-22T09:00:00Z") == ExitCode.posted
    assert scheduler.post_with_cli("2026-11-22T09:00:00Z") == ExitCode.posted  # a retry: answered, not posted again
    assert scheduler.post_with_cli("2026-11-23T09:00:00Z") == ExitCode.posted
    assert scheduler.post_with_cli("2026-11-24T09:00:00Z") == ExitCode.queue_empty
    assert posted_keys(dry_run_store) == ["2026-11-22T09:00:00Z", "2026-11-23T09:00:00Z"]


def test_the_old_entry_points_still_run(dry_run_store):
    """`python -m api.post_next` and `python -m api.scheduler` stay as aliases for existing cron lines."""
    posted = subprocess.run([sys.executable, "-m", "api.post_next", "--idempotency-key", "old-cron-line"],
                            capture_output=True, text=True, timeout=120)
    assert posted.returncode == ExitCode.posted, posted.stdout + posted.stderr
    assert posted_keys(dry_run_store) == ["old-cron-line"]
    shown = subprocess.run([sys.executable, "-m", "api.scheduler", "--show", "2"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout.splitlines()) == 2


def test_main_posts_with_the_scheduled_time_as_the_key(dry_run_store, monkeypatch):
    """What docker compose's `scheduler` service runs (`python -m posting.scheduler`), on a fake clock: SCHEDULE and
    TIME_ZONE from the settings, the real posting command, and the run's scheduled time stored as the tweet's key."""
    clock = FakeClock(at("2026-11-22T07:59:10"), stop_after_posts=1)
    loop = scheduler.run_forever

    def run_forever_on_the_fake_clock(schedule, *, post, now, sleep, **options):
        def recorded(key):
            clock.posts.append((key, clock.current))
            return post(key)

        loop(schedule, post=recorded, now=clock.now, sleep=clock.sleep, **options)

    monkeypatch.setattr(scheduler, "run_forever", run_forever_on_the_fake_clock)
    monkeypatch.setattr(scheduler, "configure_logging", lambda *args: None)  # keeps pytest's log handlers
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert scheduler.main([]) == 0
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    # 09:00 in Paris (TIME_ZONE) is 08:00 UTC
    assert clock.posts == [("2026-11-22T08:00:00Z", at("2026-11-22T08:00:00"))]
    assert posted_keys(dry_run_store) == ["2026-11-22T08:00:00Z"]


# ---- the command, several bots (BOTS) ----

@pytest.fixture
def bots_env(scheduler_env):
    """BOTS=alice,bob: alice posts at 09:00 in Paris, bob at 09:30 in New York; the plain SCHEDULE is not theirs."""
    scheduler_env.delenv("ACCOUNT")
    scheduler_env.setenv("BOTS", "alice,bob")
    for name, value in {"BOT_ALICE_SCHEDULE": "0 9 * * *", "BOT_ALICE_TIME_ZONE": "Europe/Paris",
                        "BOT_BOB_SCHEDULE": "30 9 * * *", "BOT_BOB_TIME_ZONE": "America/New_York"}.items():
        scheduler_env.setenv(name, value)
    return scheduler_env


def test_show_prints_each_bots_fire_times(bots_env, capsys):
    assert scheduler.main(["--show", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["alice", "alice", "bob", "bob"]
    assert all("T09:00:00+0" in line for line in lines[:2])
    assert all("T09:30:00-0" in line for line in lines[2:])


@pytest.mark.parametrize(("variable", "value"), [("BOT_BOB_SCHEDULE", "every day at nine"), ("BOT_ALICE_TIME_ZONE", "Paris")])
def test_a_bots_bad_schedule_exits_2_naming_its_variable(bots_env, capsys, variable, value):
    bots_env.setenv(variable, value)
    assert scheduler.main(["--show", "1"]) == 2
    assert capsys.readouterr().err.startswith(f"Configuration error: {variable} is invalid")


def test_post_with_cli_posts_for_the_bot_it_names(bots_env, queued_store):
    """Two bots with the same key (the same minute): each posts its own tweet once, a retry of either posts nothing."""
    bots_env.setenv("BOT_ALICE_TWITTER_DRY_RUN", "true")
    bots_env.setenv("BOT_BOB_TWITTER_DRY_RUN", "true")
    sessions = queued_store({"alice": ["alice's tweet"], "bob": ["bob's tweet", "bob's second tweet"]})
    for bot in ("alice", "bob", "alice", "bob"):
        assert scheduler.post_with_cli("2026-11-22T09:00:00Z", bot=bot) == ExitCode.posted
    assert posted_runs(sessions) == [("alice", "2026-11-22T09:00:00Z"), ("bob", "2026-11-22T09:00:00Z")]


def test_main_runs_every_bots_schedule(bots_env, queued_store, monkeypatch):
    """`python -m posting.scheduler` with BOTS, on a virtual clock: each bot's SCHEDULE and TIME_ZONE, the real
    posting command with --bot, each bot's scheduled time stored as its tweet's key."""
    bots_env.setenv("BOT_BOB_SCHEDULE", "0 8 * * *")
    bots_env.setenv("BOT_BOB_TIME_ZONE", "Etc/UTC")  # 08:00 UTC: the minute of alice's 09:00 in Paris
    bots_env.setenv("BOT_ALICE_TWITTER_DRY_RUN", "true")
    bots_env.setenv("BOT_BOB_TWITTER_DRY_RUN", "true")
    sessions = queued_store({"alice": ["alice's tweet"], "bob": ["bob's tweet"]})
    clock = VirtualClock(at("2026-11-22T07:59:10"), until=at("2026-11-22T09:00:00"), threads=2)
    real_run_bots = scheduler.run_bots

    def run_bots_on_the_virtual_clock(schedules, *, post, now, sleep, stop):
        record = clock.poster()

        def recorded(key, bot):
            record(key, bot)
            return post(key, bot)

        return real_run_bots(schedules, post=recorded, now=clock.now, sleep=clock.sleep, stop=stop)

    monkeypatch.setattr(scheduler, "run_bots", run_bots_on_the_virtual_clock)
    monkeypatch.setattr(scheduler, "configure_logging", lambda *args: None)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert scheduler.main([]) == 0
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert clock.posts == {bot: [("2026-11-22T08:00:00Z", at("2026-11-22T08:00:00"))] for bot in ("alice", "bob")}
    assert posted_runs(sessions) == [("alice", "2026-11-22T08:00:00Z"), ("bob", "2026-11-22T08:00:00Z")]


@pytest.mark.parametrize("bots", [None, "alice,bob"], ids=["one-bot", "two-bots"])
def test_sigterm_stops_every_bot(tmp_path, bots):
    """The real command: once each bot waits for its next run, SIGTERM ends the process cleanly (exit 0)."""
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
                   "SECRET_TOKEN": "test-token-0123456789abcdef", "LOG_FORMAT": "text",
                   **({"BOTS": bots, "BOT_BOB_TIME_ZONE": "Asia/Tokyo"} if bots else {"ACCOUNT": "test_bot"})}
    expected = ["bot alice: next run at", "bot bob: next run at"] if bots else ["posting.scheduler: next run at"]
    process = subprocess.Popen([sys.executable, "-m", "posting.scheduler"], cwd=tmp_path, env=environment,
                               stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not all(any(text in line for line in lines) for text in expected):
            line = process.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, "".join(lines)
        lines += process.stderr.readlines()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert lines[-1].rstrip().endswith("posting.scheduler: scheduler stopped")


def test_the_scheduler_retries_exactly_the_outcomes_worth_retrying():
    """The scheduler sees only exit codes: each outcome's code must carry its retry-or-not to it."""
    from posting.outcomes import PostOutcome

    assert {outcome for outcome in PostOutcome if outcome.exit_code in scheduler.RETRYABLE} == {
        PostOutcome.in_flight, PostOutcome.queue_busy, PostOutcome.rate_limited, PostOutcome.x_failed,
    }
    assert ExitCode.unexpected in scheduler.RETRYABLE
    assert not any(outcome.retryable and outcome.needs_operator for outcome in PostOutcome)
