"""Candidates per second: ml.sampler against gpt_2_simple.generate_to_file, same checkpoint, same run.

    .venv/bin/python -m bench.bench_generation [--samples 1000] [--baseline-samples 1000]

Both use the original bot's settings (length 200, batch size 10, temperature 1.0, top_p 0.9, prefix
`<|startoftext|>`, truncate `<|endoftext|>`, include_prefix False) on the tiny model fine-tuned on
short tweets (bench/tweet_checkpoint.py; trained on first use, 7-30 min on 2 cores: 5 and 7 rounds
of 200 steps, 7.4 and 9 min, in two trainings on 2026-12-01). Three ways:

- gpt_2_simple: every batch runs all 200 steps (graph built by the call, as in ml.model's original);
- ours, batch by batch: a batch stops when its 10 samples have all ended (early stop only);
- ours, continuous batching: a row that ends takes the next sample at the next block of steps.

Steps are model steps (one token for every row); calls are session calls (gpt_2_simple: one per
batch, its loop in-graph; ours: one per block of up to 16 steps, which stops soon after rows may
have ended).

The machine is shared, so the three run in two passes in opposite orders (half the samples each)
and their times are summed. gpt_2_simple's batches all cost the same 200 steps, so it may be
measured on fewer samples (`--baseline-samples`) and its time extrapolated; both counts are printed.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.tweet_checkpoint import RUN_NAME, ensure_tweet_checkpoint
from core.tweet_text import END_TOKEN, START_TOKEN, split_samples

BATCH_SIZE = 10
SETTINGS = dict(length=200, temperature=1.0, top_p=0.9, prefix=START_TOKEN, truncate=END_TOKEN,
                include_prefix=False)


class Methods:
    """The three ways to generate, each loaded once; `run(name, count, seed)` -> (samples, seconds, steps, calls)."""

    def __init__(self, run_folder: Path, tmp: Path):
        import gpt_2_simple
        import tensorflow as tf

        from ml.sampler import Sampler

        self.run_folder, self.tmp = run_folder, tmp
        self.sampler = Sampler.load(run_folder, batch_size=BATCH_SIZE)
        self.sampler.generate(nsamples=BATCH_SIZE, seed=1, **SETTINGS)  # first run: TensorFlow's graph rewrites
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.session = gpt_2_simple.start_tf_sess()
            gpt_2_simple.load_gpt2(self.session, run_name=RUN_NAME, checkpoint_dir=str(run_folder.parent))
        self.lengths: list[int] = []
        self.ended = 0

    def run(self, name: str, count: int, seed: int) -> tuple[int, float, int, int]:
        started = time.perf_counter()
        if name == "gpt_2_simple":
            import gpt_2_simple

            destination = self.tmp / "gpt_2_simple.txt"
            with self.graph.as_default():
                gpt_2_simple.generate_to_file(
                    self.session, run_name=RUN_NAME, checkpoint_dir=str(self.run_folder.parent),
                    destination_path=str(destination), nsamples=count, batch_size=BATCH_SIZE, seed=seed, **SETTINGS,
                )
            seconds = time.perf_counter() - started
            batches = count // BATCH_SIZE
            return len(split_samples(destination.read_text(encoding="utf-8"))), seconds, batches * 200, batches
        if name == "batchwise":
            samples, steps, calls = [], 0, 0
            for batch in range(count // BATCH_SIZE):
                samples += self.sampler.generate_samples(nsamples=BATCH_SIZE, seed=seed * 1000 + batch, **SETTINGS)
                steps += self.sampler.last_run.steps
                calls += self.sampler.last_run.blocks
            return len(samples), time.perf_counter() - started, steps, calls
        samples = self.sampler.generate_samples(nsamples=count, seed=seed, **SETTINGS)
        seconds = time.perf_counter() - started
        self.lengths += [sample.tokens for sample in samples]
        self.ended += sum(sample.ended for sample in samples)
        return len(samples), seconds, self.sampler.last_run.steps, self.sampler.last_run.blocks

    def close(self) -> None:
        self.sampler.close()
        self.session.close()


LABELS = {"gpt_2_simple": "gpt_2_simple.generate_to_file", "batchwise": "ours, batch by batch",
          "continuous": "ours, continuous batching"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000, help="candidates to generate with ml.sampler")
    parser.add_argument("--baseline-samples", type=int, default=1000,
                        help="candidates to generate with gpt_2_simple (fewer: its time is extrapolated)")
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/tweet_model"))
    args = parser.parse_args()
    unit = 2 * BATCH_SIZE
    if args.samples % unit or args.baseline_samples % unit:
        parser.error(f"--samples and --baseline-samples must be multiples of {unit} (two passes of whole batches)")

    run_folder = ensure_tweet_checkpoint(args.workdir)
    print(f"checkpoint: {run_folder} ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    totals = {name: [0, 0.0, 0, 0] for name in LABELS}
    with tempfile.TemporaryDirectory() as tmp:
        methods = Methods(run_folder, Path(tmp))
        try:
            # Two passes in opposite orders, so a burst of load elsewhere on the machine hits all alike.
            for seed, order in enumerate((list(LABELS), list(reversed(LABELS)))):
                for name in order:
                    count = (args.baseline_samples if name == "gpt_2_simple" else args.samples) // 2
                    result = methods.run(name, count, seed)
                    totals[name] = [total + part for total, part in zip(totals[name], result)]
            base_ops, our_ops = len(methods.graph.get_operations()), methods.sampler.operation_count
        finally:
            methods.close()

    lengths = methods.lengths
    print(f"samples: average {sum(lengths) / len(lengths):.1f} tokens generated (end marker included), "
          f"{methods.ended / len(lengths):.0%} ended within 200 tokens, "
          f"{sum(t <= 60 for t in lengths) / len(lengths):.0%} within 60")
    base_count, base_seconds, _, _ = totals["gpt_2_simple"]
    base_rate = base_count / base_seconds
    print(f"{'':32}{'samples':>8}{'seconds':>9}{'steps':>8}{'calls':>7}{'samples/s':>11}{'vs gpt_2_simple':>17}")
    for name, label in LABELS.items():
        count, seconds, steps, calls = totals[name]
        rate = count / seconds
        print(f"{label:32}{count:>8}{seconds:>9.1f}{steps:>8}{calls:>7}{rate:>11.2f}{rate / base_rate:>16.1f}x")
    print(f"gpt_2_simple measured on {base_count} samples; for {args.samples}: {args.samples / base_rate:.0f} s. "
          f"Its graph holds {base_ops} operations after 2 calls (each call adds its sampling graph); ours: "
          f"{our_ops}, built once.")


if __name__ == "__main__":
    main()
