"""Per-step cost on GPT-2 124M's shape: ml.sampler against gpt_2_simple.generate, and what each call adds.

    .venv/bin/python -m bench.bench_generation_124m [--calls 3] [--length 40]

The real 124M weights cannot be downloaded here, so this builds a randomly initialised model of
the same shape (12 layers, 768 wide, 50257-token vocabulary, 1024 window; ~500 MB in
bench/out/random_124m, made once) with a stand-in encoder. Random weights never end a sample,
so both sides run `length` steps for a batch of 10: this measures the cost of a step and of a
call, not early stopping (bench_generation.py measures that on a trained model). Each call is
made with top_p 0.9 (which sorts the whole vocabulary every step) and then with no filter (the
generation service's default).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from core.tweet_text import END_TOKEN, START_TOKEN

RUN_NAME = "run1"
SHAPE_124M = {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12}
BATCH_SIZE = 10
FILTERS = {"top_p 0.9": {"top_p": 0.9}, "no filter": {}}


def resident_mb() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def ensure_random_124m(workdir: Path) -> Path:
    """A run folder holding a random GPT-2 of 124M's shape (byte symbols + placeholder tokens)."""
    import tensorflow as tf
    from gpt_2_simple.src import model

    from ml.tiny import byte_level_encoder

    folder = workdir / "checkpoint" / RUN_NAME
    if (folder / "checkpoint").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    encoder = {symbol: token for symbol, token in byte_level_encoder().items() if symbol != END_TOKEN}
    encoder.update({f"<token{n}>": n for n in range(256, SHAPE_124M["n_vocab"] - 1)})  # byte symbols only
    encoder[END_TOKEN] = SHAPE_124M["n_vocab"] - 1
    (folder / "hparams.json").write_text(json.dumps(SHAPE_124M))
    (folder / "encoder.json").write_text(json.dumps(encoder))
    (folder / "vocab.bpe").write_text("#version: 0.2\n")
    hparams = model.default_hparams()
    hparams.override_from_dict(SHAPE_124M)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        tf.compat.v1.set_random_seed(0)
        model.model(hparams=hparams, X=tf.compat.v1.placeholder(tf.int32, [1, None]))
        sess.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(sess, str(folder / "model"), global_step=0)
    return folder


def measure_ours(folder: Path, calls: int, length: int) -> list[tuple[str, float, float, int]]:
    """(filter, ms per step, RSS MB, graph operations) after each call."""
    from ml.sampler import Sampler

    rows = []
    with Sampler.load(folder, batch_size=BATCH_SIZE) as sampler:
        sampler.generate(nsamples=BATCH_SIZE, length=2, top_p=0.9, prefix=START_TOKEN)
        for name, settings in FILTERS.items():
            for call in range(calls):
                started = time.perf_counter()
                sampler.generate(nsamples=BATCH_SIZE, length=length, prefix=START_TOKEN, seed=call, **settings)
                seconds = time.perf_counter() - started
                rows.append((name, seconds / sampler.last_run.steps * 1000, resident_mb(), sampler.operation_count))
    return rows


def measure_gpt_2_simple(folder: Path, calls: int, length: int) -> list[tuple[str, float, float, int]]:
    import gpt_2_simple
    import tensorflow as tf

    rows = []
    with tf.Graph().as_default():
        sess = gpt_2_simple.start_tf_sess()
        gpt_2_simple.load_gpt2(sess, run_name=RUN_NAME, checkpoint_dir=str(folder.parent))
        for name, settings in FILTERS.items():
            for _ in range(calls):
                started = time.perf_counter()
                gpt_2_simple.generate(sess, run_name=RUN_NAME, checkpoint_dir=str(folder.parent), nsamples=BATCH_SIZE,
                                      batch_size=BATCH_SIZE, length=length, temperature=1.0, prefix=START_TOKEN,
                                      return_as_list=True, **settings)
                seconds = time.perf_counter() - started
                rows.append((name, seconds / length * 1000, resident_mb(), len(sess.graph.get_operations())))
        sess.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--length", type=int, default=40)
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/random_124m"))
    args = parser.parse_args()
    folder = ensure_random_124m(args.workdir)
    print(f"{folder} (random weights, 124M's shape); batch {BATCH_SIZE}, {args.length} steps a call, "
          f"load average {os.getloadavg()[0]:.1f}")
    # Ours first: gpt_2_simple's graphs stay in the process and would inflate our RSS.
    results = {"ml.sampler": measure_ours(folder, args.calls, args.length),
               "gpt_2_simple.generate": measure_gpt_2_simple(folder, args.calls, args.length)}
    print(f"{'':24}{'filter':>10}{'call':>5}{'ms/step':>9}{'RSS MB':>8}{'graph ops':>11}")
    for name, rows in results.items():
        for call, (filter_name, ms, rss, ops) in enumerate(rows, 1):
            print(f"{name:24}{filter_name:>10}{call:>5}{ms:>9.0f}{rss:>8.0f}{ops:>11}")
    print("call: the n-th call of each side, whatever its filter (graph ops and RSS are after it). "
          "gpt_2_simple's ms/step include building its sampling graph, which every call does again.")


if __name__ == "__main__":
    main()
