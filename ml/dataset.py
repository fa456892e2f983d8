"""The training file: checked before TensorFlow starts, read as gpt_2_simple reads it, and encoded once.

gpt_2_simple's loader fails obscurely on bad input (IndexError on a blank CSV line, silently dropped
bytes in a non-UTF-8 file, an assertion deep in its sampler when the text is shorter than the
model's window). `load_training_file` says what is wrong in one line instead, and yields both the
text gpt_2_simple would train on and the list of training tweets the copy filter needs.
`split_held_out` sets whole tweets aside for the held-out loss, and `encode_split` encodes the two
parts once per run, reusing `dataset.npz` in the run folder until the file or the split changes.
Nothing here imports TensorFlow.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import math
import os
import random
import re
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from core.tweet_text import END_TOKEN, START_TOKEN

if TYPE_CHECKING:  # numpy is imported where arrays are made, so that checking input stays light
    import numpy as np

CSV_COLUMN = "tweets"
GPT2_N_CTX = 1024  # every GPT-2 size (and the tiny model) has a 1024-token window
SUFFIXES = (".csv", ".txt")
# gpt_2_simple's load_dataset(combine=50000): a plain-text file shorter than this gets an end marker.
COMBINE_CHARS = 50000
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MARKED_TWEET = re.compile(re.escape(START_TOKEN) + r"(.*?)" + re.escape(END_TOKEN), re.S)
MAX_VAL_FRACTION = 0.5
# Fewer held-out tweets than this give a loss too noisy to stop on: training goes on without one.
MIN_HELD_OUT_TWEETS = 10
ENCODED_DATASET = "dataset.npz"
_ENCODING_VERSION = 1  # bump when what goes into dataset.npz changes


class InputError(ValueError):
    """Bad input for ml.model; str(exc) is one line saying what is wrong and what to do."""


@dataclass(frozen=True)
class TrainingFile:
    path: Path
    text: str            # what gpt_2_simple's load_dataset would encode
    tweets: list[str]    # the training tweets, for the copy filter
    documents: list[str]  # each tweet as `text` holds it (markers, newline), in order: split by these
    sha256: str          # of the file's bytes: the encoded dataset is reused while it is unchanged
    column: str | None = None  # the CSV column the tweets came from


@dataclass(frozen=True)
class DatasetSplit:
    """The training text and the held-out text, made of whole tweets (identical tweets on one side)."""

    training_text: str
    held_out_text: str   # "" when nothing is held out
    training_tweets: int
    held_out_tweets: int
    val_fraction: float  # the share held out (0 when too few tweets to hold any out)
    seed: int
    shortfall: str | None = None  # why nothing was held out although a share was asked for


def validate_run_name(run_name: str) -> str:
    """A run name becomes a folder and part of a file name: letters, digits, '.', '_' and '-' only."""
    if any(sep in run_name for sep in ("/", "\\")):
        raise InputError(
            f"run name {run_name!r} contains a path separator: it names a folder inside --checkpoint_dir, "
            "use letters, digits, '.', '_' or '-'"
        )
    if not _RUN_NAME.fullmatch(run_name):
        raise InputError(
            f"run name {run_name!r} is not allowed: start with a letter or digit, then use letters, digits, '.', '_' or '-'"
        )
    return run_name


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{path} is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}): save it as UTF-8 and try again"
        ) from None


def _read_csv(path: Path, text: str, column_name: str) -> list[str]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise InputError(f"{path} is empty: it needs a header line '{column_name}' and one tweet per row")
    names = [name.strip() for name in header]
    if column_name not in names:
        listed = ", ".join(repr(name[:40]) for name in names[:20]) + (", ..." if len(names) > 20 else "")
        raise InputError(
            f"{path} has no '{column_name}' header; its columns are {listed}: "
            f"pass --column NAME to read the tweets from one of them, or add a first line '{column_name}'"
        )
    column = names.index(column_name)
    tweets = []
    for row in reader:
        tweet = row[column].strip() if column < len(row) else ""
        if not tweet:
            raise InputError(f"{path} line {reader.line_num} has no tweet: remove empty rows and try again")
        tweets.append(tweet)
    if not tweets:
        raise InputError(f"{path} has a header but no tweets")
    return tweets


def _marked(tweet: str) -> str:
    return f"{START_TOKEN}{tweet}{END_TOKEN}\n"


def load_training_file(path: str | Path, *, column: str = CSV_COLUMN) -> TrainingFile:
    """Read and check a `.csv` (tweets in `column`) or `.txt` training file.

    A CSV row becomes `<|startoftext|>tweet<|endoftext|>` and a newline, as gpt_2_simple does. The
    training tweets of a `.txt` are the texts between those markers if it has them, else its lines.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"training file {path} not found: pass --filename PATH to a .csv or .txt file")
    if not path.is_file():
        raise InputError(f"{path} is not a file: pass --filename PATH to a .csv or .txt file")
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"{path} is neither .csv (a '{CSV_COLUMN}' column) nor .txt: rename or convert it")
    data = path.read_bytes()
    text = _decode(path, data)
    if path.suffix.lower() == ".csv":
        tweets = _read_csv(path, text, column)
        documents = [_marked(tweet) for tweet in tweets]
        training_text = "".join(documents)
    else:
        if not text.strip():
            raise InputError(f"{path} is empty")
        column = None
        marked = [tweet.strip() for tweet in _MARKED_TWEET.findall(text)]
        tweets = [t for t in marked if t] or [line.strip() for line in text.splitlines() if line.strip()]
        documents = [_marked(tweet) for tweet in tweets] if marked else [f"{tweet}\n" for tweet in tweets]
        training_text = text + END_TOKEN if len(text) < COMBINE_CHARS else text
    return TrainingFile(path=path, text=training_text, tweets=tweets, documents=documents,
                        sha256=hashlib.sha256(data).hexdigest(), column=column)


