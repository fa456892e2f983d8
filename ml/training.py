"""Fine-tuning: gpt_2_simple's finetune loop and on-disk run folder, with our progress log and Ctrl-C handling.

The graph (gpt_2_simple's model, its AccumulatingOptimizer, Adam), the saved variables and file names
(`model-<step>`, `checkpoint`, `counter`, copies of hparams.json/encoder.json/vocab.bpe) are those of
`gpt_2_simple.finetune`, so its `load_gpt2` and `generate` read our runs and we resume theirs. What
differs: the graph lives in its own tf.Graph (nothing left in the default graph), the log says tokens
per second, samples go to `<run>/samples/`, and Ctrl-C saves the last finished step and tells the
caller, which stops instead of carrying on.
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.tiny import MODEL_FILES

log = logging.getLogger(__name__)

RESTORE_CHOICES = ("latest", "fresh")


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


@dataclass(frozen=True)
class TrainingResult:
    first_step: int      # the first step this call trained
    last_step: int       # the last finished step, saved in the checkpoint and `counter`
    interrupted: bool    # Ctrl-C stopped it
    checkpoint: str      # path of the saved checkpoint
    seconds: float


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


def finetune(
    tokens: np.ndarray,
    *,
    model_folder: Path,
    run_folder: Path,
    options: TrainingOptions,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainingResult:
    """Train on `tokens` (the encoded training text) from the run's latest checkpoint or the base model.

    `on_step(step, loss)` is called after every finished step. Ctrl-C (see `_CtrlC`), or a
    KeyboardInterrupt from on_step, saves the last finished step and returns with `interrupted=True`;
    the next call with restore_from="latest" resumes at the step after it.
    """
    import tensorflow as tf
    from gpt_2_simple import gpt_2 as gpt2
    from gpt_2_simple.src import encoder, model, sample
    from gpt_2_simple.src.accumulate import AccumulatingOptimizer
    from gpt_2_simple.src.load_dataset import Sampler as WindowSampler

    if options.restore_from not in RESTORE_CHOICES:
        raise ValueError(f"restore_from must be one of {RESTORE_CHOICES}, got {options.restore_from!r}")
    prepare_run_folder(model_folder, run_folder, restore_from=options.restore_from)
    hparams = model.default_hparams()
    hparams.override_from_dict(json.loads((run_folder / "hparams.json").read_text(encoding="utf-8")))
    enc = encoder.get_encoder(str(run_folder))
    window = hparams.n_ctx
    windows = WindowSampler([tokens])
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
        all_vars = [v for v in tf.compat.v1.trainable_variables() if "model" in v.name]
        train_vars = [v for v in all_vars if "/h" in v.name] if options.only_train_transformer_layers else all_vars
        opt = tf.compat.v1.train.AdamOptimizer(learning_rate=options.learning_rate)
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
        sess.run((tf.compat.v1.global_variables_initializer(), applied.initializer))

        resume = options.restore_from == "latest" and _has_checkpoint(run_folder)
        restore_path = tf.train.latest_checkpoint(str(run_folder if resume else model_folder))
        log.info("loading checkpoint %s", restore_path)
        saver.restore(sess, restore_path)
        step = read_counter(run_folder) if resume else 0
        first_step = step + 1

        def save() -> str:
            path = saver.save(sess, str(run_folder / "model"), global_step=step)
            (run_folder / "counter").write_text(f"{step}\n")
            log.info("saved %s", path)
            return path

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
        last_step = step + options.steps if options.steps > 0 else None
        avg_loss = (0.0, 0.0)
        start = time.monotonic()
        checkpoint = restore_path
        interrupted = False
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
                while (last_step is None or step < last_step) and not ctrl_c.requested:
                    if step > 0 and step % options.save_every == 0 and step >= first_step:
                        checkpoint = save()
                    if step > 0 and step % options.sample_every == 0 and step >= first_step:
                        write_sample()
                    step_start = time.monotonic()
                    if options.accumulate_gradients > 1:
                        if not accumulate():
                            break
                        step_loss = float(sess.run((opt_apply, count_update))[0])
                    else:
                        _, step_loss, _ = sess.run((opt_apply, loss, count_update), feed_dict={context: batch()})
                        step_loss = float(step_loss)
                    step += 1
                    avg_loss = (avg_loss[0] * 0.99 + step_loss, avg_loss[1] * 0.99 + 1.0)
                    if step % options.print_every == 0:
                        seconds = time.monotonic() - step_start
                        log.info(
                            "step %d | loss %.3f | avg %.3f | %.0f tokens/s | %.1f s elapsed",
                            step, step_loss, avg_loss[0] / avg_loss[1], tokens_per_step / seconds,
                            time.monotonic() - start,
                        )
                    if on_step is not None:
                        on_step(step, step_loss)
            except KeyboardInterrupt:  # a second Ctrl-C, or raised by on_step
                interrupted = True
                step = first_step - 1 + int(sess.run(applied))
            interrupted = interrupted or ctrl_c.requested
            if interrupted:
                log.warning("interrupted: saving step %d (Ctrl-C is ignored until it is written)", step)
            with ctrl_c.ignored():
                checkpoint = save()
        return TrainingResult(first_step, step, interrupted, checkpoint, time.monotonic() - start)
