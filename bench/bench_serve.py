"""The generation service under load: requests/s and p50/p99 latency with 1 and 8 clients, and its memory.

    .venv/bin/python -m bench.bench_serve [--workdir bench/out/tweet_model]

Starts `uvicorn ml.serve:app` as its own process on a free loopback port, serving the tiny model
fine-tuned on short tweets (bench/tweet_checkpoint.py), and sends the original bot's request
(length 200, top_p 0.9, prefix `<|startoftext|>`, truncate `<|endoftext|>`, include_prefix false).
Prints the server process's resident memory after 1, 100, 1,000 and 2,000 requests.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.serving import free_port
from bench.tweet_checkpoint import RUN_NAME, ensure_tweet_checkpoint
from core.tweet_text import END_TOKEN, START_TOKEN

REPO = Path(__file__).resolve().parent.parent
REQUEST = {"length": 200, "temperature": 1.0, "top_p": 0.9, "prefix": START_TOKEN, "truncate": END_TOKEN,
           "include_prefix": False}


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(run_folder: Path, port: int, workdir: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GENERATION_CHECKPOINT_DIR": str(run_folder.parent),
           "GENERATION_RUN_NAME": RUN_NAME, "GENERATION_BATCH_SIZE": "8", "GENERATION_MAX_WAITING": "64",
           "LOG_LEVEL": "WARNING", "GENERATION_TOKEN": ""}
    # Run outside the repository so a developer's .env cannot change the settings.
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "ml.serve:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the server exited while starting")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json().get("model_loaded"):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.terminate()
    raise RuntimeError("the server did not load its model within 300 s")


def send(base_url: str, count: int, clients: int) -> tuple[float, list[float]]:
    """Send `count` requests from `clients` threads; (seconds, latencies)."""

    def one_client(requests: int) -> list[float]:
        latencies = []
        with httpx.Client(base_url=base_url, timeout=120) as client:
            for _ in range(requests):
                started = time.perf_counter()
                response = client.post("/", json=REQUEST)
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)
        return latencies

    shares = [count // clients + (i < count % clients) for i in range(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        latencies = [value for part in pool.map(one_client, shares) for value in part]
    return time.perf_counter() - started, latencies


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/tweet_model"))
    args = parser.parse_args()
    run_folder = ensure_tweet_checkpoint(args.workdir).resolve()
    port = free_port()
    with tempfile.TemporaryDirectory() as cwd:
        server = start_server(run_folder, port, cwd)
        try:
            base_url = f"http://127.0.0.1:{port}"
            print(f"server pid {server.pid}, {run_folder}, load average {os.getloadavg()[0]:.1f}")
            print(f"RSS after start: {resident_mb(server.pid):.0f} MB")
            send(base_url, 1, 1)
            rss = {1: resident_mb(server.pid)}
            rows = []
            for label, count, clients in (("1 client", 99, 1), ("8 clients", 400, 8)):
                seconds, latencies = send(base_url, count, clients)
                rows.append((label, count, seconds, latencies))
                if label == "1 client":
                    rss[100] = resident_mb(server.pid)
            send(base_url, 500, 8)
            rss[1000] = resident_mb(server.pid)
            send(base_url, 1000, 8)
            rss[2000] = resident_mb(server.pid)
        finally:
            server.terminate()
            server.wait(30)

    print(f"{'':12}{'requests':>9}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    for label, count, seconds, latencies in rows:
        print(f"{label:12}{count:>9}{count / seconds:>8.1f}{percentile(latencies, 0.5) * 1000:>9.0f}"
              f"{percentile(latencies, 0.99) * 1000:>9.0f}{statistics.mean(latencies) * 1000:>9.0f}")
    print("RSS: " + ", ".join(f"after {n} requests {mb:.0f} MB" for n, mb in rss.items()))


if __name__ == "__main__":
    main()
