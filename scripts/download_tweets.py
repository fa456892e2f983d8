"""Collect a user's tweets into the training CSV (one `tweets` column) from X's API, an X archive, or twint.

    python scripts/download_tweets.py --username=karpathy --limit=6000
    python scripts/download_tweets.py --source archive --archive twitter-2024-05-01.zip --username=karpathy

The sources are in scripts/tweet_sources.py, the cleaning and the CSV in scripts/training_text.py;
this file is the command line around them.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from itertools import islice  # noqa: E402

import tweepy  # noqa: E402

try:
    from tqdm import tqdm
except ModuleNotFoundError:  # the API's requirements (make run-local) do not bring it
    sys.exit("download_tweets.py needs requirements-scrape.txt: run `.venv/bin/pip install -r requirements-scrape.txt` "
             "(or use `make download-tweets`, which installs it)")

from core.config import ConfigError, XSettings, load_settings  # noqa: E402
from core.x_client import XCredentialsMissing, make_x_client  # noqa: E402
from scripts.training_text import (  # noqa: E402
    CleaningOptions,
    CleaningReport,
    clean_tweets,
    partial_path,
    write_tweets_csv,
)
from scripts.tweet_sources import (  # noqa: E402
    API_TWEET_CAP,
    DEFAULT_MAX_WAIT_SECONDS,
    DownloadError,
    SourceTweet,
    fetch_from_api,
    fetch_from_twint,
    read_archive,
)

SOURCES = ("api", "archive", "twint")
EXIT_INTERRUPTED = 130
_HANDLE = re.compile(r"[A-Za-z0-9_]{1,15}")
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def _bool_value(value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="download_tweets.py",
        description="Collect a user's tweets into a CSV with one `tweets` column, for gpt_2_simple.",
        allow_abbrev=False,
    )
    parser.add_argument("--username", help="the X handle whose tweets to collect (with or without @)")
    parser.add_argument("--limit", type=_positive_int, help="fetch at most this many tweets (default: all available)")
    for flag, meaning in (
        ("include_replies", "keep replies (dropped by default)"),
        ("strip_usertags", "remove @usertags from the text"),
        ("strip_hashtags", "remove #hashtags from the text"),
    ):
        parser.add_argument(f"--{flag}", nargs="?", const=True, default=False, type=_bool_value,
                            metavar="true|false", help=meaning)
    parser.add_argument("--source", choices=SOURCES,
                        help="where to read tweets (default: archive with --archive, else api when X credentials are set)")
    parser.add_argument("--archive", type=Path, help="X archive: the zip, its extracted folder, or data/tweets.js")
    parser.add_argument("--output", type=Path, help="CSV to write (default: <username>_tweets.csv)")
    parser.add_argument("--max_wait", type=_seconds, default=DEFAULT_MAX_WAIT_SECONDS,
                        help="longest wait in seconds for X's rate limit to reset (default: %(default).0f)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.username is not None:
        args.username = args.username.strip().lstrip("@")
        if not _HANDLE.fullmatch(args.username):
            parser.error(f"--username {args.username!r} is not an X handle (1-15 letters, digits or underscores)")
    if args.source is None and args.archive is not None:
        args.source = "archive"
    if args.source == "archive" and args.archive is None:
        parser.error("--source archive needs --archive PATH (the zip from X, its folder, or data/tweets.js)")
    if args.archive is not None and args.source != "archive":
        parser.error(f"--archive is read only by --source archive, not --source {args.source}")
    if args.source in ("api", "twint", None) and args.username is None:
        parser.error("--username is required to download from X (or pass --archive PATH)")
    return args


@dataclass
class Collected:
    texts: list[str] = field(default_factory=list)
    report: CleaningReport = field(default_factory=CleaningReport)
    stopped_by: BaseException | None = None  # KeyboardInterrupt or DownloadError part-way through


def collect(
    tweets: Iterable[SourceTweet],
    options: CleaningOptions,
    *,
    limit: int | None = None,
    on_fetched: Callable[[SourceTweet], None] = lambda tweet: None,
) -> Collected:
    """Clean up to `limit` fetched tweets; on Ctrl-C or a DownloadError keep what came before it."""
    collected = Collected()

    def fetched() -> Iterator[SourceTweet]:
        for tweet in islice(tweets, limit):
            on_fetched(tweet)
            yield tweet

    try:
        for text in clean_tweets(fetched(), options, collected.report):
            collected.texts.append(text)
    except (KeyboardInterrupt, DownloadError) as exc:
        collected.stopped_by = exc
    return collected


def _x_settings() -> XSettings:
    try:
        return load_settings(XSettings)
    except ConfigError as exc:
        raise DownloadError(str(exc)) from None


def _resolve_source(args: argparse.Namespace) -> str:
    if args.source is not None:
        return args.source
    settings = _x_settings()
    if settings.BEARER_TOKEN is not None or not settings.missing_x_credentials:
        return "api"
    raise DownloadError(
        "no source: set BEARER_TOKEN (or CONSUMER_KEY, CONSUMER_SECRET, ACCESS_KEY and ACCESS_SECRET) "
        "in .env to use X's API, or pass --archive PATH with your X archive"
    )


def _api_client(args: argparse.Namespace) -> tuple[tweepy.Client, bool]:
    """The client, and whether it authenticates as a user (OAuth 1.0a) rather than with the bearer token."""
    settings = _x_settings()
    app_only = settings.BEARER_TOKEN is not None
    try:
        client = make_x_client(settings, app_only=app_only)
    except XCredentialsMissing as exc:
        raise DownloadError(f"{exc}; or set BEARER_TOKEN, which is enough to read tweets") from None
    return client, not app_only


def _countdown(bar: tqdm) -> Callable[[float], None]:
    """Wait out a rate limit, showing the seconds left on the progress bar."""
    def wait(seconds: float) -> None:
        bar.write(f"X's rate limit reached: waiting {seconds:.0f} s for it to reset (Ctrl-C keeps what was fetched)",
                  file=sys.stderr)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            bar.set_postfix_str(f"rate limited, resuming in {left:.0f} s")
            time.sleep(min(1.0, left))
        bar.set_postfix_str("")
    return wait


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    output = args.output or Path(f"{args.username or 'archive'}_tweets.csv")
    if not output.parent.is_dir():
        raise DownloadError(f"cannot write {output}: folder {output.parent} does not exist")
    source = _resolve_source(args)
    options = CleaningOptions(args.include_replies, args.strip_usertags, args.strip_hashtags)
    archived = read_archive(args.archive, warn=_warn) if source == "archive" else None
    client, user_auth = _api_client(args) if source == "api" else (None, False)
    total = min(len(archived), args.limit or len(archived)) if archived is not None else args.limit
    bar = tqdm(total=total, unit=" tweets", desc="Fetching", file=sys.stderr, dynamic_ncols=True, leave=False)

    def on_fetched(tweet: SourceTweet) -> None:
        # Tweets come newest first: the one just fetched is the oldest reached. Set before update()
        # redraws, so the bar never shows the date of the tweet before.
        if tweet.created_at is not None:
            bar.set_description_str(f"Oldest tweet {tweet.created_at:%Y-%m-%d}", refresh=False)
        bar.update(1)

    try:
        if archived is not None:
            tweets: Iterable[SourceTweet] = archived
        elif source == "api":
            tweets = fetch_from_api(
                client, args.username, include_replies=args.include_replies, user_auth=user_auth,
                max_wait=args.max_wait, wait=_countdown(bar),
            )
        else:
            tweets = fetch_from_twint(args.username, limit=args.limit)
        collected = collect(tweets, options, limit=args.limit, on_fetched=on_fetched)
    finally:
        bar.close()

    report = collected.report.summary()
    if collected.stopped_by is not None:
        interrupted = isinstance(collected.stopped_by, KeyboardInterrupt)
        reason = "interrupted" if interrupted else f"error: {collected.stopped_by}"
        print(reason, file=sys.stderr)
        if collected.texts:
            kept_in = partial_path(output)
            write_tweets_csv(kept_in, collected.texts)
            print(f"Kept the {len(collected.texts)} tweets fetched so far in {kept_in} "
                  f"(not {output}, which is unchanged); {report}", file=sys.stderr)
        return EXIT_INTERRUPTED if interrupted else 1
    if not collected.texts:
        raise DownloadError(f"no tweets left to write ({report}); nothing written to {output}")
    rows = write_tweets_csv(output, collected.texts)
    print(f"Wrote {rows} tweets to {output}; {report}")
    if source == "api" and (args.limit is None or args.limit > API_TWEET_CAP):
        # Said after the download, so that an error stays the only line of a failed run.
        print(f"Note: X's API serves only the newest {API_TWEET_CAP:,} tweets of an account; "
              "for older ones use --source archive with your X archive.", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
