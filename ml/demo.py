"""`make demo`: the whole pipeline offline, end to end, in a throwaway folder.

sample tweets -> tiny model fine-tuned a few steps -> candidate file -> upload to a tweet store
started here (SQLite, dry-run posting, 127.0.0.1 on a free port) -> approve one -> one dry-run post.

The tiny model is random and barely trained: its candidates are noise that happens to pass the
filters (a sample that ended early). The demo shows the plumbing, not the quality.
"""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("ml.demo")

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CSV = REPO / "ml" / "sample_data" / "tweets_sample.csv"
ACCOUNT = "demo_bot"
RUN_NAME = "demo"
START_TIMEOUT_SECONDS = 60
# Few steps and short samples: the tiny model learns little in minutes, and few of its samples of
# 30 tokens end and pass the filters (the rate is in the README's demo section). So it may generate
# up to 500 for its 5 candidates, enough that none surviving is very unlikely.
TRAINING_ARGS = ["--steps", "5", "--accumulate_gradients", "1", "--print_every", "1", "--sample_every", "1000"]
GENERATION_ARGS = ["--nsamples", "5", "--length", "30", "--oversample_limit", "100", "--seed", "1"]


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def store_environment(workdir: Path, token: str) -> dict[str, str]:
    """The store's settings as environment variables, which win over any .env in the checkout."""
    return {
        **os.environ,
        "SECRET_TOKEN": token,
        "ACCOUNT": ACCOUNT,
        "DATABASE_URL": f"sqlite:///{workdir / 'demo.db'}",
        "TWITTER_DRY_RUN": "true",
    }


def start_store(workdir: Path, token: str) -> tuple[subprocess.Popen, str]:
    """Migrate a fresh SQLite database and serve the API on a free loopback port."""
    import requests

    env = store_environment(workdir, token)
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    port = free_loopback_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=REPO, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the tweet store exited with status {server.returncode}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError(f"the tweet store did not answer on {url} within {START_TIMEOUT_SECONDS} s")


def generate_and_upload(workdir: Path, url: str, token: str) -> None:
    command = [
        sys.executable, "-m", "ml.model", "--model_name", "tiny", "--filename", str(SAMPLE_CSV),
        "--run_name", RUN_NAME, "--checkpoint_dir", str(workdir / "checkpoint"), "--out_dir", str(workdir),
        *TRAINING_ARGS, *GENERATION_ARGS, "--upload", url,
    ]
    log.info("$ %s", " ".join(command[1:]))
    subprocess.run(command, cwd=REPO, env={**os.environ, "SECRET_TOKEN": token}, check=True)


def approve_one_and_post(url: str, token: str) -> dict:
    """Queue the first pending tweet (as the curator would) and make the scheduler's call once."""
    import requests

    headers = {"x-token": token}
    pending = requests.get(f"{url}/tweets/", params={"status": "pending"}, headers=headers, timeout=10)
    pending.raise_for_status()
    body = pending.json()
    log.info("the store holds %d pending candidates", body["count"])
    first = body["data"][0]
    requests.patch(f"{url}/tweets/{first['id']}", json={"status": "queued"}, headers=headers,
                   timeout=10).raise_for_status()
    posted = requests.post(f"{url}/tweet_curated/", headers=headers, timeout=30)
    posted.raise_for_status()
    return posted.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the work folder (database, run, candidate file)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    workdir = Path(tempfile.mkdtemp(prefix="ml-demo-"))
    token = secrets.token_urlsafe(24)
    server = None
    try:
        server, url = start_store(workdir, token)
        log.info("tweet store (SQLite, dry run) at %s", url)
        generate_and_upload(workdir, url, token)
        answer = approve_one_and_post(url, token)
        tweet = answer["tweet"]
        log.info("dry-run post: %s (tweet %d, status %s, dry_run=%s)", answer["response"], tweet["id"],
                 tweet["status"], tweet["dry_run"])
        return 0
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        log.error("demo failed: %s", exc)
        return 1
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if args.keep:
            log.info("work folder kept: %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
