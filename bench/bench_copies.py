"""The copy filter's cost: the same candidates filtered with and without it, against N training tweets.

    .venv/bin/python -m bench.bench_copies [--training 30000] [--candidates 1000]

Made-up tweets (a Zipf-like vocabulary of 5,000 made-up words, 5-30 words each) stand in for the
training set. The candidates are what a run trained to memorise writes: a third new text, the rest
planted copies in equal shares: exact copies (case changed), a training tweet with its ending
changed (a long shared run), a training tweet of 9-14 words with its middle word changed (a
near-duplicate: no run of 8 words or of 70% is left), and short
candidates most of whose words are a training run (markovify's ratio).

Printed: the seconds to index the training tweets and to filter the candidates, with the copy
filter and without it (an index that finds nothing; every other check the same), the peak memory
the index adds (tracemalloc), and what each filter caught of the planted copies: ours, and the
plain filter before (content hash or a run of 8 words, no ratio, no shingles). Then the other way
of finding near-duplicates at the same size (MinHash LSH below EXACT_JACCARD_MAX_TWEETS, exact
Jaccard above): its time, its memory and whether it finds the same copies.
"""
from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc
from collections import Counter
from unittest import mock

from ml.filters import EXACT_JACCARD_MAX_TWEETS, CandidateFilter, CopyKind, CopyThresholds, TrainingCopyIndex

VOCABULARY_SIZE = 5000
PLANTED = ("exact", "ending changed", "one word changed", "short, mostly a run")


def made_up_vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(VOCABULARY_SIZE)]
    return words, [1 / (rank + 1) for rank in range(VOCABULARY_SIZE)]


def made_up_tweets(rng: random.Random, count: int, vocabulary, low: int = 5, high: int = 30) -> list[str]:
    words, weights = vocabulary
    return [" ".join(rng.choices(words, weights, k=rng.randint(low, high))) for _ in range(count)]


