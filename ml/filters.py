"""Candidate filters: which generated samples reach the curator, and why the others were dropped.

Checks run in this order and a candidate is counted under the first reason that applies:

- `empty`: nothing left after normalising;
- `unfinished`: still holds `<|startoftext|>` or `<|endoftext|>`, or the generator says it ran to
  `length` without reaching the end marker;
- `tweet_rule`: fails the API's tweet rule (`core.tweet_text.validate_tweet`: weighted length over
  280, characters X refuses...), the same code the store runs on upload;
- `url`: holds a link as X counts links (twitter-text), when URLs are dropped (the default): GPT-2
  invents links, and X charges far more for posts with URLs;
- `duplicate`: same `content_hash` (case and whitespace runs ignored) as a kept candidate;
- `training_copy`: copies the training data. The measure: the candidate has the same `content_hash`
  as a training tweet, or shares a run of `COPY_MIN_WORDS` (8) consecutive words with one, words
  being `\\w+` runs of the case-folded normalised text (so punctuation and case do not hide a copy).
  Eight words is long enough that common phrases ("thank you so much for all the") rarely reach it,
  and short enough to catch a memorised tweet with a changed ending or a spliced pair.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from enum import Enum

from twitter_text import extract_urls_with_indices

from core.tweet_text import MARKERS, TweetRejected, content_hash, normalize_text, validate_tweet

COPY_MIN_WORDS = 8
_WORD = re.compile(r"\w+")


class DropReason(str, Enum):
    empty = "empty"
    unfinished = "unfinished (no end marker within length)"
    tweet_rule = "breaks the tweet rule"
    url = "contains a URL"
    duplicate = "repeats another candidate"
    training_copy = "copies a training tweet"


def _words(text: str) -> list[str]:
    return _WORD.findall(normalize_text(text).casefold())


def _word_runs(words: list[str], size: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


class TrainingCopyIndex:
    """The training tweets, indexed to tell whether a candidate copies one (see the module docstring)."""

    def __init__(self, training_tweets: Iterable[str], *, min_words: int = COPY_MIN_WORDS):
        self.min_words = min_words
        self._hashes: set[str] = set()
        self._runs: set[tuple[str, ...]] = set()
        for tweet in training_tweets:
            self._hashes.add(content_hash(tweet))
            self._runs |= _word_runs(_words(tweet), min_words)

    def copies(self, text: str) -> bool:
        if content_hash(text) in self._hashes:
            return True
        return not self._runs.isdisjoint(_word_runs(_words(text), self.min_words))


def has_url(text: str) -> bool:
    return bool(extract_urls_with_indices(text))


class CandidateFilter:
    """Offer candidates one by one; keeps the good ones (normalised) and counts the rest by reason."""

    def __init__(self, copy_index: TrainingCopyIndex, *, drop_urls: bool = True):
        self.copy_index = copy_index
        self.drop_urls = drop_urls
        self.kept: list[str] = []
        self.dropped: Counter[DropReason] = Counter()
        self._kept_hashes: set[str] = set()

    @property
    def offered(self) -> int:
        return len(self.kept) + sum(self.dropped.values())

    def reason_to_drop(self, text: str, *, unfinished: bool = False) -> DropReason | None:
        """Why `text` should be dropped, or None to keep it. Does not record anything."""
        if not normalize_text(text):
            return DropReason.empty
        if unfinished or any(marker in text for marker in MARKERS):
            return DropReason.unfinished
        try:
            text = validate_tweet(text)
        except TweetRejected:
            return DropReason.tweet_rule
        if self.drop_urls and has_url(text):
            return DropReason.url
        if content_hash(text) in self._kept_hashes:
            return DropReason.duplicate
        if self.copy_index.copies(text):
            return DropReason.training_copy
        return None

    def offer(self, text: str, *, unfinished: bool = False) -> DropReason | None:
        """Keep `text` or count why not; returns the reason it was dropped, None if kept."""
        reason = self.reason_to_drop(text, unfinished=unfinished)
        if reason is None:
            normalised = validate_tweet(text)
            self.kept.append(normalised)
            self._kept_hashes.add(content_hash(normalised))
        else:
            self.dropped[reason] += 1
        return reason
