"""Hostile request bodies against the API under uvicorn: each answer's status and time, and the server's memory.

    .venv/bin/python -m bench.bench_hostile_bodies [--scale 1.0]

Starts `uvicorn api.main:app` on 127.0.0.1 (SQLite in a temporary folder, TWITTER_DRY_RUN, a token)
and sends, in order: one 100 MB JSON body to /add_tweets/ without the token; 8 parallel 30 MB
bodies without the token; 500 multipart parts of 1 MB to /add_tweets_file/ without the token;
a 50 MB upload to /add_tweets_file/ and to /curate/upload without credentials, then with them,
then with the token again but chunked (no Content-Length to refuse it by); last, an 8 MB upload
to /curate/upload without and with a session (within twice its limit: read and dropped).
`--scale` multiplies every body size (the part count stays).

Bodies are generated as they are sent, never held whole. The client sends like a careful one:
it stops sending as soon as an answer arrives or the server closes, so "sent" shows how much of
each body the server took before answering. Memory is the server's VmRSS: before each case, its
peak while the case runs (sampled every few milliseconds) and after the answers.
"""
from __future__ import annotations

import argparse
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0123456789abcdef"
MB = 1024 * 1024
CHUNK = 256 * 1024
BOUNDARY = "benchboundary7d3a"
ANSWER_TIMEOUT_SECONDS = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


