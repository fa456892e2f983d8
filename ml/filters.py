"""Candidate filters: which generated samples reach the curator, and why the others were dropped.

Checks run in this order and a candidate is counted under the first reason that applies:

- `empty`: nothing left after normalising;
- `invalid_utf8`: holds U+FFFD, the replacement character the sampler writes for bytes the model
  produced that are not valid UTF-8: the tweet would carry a visible "�";
- `unfinished`: still holds `<|startoftext|>` or `<|endoftext|>`, or the generator says it ran to
  `length` without reaching the end marker;
- `tweet_rule`: fails the API's tweet rule (`core.tweet_text.validate_tweet`: weighted length over
  280, characters X refuses...), the same code the store runs on upload;
- `url`: holds a link as X counts links (twitter-text), when URLs are dropped (the default): GPT-2
  invents links, and X charges far more for posts with URLs;
- `duplicate`: same `content_hash` (case and whitespace runs ignored) as a kept candidate;
- `training_copy`: copies a training tweet, in one of three ways (`CopyKind`), each reported with
  the training tweet it matches (`TrainingCopyIndex.match`).

Words are `\\w+` runs of the case-folded normalised text, so punctuation and case hide no copy.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import SequenceMatcher
from enum import Enum

from twitter_text import extract_urls_with_indices

from core.tweet_text import MARKERS, TweetRejected, content_hash, normalize_text, validate_tweet

# markovify's defaults (Text.test_sentence_output): a sentence is rejected when it shares with the
# corpus a run of more than min(15, round(0.7 * its words)) words. Our thresholds may be stricter, never laxer.
MARKOVIFY_MAX_OVERLAP_TOTAL = 15
MARKOVIFY_MAX_OVERLAP_RATIO = 0.7
# Eight words is long enough that common phrases ("thank you so much for all the") rarely reach it,
# and short enough to catch a memorised tweet with a changed ending or a spliced pair.
COPY_MAX_SHARED_WORDS = 8
COPY_MAX_SHARED_RATIO = MARKOVIFY_MAX_OVERLAP_RATIO
# One word changed in a tweet of six words or more keeps about half of its 5-character shingles.
NEAR_DUPLICATE_JACCARD = 0.5
SHINGLE_CHARS = 5
# Up to this many training tweets the Jaccard of every pair sharing a shingle is computed: exact,
# and the leanest in memory, but a candidate's cost grows with the training set (about a second
# per 1,000 candidates here). Above it, MinHash LSH keeps a candidate's cost flat, whatever the
# size, for a build once per run and more memory; the exact Jaccard of the few it finds decides.
EXACT_JACCARD_MAX_TWEETS = 10_000
MINHASH_PERMUTATIONS = 128
# LSH looks a little below the threshold, so that fewer pairs near it are missed (LSH is
# probabilistic: see the README for how often); the exact Jaccard of what it finds decides.
MINHASH_LSH_MARGIN = 0.1
REPLACEMENT_CHARACTER = "\ufffd"

_WORD = re.compile(r"\w+")


class DropReason(str, Enum):
    empty = "empty"
    invalid_utf8 = "holds U+FFFD (bytes that were not UTF-8)"
    unfinished = "unfinished (no end marker within length)"
    tweet_rule = "breaks the tweet rule"
    url = "contains a URL"
    duplicate = "repeats another candidate"
    training_copy = "copies a training tweet"


class CopyKind(str, Enum):
    exact = "exact"                    # same content_hash as a training tweet
    shared_run = "shared run"          # a run of words too long (see `CopyThresholds`) shared with one
    near_duplicate = "near-duplicate"  # character-shingle Jaccard with one at or above the threshold


@dataclass(frozen=True)
class CopyThresholds:
    """When a candidate copies a training tweet; the defaults are stricter than markovify's.

    A shared run of `max_shared_words` words is a copy, and so is a shared run of more than
    `max_shared_ratio` of the candidate's words (markovify's rule, for short candidates); a
    Jaccard of `near_duplicate_jaccard` or more between character shingles is a near-duplicate.
    """

    max_shared_words: int = COPY_MAX_SHARED_WORDS
    max_shared_ratio: float = COPY_MAX_SHARED_RATIO
    near_duplicate_jaccard: float = NEAR_DUPLICATE_JACCARD

    def run_that_copies(self, word_count: int) -> int:
        """The shortest shared run that makes a candidate of `word_count` words a copy."""
        # The small tolerance keeps 0.7 * 10 (7.000000000000001 in floats) at 7.
        return min(self.max_shared_words, math.floor(self.max_shared_ratio * word_count + 1e-9) + 1)


@dataclass(frozen=True)
class CopyMatch:
    """How a candidate copies `training_tweet`: its kind, the longest run of words they share, their Jaccard."""

    kind: CopyKind
    training_tweet: str
    shared_words: int
    jaccard: float


def _words(text: str) -> list[str]:
    return _WORD.findall(normalize_text(text).casefold())


def _shingles(words: list[str]) -> set[str]:
    text = " ".join(words)
    return {text[i : i + SHINGLE_CHARS] for i in range(max(1, len(text) - SHINGLE_CHARS + 1))} if text else set()


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _longest_shared_run(a: list[str], b: list[str]) -> int:
    return SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size


def _hash32(shingle: str) -> int:
    """MinHash's hash: Python's own string hash is stable within the process that builds and queries the index."""
    return hash(shingle) & 0xFFFFFFFF


class _ExactShingleIndex:
    """Every training tweet sharing a shingle with the candidate, with its exact Jaccard."""

    def __init__(self, shingle_sets: Iterable[set[str]]):
        self._sizes: list[int] = []
        self._postings: dict[str, list[int]] = {}
        for index, shingles in enumerate(shingle_sets):
            self._sizes.append(len(shingles))
            for shingle in shingles:
                self._postings.setdefault(shingle, []).append(index)

    def best(self, shingles: set[str], threshold: float, shingles_of) -> tuple[int, float] | None:
        shared = Counter()
        for shingle in shingles:
            shared.update(self._postings.get(shingle, ()))
        scores = ((index, count / (len(shingles) + self._sizes[index] - count)) for index, count in shared.items())
        best = max(scores, key=lambda pair: pair[1], default=None)
        return best if best is not None and best[1] >= threshold else None


class _MinHashShingleIndex:
    """MinHash LSH (datasketch) finds the training tweets likely to be near; their exact Jaccard decides."""

    def __init__(self, shingle_sets: Iterable[set[str]], threshold: float):
        from datasketch import MinHash, MinHashLSH  # here: only large training sets pay for importing it (and scipy)

        self._minhash = MinHash
        self._lsh = MinHashLSH(threshold=max(0.05, threshold - MINHASH_LSH_MARGIN), num_perm=MINHASH_PERMUTATIONS)
        signatures = MinHash.generator(shingle_sets, num_perm=MINHASH_PERMUTATIONS, hashfunc=_hash32)
        with self._lsh.insertion_session() as session:
            for index, signature in enumerate(signatures):
                session.insert(index, signature, check_duplication=False)

    def best(self, shingles: set[str], threshold: float, shingles_of) -> tuple[int, float] | None:
        signature = self._minhash(num_perm=MINHASH_PERMUTATIONS, hashfunc=_hash32)
        signature.update_batch(shingles)
        scores = ((index, _jaccard(shingles, shingles_of(index))) for index in self._lsh.query(signature))
        best = max(scores, key=lambda pair: pair[1], default=None)
        return best if best is not None and best[1] >= threshold else None


class TrainingCopyIndex:
    """The training tweets, indexed to tell whether a candidate copies one, and which.

    Runs of `max_shared_words` words are found by hash; shorter runs (for short candidates) by
    scanning the tweets that hold the run's rarest word.
    """

    def __init__(self, training_tweets: Iterable[str], thresholds: CopyThresholds = CopyThresholds()):
        self.thresholds = thresholds
        self._tweets: list[str] = list(training_tweets)
        self._spaced_words: list[str] = []  # " w1 w2 ... wn ": a run is in a tweet when " run " is in this
        self._by_hash: dict[str, int] = {}
        self._long_runs: dict[int, int] = {}  # hash of a run of max_shared_words words -> a tweet holding it
        self._postings: dict[str, list[int]] = {}  # word -> the tweets holding it
        size = thresholds.max_shared_words
        for index, tweet in enumerate(self._tweets):
            words = _words(tweet)
            self._spaced_words.append(f" {' '.join(words)} ")
            self._by_hash.setdefault(content_hash(tweet), index)
            for start in range(len(words) - size + 1):
                self._long_runs.setdefault(hash(tuple(words[start : start + size])), index)
            for word in set(words):
                self._postings.setdefault(word, []).append(index)
        # One tweet's shingles at a time: all of them at once would outweigh the index.
        shingle_sets = (_shingles(self._tweet_words(index)) for index in range(len(self._tweets)))
        if len(self._tweets) <= EXACT_JACCARD_MAX_TWEETS:
            self._near = _ExactShingleIndex(shingle_sets)
        else:
            self._near = _MinHashShingleIndex(shingle_sets, thresholds.near_duplicate_jaccard)

    def __len__(self) -> int:
        return len(self._tweets)

    def _tweet_words(self, index: int) -> list[str]:
        return self._spaced_words[index].split()

    def _tweet_holding(self, run: tuple[str, ...]) -> int | None:
        needle = f" {' '.join(run)} "
        if len(run) == self.thresholds.max_shared_words:
            index = self._long_runs.get(hash(run))
            if index is None:
                return None
            if needle in self._spaced_words[index]:
                return index
            # a hash collision: fall through to the scan, which is exact
        rarest = min(run, key=lambda word: len(self._postings.get(word, ())))
        return next((index for index in self._postings.get(rarest, ()) if needle in self._spaced_words[index]), None)

    def _match(self, kind: CopyKind, words: list[str], index: int) -> CopyMatch:
        tweet_words = self._tweet_words(index)
        return CopyMatch(kind, self._tweets[index], _longest_shared_run(words, tweet_words),
                         round(_jaccard(_shingles(words), _shingles(tweet_words)), 3))

    def match(self, text: str) -> CopyMatch | None:
        """How `text` copies a training tweet (the first kind that applies), or None when it does not."""
        words = _words(text)
        exact = self._by_hash.get(content_hash(text))
        if exact is not None:
            return self._match(CopyKind.exact, words, exact)
        if words:
            size = self.thresholds.run_that_copies(len(words))
            holding = {self._tweet_holding(tuple(words[i : i + size])) for i in range(len(words) - size + 1)} - {None}
            if holding:
                return max((self._match(CopyKind.shared_run, words, index) for index in holding),
                           key=lambda match: match.shared_words)
        shingles = _shingles(words)
        near = self._near.best(shingles, self.thresholds.near_duplicate_jaccard,
                               lambda index: _shingles(self._tweet_words(index))) if shingles else None
        if near is not None:
            return self._match(CopyKind.near_duplicate, words, near[0])
        return None


def has_url(text: str) -> bool:
    return bool(extract_urls_with_indices(text))


@dataclass(frozen=True)
class CopyFound:
    candidate: str
    match: CopyMatch


class CandidateFilter:
    """Offer candidates one by one; keeps the good ones (normalised), counts the rest by reason, lists the copies."""

    def __init__(self, copy_index: TrainingCopyIndex, *, drop_urls: bool = True):
        self.copy_index = copy_index
        self.drop_urls = drop_urls
        self.kept: list[str] = []
        self.dropped: Counter[DropReason] = Counter()
        self.copies: list[CopyFound] = []
        self._kept_hashes: set[str] = set()

    @property
    def offered(self) -> int:
        return len(self.kept) + sum(self.dropped.values())

    def _check(self, text: str, unfinished: bool) -> tuple[DropReason | None, CopyMatch | None]:
        if not normalize_text(text):
            return DropReason.empty, None
        if REPLACEMENT_CHARACTER in text:
            return DropReason.invalid_utf8, None
        if unfinished or any(marker in text for marker in MARKERS):
            return DropReason.unfinished, None
        try:
            text = validate_tweet(text)
        except TweetRejected:
            return DropReason.tweet_rule, None
        if self.drop_urls and has_url(text):
            return DropReason.url, None
        if content_hash(text) in self._kept_hashes:
            return DropReason.duplicate, None
        copy = self.copy_index.match(text)
        if copy is not None:
            return DropReason.training_copy, copy
        return None, None

    def reason_to_drop(self, text: str, *, unfinished: bool = False) -> DropReason | None:
        """Why `text` should be dropped, or None to keep it. Does not record anything."""
        return self._check(text, unfinished)[0]

    def offer(self, text: str, *, unfinished: bool = False) -> DropReason | None:
        """Keep `text` or count why not (listing a copy with its match); returns the reason, None if kept."""
        reason, copy = self._check(text, unfinished)
        if reason is None:
            normalised = validate_tweet(text)
            self.kept.append(normalised)
            self._kept_hashes.add(content_hash(normalised))
        else:
            self.dropped[reason] += 1
            if copy is not None:
                self.copies.append(CopyFound(normalize_text(text), copy))
        return reason
