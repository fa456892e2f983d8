"""Fine-tuning: gpt_2_simple's finetune loop and on-disk run folder, with our progress log and Ctrl-C handling.

The graph (gpt_2_simple's model, its AccumulatingOptimizer, Adam), the saved variables and file names
(`model-<step>`, `checkpoint`, `counter`, copies of hparams.json/encoder.json/vocab.bpe) are those of
`gpt_2_simple.finetune`, so its `load_gpt2` and `generate` read our runs and we resume theirs. What
differs: the graph lives in its own tf.Graph (nothing left in the default graph), the log says tokens
per second, samples go to `<run>/samples/`, and Ctrl-C saves the last finished step and tells the
caller, which stops instead of carrying on.

Added to finetune's loop: the loss on held-out tweets every `val_every` steps, early stopping
after `patience` evaluations without improvement (the best evaluation's weights, saved in
`<run>/best/`, become the run's checkpoint), warm-up and cosine learning-rate schedules, and the
curves (`train_log.csv`, `train_log.png`). What a resumed run needs of that (best loss, evaluations
since, the schedule) is saved with each checkpoint in `training_state.json`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ml.tiny import MODEL_FILES
from ml.train_log import TRAIN_LOG_PNG, Row, TrainLog, plot_curves

log = logging.getLogger(__name__)

RESTORE_CHOICES = ("latest", "fresh")
LR_SCHEDULES = ("constant", "cosine")
TRAINING_STATE = "training_state.json"
BEST_FOLDER = "best"


class RunFolderError(ValueError):
    """The run folder cannot continue from this model; str(exc) says what to do."""


@dataclass(frozen=True)
class TrainingOptions:
    """gpt_2_simple.finetune's knobs, with its defaults (steps: ours; -1 trains until Ctrl-C)."""

    steps: int = 1000
    learning_rate: float = 1e-4
    batch_size: int = 1
    accumulate_gradients: int = 5
    sample_every: int = 100
    sample_length: int = 1023
    save_every: int = 1000
    print_every: int = 1
    restore_from: str = "latest"
    overwrite: bool = False
    only_train_transformer_layers: bool = False
    max_checkpoints: int = 1
    seed: int | None = None
    # ours: held-out loss, early stopping, learning-rate schedule
    val_every: int = 50          # steps between held-out evaluations (and one after the last step)
    patience: int = 5            # evaluations without improvement before stopping (0: never stop early)
    lr_schedule: str = "constant"  # constant, or cosine: decays to 0 at the last step
    warmup_steps: int = 0        # learning rate rising linearly from 0 over these first steps


@dataclass(frozen=True)
class TrainingResult:
    first_step: int      # the first step this call trained
    last_step: int       # the last finished step, saved in the checkpoint and `counter`
    interrupted: bool    # Ctrl-C stopped it
    checkpoint: str      # path of the saved checkpoint
    seconds: float
    stopped_early: str | None = None  # why training stopped before its last step (held-out loss), else None
    best_step: int | None = None      # the step of the lowest held-out loss so far
    best_loss: float | None = None
    train_log: Path | None = None     # train_log.csv
    plot: Path | None = None          # train_log.png (None without matplotlib)


def schedule_problem(lr_schedule: str, steps: int, warmup_steps: int) -> str | None:
    """What is wrong with these schedule settings, in words for a one-line error, else None."""
    if lr_schedule not in LR_SCHEDULES:
        return f"--lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}"
    if warmup_steps < 0:
        return f"--warmup_steps must be >= 0, got {warmup_steps}"
    if lr_schedule == "cosine" and steps <= 0:
        return "--lr_schedule cosine decays to 0 at the last step, so it needs --steps N or --epochs E (not -1)"
    if lr_schedule == "cosine" and warmup_steps >= steps:
        return f"--warmup_steps ({warmup_steps}) must be fewer than the steps trained ({steps}) for the cosine to decay"
    return None


