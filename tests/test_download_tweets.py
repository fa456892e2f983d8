"""scripts/download_tweets.py: archive reading, the cleaning rule, the CSV, the X API source on the fake X, and the CLI."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
import zipfile
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pytest
import tweepy
from tqdm import tqdm

from core.config import XSettings
from core.delivery import DeliveryError, ErrorKind
from core.x_client import make_x_client
from scripts.download_tweets import collect, main, parse_args
import scripts.download_tweets as download_tweets
from scripts.training_text import (
    CleaningOptions,
    CleaningReport,
    SkipReason,
    clean_text,
    clean_tweets,
    partial_path,
    write_tweets_csv,
)
from scripts.tweet_sources import (
    RATE_LIMIT_WAIT_WITHOUT_RESET,
    DownloadError,
    SourceTweet,
    _api_tweet,
    _archive_date,
    _download_error,
    _first_error,
    _seconds_until,
    fetch_from_api,
    fetch_from_twint,
    read_archive,
    unescape_x_text,
)
from tests.fake_x import FakeResponse, FakeX

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ARCHIVE = FIXTURES / "archive"
OLD_ARCHIVE = FIXTURES / "archive_2019"
GRAILBIRD_ARCHIVE = FIXTURES / "archive_2014"  # the format before 2019: tweets.csv and data/js/tweets/YYYY_MM.js
X_VARS = ("CONSUMER_KEY", "CONSUMER_SECRET", "ACCESS_KEY", "ACCESS_SECRET", "BEARER_TOKEN",
          "TWITTER_API_BASE_URL", "TWITTER_TIMEOUT_SECONDS")

LONG_POST = (
    "Long post: why I keep my training data small. A tiny corpus you have read end to end beats a huge one you "
    "have never looked at, because every odd line in it shows up again in what the model writes, and you can only "
    "fix what you have seen. So here is how I pick what goes in, step by step, with the mistakes I made along the "
    "way.\n\n1. Read every tweet once.\n2. Drop the ones that only make sense with a picture.\n3. Keep the odd ones: "
    "they are the voice.\n\nThat is all. It takes an evening & it is worth it."
)
# What the fixture archive becomes with the default options, newest first.
ARCHIVE_KEPT = [
    "Training a tiny GPT & loving it 🚀\nSecond line <3 > first",
    "New post on tokenizers:",
    LONG_POST,
    'He said "hello, world" and left, twice',
    "Thanks @karpathy for #nanoGPT, it's great",
    "Non breaking spaces and an ellipsis",
]


def read_csv(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["tweets"]
    assert all(len(row) == 1 for row in rows)
    return [row[0] for row in rows[1:]]


def on_screen(stream: str) -> list[str]:
    """The lines a terminal shows: what follows the last carriage return (the progress bar redraws with \\r)."""
    return [line.split("\r")[-1] for line in stream.split("\n") if line.split("\r")[-1].strip()]


def cleaned(tweets, **options) -> tuple[list[str], CleaningReport]:
    report = CleaningReport()
    return list(clean_tweets(tweets, CleaningOptions(**options), report)), report


@pytest.fixture
def no_x_env(monkeypatch, tmp_path):
    """No X variables from the environment, and a working directory without .env."""
    for name in X_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


# ---- cleaning ----

def test_clean_text_removes_links_nbsp_and_ellipsis_like_the_original():
    options = CleaningOptions()
    assert clean_text("See https://t.co/abc and http://x.io/a?b=1 now", options) == "See and now"
    assert clean_text("photo pic.twitter.com/AbC123 here", options) == "photo here"
    assert clean_text("epic.com stays, so does an email me@example.com", options) == (
        "epic.com stays, so does an email me@example.com"
    )
    assert clean_text("a\u00a0b\u202fc", options) == "a b c"
    assert clean_text("wait for it… done", options) == "wait for it done"
    assert clean_text("  line one  \r\n\tline two https://t.co/x  ", options) == "line one\nline two"
    assert clean_text("thanks @karpathy for #nanoGPT", options) == "thanks @karpathy for #nanoGPT"


def test_clean_text_strips_usertags_and_hashtags_only_when_asked():
    text = "thanks @karpathy & @x_y for #nanoGPT #AI, mail a@b.co, issue #12"
    assert clean_text(text, CleaningOptions(strip_usertags=True)) == (
        "thanks & for #nanoGPT #AI, mail a@b.co, issue #12"
    )
    assert clean_text(text, CleaningOptions(strip_hashtags=True)) == "thanks @karpathy & @x_y for , mail a@b.co, issue"
    assert clean_text("#日本語 tag", CleaningOptions(strip_hashtags=True)) == "tag"


def test_clean_tweets_drops_by_reason_and_reports():
    tweets = [
        SourceTweet("keep me"),
        SourceTweet("RT @a: theirs", is_retweet=True),
        SourceTweet("@a an answer", is_reply=True),
        SourceTweet("  @b an old-style reply"),
        SourceTweet("https://t.co/only-a-link"),
        SourceTweet("keep me"),
        SourceTweet("keep me https://t.co/same-after-cleaning"),
        SourceTweet("Keep me"),
        SourceTweet("tricky <|endoftext|> text"),
        SourceTweet(".@b not a reply"),
    ]
    kept, report = cleaned(tweets)
    assert kept == ["keep me", "Keep me", ".@b not a reply"]
    assert (report.fetched, report.kept) == (10, 3)
    assert report.dropped == {
        SkipReason.retweet: 1, SkipReason.reply: 1, SkipReason.starts_with_mention: 1, SkipReason.empty: 1,
        SkipReason.duplicate: 2, SkipReason.contains_marker: 1,
    }
    assert report.summary().startswith("fetched 10, kept 3, dropped 7 (2 exact duplicate, ")


def test_clean_tweets_keeps_replies_when_included_but_never_retweets():
    tweets = [SourceTweet("@a an answer", is_reply=True), SourceTweet("@b old style"), SourceTweet("RT @c: x", is_retweet=True)]
    kept, report = cleaned(tweets, include_replies=True)
    assert kept == ["@a an answer", "@b old style"]
    assert report.dropped == {SkipReason.retweet: 1}
    kept, _ = cleaned(tweets, include_replies=True, strip_usertags=True)
    assert kept == ["an answer", "old style"]


def test_unescape_x_text_undoes_exactly_xs_escaping():
    assert unescape_x_text("a &amp; b &lt;3 &gt; c") == "a & b <3 > c"
    assert unescape_x_text("typed &amp;lt; literally") == "typed &lt; literally"
    assert unescape_x_text("&copy; &quot; stay") == "&copy; &quot; stay"


# ---- X archives ----

def archive_texts(path: Path, **options) -> list[str]:
    return cleaned(read_archive(path), **options)[0]


def test_archive_folder_reads_every_part_notes_and_entities():
    tweets = read_archive(ARCHIVE)
    assert len(tweets) == 11  # 7 in tweets.js + 4 in tweets-part1.js; deleted-tweets.js and tweet-headers.js ignored
    assert [t.created_at for t in tweets] == sorted((t.created_at for t in tweets), reverse=True)
    assert tweets[0].created_at == datetime(2024, 3, 5, 18, 4, 12, tzinfo=timezone.utc)
    assert sum(t.is_retweet for t in tweets) == 1 and sum(t.is_reply for t in tweets) == 1
    assert archive_texts(ARCHIVE) == ARCHIVE_KEPT


def test_archive_options_apply_to_archives():
    texts = archive_texts(ARCHIVE, include_replies=True, strip_usertags=True, strip_hashtags=True)
    assert "thanks, that fixed it!" in texts  # the reply, without its @usertag
    assert "this is an old-style reply" in texts
    assert "Thanks for , it's great" in texts


def zip_folder(folder: Path, destination: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, prefix + file.relative_to(folder).as_posix())
    return destination


@pytest.mark.parametrize("prefix", ["", "twitter-2024-03-06-abc/"])
def test_archive_zip_reads_like_the_folder(tmp_path, prefix):
    (tmp_path / "Your archive.html").write_text("<html></html>")
    path = zip_folder(ARCHIVE, tmp_path / "twitter-2024-03-06.zip", prefix)
    assert read_archive(path) == read_archive(ARCHIVE)


def test_archive_extracted_into_a_parent_folder_and_data_folder_alone(tmp_path):
    shutil.copytree(ARCHIVE, tmp_path / "twitter-2024" / "")
    (tmp_path / "twitter-2024" / "assets" / "js").mkdir(parents=True)
    (tmp_path / "twitter-2024" / "assets" / "js" / "tweet.js").write_text("not an archive file")
    assert read_archive(tmp_path) == read_archive(ARCHIVE)
    assert read_archive(ARCHIVE / "data") == read_archive(ARCHIVE)


def test_archive_single_tweets_file_reads_the_notes_beside_it():
    """Given data/tweets.js alone, its long posts still get note-tweet.js's full text (they were cut before)."""
    texts = archive_texts(ARCHIVE / "data" / "tweets.js")
    assert len(texts) == 5
    assert texts[2] == LONG_POST


