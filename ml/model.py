"""`python -m ml.model`: fine-tune GPT-2 on a tweets file with gpt_2_simple, then write candidate tweets to curate.

    python -m ml.model --filename=karpathy_tweets.csv --run_name=karpathy_production --steps=2000
    python -m ml.model train --filename=tweets.csv --run_name=run1 --steps=500      # only train
    python -m ml.model generate --run_name=run1 --nsamples=200                      # only generate
    python -m ml.model --model_name=tiny --filename=ml/sample_data/tweets_sample.csv --steps=20   # offline
    python -m ml.model train --filename=export.csv --column=text --epochs=3 --lr_schedule=cosine --warmup_steps=50

The folders' defaults are below; the training knobs' are `TrainingOptions` (ml/training.py,
gpt_2_simple.finetune's) and the generation knobs' `GenerationOptions` (ml/candidates.py, the
original project's), each a flag of the same name. The resolved configuration is logged and saved
in the run folder (train_config.json, generate_config.json). Training holds out --val_fraction of
the tweets, logs their loss every --val_every steps, stops after --patience evaluations without
improvement keeping the best one's checkpoint, and draws the curves (train_log.csv, train_log.png).
Bad input stops with one line and exit status 2 before TensorFlow starts; Ctrl-C during training
saves the last finished step (exit status 130) and `--restore_from latest` (the default) resumes it.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ml.base_model import GPT2_BASE_URL, DownloadError, ModelError, check_model_name, ensure_base_model
from ml.candidates import (
    GenerationOptions, UploadError, candidate_file_name, collect_candidates, copies_report_path,
    sampler_generate, upload_candidate_file, write_candidate_file, write_copies_report,
)
from ml.dataset import (
    CSV_COLUMN, GPT2_N_CTX, MAX_VAL_FRACTION, InputError, check_window, encode_split, load_training_file,
    split_held_out, validate_run_name,
)
from ml.filters import (
    MARKOVIFY_MAX_OVERLAP_RATIO, MARKOVIFY_MAX_OVERLAP_TOTAL, CandidateFilter, CopyThresholds, TrainingCopyIndex,
)
from ml.sampler import MAX_TEMPERATURE, MAX_TOP_K, MIN_TEMPERATURE, SamplerError
from ml.training import LR_SCHEDULES, RESTORE_CHOICES, RunFolderError, TrainingOptions, finetune, schedule_problem

# ---- where things live ----
MODELS_DIR = "ml/models"
CHECKPOINT_DIR = "ml/checkpoint"
OUT_DIR = "."
RUN_NAME = "run1"
MODEL_NAME = "124M"                 # 124M, 355M, 774M, 1558M (OpenAI's), or tiny (offline tests)
TRAINING = TrainingOptions()        # the defaults of every training flag
VAL_FRACTION = 0.05                 # share of the tweets held out for the held-out loss
MAX_EPOCHS = 10_000
GENERATION = GenerationOptions()    # the defaults of every generation flag
COPIES = CopyThresholds()           # the defaults of the copy filter's flags

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
TRAIN_CONFIG = "train_config.json"
GENERATE_CONFIG = "generate_config.json"

log = logging.getLogger("ml.model")


def _in_range(convert, low, high, rule: str, *, above_low: bool = False):
    """An argparse type: `convert` the text, then refuse a number outside low..high (nan too) with `rule`."""
    def parse(value: str):
        number = convert(value)
        if not ((low < number) if above_low else (low <= number)) or not number <= high:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return number

    parse.__name__ = convert.__name__  # argparse names it in "invalid int value: ..."
    return parse


def _steps(value: str) -> int:
    number = int(value)
    if number == 0 or number < -1:
        raise argparse.ArgumentTypeError(f"must be >= 1, or -1 to train until Ctrl-C; got {value}")
    return number


_positive_int = _in_range(int, 1, math.inf, "a whole number >= 1")
_whole_number = _in_range(int, 0, math.inf, "a whole number >= 0")
_positive_float = _in_range(float, 0.0, sys.float_info.max, "> 0", above_low=True)
_epochs = _in_range(float, 0.0, MAX_EPOCHS, f"> 0 and at most {MAX_EPOCHS}", above_low=True)
_val_fraction = _in_range(float, 0.0, MAX_VAL_FRACTION, f"between 0 (no held-out set) and {MAX_VAL_FRACTION}")
_temperature = _in_range(float, MIN_TEMPERATURE, MAX_TEMPERATURE, f"between {MIN_TEMPERATURE} and {MAX_TEMPERATURE:g}")
_top_k = _in_range(int, 0, MAX_TOP_K, f"a whole number from 0 (off) to {MAX_TOP_K}")
_probability = _in_range(float, 0.0, 1.0, "between 0 and 1 (0 turns it off)")
_copy_max_words = _in_range(int, 1, MARKOVIFY_MAX_OVERLAP_TOTAL,
                            f"a whole number from 1 to {MARKOVIFY_MAX_OVERLAP_TOTAL} (markovify's limit)")
_copy_max_ratio = _in_range(float, 0.0, MARKOVIFY_MAX_OVERLAP_RATIO,
                            f"above 0 and at most {MARKOVIFY_MAX_OVERLAP_RATIO} (markovify's limit)", above_low=True)
_jaccard = _in_range(float, 0.0, 1.0, "above 0 and at most 1", above_low=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ml.model",
        description="Fine-tune GPT-2 on a tweets file with gpt_2_simple and write candidate tweets to curate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("mode", nargs="?", choices=("both", "train", "generate"), default="both",
                   help="train then generate, only train, or only generate from an existing run")
    p.add_argument("--filename", help="training file: .csv with a 'tweets' column (see --column), or .txt "
                   "(generate: the training file whose copies are dropped; default: the one the run recorded)")
    p.add_argument("--column", default=CSV_COLUMN, help="the CSV column holding the tweets")
    p.add_argument("--run_name", default=RUN_NAME, help="the run's folder inside --checkpoint_dir")
    p.add_argument("--model_name", default=MODEL_NAME, help="base model: 124M, 355M, 774M, 1558M or tiny")
    p.add_argument("--models_dir", default=MODELS_DIR, help="folder of base models")
    p.add_argument("--checkpoint_dir", default=CHECKPOINT_DIR, help="folder of runs")
    p.add_argument("--download_url", default=GPT2_BASE_URL, help="where the pretrained weights are fetched from")

    t = p.add_argument_group("training (gpt_2_simple.finetune)")
    length = t.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_steps, default=None,
                        help=f"steps to train (-1: until Ctrl-C) (default: {TRAINING.steps})")
    length.add_argument("--epochs", type=_epochs, default=None,
                        help="instead of --steps: passes over the training tokens (may be fractional)")
    t.add_argument("--learning_rate", type=_positive_float, default=TRAINING.learning_rate,
                   help="Adam's learning rate (the peak of --lr_schedule)")
    t.add_argument("--batch_size", type=_positive_int, default=TRAINING.batch_size, help="1024-token windows per batch")
    t.add_argument("--accumulate_gradients", type=_positive_int, default=TRAINING.accumulate_gradients,
                   help="batches summed into one step")
    t.add_argument("--sample_every", type=_positive_int, default=TRAINING.sample_every, help="log a sample every N steps")
    t.add_argument("--sample_length", type=_positive_int, default=TRAINING.sample_length, help="tokens in those samples")
    t.add_argument("--save_every", type=_positive_int, default=TRAINING.save_every, help="save a checkpoint every N steps")
    t.add_argument("--print_every", type=_positive_int, default=TRAINING.print_every, help="log progress every N steps")
    t.add_argument("--restore_from", choices=RESTORE_CHOICES, default=TRAINING.restore_from,
                   help="latest: resume the run's last checkpoint; fresh: start again from the base model")
    t.add_argument("--overwrite", action="store_true", help="when resuming, delete the run's older checkpoints")
    t.add_argument("--only_train_transformer_layers", action="store_true",
                   help="train only the transformer blocks (less memory, for 774M and up)")
    t.add_argument("--max_checkpoints", type=_positive_int, default=TRAINING.max_checkpoints, help="checkpoints kept")
    t.add_argument("--val_fraction", type=_val_fraction, default=VAL_FRACTION,
                   help="share of the tweets held out (whole tweets, chosen by --seed, 0 when unset) to measure "
                   "over-fitting (0: none)")
    t.add_argument("--val_every", type=_positive_int, default=TRAINING.val_every,
                   help="measure the held-out loss every N steps (and after the last)")
    t.add_argument("--patience", type=_whole_number, default=TRAINING.patience,
                   help="stop after N held-out evaluations without improvement, keeping the best one's "
                   "checkpoint (0: never stop early)")
    t.add_argument("--lr_schedule", choices=LR_SCHEDULES, default=TRAINING.lr_schedule,
                   help="constant (gpt_2_simple's), or cosine: decays to 0 at the last step")
    t.add_argument("--warmup_steps", type=_whole_number, default=TRAINING.warmup_steps,
                   help="raise the learning rate linearly from 0 over the first N steps")

    g = p.add_argument_group("generation and filters")
    g.add_argument("--nsamples", type=_positive_int, default=GENERATION.nsamples, help="candidates wanted in the file")
    g.add_argument("--gen_batch_size", type=_positive_int, default=GENERATION.batch_size, help="samples made together")
    g.add_argument("--length", type=_positive_int, default=GENERATION.length, help="tokens per sample at most")
    g.add_argument("--temperature", type=_temperature, default=GENERATION.temperature,
                   help="divides the logits: lower is more predictable")
    g.add_argument("--top_k", type=_top_k, default=GENERATION.top_k, help="sample from the k likeliest tokens (0: off)")
    g.add_argument("--top_p", type=_probability, default=GENERATION.top_p, help="nucleus sampling (0: off; overrides top_k)")
    g.add_argument("--prefix", default=GENERATION.prefix, help="text samples start from ('' for none)")
    g.add_argument("--truncate", default=GENERATION.truncate, help="text that ends a sample ('' for none)")
    g.add_argument("--include_prefix", action="store_true", help="keep the prefix in the samples")
    g.add_argument("--seed", type=int, default=None, help="same seed, same samples (also seeds training)")
    g.add_argument("--no_urls", dest="no_urls", action="store_true", default=True,
                   help="drop candidates holding a URL (on unless --allow_urls)")
    g.add_argument("--allow_urls", dest="no_urls", action="store_false", default=argparse.SUPPRESS,
                   help="keep candidates holding a URL (off)")
    g.add_argument("--copy_max_words", type=_copy_max_words, default=COPIES.max_shared_words,
                   help="drop a candidate sharing a run of this many words with a training tweet")
    g.add_argument("--copy_max_ratio", type=_copy_max_ratio, default=COPIES.max_shared_ratio,
                   help="... or a run of more than this share of its words")
    g.add_argument("--near_duplicate_jaccard", type=_jaccard, default=COPIES.near_duplicate_jaccard,
                   help="... or a Jaccard of 5-character shingles this high with a training tweet")
    g.add_argument("--oversample_limit", type=_positive_float, default=GENERATION.oversample_limit,
                   help="when filters drop too many, generate at most this many times --nsamples in all")
    g.add_argument("--out_dir", default=OUT_DIR, help="folder of the candidate file")
    g.add_argument("--upload", metavar="URL", help="then upload the file to the tweet store at URL as pending "
                   "tweets (token: SECRET_TOKEN from the environment or .env)")
    return p


def training_options(args: argparse.Namespace, *, steps: int | None = None) -> TrainingOptions:
    """The training flags; `steps` from `training_steps`, which --epochs needs (it counts the training tokens)."""
    if steps is None:
        if args.epochs is not None:
            raise ValueError("--epochs becomes steps once the training tokens are known: pass steps=training_steps(...)")
        steps = training_steps(args, 0, GPT2_N_CTX)
    return TrainingOptions(**{f.name: getattr(args, f.name) for f in fields(TrainingOptions) if f.name != "steps"},
                           steps=steps)


def split_seed(args: argparse.Namespace) -> int:
    """--seed chooses the held-out tweets; without one they are the same on every run (resume needs that)."""
    return args.seed if args.seed is not None else 0


def training_steps(args: argparse.Namespace, training_tokens: int, window: int) -> int:
    """--steps, or the steps --epochs takes: each step trains on batch_size x accumulate_gradients windows."""
    if args.epochs is None:
        return TRAINING.steps if args.steps is None else args.steps
    return max(1, math.ceil(args.epochs * training_tokens / (args.batch_size * args.accumulate_gradients * window)))


def check_schedule(args: argparse.Namespace, steps: int) -> None:
    problem = schedule_problem(args.lr_schedule, steps, args.warmup_steps)
    if problem:
        raise InputError(problem)


def generation_options(args: argparse.Namespace) -> GenerationOptions:
    return GenerationOptions(
        nsamples=args.nsamples, batch_size=args.gen_batch_size, length=args.length, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, prefix=args.prefix or None, truncate=args.truncate or None,
        include_prefix=args.include_prefix, seed=args.seed, oversample_limit=args.oversample_limit,
    )


def copy_thresholds(args: argparse.Namespace) -> CopyThresholds:
    return CopyThresholds(max_shared_words=args.copy_max_words, max_shared_ratio=args.copy_max_ratio,
                          near_duplicate_jaccard=args.near_duplicate_jaccard)


def upload_token() -> str:
    """SECRET_TOKEN from the environment, else from ./.env."""
    from dotenv import dotenv_values

    return os.environ.get("SECRET_TOKEN") or dotenv_values(".env").get("SECRET_TOKEN") or ""


def _quiet_tensorflow() -> None:
    """gpt_2_simple's deprecation warnings would hide our progress log."""
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)


