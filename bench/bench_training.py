"""Training on the tiny model and the sample tweets: throughput against gpt_2_simple.finetune, what the
held-out evaluation costs, and a run that over-fits and stops by itself.

    .venv/bin/python -m bench.bench_training [--steps 100] [--rounds 3] [--skip-overfit]

Each measurement runs in its own Python process (`--one NAME`), so its peak memory (ru_maxrss) is its own:

- gpt_2_simple: `gpt_2_simple.finetune` on ml/sample_data/tweets_sample.csv;
- ours: ml.training.finetune on the same tokens, no held-out set (--val_fraction 0);
- ours + held-out: 5% of the tweets held out and evaluated every 10 steps, early stopping on
  (--patience 5: each improvement also saves the best checkpoint).

All train --steps steps of one 1024-token window (batch 1, no gradient accumulation), seed 1.
Tokens per second are 1024 over the median time between the ends of two steps, after the first 10
(graph warm-up): for gpt_2_simple the arrival of its printed progress lines, for ours `on_step`.
The median ignores the steps other processes slowed down, and the few steps that also evaluate;
what evaluations cost shows in the loop's whole time ("loop s", first to last step). The machine is shared (timings of one run vary by
half), so the three run --rounds times, in a rotated order each round, and the best round of each
(the least disturbed) is compared; every round's figure is printed too.

The over-fitting run trains on the first 32 sample tweets (a third held out: 11 tweets) at a
learning rate of 2e-2, evaluating every 10 steps with --patience 5, for at most 1500 steps; it
prints where it stopped and writes its curve (train_log.png) to the folder it names.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CSV = REPO / "ml" / "sample_data" / "tweets_sample.csv"
WARMUP_STEPS = 10
WINDOW = 1024
SEED = 1


class _TimedLines:
    """A stdout stand-in that notes when each gpt_2_simple progress line `[step | seconds] loss=...` arrives."""

    def __init__(self):
        self.step_times: list[float] = []

    def write(self, text: str) -> int:
        if text.startswith("["):
            self.step_times.append(time.monotonic())
        return len(text)

    def flush(self) -> None:
        pass


def _quiet() -> None:
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)


def _stock(root: Path, models: Path, steps: int) -> list[float]:
    import gpt_2_simple as gpt2

    timed = _TimedLines()
    sess = gpt2.start_tf_sess()
    try:
        with contextlib.redirect_stdout(timed):
            gpt2.finetune(sess, str(SAMPLE_CSV), steps=steps, model_name="tiny", model_dir=str(models.parent),
                          run_name="stock", checkpoint_dir=str(root), accumulate_gradients=1, sample_every=10**6,
                          save_every=10**6, print_every=1, restore_from="fresh")
    finally:
        sess.close()
    return timed.step_times


def _ours(root: Path, models: Path, steps: int, val_fraction: float) -> list[float]:
    from ml.dataset import load_training_file, split_held_out, encode_split
    from ml.training import TrainingOptions, finetune

    training_file = load_training_file(SAMPLE_CSV)
    split = split_held_out(training_file, val_fraction, SEED)
    dataset = encode_split(training_file, split, models, root / "ours")
    step_times: list[float] = []
    options = TrainingOptions(steps=steps, accumulate_gradients=1, sample_every=10**6, save_every=10**6,
                              print_every=10**6, restore_from="fresh", seed=SEED, val_every=10, patience=5)
    finetune(dataset.training, held_out=dataset.held_out if split.held_out_tweets else None, model_folder=models,
             run_folder=root / "ours", options=options, on_step=lambda step, loss: step_times.append(time.monotonic()))
    return step_times


def one(name: str, steps: int) -> dict:
    """Run one measurement in this process; returns its figures."""
    from ml.tiny import ensure_tiny_model

    _quiet()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = ensure_tiny_model(REPO / "ml" / "models")
        started = time.monotonic()
        if name == "gpt_2_simple":
            times = _stock(root, models, steps)
        else:
            times = _ours(root, models, steps, 0.05 if name == "ours + held-out" else 0.0)
        total = time.monotonic() - started
    measured = times[WARMUP_STEPS:]
    return {
        "name": name,
        "steps": len(times),
        "tokens_per_second": WINDOW / statistics.median(b - a for a, b in zip(measured, measured[1:])),
        "loop_seconds": times[-1] - times[0],
        "call_seconds": total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def overfit(max_steps: int = 1500) -> dict:
    """The first 32 sample tweets, a third held out, a high learning rate: trained until early stopping."""
    from ml.dataset import load_training_file, split_held_out, encode_split
    from ml.tiny import ensure_tiny_model
    from ml.training import TrainingOptions, finetune

    _quiet()
    folder = Path(tempfile.mkdtemp(prefix="bench_training_overfit-"))
    small = folder / "tweets_32.csv"
    small.write_text("".join(SAMPLE_CSV.read_text(encoding="utf-8").splitlines(keepends=True)[:33]), encoding="utf-8")
    models = ensure_tiny_model(REPO / "ml" / "models")
    training_file = load_training_file(small)
    split = split_held_out(training_file, 0.34, SEED)
    dataset = encode_split(training_file, split, models, folder / "overfit")
    options = TrainingOptions(steps=max_steps, learning_rate=2e-2, accumulate_gradients=1, sample_every=10**6,
                              save_every=10**6, print_every=10**6, seed=SEED, val_every=10, patience=5,
                              restore_from="fresh")
    started = time.monotonic()
    result = finetune(dataset.training, held_out=dataset.held_out, model_folder=models,
                      run_folder=folder / "overfit", options=options)
    return {
        "training_tweets": split.training_tweets, "held_out_tweets": split.held_out_tweets,
        "training_tokens": len(dataset.training), "held_out_tokens": len(dataset.held_out),
        "stopped_early": result.stopped_early, "kept_step": result.last_step,
        "best_loss": result.best_loss, "seconds": time.monotonic() - started, "plot": str(result.plot),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-overfit", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--overfit-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.steps)))
        return 0
    if args.overfit_only:
        print(json.dumps(overfit()))
        return 0
    names = ["gpt_2_simple", "ours", "ours + held-out"]
    measured: dict[str, list[dict]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        for name in names[round_number % 3:] + names[:round_number % 3]:
            out = subprocess.run([sys.executable, "-m", "bench.bench_training", "--one", name, "--steps",
                                  str(args.steps)], cwd=REPO, capture_output=True, text=True, check=True).stdout
            measured[name].append(json.loads(out.strip().splitlines()[-1]))
    print(f"{args.steps} steps of 1024 tokens on the tiny model, sample tweets (tokens/s: median step after step "
          f"{WARMUP_STEPS}); best of {args.rounds} rounds")
    print(f"{'':18} {'tokens/s':>9} {'loop s':>7} {'call s':>7} {'peak RSS MB':>12}  tokens/s of each round")
    rows = []
    for name in names:
        row = max(measured[name], key=lambda r: r["tokens_per_second"])
        rows.append(row)
        print(f"{name:18} {row['tokens_per_second']:9.0f} {row['loop_seconds']:7.1f} {row['call_seconds']:7.1f} "
              f"{max(r['peak_rss_mb'] for r in measured[name]):12.0f}  "
              + " ".join(f"{r['tokens_per_second']:.0f}" for r in measured[name]))
    ours, held = (min(measured[name], key=lambda r: r["loop_seconds"]) for name in names[1:])
    print(f"held-out evaluation adds {held['loop_seconds'] - ours['loop_seconds']:+.1f} s to the loop "
          f"({(held['loop_seconds'] / ours['loop_seconds'] - 1) * 100:+.0f}%) and "
          f"{held['peak_rss_mb'] - ours['peak_rss_mb']:+.0f} MB of peak memory")
    if not args.skip_overfit:
        out = subprocess.run([sys.executable, "-m", "bench.bench_training", "--overfit-only"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(f"over-fitting run: {result['training_tweets']} training tweets ({result['training_tokens']} tokens), "
              f"{result['held_out_tweets']} held out ({result['held_out_tokens']} tokens), learning rate 2e-2")
        print(f"  stopped early: {result['stopped_early']}")
        print(f"  kept step {result['kept_step']} (held-out loss {result['best_loss']:.3f}) after "
              f"{result['seconds']:.0f} s; curve: {result['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
