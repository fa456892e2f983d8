"""Where training tweets come from: X's API (v2 timeline), an X account archive, or legacy twint.

Each source yields `SourceTweet`s newest first, with enough flags (retweet, reply) for the
shared cleaning in `scripts/training_text.py` to decide what to keep. Problems a user can fix
(bad archive, unknown account, bad credentials) raise `DownloadError` with one line saying so.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import requests
import tweepy

from core.delivery import DeliveryError, ErrorKind
from core.x_client import classify_x_error

API_TWEET_CAP = 3200
API_PAGE_SIZE = 100
API_TWEET_FIELDS = ["created_at", "note_tweet", "in_reply_to_user_id", "referenced_tweets"]
DEFAULT_MAX_WAIT_SECONDS = 900.0
RATE_LIMIT_WAIT_WITHOUT_RESET = 60.0
OTHER_SOURCES = "use --source api (with X API credentials) or --source archive --archive PATH (your X data archive)"

# At the top of the given folder, or in a data/ folder (archives also hold the viewer's own .js files).
_ARCHIVE_TWEETS_FILE = re.compile(r"(?:^|(?:^|/)data/)tweets?(?:-part(\d+))?\.js$")
_ARCHIVE_NOTES_FILE = re.compile(r"(?:^|(?:^|/)data/)note-tweet(?:-part(\d+))?\.js$")
# Archives before 2019 ("Grailbird"): a file per month, and the same tweets in tweets.csv at the top.
_GRAILBIRD_TWEETS_FILE = re.compile(r"(?:(?:^|/)data/js/tweets/|^)(\d{4})_\d\d\.js$")
_GRAILBIRD_CSV_FILE = re.compile(r"(?:^|/)tweets\.csv$")
_ARCHIVE_SUFFIXES = (".js", ".csv")
_YTD_ASSIGNMENT = re.compile(r"^\s*(?:window\.YTD\.\w+\.part\d+|Grailbird\.data\.tweets_\d{4}_\d\d)\s*=\s*")
_X_ESCAPE = re.compile(r"&(amp|lt|gt);")
_X_ESCAPED = {"amp": "&", "lt": "<", "gt": ">"}
# Tweets' created_at, e.g. "Tue Mar 05 18:04:12 +0000 2024" (parsed by hand in a fifth of strptime's time: bench_archive).
_ARCHIVE_DATE = re.compile(r"\w{3} (\w{3}) (\d\d) (\d\d):(\d\d):(\d\d) \+0000 (\d{4})")
# Grailbird's created_at and tweets.csv's timestamp, e.g. "2014-01-29 21:30:19 +0000".
_GRAILBIRD_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) \+0000")
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
_NOTE_MATCH_SECONDS = 2
_NOTE_PREFIX_CHARS = 100
_LINK = re.compile(r"https?://\S+")
_LEADING_MENTIONS = re.compile(r"^(?:@\w{1,15}\s+)+")  # what X puts before a reply's text
# A long post as tweets.js holds it: cut, with an ellipsis and a link to the whole post.
_CUT_LONG_POST = re.compile(r"\u2026\s*https://t\.co/\w+\s*$")
_WHITESPACE = re.compile(r"\s+")
_OLDEST = datetime.min.replace(tzinfo=timezone.utc)


log = logging.getLogger(__name__)


class DownloadError(Exception):
    """Fetching tweets failed in a way the user can fix; str(exc) is one line saying what to do."""


@dataclass(frozen=True)
class SourceTweet:
    text: str
    created_at: datetime | None = None
    is_retweet: bool = False
    is_reply: bool = False


def unescape_x_text(text: str) -> str:
    """Undo X's escaping of tweet text (`&amp;`, `&lt;`, `&gt;`, in one pass, so `&amp;lt;` stays `&lt;`)."""
    return _X_ESCAPE.sub(lambda match: _X_ESCAPED[match.group(1)], text)


# ---- X archive ("Settings > Your account > Download an archive of your data") ----