def test_long_posts_cut_for_want_of_note_tweet_js_are_warned_about(tmp_path):
    shutil.copy(ARCHIVE / "data" / "tweets.js", tmp_path / "tweets.js")
    warnings: list[str] = []
    texts = cleaned(read_archive(tmp_path / "tweets.js", warn=warnings.append))[0]
    assert texts[2] == LONG_POST.split(" along the way")[0]  # cut: there is no note-tweet.js beside it
    [warning] = warnings
    assert "1 long post is cut" in warning and "note-tweet.js" in warning and "whole archive" in warning
    assert read_archive(ARCHIVE / "data" / "tweets.js", warn=warnings.append) and len(warnings) == 1


def test_the_cut_warning_counts_the_posts_and_says_what_to_pass(tmp_path):
    at = datetime(2024, 3, 1, 9, 30, tzinfo=timezone.utc)
    write_archive_file(tmp_path, "tweets.js", "tweets", [archive_entry("One… https://t.co/x", at),
                                                         archive_entry("Two… https://t.co/y", at)])
    warnings: list[str] = []
    assert len(read_archive(tmp_path / "data" / "tweets.js", warn=warnings.append)) == 2
    assert warnings == [f"2 long posts are cut at X's limit: there is no note-tweet.js beside {tmp_path / 'data' / 'tweets.js'}, "
                        "which holds their full text; pass the whole archive (its zip or extracted folder)"]


def test_main_warns_on_stderr_when_long_posts_are_cut(no_x_env, tmp_path, capsys):
    shutil.copy(ARCHIVE / "data" / "tweets.js", tmp_path / "tweets.js")
    assert main(["--archive", str(tmp_path / "tweets.js"), "--output", "out.csv"]) == 0
    err = on_screen(capsys.readouterr().err)
    assert any(line.startswith("warning: 1 long post is cut") for line in err), err


def test_a_reply_that_is_a_long_post_gets_its_full_text(tmp_path):
    """X puts "@handle " before a reply's full_text; the note's text does not have it."""
    tweeted_at = datetime(2024, 3, 1, 9, 30, 0, tzinfo=timezone.utc)
    note = "Replying at length. " + "Every word of it counts, " * 20 + "to the very end."
    entry = archive_entry("@friend @other " + note[:250] + "… https://t.co/x", tweeted_at)
    entry["tweet"]["in_reply_to_status_id_str"] = "1"
    write_archive_file(tmp_path, "tweets.js", "tweets", [entry])
    write_archive_file(tmp_path, "note-tweet.js", "note_tweet", [
        {"noteTweet": {"createdAt": tweeted_at.isoformat(), "core": {"text": note}}},
    ])
    [tweet] = read_archive(tmp_path)
    assert tweet.text == "@friend @other " + note and tweet.is_reply


def test_grailbird_archive_before_2019_is_read():
    """tweets.csv at the top and data/js/tweets/YYYY_MM.js with `Grailbird.data.tweets_YYYY_MM = [...]`."""
    tweets = read_archive(GRAILBIRD_ARCHIVE)
    assert [(t.text, t.is_retweet, t.is_reply) for t in tweets] == [
        ('Grailbird era: a plain tweet & a "quote"', False, False),
        ("@friend an old-format reply", False, True),
        ("RT @other: an old-format retweet", True, False),
        ("December, with a link http://t.co/AbCdEf12", False, False),
    ]
    assert tweets[0].created_at == datetime(2014, 1, 29, 21, 30, 19, tzinfo=timezone.utc)
    assert tweets[-1].created_at == datetime(2013, 12, 6, 18, 45, tzinfo=timezone.utc)
    assert archive_texts(GRAILBIRD_ARCHIVE) == ['Grailbird era: a plain tweet & a "quote"', "December, with a link"]


def test_grailbird_archive_as_zip_monthly_file_or_tweets_csv_alone(tmp_path):
    expected = read_archive(GRAILBIRD_ARCHIVE)
    assert read_archive(zip_folder(GRAILBIRD_ARCHIVE, tmp_path / "tweets.zip")) == expected
    assert read_archive(GRAILBIRD_ARCHIVE / "tweets.csv") == expected
    only_csv = tmp_path / "only_csv"
    only_csv.mkdir()
    shutil.copy(GRAILBIRD_ARCHIVE / "tweets.csv", only_csv / "tweets.csv")
    assert read_archive(only_csv) == expected
    assert read_archive(GRAILBIRD_ARCHIVE / "data" / "js" / "tweets" / "2013_12.js") == expected[-1:]