class PeakRss:
    """The highest VmRSS of `pid` seen while the block runs (sampled in a thread)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = 0.0
        self._done = threading.Event()

    def _sample(self) -> None:
        while not self._done.wait(0.003):
            self.peak = max(self.peak, rss_mib(self.pid))

    def __enter__(self):
        self.peak = rss_mib(self.pid)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib(self.pid))


# ---- bodies, made as they are sent ----

def json_body(size: int) -> tuple[int, Iterator[bytes]]:
    head, tail = b'{"tweet": "', b'"}'
    filler = size - len(head) - len(tail)

    def chunks():
        yield head
        left = filler
        block = b"x" * CHUNK
        while left > 0:
            yield block[: min(CHUNK, left)]
            left -= CHUNK
        yield tail

    return size, chunks()


def multipart_body(parts: int, part_size: int, *, fields: dict[str, str] | None = None) -> tuple[int, Iterator[bytes]]:
    """`parts` file parts of `part_size` bytes each (gpt_2_simple-looking text), after text `fields`."""
    head = "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in (fields or {}).items()
    ).encode()
    part_heads = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="part{n}.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\n".encode()
        for n in range(parts)
    ]
    tail = f"--{BOUNDARY}--\r\n".encode()
    size = len(head) + sum(len(h) + part_size + 2 for h in part_heads) + len(tail)

    def chunks():
        yield head
        block = (b"a generated tweet\n" + b"=" * 20 + b"\n") * (CHUNK // 39 + 1)
        for part_head in part_heads:
            yield part_head
            left = part_size
            while left > 0:
                yield block[: min(CHUNK, left)]
                left -= CHUNK
            yield b"\r\n"
        yield tail

    return size, chunks()


# ---- a careful raw HTTP/1.1 client ----

def chunked_framing(chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        if chunk:
            yield b"%x\r\n%s\r\n" % (len(chunk), chunk)
    yield b"0\r\n\r\n"


@dataclass
class Answer:
    status: str
    seconds: float
    sent: int
    detail: str


def send_request(
    port: int, method: str, path: str, headers: dict[str, str], body: tuple[int, Iterator[bytes]] | None,
    *, chunked: bool = False,
) -> Answer:
    """Send the request, stop sending once the server answers or closes, and read the answer.

    `chunked` sends the body with Transfer-Encoding: chunked instead of a Content-Length.
    """
    length, chunks = body if body is not None else (0, iter(()))
    if chunked:
        chunks = chunked_framing(chunks)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}"
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{framing}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    started = time.perf_counter()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_SECONDS) as connection:
        connection.sendall(head.encode())
        try:
            for chunk in chunks:
                if select.select([connection], [], [], 0)[0]:
                    break  # the answer (or the close) came before the whole body
                connection.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                data = connection.recv(65536)
                if not data:
                    break
                received += data
        except (ConnectionResetError, socket.timeout) as exc:
            if not received:
                return Answer(type(exc).__name__, time.perf_counter() - started, sent, "")
        seconds = time.perf_counter() - started
        if not received:
            return Answer("closed", seconds, sent, "")
        header_block, _, rest = received.partition(b"\r\n\r\n")
        status = header_block.split(b"\r\n")[0].split(b" ")[1].decode()
        match = re.search(rb"(?i)\r\ncontent-length: (\d+)", header_block)
        wanted = int(match.group(1)) if match else 0
        try:
            while len(rest) < wanted:
                data = connection.recv(65536)
                if not data:
                    break
                rest += data
        except (ConnectionResetError, socket.timeout):
            pass
    text = rest.decode(errors="replace")
    flash = re.search(r'class="flash[^"]*"[^>]*>\s*(.*?)\s*<', text, re.S)
    detail = f"page: {flash.group(1)}" if text.startswith("<!doctype") and flash else text
    return Answer(status, seconds, sent, " ".join(detail.split())[:160])


def sign_in(port: int) -> dict[str, str]:
    """A curation session cookie and its CSRF token, got as a browser does."""
    form = f"token={TOKEN}".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            f"POST /curate/sign-in HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(form)}\r\n"
            f"Connection: close\r\n\r\n".encode() + form
        )
        answer = b"".join(iter(lambda: connection.recv(65536), b""))
    cookie = re.search(rb"(?i)set-cookie: (curate_session=[^;]+)", answer).group(1).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            f"GET /curate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".encode()
        )
        page = b"".join(iter(lambda: connection.recv(65536), b""))
    csrf = re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()
    return {"cookie": cookie, "csrf": csrf}


# ---- the cases ----

@dataclass
class Case:
    name: str
    path: str
    headers: dict[str, str]
    body: Callable[[], tuple[int, Iterator[bytes]]]
    parallel: int = 1
    chunked: bool = False


def cases(scale: float, session: dict[str, str]) -> list[Case]:
    size = lambda megabytes: int(megabytes * MB * scale)  # noqa: E731
    json_type = {"Content-Type": "application/json"}
    multipart = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    curator = {**multipart, "Cookie": session["cookie"]}
    return [
        Case("100 MB JSON, no token", "/add_tweets/", json_type, lambda: json_body(size(100))),
        Case("8 x 30 MB JSON in parallel, no token", "/add_tweets/", json_type, lambda: json_body(size(30)), parallel=8),
        Case("500 parts x 1 MB, no token", "/add_tweets_file/", multipart, lambda: multipart_body(500, size(1))),
        Case("50 MB upload, no token", "/add_tweets_file/", multipart, lambda: multipart_body(1, size(50))),
        Case("50 MB upload, no session", "/curate/upload", multipart,
             lambda: multipart_body(1, size(50), fields={"csrf_token": session["csrf"]})),
        Case("50 MB upload, token", "/add_tweets_file/", {**multipart, "x-token": TOKEN}, lambda: multipart_body(1, size(50))),
        Case("50 MB upload, session", "/curate/upload", curator,
             lambda: multipart_body(1, size(50), fields={"csrf_token": session["csrf"]})),
        Case("50 MB upload, token, chunked", "/add_tweets_file/", {**multipart, "x-token": TOKEN},
             lambda: multipart_body(1, size(50)), chunked=True),
        # Within twice the page's limit: read and dropped, so a browser sees the page's answer.
        Case("8 MB upload, no session", "/curate/upload", multipart,
             lambda: multipart_body(1, size(8), fields={"csrf_token": session["csrf"]})),
        Case("8 MB upload, session", "/curate/upload", curator,
             lambda: multipart_body(1, size(8), fields={"csrf_token": session["csrf"]})),
    ]


def run_case(port: int, case: Case) -> list[Answer]:
    answers: list[Answer | None] = [None] * case.parallel

    def one(index: int) -> None:
        answers[index] = send_request(port, "POST", case.path, case.headers, case.body(), chunked=case.chunked)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(case.parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def start_server(scratch: Path) -> tuple[subprocess.Popen, int]:
    environment = {
        **{name: value for name, value in os.environ.items() if name in ("PATH", "HOME", "LANG")},
        "SQLITE_PATH": str(scratch / "tweets.db"), "SECRET_TOKEN": TOKEN, "ACCOUNT": "bench_bot",
        "TWITTER_DRY_RUN": "true", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
    }
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, env=environment, check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=REPO, env={**environment, "TMPDIR": str(scratch)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {server.returncode}")
        try:
            if send_request(port, "GET", "/health", {}, None).status == "200":
                return server, port
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise RuntimeError("uvicorn did not answer /health within 60 s")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every body size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        server, port = start_server(Path(scratch))
        try:
            session = sign_in(port)
            first = rss_mib(server.pid)
            print(f"server RSS at start: {first:.0f} MiB (uvicorn api.main:app, pid {server.pid})\n")
            print(f"{'case':<38}{'answers':<16}{'time (ms)':>10}{'sent (MB)':>11}{'RSS before':>12}{'peak':>7}{'after':>7}")
            peak_all = first
            for case in cases(args.scale, session):
                before = rss_mib(server.pid)
                with PeakRss(server.pid) as peak:
                    answers = run_case(port, case)
                time.sleep(0.2)  # let the server finish after its last answer before reading its RSS
                after = rss_mib(server.pid)
                peak_all = max(peak_all, peak.peak)
                statuses = ",".join(sorted({a.status for a in answers}))
                seconds = max(a.seconds for a in answers)
                sent = sum(a.sent for a in answers) / MB
                print(f"{case.name:<38}{statuses:<16}{seconds * 1000:>10.1f}{sent:>11.1f}{before:>12.0f}{peak.peak:>7.0f}{after:>7.0f}")
                for detail in sorted({a.detail for a in answers if a.detail}):
                    print(f"    {detail}")
            last = rss_mib(server.pid)
            print(f"\nRSS growth over all cases: {last - first:+.0f} MiB after, {peak_all - first:+.0f} MiB at the peak")
        finally:
            server.terminate()
            server.wait(timeout=20)


if __name__ == "__main__":
    main()
