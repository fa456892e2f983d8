"""ml.model on the tiny model, offline: training, generation, resuming after Ctrl-C, gpt_2_simple compatibility.

One tiny run is trained once per module (TensorFlow sessions are slow to start on 2 cores) and
reused; tests that change a run work on a copy of it. Every graph is private or reset after use.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from api.tweet_text import parse_curated_file, validate_tweet
from ml.dataset import encode, load_training_file
from ml.model import main
from ml.tiny import TINY_HPARAMS, byte_level_encoder, ensure_tiny_model, write_tiny_run
from ml.training import TrainingOptions, finetune, read_counter

pytestmark = pytest.mark.ml

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CSV = REPO / "ml" / "sample_data" / "tweets_sample.csv"
TRAINED_STEPS = 3
SUMMARY = re.compile(r"generated (\d+), kept (\d+) of (\d+) wanted, dropped (\d+)")


class LogLines(logging.Handler):
    """Collects the messages of the `ml` loggers (fixtures of module scope cannot use caplog)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        logger = logging.getLogger("ml")
        logger.addHandler(self)
        logger.setLevel(logging.INFO)
        return self.lines

    def __exit__(self, *exc):
        logging.getLogger("ml").removeHandler(self)


def paths_args(root: Path) -> list[str]:
    return ["--models_dir", str(root / "models"), "--checkpoint_dir", str(root / "checkpoint")]