@pytest.mark.parametrize("bad_file, content, problem", [
    ("data/js/tweets/2014_01.js", b"Grailbird.data.tweets_2014_01 = [ {", "is not valid JSON"),
    ("data/js/tweets/2014_01.js", b"\xff", "is not UTF-8"),
    ("tweets.csv", b"\xff", "is not UTF-8"),  # read when there are no monthly files
])
def test_a_damaged_grailbird_file_names_the_file_and_the_archive(tmp_path, bad_file, content, problem):
    shutil.copytree(GRAILBIRD_ARCHIVE, tmp_path / "old")
    if bad_file == "tweets.csv":
        shutil.rmtree(tmp_path / "old" / "data")
    (tmp_path / "old" / bad_file).write_bytes(content)
    with pytest.raises(DownloadError) as info:
        read_archive(tmp_path / "old")
    assert str(info.value).startswith(f"{bad_file} in {tmp_path / 'old'} {problem}")


def test_a_grailbird_archive_with_monthly_files_leaves_its_tweets_csv_unread(tmp_path):
    shutil.copytree(GRAILBIRD_ARCHIVE, tmp_path / "old")
    (tmp_path / "old" / "tweets.csv").write_bytes(b"\xff")
    assert read_archive(tmp_path / "old") == read_archive(GRAILBIRD_ARCHIVE)


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])  # "\r": the old Excel for Mac's CSV
def test_grailbird_tweets_csv_rows_in_any_line_ending_flag_retweets_by_text_or_id(tmp_path, line_end):
    rows = [
        ["tweet_id", "in_reply_to_status_id", "timestamp", "text", "retweeted_status_id"],
        ["5", "", "2014-01-29 21:30:19 +0000", "RT @other: a manual retweet, no id", ""],
        ["4", "", "2014-01-29 21:30:18 +0000", "a retweet known by its id only", "9"],
        ["3", "", "2014-01-29 21:30:17 +0000", "rt @other: lower case is no retweet", ""],
        ["2", "8", "2014-01-29 21:30:16 +0000", "a reply in two lines\r\nkept as written", ""],
        ["1", "", "2014-01-29 21:30:15 +0000", "", ""],
        ["0"],  # a short row: no text, no date
    ]
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator=line_end).writerows(rows)
    (tmp_path / "tweets.csv").write_text(out.getvalue(), encoding="utf-8", newline="")
    warnings: list[str] = []
    assert [(t.text, t.is_retweet, t.is_reply) for t in read_archive(tmp_path / "tweets.csv", warn=warnings.append)] == [
        ("RT @other: a manual retweet, no id", True, False), ("a retweet known by its id only", True, False),
        ("rt @other: lower case is no retweet", False, False), ("a reply in two lines\r\nkept as written", False, True),
        ("", False, False), ("", False, False),
    ]
    assert warnings == []


@pytest.mark.parametrize("content", ["", '"tweet_id","timestamp"\n"1","2014-01-29 21:30:19 +0000"\n'])
def test_a_tweets_csv_without_a_text_column_is_one_clear_error(tmp_path, content):
    (tmp_path / "tweets.csv").write_text(content)
    with pytest.raises(DownloadError) as info:
        read_archive(tmp_path)
    assert str(info.value) == f"tweets.csv in {tmp_path} has no 'text' column: is it the tweets.csv of an X archive?"


def test_old_archive_format_without_wrapper():
    tweets = read_archive(OLD_ARCHIVE)
    assert [t.text for t in tweets] == [
        "Old archive, plain tweet & emoji 🙂", "RT @other: an old retweet", "@other an old reply",
    ]
    assert [(t.is_retweet, t.is_reply) for t in tweets] == [(False, False), (True, False), (False, True)]
    assert read_archive(OLD_ARCHIVE / "data" / "tweet.js") == tweets


def test_plain_json_file_is_read_too(tmp_path):
    path = tmp_path / "tweets.json"
    path.write_text(json.dumps([{"tweet": {"full_text": "plain &amp; simple", "created_at": "bad date"}}]))
    assert read_archive(path) == [SourceTweet("plain & simple")]


def test_zip_without_tweets_file(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data/account.js", "window.YTD.account.part0 = []")
    with pytest.raises(DownloadError, match=r"has no tweets file \(data/tweets.js or data/tweet.js; before 2019, data/js/tweets/YYYY_MM.js "
                                           r"or tweets.csv\): pass the zip from X's "
                                           r"'Download an archive of your data', its extracted folder, or its data/tweets.js$"):
        read_archive(path)


@pytest.mark.parametrize("body, where", [
    ('window.YTD.tweets.part0 = [ {"tweet": {"full_text": "x",} ]', "line 1"),
    ('window.YTD.tweets.part0 = [\n  {"tweet" : {\n  "full_text" : "cut off', "line 3"),
    ('window.YTD.tweets.part0 = [{"tweet": {"full_text": "x"}}];X', "Extra data at line 1"),  # a stray byte after the end
])
def test_malformed_json_names_the_file_and_place(tmp_path, body, where):
    (tmp_path / "data").mkdir()
    shutil.copy(ARCHIVE / "data" / "tweets.js", tmp_path / "data" / "tweets.js")
    (tmp_path / "data" / "tweets-part1.js").write_text(body, encoding="utf-8")
    with pytest.raises(DownloadError) as info:
        read_archive(tmp_path)
    message = str(info.value)
    assert message.startswith(f"data/tweets-part1.js in {tmp_path} is not valid JSON") and where in message
    assert "\n" not in message


@pytest.mark.parametrize("text", [
    'window.YTD.tweets.part0 = [{"tweet": {"full_text": "x"}}] X;',
    '\n\n  window.YTD.tweets.part0 =\n [{"tweet": {"full_text": "x"}}] X',
    '\n[{"tweet": {"full_text": "x"}} X',
    'window.YTD.tweets.part0 = [\n{"tweet": {}} X\n{"tweet": {}}\n]\n',
])
def test_a_json_error_gives_its_line_and_column_in_the_file(tmp_path, text):
    """The error is at the X, counted in the file (the assignment before the JSON included)."""
    lines_before = text[:text.index("X")].split("\n")
    line, column = len(lines_before), len(lines_before[-1]) + 1
    (tmp_path / "tweets.js").write_text(text)
    with pytest.raises(DownloadError, match=rf"at line {line}, column {column}\)"):
        read_archive(tmp_path / "tweets.js")


@pytest.mark.parametrize("content, match", [
    ('window.YTD.tweets.part0 = {"tweet": {}}', "does not hold a list of tweets"),
    ('window.YTD.tweets.part0 = [{"tweet": {"id": "1"}}]', "entry 0 of tweets.js .* has no tweet text"),
    ('window.YTD.tweets.part0 = ["just text"]', "entry 0 of tweets.js .* has no tweet text"),
    ('window.YTD.tweets.part0 = [{"tweet": "just text"}]', "entry 0 of tweets.js .* has no tweet text"),
    (b"\xff\xfe not utf-8", "not UTF-8"),
])
def test_wrong_content_is_one_clear_error(tmp_path, content, match):
    path = tmp_path / "tweets.js"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DownloadError, match=match):
        read_archive(path)


