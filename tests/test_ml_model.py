"""ml.model on the tiny model, offline: training, generation, resuming after Ctrl-C, gpt_2_simple compatibility.

One tiny run is trained once per module (TensorFlow sessions are slow to start on 2 cores) and
reused; tests that change a run work on a copy of it. Every graph is private or reset after use.
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.tweet_text import parse_curated_file, validate_tweet
from ml.dataset import encode, load_training_file
from ml.model import main
from ml.tiny import TINY_HPARAMS, byte_level_encoder, ensure_tiny_model, write_tiny_run
from ml.training import TrainingOptions, finetune, read_counter
from tests.conftest import LogLines

pytestmark = pytest.mark.ml

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CSV = REPO / "ml" / "sample_data" / "tweets_sample.csv"
TRAINED_STEPS = 3
SUMMARY = re.compile(
    r"generated (\d+), kept (\d+) of (\d+) wanted(?: \((\d+) more passed, not needed\))?, dropped (\d+)"
)


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


@pytest.fixture(scope="module")
def tiny_tokens(trained) -> tuple[Path, list[int]]:
    """The tiny base model's folder and the sample CSV encoded for it, for calling `finetune` directly."""
    root, _, _ = trained
    model_folder = root / "models" / "tiny"
    return model_folder, encode(load_training_file(SAMPLE_CSV).text, model_folder)


def quiet_options(**options) -> TrainingOptions:
    """Training options for direct `finetune` calls: one window a step, no samples, no step logs."""
    return TrainingOptions(accumulate_gradients=1, sample_every=1000, print_every=1000, **options)


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
    ours_only = {"val_every": 50, "patience": 5, "lr_schedule": "constant", "warmup_steps": 0}
    assert {name: ours.pop(name) for name in ours_only} == ours_only  # held-out loss and schedules: ours
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
    assert {"checkpoint", "counter", "hparams.json", "encoder.json", "vocab.bpe", "train_config.json",
            "training_state.json", "train_log.csv", "train_log.png", "dataset.npz"} <= names
    assert {f"model-{TRAINED_STEPS}.index", f"model-{TRAINED_STEPS}.meta"} <= names
    assert (run / "checkpoint").read_text().startswith(f'model_checkpoint_path: "model-{TRAINED_STEPS}"')
    assert read_counter(run) == TRAINED_STEPS
    assert (run / "samples" / "samples-2.txt").is_file()
    config = json.loads((run / "train_config.json").read_text())
    assert config["steps"] == TRAINED_STEPS and config["model_name"] == "tiny"
    assert config["filename"] == str(SAMPLE_CSV) and config["column"] == "tweets"
    assert (config["training_tweets"], config["held_out_tweets"], config["val_fraction"]) == (285, 15, 0.05)
    progress = [line for line in log if line.startswith("step ")]
    assert len(progress) == TRAINED_STEPS + 1  # and the held-out loss of the base model, at step 0
    assert re.fullmatch(r"step 0 \| held-out \d+\.\d{3}", progress[0])
    assert re.fullmatch(r"step 2 \| loss \d+\.\d{3} \| avg \d+\.\d{3} \| lr 1\.00e-04 \| \d+ tokens/s \| \d+\.\d s elapsed",
                        progress[2])
    # after the last step, its held-out loss
    assert re.fullmatch(r"step 3 \| loss \d+\.\d{3} \| avg \d+\.\d{3} \| held-out \d+\.\d{3} \(best \d+\.\d{3} at step \d\) "
                        r"\| lr 1\.00e-04 \| \d+ tokens/s \| \d+\.\d s elapsed", progress[-1])
    assert f"training curves: {run / 'train_log.csv'} and {run / 'train_log.png'}" in log
    assert (run / "train_log.png").read_bytes().startswith(b"\x89PNG")
    assert any(line.startswith("sample at step 2:") for line in log)


LETTERS = "abcdefghijklmnopqrstuvwxyz "