def read_archive(path: Path, *, warn: Callable[[str], None] = log.warning) -> list[SourceTweet]:
    """Every tweet in an X archive: the zip, its extracted folder, or a single tweets file; newest first.

    Reads all parts (`tweets.js`, `tweets-part1.js`, ... and the older `tweet.js`), entries with
    or without the `{"tweet": ...}` wrapper, and takes long posts' full text from `note-tweet.js`
    (also the one beside a tweets.js given alone); `warn` is told when long posts stay cut.
    Archives from before 2019 are read from their monthly `data/js/tweets/YYYY_MM.js` files, or
    from their `tweets.csv` when only that is there.
    """
    files = _archive_files(path)
    if not files.tweets and not files.csv:
        raise DownloadError(
            f"{path} has no tweets file (data/tweets.js or data/tweet.js; before 2019, data/js/tweets/YYYY_MM.js "
            "or tweets.csv): pass the zip from X's "
            "'Download an archive of your data', its extracted folder, or its data/tweets.js"
        )
    notes: NoteIndex = {}
    for name, text in files.notes:
        _index_notes(_parse_ytd(path, name, text), notes)
    if files.tweets:
        read = [
            _archive_tweet(path, name, index, entry, notes)
            for name, text in files.tweets
            for index, entry in enumerate(_parse_ytd(path, name, text))
        ]
        tweets = [tweet for tweet, _ in read]
        cut = sum(still_cut for _, still_cut in read)
    else:
        tweets = [tweet for name, text in files.csv for tweet in _grailbird_csv_tweets(path, name, text)]
        cut = 0
    if cut:
        posts = "1 long post is" if cut == 1 else f"{cut} long posts are"
        if files.notes:
            warn(f"{posts} cut at X's limit: no note in note-tweet.js was written within "
                 f"{_NOTE_MATCH_SECONDS} s of it and starts like it")
        else:
            warn(f"{posts} cut at X's limit: there is no note-tweet.js beside {path}, which holds their full "
                 "text; pass the whole archive (its zip or extracted folder)")
    return sorted(tweets, key=lambda tweet: tweet.created_at or _OLDEST, reverse=True)


def _part_order(match: re.Match) -> tuple[int, str]:
    """Parts in order (tweets.js, tweets-part1.js, ...; Grailbird's months by year), then by name."""
    part = match.group(1) if match.re.groups else None
    return int(part or 0), match.string


@dataclass(frozen=True)
class _ArchiveFiles:
    """(name, text) of an archive's tweets files, note-tweet files and (before 2019) tweets.csv."""

    tweets: list[tuple[str, str]]
    notes: list[tuple[str, str]]
    csv: list[tuple[str, str]]


def _archive_files(path: Path) -> _ArchiveFiles:
    if not path.exists():
        raise DownloadError(f"archive {path} does not exist: pass the zip or folder X gave you")
    if path.is_dir():
        readers = {
            file.relative_to(path).as_posix(): file.read_bytes
            for file in path.rglob("*") if file.suffix.lower() in _ARCHIVE_SUFFIXES
        }
        return _sorted_files(path, readers)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                readers = {
                    name: partial(archive.read, name)
                    for name in archive.namelist()
                    if not name.startswith("__MACOSX/")
                }
                return _sorted_files(path, readers)
        except (zipfile.BadZipFile, zlib.error, OSError) as exc:  # a damaged member fails in zlib
            raise DownloadError(f"{path} is a damaged zip ({exc}): download the archive again") from None
    if path.suffix.lower() == ".zip":
        raise DownloadError(f"{path} is not a zip file: download the archive again")
    single = [(path.name, _decode(path, path.name, path.read_bytes()))]
    if _GRAILBIRD_CSV_FILE.search(path.name):
        return _ArchiveFiles([], [], single)
    beside = {file.name: file.read_bytes for file in path.parent.glob("note-tweet*.js")}
    return _ArchiveFiles(single, _matching_files(path.parent, beside, _ARCHIVE_NOTES_FILE), [])