def test_missing_and_fake_zip_paths(tmp_path):
    with pytest.raises(DownloadError, match="does not exist"):
        read_archive(tmp_path / "nope.zip")
    (tmp_path / "broken.zip").write_text("not a zip")
    with pytest.raises(DownloadError, match="is not a zip file"):
        read_archive(tmp_path / "broken.zip")


# ---- the CSV ----

AWKWARD = ['commas, "quotes", and\nnewlines', "emoji 🚀🙂 and ünïcode", "plain", 'ends with a quote"']


def test_csv_round_trips_awkward_text(tmp_path):
    path = tmp_path / "out.csv"
    assert write_tweets_csv(path, AWKWARD) == 4
    assert read_csv(path) == AWKWARD
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_csv_write_is_atomic(tmp_path):
    path = tmp_path / "out.csv"
    write_tweets_csv(path, ["old"])

    def broken():
        yield "new"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_tweets_csv(path, broken())
    assert read_csv(path) == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_partial_path():
    assert partial_path(Path("d/karpathy_tweets.csv")) == Path("d/karpathy_tweets.partial.csv")
    assert partial_path(Path("out.txt")) == Path("out.txt.partial.csv")


@pytest.mark.ml
def test_csv_loads_with_gpt_2_simple(tmp_path):
    from gpt_2_simple.src import encoder
    from gpt_2_simple.src.load_dataset import load_dataset

    from ml.tiny import byte_level_encoder

    (tmp_path / "encoder.json").write_text(json.dumps(byte_level_encoder(), ensure_ascii=False), encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n", encoding="utf-8")
    enc = encoder.get_encoder(str(tmp_path))
    path = tmp_path / "karpathy_tweets.csv"
    write_tweets_csv(path, AWKWARD)

    chunks = load_dataset(enc, str(path), combine=50000)

    assert len(chunks) == 1
    expected = "".join(f"<|startoftext|>{text}<|endoftext|>\n" for text in AWKWARD)
    assert enc.decode(chunks[0].tolist()) == expected


# ---- the X API source, on the fake X ----

def timeline(count: int, start_id: int = 1_790_000_000_000_000_000) -> list[dict]:
    return [FakeX.timeline_tweet(start_id - i, f"tweet number {i} &amp; more") for i in range(count)]


def api_client(fake_x, *, app_only=True):
    settings = XSettings(_env_file=None, **fake_x.settings_values(timeout=5))
    return make_x_client(settings, app_only=app_only)


def fetch(fake_x, username="karpathy", **kwargs) -> list[SourceTweet]:
    waits = kwargs.pop("waits", [])
    app_only = not kwargs.get("user_auth", False)
    return list(fetch_from_api(api_client(fake_x, app_only=app_only), username, wait=waits.append, **kwargs))


def test_api_pages_through_the_timeline_with_exclusions(fake_x):
    user_id = fake_x.add_user("karpathy", timeline(250))
    tweets = fetch(fake_x)
    assert [t.text for t in tweets] == [f"tweet number {i} & more" for i in range(250)]
    assert tweets[0].created_at == datetime(2024, 3, 5, 18, 4, 12, tzinfo=timezone.utc)
    (lookup,) = fake_x.received("GET", "/2/users/by/username/karpathy")
    assert lookup.auth == "bearer"
    pages = fake_x.received("GET", f"/2/users/{user_id}/tweets")
    assert len(pages) == 3
    for page in pages:
        assert page.auth == "bearer"
        assert page.query["max_results"] == ["100"]
        assert page.query["exclude"] == ["retweets,replies"]
        assert "note_tweet" in page.query["tweet.fields"][0].split(",")
    assert "pagination_token" not in pages[0].query
    assert [p.query["pagination_token"] for p in pages[1:]] == [["64"], ["c8"]]


def test_api_replies_when_included_and_long_posts(fake_x):
    fake_x.add_user("karpathy", [
        FakeX.timeline_tweet(9, "a long post trunc…", note_text="a long post truncated nowhere &amp; whole"),
        FakeX.timeline_tweet(8, "@friend thanks", in_reply_to_user_id="22"),
        FakeX.timeline_tweet(7, "RT @x: theirs", retweet_of="6"),
        FakeX.timeline_tweet(5, "mine"),
    ])
    tweets = fetch(fake_x, include_replies=True)
    assert [(t.text, t.is_reply) for t in tweets] == [
        ("a long post truncated nowhere & whole", False), ("@friend thanks", True), ("mine", False),
    ]
    assert fake_x.requests[-1].query["exclude"] == ["retweets"]
    assert [t.text for t in fetch(fake_x)] == ["a long post truncated nowhere & whole", "mine"]


def test_api_with_user_credentials_signs_every_request(fake_x):
    fake_x.add_user("karpathy", timeline(120))
    assert len(fetch(fake_x, user_auth=True)) == 120
    assert [r.auth for r in fake_x.requests] == ["oauth1"] * 3


def test_api_waits_for_the_rate_limit_reset_then_goes_on(fake_x):
    user_id = fake_x.add_user("karpathy", timeline(150))
    fake_x.enqueue("GET", "/2/users/:id/tweets", FakeX.rate_limited(reset=int(time.time()) + 30))
    fake_x.enqueue("GET", "/2/users/by/username/:username", FakeX.rate_limited(reset=int(time.time()) + 5))
    waits = []
    tweets = fetch(fake_x, waits=waits, max_wait=60)
    assert len(tweets) == 150
    assert 1 <= waits[0] <= 7 and 20 <= waits[1] <= 32  # until x-rate-limit-reset, plus a second
    pages = fake_x.received("GET", f"/2/users/{user_id}/tweets")
    assert len(pages) == 3  # the refused first page was asked again, then the second
    assert "pagination_token" not in pages[1].query and pages[2].query["pagination_token"] == ["64"]


def test_api_waits_a_rate_limit_of_exactly_max_wait(fake_x):
    fake_x.add_user("karpathy", timeline(5))
    reset = int(time.time()) + 600
    fake_x.enqueue("GET", "/2/users/:id/tweets", FakeX.rate_limited(reset=reset))
    waits = []
    assert len(fetch(fake_x, waits=waits, max_wait=60, clock=lambda: reset - 59)) == 5
    assert waits == [60]


def test_api_rate_limit_longer_than_max_wait_stops(fake_x):
    fake_x.add_user("karpathy", timeline(150))
    fake_x.enqueue("GET", "/2/users/:id/tweets", FakeResponse(200, {"data": [], "meta": {"result_count": 0, "next_token": "64"}}),
                   FakeX.rate_limited(reset=int(time.time()) + 600))
    with pytest.raises(DownloadError, match=r"rate limit resets in \d+ s, longer than --max_wait=60: "
                                           r"run again later, or allow a longer wait$"):
        fetch(fake_x, max_wait=60)


def test_api_bad_credentials(fake_x):
    fake_x.add_user("karpathy", timeline(5))
    settings = XSettings(_env_file=None, **{**fake_x.settings_values(), "BEARER_TOKEN": "wrong"})
    with pytest.raises(DownloadError) as info:
        list(fetch_from_api(make_x_client(settings, app_only=True), "karpathy"))
    assert str(info.value).startswith("X answered 401: Unauthorized: check BEARER_TOKEN")
    assert "wrong" not in str(info.value)


@pytest.mark.parametrize("answer", [None, FakeX.not_found_in_body("username", "nobody"),
                                    FakeResponse(404, {"title": "Not Found Error", "detail": "Not Found", "status": 404})])
def test_api_unknown_account(fake_x, answer):
    if answer is not None:
        fake_x.enqueue("GET", "/2/users/by/username/:username", answer)
    with pytest.raises(DownloadError, match="no account @nobody"):
        fetch(fake_x, "nobody")


def test_api_protected_account(fake_x):
    user_id = fake_x.add_user("hidden", timeline(5))
    fake_x.enqueue("GET", "/2/users/:id/tweets", FakeX.forbidden("Sorry, you are not authorized to see this user."))
    with pytest.raises(DownloadError, match=r"403: Sorry, you are not authorized.*@hidden may be protected"):
        fetch(fake_x, "hidden")
    fake_x.enqueue("GET", "/2/users/:id/tweets", FakeResponse(200, {"errors": [{
        "detail": f"Sorry, you are not authorized to see the user with id: [{user_id}].", "title": "Authorization Error"}]}))
    with pytest.raises(DownloadError, match=r"no tweets for @hidden \(Sorry, .*: the account may be protected or suspended$"):
        fetch(fake_x, "hidden")


def test_api_tweets_are_flagged_from_their_fields():
    def tweet(**fields) -> tweepy.Tweet:
        return _api_tweet(tweepy.Tweet({"id": "1", "text": "t", "edit_history_tweet_ids": ["1"], **fields}))

    assert (tweet().is_retweet, tweet().is_reply) == (False, False)
    assert tweet(referenced_tweets=[{"type": "quoted", "id": "2"}, {"type": "retweeted", "id": "3"}]).is_retweet
    assert not tweet(referenced_tweets=[{"type": "quoted", "id": "2"}]).is_retweet
    assert tweet(in_reply_to_user_id="22").is_reply


def test_rate_limit_waits_last_until_a_second_after_the_reset():
    def reset_in(seconds: float) -> datetime:
        return datetime.fromtimestamp(1_000_000 + seconds, timezone.utc)

    assert _seconds_until(reset_in(30), clock=lambda: 1_000_000) == 31
    assert _seconds_until(reset_in(-30), clock=lambda: 1_000_000) == 1.0
    assert _seconds_until(None, clock=lambda: 1_000_000) == RATE_LIMIT_WAIT_WITHOUT_RESET


def test_xs_error_detail_is_taken_from_its_first_problem():
    assert _first_error([{"title": "Forbidden", "message": "m"}]) == "Forbidden"
    assert _first_error(["not a problem", {"message": "Gone"}]) == "Gone"
    assert _first_error([{"detail": "", "title": ""}]) == "no detail"
    assert _first_error(None) == _first_error([]) == "no detail"


@pytest.mark.parametrize("kind, advice", [
    (ErrorKind.not_sent, "check the network and TWITTER_API_BASE_URL"),
    (ErrorKind.unknown_outcome, "try again later"),
    (ErrorKind.refused, "see X's message"),
])
def test_download_errors_give_advice_by_kind(kind, advice):
    assert str(_download_error(DeliveryError(kind, "X said no"), "karpathy")) == f"X said no: {advice}"


def test_fake_x_serves_only_the_newest_3200(fake_x):
    fake_x.add_user("prolific", timeline(3250))
    assert len(fetch(fake_x, "prolific")) == 3200


# ---- the command line ----

def test_flags_with_equals_or_space_and_booleans():
    equals = parse_args(["--username=@karpathy", "--limit=6000", "--include_replies", "--strip_hashtags=false",
                         "--source=api", "--output=x.csv", "--max_wait=5"])
    spaced = parse_args(["--username", "karpathy", "--limit", "6000", "--include_replies", "true",
                         "--strip_hashtags", "no", "--source", "api", "--output", "x.csv", "--max_wait", "5"])
    assert vars(equals) == vars(spaced)
    assert (equals.username, equals.limit, equals.include_replies, equals.strip_usertags, equals.strip_hashtags) == (
        "karpathy", 6000, True, False, False)
    assert parse_args(["--archive", "a.zip"]).source == "archive"


@pytest.mark.parametrize("argv, message", [
    (["--username", "not a handle!"], "is not an X handle"),
    (["--source", "archive"], "--source archive needs --archive PATH"),
    (["--source", "api", "--archive", "a.zip", "--username", "a"], "--archive is read only by --source archive"),
    (["--limit", "0", "--username", "a"], "must be 1 or more"),
    (["--strip_usertags=maybe", "--username", "a"], "expected true or false"),
    (["--limit", "10"], "--username is required"),
])
def test_bad_arguments_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_main_from_archive_writes_csv_and_reports(no_x_env, tmp_path, capsys):
    zip_path = zip_folder(ARCHIVE, tmp_path / "archive.zip")
    assert main(["--archive", str(zip_path), "--username=fixture_user"]) == 0
    assert read_csv(tmp_path / "fixture_user_tweets.csv") == ARCHIVE_KEPT
    out = capsys.readouterr().out
    assert out.strip() == (
        "Wrote 6 tweets to fixture_user_tweets.csv; fetched 11, kept 6, dropped 5 (1 retweet, 1 reply, "
        "1 starts with @ (a reply in all but name), 1 exact duplicate, 1 empty after cleaning)"
    )
    assert main(["--archive", str(zip_path), "--limit=2", "--output", "two.csv"]) == 0
    assert read_csv(tmp_path / "two.csv") == ARCHIVE_KEPT[:2]


def test_main_cleaning_options_reach_the_csv(no_x_env, tmp_path, capsys):
    assert main(["--archive", str(ARCHIVE), "--include_replies", "--strip_usertags=true", "--strip_hashtags", "true",
                 "--output", "all.csv"]) == 0
    assert read_csv(tmp_path / "all.csv") == [
        ARCHIVE_KEPT[0], ARCHIVE_KEPT[1], "thanks, that fixed it!", LONG_POST, ARCHIVE_KEPT[3],
        "Thanks for , it's great", "this is an old-style reply", ARCHIVE_KEPT[5],
    ]
    assert "fetched 11, kept 8, dropped 3 (1 retweet, 1 exact duplicate, 1 empty after cleaning)" in capsys.readouterr().out


def test_main_archive_has_no_3200_cap(no_x_env, tmp_path, capsys):
    entries = [{"tweet": {"full_text": f"archived tweet {i}", "created_at": "Tue Mar 05 18:04:12 +0000 2024"}}
               for i in range(3500)]
    (tmp_path / "tweets.js").write_text("window.YTD.tweets.part0 = " + json.dumps(entries), encoding="utf-8")
    assert main(["--archive", str(tmp_path / "tweets.js"), "--username", "prolific"]) == 0
    assert len(read_csv(tmp_path / "prolific_tweets.csv")) == 3500
    captured = capsys.readouterr()
    assert "Wrote 3500 tweets" in captured.out and "3,200" not in captured.err


def test_progress_bar_shows_the_count_and_the_oldest_tweet_reached(no_x_env, monkeypatch, capsys):
    monkeypatch.setattr(download_tweets, "tqdm", partial(tqdm, mininterval=0, miniters=1))  # draw every tweet
    assert main(["--archive", str(ARCHIVE), "--output", "out.csv"]) == 0
    frames = capsys.readouterr().err.split("\r")
    assert any(frame.startswith("Oldest tweet 2024-03-05:") and " 1/11 " in frame for frame in frames)
    assert any(frame.startswith("Oldest tweet 2022-09-05: 100%") and " 11/11 " in frame for frame in frames)


def test_rate_limit_countdown_shows_the_seconds_left(monkeypatch, capsys):
    now = [100.0]
    monkeypatch.setattr(download_tweets, "time", types.SimpleNamespace(
        monotonic=lambda: now[0], sleep=lambda seconds: now.__setitem__(0, now[0] + seconds)))
    screen = io.StringIO()
    with tqdm(total=10, file=screen, mininterval=0) as bar:
        download_tweets._countdown(bar)(3)
    assert "X's rate limit reached: waiting 3 s for it to reset" in capsys.readouterr().err
    frames = screen.getvalue().split("\r")
    shown = [f for f in frames if "resuming in" in f]
    assert [f.split("resuming in ")[1].split(" s")[0] for f in shown] == ["3", "2", "1"]
    assert now[0] == 103.0 and "resuming" not in frames[-1]


@pytest.mark.parametrize("make, message", [
    (lambda p: zipfile.ZipFile(p / "a.zip", "w").close() or p / "a.zip", "has no tweets file"),
    (lambda p: (p / "t.js").write_text("window.YTD.tweets.part0 = [") and p / "t.js", "is not valid JSON"),
])
def test_main_bad_archive_is_one_line_and_exit_1(no_x_env, tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert main(["--archive", str(path), "--output", "out.csv"]) == 1
    err = on_screen(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "out.csv").exists()


def test_main_without_any_source(no_x_env, capsys):
    assert main(["--username", "karpathy"]) == 1
    err = capsys.readouterr().err
    assert "no source: set BEARER_TOKEN" in err and "--archive PATH" in err


def test_main_nothing_kept_writes_nothing(no_x_env, tmp_path, capsys):
    assert main(["--archive", str(OLD_ARCHIVE), "--limit", "1", "--strip_usertags"]) == 0
    (tmp_path / "only_rt.js").write_text('window.YTD.tweet.part0 = [{"full_text": "RT @a: b"}]')
    assert main(["--archive", str(tmp_path / "only_rt.js"), "--output", "none.csv"]) == 1
    assert "no tweets left to write (fetched 1, kept 0, dropped 1 (1 retweet))" in capsys.readouterr().err
    assert not (tmp_path / "none.csv").exists()


def use_fake_x(monkeypatch, fake_x, **values):
    for name, value in {**fake_x.settings_values(), **values}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(value))


def test_main_from_api_with_bearer_or_user_credentials(no_x_env, monkeypatch, fake_x, tmp_path, capsys):
    fake_x.add_user("karpathy", timeline(130) + [FakeX.timeline_tweet(1, "https://t.co/only")])
    use_fake_x(monkeypatch, fake_x)
    assert main(["--username=karpathy"]) == 0
    assert read_csv(tmp_path / "karpathy_tweets.csv") == [f"tweet number {i} & more" for i in range(130)]
    captured = capsys.readouterr()
    assert "fetched 131, kept 130, dropped 1 (1 empty after cleaning)" in captured.out
    assert "only the newest 3,200 tweets" in captured.err
    assert {r.auth for r in fake_x.requests} == {"bearer"}

    use_fake_x(monkeypatch, fake_x, BEARER_TOKEN=None)
    fake_x.requests.clear()
    assert main(["--username", "karpathy", "--limit", "100", "--output", "user.csv"]) == 0
    assert len(read_csv(tmp_path / "user.csv")) == 100
    assert [r.auth for r in fake_x.requests] == ["oauth1", "oauth1"]  # the limit needed one page
    assert "only the newest" not in capsys.readouterr().err


@pytest.mark.parametrize("username, token, line", [
    ("karpathy", "revoked", "error: X answered 401: Unauthorized: check BEARER_TOKEN, or CONSUMER_KEY, CONSUMER_SECRET, "
                            "ACCESS_KEY and ACCESS_SECRET, in .env or the environment"),
    ("nobody", None, "error: X has no account @nobody (Could not find user with username: [nobody].): check the username"),
])
def test_main_api_errors_are_one_line(no_x_env, monkeypatch, fake_x, tmp_path, capsys, username, token, line):
    fake_x.add_user("karpathy", timeline(5))
    use_fake_x(monkeypatch, fake_x, **({"BEARER_TOKEN": token} if token else {}))
    assert main([f"--username={username}"]) == 1  # no --limit: the 3,200 note would be due, after a download
    assert on_screen(capsys.readouterr().err) == [line]
    assert list(tmp_path.iterdir()) == []


def test_main_keeps_a_partial_file_when_x_stops_answering(no_x_env, monkeypatch, fake_x, tmp_path, capsys):
    fake_x.add_user("karpathy", timeline(150))
    fake_x.enqueue("GET", "/2/users/:id/tweets", FakeResponse(200, {
        "data": [FakeX.timeline_tweet(10, "first page")], "meta": {"result_count": 1, "next_token": "64"}}),
        FakeX.server_error(503))
    use_fake_x(monkeypatch, fake_x)
    (tmp_path / "karpathy_tweets.csv").write_text("tweets\nfrom an earlier run\n")
    assert main(["--username=karpathy"]) == 1
    err = capsys.readouterr().err
    assert "error: X answered 503: Service Unavailable: try again later" in err
    assert "Kept the 1 tweets fetched so far in karpathy_tweets.partial.csv (not karpathy_tweets.csv" in err
    assert read_csv(tmp_path / "karpathy_tweets.partial.csv") == ["first page"]
    assert read_csv(tmp_path / "karpathy_tweets.csv") == ["from an earlier run"]


def test_collect_keeps_what_came_before_ctrl_c():
    def interrupted():
        yield SourceTweet("one")
        yield SourceTweet("two")
        raise KeyboardInterrupt

    seen = []
    collected = collect(interrupted(), CleaningOptions(), limit=10, on_fetched=seen.append)
    assert collected.texts == ["one", "two"] and len(seen) == 2
    assert isinstance(collected.stopped_by, KeyboardInterrupt)


@contextlib.contextmanager
def sigint_raises_keyboard_interrupt():
    """Python's own SIGINT handler in this process while the block runs, the previous one after.

    A child inherits an ignored SIGINT (pytest started as a background job, `cmd &` or nohup),
    and Python then never installs its handler, so Ctrl-C could not reach the script. A handled
    signal is reset to the default at exec, and the child's Python installs its handler again.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_rate_limit_wait_keeps_a_partial_file(no_x_env, fake_x, tmp_path):
    """The real script, run as documented, interrupted while it counts down a 429."""
    fake_x.add_user("karpathy", timeline(150))
    fake_x.enqueue("GET", "/2/users/:id/tweets", FakeResponse(200, {
        "data": [FakeX.timeline_tweet(10, "before the limit")], "meta": {"result_count": 1, "next_token": "64"}}),
        FakeX.rate_limited(reset=int(time.time()) + 120))
    env = {**os.environ, **{k: str(v) for k, v in fake_x.settings_values().items()}, "PYTHONUNBUFFERED": "1"}
    script = REPO / "scripts" / "download_tweets.py"
    with sigint_raises_keyboard_interrupt():
        process = subprocess.Popen(
            [sys.executable, str(script), "--username=karpathy", "--max_wait=300"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            if "rate limit reached" in line or not line:
                break
        assert "waiting 1" in lines[-1], lines  # ~121 s countdown
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err
    assert "Kept the 1 tweets fetched so far in karpathy_tweets.partial.csv" in err
    assert read_csv(tmp_path / "karpathy_tweets.partial.csv") == ["before the limit"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["karpathy_tweets.partial.csv"]


# ---- twint (legacy) ----

def test_twint_missing_names_the_other_sources(monkeypatch):
    monkeypatch.setitem(sys.modules, "twint", None)
    with pytest.raises(DownloadError) as info:
        list(fetch_from_twint("karpathy"))
    assert "twint is not installed" in str(info.value)
    assert "--source api" in str(info.value) and "--source archive" in str(info.value)


def fake_twint(found: list, error: Exception | None = None) -> types.ModuleType:
    module = types.ModuleType("twint")

    class Config:
        Username = Limit = Store_object_tweets_list = None
        Store_object = Hide_output = False

    def search(config):
        module.searched_with = config
        if error is not None:
            raise error
        config.Store_object_tweets_list.extend(found)

    module.Config = Config
    module.run = types.SimpleNamespace(Search=search)
    return module


def twint_tweet(text: str, reply_to: list[str] = (), retweet: bool = False):
    users = [{"user_id": "1", "username": "karpathy"}] + [{"user_id": "2", "username": name} for name in reply_to]
    return types.SimpleNamespace(tweet=text, datetime=1_700_000_000_000, reply_to=users, retweet=retweet)


def test_twint_results_become_source_tweets(monkeypatch):
    bare = types.SimpleNamespace(tweet="no flags at all", datetime=1_700_000_000_000)  # no retweet, no reply_to
    module = fake_twint([
        twint_tweet("mine"), twint_tweet("an answer", reply_to=["friend"]),
        twint_tweet("cc friend, see this", reply_to=["friend"]), twint_tweet("theirs", retweet=True), bare,
    ])
    monkeypatch.setitem(sys.modules, "twint", module)
    tweets = list(fetch_from_twint("karpathy", limit=40))
    assert [(t.text, t.is_reply, t.is_retweet) for t in tweets] == [
        ("mine", False, False), ("an answer", True, False), ("cc friend, see this", False, False), ("theirs", False, True),
        ("no flags at all", False, False),
    ]
    assert tweets[0].created_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    config = module.searched_with
    assert (config.Username, config.Limit, config.Store_object, config.Hide_output) == ("karpathy", 40, True, True)


@pytest.mark.parametrize("error, message", [(None, "twint returned no tweets"),
                                            (RuntimeError("blocked"), "twint failed (RuntimeError)")])
def test_twint_blocked_exits_non_zero_naming_the_other_sources(no_x_env, monkeypatch, capsys, error, message):
    monkeypatch.setitem(sys.modules, "twint", fake_twint([], error))
    assert main(["--username=karpathy", "--source=twint"]) == 1
    err = capsys.readouterr().err
    assert message in err and "--source api" in err and "--source archive --archive PATH" in err


def test_real_twint_config_has_what_we_set():
    twint = pytest.importorskip("twint")
    config = twint.Config()
    for name in ("Username", "Limit", "Store_object", "Store_object_tweets_list", "Hide_output"):
        assert hasattr(config, name)
    assert callable(twint.run.Search)


def test_module_runs_from_the_repo_root():
    result = subprocess.run([sys.executable, "scripts/download_tweets.py", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--include_replies" in result.stdout and "--archive" in result.stdout


# ---- archives as X writes them, not as the fixture happens to be ----

def write_archive_file(folder: Path, name: str, kind: str, entries: list[dict], *, bom: bool = False) -> None:
    """One `window.YTD.<kind>.part0 = [...]` file in folder/data."""
    (folder / "data").mkdir(exist_ok=True)
    text = f"window.YTD.{kind}.part0 = {json.dumps(entries)}"
    (folder / "data" / name).write_bytes(("\ufeff" if bom else "").encode() + text.encode())


def archive_entry(text: str, when: datetime) -> dict:
    return {"tweet": {"full_text": text, "created_at": when.strftime("%a %b %d %H:%M:%S +0000 %Y")}}


def test_an_archive_out_of_date_order_still_comes_out_newest_first(tmp_path):
    day = partial(datetime, 2024, 3, tzinfo=timezone.utc)
    write_archive_file(tmp_path, "tweets.js", "tweets", [
        archive_entry("middle", day(3)), archive_entry("oldest", day(1)), archive_entry("newest", day(5)),
    ])
    write_archive_file(tmp_path, "tweets-part1.js", "tweets", [
        archive_entry("second newest", day(4)), archive_entry("second oldest", day(2)),
    ])
    assert [t.text for t in read_archive(tmp_path)] == [
        "newest", "second newest", "middle", "second oldest", "oldest",
    ]


def test_undated_tweets_come_in_the_order_of_the_parts(tmp_path):
    write_archive_file(tmp_path, "tweets.js", "tweets", [{"tweet": {"full_text": "from the first part"}}])
    write_archive_file(tmp_path, "tweets-part1.js", "tweets", [{"tweet": {"full_text": "from the second part"}}])
    assert [t.text for t in read_archive(tmp_path)] == ["from the first part", "from the second part"]


@pytest.mark.parametrize("note_after_seconds", [-2, -1, 0, 1, 2])
def test_a_long_post_gets_the_note_written_within_two_seconds_of_it(tmp_path, note_after_seconds):
    tweeted_at = datetime(2024, 3, 1, 9, 30, 0, tzinfo=timezone.utc)
    noted_at = datetime.fromtimestamp(tweeted_at.timestamp() + note_after_seconds, timezone.utc)
    full_text = "A long post. " + "Every word of it counts, " * 20 + "to the very end."
    write_archive_file(tmp_path, "tweets.js", "tweets", [archive_entry(full_text[:200] + "… https://t.co/x", tweeted_at)])
    write_archive_file(tmp_path, "note-tweet.js", "note_tweet", [
        {"noteTweet": {"createdAt": noted_at.isoformat(), "core": {"text": full_text}}},
    ])
    assert [t.text for t in read_archive(tmp_path)] == [full_text]


@pytest.mark.parametrize("tweet, note, note_after_seconds", [
    ("Short start… https://t.co/x", "Short start of another long post", 3),
    ("The cat sat on the mat… https://t.co/x", "Cat sat on the mat, another post", 0),  # only @handles are matched without
])
def test_a_note_written_three_seconds_away_or_starting_otherwise_belongs_to_another_post(
        tmp_path, tweet, note, note_after_seconds):
    tweeted_at = datetime(2024, 3, 1, 9, 30, 0, tzinfo=timezone.utc)
    write_archive_file(tmp_path, "tweets.js", "tweets", [archive_entry(tweet, tweeted_at)])
    write_archive_file(tmp_path, "note-tweet.js", "note_tweet", [
        {"noteTweet": {"createdAt": datetime.fromtimestamp(tweeted_at.timestamp() + note_after_seconds, timezone.utc)
                       .isoformat(), "core": {"text": note}}},
    ])
    warnings: list[str] = []
    assert [t.text for t in read_archive(tmp_path, warn=warnings.append)] == [tweet]
    assert warnings == ["1 long post is cut at X's limit: no note in note-tweet.js was written within 2 s of it "
                        "and starts like it"]


def test_archive_entries_flag_retweets_and_replies_in_every_spelling(tmp_path):
    (tmp_path / "tweets.js").write_text("window.YTD.tweets.part0 = " + json.dumps([
        {"tweet": {"text": "an old entry with text, not full_text"}},
        {"tweet": {"full_text": "retweeted by status", "retweeted_status": {}}},
        {"tweet": {"full_text": "a reply by str id", "in_reply_to_status_id_str": "5"}},
        {"tweet": {"full_text": "a reply by number id", "in_reply_to_status_id": 5}},
    ]) + ";\n")  # some archives end the assignment with a semicolon
    assert [(t.text, t.is_retweet, t.is_reply) for t in read_archive(tmp_path / "tweets.js")] == [
        ("an old entry with text, not full_text", False, False), ("retweeted by status", True, False),
        ("a reply by str id", False, True), ("a reply by number id", False, True),
    ]


def test_archive_dates_without_a_zone_are_utc():
    assert _archive_date("2024-03-01T09:30:00") == datetime(2024, 3, 1, 9, 30, tzinfo=timezone.utc)
    assert _archive_date("2024-03-01T10:30:00+01:00") == datetime(2024, 3, 1, 9, 30, tzinfo=timezone.utc)


def test_notes_in_every_shape_and_a_short_truncated_post(tmp_path):
    """Notes with or without the noteTweet wrapper, odd entries skipped; a tweet cut to a few words plus "…" and its
    link still finds its note; a tweet without a date takes none."""
    at = datetime(2024, 3, 1, 9, 30, 0, tzinfo=timezone.utc)
    write_archive_file(tmp_path, "tweets.js", "tweets", [
        archive_entry("A short  long post… https://t.co/x", at), {"tweet": {"full_text": "Undated… https://t.co/y"}},
    ])
    write_archive_file(tmp_path, "note-tweet.js", "note_tweet", [
        "not an entry", {"noteTweet": "not a note"}, {"noteTweet": {"createdAt": at.isoformat(), "core": {}}},
        {"createdAt": at.isoformat(), "core": {"text": "A short long post, whole."}},
        {"noteTweet": {"core": {"text": "Undated and whole."}}},
    ])
    assert [t.text for t in read_archive(tmp_path)] == ["A short long post, whole.", "Undated… https://t.co/y"]


@pytest.mark.parametrize("layout, bad_file, named", [
    ("folder", "data/tweets.js", "data/tweets.js in {path}"), ("folder", "data/note-tweet.js", "data/note-tweet.js in {path}"),
    ("zip", "data/tweets.js", "data/tweets.js in {path}"), ("zip", "data/note-tweet.js", "data/note-tweet.js in {path}"),
    ("file", "data/tweets.js", "tweets.js in {path}"),
    ("file", "data/note-tweet.js", "note-tweet.js in {path.parent}"),  # the note beside the tweets file given
])
def test_errors_name_the_file_and_the_archive(tmp_path, layout, bad_file, named):
    folder = tmp_path / "archive"
    shutil.copytree(ARCHIVE, folder)
    (folder / "data" / "tweets-part1.js").unlink()
    (folder / bad_file).write_bytes(b"window.YTD.x.part0 = [\xff]")
    path = {"folder": folder, "zip": zip_folder(folder, tmp_path / "archive.zip"),
            "file": folder / "data" / "tweets.js"}[layout]
    with pytest.raises(DownloadError) as info:
        read_archive(path)
    assert str(info.value).startswith(named.format(path=path) + " is not UTF-8")


def test_entry_and_json_errors_name_the_file_and_the_archive(tmp_path):
    write_archive_file(tmp_path, "tweets.js", "tweets", [{"tweet": {"id": "1"}}])
    with pytest.raises(DownloadError, match=f"^entry 0 of data/tweets.js in {tmp_path} has no tweet text"):
        read_archive(tmp_path)
    (tmp_path / "data" / "note-tweet.js").write_text("window.YTD.note_tweet.part0 = [")
    with pytest.raises(DownloadError) as info:
        read_archive(tmp_path)
    assert str(info.value).startswith(f"data/note-tweet.js in {tmp_path} is not valid JSON")
    assert str(info.value).endswith("the file is damaged; download the archive again")


def test_nothing_under___MACOSX_in_a_zip_is_read(tmp_path):
    """macOS's zip tool puts resource forks (binary, not UTF-8) under __MACOSX/; all of it is skipped, whatever the names."""
    path = zip_folder(ARCHIVE, tmp_path / "archive.zip")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("__MACOSX/data/tweets.js", b"\x00\x05\x16\x07\xff")
    assert read_archive(path) == read_archive(ARCHIVE)


def test_a_damaged_zip_says_so(tmp_path):
    path = zip_folder(ARCHIVE, tmp_path / "archive.zip")
    data = bytearray(path.read_bytes())
    start = data.index(b"data/tweets.js") + len(b"data/tweets.js")  # the first entry's compressed bytes follow its name
    data[start + 10:start + 20] = bytes(10)
    path.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match=f"^{path} is a damaged zip .*: download the archive again$"):
        read_archive(path)


def test_archive_files_with_a_byte_order_mark_are_read(tmp_path):
    write_archive_file(tmp_path, "tweets.js", "tweets", [archive_entry("first", datetime(2024, 3, 1, tzinfo=timezone.utc))],
                       bom=True)
    assert [t.text for t in read_archive(tmp_path)] == ["first"]
