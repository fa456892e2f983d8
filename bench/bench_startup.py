"""Start-up time and memory of the API as its image starts it, against a bare FastAPI app (the floor),
and the first POST /tweet_curated/ after a start against a warm one.

    .venv/bin/python -m bench.bench_startup [--runs 7] [--warm-posts 5] [--venv .venv-api] [--app-dir DIR]
        [--baseline CHECKOUT]

Both apps start the way the Dockerfile's command does (`sh -c "exec uvicorn MODULE --port $PORT"`,
LOG_FORMAT=json, from the files the image copies, compiled as its build compiles them), in the
virtualenv given (default `.venv-api`, which tests/test_deploy.py builds from requirements.txt alone;
`.venv` otherwise). With `--app-dir` the API's files are taken as they are from that folder instead:
inside the API image (`IMAGE_TEST_PARTS=startup make image-test`), its /app as its build compiled it,
with the image's Python (`--venv` naming the prefix whose bin/ holds its uvicorn). `--baseline` starts
another checkout's API too, in the same runs (a change's before and after, on a machine whose load varies):
    git worktree add /tmp/before HEAD~1 && .venv/bin/python -m bench.bench_startup --baseline /tmp/before

Each run starts, in turn, the bare app, the API posting in dry run and the API posting to the fake X of
tests/fake_x.py on loopback, and measures: the time from process start to the first 200 answer of GET
/health, the server's resident memory (VmRSS) and CPU time right then, and for the API the time
(wall-clock and the server's CPU) of the first POST /tweet_curated/ sent right after that answer, then
of `--warm-posts` more. The API runs on a migrated SQLite file holding enough queued tweets for every
post.
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.fake_x import FakeX

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0123456789"
BARE_APP = '''from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
def health():
    return {"status": "ok"}
'''
# The floor of any /health that asks the database through SQLAlchemy, as the API's does: the bare app
# plus an engine (core only, then with the ORM, which the posting path's store is written in).
SQLALCHEMY_APP = '''import os

from fastapi import FastAPI
from sqlalchemy import create_engine, text
{orm_import}
engine = create_engine("sqlite:///" + os.environ["SQLITE_PATH"])
app = FastAPI()


@app.get("/health")
def health():
    with engine.connect() as connection:
        connection.execute(text("SELECT 1 FROM tweets LIMIT 1"))
    return {{"status": "ok"}}
'''


def image_command() -> str:
    """The shell command of the Dockerfile's CMD, bound to loopback for this machine."""
    cmd_line = [line for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")][-1]
    return json.loads(cmd_line[4:])[-1].replace("--host 0.0.0.0", "--host 127.0.0.1")


def compiled_packages(checkout: Path) -> list[str]:
    """What the Dockerfile's `python -m compileall` line compiles at build time."""
    line = next(line for line in (checkout / "Dockerfile").read_text().splitlines() if "compileall" in line)
    return line.split("compileall", 1)[1].split()[1:]


def stage_image_files(checkout: Path, target: Path, environment: dict[str, str]) -> None:
    """Copy what the checkout's Dockerfile COPYs into `target`, as /app in the image, and compile it
    as the build does."""
    target.mkdir()
    for line in (checkout / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                origin = checkout / source
                if origin.is_dir():
                    shutil.copytree(origin, target / source, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(origin, target / source)
    subprocess.run(["python", "-m", "compileall", "-q", *compiled_packages(checkout)], cwd=target, env=environment, check=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def health_ok(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def post_next_ms(port: int) -> float:
    """Milliseconds for one POST /tweet_curated/, which must post."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        started = time.perf_counter()
        connection.request("POST", "/tweet_curated/", headers={"x-token": TOKEN})
        answer = connection.getresponse()
        body = answer.read()
        elapsed = time.perf_counter() - started
    finally:
        connection.close()
    if answer.status != 200:
        raise RuntimeError(f"POST /tweet_curated/ answered {answer.status}: {body[:300]!r}")
    return elapsed * 1000


def upload_queue(port: int, count: int) -> None:
    """Queue `count` distinct tweets through the API (in a start that is not measured)."""
    samples = "".join(f"bench post {n} of the start-up bench, queued to be posted\n{'=' * 20}\n" for n in range(count))
    boundary = "bench-boundary-3f9a"
    form = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"queue.txt\"\r\n"
        f"Content-Type: text/plain\r\n\r\n{samples}\r\n--{boundary}--\r\n"
    ).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/add_tweets_file/", body=form, headers={
            "x-token": TOKEN, "Content-Type": f"multipart/form-data; boundary={boundary}",
        })
        answer = connection.getresponse()
        result = json.loads(answer.read())
    finally:
        connection.close()
    if answer.status != 201 or result.get("added") != count:
        raise RuntimeError(f"queueing the bench's tweets answered {answer.status}: {result}")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def cpu_ms(pid: int) -> float:
    """The CPU time the server's threads have run so far (nanosecond counters of the kernel's
    schedstat): unlike a wall-clock time, hardly changed by what else the machine runs."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except FileNotFoundError:
            pass  # a thread that just ended
    return total / 1e6


@dataclass
class Start:
    health_ms: float
    rss_mib: float
    health_cpu_ms: float
    first_post_ms: float | None = None
    warm_post_ms: float | None = None  # median of the warm posts
    first_post_cpu_ms: float | None = None
    warm_post_cpu_ms: float | None = None  # median of the warm posts


def start_once(
    command: str, module: str, cwd: Path, environment: dict[str, str], *, warm_posts: int = 0,
    before_stop=None,
) -> Start:
    """Start `module`; time the first healthy answer (RSS then), then with `warm_posts` a first
    post and that many more; `before_stop(port)` runs last (to seed the queue)."""
    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen(
        ["sh", "-c", command.replace("api.main:app", module)], cwd=cwd,
        env={**environment, "PORT": str(port)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        while not health_ok(port):
            if server.poll() is not None:
                raise RuntimeError(f"{module} exited with {server.returncode} before answering /health")
            if time.perf_counter() - started > 60:
                raise RuntimeError(f"{module} did not answer /health within 60 s")
            time.sleep(0.005)
        result = Start((time.perf_counter() - started) * 1000, rss_mib(server.pid), cpu_ms(server.pid))

        def post_timed() -> tuple[float, float]:
            """Wall-clock and server CPU milliseconds of one post."""
            cpu_before = cpu_ms(server.pid)
            elapsed = post_next_ms(port)
            return elapsed, cpu_ms(server.pid) - cpu_before

        if warm_posts:
            result.first_post_ms, result.first_post_cpu_ms = post_timed()
            warm = [post_timed() for _ in range(warm_posts)]
            result.warm_post_ms = statistics.median(elapsed for elapsed, _ in warm)
            result.warm_post_cpu_ms = statistics.median(cpu for _, cpu in warm)
        if before_stop is not None:
            before_stop(port)
        return result
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def spread(values: list[float], digits: int = 0) -> str:
    """Median (min-max)."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warm-posts", type=int, default=5)
    parser.add_argument("--venv", type=Path, default=REPO / ".venv-api")
    parser.add_argument("--app-dir", type=Path, help="the API's files as an image holds them (its /app), used as they are")
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. a git worktree of the commit before a change) started in the same runs")
    args = parser.parse_args()
    venv = args.venv if (args.venv / "bin" / "uvicorn").exists() else REPO / ".venv"
    fake_x = FakeX().start()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        api_dir, bare_dir = args.app_dir or scratch / "app", scratch / "bare"
        bare_dir.mkdir()
        (bare_dir / "bare.py").write_text(BARE_APP)
        (bare_dir / "bare_sqlalchemy.py").write_text(SQLALCHEMY_APP.format(orm_import=""))
        (bare_dir / "bare_orm.py").write_text(SQLALCHEMY_APP.format(orm_import="import sqlalchemy.orm  # noqa: F401\n"))
        environment = {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(scratch), "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "LOG_FORMAT": "json", "SQLITE_PATH": str(scratch / "tweets.db"),
            "SECRET_TOKEN": TOKEN, "ACCOUNT": "bench_bot",
        }
        dry_run = {**environment, "TWITTER_DRY_RUN": "true"}
        against_fake_x = {
            **environment, "TWITTER_DRY_RUN": "false",
            **{name: str(value) for name, value in fake_x.settings_values().items()},
        }
        if args.app_dir is None:
            stage_image_files(REPO, api_dir, environment)
        subprocess.run(["python", "-m", "compileall", "-q", "."], cwd=bare_dir, env=environment, check=True)
        subprocess.run(["alembic", "upgrade", "head"], cwd=api_dir, env=environment, check=True, capture_output=True)
        command = image_command()
        # name: (module, folder, environment, warm posts)
        apps = {
            "bare:app": ("bare:app", bare_dir, environment, 0),
            "+ SQLAlchemy": ("bare_sqlalchemy:app", bare_dir, environment, 0),
            "+ its ORM": ("bare_orm:app", bare_dir, environment, 0),
        }
        checkouts = {"api": api_dir}
        if args.baseline is not None:
            checkouts = {"before": scratch / "before", **checkouts}
            stage_image_files(args.baseline, checkouts["before"], environment)
        for label, app_dir in checkouts.items():
            apps[f"{label}, dry run"] = ("api.main:app", app_dir, dry_run, args.warm_posts)
            apps[f"{label}, fake X"] = ("api.main:app", app_dir, against_fake_x, args.warm_posts)
        posting_apps = [name for name, (_, _, _, warm_posts) in apps.items() if warm_posts]
        queue = (1 + args.warm_posts) * len(posting_apps) * (args.runs + 1)
        # A first start of each fills the OS file cache (the first also queues the tweets to post); no
        # bytecode is written (PYTHONDONTWRITEBYTECODE).
        start_once(command, "api.main:app", api_dir, dry_run, before_stop=lambda port: upload_queue(port, queue))
        for module, cwd, env, warm_posts in apps.values():
            start_once(command, module, cwd, env, warm_posts=warm_posts)
        results: dict[str, list[Start]] = {name: [] for name in apps}
        for _ in range(args.runs):
            for name, (module, cwd, env, warm_posts) in apps.items():
                results[name].append(start_once(command, module, cwd, env, warm_posts=warm_posts))
    fake_x.stop()

    print(f"virtualenv: {venv.relative_to(REPO) if venv.is_relative_to(REPO) else venv}; command: {command}")
    if args.app_dir is not None:
        print(f"the API's files: {args.app_dir}, as they are")
    if args.baseline is not None:
        print(f"before: {args.baseline}")
    print(f"{args.runs} runs, each starting the {len(apps)} in turn; figures are medians (min-max) over the runs;")
    print("ratios are per run (against the bare app started in the same run, or the same start's warm posts)\n")
    print(f"{'app':<16}{'start to /health (ms)':>26}{'x bare':>18}{'RSS then (MiB)':>24}{'x bare':>18}")
    bare = results["bare:app"]
    for name, starts in results.items():
        time_ratios = [start.health_ms / base.health_ms for start, base in zip(starts, bare)]
        memory_ratios = [start.rss_mib / base.rss_mib for start, base in zip(starts, bare)]
        print(
            f"{name:<16}{spread([s.health_ms for s in starts]):>26}{spread(time_ratios, 2):>18}"
            f"{spread([s.rss_mib for s in starts], 1):>24}{spread(memory_ratios, 2):>18}"
        )
    print(f"\n{'first post':<16}{'first (ms)':>22}{f'warm, median of {args.warm_posts} (ms)':>32}{'first / warm':>20}")
    for name in posting_apps:
        starts = results[name]
        print(
            f"{name:<16}{spread([s.first_post_ms for s in starts], 1):>22}"
            f"{spread([s.warm_post_ms for s in starts], 1):>32}"
            f"{spread([s.first_post_ms / s.warm_post_ms for s in starts], 2):>20}"
        )
    print("\nThe server's CPU time (all its threads), which the machine's other load hardly changes:")
    print(f"{'app':<16}{'CPU to /health (ms)':>26}{'x bare':>18}{'first post (ms)':>22}{'warm (ms)':>18}{'first / warm':>20}")
    for name, starts in results.items():
        line = f"{name:<16}{spread([s.health_cpu_ms for s in starts]):>26}"
        line += f"{spread([start.health_cpu_ms / base.health_cpu_ms for start, base in zip(starts, bare)], 2):>18}"
        if name in posting_apps:
            line += (
                f"{spread([s.first_post_cpu_ms for s in starts], 1):>22}{spread([s.warm_post_cpu_ms for s in starts], 1):>18}"
                f"{spread([s.first_post_cpu_ms / s.warm_post_cpu_ms for s in starts], 2):>20}"
            )
        print(line)


if __name__ == "__main__":
    main()
