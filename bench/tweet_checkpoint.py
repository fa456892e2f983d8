"""A tiny GPT-2 fine-tuned on short synthetic tweets until its samples end, for the generation benchmarks.

    .venv/bin/python -m bench.tweet_checkpoint [--workdir bench/out/tweet_model]

The tiny model (`ml.tiny`, byte-level vocabulary) is fine-tuned with `gpt_2_simple.finetune` on
short made-up tweets in gpt_2_simple's CSV format, in rounds, until most samples (top_p 0.9, prefix
`<|startoftext|>`) end with `<|endoftext|>` within 60 tokens. The finished run is reused.
"""
from __future__ import annotations

import argparse
import csv
import random
import time
from pathlib import Path

from core.tweet_text import END_TOKEN, START_TOKEN

RUN_NAME = "tweets"
READY_FILE = "READY"
END_WITHIN_TOKENS = 60
WANTED_ENDED_SHARE = 0.8

SUBJECTS = ["coffee", "the cat", "my code", "this bug", "monday", "the rain", "pizza", "the train",
            "my plant", "the build", "tea", "the dog", "my inbox", "sleep", "the bus", "a nap"]
VERBS = ["is", "was", "looks", "feels", "got", "seems"]
ADJECTIVES = ["great", "broken", "perfect", "weird", "late", "amazing", "slow", "loud", "fine", "cold"]
ENDINGS = ["", " today", " again", " lol", "!", " #mood", " ugh", " :)"]


def make_short_tweets(count: int, seed: int = 0) -> list[str]:
    """`count` made-up tweets of 10-40 characters, the same for the same seed."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ADJECTIVES)}{rng.choice(ENDINGS)}"
        for _ in range(count)
    ]


def write_tweets_csv(path: Path, tweets: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["tweets"])
        writer.writerows([tweet] for tweet in tweets)


def finetune_round(workdir: Path, dataset: Path, steps: int) -> None:
    """`steps` more steps of gpt_2_simple.finetune on the run, in a graph of its own."""
    import gpt_2_simple
    import tensorflow as tf

    with tf.Graph().as_default():
        sess = gpt_2_simple.start_tf_sess()
        gpt_2_simple.finetune(
            sess, dataset=str(dataset), steps=steps, model_name="tiny", model_dir=str(workdir / "models"),
            checkpoint_dir=str(workdir / "checkpoint"), run_name=RUN_NAME, batch_size=4,
            learning_rate=1e-3, accumulate_gradients=1, sample_every=10**9, save_every=10**9,
            print_every=max(1, steps // 4),
        )
        sess.close()


def sample_lengths(run_folder: Path, nsamples: int = 50) -> list[int | None]:
    """Tokens each sample took to reach the end marker (None: it did not end within 200)."""
    from ml.sampler import Sampler

    with Sampler.load(run_folder, batch_size=10) as sampler:
        texts = sampler.generate(nsamples=nsamples, length=200, top_p=0.9, prefix=START_TOKEN,
                                 include_prefix=False, seed=0)
        lengths = []
        for text in texts:
            end = text.find(END_TOKEN)
            lengths.append(None if end < 0 else len(sampler.encoder.encode(text[: end + len(END_TOKEN)])))
        return lengths


def ensure_tweet_checkpoint(workdir: Path, *, steps_per_round: int = 200, max_rounds: int = 10) -> Path:
    """The run folder of the tiny model fine-tuned until most samples end within 60 tokens."""
    from ml.tiny import ensure_tiny_model

    run_folder = workdir / "checkpoint" / RUN_NAME
    if (run_folder / READY_FILE).is_file():
        return run_folder
    workdir.mkdir(parents=True, exist_ok=True)
    ensure_tiny_model(workdir / "models")
    dataset = workdir / "short_tweets.csv"
    write_tweets_csv(dataset, make_short_tweets(3000))
    for round_number in range(1, max_rounds + 1):
        started = time.perf_counter()
        finetune_round(workdir, dataset, steps_per_round)
        lengths = sample_lengths(run_folder)
        ended = [n for n in lengths if n is not None and n <= END_WITHIN_TOKENS]
        share = len(ended) / len(lengths)
        print(f"round {round_number}: {steps_per_round} steps in {time.perf_counter() - started:.0f} s, "
              f"{share:.0%} of samples end within {END_WITHIN_TOKENS} tokens")
        if share >= WANTED_ENDED_SHARE:
            (run_folder / READY_FILE).write_text(f"{share:.2f}\n", encoding="utf-8")
            return run_folder
    raise RuntimeError(f"samples still do not end after {max_rounds} rounds: see {run_folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/tweet_model"))
    args = parser.parse_args()
    print(ensure_tweet_checkpoint(args.workdir))


if __name__ == "__main__":
    main()