@dataclass(frozen=True)
class Schedule:
    """The learning rate of each step: a linear warm-up over `warmup_steps`, then constant, or a
    cosine decay reaching 0 just after `end_step`. Saved with the run, so a resumed run continues it."""

    name: str
    learning_rate: float
    warmup_steps: int
    start_step: int            # the step before its first
    end_step: int | None       # its last step (cosine only)

    def rate(self, step: int) -> float:
        done = step - self.start_step - 1  # steps of this schedule before `step`
        if done < self.warmup_steps:
            return self.learning_rate * (done + 1) / self.warmup_steps
        if self.name == "constant":
            return self.learning_rate
        decay_steps = self.end_step - self.start_step - self.warmup_steps
        return self.learning_rate * 0.5 * (1 + math.cos(math.pi * (done - self.warmup_steps) / decay_steps))

    def same_settings(self, other: Schedule) -> bool:
        return (self.name, self.learning_rate, self.warmup_steps) == (other.name, other.learning_rate, other.warmup_steps)


@dataclass
class TrainingState:
    """What a resumed run needs beyond the weights, saved beside each checkpoint."""

    step: int                               # the checkpoint's step (the `counter`)
    best_loss: float | None = None          # the lowest held-out loss so far
    best_step: int | None = None
    evaluations_since_best: int = 0
    patience: int = 0
    stopped_early: str | None = None        # why, when the run stopped early
    held_out_sha256: str | None = None      # the held-out tokens the losses were measured on
    schedule: dict | None = None            # Schedule's fields