def _write_config(path: Path, config: dict) -> None:
    path.write_text(json.dumps(config, indent=2, default=str) + "\n", encoding="utf-8")
    log.info("configuration (saved in %s):\n%s", path, json.dumps(config, indent=2, default=str))


def _training_tweets_for_generation(args, run_folder: Path):
    """The training file of a generate-only run: --filename, else the one recorded at training."""
    if args.filename:
        return load_training_file(args.filename, column=args.column)
    recorded = run_folder / TRAIN_CONFIG
    if recorded.is_file():
        config = json.loads(recorded.read_text(encoding="utf-8"))
        filename = config.get("filename")
        if filename and Path(filename).is_file():
            return load_training_file(filename, column=config.get("column") or CSV_COLUMN)
    raise InputError(
        f"no training file known for run {run_folder}: pass --filename with the file it was trained on, "
        "so that candidates copying training tweets can be dropped"
    )


def report_copies(candidate_filter: CandidateFilter, path: Path) -> Path | None:
    """When candidates were dropped as training copies, list them (with the tweets they copy) at `path`, and say so."""
    if not candidate_filter.copies:
        return None
    written = write_copies_report(path, candidate_filter.copies)
    log.info("%d candidates dropped as copies of training tweets are listed, with the tweet each copies, in %s",
             len(candidate_filter.copies), written)
    return written


