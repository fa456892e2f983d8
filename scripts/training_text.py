"""Turn fetched tweets into the training CSV: the one cleaning rule, its report, and safe CSV writing.

Every source (X API, X archive, twint) yields `SourceTweet`s; `clean_tweets` applies the
original project's cleaning to all of them alike, and `write_tweets_csv` writes the one-column
`tweets` CSV that gpt_2_simple's loader reads, through a temporary file renamed at the end.
"""
from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from core.tweet_text import MARKERS, normalize_text
from scripts.tweet_sources import SourceTweet

CSV_HEADER = "tweets"

_LINK = re.compile(r"https?://\S+|\bpic\.(?:twitter|x)\.com/\S+", re.IGNORECASE)
_NON_BREAKING_SPACE = re.compile("[\u00a0\u2007\u202f]")
_ELLIPSIS = "\u2026"
_USERTAG = re.compile(r"(?<![A-Za-z0-9_@])@[A-Za-z0-9_]+")
_HASHTAG = re.compile(r"(?<![\w&#])#\w+")
_SPACE_RUN = re.compile(r"[ \t]+")


class SkipReason(str, Enum):
    """Why a source tweet is left out of the training text (ml.filters.DropReason is about generated candidates)."""

    retweet = "retweet"
    reply = "reply"
    starts_with_mention = "starts with @ (a reply in all but name)"
    contains_marker = "contains <|startoftext|> or <|endoftext|>"
    empty = "empty after cleaning"
    duplicate = "exact duplicate"


@dataclass(frozen=True)
class CleaningOptions:
    include_replies: bool = False
    strip_usertags: bool = False
    strip_hashtags: bool = False


@dataclass
class CleaningReport:
    fetched: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        """One line: fetched, kept, and dropped by reason, e.g. for the end of a download."""
        line = f"fetched {self.fetched}, kept {self.kept}, dropped {sum(self.dropped.values())}"
        if self.dropped:
            reasons = ", ".join(f"{count} {reason.value}" for reason, count in self.dropped.most_common())
            line += f" ({reasons})"
        return line


def clean_text(text: str, options: CleaningOptions) -> str:
    """The original cleaning: drop links, non-breaking spaces and `…`; optionally @usertags and #hashtags.

    Non-breaking spaces become plain spaces (removing them would glue words together), and the
    runs of spaces a removal leaves behind shrink to one.
    """
    text = _LINK.sub("", text)
    text = _NON_BREAKING_SPACE.sub(" ", text).replace(_ELLIPSIS, "")
    if options.strip_usertags:
        text = _USERTAG.sub("", text)
    if options.strip_hashtags:
        text = _HASHTAG.sub("", text)
    text = normalize_text(text)
    return "\n".join(_SPACE_RUN.sub(" ", line).strip() for line in text.split("\n")).strip()


def _skip_reason(tweet: SourceTweet, options: CleaningOptions) -> SkipReason | None:
    if tweet.is_retweet:
        return SkipReason.retweet
    if not options.include_replies:
        if tweet.is_reply:
            return SkipReason.reply
        if normalize_text(tweet.text).startswith("@"):
            return SkipReason.starts_with_mention
    if any(marker in tweet.text for marker in MARKERS):
        return SkipReason.contains_marker
    return None


def clean_tweets(
    tweets: Iterable[SourceTweet], options: CleaningOptions, report: CleaningReport
) -> Iterator[str]:
    """Yield the cleaned text of each tweet worth training on, counting every decision in `report`."""
    seen: set[str] = set()
    for tweet in tweets:
        report.fetched += 1
        reason = _skip_reason(tweet, options)
        text = ""
        if reason is None:
            text = clean_text(tweet.text, options)
            if not text:
                reason = SkipReason.empty
            elif text in seen:
                reason = SkipReason.duplicate
        if reason is not None:
            report.dropped[reason] += 1
            continue
        seen.add(text)
        report.kept += 1
        yield text


def partial_path(output: Path) -> Path:
    """Where an interrupted download keeps what it fetched: `name.partial.csv` beside `output`."""
    stem = output.name[: -len(".csv")] if output.name.lower().endswith(".csv") else output.name
    return output.with_name(f"{stem}.partial.csv")


def write_tweets_csv(path: Path, texts: Iterable[str]) -> int:
    """Write the `tweets` CSV to `path` atomically; return the number of rows.

    Rows go to a temporary file in the same folder, renamed over `path` only once complete,
    so an interrupted write never leaves a truncated CSV.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    rows = 0
    try:
        with temporary.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([CSV_HEADER])
            for text in texts:
                writer.writerow([text])
                rows += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return rows
