"""Fast sampling from gpt_2_simple checkpoints: one graph per model, early stop, continuous batching.

gpt_2_simple's `generate()` adds a new sampling graph to the session on every call and always runs
`length` steps. `Sampler` builds its graph once at load (the graph is then finalised, so no call can
add an operation) and drives it from Python, a block of steps per session call:

- a block runs up to BLOCK_STEPS steps in a tf.while_loop and stops early, in-graph, soon after
  rows sampled a token their sample may end in (the end token, or one that can complete the
  `truncate` text, however the model spelled it in tokens); Python then checks the text exactly
  and drops what a row sampled after its end;
- every row of the batch carries its own sample: when a row ends (the `truncate` text appeared, the
  real end token came, or `length` tokens were made) its text is delivered and the row starts the
  next sample at the next block (continuous batching), so the batch stays nearly full;
- the keys/values of a prompt (`prefix`) are computed once and shared by every row that starts from
  it, so starting a sample costs no model step;
- a sample longer than the model's window slides: its last `n_ctx // 2` tokens are encoded again
  as a new context and generation goes on.

The graph (GPT-2 written out with per-row positions and visible keys, and the per-row logit
filters) is in ml/graph.py; this module is the Python loop that drives it. `tests/test_sampler.py`
checks that its greedy samples equal greedy decoding with `gpt_2_simple.src.model.model` itself.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.tweet_text import END_TOKEN, join_samples
from ml.graph import BLOCK_STEPS, Graph, build_graph, session_callable

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 10
CONTEXT_CACHE_ENTRIES = 8
# gpt_2_simple's encoder keeps the tokens of every word it has seen; past this many it starts afresh.
ENCODER_CACHE_WORDS = 10_000
SLOT_BLOCK = 32

# Bounds of a SampleRequest (the generation service's schema states the same), chosen so that every
# accepted value keeps its meaning once cast to the graph's int32 and float32 feeds.
MIN_TEMPERATURE = 1e-4  # logits / temperature stay finite in float32 (1e-50 would be 0: NaN samples)
MAX_TEMPERATURE = 100.0
MAX_TOP_K = 50_257  # GPT-2's vocabulary: a larger top_k keeps every token, as 0 does
# A top_p this small or smaller keeps only the likeliest token (its probability is at least 1 / vocabulary);
# smaller values are fed as this one, since float32 would round the smallest to 0, which turns top_p off.
MIN_TOP_P = 1e-6
MAX_TRUNCATE_CHARS = 200


class SamplerError(ValueError):
    """A checkpoint or a sampling parameter is unusable; the message says what to change.

    `field` names the request parameter at fault, when one is.
    """

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


def check_text(name: str, text: str | None) -> str | None:
    """`text` unchanged, if the encoder can take it and the samples that start with it can be stored.

    A lone surrogate (from a JSON escape such as \\ud800) is not Unicode text: encoding it to UTF-8 fails.
    NUL is valid but PostgreSQL's text type refuses it, and samples start with their prefix.
    """
    if text is None:
        return None
    if "\x00" in text:
        raise SamplerError(f"{name} has a NUL character (at character {text.index(chr(0))}): remove it", field=name)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SamplerError(f"{name} has a lone surrogate at character {exc.start}: send valid Unicode text",
                           field=name) from None
    return text


@dataclass(frozen=True)
class SampleRequest:
    """What one sample is made from; the parameters mean what they mean in gpt_2_simple.generate.

    length : tokens to generate at most (past the model's window if need be).
    temperature : MIN_TEMPERATURE to MAX_TEMPERATURE; logits are divided by it.
    top_k : keep the k likeliest tokens (0: all), at most MAX_TOP_K.
    top_p : nucleus sampling, keep the likeliest tokens whose mass reaches p (0: off; overrides top_k).
    prefix : text the sample continues (None or "": start of a document); at most the model's window in tokens.
    truncate : stop the sample where this text appears (also at the real end token), at most
        MAX_TRUNCATE_CHARS characters; None: run to length.
    include_prefix : start the returned text with the prefix.
    """

    length: int = 1023
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    prefix: str | None = None
    truncate: str | None = None
    include_prefix: bool = True

    def __post_init__(self):
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 1:
            raise SamplerError(f"length must be a whole number of tokens >= 1, got {self.length!r}")
        if not MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE:  # False for NaN too
            raise SamplerError(f"temperature must be between {MIN_TEMPERATURE} and {MAX_TEMPERATURE:g}, "
                               f"got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or not 0 <= self.top_k <= MAX_TOP_K:
            raise SamplerError(f"top_k must be a whole number between 0 and {MAX_TOP_K} (0 turns it off), "
                               f"got {self.top_k!r}")
        if not 0.0 <= self.top_p <= 1.0:
            raise SamplerError(f"top_p must be between 0 and 1 (0 turns it off), got {self.top_p!r}")
        if self.truncate == "":
            raise SamplerError("truncate must be None or a non-empty text")
        if self.truncate is not None and len(self.truncate) > MAX_TRUNCATE_CHARS:
            raise SamplerError(f"truncate must be at most {MAX_TRUNCATE_CHARS} characters, got {len(self.truncate)}")
        check_text("prefix", self.prefix)
        check_text("truncate", self.truncate)


class Truncation:
    """Where samples cut at one `truncate` text end.

    A sample ends at the real end token, or where the `truncate` text appears in what was generated
    (however the model spelled it in tokens: gpt_2_simple's CSV format writes `<|endoftext|>` as
    plain text, several tokens). `stop_tokens` marks the tokens in which a sample can end (the
    end token, a token holding the whole text, or one that begins with the text's last bytes): the
    sampling loop stops in-graph when one comes, and `find_end` checks the new tokens exactly.
    Without a `truncate` text, a sample never ends (it runs to `length`; the end token is text).
    """

    def __init__(self, truncate: str | None, token_bytes: list[bytes], end_token: int | None):
        self.wanted = truncate.encode("utf-8") if truncate is not None else None
        self.token_bytes = token_bytes
        self.end_token = end_token
        self.stop_tokens = np.zeros(len(token_bytes), bool)
        if self.wanted is None:
            return
        # The bytes of a sample that a match ending in later tokens can start in.
        self.kept_bytes = len(self.wanted) - 1
        # The text's tails that a token can begin with: no longer than the longest token, so few.
        longest = max(map(len, token_bytes))
        tails = {self.wanted[-size:] for size in range(1, min(self.kept_bytes, longest) + 1)}
        for token, data in enumerate(token_bytes):
            self.stop_tokens[token] = self.wanted in data or any(
                data[:size] in tails for size in range(1, min(len(data), self.kept_bytes) + 1)
            )
        if end_token is not None:
            self.stop_tokens[end_token] = True

    def find_end(self, recent: bytes, tokens: list[int]) -> tuple[int | None, bytes]:
        """Where a sample ends in `tokens`, its next tokens: the index of the token it ends at (None: it
        goes on), and the bytes to pass as `recent` with its next tokens.

        `recent` is the end of what it generated before (b"" at its start), enough to see the text
        complete across calls and no more, so that checking a sample is linear in its length.
        """
        if self.wanted is None:
            return None, b""
        data = bytearray(recent)
        added = 0
        # Only a stop token can complete the text, so the first completion is found at one of them.
        for index in np.flatnonzero(self.stop_tokens[tokens]).tolist():
            if tokens[index] == self.end_token:
                return index, b""
            for token in tokens[added : index + 1]:
                data += self.token_bytes[token]
            added = index + 1
            if self.wanted in data:
                return index, b""
        for token in tokens[added:]:
            data += self.token_bytes[token]
        return None, bytes(data[max(0, len(data) - self.kept_bytes):])

    def text(self, tokens: list[int], ended: bool) -> str:
        """The sample's text: up to where it ended, or all of it."""
        if ended and tokens[-1] == self.end_token:
            tokens = tokens[:-1]
        data = b"".join(self.token_bytes[token] for token in tokens)
        if ended and self.wanted in data:
            data = data[: data.find(self.wanted)]
        return data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class GeneratedSample:
    """One finished sample."""

    text: str
    ended: bool  # the truncate text or the end token ended it; False: it ran to `length` (or no truncate)
    tokens: int  # tokens generated (the prefix not counted)


@dataclass
class SampleJob:
    """A request, where its sample goes when it is done, and where its error goes if it fails.

    With `fail`, a job that fails (a prefix too long for the model, a token outside the vocabulary)
    gets its error and the other jobs of the batch go on; without it, the error ends the run.
    """

    request: SampleRequest
    deliver: Callable[[GeneratedSample], None]
    fail: Callable[[Exception], None] | None = None


@dataclass
class RunStats:
    """What one `run` did: model steps (one token for every row, idle ones included), blocks of steps
    (session calls), prompt encodings, samples, tokens kept in samples."""

    steps: int = 0
    blocks: int = 0
    context_encodings: int = 0
    samples: int = 0
    generated_tokens: int = 0


class _Recent(OrderedDict):
    """The values made for the last `size` keys used; older ones are dropped, so the cache stays bounded
    however many distinct prompts and texts requests bring."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or_make(self, key, make: Callable[[], object]):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = make()
        while len(self) > self.size:
            self.popitem(last=False)
        return value


@dataclass
class _Context:
    """A prompt's tokens but the last, with their keys/values [tokens, layers, 2, heads, head_size]."""

    tokens: tuple[int, ...]
    keys_values: np.ndarray


@dataclass
class _Row:
    """One sample in progress."""

    job: SampleJob
    truncation: Truncation
    context: _Context
    next_token: int           # fed at the next step (the context's last token, then each sampled one)
    row_start: int            # first slot of the row cache this sample sees
    window_tokens: list[int]  # the tokens of the current window: context, then generated
    generated: list[int] = field(default_factory=list)
    recent: bytes = b""       # the end of the generated text, for Truncation.find_end
    done: bool = False


def _padded(slots: int) -> int:
    """`slots` rounded up to a multiple of SLOT_BLOCK.

    Caches and prompts are fed in whole blocks (the extra slots hidden by the mask) so that the
    tensor shapes TensorFlow sees repeat: oneDNN builds and keeps a kernel for every new shape,
    and a cache growing one slot a step would make its memory grow request after request.
    """
    return -(-slots // SLOT_BLOCK) * SLOT_BLOCK


def _per_layer(cache: np.ndarray) -> list[np.ndarray]:
    """[layers, 2, ...] -> the feeds of one cache placeholder list: layer 0 keys, layer 0 values, ..."""
    return [np.ascontiguousarray(cache[layer, kind]) for layer in range(cache.shape[0]) for kind in (0, 1)]


def resolve_run_folder(checkpoint_dir: str | Path, run_name: str | None = None) -> Path:
    """The folder holding hparams.json and the checkpoint: `checkpoint_dir/run_name`, or `checkpoint_dir`."""
    folder = Path(checkpoint_dir) / run_name if run_name else Path(checkpoint_dir)
    missing = [name for name in ("hparams.json", "encoder.json", "vocab.bpe", "checkpoint") if not (folder / name).is_file()]
    if missing:
        raise SamplerError(
            f"{folder} is not a gpt_2_simple checkpoint folder (missing {', '.join(missing)}): "
            "point at the run folder that finetune wrote, e.g. checkpoint/run1"
        )
    return folder


class Sampler:
    """A gpt_2_simple checkpoint loaded once, sampling with a graph built once.

    Use `Sampler.load(...)`; `generate` and `generate_to_file` are safe to call from several threads
    (calls run one after another). Close it, or use it as a context manager, to free the session.
    """

    def __init__(self, *, session, graph: Graph, encoder, hparams, batch_size: int, folder: Path, checkpoint: str):
        self._session = session
        self._graph = graph
        self._run_context = session_callable(session, [graph.prompt_presents], [graph.prompt])
        self._run_block = session_callable(
            session, [graph.block_tokens, graph.block_steps, graph.block_presents],
            [graph.tokens, *graph.row_past, graph.row_used, graph.row_start, *graph.shared_past, graph.shared_lo,
             graph.shared_hi, graph.temperature, graph.top_k, graph.top_p, graph.stop_tokens, graph.max_steps,
             graph.seed],
        )
        self.encoder = encoder
        self.hparams = hparams
        self.batch_size = batch_size
        self.folder = folder
        self.checkpoint = checkpoint
        self._end_token = encoder.encoder.get(END_TOKEN)
        self._token_bytes = self._byte_table(encoder)
        self._prompt_tokens = _Recent(CONTEXT_CACHE_ENTRIES)  # prefix -> its tokens
        self._contexts = _Recent(CONTEXT_CACHE_ENTRIES)  # a prompt's tokens but the last -> _Context
        self._truncations = _Recent(CONTEXT_CACHE_ENTRIES)  # truncate text -> Truncation
        self._lock = threading.Lock()
        self._layers_heads = (hparams.n_layer, 2)
        self._head_shape = (hparams.n_head, hparams.n_embd // hparams.n_head)
        self.last_run = RunStats()

    @classmethod
    def load(
        cls,
        checkpoint_dir: str | Path,
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        run_name: str | None = None,
        checkpoint: str = "latest",
    ) -> Sampler:
        """Load a checkpoint folder (finetune's `checkpoint/run1`, or a base model such as `models/124M`).

        Parameters
        ----------
        checkpoint_dir : the folder with hparams.json, encoder.json, vocab.bpe and the checkpoint; or,
            with `run_name`, the parent folder (gpt_2_simple's `checkpoint_dir`).
        batch_size : rows sampled together (the default of `generate`).
        checkpoint : "latest" or a checkpoint name inside the folder, e.g. "model-500".
        """
        import tensorflow as tf
        from gpt_2_simple.src import encoder as gpt2_encoder
        from gpt_2_simple.src import model as gpt2

        if batch_size < 1:
            raise SamplerError(f"batch_size must be >= 1, got {batch_size}")
        folder = resolve_run_folder(checkpoint_dir, run_name)
        hparams = gpt2.default_hparams()
        hparams.override_from_dict(json.loads((folder / "hparams.json").read_text(encoding="utf-8")))
        enc = gpt2_encoder.get_encoder(str(folder))
        path = tf.train.latest_checkpoint(str(folder)) if checkpoint == "latest" else str(folder / checkpoint)
        if path is None:
            raise SamplerError(f"{folder} has no checkpoint listed in its `checkpoint` file")

        graph = tf.Graph()
        with graph.as_default():
            built = build_graph(tf, hparams)
            saver = tf.compat.v1.train.Saver(var_list=tf.compat.v1.global_variables())
        graph.finalize()
        session = tf.compat.v1.Session(graph=graph)
        try:
            saver.restore(session, path)
        except Exception:
            session.close()
            raise
        log.info("loaded %s (n_layer=%d, n_embd=%d)", path, hparams.n_layer, hparams.n_embd)
        return cls(session=session, graph=built, encoder=enc, hparams=hparams, batch_size=batch_size,
                   folder=folder, checkpoint=path)

    @staticmethod
    def _byte_table(enc) -> list[bytes]:
        """The bytes each token decodes to (the real end token decodes to the text `<|endoftext|>`)."""
        table = [b""] * len(enc.decoder)
        for token, symbols in enc.decoder.items():
            table[token] = bytes(enc.byte_decoder[c] for c in symbols)
        return table

    def _empty_shared(self) -> np.ndarray:
        n_head, head_size = self._head_shape
        return np.zeros((*self._layers_heads, n_head, 0, head_size), np.float32)

    def _empty_rows(self, rows: int, slots: int) -> np.ndarray:
        n_head, head_size = self._head_shape
        return np.zeros((*self._layers_heads, rows, n_head, slots, head_size), np.float32)

    @property
    def operation_count(self) -> int:
        """Operations in the sampling graph (constant: the graph is finalised at load)."""
        return len(self._session.graph.get_operations())

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- public sampling API ----

    def generate(self, nsamples: int = 1, **options) -> list[str]:
        """`nsamples` texts, in the order they were started; takes generate_samples' options."""
        return [sample.text for sample in self.generate_samples(nsamples, **options)]

    def generate_samples(
        self,
        nsamples: int = 1,
        length: int = 1023,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.0,
        prefix: str | None = None,
        truncate: str | None = None,
        include_prefix: bool = True,
        seed: int | None = None,
        progress: bool = False,
        batch_size: int | None = None,
    ) -> list[GeneratedSample]:
        """`nsamples` samples, in the order they were started; same seed and batch size, same texts.

        Each has its text, its `ended` flag (False: cut at `length`) and token count. Like
        gpt_2_simple.generate(return_as_list=True), except: a row stops as soon as its sample
        ends and takes the next one; `length` may exceed the model's window; `include_prefix=False`
        drops the prefix even without `truncate`; `truncate` is looked for in the generated text only.
        """
        if nsamples < 1:
            raise SamplerError(f"nsamples must be >= 1, got {nsamples}")
        request = SampleRequest(
            length=length, temperature=float(temperature), top_k=top_k, top_p=float(top_p),
            prefix=prefix or None, truncate=truncate, include_prefix=include_prefix,
        )
        samples: list[GeneratedSample | None] = [None] * nsamples
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=nsamples, unit="sample")

        def jobs() -> Iterator[SampleJob]:
            for index in range(nsamples):
                yield SampleJob(request, self._store(samples, index, bar))

        pending = jobs()
        try:
            self.run(lambda: next(pending, None), seed=seed, batch_size=batch_size)
        finally:
            if bar is not None:
                bar.close()
        return samples

    def generate_to_file(self, path: str | Path, **kwargs) -> int:
        """Write the samples to `path` in the curation format (samples separated by a line of 20 `=`).

        Takes `generate`'s arguments; returns how many samples were written. The file is written
        through a temporary file and renamed, so a crash never leaves half a file.
        """
        texts = self.generate(**kwargs)
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(join_samples(texts), encoding="utf-8")
        partial.replace(path)
        return len(texts)

    @staticmethod
    def _store(samples: list, index: int, bar) -> Callable[[GeneratedSample], None]:
        def deliver(sample: GeneratedSample) -> None:
            samples[index] = sample
            if bar is not None:
                bar.update(1)

        return deliver

    # ---- the batching loop ----

    def run(self, take_job: Callable[[], SampleJob | None], *, seed: int | None = None,
            batch_size: int | None = None) -> RunStats:
        """Sample until no row is busy and `take_job()` has nothing more (returns None).

        `take_job` is asked for a job whenever a row is free, so jobs that arrive while a batch runs
        join it. Each job's `deliver` is called with its text as soon as it is done.
        """
        batch_size = batch_size or self.batch_size
        if batch_size < 1:
            raise SamplerError(f"batch_size must be >= 1, got {batch_size}")
        with self._lock:
            self.last_run = _BatchRun(self, take_job, seed, batch_size).run()
            return self.last_run

    # ---- pieces used by _BatchRun ----

    def _prompt(self, prefix: str | None) -> list[int]:
        """The tokens a sample with this prefix starts from (cached)."""
        return self._prompt_tokens.get_or_make(prefix, lambda: self._context_tokens(prefix))

    def _context_tokens(self, prefix: str | None) -> list[int]:
        if prefix:
            tokens = self.encoder.encode(prefix)
            if len(self.encoder.cache) > ENCODER_CACHE_WORDS:
                self.encoder.cache.clear()
            if len(tokens) > self.hparams.n_ctx:
                raise SamplerError(f"prefix is {len(tokens)} tokens; the model reads at most {self.hparams.n_ctx}: "
                                   "shorten it", field="prefix")
            if tokens:
                return tokens
        if self._end_token is None:
            raise SamplerError(
                f"this vocabulary has no {END_TOKEN} token to start a sample from: give a prefix"
            )
        return [self._end_token]

    def _truncation(self, truncate: str | None) -> Truncation:
        """The stop tokens of a `truncate` text (cached: computing them reads the whole vocabulary)."""
        return self._truncations.get_or_make(truncate, lambda: Truncation(truncate, self._token_bytes, self._end_token))

    def _encode_context(self, tokens: list[int], stats: RunStats) -> _Context:
        """The keys/values of all the tokens but the last (cached per prompt)."""
        key = tuple(tokens[:-1])

        def encode() -> _Context:
            if not key:
                return _Context(tokens=key, keys_values=self._empty_shared())
            # Padding tokens after the prompt change nothing before them (attention is causal).
            padded = min(_padded(len(key)), self.hparams.n_ctx)
            (presents,) = self._run_context(np.asarray([key + (0,) * (padded - len(key))], np.int32))
            stats.context_encodings += 1
            return _Context(tokens=key, keys_values=presents[:, :, 0, :, : len(key)])

        return self._contexts.get_or_make(key, encode)


class _BatchRun:
    """The state of one `Sampler.run`: the rows, the row cache and the shared prompt cache."""

    def __init__(self, sampler: Sampler, take_job, seed: int | None, batch_size: int):
        self.sampler = sampler
        self.take_job = take_job
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.stats = RunStats()
        self.rows: list[_Row] = []
        self.n_ctx = sampler.hparams.n_ctx
        # Row cache [layers, 2, rows, heads, slot, head_size]: slots [0, used) hold earlier steps.
        self.cache = sampler._empty_rows(0, 0)
        self.used = 0
        self.rows_changed = True  # the row feeds must be rebuilt
        self.row_feeds: list[np.ndarray] = []
        self.shared_contexts: list[_Context] = []  # the prompts in the shared feed, in its order
        self.shared_feeds: list[np.ndarray] = []

    def run(self) -> RunStats:
        self._fill_free_rows()
        while self.rows:
            self._block()
            self._retire_finished_rows()
            self._fill_free_rows()
            self._compact()
        return self.stats

    # -- rows --

    def _start_row(self, job: SampleJob) -> _Row:
        context_tokens = self.sampler._prompt(job.request.prefix)
        context = self.sampler._encode_context(context_tokens, self.stats)
        return _Row(job=job, truncation=self.sampler._truncation(job.request.truncate), context=context,
                    next_token=context_tokens[-1], row_start=self.used, window_tokens=list(context_tokens))

    def _next_row(self) -> _Row | None:
        """A row for the next job that starts (None: no job is left); a job that cannot start fails alone."""
        while (job := self.take_job()) is not None:
            try:
                return self._start_row(job)
            except Exception as exc:  # noqa: BLE001 - the job gets its error; fail() re-raises without a handler
                _fail(job, exc)
        return None

    def _fill_free_rows(self) -> None:
        added = 0
        while len(self.rows) < self.batch_size:
            row = self._next_row()
            if row is None:
                break
            self.rows.append(row)
            added += 1
        if added:
            self._resize_cache_rows(list(range(len(self.rows) - added)), len(self.rows))
            self.rows_changed = True

    def _retire_finished_rows(self) -> None:
        """Give each finished row the next job (continuous batching); drop rows left without one."""
        keep = []
        for index, row in enumerate(self.rows):
            if not row.done:
                keep.append(index)
                continue
            self.rows_changed = True
            row = self._next_row()
            if row is not None:
                self.rows[index] = row
                keep.append(index)
        if len(keep) < len(self.rows):
            self.rows = [self.rows[i] for i in keep]
            self._resize_cache_rows(keep, len(keep))

    def _resize_cache_rows(self, kept: list[int], new_count: int) -> None:
        """Rebuild the row cache for a new number of rows; kept rows go first, new rows see no slot."""
        cache = self.sampler._empty_rows(new_count, self.cache.shape[4])
        if kept and self.used:
            cache[:, :, : len(kept), :, : self.used] = self.cache[:, :, kept, :, : self.used]
        self.cache = cache

    def _position(self, row: _Row) -> int:
        """Where the row's next token sits in its window."""
        return len(row.context.tokens) + self.used - row.row_start

    def _slide(self, row: _Row) -> None:
        """The row's window is full: encode its last n_ctx // 2 tokens again as its new context."""
        tokens = row.window_tokens[-(self.n_ctx // 2):]
        row.context = self.sampler._encode_context(tokens, self.stats)
        row.window_tokens = list(tokens)
        row.row_start = self.used
        self.rows_changed = True

    # -- one block of model steps --

    def _row_feeds(self) -> list[np.ndarray]:
        """Feeds that change only when rows do: row starts, prompt caches (each distinct prompt once)
        with each row's range in them, sampling parameters and stop tokens."""
        if self.rows_changed:
            contexts = list({id(row.context): row.context for row in self.rows}.values())
            if [id(c) for c in contexts] != [id(c) for c in self.shared_contexts]:
                shared = np.concatenate([c.keys_values for c in contexts], axis=3)
                padding = _padded(shared.shape[3]) - shared.shape[3]
                self.shared_feeds = _per_layer(np.pad(shared, [(0, 0)] * 3 + [(0, padding), (0, 0)]))
                self.shared_contexts = contexts
            ends = np.cumsum([len(c.tokens) for c in self.shared_contexts]).tolist()
            ranges = {id(c): (end - len(c.tokens), end) for c, end in zip(self.shared_contexts, ends)}
            requests = [row.job.request for row in self.rows]
            self.row_feeds = [
                np.array([row.row_start for row in self.rows], np.int32),
                *self.shared_feeds,
                np.array([ranges[id(row.context)][0] for row in self.rows], np.int32),
                np.array([ranges[id(row.context)][1] for row in self.rows], np.int32),
                np.array([r.temperature for r in requests], np.float32),
                np.array([r.top_k for r in requests], np.int32),
                np.array([max(r.top_p, MIN_TOP_P) if r.top_p > 0 else 0.0 for r in requests], np.float32),
                np.stack([row.truncation.stop_tokens for row in self.rows]),
            ]
            self.rows_changed = False
        return self.row_feeds

    def _block(self) -> None:
        """Up to BLOCK_STEPS steps in one session call; it stops early when a row may have ended."""
        for row in self.rows:
            if self._position(row) >= self.n_ctx:
                self._slide(row)
        max_steps = min(
            BLOCK_STEPS,
            *(self.n_ctx - self._position(row) for row in self.rows),
            *(row.job.request.length - len(row.generated) for row in self.rows),
        )
        fed = _padded(self.used)
        if self.cache.shape[4] < max(fed, self.used + max_steps):
            grown = self.sampler._empty_rows(len(self.rows), _padded(self.used + BLOCK_STEPS))
            grown[:, :, :, :, : self.used] = self.cache[:, :, :, :, : self.used]
            self.cache = grown
        tokens, steps, presents = self.sampler._run_block(
            np.array([row.next_token for row in self.rows], np.int32),
            *_per_layer(self.cache[:, :, :, :, :fed]),
            np.int32(self.used),
            *self._row_feeds(),
            np.int32(max_steps),
            self.rng.integers(0, 2**62, size=2),
        )
        steps = int(steps)
        self.cache[:, :, :, :, self.used : self.used + steps] = presents[:, :, :, :, :steps]
        self.used += steps
        self.stats.steps += steps
        self.stats.blocks += 1
        for row, row_tokens in zip(self.rows, tokens[:, :steps].tolist()):
            try:
                self._take_tokens(row, row_tokens)
            except Exception as exc:  # noqa: BLE001 - the row's job gets its error; the others go on
                row.done = True
                _fail(row.job, exc)

    def _take_tokens(self, row: _Row, tokens: list[int]) -> None:
        """The row's tokens of a block, up to where its sample ended (the rest were idle steps)."""
        request = row.job.request
        vocabulary = len(self.sampler._token_bytes)
        if not 0 <= min(tokens) <= max(tokens) < vocabulary:
            raise RuntimeError(f"the model sampled a token outside the vocabulary of {vocabulary} "
                               f"({min(tokens)}..{max(tokens)}): its logits were not finite")
        end, row.recent = row.truncation.find_end(row.recent, tokens)
        ended = end is not None
        if ended:
            tokens = tokens[: end + 1]
        row.generated += tokens
        row.window_tokens += tokens
        row.next_token = tokens[-1]
        self.stats.generated_tokens += len(tokens)
        if not ended and len(row.generated) < request.length:
            return
        text = row.truncation.text(row.generated, ended)
        if request.prefix and request.include_prefix:
            text = request.prefix + text
        row.done = True
        self.stats.samples += 1
        row.job.deliver(GeneratedSample(text=text.lstrip("\n"), ended=ended, tokens=len(row.generated)))

    def _compact(self) -> None:
        """Drop the row-cache slots no row sees any more."""
        if not self.rows:
            self.used = 0
            return
        oldest = min(row.row_start for row in self.rows)
        if oldest == 0:
            return
        self.cache[:, :, :, :, : self.used - oldest] = self.cache[:, :, :, :, oldest : self.used]
        self.used -= oldest
        for row in self.rows:
            row.row_start -= oldest
        self.rows_changed = True


def _fail(job: SampleJob, exc: Exception) -> None:
    """Give a failed job its error; a job without `fail` has the run raise it."""
    if job.fail is None:
        raise exc
    job.fail(exc)