def _sorted_files(path: Path, readers: dict[str, Callable[[], bytes]]) -> _ArchiveFiles:
    tweets = _matching_files(path, readers, _ARCHIVE_TWEETS_FILE) or _matching_files(path, readers, _GRAILBIRD_TWEETS_FILE)
    return _ArchiveFiles(
        tweets,
        _matching_files(path, readers, _ARCHIVE_NOTES_FILE),
        [] if tweets else _matching_files(path, readers, _GRAILBIRD_CSV_FILE),
    )


def _matching_files(
    path: Path, readers: dict[str, Callable[[], bytes]], pattern: re.Pattern
) -> list[tuple[str, str]]:
    found = sorted((match for match in map(pattern.search, readers) if match), key=_part_order)
    return [(match.string, _decode(path, match.string, readers[match.string]())) for match in found]


def _decode(path: Path, name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DownloadError(
            f"{name} in {path} is not UTF-8 text (bad byte at {exc.start}): download the archive again"
        ) from None


def _parse_ytd(path: Path, name: str, text: str) -> list:
    """The JSON array of a `window.YTD.<kind>.partN = [...]` or `Grailbird.data.tweets_YYYY_MM = [...]` file (or of plain JSON)."""
    assignment = _YTD_ASSIGNMENT.match(text)
    start = assignment.end() if assignment else 0
    try:
        entries = json.loads(text[start:].rstrip().rstrip(";"))
    except json.JSONDecodeError as exc:
        # The place in the file, not in the JSON after the assignment that was cut off.
        position = start + exc.pos
        line, column = text.count("\n", 0, position) + 1, position - text.rfind("\n", 0, position)
        raise DownloadError(
            f"{name} in {path} is not valid JSON ({exc.msg} at line {line}, column {column}): "
            "the file is damaged; download the archive again"
        ) from None
    if not isinstance(entries, list):
        raise DownloadError(f"{name} in {path} does not hold a list of tweets: is it a file from an X archive?")
    return entries


def _archive_date(value: object) -> datetime | None:
    """A tweet's `created_at` or a note's ISO `createdAt`; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        if match := _ARCHIVE_DATE.fullmatch(value):
            month, day, hour, minute, second, year = match.groups()
            return datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=timezone.utc)
        if match := _GRAILBIRD_DATE.fullmatch(value):
            return datetime(*map(int, match.groups()), tzinfo=timezone.utc)
        parsed = datetime.fromisoformat(value)
    except (KeyError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


NoteIndex = dict[int, list[tuple[str, str]]]  # creation second -> (comparable text, full text) of long posts


def _index_notes(entries: list, notes: NoteIndex) -> None:
    for entry in entries:
        note = entry.get("noteTweet", entry) if isinstance(entry, dict) else None
        core = note.get("core") if isinstance(note, dict) else None
        created_at = _archive_date(note.get("createdAt")) if isinstance(note, dict) else None
        if isinstance(core, dict) and isinstance(core.get("text"), str) and created_at is not None:
            notes.setdefault(int(created_at.timestamp()), []).append((_comparable(core["text"]), core["text"]))


def _comparable(text: str) -> str:
    return _WHITESPACE.sub(" ", _LINK.sub("", text)).replace("\u2026", "").strip().casefold()


def _full_text_of_long_post(text: str, created_at: datetime | None, notes: NoteIndex) -> str | None:
    """The note created within a few seconds of the tweet whose text starts like the (truncated) tweet's.

    Archives do not link a long post to its note by id; tools match on creation time and text. A
    reply's text starts with the "@handle " X puts before it, which its note does not hold: that
    prefix is matched without, and kept before the note's text.
    """
    if not notes or created_at is None:
        return None
    mentions = _LEADING_MENTIONS.match(text)
    lead = mentions.group(0) if mentions else ""
    prefixes = [(_comparable(text)[:_NOTE_PREFIX_CHARS], "")]
    if lead:
        prefixes.append((_comparable(text[len(lead):])[:_NOTE_PREFIX_CHARS], lead))
    second = int(created_at.timestamp())
    for prefix, kept in prefixes:
        if not prefix:
            continue
        for candidate in range(second - _NOTE_MATCH_SECONDS, second + _NOTE_MATCH_SECONDS + 1):
            for comparable, full_text in notes.get(candidate, []):
                if comparable.startswith(prefix):
                    return kept + full_text
    return None


def _archive_tweet(path: Path, name: str, index: int, entry: object, notes: NoteIndex) -> tuple[SourceTweet, bool]:
    """The tweet, and whether it is a long post left cut (no note found for it)."""
    tweet = entry.get("tweet", entry) if isinstance(entry, dict) else None
    raw_text = tweet.get("full_text", tweet.get("text")) if isinstance(tweet, dict) else None
    if not isinstance(raw_text, str):
        raise DownloadError(
            f"entry {index} of {name} in {path} has no tweet text (full_text): is it a tweets file from an X archive?"
        )
    text = unescape_x_text(raw_text)
    created_at = _archive_date(tweet.get("created_at"))
    full_text = _full_text_of_long_post(text, created_at, notes)
    is_retweet = text.startswith("RT @") or "retweeted_status" in tweet
    source_tweet = SourceTweet(
        text=full_text or text,
        created_at=created_at,
        is_retweet=is_retweet,
        is_reply=bool(tweet.get("in_reply_to_status_id_str") or tweet.get("in_reply_to_status_id")),
    )
    return source_tweet, full_text is None and not is_retweet and bool(_CUT_LONG_POST.search(text))


def _grailbird_csv_tweets(path: Path, name: str, text: str) -> list[SourceTweet]:
    """The tweets of an archive's tweets.csv (before 2019): `text`, `timestamp`, and ids marking retweets and replies."""
    rows = csv.DictReader(io.StringIO(text, newline=""))
    if not rows.fieldnames or "text" not in rows.fieldnames:
        raise DownloadError(f"{name} in {path} has no 'text' column: is it the tweets.csv of an X archive?")
    tweets = []
    for row in rows:
        tweet_text = unescape_x_text(row["text"] or "")
        tweets.append(SourceTweet(
            text=tweet_text,
            created_at=_archive_date(row.get("timestamp")),
            is_retweet=tweet_text.startswith("RT @") or bool(row.get("retweeted_status_id")),
            is_reply=bool(row.get("in_reply_to_status_id")),
        ))
    return tweets


# ---- X API v2 ----

def fetch_from_api(
    client: tweepy.Client,
    username: str,
    *,
    include_replies: bool = False,
    user_auth: bool = False,
    max_wait: float = DEFAULT_MAX_WAIT_SECONDS,
    wait: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> Iterator[SourceTweet]:
    """The newest tweets of @username (X serves at most 3,200), newest first, without retweets.

    Parameters
    ----------
    client
        A tweepy v2 client from `core.x_client.make_x_client`.
    include_replies
        Keep replies; otherwise X is asked to exclude them.
    user_auth
        Authenticate with the OAuth 1.0a user credentials instead of the bearer token.
    max_wait
        Longest wait, in seconds, for a rate limit to reset (429); longer ends with DownloadError.
    wait
        Called with the seconds to wait before retrying after a 429 (a countdown in the CLI).
    """
    def call(request):
        while True:
            try:
                return request()
            except (tweepy.TweepyException, requests.RequestException) as exc:
                error = classify_x_error(exc)
                if error.kind is not ErrorKind.rate_limited:
                    raise _download_error(error, username) from None
                seconds = _seconds_until(error.retry_at, clock)
                if seconds > max_wait:
                    raise DownloadError(
                        f"X's rate limit resets in {seconds:.0f} s, longer than --max_wait={max_wait:.0f}: "
                        "run again later, or allow a longer wait"
                    ) from None
                wait(seconds)

    user = call(lambda: client.get_user(username=username, user_auth=user_auth))
    if user.data is None:
        raise DownloadError(f"X has no account @{username} ({_first_error(user.errors)}): check the username")
    exclude = ["retweets"] if include_replies else ["retweets", "replies"]
    pages = iter(tweepy.Paginator(
        client.get_users_tweets, user.data.id, max_results=API_PAGE_SIZE, exclude=exclude,
        tweet_fields=API_TWEET_FIELDS, user_auth=user_auth,
    ))
    while (page := call(lambda: next(pages, None))) is not None:
        if not page.data and page.errors:
            raise DownloadError(
                f"X returned no tweets for @{username} ({_first_error(page.errors)}): "
                "the account may be protected or suspended"
            )
        for tweet in page.data or []:
            yield _api_tweet(tweet)


def _api_tweet(tweet: tweepy.Tweet) -> SourceTweet:
    note = tweet.data.get("note_tweet") or {}
    referenced = tweet.data.get("referenced_tweets") or []
    return SourceTweet(
        text=unescape_x_text(note.get("text") or tweet.text),
        created_at=tweet.created_at,
        is_retweet=any(ref.get("type") == "retweeted" for ref in referenced),
        is_reply=tweet.data.get("in_reply_to_user_id") is not None,
    )


def _seconds_until(retry_at: datetime | None, clock: Callable[[], float]) -> float:
    if retry_at is None:
        return RATE_LIMIT_WAIT_WITHOUT_RESET
    return max(1.0, retry_at.timestamp() - clock() + 1)


def _first_error(errors: list) -> str:
    for error in errors or []:
        if isinstance(error, dict):
            return error.get("detail") or error.get("title") or error.get("message") or "no detail"
    return "no detail"


def _download_error(error: DeliveryError, username: str) -> DownloadError:
    """What each of X's answers means for a download, and what the user should do."""
    if error.status_code == 401:
        advice = ("check BEARER_TOKEN, or CONSUMER_KEY, CONSUMER_SECRET, ACCESS_KEY and ACCESS_SECRET, "
                  "in .env or the environment")
    elif error.status_code == 403:
        advice = f"@{username} may be protected or suspended, or your X API plan may not include reading timelines"
    elif error.status_code == 404:
        advice = f"X has no account @{username}: check the username (or TWITTER_API_BASE_URL)"
    elif error.kind in (ErrorKind.server_error, ErrorKind.unknown_outcome):
        advice = "try again later"
    elif error.kind is ErrorKind.not_sent:
        advice = "check the network and TWITTER_API_BASE_URL"
    else:
        advice = "see X's message"
    return DownloadError(f"{error.message}: {advice}")


# ---- twint (legacy; X has blocked it since 2023) ----

def fetch_from_twint(username: str, *, limit: int | None = None) -> Iterator[SourceTweet]:
    """The original project's scraper, kept for old setups; raises DownloadError naming the other sources."""
    try:
        import twint
    except ImportError:
        raise DownloadError(
            f"twint is not installed (pip install -r requirements-scrape.txt), and X blocks it since 2023: {OTHER_SOURCES}"
        ) from None
    found: list = []
    config = twint.Config()
    config.Username = username
    config.Limit = limit
    config.Store_object = True
    config.Store_object_tweets_list = found
    config.Hide_output = True
    try:
        twint.run.Search(config)
    except Exception as exc:  # twint fails in many ways against today's X; all mean the same to the user
        raise DownloadError(f"twint failed ({type(exc).__name__}): X blocks it since 2023: {OTHER_SOURCES}") from None
    if not found:
        raise DownloadError(f"twint returned no tweets for @{username} (X blocks it since 2023): {OTHER_SOURCES}")
    for tweet in found:
        yield SourceTweet(
            text=tweet.tweet,
            created_at=datetime.fromtimestamp(tweet.datetime / 1000, tz=timezone.utc),
            is_retweet=bool(getattr(tweet, "retweet", False)),
            is_reply=_twint_is_reply(tweet),
        )


def _twint_is_reply(tweet) -> bool:
    """The original's heuristic: twint lists the replied-to users after the author in `reply_to`."""
    others = getattr(tweet, "reply_to", [])[1:]
    return sum(user["username"] in tweet.tweet for user in others) < len(others)