def planted_candidates(rng: random.Random, training: list[str], count: int, vocabulary) -> list[tuple[str, str]]:
    """(candidate, what was planted): a third new, the rest copies of the four kinds in equal shares."""
    new = [(text, "new") for text in made_up_tweets(rng, count - 2 * count // 3, vocabulary)]
    planted = []
    long_enough = [tweet for tweet in training if len(tweet.split()) >= 12]
    # 9-14 words with the middle one changed: no run of 8 is left, nor one of 70%.
    middling = [tweet for tweet in training if 9 <= len(tweet.split()) <= 14]
    for index in range(2 * count // 3):
        kind = PLANTED[index % len(PLANTED)]
        words = rng.choice(middling if kind == "one word changed" else long_enough).split()
        if kind == "exact":
            text = " ".join(words).upper()
        elif kind == "ending changed":
            text = " ".join(words[: len(words) // 2 + 5] + made_up_tweets(rng, 1, vocabulary, 3, 6)[0].split())
        elif kind == "one word changed":
            words[len(words) // 2] = "zzzq"
            text = " ".join(words)
        else:
            start = rng.randrange(len(words) - 5)
            text = " ".join(words[start : start + 5] + ["zzzq"])  # 5 of 6 words a training run
        planted.append((text, kind))
    candidates = new + planted
    rng.shuffle(candidates)
    return candidates


class NoCopyIndex:
    """The run without the copy check: an index that finds nothing."""

    def match(self, text: str) -> None:
        return None


def filter_all(index, candidates: list[tuple[str, str]]) -> tuple[float, float, CandidateFilter]:
    """(wall seconds, CPU seconds, the filter) for offering every candidate."""
    candidate_filter = CandidateFilter(index)
    started, cpu = time.perf_counter(), time.process_time()
    for text, _ in candidates:
        candidate_filter.offer(text)
    return time.perf_counter() - started, time.process_time() - cpu, candidate_filter


def timed_index(training: list[str], thresholds: CopyThresholds = CopyThresholds()) -> tuple[float, float, TrainingCopyIndex]:
    """(wall seconds, CPU seconds, the index): the machine may be shared, so both are given."""
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    index = TrainingCopyIndex(training, thresholds)
    return time.perf_counter() - started, time.process_time() - cpu, index


def index_memory(training: list[str]) -> tuple[int, int]:
    """(bytes the index holds once built, bytes at the peak of building it), by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    index = TrainingCopyIndex(training)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del index
    return held, peak


def caught(candidate_filter: CandidateFilter, candidates: list[tuple[str, str]]) -> Counter:
    planted = dict(candidates)
    return Counter(planted[found.candidate] for found in candidate_filter.copies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--training", type=int, default=30000, help="training tweets")
    parser.add_argument("--candidates", type=int, default=1000, help="candidates offered")
    args = parser.parse_args()
    rng = random.Random(19)
    vocabulary = made_up_vocabulary(rng)
    training = made_up_tweets(rng, args.training, vocabulary)
    candidates = planted_candidates(rng, training, args.candidates, vocabulary)
    planted = Counter(kind for _, kind in candidates)
    print(f"{args.training:,} training tweets, {args.candidates:,} candidates "
          f"({', '.join(f'{planted[kind]} {kind}' for kind in ('new', *PLANTED))})")

    without = filter_all(NoCopyIndex(), candidates)
    index_time = timed_index(training)
    with_time = filter_all(index_time[2], candidates)
    with_filter = with_time[2]
    # The filter before: a run of 8 words or the same hash (a ratio of 1 and a Jaccard above 1 never apply).
    plain_filter = filter_all(timed_index(training, CopyThresholds(max_shared_ratio=1.0, near_duplicate_jaccard=1.01))[2],
                              candidates)[2]
    mode = "exact Jaccard" if len(training) <= EXACT_JACCARD_MAX_TWEETS else "MinHash LSH"
    print(f"filtering without the copy check: {without[0]:.2f} s ({without[1]:.2f} s CPU)")
    print(f"with it ({mode}): index {index_time[0]:.2f} s ({index_time[1]:.2f} s CPU) + filtering "
          f"{with_time[0]:.2f} s ({with_time[1]:.2f} s CPU): "
          f"{index_time[0] + with_time[0] - without[0]:.2f} s added ({index_time[1] + with_time[1] - without[1]:.2f} s CPU)")
    held, peak = index_memory(training)
    print(f"memory the copy index adds: {held / 2**20:.0f} MB held, {peak / 2**20:.0f} MB at the peak of building it")
    ours, plain = caught(with_filter, candidates), caught(plain_filter, candidates)
    kinds = Counter(found.match.kind for found in with_filter.copies)
    print("caught of the planted copies, ours | the plain filter (hash or 8-word run):")
    for kind in (*PLANTED, "new"):
        print(f"  {kind:<22} {ours[kind]:>5} | {plain[kind]:>5}  of {planted[kind]}")
    print("ours by kind: " + ", ".join(f"{kind.value} {kinds[kind]}" for kind in CopyKind))
    # The other way of finding near-duplicates, at the same size: what the switch trades.
    exact_chosen = len(training) <= EXACT_JACCARD_MAX_TWEETS
    other = "MinHash LSH" if exact_chosen else "exact Jaccard"
    with mock.patch("ml.filters.EXACT_JACCARD_MAX_TWEETS", 0 if exact_chosen else len(training)):
        other_index = timed_index(training)
        other_held, _ = index_memory(training)
    other_time = filter_all(other_index[2], candidates)
    found = {found.candidate: found.match.training_tweet for found in with_filter.copies}
    other_found = {found.candidate: found.match.training_tweet for found in other_time[2].copies}
    same = sum(other_found.get(text) == tweet for text, tweet in found.items())
    print(f"{other} instead: index {other_index[1]:.2f} s CPU + filtering {other_time[1]:.2f} s CPU, "
          f"{other_held / 2**20:.0f} MB held; it finds {same} of these {len(found)} copies with the same training tweet "
          f"({len(other_found)} in all)")

if __name__ == "__main__":
    main()