def train(args, training_file, run_folder: Path) -> int:
    """Fine-tune; returns an exit status (0, or 130 when interrupted)."""
    model_folder = ensure_base_model(Path(args.models_dir), args.model_name, base_url=args.download_url)
    hparams = json.loads((model_folder / "hparams.json").read_text(encoding="utf-8"))
    split = split_held_out(training_file, args.val_fraction, split_seed(args))
    if split.shortfall:
        log.warning("%s", split.shortfall)
    dataset = encode_split(training_file, split, model_folder, run_folder)
    log.info("%s %s: %d training tweets (%d tokens), %d held out (%d tokens)",
             "reused the encoded dataset" if dataset.reused else "encoded the dataset into", dataset.path,
             split.training_tweets, len(dataset.training), split.held_out_tweets, len(dataset.held_out))
    if split.held_out_tweets and len(dataset.training) <= hparams["n_ctx"]:
        raise InputError(
            f"{training_file.path}: after holding out {split.held_out_tweets} tweets (--val_fraction "
            f"{args.val_fraction:g}) the rest is {len(dataset.training)} tokens, too short for the model's "
            f"{hparams['n_ctx']}-token window: add tweets or lower --val_fraction"
        )
    check_window(len(dataset.training), hparams["n_ctx"], training_file.path)
    steps = training_steps(args, len(dataset.training), hparams["n_ctx"])
    check_schedule(args, steps)
    options = training_options(args, steps=steps)
    _quiet_tensorflow()
    import tensorflow as tf

    _write_config(run_folder / TRAIN_CONFIG, {
        "mode": args.mode,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "filename": str(training_file.path.resolve()),
        "column": training_file.column,
        "training_tweets": split.training_tweets,
        "held_out_tweets": split.held_out_tweets,
        "val_fraction": split.val_fraction,
        "split_seed": split.seed,
        "dataset_tokens": len(dataset.training),
        "held_out_tokens": len(dataset.held_out),
        "encoded_dataset": str(dataset.path),
        "epochs": args.epochs,
        "model_name": args.model_name,
        "model_folder": str(model_folder),
        "hparams": hparams,
        "run_folder": str(run_folder),
        **asdict(options),
        "tensorflow": tf.__version__,
        "gpt_2_simple": metadata.version("gpt-2-simple"),
    })
    result = finetune(dataset.training, held_out=dataset.held_out if split.held_out_tweets else None,
                      model_folder=model_folder, run_folder=run_folder, options=options)
    if result.interrupted:
        log.warning(
            "training interrupted after step %d; checkpoint %s saved. Resume with the same command "
            "(--restore_from latest), or generate with: python -m ml.model generate --run_name=%s --checkpoint_dir=%s",
            result.last_step, result.checkpoint, args.run_name, args.checkpoint_dir,
        )
        return EXIT_INTERRUPTED
    if result.stopped_early:
        log.warning("training stopped early: %s; the checkpoint is the best evaluation's, %s",
                    result.stopped_early, result.checkpoint)
        return 0
    log.info("trained steps %d-%d in %.0f s; checkpoint %s%s", result.first_step, result.last_step,
             result.seconds, result.checkpoint, "" if result.best_step is None else
             f"; best held-out loss {result.best_loss:.3f} at step {result.best_step}")
    return 0


