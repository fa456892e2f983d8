"""The `tiny` model: a small randomly initialised GPT-2 in gpt_2_simple's on-disk format, for tests and the demo.

It has a byte-level vocabulary (the 256 byte symbols of GPT-2's encoder plus `<|endoftext|>`,
and no BPE merges), a few narrow layers, and the real 1024-token window, so every code path that
works on `models/124M` works on `models/tiny` in seconds on a CPU. It is for tests, not quality.

On disk it is exactly what `gpt_2_simple.download_gpt2` leaves for a real model:
hparams.json, encoder.json, vocab.bpe, `checkpoint` and model.ckpt.{index,data-00000-of-00001,meta}.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from core.tweet_text import END_TOKEN

TINY_MODEL_NAME = "tiny"
TINY_HPARAMS = {"n_vocab": 257, "n_ctx": 1024, "n_embd": 64, "n_head": 4, "n_layer": 2}
MODEL_FILES = ("hparams.json", "encoder.json", "vocab.bpe")


def byte_level_encoder() -> dict[str, int]:
    """encoder.json for the byte vocabulary: GPT-2's byte symbol for byte b is token b; 256 is the end token."""
    from gpt_2_simple.src.encoder import bytes_to_unicode

    symbols = bytes_to_unicode()
    encoder = {symbols[b]: b for b in range(256)}
    encoder[END_TOKEN] = 256
    return encoder


def _save_random_checkpoint(folder: Path, hparams: dict, *, seed: int, save_as: str, global_step: int | None) -> None:
    """Build gpt_2_simple's graph in a private tf.Graph, initialise it randomly and save it with a v1 Saver."""
    import tensorflow as tf
    from gpt_2_simple.src import model

    params = model.default_hparams()
    params.override_from_dict(hparams)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        tf.compat.v1.set_random_seed(seed)
        context = tf.compat.v1.placeholder(tf.int32, [1, None])
        model.model(hparams=params, X=context)
        sess.run(tf.compat.v1.global_variables_initializer())
        saver = tf.compat.v1.train.Saver(var_list=tf.compat.v1.trainable_variables(), save_relative_paths=True)
        saver.save(sess, str(folder / save_as), global_step=global_step)


def _write_model_files(folder: Path, hparams: dict) -> None:
    (folder / "hparams.json").write_text(json.dumps(hparams, indent=2) + "\n", encoding="utf-8")
    (folder / "encoder.json").write_text(json.dumps(byte_level_encoder(), ensure_ascii=False), encoding="utf-8")
    # gpt_2_simple reads the merges as the lines between the version header and the final newline: none here.
    (folder / "vocab.bpe").write_text("#version: 0.2\n", encoding="utf-8")


def ensure_tiny_model(models_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """Return `models_dir/tiny`, creating it first if it is missing (safe when several processes race).

    Parameters
    ----------
    models_dir : folder holding base models (the `model_dir` of gpt_2_simple), e.g. `ml/models`.
    seed : TensorFlow seed of the random initialisation, so every fresh tiny model is the same.
    """
    models_dir = Path(models_dir)
    target = models_dir / TINY_MODEL_NAME
    if (target / "checkpoint").is_file():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=models_dir))
    try:
        _write_model_files(staging, TINY_HPARAMS)
        _save_random_checkpoint(staging, TINY_HPARAMS, seed=seed, save_as="model.ckpt", global_step=None)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "checkpoint").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def write_tiny_run(checkpoint_dir: str | os.PathLike, run_name: str, models_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """Write `checkpoint_dir/run_name` as gpt_2_simple's finetune leaves it after 0 steps, from the tiny model.

    The folder gets copies of hparams.json, encoder.json and vocab.bpe, a `model-0` checkpoint with
    its `checkpoint` index file, and a `counter` file holding 0: enough for `gpt_2_simple.load_gpt2`,
    `generate` and a resumed `finetune`. Untrained, so it generates random bytes.
    """
    model_folder = ensure_tiny_model(models_dir, seed=seed)
    run_folder = Path(checkpoint_dir) / run_name
    run_folder.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copyfile(model_folder / name, run_folder / name)
    _save_random_checkpoint(run_folder, TINY_HPARAMS, seed=seed, save_as="model", global_step=0)
    (run_folder / "counter").write_text("0\n", encoding="utf-8")
    return run_folder
