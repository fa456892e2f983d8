"""Time and peak memory of the tweet rule refusing one hostile multi-megabyte entry, per kind of text.

    .venv/bin/python -m bench.bench_validate [--megabytes 5]

Each entry is about that many bytes of UTF-8: plain letters, words with dots (the URL scan),
a chain of dot-separated letters, accented letters and CJK (the full parse), emoji, and
combining marks out of canonical order (NFC reorders them). The figure to watch is the time
before the entry is refused; memory is Python's peak allocation while refusing it.
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

from core.tweet_text import TweetRejected, validate_tweet

ENTRIES = {  # kind of text: the entry of about `size` bytes of UTF-8
    "plain letters": lambda size: "a" * size,
    "words with dots": lambda size: "a.b " * (size // 4),
    "dotted chain": lambda size: "a." * (size // 2),
    "accented": lambda size: "é" * (size // 2),
    "CJK": lambda size: "日本" * (size // 6),
    "emoji": lambda size: "😀" * (size // 4),
    "marks out of order": lambda size: "a" + "\u0301" * (size // 4) + "\u0316" * (size // 4),
}


def refusal(text: str) -> str:
    try:
        validate_tweet(text)
    except TweetRejected as exc:
        return str(exc)
    raise AssertionError("a hostile entry was accepted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=5)
    args = parser.parse_args()
    print(f"{'entry':<20}{'bytes':>12}{'refused in s':>14}{'peak MB':>9}  reason")
    for name, entry in ENTRIES.items():
        text = entry(int(args.megabytes * 1e6))
        started = time.perf_counter()
        reason = refusal(text)
        elapsed = time.perf_counter() - started
        tracemalloc.start()
        refusal(text)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{name:<20}{len(text.encode()):>12,}{elapsed:>14.4f}{peak / 1e6:>9.1f}  {reason[:60]}")


if __name__ == "__main__":
    main()