def script_checkpoint(folder: Path, end_probability: float) -> None:
    """Overwrite the latest checkpoint in `folder` with a model whose next token ignores the context.

    ln_f's gain becomes 0, so the final hidden state is ln_f's bias, whatever the input; with that
    bias one-hot, the logits are a column of wte, set here: 0 for lowercase letters and space, the
    end token likely enough to end a sample with `end_probability` at each step, every other byte
    -30. Candidates are then short runs of letters that end (or, with 0, never end): what a trained
    model gives the filters, in seconds. A few steps of training at 1e-4 barely move these weights.
    """
    import numpy as np
    import tensorflow as tf
    from gpt_2_simple.src import model

    hparams = model.default_hparams()
    hparams.override_from_dict(json.loads((folder / "hparams.json").read_text()))
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        model.model(hparams=hparams, X=tf.compat.v1.placeholder(tf.int32, [1, None]))
        saver = tf.compat.v1.train.Saver(var_list=tf.compat.v1.trainable_variables(), save_relative_paths=True)
        latest = tf.train.latest_checkpoint(str(folder))
        saver.restore(sess, latest)
        variables = {v.name: v for v in tf.compat.v1.trainable_variables()}
        logits = np.full(hparams.n_vocab, -30.0)
        logits[[ord(c) for c in LETTERS]] = 0.0
        end = 256  # ml.tiny's <|endoftext|>
        logits[end] = np.log(len(LETTERS) * end_probability / (1 - end_probability)) if end_probability else -30.0
        wte = sess.run(variables["model/wte:0"])
        wte[:, 0] = logits
        bias = np.zeros(hparams.n_embd)
        bias[0] = 1.0
        variables["model/wte:0"].load(wte, sess)
        variables["model/ln_f/g:0"].load(np.zeros(hparams.n_embd), sess)
        variables["model/ln_f/b:0"].load(bias, sess)
        saver.save(sess, latest)


@pytest.fixture(scope="module")
def scripted_models(tmp_path_factory) -> Path:
    """A models folder whose `tiny` writes runs of letters and ends about one token in six."""
    models = tmp_path_factory.mktemp("scripted") / "models"
    script_checkpoint(ensure_tiny_model(models), end_probability=0.15)
    return models


def summary_counts(log: list[str]) -> tuple[str, list[int]]:
    """The summary line and its counts: generated, kept, wanted, passed but not needed, dropped."""
    [summary] = [line for line in log if SUMMARY.search(line)]
    return summary, [int(count or 0) for count in SUMMARY.search(summary).groups()]


def test_train_then_generate_writes_the_candidate_file(scripted_models, tmp_path):
    """`python -m ml.model --filename=... --run_name=... --steps=...`: train, generate, filter, write the file."""
    with LogLines() as log:
        status = main([
            "--model_name", "tiny", "--models_dir", str(scripted_models), "--checkpoint_dir", str(tmp_path / "ck"),
            "--filename", str(SAMPLE_CSV), "--run_name", "e2e", "--steps", "2", "--accumulate_gradients", "1",
            "--sample_every", "1000", "--nsamples", "8", "--length", "60", "--seed", "1", "--out_dir", str(tmp_path),
        ])
    assert status == 0, log
    assert any(line.startswith("trained steps 1-2 in ") for line in log)
    [path] = tmp_path.glob("gpt2_*.txt")
    assert re.fullmatch(r"gpt2_e2e_\d{8}_\d{6}\.txt", path.name)
    summary, (generated, kept, wanted, surplus, dropped) = summary_counts(log)
    assert (kept, wanted) == (8, 8) and generated == kept + surplus + dropped
    assert summary.endswith(f"; wrote {path}")
    texts = parse_curated_file(path.read_bytes(), path.name)
    assert len(texts) == 8 and len(set(texts)) == 8
    assert all(validate_tweet(text) == text and set(text) <= set(LETTERS) for text in texts)
    config = json.loads((tmp_path / "ck" / "e2e" / "generate_config.json").read_text())
    assert (config["nsamples"], config["length"], config["seed"]) == (8, 60, 1)

    # generate only, from the run, with the training file it recorded (for the copy filter)
    with LogLines() as log:
        status = main(["generate", "--run_name", "e2e", "--checkpoint_dir", str(tmp_path / "ck"), "--nsamples", "3",
                       "--seed", "2", "--out_dir", str(tmp_path / "again")])
    assert status == 0, log
    assert summary_counts(log)[1][1:3] == [3, 3]
    assert len(parse_curated_file(next((tmp_path / "again").glob("gpt2_e2e_*.txt")).read_bytes(), "c.txt")) == 3