def quick_training_args(root: Path, steps: int) -> list[str]:
    return [
        "--model_name", "tiny", "--filename", str(SAMPLE_CSV), "--steps", str(steps), "--accumulate_gradients", "1",
        "--sample_every", "2", "--sample_length", "20", "--print_every", "1", "--seed", "1", *paths_args(root),
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained TRAINED_STEPS steps through the command line, and what it logged."""
    root = tmp_path_factory.mktemp("ml")
    with LogLines() as log:
        status = main(["train", "--run_name", "trained", *quick_training_args(root, TRAINED_STEPS)])
    assert status == 0, log
    return root, root / "checkpoint" / "trained", log


@pytest.fixture(autouse=True)
def fresh_default_graph():
    """gpt_2_simple's own functions build in the default graph: start and leave it empty."""
    import tensorflow as tf

    tf.compat.v1.reset_default_graph()
    yield
    tf.compat.v1.reset_default_graph()


def test_training_defaults_are_gpt_2_simple_finetunes():
    import inspect
    from dataclasses import asdict

    import gpt_2_simple as gpt2

    stock = inspect.signature(gpt2.finetune).parameters
    ours = asdict(TrainingOptions())
    assert ours.pop("steps") == 1000 and stock["steps"].default == -1  # ours stops; -1 still trains until Ctrl-C
    assert ours.pop("seed") is None  # not a finetune parameter
    assert ours == {name: stock[name].default for name in ours}


def test_tiny_model_is_in_gpt_2_simple_format(tmp_path):
    folder = ensure_tiny_model(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001", "model.ckpt.index",
        "model.ckpt.meta", "vocab.bpe",
    ]
    assert json.loads((folder / "hparams.json").read_text())["n_ctx"] == 1024
    encoder = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    assert encoder == byte_level_encoder() and len(encoder) == TINY_HPARAMS["n_vocab"] == 257
    assert (folder / "checkpoint").read_text().startswith('model_checkpoint_path: "model.ckpt"')
    # byte-level: one token a byte, and decoding gives the text back
    text = "café <|endoftext|> 🙂"
    tokens = encode(text, folder)
    assert len(tokens) == len(text.encode("utf-8"))
    assert ensure_tiny_model(tmp_path) == folder  # present: left as it is


def test_write_tiny_run_is_a_run_gpt_2_simple_loads(tmp_path):
    import gpt_2_simple as gpt2

    run = write_tiny_run(tmp_path / "checkpoint", "run1", tmp_path / "models")
    assert run == tmp_path / "checkpoint" / "run1"
    assert read_counter(run) == 0
    assert (run / "checkpoint").read_text().startswith('model_checkpoint_path: "model-0"')
    for name in ("hparams.json", "encoder.json", "vocab.bpe"):
        assert (run / name).read_bytes() == (tmp_path / "models" / "tiny" / name).read_bytes()
    sess = gpt2.start_tf_sess()
    try:
        gpt2.load_gpt2(sess, run_name="run1", checkpoint_dir=str(tmp_path / "checkpoint"))
    finally:
        sess.close()


def test_training_leaves_a_gpt_2_simple_run_folder(trained):
    _, run, log = trained
    names = {p.name for p in run.iterdir()}
    assert {"checkpoint", "counter", "hparams.json", "encoder.json", "vocab.bpe", "train_config.json"} <= names
    assert {f"model-{TRAINED_STEPS}.index", f"model-{TRAINED_STEPS}.meta"} <= names
    assert (run / "checkpoint").read_text().startswith(f'model_checkpoint_path: "model-{TRAINED_STEPS}"')
    assert read_counter(run) == TRAINED_STEPS
    assert (run / "samples" / "samples-2.txt").is_file()
    config = json.loads((run / "train_config.json").read_text())
    assert config["steps"] == TRAINED_STEPS and config["model_name"] == "tiny"
    assert config["filename"] == str(SAMPLE_CSV) and config["training_tweets"] == 300
    progress = [line for line in log if line.startswith("step ")]
    assert len(progress) == TRAINED_STEPS
    assert re.fullmatch(r"step 3 \| loss \d+\.\d{3} \| avg \d+\.\d{3} \| \d+ tokens/s \| \d+\.\d s elapsed", progress[-1])
    assert any(line.startswith("sample at step 2:") for line in log)


def test_generate_writes_filtered_candidates_and_a_summary(trained, tmp_path):
    root, run, _ = trained
    with LogLines() as log:
        status = main([
            "generate", "--run_name", "trained", "--nsamples", "6", "--length", "40", "--seed", "3",
            "--out_dir", str(tmp_path), *paths_args(root),
        ])
    [summary] = [line for line in log if SUMMARY.search(line)]
    generated, kept, wanted, dropped = map(int, SUMMARY.search(summary).groups())
    assert wanted == 6 and generated == kept + dropped and 6 <= generated <= 18  # 3 x nsamples at most
    assert json.loads((run / "generate_config.json").read_text())["length"] == 40
    files = list(tmp_path.glob("gpt2_trained_*.txt"))
    if kept:
        # An untrained model seldom makes a tweet, but those it ends within 40 bytes pass the rules.
        assert status == 0 and len(files) == 1 and f"wrote {files[0]}" in summary
        texts = parse_curated_file(files[0].read_bytes(), files[0].name)
        assert len(texts) == kept and all(validate_tweet(t) == t for t in texts)
    else:
        assert status == 1 and files == [] and "no file was written" in summary


def test_interrupted_training_saves_and_resumes_at_the_next_step(trained, tmp_path):
    root, run, _ = trained
    copy = shutil.copytree(run, tmp_path / "checkpoint" / "resumed")
    model_folder = root / "models" / "tiny"
    tokens = encode(load_training_file(SAMPLE_CSV).text, model_folder)

    def press_ctrl_c(step, loss):
        if step == TRAINED_STEPS + 2:
            raise KeyboardInterrupt

    options = TrainingOptions(steps=10, accumulate_gradients=1, sample_every=1000, print_every=1000)
    result = finetune(tokens, model_folder=model_folder, run_folder=copy, options=options, on_step=press_ctrl_c)
    interrupted_at = TRAINED_STEPS + 2
    assert result.interrupted and (result.first_step, result.last_step) == (TRAINED_STEPS + 1, interrupted_at)
    assert read_counter(copy) == interrupted_at
    assert (copy / "checkpoint").read_text().startswith(f'model_checkpoint_path: "model-{interrupted_at}"')

    with LogLines() as log:
        status = main(["train", "--run_name", "resumed", *quick_training_args(tmp_path, 1),
                       "--models_dir", str(root / "models")])
    assert status == 0
    assert any(f"training from step {interrupted_at + 1} (resumed)" in line for line in log)
    assert read_counter(copy) == interrupted_at + 1


def test_a_checkpoint_of_ml_model_loads_and_trains_on_in_gpt_2_simple(trained, tmp_path):
    import gpt_2_simple as gpt2
    import tensorflow as tf

    root, run, _ = trained
    shutil.copytree(run, tmp_path / "ours")
    sess = gpt2.start_tf_sess()
    try:
        gpt2.load_gpt2(sess, run_name="ours", checkpoint_dir=str(tmp_path))
        [text] = gpt2.generate(sess, run_name="ours", checkpoint_dir=str(tmp_path), length=8, return_as_list=True)
        assert isinstance(text, str)
    finally:
        sess.close()
    tf.compat.v1.reset_default_graph()
    sess = gpt2.start_tf_sess()
    try:
        gpt2.finetune(sess, str(SAMPLE_CSV), steps=1, model_name="tiny", model_dir=str(root / "models"),
                      run_name="ours", checkpoint_dir=str(tmp_path), accumulate_gradients=1, sample_every=1000,
                      print_every=1000)
    finally:
        sess.close()
    assert read_counter(tmp_path / "ours") == TRAINED_STEPS + 1  # stock finetune resumed our step count


def test_a_checkpoint_of_stock_gpt_2_simple_generates_through_ml_model(trained, tmp_path):
    import gpt_2_simple as gpt2

    root, _, _ = trained
    sess = gpt2.start_tf_sess()
    try:
        gpt2.finetune(sess, str(SAMPLE_CSV), steps=2, model_name="tiny", model_dir=str(root / "models"),
                      run_name="stock", checkpoint_dir=str(tmp_path / "checkpoint"), accumulate_gradients=1,
                      sample_every=1000, print_every=1000)
    finally:
        sess.close()
    with LogLines() as log:
        main([
            "generate", "--run_name", "stock", "--filename", str(SAMPLE_CSV), "--nsamples", "3", "--length", "30",
            "--seed", "1", "--oversample_limit", "1", "--out_dir", str(tmp_path),
            "--checkpoint_dir", str(tmp_path / "checkpoint"),
        ])
    assert any(line.startswith(f"loaded {tmp_path / 'checkpoint' / 'stock' / 'model-2'}") for line in log)
    [summary] = [line for line in log if SUMMARY.search(line)]
    assert SUMMARY.search(summary).group(1) == "3"


def test_demo_runs_the_pipeline_end_to_end():
    from ml.demo import main as demo

    with LogLines() as log:
        assert demo([]) == 0
    [posted] = [line for line in log if line.startswith("dry-run post:")]
    assert "status posted, dry_run=True" in posted