def load_state(run_folder: Path, step: int) -> TrainingState | None:
    """The saved state of a run at checkpoint `step`; None (with a warning) when it belongs to another step."""
    path = run_folder / TRAINING_STATE
    try:
        state = TrainingState(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        log.warning("%s is unreadable (%s): best held-out loss and schedule start again", path, exc)
        return None
    if state.step != step:
        log.warning("%s is of step %d but the checkpoint is of step %d (trained on by another program?): "
                    "best held-out loss and schedule start again", path, state.step, step)
        return None
    return state


def _write_json(path: Path, value: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def held_out_windows(tokens: np.ndarray, window: int) -> list[np.ndarray]:
    """Windows covering the held-out tokens, each overlapping the previous by one token so that
    every token but the first is predicted exactly once."""
    stride = window - 1
    return [tokens[start:start + window] for start in range(0, len(tokens) - 1, stride)]


def read_counter(run_folder: Path) -> int:
    """The last saved step of a run (0 for a new one), from gpt_2_simple's `counter` file."""
    try:
        return int((run_folder / "counter").read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0


def _has_checkpoint(folder: Path) -> bool:
    return (folder / "checkpoint").is_file()


def prepare_run_folder(model_folder: Path, run_folder: Path, *, restore_from: str) -> None:
    """Copy the model's hparams/encoder/vocab into the run folder, as gpt_2_simple.finetune does.

    Refuses to resume a run trained from a model of another shape (finetune would copy the new
    hparams over the old and then fail to restore with a long TensorFlow trace).
    """
    old_hparams = run_folder / "hparams.json"
    if restore_from == "latest" and _has_checkpoint(run_folder) and old_hparams.is_file():
        old = json.loads(old_hparams.read_text(encoding="utf-8"))
        new = json.loads((model_folder / "hparams.json").read_text(encoding="utf-8"))
        if old != new:
            raise RunFolderError(
                f"run folder {run_folder} was trained from a model of another shape ({old} vs {new}): "
                "use another --run_name, or --restore_from fresh --overwrite to start it again"
            )
    run_folder.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copyfile(model_folder / name, run_folder / name)


class _CtrlC:
    """During training, the first Ctrl-C asks to stop before the next 1024-token window; a second stops at once
    (except inside `ignored()`, around the last save).

    Left to Python, Ctrl-C raises KeyboardInterrupt when the sess.run under way returns: after an
    update of the weights but before the step is counted, so the checkpoint would hold one step
    more than its number says. Deferred to the loop, it stops where weights and count agree.
    Only the main thread receives signals; elsewhere this does nothing.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._request)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    @contextmanager
    def ignored(self) -> Iterator[None]:
        """Ctrl-C does nothing inside (the last checkpoint is written whole), then stops at once again."""
        if self._previous is None:
            yield
            return
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, self._request)

    def _request(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after the window under way, then saving (Ctrl-C again to stop at once)")




def _resume_schedule(options: TrainingOptions, state: TrainingState | None, step: int) -> Schedule:
    """The schedule from `step`: the saved one when the settings are unchanged and (for cosine) it
    has steps left, so a resumed run neither warms up again nor restarts its decay; else a new one."""
    planned = Schedule(options.lr_schedule, options.learning_rate, options.warmup_steps, start_step=step,
                       end_step=step + options.steps if options.lr_schedule == "cosine" else None)
    if state is None or state.schedule is None:
        return planned
    try:
        saved = Schedule(**state.schedule)
    except TypeError:
        return planned
    if saved.same_settings(planned) and (saved.end_step is None or step < saved.end_step):
        if saved.end_step is not None:
            log.info("continuing the cosine schedule of steps %d-%d (planned when it started; --steps is not used)",
                     saved.start_step + 1, saved.end_step)
        return saved
    return planned


def finetune(
    tokens: np.ndarray,
    *,
    model_folder: Path,
    run_folder: Path,
    options: TrainingOptions,
    held_out: np.ndarray | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainingResult:
    """Train on `tokens` (the encoded training text) from the run's latest checkpoint or the base model.

    With `held_out` tokens (whole tweets kept out of `tokens`), their loss is measured every
    `val_every` steps and after the last, and with `patience` > 0 training stops once it has not
    improved for that many evaluations, keeping the best evaluation's weights as the checkpoint.
    `on_step(step, loss)` is called after every finished step. Ctrl-C (see `_CtrlC`), or a
    KeyboardInterrupt from on_step, saves the last finished step and returns with `interrupted=True`;
    the next call with restore_from="latest" resumes at the step after it.
    """
    if options.restore_from not in RESTORE_CHOICES:
        raise ValueError(f"restore_from must be one of {RESTORE_CHOICES}, got {options.restore_from!r}")
    problem = schedule_problem(options.lr_schedule, options.steps, options.warmup_steps)
    if problem:
        raise ValueError(problem)
    evaluating = held_out is not None and len(held_out) >= 2
    early_stopping = evaluating and options.patience > 0
    held_out_sha256 = hashlib.sha256(held_out.astype(np.int32).tobytes()).hexdigest() if evaluating else None
    resume = options.restore_from == "latest" and _has_checkpoint(run_folder)
    step = read_counter(run_folder) if resume else 0
    state = load_state(run_folder, step) if resume else None
    if state is not None and evaluating and state.held_out_sha256 not in (None, held_out_sha256):
        log.warning("the held-out tweets differ from those of the run's earlier evaluations (another file, "
                    "--val_fraction or --seed): its best held-out loss starts again")
        state.best_loss = state.best_step = state.stopped_early = None
        state.evaluations_since_best = 0
    if state is not None and state.stopped_early and early_stopping and state.patience == options.patience:
        log.warning("run %s stopped early before: %s. Nothing to train: pass a larger --patience, or --patience 0, "
                    "to train on from step %d, or --restore_from fresh to start again", run_folder, state.stopped_early, step)
        return TrainingResult(step + 1, step, False, str(run_folder / f"model-{step}"), 0.0, state.stopped_early,
                              state.best_step, state.best_loss)
    return _train(tokens, held_out if evaluating else None, held_out_sha256, model_folder=model_folder,
                  run_folder=run_folder, options=options, resume=resume, step=step, state=state, on_step=on_step)


def _train(tokens, held_out, held_out_sha256, *, model_folder, run_folder, options, resume, step, state, on_step):
    import tensorflow as tf
    from gpt_2_simple import gpt_2 as gpt2
    from gpt_2_simple.src import encoder, model, sample
    from gpt_2_simple.src.accumulate import AccumulatingOptimizer
    from gpt_2_simple.src.load_dataset import Sampler as WindowSampler

    prepare_run_folder(model_folder, run_folder, restore_from=options.restore_from)
    if not resume:
        shutil.rmtree(run_folder / BEST_FOLDER, ignore_errors=True)
    hparams = model.default_hparams()
    hparams.override_from_dict(json.loads((run_folder / "hparams.json").read_text(encoding="utf-8")))
    enc = encoder.get_encoder(str(run_folder))
    window = hparams.n_ctx
    windows = WindowSampler([tokens])
    evaluation_windows = held_out_windows(held_out, window) if held_out is not None else []
    early_stopping = held_out is not None and options.patience > 0
    if options.seed is not None:
        random.seed(options.seed)
        np.random.seed(options.seed)

    graph = tf.Graph()
    with graph.as_default(), gpt2.start_tf_sess() as sess:
        if options.seed is not None:
            tf.compat.v1.set_random_seed(options.seed)
        context = tf.compat.v1.placeholder(tf.int32, [options.batch_size, None])
        output = model.model(hparams=hparams, X=context)
        loss = tf.reduce_mean(
            input_tensor=tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=context[:, 1:], logits=output["logits"][:, :-1]
            )
        )
        tf_sample = sample.sample_sequence(
            hparams=hparams, length=min(options.sample_length, window - 1), context=context,
            batch_size=options.batch_size, temperature=1.0, top_k=40,
        )
        # The held-out loss: the same weights on batches of any size, summed so windows of any length average right.
        held_out_context = tf.compat.v1.placeholder(tf.int32, [None, None])
        held_out_output = model.model(hparams=hparams, X=held_out_context, reuse=True)
        held_out_loss_sum = tf.reduce_sum(
            input_tensor=tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=held_out_context[:, 1:], logits=held_out_output["logits"][:, :-1]
            )
        )
        all_vars = [v for v in tf.compat.v1.trainable_variables() if "model" in v.name]
        train_vars = [v for v in all_vars if "/h" in v.name] if options.only_train_transformer_layers else all_vars
        learning_rate = tf.compat.v1.placeholder_with_default(tf.constant(options.learning_rate, tf.float32), ())
        opt = tf.compat.v1.train.AdamOptimizer(learning_rate=learning_rate)
        if options.accumulate_gradients > 1:
            opt = AccumulatingOptimizer(opt=opt, var_list=train_vars)
            opt_reset = opt.reset()
            opt_compute = opt.compute_gradients(loss)
            opt_apply = opt.apply_gradients()
        else:
            opt_apply = opt.apply_gradients(list(zip(tf.gradients(ys=loss, xs=train_vars), train_vars)))
        # Updates that reached the weights, counted in the session call that makes each one: a second
        # Ctrl-C surfaces when a call returns, between an update and `step += 1`, and the checkpoint
        # must name the weights' step. Local: not saved in checkpoints.
        applied = tf.compat.v1.Variable(0, trainable=False, name="applied_updates",
                                        collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES])
        with tf.control_dependencies([opt_apply]):
            count_update = applied.assign_add(1)
        saver = tf.compat.v1.train.Saver(
            var_list=all_vars, max_to_keep=options.max_checkpoints, save_relative_paths=True
        )
        best_saver = tf.compat.v1.train.Saver(var_list=all_vars, max_to_keep=1, save_relative_paths=True)
        sess.run((tf.compat.v1.global_variables_initializer(), applied.initializer))

        restore_path = tf.train.latest_checkpoint(str(run_folder if resume else model_folder))
        log.info("loading checkpoint %s", restore_path)
        saver.restore(sess, restore_path)
        first_step = step + 1
        schedule = _resume_schedule(options, state, step)
        if state is None:
            state = TrainingState(step=step)
        state.patience, state.schedule = options.patience, asdict(schedule)
        if held_out_sha256 is not None:  # a run resumed without held-out set keeps the set its best loss was on
            state.held_out_sha256 = held_out_sha256
        if state.stopped_early:
            log.info("the run stopped early before (%s); training on from step %d with --patience %d",
                     state.stopped_early, step, options.patience)
            state.stopped_early, state.evaluations_since_best = None, 0
        train_log = TrainLog(run_folder, resume_step=step if resume else -1)

        def save() -> str:
            path = saver.save(sess, str(run_folder / "model"), global_step=step)
            (run_folder / "counter").write_text(f"{step}\n")
            state.step = step
            _write_json(run_folder / TRAINING_STATE, asdict(state))
            log.info("saved %s", path)
            return path

        def evaluate() -> float:
            """The mean loss per predicted token over the held-out windows (full ones batched)."""
            total, predicted = 0.0, 0
            full = [w for w in evaluation_windows if len(w) == window]
            for start in range(0, len(full), options.batch_size):
                batch_windows = np.stack(full[start:start + options.batch_size])
                total += float(sess.run(held_out_loss_sum, feed_dict={held_out_context: batch_windows}))
                predicted += batch_windows.shape[0] * (window - 1)
            for last in (w for w in evaluation_windows if len(w) < window):
                total += float(sess.run(held_out_loss_sum, feed_dict={held_out_context: last[None]}))
                predicted += len(last) - 1
            return total / predicted

        def record_evaluation(held_out_loss: float) -> None:
            """Keep the best loss (and its weights, when stopping early); count evaluations since."""
            if state.best_loss is None or held_out_loss < state.best_loss:
                state.best_loss, state.best_step, state.evaluations_since_best = held_out_loss, step, 0
                if early_stopping:
                    with ctrl_c.ignored():
                        (run_folder / BEST_FOLDER).mkdir(exist_ok=True)
                        best_saver.save(sess, str(run_folder / BEST_FOLDER / "model"), global_step=step)
                        _write_json(run_folder / TRAINING_STATE, asdict(state))
            else:
                state.evaluations_since_best += 1

        def batch() -> list[np.ndarray]:
            return [windows.sample(window) for _ in range(options.batch_size)]

        def write_sample() -> None:
            out = sess.run(tf_sample, feed_dict={context: options.batch_size * [windows.sample(1)]})
            text = enc.decode(out[0])
            samples = run_folder / "samples"
            samples.mkdir(exist_ok=True)
            (samples / f"samples-{step}.txt").write_text(text, encoding="utf-8")
            log.info("sample at step %d:\n%s", step, text)

        if options.overwrite and resume:
            for old in run_folder.iterdir():
                if old.name.startswith(("model", "events")):
                    old.unlink()
            save()

        tokens_per_step = options.batch_size * options.accumulate_gradients * window
        log.info(
            "training from step %d (%s) on %d tokens, %d tokens a step",
            first_step, "resumed" if resume else f"base model {model_folder.name}", windows.total_size, tokens_per_step,
        )
        if held_out is not None:
            log.info("held-out loss on %d tokens (%d windows) every %d steps%s", len(held_out), len(evaluation_windows),
                     options.val_every, f"; stopping after {options.patience} evaluations without improvement"
                     if early_stopping else "; no early stopping (--patience 0)")
        if schedule.end_step is not None:
            last_step = schedule.end_step
        else:
            last_step = step + options.steps if options.steps > 0 else None
        avg_loss = (0.0, 0.0)
        start = time.monotonic()
        checkpoint = restore_path
        interrupted = False
        stopped_early = None
        with _CtrlC() as ctrl_c:

            def accumulate() -> bool:
                """Sum one step's gradients; False when Ctrl-C came first (step dropped, weights unchanged)."""
                sess.run(opt_reset)
                for _ in range(options.accumulate_gradients):
                    if ctrl_c.requested:
                        return False
                    sess.run(opt_compute, feed_dict={context: batch()})
                return True

            try:
                if held_out is not None and step == 0:
                    held_out_loss = evaluate()
                    record_evaluation(held_out_loss)
                    train_log.write(Row(0, None, None, held_out_loss, None, None, 0.0))
                    log.info("step 0 | held-out %.3f", held_out_loss)
                while (last_step is None or step < last_step) and not ctrl_c.requested:
                    if step > 0 and step % options.save_every == 0 and step >= first_step:
                        checkpoint = save()
                    if step > 0 and step % options.sample_every == 0 and step >= first_step:
                        write_sample()
                    step_start = time.monotonic()
                    rate = schedule.rate(step + 1)
                    if options.accumulate_gradients > 1:
                        if not accumulate():
                            break
                        step_loss = float(sess.run((opt_apply, count_update), feed_dict={learning_rate: rate})[0])
                    else:
                        _, step_loss, _ = sess.run((opt_apply, loss, count_update),
                                                   feed_dict={context: batch(), learning_rate: rate})
                        step_loss = float(step_loss)
                    step += 1
                    tokens_per_second = tokens_per_step / (time.monotonic() - step_start)
                    avg_loss = (avg_loss[0] * 0.99 + step_loss, avg_loss[1] * 0.99 + 1.0)
                    held_out_loss = None
                    if held_out is not None and (step % options.val_every == 0 or step == last_step):
                        held_out_loss = evaluate()
                        record_evaluation(held_out_loss)
                    train_log.write(Row(step, step_loss, avg_loss[0] / avg_loss[1], held_out_loss, rate,
                                        tokens_per_second, time.monotonic() - start))
                    if step % options.print_every == 0 or held_out_loss is not None:
                        held_out_part = "" if held_out_loss is None else (
                            f" | held-out {held_out_loss:.3f} (best {state.best_loss:.3f} at step {state.best_step})"
                        )
                        log.info(
                            "step %d | loss %.3f | avg %.3f%s | lr %.2e | %.0f tokens/s | %.1f s elapsed",
                            step, step_loss, avg_loss[0] / avg_loss[1], held_out_part, rate, tokens_per_second,
                            time.monotonic() - start,
                        )
                    if on_step is not None:
                        on_step(step, step_loss)
                    if early_stopping and state.evaluations_since_best >= options.patience:
                        stopped_early = (
                            f"held-out loss has not improved for {options.patience} evaluations "
                            f"({options.patience * options.val_every} steps): {held_out_loss:.3f} at step {step}, "
                            f"best {state.best_loss:.3f} at step {state.best_step}"
                        )
                        break
            except KeyboardInterrupt:  # a second Ctrl-C, or raised by on_step
                interrupted = True
                step = first_step - 1 + int(sess.run(applied))
            interrupted = interrupted or (ctrl_c.requested and stopped_early is None)
            if interrupted:
                log.warning("interrupted: saving step %d (Ctrl-C is ignored until it is written)", step)
            stopped_at = None
            with ctrl_c.ignored():
                if stopped_early:
                    stopped_at, state.stopped_early = step, stopped_early
                    best = tf.train.latest_checkpoint(str(run_folder / BEST_FOLDER))
                    if best is None:  # deleted by hand meanwhile
                        log.warning("stopped early at step %d: %s; the best checkpoint in %s is gone, so keeping "
                                    "step %d's", stopped_at, stopped_early, run_folder / BEST_FOLDER, step)
                    else:
                        best_saver.restore(sess, best)
                        step = state.best_step
                        log.warning("stopped early at step %d: %s; keeping the checkpoint of step %d",
                                    stopped_at, stopped_early, step)
                checkpoint = save()
        train_log.close()
        plot = plot_curves(train_log.path, run_folder / TRAIN_LOG_PNG, title=f"{run_folder.name}: loss per step",
                           best_step=state.best_step if held_out is not None else None, stopped_at=stopped_at)
        log.info("training curves: %s%s", train_log.path, f" and {plot}" if plot else "")
        return TrainingResult(first_step, step, interrupted, checkpoint, time.monotonic() - start,
                              state.stopped_early if stopped_at is not None else None, state.best_step,
                              state.best_loss, train_log.path, plot)
