"""Training's held-out loss, early stopping, schedules, curves, encoded-dataset cache and --column.

The first tests need no TensorFlow (splitting, schedules, flags). The few that train use the tiny
model and keep their step counts small; the over-fitting run is the longest (see its docstring).
"""
from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ml.dataset import InputError, encode_split, load_training_file, split_held_out
from ml.model import build_parser, main, training_steps
from ml.train_log import read_rows
from ml.training import TRAINING_STATE, Schedule, TrainingOptions, finetune, read_counter, schedule_problem
from tests.conftest import LogLines

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CSV = REPO / "ml" / "sample_data" / "tweets_sample.csv"


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def sample_tweets() -> list[str]:
    return load_training_file(SAMPLE_CSV).tweets


# ---- held-out split, by whole tweet ----

def test_the_held_out_share_is_whole_tweets_chosen_by_the_seed():
    training_file = load_training_file(SAMPLE_CSV)
    split = split_held_out(training_file, 0.05, seed=7)
    assert (split.training_tweets, split.held_out_tweets) == (285, 15)
    marked = [f"<|startoftext|>{t}<|endoftext|>\n" for t in training_file.tweets]
    held = [m for m in marked if m in split.held_out_text]
    assert len(held) == 15 and split.held_out_text == "".join(held)  # whole tweets, in file order
    assert split.training_text == "".join(m for m in marked if m not in held)
    assert split_held_out(training_file, 0.05, seed=7) == split
    assert split_held_out(training_file, 0.05, seed=8).held_out_text != split.held_out_text


def test_identical_tweets_are_held_out_together(tmp_path):
    tweets = [f"tweet number {i}" for i in range(40)]
    path = write_csv(tmp_path / "dup.csv", ["tweets"], [[t] for t in tweets + tweets[:20]])
    split = split_held_out(load_training_file(path), 0.25, seed=1)
    assert split.held_out_tweets + split.training_tweets == 60
    for tweet in tweets:
        marked = f"<|startoftext|>{tweet}<|endoftext|>"
        assert (marked in split.held_out_text) != (marked in split.training_text)


def test_a_plain_text_file_is_split_by_line(tmp_path):
    path = tmp_path / "tweets.txt"
    path.write_text("".join(f"line number {i}\n" for i in range(40)), encoding="utf-8")
    split = split_held_out(load_training_file(path), 0.25, seed=3)
    assert (split.training_tweets, split.held_out_tweets) == (30, 10)
    held = split.held_out_text.splitlines()
    assert len(held) == 10 and all(f"{line}\n" not in split.training_text for line in held)
    assert split.training_text.endswith("<|endoftext|>")  # as gpt_2_simple ends a short text file


def test_no_held_out_set_trains_on_the_file_as_gpt_2_simple_reads_it():
    training_file = load_training_file(SAMPLE_CSV)
    split = split_held_out(training_file, 0.0, seed=1)
    assert (split.training_text, split.held_out_text, split.shortfall) == (training_file.text, "", None)


def test_too_few_tweets_to_hold_out_trains_without_and_says_what_to_do(tmp_path):
    path = write_csv(tmp_path / "few.csv", ["tweets"], [[f"tweet {i} " * 5] for i in range(60)])
    split = split_held_out(load_training_file(path), 0.05, seed=1)
    assert split.held_out_tweets == 0 and split.training_text == load_training_file(path).text
    assert "60 distinct tweets" in split.shortfall and "add tweets (at least 200)" in split.shortfall
    assert "--val_fraction 0" in split.shortfall


# ---- --column ----

