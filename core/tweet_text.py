"""The one rule for tweet text and the curated file format, shared by the API, ml/ and scripts/.

X counts a tweet's length with weights (URLs 23, CJK and emoji 2, the rest 1); we use
twitter-text-parser, which implements X's rules, with a fast path for plain ASCII text
(its emoji scan is too slow per tweet for large uploads; the figure is in the README's speed section).
twitter-text is imported where a text first needs it, not with this module: its import builds
its emoji and URL patterns, a cost the service's start and its posting path never need.

Bluesky counts a post in grapheme clusters (what a reader sees as one character: a flag, an
emoji family joined by ZWJs, a letter with its accents), at most 300, and at most 3000 bytes
of UTF-8; `bluesky_text_problem` says whether a text fits, with the `regex` module's \\X
(Unicode's extended grapheme clusters, UAX #29, the segmentation Bluesky's validator counts).
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass

MAX_WEIGHTED_LENGTH = 280
URL_WEIGHT = 23
# twitter_text.extract_urls.max_url_length (the longest text counted as one link), copied so that
# this module's bounds need no twitter-text import; tests/test_tweet_text.py pins the two equal.
MAX_URL_LENGTH = 4096
# No valid tweet holds more code points: links are its densest part (twitter-text counts 23 for
# a link of at most MAX_URL_LENGTH characters, and no link when longer), so no unit of weight
# covers more than MAX_URL_LENGTH / URL_WEIGHT of them. (It would also count 23 for a link padded
# with any number of characters IDNA drops, such as soft hyphens: we refuse those.) Longer
# entries are refused before the parse, whose URL and emoji scans are slow and memory-hungry.
MAX_TWEET_CODE_POINTS = -(-MAX_WEIGHTED_LENGTH * MAX_URL_LENGTH // URL_WEIGHT)
# Nor a longer run of combining marks: each weighs 1 outside links, and a link holds at most
# MAX_URL_LENGTH characters. NFC reorders a run by insertion sort, in time growing with the
# square of its length, so longer runs are refused before it.
MAX_COMBINING_RUN = MAX_URL_LENGTH + MAX_WEIGHTED_LENGTH
# app.bsky.feed.post's lexicon: text has maxGraphemes 300 and maxLength 3000 (UTF-8 bytes).
BLUESKY_MAX_GRAPHEMES = 300
BLUESKY_MAX_BYTES = 3000
SAMPLE_DELIMITER = "=" * 20
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
MARKERS = (START_TOKEN, END_TOKEN)

_MAYBE_URL = re.compile(r"\.[A-Za-z0-9]")
# Control characters (but newline and tab) and lone surrogates: invisible on X, and Postgres
# cannot store NUL. Model output trained on raw bytes can contain them.
CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_DELIMITER_LINE = re.compile(r"^={20}[ \t]*$", re.MULTILINE)


class TweetRejected(ValueError):
    """The text breaks the tweet rule; str(exc) says why."""


class CuratedFileError(ValueError):
    """The uploaded file cannot be read as a curated file; str(exc) says why and what to do."""


# twitter-text's functions, imported on first call.
def parse_tweet(text: str):
    from twitter_text import parse_tweet

    return parse_tweet(text)


def extract_urls_with_indices(text: str, *, without_protocol: bool = True) -> list[dict]:
    """Links in `text` as X finds them; `without_protocol=False` keeps only those written with
    http:// or https:// (what Mastodon's extractor is told to do)."""
    from twitter_text import extract_urls_with_indices

    return extract_urls_with_indices(text, extract_urls_without_protocol=without_protocol)


def has_invalid_characters(text: str) -> bool:
    from twitter_text.has_invalid_characters import has_invalid_characters

    return has_invalid_characters(text)


def grapheme_count(text: str) -> int:
    """How many grapheme clusters `text` holds (regex is imported on first call, like twitter-text)."""
    import regex

    return sum(1 for _ in regex.finditer(r"\X", text))


def bluesky_text_problem(text: str) -> str | None:
    """None when Bluesky accepts `text` as a post's text, else a one-line reason.

    Every text has at most as many graphemes as code points: short texts skip the count.
    """
    if not text.strip():
        return "post is empty"
    if len(text) > BLUESKY_MAX_GRAPHEMES:
        graphemes = grapheme_count(text)
        if graphemes > BLUESKY_MAX_GRAPHEMES:
            return f"{graphemes:,} graphemes over Bluesky's {BLUESKY_MAX_GRAPHEMES}"
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > BLUESKY_MAX_BYTES:
        return f"{size:,} bytes of UTF-8 over Bluesky's {BLUESKY_MAX_BYTES:,}"
    return None