def split_held_out(training_file: TrainingFile, val_fraction: float, seed: int) -> DatasetSplit:
    """Hold out `val_fraction` of the distinct tweets, chosen by `seed`; the rest, in file order, is trained on.

    Identical tweets go to the same side, so a held-out tweet is never also trained on. With 0, or
    fewer than MIN_HELD_OUT_TWEETS to hold out, the training text is the whole file's, as
    gpt_2_simple reads it (`shortfall` then says why, for the caller to warn).
    """
    if not 0 <= val_fraction <= MAX_VAL_FRACTION:
        raise InputError(f"--val_fraction must be between 0 (off) and {MAX_VAL_FRACTION}, got {val_fraction}")
    distinct = list(dict.fromkeys(training_file.documents))
    held_count = round(val_fraction * len(distinct))
    if val_fraction == 0 or held_count < MIN_HELD_OUT_TWEETS:
        shortfall = None if val_fraction == 0 else (
            f"{training_file.path} has {len(distinct)} distinct tweets and {val_fraction:g} of them is fewer than "
            f"the {MIN_HELD_OUT_TWEETS} a held-out loss needs: training without held-out loss or early stopping; "
            f"add tweets (at least {math.ceil(MIN_HELD_OUT_TWEETS / val_fraction)}) or raise --val_fraction, "
            "or pass --val_fraction 0 to silence this"
        )
        return DatasetSplit(training_file.text, "", len(training_file.documents), 0, 0.0, seed, shortfall)
    random.Random(seed).shuffle(distinct)
    held = set(distinct[:held_count])
    training = [doc for doc in training_file.documents if doc not in held]
    held_out = [doc for doc in training_file.documents if doc in held]
    training_text = "".join(training)
    if not training_file.path.suffix.lower() == ".csv" and len(training_file.text) < COMBINE_CHARS:
        training_text += END_TOKEN  # as gpt_2_simple ends a short plain-text file
    return DatasetSplit(training_text, "".join(held_out), len(training), len(held_out), val_fraction, seed)


def check_window(token_count: int, n_ctx: int, path: Path, *, unit: str = "tokens") -> None:
    """gpt_2_simple trains on windows of n_ctx tokens and needs more than one window of text."""
    if token_count <= n_ctx:
        raise InputError(
            f"{path} is {token_count} {unit}, too short for the model's {n_ctx}-token window: "
            f"add tweets until it is over {n_ctx} tokens (a few hundred tweets are a bare minimum)"
        )


@lru_cache(maxsize=1)
def _encoder_module():
    # Load gpt_2_simple/src/encoder.py on its own: importing it through the package would start
    # TensorFlow (gpt_2_simple/__init__ imports everything), and encoding needs only `regex`.
    package = importlib.util.find_spec("gpt_2_simple")
    if package is None or package.origin is None:
        raise InputError("gpt_2_simple is not installed: make .venv/.ml (pip install -r requirements-ml.txt)")
    spec = importlib.util.spec_from_file_location("ml._gpt2_encoder", Path(package.origin).parent / "src" / "encoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_encoder(model_folder: str | Path):
    """gpt_2_simple's Encoder for a model or run folder (encoder.json + vocab.bpe), without TensorFlow."""
    return _encoder_module().get_encoder(str(model_folder))


def encode(text: str, model_folder: str | Path):
    """The token ids of `text` as an int32 numpy array, as gpt_2_simple's load_dataset makes them."""
    import numpy as np

    return np.asarray(load_encoder(model_folder).encode(text), dtype=np.int32)


@dataclass(frozen=True)
class EncodedDataset:
    training: np.ndarray
    held_out: np.ndarray  # empty when nothing is held out
    path: Path              # the dataset.npz holding both
    reused: bool            # read back from `path` instead of encoded


def _dataset_fingerprint(training_file: TrainingFile, split: DatasetSplit, model_folder: Path) -> str:
    vocabulary = hashlib.sha256()
    for name in ("encoder.json", "vocab.bpe"):
        vocabulary.update((model_folder / name).read_bytes())
    key = {
        "version": _ENCODING_VERSION, "file_sha256": training_file.sha256, "column": training_file.column,
        "val_fraction": split.val_fraction, "seed": split.seed, "vocabulary_sha256": vocabulary.hexdigest(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _read_encoded(path: Path, fingerprint: str):
    """The (training, held_out) arrays saved at `path` for this fingerprint, else None (missing, stale or unreadable)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["fingerprint"]) != fingerprint:
                return None
            return saved["training"], saved["held_out"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def encode_split(training_file: TrainingFile, split: DatasetSplit, model_folder: str | Path,
                 run_folder: str | Path) -> EncodedDataset:
    """The encoded training and held-out texts: read from `run_folder/dataset.npz` when it was made
    from the same file bytes, column, split and vocabulary, else encoded and saved there.

    Encoding a large file takes minutes with GPT-2's BPE; resuming or re-running should not pay it again.
    """
    import numpy as np

    model_folder, run_folder = Path(model_folder), Path(run_folder)
    path = run_folder / ENCODED_DATASET
    fingerprint = _dataset_fingerprint(training_file, split, model_folder)
    saved = _read_encoded(path, fingerprint)
    if saved is not None:
        return EncodedDataset(saved[0], saved[1], path, reused=True)
    training = encode(split.training_text, model_folder)
    held_out = encode(split.held_out_text, model_folder) if split.held_out_text else np.zeros(0, dtype=np.int32)
    run_folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as out:
        np.savez_compressed(out, training=training, held_out=held_out, fingerprint=np.array(fingerprint))
    os.replace(partial, path)
    return EncodedDataset(training, held_out, path, reused=False)
