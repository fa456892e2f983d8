"""The base model folder: fetch OpenAI's pretrained GPT-2, or create the `tiny` one, before fine-tuning.

`download_base_model` fetches the same files from the same place as `gpt_2_simple.download_gpt2`,
but with a timeout, into a staging folder renamed only when every file arrived (so a failed
download never leaves a half model that looks complete), and fails with one line saying what it
tried and that the folder can be placed by hand. Nothing here imports TensorFlow, except creating `tiny`.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from ml.tiny import TINY_MODEL_NAME, ensure_tiny_model

log = logging.getLogger(__name__)

GPT2_MODEL_NAMES = ("124M", "355M", "774M", "1558M")
GPT2_BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2"
MODEL_FOLDER_FILES = (
    "checkpoint", "encoder.json", "hparams.json",
    "model.ckpt.data-00000-of-00001", "model.ckpt.index", "model.ckpt.meta", "vocab.bpe",
)
DOWNLOAD_TIMEOUT_SECONDS = 30
_CHUNK_BYTES = 1024 * 1024


class ModelError(ValueError):
    """The base model name is unknown; str(exc) is one line saying what to do."""


class DownloadError(RuntimeError):
    """The pretrained weights could not be fetched; str(exc) says from where and how to do without."""


def is_model_complete(folder: Path) -> bool:
    """Every file gpt_2_simple.is_gpt2_downloaded checks for is there."""
    return all((folder / name).is_file() for name in MODEL_FOLDER_FILES)


def check_model_name(models_dir: Path, model_name: str) -> None:
    """Known names (OpenAI's sizes and `tiny`) and any complete folder placed in models_dir are accepted."""
    if model_name in GPT2_MODEL_NAMES or model_name == TINY_MODEL_NAME:
        return
    if "/" not in model_name and "\\" not in model_name and is_model_complete(models_dir / model_name):
        return
    raise ModelError(
        f"unknown model {model_name!r}: use one of {', '.join(GPT2_MODEL_NAMES)} or {TINY_MODEL_NAME}, "
        f"or place a model folder ({', '.join(MODEL_FOLDER_FILES)}) at {models_dir / model_name}"
    )


def download_base_model(
    models_dir: Path, model_name: str, *, base_url: str = GPT2_BASE_URL, timeout: float = DOWNLOAD_TIMEOUT_SECONDS
) -> Path:
    """Fetch `base_url/models/<name>/<file>` for every model file into `models_dir/<name>`."""
    import requests
    from tqdm import tqdm

    target = models_dir / model_name
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_name}-download-", dir=models_dir))
    try:
        for name in MODEL_FOLDER_FILES:
            url = f"{base_url.rstrip('/')}/models/{model_name}/{name}"
            try:
                with requests.get(url, stream=True, timeout=timeout) as response:
                    response.raise_for_status()
                    size = int(response.headers.get("content-length") or 0) or None
                    with open(staging / name, "wb") as out, tqdm(
                        total=size, unit="B", unit_scale=True, desc=f"Fetching {name}"
                    ) as bar:
                        for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
                            out.write(chunk)
                            bar.update(len(chunk))
            except requests.RequestException as exc:
                raise DownloadError(
                    f"could not download GPT-2 {model_name} from {url} ({type(exc).__name__}); without network, "
                    f"place a model folder with {', '.join(MODEL_FOLDER_FILES)} at {target} by hand"
                ) from None
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def ensure_base_model(models_dir: str | Path, model_name: str, *, base_url: str = GPT2_BASE_URL,
                      timeout: float = DOWNLOAD_TIMEOUT_SECONDS) -> Path:
    """Return the folder of the base model, creating `tiny` or downloading OpenAI's weights if missing."""
    models_dir = Path(models_dir)
    check_model_name(models_dir, model_name)
    if model_name == TINY_MODEL_NAME:
        return ensure_tiny_model(models_dir)
    folder = models_dir / model_name
    if is_model_complete(folder):
        return folder
    log.info("GPT-2 %s is not in %s: downloading it", model_name, folder)
    return download_base_model(models_dir, model_name, base_url=base_url, timeout=timeout)