def test_samples_that_never_end_leave_no_file(trained, tmp_path):
    root, _, _ = trained
    run = write_tiny_run(tmp_path / "ck", "silent", root / "models")
    script_checkpoint(run, end_probability=0.0)
    with LogLines() as log:
        status = main(["generate", "--run_name", "silent", "--checkpoint_dir", str(tmp_path / "ck"),
                       "--filename", str(SAMPLE_CSV), "--nsamples", "2", "--length", "10", "--oversample_limit", "2",
                       "--out_dir", str(tmp_path / "out")])
    assert status == 1
    summary, counts = summary_counts(log)
    assert counts == [4, 0, 2, 0, 4]
    assert "dropped 4 (unfinished 4); stopped at the limit of 4 generated" in summary
    assert summary.endswith("no candidate survived, so no file was written")
    assert list((tmp_path / "out").iterdir()) == []


def test_interrupted_training_saves_and_resumes_at_the_next_step(trained, tiny_tokens, tmp_path):
    root, run, _ = trained
    copy = shutil.copytree(run, tmp_path / "checkpoint" / "resumed")
    model_folder, tokens = tiny_tokens

    def press_ctrl_c(step, loss):
        if step == TRAINED_STEPS + 2:
            raise KeyboardInterrupt

    options = quiet_options(steps=10)
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


def test_a_second_ctrl_c_during_an_update_saves_the_step_the_weights_are_at(tiny_tokens, tmp_path, monkeypatch):
    """A second Ctrl-C raises KeyboardInterrupt when the session call under way returns: here right
    after the third update reached the weights, before the loop counted it. The checkpoint is step 3,
    with the same weights as a run of 3 steps."""
    import numpy as np
    import tensorflow as tf

    model_folder, tokens = tiny_tokens
    options = quiet_options(steps=10, seed=1)
    real_run = tf.compat.v1.Session.run
    updates = []

    def run(self, fetches, feed_dict=None, **kwargs):
        result = real_run(self, fetches, feed_dict, **kwargs)
        if isinstance(fetches, tuple) and feed_dict is not None:  # an update (a sample fetches one tensor)
            updates.append(fetches)
            if len(updates) == 3:
                raise KeyboardInterrupt
        return result

    with monkeypatch.context() as patched:
        patched.setattr(tf.compat.v1.Session, "run", run)
        interrupted = finetune(tokens, model_folder=model_folder, run_folder=tmp_path / "interrupted", options=options)
    assert interrupted.interrupted and interrupted.last_step == 3 == read_counter(tmp_path / "interrupted")
    reference = quiet_options(steps=3, seed=1)
    finetune(tokens, model_folder=model_folder, run_folder=tmp_path / "reference", options=reference)
    saved, expected = (tf.train.load_checkpoint(str(tmp_path / name / "model-3")) for name in ("interrupted", "reference"))
    assert all(np.array_equal(saved.get_tensor(name), expected.get_tensor(name))
               for name in expected.get_variable_to_shape_map())