def normalize_text(text: str) -> str:
    """NFC-normalise, use \\n line endings and trim: the form we store and post."""
    text = unicodedata.normalize("NFC", text)
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def weighted_length(text: str) -> int:
    """X's weighted length of `text` (already normalised)."""
    if text.isascii():
        if not _MAYBE_URL.search(text):
            return len(text)
        urls = extract_urls_with_indices(text)
        return len(text) - sum(len(u["url"]) for u in urls) + URL_WEIGHT * len(urls)
    return parse_tweet(text).weightedLength


def validate_tweet(text: str) -> str:
    """Return the normalised text, or raise TweetRejected saying what is wrong (X's rule)."""
    text = clean_text(text)
    problem = x_text_problem(text)
    if problem is not None:
        raise TweetRejected(problem)
    return text


def clean_text(text: str) -> str:
    """The normalised text, or TweetRejected when no network could post it (too long for any rule
    to need reading, empty, control characters, generation markers). Bounds come before any parse."""
    if not isinstance(text, str):
        raise TweetRejected("tweet must be a string")
    length = len(text.strip())
    if length > MAX_TWEET_CODE_POINTS:
        raise TweetRejected(
            f"tweet is {length:,} characters long; no tweet can hold more than {MAX_TWEET_CODE_POINTS:,} "
            f"(X's limit is {MAX_WEIGHTED_LENGTH} weighted characters, a link counting {URL_WEIGHT})"
        )
    if length > MAX_COMBINING_RUN and not text.isascii():
        run = _longest_combining_run(text)
        if run > MAX_COMBINING_RUN:
            raise TweetRejected(
                f"tweet has {run:,} combining marks in a row; no tweet can hold more than {MAX_COMBINING_RUN:,}"
            )
    text = normalize_text(text)
    if not text:
        raise TweetRejected("tweet is empty")
    control = CONTROL_CHARS.search(text)
    if control:
        raise TweetRejected(f"tweet contains the control character U+{ord(control.group()):04X}: remove it")
    for marker in MARKERS:
        if marker in text:
            raise TweetRejected(f"tweet contains the generation marker {marker}")
    return text


def x_text_problem(text: str) -> str | None:
    """Why X would refuse a text that clean_text returned (one line), or None."""
    length = weighted_length(text)
    if length > MAX_WEIGHTED_LENGTH:
        return f"tweet is {length} weighted characters, over X's limit of {MAX_WEIGHTED_LENGTH}"
    if not text.isascii() and has_invalid_characters(text):
        return "tweet contains characters X does not allow"
    return None


# Mastodon's StatusLengthValidator (app/validators/status_length_validator.rb, Mastodon 4.x):
# it counts `text.each_grapheme_cluster.size` (user-perceived characters, Unicode's extended
# grapheme clusters, not code points: a family emoji or an accented letter typed as two code points
# is 1; Ruby and the regex module's \X both follow Unicode's UAX #29) of the text in which every
# link found by twitter-text's extractor (only links written with http:// or https://) is replaced
# by 23 characters and every mention @user@domain by @user.
MASTODON_MAX_CHARACTERS = 500  # an instance's configuration.statuses.max_characters unless its admin changed it
MASTODON_URL_LENGTH = 23  # StatusLengthValidator::URL_PLACEHOLDER_CHARS, whatever the instance's limit
# Account::MENTION_RE, where Ruby's [[:word:]] is read as Python's \w (which leaves out combining marks).
MASTODON_MENTION = re.compile(r"(?<![=/\w])@(([a-z0-9_]+(?:[a-z0-9_.-]+[a-z0-9_]+)?)(?:@[\w.-]+\w+)?)", re.IGNORECASE)
# twitter-text's end_mention_match: a match followed by one of these is no mention (its Latin accents
# are twitter_text.regexp.latin_accent_chars, copied: tests/test_tweet_text.py pins the two equal).
MASTODON_LATIN_ACCENTS = (  # a regular expression's class body
    r"\xC0-\xD6\xD8-\xF6\xF8-\xFF\u0100-\u024F\u0253\u0254\u0256\u0257\u0259\u025B\u0263"
    r"\u0268\u026F\u0272\u0289\u028B\u02BB\u0300-\u036F\u1E00-\u1EFF"
)
MASTODON_MENTION_END = re.compile(f"[@\uFF20{MASTODON_LATIN_ACCENTS}]|://")


