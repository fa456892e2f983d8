"""Reading an X archive: `download_tweets.py --source archive` against the least any reader does, same run.

    .venv/bin/python -m bench.bench_archive [--tweets 100000]

Builds a zip in a temporary folder shaped like X's "Download an archive of your data":
`data/tweets.js` with N tweets as X writes them (the `{"tweet": ...}` wrapper, ids, entities,
edit info, `created_at`, `full_text` with links and `&amp;`; 10% retweets, 10% replies, 1% long
posts cut at 280 characters) and `data/note-tweet.js` with the long posts' full text. Each
measure is the best of 3:

- baseline: unzip both files and `json.loads` them (what any reader of the archive must do);
- `read_archive`: the same plus dates, X's unescaping, long posts matched to their notes, sorting;
- the whole script: `download_tweets.py --archive ZIP` reads, cleans and writes the CSV;
- dates: our `created_at` parser against `datetime.strptime` on the same N strings.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import random
import tempfile
import time
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.made_up import made_up_words
from scripts.download_tweets import main as download_tweets
from scripts.tweet_sources import _archive_date, read_archive

CREATED_AT = "%a %b %d %H:%M:%S %z %Y"  # X's created_at, e.g. "Tue Mar 05 18:04:12 +0000 2024"
REPEATS = 3


def make_archive(path: Path, count: int, seed: int = 0) -> int:
    """Write the archive zip; returns the size of its two .js files in bytes."""
    rng = random.Random(seed)
    start = datetime(2024, 3, 5, 18, 4, 12, tzinfo=timezone.utc)
    tweets, notes = [], []
    for n in range(count):
        created = start - timedelta(minutes=37 * n)
        text = f"{made_up_words(rng)} &amp; more https://t.co/x{n} #{n}"
        kind = n % 100
        if kind < 10:
            text = f"RT @someone: {text}"
        if kind == 50:  # a long post: the tweet holds its first 280 characters, the note all of it
            full = made_up_words(rng, 120) + f" #{n}"
            text = full[:279] + "\u2026"
            notes.append({"noteTweet": {"noteTweetId": str(10**18 + n), "createdAt": created.isoformat(),
                                        "core": {"styletags": [], "urls": [], "text": full, "mentions": []}}})
        tweet = {
            "edit_info": {"initial": {"editTweetIds": [str(10**18 + n)], "editsRemaining": "5", "isEditEligible": True}},
            "retweeted": False, "source": "<a href=\"https://mobile.twitter.com\" rel=\"nofollow\">Twitter Web App</a>",
            "entities": {"hashtags": [], "symbols": [], "user_mentions": [], "urls": []},
            "display_text_range": ["0", str(len(text))], "favorite_count": str(rng.randint(0, 50)),
            "id_str": str(10**18 + n), "truncated": False, "retweet_count": "0", "id": str(10**18 + n),
            "created_at": created.strftime(CREATED_AT), "favorited": False, "full_text": text, "lang": "en",
        }
        if 10 <= kind < 20:
            tweet["in_reply_to_status_id_str"] = str(10**18 - n)
        tweets.append({"tweet": tweet})
    files = {
        "data/tweets.js": "window.YTD.tweets.part0 = " + json.dumps(tweets, indent=2),
        "data/note-tweet.js": "window.YTD.note_tweet.part0 = " + json.dumps(notes, indent=2),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return sum(len(text.encode("utf-8")) for text in files.values())


def json_only(path: Path) -> int:
    """The baseline: unzip and parse both files; returns the number of tweet entries."""
    with zipfile.ZipFile(path) as archive:
        parsed = [json.loads(archive.read(name).decode("utf-8").split("=", 1)[1]) for name in archive.namelist()]
    return len(parsed[0])


def best_seconds(work) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tweets", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        zip_path, csv_path = Path(tmp) / "archive.zip", Path(tmp) / "tweets.csv"
        size = make_archive(zip_path, args.tweets)
        print(f"archive: {args.tweets:,} tweets, {size / 1e6:.1f} MB of .js ({zip_path.stat().st_size / 1e6:.1f} MB zipped)")
        tweets = read_archive(zip_path)
        assert json_only(zip_path) == len(tweets) == args.tweets
        assert sum(len(tweet.text) > 280 for tweet in tweets) == len(range(50, args.tweets, 100))  # notes matched

        def whole_script() -> None:
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                assert download_tweets(["--archive", str(zip_path), "--output", str(csv_path)]) == 0

        rows = [("baseline: unzip + json.loads", best_seconds(lambda: json_only(zip_path)))]
        rows.append(("read_archive", best_seconds(lambda: read_archive(zip_path))))
        rows.append(("download_tweets.py (read, clean, CSV)", best_seconds(whole_script)))
        with csv_path.open(encoding="utf-8", newline="") as file:
            kept = sum(1 for _ in csv.DictReader(file))
        print(f"{'':40s} {'seconds':>8s} {'tweets/s':>10s} {'time vs baseline':>17s}")
        for name, seconds in rows:
            print(f"{name:40s} {seconds:8.2f} {args.tweets / seconds:10,.0f} {seconds / rows[0][1]:16.1f}x")
        print(f"the CSV holds {kept:,} tweets (retweets and replies dropped)")

        dates = [datetime(2024, 3, 5, tzinfo=timezone.utc) - timedelta(minutes=37 * n) for n in range(args.tweets)]
        texts = [d.strftime(CREATED_AT) for d in dates]
        ours = best_seconds(lambda: [_archive_date(t) for t in texts])
        strptime = best_seconds(lambda: [datetime.strptime(t, CREATED_AT) for t in texts])
        assert [_archive_date(t) for t in texts[:1000]] == [datetime.strptime(t, CREATED_AT) for t in texts[:1000]]
        print(f"dates: ours {ours / args.tweets * 1e6:.2f} us, strptime {strptime / args.tweets * 1e6:.2f} us "
              f"({strptime / ours:.1f}x)")


if __name__ == "__main__":
    main()