def test_ctrl_c_while_the_last_checkpoint_is_written_is_ignored(tiny_tokens, tmp_path, monkeypatch):
    """Ctrl-C after the first one stops at once, except while the checkpoint is written: pressed then,
    it would leave the checkpoint and its counter half written."""
    import tensorflow as tf

    model_folder, tokens = tiny_tokens
    real_save = tf.compat.v1.train.Saver.save

    def save_while_pressing_ctrl_c(self, *args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        return real_save(self, *args, **kwargs)

    def press_ctrl_c(step, loss):
        if step == 2:
            signal.raise_signal(signal.SIGINT)  # the first Ctrl-C: stop after this step and save

    options = quiet_options(steps=10)
    run = tmp_path / "saved_whole"
    with monkeypatch.context() as patched:
        patched.setattr(tf.compat.v1.train.Saver, "save", save_while_pressing_ctrl_c)
        try:
            result = finetune(tokens, model_folder=model_folder, run_folder=run, options=options, on_step=press_ctrl_c)
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C during the last save stopped it")
    assert result.interrupted and result.last_step == 2 == read_counter(run)
    assert (run / "checkpoint").read_text().startswith('model_checkpoint_path: "model-2"')


def test_ctrl_c_stops_the_command_with_status_130_and_a_checkpoint_to_resume(trained, tmp_path):
    """The real command, trained until Ctrl-C (--steps -1), interrupted with SIGINT after its second step."""
    import numpy as np
    import tensorflow as tf

    root, _, _ = trained
    run_args = ["--model_name", "tiny", "--filename", str(SAMPLE_CSV), "--accumulate_gradients", "1",
                "--sample_every", "1000", "--seed", "1", "--models_dir", str(root / "models"),
                "--checkpoint_dir", str(tmp_path / "checkpoint")]
    command = [sys.executable, "-m", "ml.model", "train", "--run_name", "until_ctrl_c", "--steps", "-1", *run_args]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (line := process.stderr.readline()).count(" step 2 | loss "):
            assert line, "ml.model ended before its second step"
        # Halfway through step 3, where a plain KeyboardInterrupt would surface after the weights changed.
        step_seconds = 1024 / float(re.search(r"\| (\d+) tokens/s", line).group(1))
        time.sleep(step_seconds / 2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    run = tmp_path / "checkpoint" / "until_ctrl_c"
    stopped_at = read_counter(run)
    assert stopped_at >= 2
    assert "Ctrl-C: stopping after the window under way" in err
    assert f"training interrupted after step {stopped_at}; checkpoint {run / f'model-{stopped_at}'} saved" in err
    assert (run / "checkpoint").read_text().startswith(f'model_checkpoint_path: "model-{stopped_at}"')
    # The saved weights are those of step `stopped_at`: the same as a run of that many steps (the
    # seed makes training repeatable), wherever SIGINT landed.
    assert main(["train", "--run_name", "reference", "--steps", str(stopped_at), *run_args]) == 0
    saved, reference = (tf.train.load_checkpoint(str(folder / f"model-{stopped_at}"))
                        for folder in (run, tmp_path / "checkpoint" / "reference"))
    assert all(np.array_equal(saved.get_tensor(name), reference.get_tensor(name))
               for name in reference.get_variable_to_shape_map())

    with LogLines() as log:
        assert main(["train", "--run_name", "until_ctrl_c", *quick_training_args(tmp_path, 1),
                     "--models_dir", str(root / "models")]) == 0
    assert any(f"training from step {stopped_at + 1} (resumed)" in line for line in log)
    assert read_counter(run) == stopped_at + 1


@pytest.mark.parametrize("name, content", [
    ("tweets.csv", None),
    ("notes.txt", "a plain text file\nwith two lines\n"),
])
def test_training_text_is_what_gpt_2_simple_loads(trained, tmp_path, name, content):
    from gpt_2_simple.src.load_dataset import load_dataset

    from ml.dataset import load_encoder

    root, _, _ = trained
    path = SAMPLE_CSV if content is None else tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    model_folder = root / "models" / "tiny"
    [stock] = load_dataset(load_encoder(model_folder), str(path), combine=50000)
    assert encode(load_training_file(path).text, model_folder).tolist() == stock.tolist()


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
    assert summary_counts(log)[1][0] == 3  # generated


def test_demo_runs_the_pipeline_end_to_end():
    from ml.demo import main as demo

    with LogLines() as log:
        assert demo([]) == 0
    [posted] = [line for line in log if line.startswith("dry-run post:")]
    assert "status posted, dry_run=True" in posted
