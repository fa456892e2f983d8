"""Candidates per second: ml.sampler against gpt_2_simple.generate_to_file, same checkpoint, same run.

    .venv/bin/python -m bench.bench_generation [--samples 1000] [--baseline-samples 100]

Both use the original bot's settings (length 200, batch size 10, temperature 1.0, top_p 0.9, prefix
`<|startoftext|>`, truncate `<|endoftext|>`, include_prefix False) on the tiny model fine-tuned on
short tweets (bench/tweet_checkpoint.py; trained on first use, ~15-30 min on 2 cores). Three ways:

- gpt_2_simple: every batch runs all 200 steps (graph built by the call, as in ml.model's original);
- ours, batch by batch: a batch stops when its 10 samples have all ended (early stop only);
- ours, continuous batching: a row that ends takes the next sample at once.

gpt_2_simple's batches all cost the same 200 steps, so it may be measured on fewer samples
(`--baseline-samples`) and its time for `--samples` extrapolated; both counts are printed.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from api.tweet_text import END_TOKEN, START_TOKEN, split_samples
from bench.tweet_checkpoint import RUN_NAME, ensure_tweet_checkpoint

BATCH_SIZE = 10
SETTINGS = dict(length=200, temperature=1.0, top_p=0.9, prefix=START_TOKEN, truncate=END_TOKEN,
                include_prefix=False)


def measure_ours(run_folder: Path, samples: int) -> dict:
    from ml.sampler import Sampler

    with Sampler.load(run_folder, batch_size=BATCH_SIZE) as sampler:
        sampler.generate(nsamples=BATCH_SIZE, seed=1, **SETTINGS)  # first run: TensorFlow's graph rewrites
        ops = sampler.operation_count

        started = time.perf_counter()
        batchwise, steps = [], 0
        for batch in range(samples // BATCH_SIZE):
            batchwise += sampler.generate_samples(nsamples=BATCH_SIZE, seed=batch, **SETTINGS)
            steps += sampler.last_run.steps
        batchwise_seconds = time.perf_counter() - started

        started = time.perf_counter()
        continuous = sampler.generate_samples(nsamples=samples, seed=0, **SETTINGS)
        continuous_seconds = time.perf_counter() - started
        continuous_steps = sampler.last_run.steps
        assert sampler.operation_count == ops
    return {
        "batchwise": (len(batchwise), batchwise_seconds, steps),
        "continuous": (len(continuous), continuous_seconds, continuous_steps),
        "tokens": [s.tokens for s in continuous],
        "ended": sum(s.ended for s in continuous),
    }


def measure_gpt_2_simple(run_folder: Path, samples: int) -> tuple[int, float, int]:
    """(samples written, seconds, graph operations added by the call)."""
    import gpt_2_simple
    import tensorflow as tf

    with tf.Graph().as_default():
        sess = gpt_2_simple.start_tf_sess()
        gpt_2_simple.load_gpt2(sess, run_name=RUN_NAME, checkpoint_dir=str(run_folder.parent))
        ops = len(sess.graph.get_operations())
        with tempfile.TemporaryDirectory() as tmp:
            destination = Path(tmp) / "gpt_2_simple.txt"
            started = time.perf_counter()
            gpt_2_simple.generate_to_file(
                sess, run_name=RUN_NAME, checkpoint_dir=str(run_folder.parent), destination_path=str(destination),
                nsamples=samples, batch_size=BATCH_SIZE, **SETTINGS,
            )
            seconds = time.perf_counter() - started
            written = len(split_samples(destination.read_text(encoding="utf-8")))
        added = len(sess.graph.get_operations()) - ops
        sess.close()
    return written, seconds, added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000, help="candidates to generate with ml.sampler")
    parser.add_argument("--baseline-samples", type=int, default=1000,
                        help="candidates to generate with gpt_2_simple (a multiple of 10; fewer: time extrapolated)")
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/tweet_model"))
    args = parser.parse_args()
    if args.samples % BATCH_SIZE or args.baseline_samples % BATCH_SIZE:
        parser.error(f"--samples and --baseline-samples must be multiples of {BATCH_SIZE}")

    run_folder = ensure_tweet_checkpoint(args.workdir)
    print(f"checkpoint: {run_folder} ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    ours = measure_ours(run_folder, args.samples)
    base_count, base_seconds, base_ops = measure_gpt_2_simple(run_folder, args.baseline_samples)
    base_rate = base_count / base_seconds

    tokens = ours["tokens"]
    print(f"samples: average {sum(tokens) / len(tokens):.1f} tokens generated (end marker included), "
          f"{ours['ended'] / len(tokens):.0%} ended within 200 tokens, "
          f"{sum(t <= 60 for t in tokens) / len(tokens):.0%} within 60")
    print(f"{'':32}{'samples':>8}{'seconds':>9}{'steps':>8}{'samples/s':>11}{'vs gpt_2_simple':>17}")
    print(f"{'gpt_2_simple.generate_to_file':32}{base_count:>8}{base_seconds:>9.1f}"
          f"{base_count // BATCH_SIZE * 200:>8}{base_rate:>11.2f}{'1.0x':>17}")
    for name, label in (("batchwise", "ours, batch by batch"), ("continuous", "ours, continuous batching")):
        count, seconds, steps = ours[name]
        rate = count / seconds
        print(f"{label:32}{count:>8}{seconds:>9.1f}{steps:>8}{rate:>11.2f}{rate / base_rate:>16.1f}x")
    print(f"gpt_2_simple for {args.samples} samples, extrapolated from {base_count}: "
          f"{args.samples / base_rate:.0f} s; its generate_to_file call added {base_ops} graph operations "
          f"(ours: none)")


if __name__ == "__main__":
    main()