def generate(args, training_file, run_folder: Path, token: str) -> int:
    """Generate, filter and write the candidates (and upload them); returns an exit status."""
    options = generation_options(args)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _quiet_tensorflow()
    from ml.sampler import Sampler

    thresholds = copy_thresholds(args)
    _write_config(run_folder / GENERATE_CONFIG, {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_folder": str(run_folder),
        "filename": str(training_file.path.resolve()),
        **asdict(options),
        "no_urls": args.no_urls,
        **asdict(thresholds),
        "out_dir": str(out_dir),
        "upload": args.upload,
    })
    indexing = time.monotonic()
    copy_index = TrainingCopyIndex(training_file.tweets, thresholds)
    log.info("indexed %d training tweets for the copy filter in %.1f s", len(copy_index), time.monotonic() - indexing)
    candidate_filter = CandidateFilter(copy_index, drop_urls=args.no_urls)
    started = time.monotonic()
    with Sampler.load(run_folder, batch_size=options.batch_size) as sampler:
        report = collect_candidates(sampler_generate(sampler, options), candidate_filter, options)
    seconds = time.monotonic() - started
    name = candidate_file_name(args.run_name)
    if not report.kept:
        log.error("%s in %.0f s; no candidate survived, so no file was written", report.summary(), seconds)
        report_copies(candidate_filter, copies_report_path(out_dir / name))
        return EXIT_FAILED
    path = write_candidate_file(out_dir / name, report.kept)
    log.info("%s in %.0f s; wrote %s", report.summary(), seconds, path)
    report_copies(candidate_filter, copies_report_path(path))
    if len(report.kept) < options.nsamples:
        log.warning("only %d of the %d candidates asked for survived the filters", len(report.kept), options.nsamples)
    if args.upload:
        try:
            answer = upload_candidate_file(path, args.upload, token)
        except UploadError as exc:
            log.error("upload failed: %s; the file is kept at %s", exc, path)
            return EXIT_FAILED
        log.info("uploaded %s as pending tweets: %d added, %d duplicates, %d rejected",
                 path, answer["added"], answer["duplicates"], len(answer["rejected"]))
    return 0