def test_column_reads_the_tweets_from_any_csv_column(tmp_path):
    path = write_csv(tmp_path / "export.csv", ["id", "text", "likes"], [["1", "first tweet", "3"], ["2", "second", "0"]])
    assert load_training_file(path, column="text").tweets == ["first tweet", "second"]
    with pytest.raises(InputError) as missing:
        load_training_file(path)
    assert str(missing.value) == (
        f"{path} has no 'tweets' header; its columns are 'id', 'text', 'likes': pass --column NAME to read "
        "the tweets from one of them, or add a first line 'tweets'"
    )


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys; from ml.model import main; status = main(sys.argv[1:]); "
        "print('tensorflow imported:', 'tensorflow' in sys.modules); sys.exit(status)"
    )
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize(("args", "message"), [
    (["--filename", "{export}"], "has no 'tweets' header; its columns are 'id', 'text': pass --column NAME"),
    (["--filename", str(SAMPLE_CSV), "--lr_schedule", "cosine", "--steps", "-1"],
     "--lr_schedule cosine decays to 0 at the last step, so it needs --steps N or --epochs E (not -1)"),
    (["--filename", str(SAMPLE_CSV), "--lr_schedule", "cosine", "--steps", "10", "--warmup_steps", "10"],
     "--warmup_steps (10) must be fewer than the steps trained (10)"),
])
def test_bad_training_input_is_one_line_and_exit_2_without_tensorflow(tmp_path, args, message):
    export = write_csv(tmp_path / "export.csv", ["id", "text"], [["1", "a tweet"]])
    args = [arg.format(export=export) for arg in args]
    result = run_cli(["train", *args, "--model_name", "tiny", "--models_dir", str(tmp_path / "models"),
                      "--checkpoint_dir", str(tmp_path / "ck")], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "tensorflow imported: False" in result.stdout
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--val_fraction", "0.9"], "--val_fraction: must be between 0 (no held-out set) and 0.5"),
    (["--val_fraction", "nan"], "--val_fraction: must be between 0"),
    (["--patience", "-1"], "--patience: must be a whole number >= 0"),
    (["--val_every", "0"], "--val_every: must be a whole number >= 1"),
    (["--warmup_steps", "-5"], "--warmup_steps: must be a whole number >= 0"),
    (["--epochs", "0"], "--epochs: must be > 0 and at most 10000"),
    (["--epochs", "2", "--steps", "10"], "argument --steps: not allowed with argument --epochs"),
    (["--lr_schedule", "linear"], "argument --lr_schedule: invalid choice: 'linear'"),
])
def test_bad_training_flags_are_refused_by_the_parser(flags, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(flags)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


# ---- schedules and epochs ----

def test_warm_up_then_cosine_decay():
    schedule = Schedule("cosine", 1e-3, warmup_steps=4, start_step=0, end_step=14)
    rates = [schedule.rate(step) for step in range(1, 15)]
    assert rates[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert rates[4] == pytest.approx(1e-3) and rates[9] == pytest.approx(5e-4)  # halfway through the decay
    assert all(a > b for a, b in zip(rates[4:], rates[5:])) and 0 < rates[-1] < 3e-5
    constant = Schedule("constant", 1e-4, warmup_steps=2, start_step=10, end_step=None)
    assert [constant.rate(step) for step in (11, 12, 13, 500)] == pytest.approx([5e-5, 1e-4, 1e-4, 1e-4])
    assert schedule_problem("constant", -1, 100) is None


def test_epochs_become_steps_of_the_training_tokens():
    args = build_parser().parse_args(["--epochs", "2.5", "--batch_size", "2", "--accumulate_gradients", "5"])
    assert training_steps(args, 100_000, 1024) == math.ceil(2.5 * 100_000 / (2 * 5 * 1024)) == 25
    assert training_steps(build_parser().parse_args(["--epochs", "0.001"]), 2000, 1024) == 1
    assert training_steps(build_parser().parse_args([]), 2000, 1024) == TrainingOptions().steps


# ---- with TensorFlow, on the tiny model ----

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from ml.tiny import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(autouse=True)
def fresh_default_graph(request):
    if "ml" not in request.keywords:
        yield
        return
    import tensorflow as tf

    tf.compat.v1.reset_default_graph()
    yield
    tf.compat.v1.reset_default_graph()


@pytest.mark.ml
def test_the_encoded_dataset_is_reused_until_the_file_or_split_changes(tiny_model, tmp_path):
    path = tmp_path / "tweets.csv"
    path.write_bytes(SAMPLE_CSV.read_bytes())
    run = tmp_path / "run"

    def encoded(val_fraction=0.05, seed=0):
        training_file = load_training_file(path)
        return encode_split(training_file, split_held_out(training_file, val_fraction, seed), tiny_model, run)

    first = encoded()
    assert not first.reused and first.path == run / "dataset.npz"
    again = encoded()
    assert again.reused and again.training.tolist() == first.training.tolist()
    assert again.held_out.tolist() == first.held_out.tolist()
    assert not encoded(seed=1).reused  # another split
    assert encoded(seed=1).reused
    with path.open("a", encoding="utf-8") as f:
        f.write("one more tweet\n")
    changed = encoded(seed=1)
    assert not changed.reused and len(changed.training) + len(changed.held_out) > len(first.training) + len(first.held_out)
    (run / "dataset.npz").write_bytes(b"not a zip")
    assert not encoded(seed=1).reused  # unreadable: encoded again


def tiny_args(models: Path, checkpoint_dir: Path, *flags: str) -> list[str]:
    return ["train", "--model_name", "tiny", "--models_dir", str(models.parent), "--checkpoint_dir", str(checkpoint_dir),
            "--accumulate_gradients", "1", "--sample_every", "1000", "--print_every", "1000", "--seed", "1", *flags]


def same_weights(checkpoint_a: Path, checkpoint_b: Path) -> bool:
    import numpy as np
    import tensorflow as tf

    a, b = tf.train.load_checkpoint(str(checkpoint_a)), tf.train.load_checkpoint(str(checkpoint_b))
    return all(np.array_equal(a.get_tensor(name), b.get_tensor(name)) for name in b.get_variable_to_shape_map())


@pytest.mark.ml
def test_early_stop_keeps_the_best_checkpoint_and_resumes_correctly(tiny_model, tmp_path):
    """Trained a few steps at a sane rate (held-out loss improving), then resumed at a rate that wrecks
    the weights: the held-out loss gets worse, training stops after --patience evaluations and the
    checkpoint is the best evaluation's, from before the resume (the best loss survived it)."""
    import shutil

    ck = tmp_path / "ck"
    run = ck / "stops"
    common = ["--run_name", "stops", "--filename", str(SAMPLE_CSV), "--val_every", "2", "--patience", "2"]
    assert main(tiny_args(tiny_model, ck, *common, "--steps", "4", "--learning_rate", "1e-3")) == 0
    state = json.loads((run / TRAINING_STATE).read_text())
    assert (state["step"], state["best_step"], state["stopped_early"]) == (4, 4, None)
    before = shutil.copytree(run, tmp_path / "before")

    with LogLines() as log:
        assert main(tiny_args(tiny_model, ck, *common, "--steps", "20", "--learning_rate", "1.0")) == 0
    reason = (re.escape("held-out loss has not improved for 2 evaluations (4 steps): ")
              + rf"\d+\.\d{{3}} at step 8, best {state['best_loss']:.3f} at step 4")
    assert any(re.fullmatch(rf"stopped early at step 8: {reason}; keeping the checkpoint of step 4", line) for line in log)
    assert any(re.fullmatch(rf"training stopped early: {reason}; the checkpoint is the best evaluation's, "
                            rf"{re.escape(str(run / 'model-4'))}", line) for line in log)
    assert read_counter(run) == 4
    assert (run / "checkpoint").read_text().startswith('model_checkpoint_path: "model-4"')
    assert same_weights(run / "model-4", before / "model-4")
    rows = read_rows(run / "train_log.csv")
    assert [r.step for r in rows] == list(range(9))  # the curve shows the rise past the best
    assert [r.step for r in rows if r.held_out_loss is not None] == [0, 2, 4, 6, 8]
    assert all(r.held_out_loss > state["best_loss"] for r in rows[6:] if r.held_out_loss is not None)
    assert (run / "train_log.png").is_file()

    # The same command again: nothing to train (it would only over-fit again), and says so.
    with LogLines() as log:
        assert main(tiny_args(tiny_model, ck, *common, "--steps", "20", "--learning_rate", "1.0")) == 0
    assert any("stopped early before: held-out loss has not improved" in line and "Nothing to train" in line
               for line in log)
    assert not any(line.startswith("training from step") for line in log) and read_counter(run) == 4

    # More patience: trains on from the best step; the rows of the abandoned steps are replaced.
    with LogLines() as log:
        assert main(tiny_args(tiny_model, ck, *common, "--patience", "3", "--steps", "2",
                              "--learning_rate", "1e-3")) == 0
    assert any("training on from step 4 with --patience 3" in line for line in log)
    assert read_counter(run) == 6 and json.loads((run / TRAINING_STATE).read_text())["stopped_early"] is None
    assert [r.step for r in read_rows(run / "train_log.csv")] == list(range(7))


@pytest.mark.ml
def test_an_interrupted_cosine_schedule_resumes_where_it_stopped(tiny_model, tmp_path):
    """The same command after Ctrl-C finishes the planned 6 steps (not 6 more), at the planned rates."""
    from ml.dataset import encode

    training_file = load_training_file(SAMPLE_CSV)
    split = split_held_out(training_file, 0.05, seed=0)
    tokens, held_out = encode(split.training_text, tiny_model), encode(split.held_out_text, tiny_model)
    run = tmp_path / "cosine"
    options = TrainingOptions(steps=6, learning_rate=1e-3, lr_schedule="cosine", warmup_steps=2, accumulate_gradients=1,
                              sample_every=1000, print_every=1000, val_every=3)

    def press_ctrl_c(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    first = finetune(tokens, held_out=held_out, model_folder=tiny_model, run_folder=run, options=options,
                     on_step=press_ctrl_c)
    assert first.interrupted and first.last_step == 3 == read_counter(run)
    with LogLines() as log:
        again = finetune(tokens, held_out=held_out, model_folder=tiny_model, run_folder=run, options=options)
    assert "continuing the cosine schedule of steps 1-6 (planned when it started; --steps is not used)" in log
    assert not again.interrupted and (again.first_step, again.last_step) == (4, 6) and read_counter(run) == 6
    rows = [r for r in read_rows(run / "train_log.csv") if r.step > 0]
    planned = Schedule("cosine", 1e-3, 2, start_step=0, end_step=6)
    assert [r.step for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.learning_rate for r in rows] == pytest.approx([planned.rate(step) for step in range(1, 7)], rel=1e-5)
    assert [r.step for r in rows if r.held_out_loss is not None] == [3, 6]


@pytest.mark.ml
def test_a_csv_column_too_few_tweets_to_hold_out_trains_without_with_a_warning(tiny_model, tmp_path):
    tweets = sample_tweets()[:60]
    path = write_csv(tmp_path / "export.csv", ["id", "text"], [[str(i), t] for i, t in enumerate(tweets)])
    with LogLines() as log:
        assert main(tiny_args(tiny_model, tmp_path / "ck", "--run_name", "few", "--filename", str(path),
                              "--column", "text", "--steps", "1")) == 0
    assert any("has 60 distinct tweets and 0.05 of them is fewer than the 10 a held-out loss needs" in line
               for line in log)
    config = json.loads((tmp_path / "ck" / "few" / "train_config.json").read_text())
    assert (config["column"], config["training_tweets"], config["held_out_tweets"]) == ("text", 60, 0)
    assert not any("held-out" in line for line in log if line.startswith("step "))
    assert [r.held_out_loss for r in read_rows(tmp_path / "ck" / "few" / "train_log.csv")] == [None]