def mastodon_countable_text(text: str) -> str:
    """`text` as Mastodon measures it: links replaced by 23 characters, @user@domain by @user.

    Overlapping finds keep the earliest, as twitter-text's remove_overlapping_entities does."""
    found: list[tuple[int, int, str]] = []
    if "://" in text:
        found += [
            (*url["indices"], "x" * MASTODON_URL_LENGTH)
            for url in extract_urls_with_indices(text, without_protocol=False)
        ]
    if "@" in text:
        found += [
            (mention.start(), mention.end(), "@" + mention.group(1).split("@")[0])
            for mention in MASTODON_MENTION.finditer(text)
            if not MASTODON_MENTION_END.match(text, mention.end())
        ]
    pieces, position = [], 0
    for start, end, replacement in sorted(found):
        if start >= position:
            pieces += [text[position:start], replacement]
            position = end
    pieces.append(text[position:])
    return "".join(pieces)


def mastodon_length(text: str) -> int:
    """Mastodon's count of a status text (see the comment above MASTODON_MAX_CHARACTERS)."""
    return grapheme_count(mastodon_countable_text(text))


def mastodon_text_problem(text: str, max_characters: int = MASTODON_MAX_CHARACTERS) -> str | None:
    """None when an instance with this `max_characters` accepts `text` as a status, else why not (one line)."""
    if not text.strip():
        return "empty: Mastodon refuses a status without text"
    length = mastodon_length(text)
    if length > max_characters:
        return f"{length} characters, {length - max_characters} over Mastodon's {max_characters}"
    return None


def _longest_combining_run(text: str) -> int:
    longest = run = 0
    for char in text:
        if unicodedata.combining(char):
            run += 1
        else:
            longest, run = max(longest, run), 0
    return max(longest, run)


def control_character(text: str) -> str | None:
    """The first character of `text` no database stores or X shows (see CONTROL_CHARS), or None."""
    match = CONTROL_CHARS.search(text)
    return match.group() if match else None


def content_hash(text: str) -> str:
    """Hash for duplicate detection: case and runs of whitespace do not make a tweet new."""
    key = " ".join(normalize_text(text).split()).casefold()
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass
class ParsedEntry:
    index: int
    text: str


def split_samples(text: str) -> list[str]:
    """Split gpt_2_simple's generate_to_file output (samples separated by a line of 20 `=`)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [part.strip() for part in _DELIMITER_LINE.split(text) if part.strip()]


def join_samples(samples: list[str]) -> str:
    """The inverse of split_samples: the curation file format written by ml/."""
    return "".join(f"{sample}\n{SAMPLE_DELIMITER}\n" for sample in samples)


def _csv_tweets(text: str) -> list[str]:
    """The `tweets` column's non-empty cells. Strict: a stray or unclosed quote is an error
    naming its line, not a cell that silently swallows the lines after it."""
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    record_line = 1
    try:
        header = next(rows, [])
        if "tweets" not in header:
            raise CuratedFileError(
                "CSV file has no 'tweets' column: the first line must be a header naming it"
            )
        column = header.index("tweets")
        tweets = []
        record_line = rows.line_num + 1
        for row in rows:
            cell = row[column].strip() if column < len(row) else ""
            if cell:
                tweets.append(cell)
            record_line = rows.line_num + 1
    except csv.Error as exc:
        raise CuratedFileError(
            f"CSV file cannot be read at line {record_line} ({exc}): quote a cell holding commas, "
            'quotes or line breaks in "..." with inner quotes doubled, and keep each cell one tweet'
        ) from None
    return tweets


def parse_curated_file(data: bytes, filename: str = "") -> list[str]:
    """Decode an uploaded file into raw tweet texts (not yet validated).

    A `.csv` name, or a first line of `tweets`, means a CSV with a `tweets` column;
    anything else is the `=`*20-delimited format.
    """
    if not data.strip():
        raise CuratedFileError("file is empty: upload a file of samples separated by a line of 20 '='")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CuratedFileError(
            f"file is not UTF-8 (bad byte at position {exc.start}): save it as UTF-8 and upload again"
        ) from None
    first_line = text.lstrip().split("\n", 1)[0].strip().strip('"')
    if filename.lower().endswith(".csv") or first_line == "tweets":
        return _csv_tweets(text)
    return split_samples(text)
