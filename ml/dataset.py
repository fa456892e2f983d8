"""The training file: checked before TensorFlow starts, read as gpt_2_simple reads it, and encoded once.

gpt_2_simple's loader fails obscurely on bad input (IndexError on a blank CSV line, silently dropped
bytes in a non-UTF-8 file, an assertion deep in its sampler when the text is shorter than the
model's window). `load_training_file` says what is wrong in one line instead, and yields both the
text gpt_2_simple would train on and the list of training tweets the copy filter needs.
Nothing here imports TensorFlow.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.tweet_text import END_TOKEN, START_TOKEN

CSV_COLUMN = "tweets"
GPT2_N_CTX = 1024  # every GPT-2 size (and the tiny model) has a 1024-token window
SUFFIXES = (".csv", ".txt")
# gpt_2_simple's load_dataset(combine=50000): a plain-text file shorter than this gets an end marker.
COMBINE_CHARS = 50000
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MARKED_TWEET = re.compile(re.escape(START_TOKEN) + r"(.*?)" + re.escape(END_TOKEN), re.S)


class InputError(ValueError):
    """Bad input for ml.model; str(exc) is one line saying what is wrong and what to do."""


@dataclass(frozen=True)
class TrainingFile:
    path: Path
    text: str            # what gpt_2_simple's load_dataset would encode
    tweets: list[str]    # the training tweets, for the copy filter


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


def _read_csv(path: Path, text: str) -> list[str]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise InputError(f"{path} is empty: it needs a header line '{CSV_COLUMN}' and one tweet per row")
    names = [name.strip() for name in header]
    if CSV_COLUMN not in names:
        raise InputError(
            f"{path} has no '{CSV_COLUMN}' header (first line is {','.join(header)[:60]!r}): "
            f"add a first line '{CSV_COLUMN}', as scripts/download_tweets.py writes"
        )
    column = names.index(CSV_COLUMN)
    tweets = []
    for row in reader:
        tweet = row[column].strip() if column < len(row) else ""
        if not tweet:
            raise InputError(f"{path} line {reader.line_num} has no tweet: remove empty rows and try again")
        tweets.append(tweet)
    if not tweets:
        raise InputError(f"{path} has a header but no tweets")
    return tweets


def load_training_file(path: str | Path) -> TrainingFile:
    """Read and check a `.csv` (a `tweets` column) or `.txt` training file.

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
    text = _decode(path, path.read_bytes())
    if path.suffix.lower() == ".csv":
        tweets = _read_csv(path, text)
        training_text = "".join(f"{START_TOKEN}{tweet}{END_TOKEN}\n" for tweet in tweets)
    else:
        if not text.strip():
            raise InputError(f"{path} is empty")
        marked = [tweet.strip() for tweet in _MARKED_TWEET.findall(text)]
        tweets = [t for t in marked if t] or [line.strip() for line in text.splitlines() if line.strip()]
        training_text = text + END_TOKEN if len(text) < COMBINE_CHARS else text
    return TrainingFile(path=path, text=training_text, tweets=tweets)


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
