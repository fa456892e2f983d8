"""Start-up time and memory of the API as its image starts it, against a bare FastAPI app (the floor).

    .venv/bin/python -m bench.bench_startup [--runs 7] [--venv .venv-api]

Both apps start the way the Dockerfile's command does (`sh -c "exec uvicorn MODULE --port $PORT"`,
LOG_FORMAT=json, from the files the image copies), in the virtualenv given (default `.venv-api`,
which tests/test_deploy.py builds from requirements.txt alone; `.venv` otherwise). Measured per run:
the time from process start to the first 200 answer of GET /health, and the server's resident
memory (VmRSS) right then. The API runs on a migrated SQLite file.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BARE_APP = '''from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
def health():
    return {"status": "ok"}
'''


def image_command() -> str:
    """The shell command of the Dockerfile's CMD, bound to loopback for this machine."""
    cmd_line = [line for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")][-1]
    return json.loads(cmd_line[4:])[-1].replace("--host 0.0.0.0", "--host 127.0.0.1")


def stage_image_files(target: Path) -> None:
    """Copy what the Dockerfile COPYs into `target`, as /app in the image."""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                origin = REPO / source
                if origin.is_dir():
                    shutil.copytree(origin, target / source, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(origin, target / source)


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


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def start_once(command: str, module: str, cwd: Path, environment: dict[str, str]) -> tuple[float, float]:
    """Seconds from process start to the first healthy answer, and the RSS in MiB then."""
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
        elapsed = time.perf_counter() - started
        return elapsed, rss_mib(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--venv", type=Path, default=REPO / ".venv-api")
    args = parser.parse_args()
    venv = args.venv if (args.venv / "bin" / "uvicorn").exists() else REPO / ".venv"

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        api_dir, bare_dir = scratch / "app", scratch / "bare"
        api_dir.mkdir()
        bare_dir.mkdir()
        stage_image_files(api_dir)
        (bare_dir / "bare.py").write_text(BARE_APP)
        environment = {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(scratch), "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "LOG_FORMAT": "json", "SQLITE_PATH": str(scratch / "tweets.db"),
            "SECRET_TOKEN": "bench-token-0123456789", "ACCOUNT": "bench_bot",
        }
        # As the Dockerfile does: bytecode compiled at build time.
        subprocess.run(["python", "-m", "compileall", "-q", "api", "db", "migrations"], cwd=api_dir, env=environment, check=True)
        subprocess.run(["python", "-m", "compileall", "-q", "bare.py"], cwd=bare_dir, env=environment, check=True)
        subprocess.run(["alembic", "upgrade", "head"], cwd=api_dir, env=environment, check=True, capture_output=True)
        command = image_command()
        # A first start of each fills the OS file cache and writes no bytecode (PYTHONDONTWRITEBYTECODE).
        start_once(command, "api.main:app", api_dir, environment)
        start_once(command, "bare:app", bare_dir, environment)
        results = {"api.main:app": [], "bare:app": []}
        for _ in range(args.runs):
            results["api.main:app"].append(start_once(command, "api.main:app", api_dir, environment))
            results["bare:app"].append(start_once(command, "bare:app", bare_dir, environment))

    print(f"virtualenv: {venv.relative_to(REPO) if venv.is_relative_to(REPO) else venv}; command: {command}")
    print(f"{args.runs} runs each, alternating; figures are medians (min-max)\n")
    print(f"{'app':<16}{'start to /health (ms)':>28}{'RSS at first answer (MiB)':>30}")
    medians = {}
    for module, runs in results.items():
        times = [seconds * 1000 for seconds, _ in runs]
        memory = [rss for _, rss in runs]
        medians[module] = (statistics.median(times), statistics.median(memory))
        print(
            f"{module:<16}{medians[module][0]:>12.0f} ({min(times):.0f}-{max(times):.0f}){'':>5}"
            f"{medians[module][1]:>15.1f} ({min(memory):.1f}-{max(memory):.1f})"
        )
    api, bare = medians["api.main:app"], medians["bare:app"]
    print(f"\nratio api/bare: start-up {api[0] / bare[0]:.2f}x, memory {api[1] / bare[1]:.2f}x")


if __name__ == "__main__":
    main()