def run(args: argparse.Namespace) -> int:
    """Check everything that can be checked without TensorFlow, then train and/or generate."""
    validate_run_name(args.run_name)
    run_folder = Path(args.checkpoint_dir) / args.run_name
    token = ""
    if args.upload:
        token = upload_token()
        if not token:
            raise InputError("--upload needs the store's token: set SECRET_TOKEN in the environment or in .env")
    if args.mode in ("both", "train"):
        if not args.filename:
            raise InputError("training needs --filename: a .csv with a 'tweets' column (or --column NAME), or a .txt file")
        check_model_name(Path(args.models_dir), args.model_name)
        if args.epochs is None:
            check_schedule(args, training_steps(args, 0, GPT2_N_CTX))
        training_file = load_training_file(args.filename, column=args.column)
        # A token is at least one byte: fewer bytes than the window is too short for any vocabulary.
        check_window(len(training_file.text.encode("utf-8")), GPT2_N_CTX, training_file.path, unit="bytes")
        status = train(args, training_file, run_folder)
        if status or args.mode == "train":
            return status
    else:
        if not (run_folder / "checkpoint").is_file():
            raise InputError(
                f"no trained run at {run_folder} (no checkpoint file): train it first, or check --run_name and --checkpoint_dir"
            )
        training_file = _training_tweets_for_generation(args, run_folder)
    return generate(args, training_file, run_folder, token)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        return run(args)
    except (InputError, ModelError, RunFolderError, SamplerError) as exc:
        log.error("error: %s", exc)
        return EXIT_BAD_INPUT
    except DownloadError as exc:
        log.error("error: %s", exc)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
