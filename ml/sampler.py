"""Fast sampling from gpt_2_simple checkpoints: one graph per model, early stop, continuous batching.

gpt_2_simple's `generate()` adds a new sampling graph to the session on every call and always runs
`length` steps. `Sampler` builds a one-step graph once at load (the graph is then finalised, so no call
can add an operation) and drives it from Python:

- every row of the batch carries its own sample: when a row ends (the `truncate` text appeared, the
  real end token came, or `length` tokens were made) its text is delivered and the row starts the
  next sample at once (continuous batching), so the batch stays full and no step is wasted;
- the keys/values of a prompt (`prefix`) are computed once and shared by every row that starts from
  it, so starting a sample costs no model step;
- a sample longer than the model's window slides: its last `n_ctx // 2` tokens are encoded again
  as a new context and generation goes on.

The model is gpt_2_simple's (same variables, same checkpoint, same layers from
`gpt_2_simple.src.model`); only its attention is rewritten here so that each row has its own
positions and its own set of visible keys. `tests/test_sampler.py` checks that its greedy samples
equal greedy decoding with `gpt_2_simple.src.model.model` itself. Sampling follows `gpt_2_simple.src.sample` (temperature, then top_p
if it is > 0, else top_k), with per-row parameters.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from api.tweet_text import join_samples

log = logging.getLogger(__name__)

END_OF_TEXT = "<|endoftext|>"
DEFAULT_BATCH_SIZE = 10
CONTEXT_CACHE_ENTRIES = 8
SLOT_BLOCK = 32


class SamplerError(ValueError):
    """A checkpoint or a sampling parameter is unusable; the message says what to change."""


@dataclass(frozen=True)
class SampleRequest:
    """What one sample is made from; the parameters mean what they mean in gpt_2_simple.generate.

    length : tokens to generate at most (past the model's window if need be).
    temperature : > 0; logits are divided by it.
    top_k : keep the k likeliest tokens (0: all).
    top_p : nucleus sampling, keep the likeliest tokens whose mass reaches p (0: off; overrides top_k).
    prefix : text the sample continues (None or "": start of a document).
    truncate : stop the sample where this text appears (also at the real end token); None: run to length.
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
        if not self.temperature > 0:
            raise SamplerError(f"temperature must be > 0, got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise SamplerError(f"top_k must be a whole number >= 0 (0 turns it off), got {self.top_k!r}")
        if not 0.0 <= self.top_p <= 1.0:
            raise SamplerError(f"top_p must be between 0 and 1 (0 turns it off), got {self.top_p!r}")
        if self.truncate == "":
            raise SamplerError("truncate must be None or a non-empty text")


class SampleText:
    """The bytes of one sample as tokens arrive, and where it ends.

    A sample ends at the real end token, or where the `truncate` text appears in what was generated
    (however the model spelled it in tokens: gpt_2_simple's CSV format writes `<|endoftext|>` as
    plain text, several tokens). Only the newest bytes are searched, so each token costs O(1).
    """

    def __init__(self, truncate: str | None):
        self.wanted = truncate.encode("utf-8") if truncate is not None else None
        self.data = bytearray()
        self.end: int | None = None

    def add(self, token_bytes: bytes, *, is_end_token: bool = False) -> bool:
        """Append a token's bytes; True when the sample has ended (the text is then `text()`)."""
        if self.wanted is None:
            self.data += token_bytes
            return False
        if is_end_token:
            self.end = len(self.data)
            return True
        before = len(self.data)
        self.data += token_bytes
        found = self.data.find(self.wanted, max(0, before - len(self.wanted) + 1))
        if found >= 0:
            self.end = found
            return True
        return False

    def text(self) -> str:
        data = self.data if self.end is None else self.data[: self.end]
        return bytes(data).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class GeneratedSample:
    """One finished sample."""

    text: str
    ended: bool  # the truncate text or the end token ended it; False: it ran to `length` (or no truncate)
    tokens: int  # tokens generated (the prefix not counted)


@dataclass
class SampleJob:
    """A request and where its sample goes when it is done."""

    request: SampleRequest
    deliver: Callable[[GeneratedSample], None]


@dataclass
class RunStats:
    """What one `run` did: model steps (one token for every row), prompt encodings, samples, tokens."""

    steps: int = 0
    context_encodings: int = 0
    samples: int = 0
    generated_tokens: int = 0


@dataclass
class _Context:
    """A prompt's tokens but the last, with their keys/values [tokens, layers, 2, heads, head_size]."""

    tokens: tuple[int, ...]
    keys_values: np.ndarray


@dataclass
class _Row:
    """One sample in progress."""

    job: SampleJob
    context: _Context
    next_token: int           # fed at the next step (the context's last token, then each sampled one)
    row_start: int            # first slot of the row cache this sample sees
    window_tokens: list[int]  # the tokens of the current window: context, then generated
    text: SampleText
    generated_count: int = 0
    done: bool = False


@dataclass
class _Graph:
    tokens: object
    row_past: list       # per layer: keys, values [B, heads, S, head_size]
    row_used: object
    row_start: object
    shared_past: list    # per layer: keys, values [heads, Sp, head_size]
    shared_lo: object
    shared_hi: object
    temperature: object
    top_k: object
    top_p: object
    seed: object
    next_tokens: object
    logits: object
    presents: object


def _build_graph(tf, hparams) -> _Graph:
    """The one-step sampling graph, with the model's variables under `model/` as gpt_2_simple names them.

    Feeds: `tokens` [B, T]; `row_past`, each layer's keys and values of earlier steps
    [B, heads, S, head_size], of which the first `row_used` slots hold data and row b sees those from
    row_start[b] on; `shared_past`, each layer's prompt
    keys and values [heads, Sp, head_size] shared by rows, row b seeing [shared_lo[b], shared_hi[b]).
    Outputs: next token and last-position logits per row, and `presents`
    [layers, 2, B, heads, T, head_size].
    """
    from gpt_2_simple.src import model as gpt2

    n_head, n_embd = hparams.n_head, hparams.n_embd
    head_size = n_embd // n_head
    v1 = tf.compat.v1

    def cache_placeholders(shape, name):
        return [v1.placeholder(tf.float32, shape, name=f"{name}_{layer}_{kind}")
                for layer in range(hparams.n_layer) for kind in ("keys", "values")]

    tokens = v1.placeholder(tf.int32, [None, None], name="tokens")
    row_past = cache_placeholders([None, n_head, None, head_size], "row_past")
    row_used = v1.placeholder(tf.int32, [], name="row_used")
    row_start = v1.placeholder(tf.int32, [None], name="row_start")
    shared_past = cache_placeholders([n_head, None, head_size], "shared_past")
    shared_lo = v1.placeholder(tf.int32, [None], name="shared_lo")
    shared_hi = v1.placeholder(tf.int32, [None], name="shared_hi")
    temperature = v1.placeholder(tf.float32, [None], name="temperature")
    top_k = v1.placeholder(tf.int32, [None], name="top_k")
    top_p = v1.placeholder(tf.float32, [None], name="top_p")
    seed = v1.placeholder(tf.int64, [2], name="seed")

    batch, steps = tf.shape(tokens)[0], tf.shape(tokens)[1]
    row_slots, shared_slots = tf.shape(row_past[0])[2], tf.shape(shared_past[0])[1]

    # Row b's first new token sits after its shared prompt and the row slots it sees.
    first_position = (shared_hi - shared_lo) + (row_used - row_start)
    positions = first_position[:, None] + tf.range(steps)[None, :]

    # Which keys each query may see: [B, 1, T, Sp + S + T], 1.0 = visible.
    shared_index = tf.range(shared_slots)[None, :]
    shared_visible = (shared_index >= shared_lo[:, None]) & (shared_index < shared_hi[:, None])
    row_index = tf.range(row_slots)[None, :]
    row_visible = (row_index >= row_start[:, None]) & (row_index < row_used)
    causal = tf.range(steps)[:, None] >= tf.range(steps)[None, :]
    visible = tf.concat(
        [
            tf.broadcast_to(shared_visible[:, None, None, :], [batch, 1, steps, shared_slots]),
            tf.broadcast_to(row_visible[:, None, None, :], [batch, 1, steps, row_slots]),
            tf.broadcast_to(causal[None, None, :, :], [batch, 1, steps, steps]),
        ],
        axis=-1,
    )
    mask = tf.cast(visible, tf.float32)

    def split_heads(x):
        return tf.transpose(gpt2.split_states(x, n_head), [0, 2, 1, 3])

    def attention(x, layer):
        # gpt_2_simple.src.model.attn over [shared prompt | row cache | new tokens], per-row visibility.
        with v1.variable_scope("attn"):
            c = gpt2.conv1d(x, "c_attn", n_embd * 3)
            q, k, v = map(split_heads, tf.split(c, 3, axis=2))
            present = tf.stack([k, v], axis=0)
            shared_shape = [batch, n_head, shared_slots, head_size]
            keys = tf.concat(
                [tf.broadcast_to(shared_past[2 * layer][None], shared_shape), row_past[2 * layer], k], axis=-2
            )
            values = tf.concat(
                [tf.broadcast_to(shared_past[2 * layer + 1][None], shared_shape), row_past[2 * layer + 1], v],
                axis=-2,
            )
            w = tf.matmul(q, keys, transpose_b=True)
            w = w * tf.math.rsqrt(tf.cast(head_size, w.dtype))
            w = w * mask - tf.cast(1e10, w.dtype) * (1 - mask)
            a = tf.matmul(gpt2.softmax(w), values)
            a = gpt2.merge_states(tf.transpose(a, [0, 2, 1, 3]))
            return gpt2.conv1d(a, "c_proj", n_embd), present

    with v1.variable_scope("model"):
        wpe = v1.get_variable("wpe", [hparams.n_ctx, n_embd])
        wte = v1.get_variable("wte", [hparams.n_vocab, n_embd])
        h = tf.gather(wte, tokens) + tf.gather(wpe, positions)
        presents = []
        for layer in range(hparams.n_layer):
            with v1.variable_scope(f"h{layer}"):
                a, present = attention(gpt2.norm(h, "ln_1"), layer)
                h = h + a
                h = h + gpt2.mlp(gpt2.norm(h, "ln_2"), "mlp", n_embd * 4, hparams=hparams)
                presents.append(present)
        h = gpt2.norm(h, "ln_f")
        logits = tf.matmul(h[:, -1, :], wte, transpose_b=True)  # [B, vocab]

    presents = tf.stack(presents, axis=0)

    scaled = logits / temperature[:, None]

    def filtered():
        # gpt_2_simple.src.sample's top_k_logits and top_p_logits, with k and p per row.
        sorted_logits = tf.sort(scaled, direction="DESCENDING")
        kth = tf.gather(sorted_logits, tf.clip_by_value(top_k, 1, hparams.n_vocab) - 1, batch_dims=1)
        cumulative = tf.cumsum(tf.nn.softmax(sorted_logits), axis=1, exclusive=True)
        nucleus_min = tf.reduce_min(
            tf.where(cumulative < top_p[:, None], sorted_logits, tf.ones_like(sorted_logits) * 1000), axis=1
        )
        no_limit = tf.fill(tf.shape(kth), -np.inf)
        threshold = tf.where(top_p > 0, nucleus_min, tf.where(top_k > 0, kth, no_limit))
        return tf.where(scaled < threshold[:, None], tf.ones_like(scaled) * -1e10, scaled)

    needs_filter = tf.reduce_any((top_k > 0) | (top_p > 0))
    sampling_logits = tf.cond(needs_filter, filtered, lambda: scaled)
    next_tokens = tf.random.stateless_categorical(sampling_logits, 1, seed, dtype=tf.int32)[:, 0]

    return _Graph(
        tokens=tokens, row_past=row_past, row_used=row_used, row_start=row_start, shared_past=shared_past,
        shared_lo=shared_lo, shared_hi=shared_hi, temperature=temperature, top_k=top_k, top_p=top_p,
        seed=seed, next_tokens=next_tokens, logits=logits, presents=presents,
    )


def _session_callable(session, fetches: list, feeds: list):
    """Run `fetches` from positional numpy arrays for `feeds`, returning a list of arrays.

    Session.run (and make_callable with feeds, which calls it) converts and checks every feed in
    Python on every call: ~2 ms, a third of a tiny model's step. TensorFlow's own
    Session._make_callable_from_options (as Keras's v1 backend uses it) hands the arrays straight
    to the C++ session; the arrays must already have the placeholders' dtypes.
    """
    from tensorflow.core.protobuf import config_pb2

    options = config_pb2.CallableOptions(feed=[t.name for t in feeds], fetch=[t.name for t in fetches])
    return session._make_callable_from_options(options)


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

    def __init__(self, *, session, graph: _Graph, encoder, hparams, batch_size: int, folder: Path, checkpoint: str):
        self._session = session
        self._graph = graph
        context_feeds = [graph.tokens, *graph.row_past, graph.row_used, graph.row_start, *graph.shared_past,
                         graph.shared_lo, graph.shared_hi]
        self._run_context = _session_callable(session, [graph.presents], context_feeds)
        self._run_step = _session_callable(
            session, [graph.next_tokens, graph.presents],
            [*context_feeds, graph.temperature, graph.top_k, graph.top_p, graph.seed],
        )
        self.encoder = encoder
        self.hparams = hparams
        self.batch_size = batch_size
        self.folder = folder
        self.checkpoint = checkpoint
        self._end_token = encoder.encoder.get(END_OF_TEXT)
        self._token_bytes = self._byte_table(encoder)
        self._contexts: OrderedDict[tuple[int, ...], _Context] = OrderedDict()
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
            built = _build_graph(tf, hparams)
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

    def generate(
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
    ) -> list[str]:
        """`nsamples` texts, in the order they were started; same seed and batch size, same texts.

        Like gpt_2_simple.generate(return_as_list=True), except: a row stops as soon as its sample
        ends and takes the next one; `length` may exceed the model's window; `include_prefix=False`
        drops the prefix even without `truncate`; `truncate` is looked for in the generated text only.
        """
        return [sample.text for sample in self.generate_samples(
            nsamples=nsamples, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
            prefix=prefix, truncate=truncate, include_prefix=include_prefix, seed=seed,
            progress=progress, batch_size=batch_size,
        )]

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
        """As `generate`, with each text's `ended` flag (False: cut at `length`) and token count."""
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

    def _context_tokens(self, prefix: str | None) -> list[int]:
        if prefix:
            tokens = self.encoder.encode(prefix)
            if tokens:
                return tokens
        if self._end_token is None:
            raise SamplerError(
                f"this vocabulary has no {END_OF_TEXT} token to start a sample from: give a prefix"
            )
        return [self._end_token]

    def _encode_context(self, tokens: list[int], stats: RunStats) -> _Context:
        """The keys/values of all the tokens but the last (cached per prompt)."""
        key = tuple(tokens[:-1])
        cached = self._contexts.get(key)
        if cached is not None:
            self._contexts.move_to_end(key)
            return cached
        if key:
            # Padding tokens after the prompt change nothing before them (attention is causal).
            padded = min(_padded(len(key)), self.hparams.n_ctx)
            zero = np.zeros(1, np.int32)
            (presents,) = self._run_context(
                np.asarray([key + (0,) * (padded - len(key))], np.int32), *_per_layer(self._empty_rows(1, 0)),
                np.int32(0), zero, *_per_layer(self._empty_shared()), zero, zero,
            )
            keys_values = presents[:, :, 0, :, : len(key)]
            stats.context_encodings += 1
        else:
            keys_values = self._empty_shared()
        context = _Context(tokens=key, keys_values=keys_values)
        self._contexts[key] = context
        while len(self._contexts) > CONTEXT_CACHE_ENTRIES:
            self._contexts.popitem(last=False)
        return context


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
        self.cache = sampler._empty_rows(0, 64)
        self.used = 0
        self.row_feeds_key: tuple | None = None
        self.row_feeds: list[np.ndarray] = []

    def run(self) -> RunStats:
        self._fill_free_rows()
        while self.rows:
            self._step()
            self._retire_finished_rows()
            self._fill_free_rows()
            self._compact()
        return self.stats

    # -- rows --

    def _start_row(self, job: SampleJob, context_tokens: list[int]) -> _Row:
        if len(context_tokens) > self.n_ctx:
            context_tokens = context_tokens[-(self.n_ctx // 2):]
        context = self.sampler._encode_context(context_tokens, self.stats)
        return _Row(job=job, context=context, next_token=context_tokens[-1], row_start=self.used,
                    window_tokens=list(context_tokens), text=SampleText(job.request.truncate))

    def _fill_free_rows(self) -> None:
        added = 0
        while len(self.rows) < self.batch_size:
            job = self.take_job()
            if job is None:
                break
            self.rows.append(self._start_row(job, self.sampler._context_tokens(job.request.prefix)))
            added += 1
        if added:
            self._resize_cache_rows(list(range(len(self.rows) - added)), len(self.rows))

    def _retire_finished_rows(self) -> None:
        """Give each finished row the next job (continuous batching); drop rows left without one."""
        keep = []
        for index, row in enumerate(self.rows):
            if not row.done:
                keep.append(index)
                continue
            job = self.take_job()
            if job is not None:
                self.rows[index] = self._start_row(job, self.sampler._context_tokens(job.request.prefix))
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

    def _slide(self, row: _Row) -> None:
        """The row's window is full: encode its last n_ctx // 2 tokens again as its new context."""
        tokens = row.window_tokens[-(self.n_ctx // 2):]
        row.context = self.sampler._encode_context(tokens, self.stats)
        row.window_tokens = list(tokens)
        row.row_start = self.used

    # -- one model step --

    def _row_feeds(self) -> list[np.ndarray]:
        """Feeds that change only when rows do: row starts, prompt caches (each distinct prompt once)
        with each row's range in them, and sampling parameters. Rebuilt when a row changes."""
        key = tuple((id(row), row.row_start, id(row.context)) for row in self.rows)
        if key != self.row_feeds_key:
            parts, ranges, offset = [], {}, 0
            for row in self.rows:
                if id(row.context) not in ranges:
                    size = len(row.context.tokens)
                    ranges[id(row.context)] = (offset, offset + size)
                    parts.append(row.context.keys_values)
                    offset += size
            shared = np.concatenate(parts, axis=3) if parts else self.sampler._empty_shared()
            padding = _padded(shared.shape[3]) - shared.shape[3]
            shared = np.pad(shared, [(0, 0)] * 3 + [(0, padding), (0, 0)])
            requests = [row.job.request for row in self.rows]
            self.row_feeds = [
                np.array([row.row_start for row in self.rows], np.int32),
                *_per_layer(shared),
                np.array([ranges[id(row.context)][0] for row in self.rows], np.int32),
                np.array([ranges[id(row.context)][1] for row in self.rows], np.int32),
                np.array([r.temperature for r in requests], np.float32),
                np.array([r.top_k for r in requests], np.int32),
                np.array([r.top_p for r in requests], np.float32),
            ]
            self.row_feeds_key = key
        return self.row_feeds

    def _step(self) -> None:
        for row in self.rows:
            position = len(row.context.tokens) + self.used - row.row_start
            if position >= self.n_ctx:
                self._slide(row)
        if self.used == self.cache.shape[4]:
            grown = self.sampler._empty_rows(len(self.rows), 2 * self.used)
            grown[:, :, :, :, : self.used] = self.cache
            self.cache = grown
        fed = min(_padded(self.used), self.cache.shape[4])
        next_tokens, presents = self.sampler._run_step(
            np.array([[row.next_token] for row in self.rows], np.int32),
            *_per_layer(self.cache[:, :, :, :, :fed]),
            np.int32(self.used),
            *self._row_feeds(),
            self.rng.integers(0, 2**62, size=2),
        )
        self.cache[:, :, :, :, self.used] = presents[:, :, :, :, 0]
        self.used += 1
        self.stats.steps += 1
        for row, token in zip(self.rows, next_tokens.tolist()):
            self._take_token(row, token)

    def _take_token(self, row: _Row, token: int) -> None:
        request = row.job.request
        row.generated_count += 1
        self.stats.generated_tokens += 1
        ended = row.text.add(self.sampler._token_bytes[token], is_end_token=token == self.sampler._end_token)
        if not ended and row.generated_count < request.length:
            row.next_token = token
            row.window_tokens.append(token)
            return
        text = row.text.text()
        if request.prefix and request.include_prefix:
            text = request.prefix + text
        row.done = True
        self.stats.samples += 1
        row.job.deliver(GeneratedSample(text=text.lstrip("\n"), ended=ended, tokens=row.generated_count))

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
