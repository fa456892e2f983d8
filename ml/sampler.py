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

The model is gpt_2_simple's (same variables, same checkpoint, same computation as
`gpt_2_simple.src.model`), written out here so that each row has its own positions and its own
set of visible keys, and so that a step runs few operations. `tests/test_sampler.py` checks that
its greedy samples equal greedy decoding with `gpt_2_simple.src.model.model` itself. Sampling
follows `gpt_2_simple.src.sample` (temperature, then top_p if it is > 0, else top_k), with per-row
parameters.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.tweet_text import END_TOKEN, join_samples

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 10
CONTEXT_CACHE_ENTRIES = 8
# gpt_2_simple's encoder keeps the tokens of every word it has seen; past this many it starts afresh.
ENCODER_CACHE_WORDS = 10_000
SLOT_BLOCK = 32
BLOCK_STEPS = 16
# A block goes on after rows have sampled a token they may end in (those rows idle: what they sample
# next is thrown away) until they have idled this many steps per row of the batch in all, or until
# every row has: on a small model a session call, with Python's work between calls, costs more than
# a step, so stopping at every end to refill the row at once is slower (~15% on the tweet bench).
IDLE_STEPS_PER_ROW = 2

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


@dataclass
class _Graph:
    prompt: object       # [1, T] tokens of a prompt
    prompt_presents: object
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
    stop_tokens: object
    max_steps: object
    seed: object
    block_tokens: object
    block_steps: object
    block_presents: object


def _build_graph(tf, hparams) -> _Graph:
    """The sampling graph, with the model's variables under `model/` as gpt_2_simple names them.

    Two parts share the variables:

    - prompt encoding: `prompt` [1, T] -> `prompt_presents` [layers, 2, 1, heads, T, head_size];
    - a block of up to BLOCK_STEPS sampling steps in one tf.while_loop. Feeds: `tokens` [B], each
      row's next input token; `row_past`, each layer's keys and values of earlier steps
      [B, heads, S, head_size], of which the first `row_used` slots hold data and row b sees those
      from row_start[b] on; `shared_past`, each layer's prompt keys and values [heads, Sp, head_size]
      shared by rows, row b seeing [shared_lo[b], shared_hi[b]); per-row sampling parameters;
      `stop_tokens` [B, vocab], the tokens in which row b's sample may end; `max_steps`.
      The loop runs `max_steps` steps, or fewer: it stops when every row has sampled one of its
      stop tokens, or when the rows that did have idled IDLE_STEPS_PER_ROW steps per row in all.
      Outputs: `block_tokens` [B, BLOCK_STEPS] (the first `block_steps` columns were sampled) and
      `block_presents` [layers, 2, B, heads, BLOCK_STEPS, head_size].

    On a small model a step's cost is mostly the fixed cost of its operations, so the loop body
    keeps few: the variables are read once per call, tokens are rows of 2-D tensors (no shape
    arithmetic or transposes), and attention reads the prompts, the rows' earlier steps and the
    block's steps where they are, one matmul each, instead of copying them into one cache every
    call (1,000 tweet samples: 3.8 s -> 3.3 s).
    """
    from gpt_2_simple.src import model as gpt2

    n_head, n_embd, n_layer = hparams.n_head, hparams.n_embd, hparams.n_layer
    head_size = n_embd // n_head
    v1 = tf.compat.v1

    def cache_placeholders(shape, name):
        return [v1.placeholder(tf.float32, shape, name=f"{name}_{layer}_{kind}")
                for layer in range(n_layer) for kind in ("keys", "values")]

    prompt = v1.placeholder(tf.int32, [1, None], name="prompt")
    tokens = v1.placeholder(tf.int32, [None], name="tokens")
    row_past = cache_placeholders([None, n_head, None, head_size], "row_past")
    row_used = v1.placeholder(tf.int32, [], name="row_used")
    row_start = v1.placeholder(tf.int32, [None], name="row_start")
    shared_past = cache_placeholders([n_head, None, head_size], "shared_past")
    shared_lo = v1.placeholder(tf.int32, [None], name="shared_lo")
    shared_hi = v1.placeholder(tf.int32, [None], name="shared_hi")
    temperature = v1.placeholder(tf.float32, [None], name="temperature")
    top_k = v1.placeholder(tf.int32, [None], name="top_k")
    top_p = v1.placeholder(tf.float32, [None], name="top_p")
    stop_tokens = v1.placeholder(tf.bool, [None, hparams.n_vocab], name="stop_tokens")
    max_steps = v1.placeholder(tf.int32, [], name="max_steps")
    seed = v1.placeholder(tf.int64, [2], name="seed")

    # gpt_2_simple.src.model's variables (conv1d weights [1, in, out]), each read once per call.
    def weight(name, shape):
        value = tf.identity(v1.get_variable(name, shape))
        return tf.reshape(value, shape[1:]) if name == "w" else value

    def norm_weights(scope):
        with v1.variable_scope(scope):
            return weight("g", [n_embd]), weight("b", [n_embd])

    def conv_weights(scope, n_in, n_out):
        with v1.variable_scope(scope):
            return weight("w", [1, n_in, n_out]), weight("b", [n_out])

    layers = []
    with v1.variable_scope("model"):
        wpe = weight("wpe", [hparams.n_ctx, n_embd])
        wte = weight("wte", [hparams.n_vocab, n_embd])
        for layer in range(n_layer):
            with v1.variable_scope(f"h{layer}"):
                ln_1 = norm_weights("ln_1")
                with v1.variable_scope("attn"):
                    c_attn, attn_proj = conv_weights("c_attn", n_embd, 3 * n_embd), conv_weights("c_proj", n_embd, n_embd)
                ln_2 = norm_weights("ln_2")
                with v1.variable_scope("mlp"):
                    c_fc, mlp_proj = conv_weights("c_fc", n_embd, 4 * n_embd), conv_weights("c_proj", 4 * n_embd, n_embd)
            layers.append((ln_1, c_attn, attn_proj, ln_2, c_fc, mlp_proj))
        ln_f = norm_weights("ln_f")

    def norm(x, weights, epsilon=1e-5):
        # gpt_2_simple.src.model.norm
        g, b = weights
        u = tf.reduce_mean(x, axis=-1, keepdims=True)
        s = tf.reduce_mean(tf.square(x - u), axis=-1, keepdims=True)
        return (x - u) * tf.math.rsqrt(s + epsilon) * g + b

    def conv1d(x, weights):
        w, b = weights
        return tf.matmul(x, w) + b

    def transformer(x_tokens, positions, attend):
        """gpt_2_simple.src.model.model on rows of tokens [N] at `positions` [N], with `attend(layer,
        q, k, v)` ([N, n_embd] each) as the attention; the logits of every row [N, vocab]."""
        h = tf.gather(wte, x_tokens) + tf.gather(wpe, positions)
        for layer, (ln_1, c_attn, attn_proj, ln_2, c_fc, mlp_proj) in enumerate(layers):
            q, k, v = tf.split(conv1d(norm(h, ln_1), c_attn), 3, axis=1)
            h = h + conv1d(attend(layer, q, k, v), attn_proj)
            h = h + conv1d(gpt2.gelu(conv1d(norm(h, ln_2), c_fc)), mlp_proj)
        return tf.matmul(norm(h, ln_f), wte, transpose_b=True)

    def attention(q, keys, values, bias):
        """gpt_2_simple.src.model.multihead_attn over keys and values given in parts (the same parts of
        the key axis in both; a part's batch may be 1, broadcast). `bias` is 0 where a key of the parts,
        in order, is visible, -1e10 elsewhere."""
        # q is scaled rather than the scores (the same numbers when the head size is a power of 4, as in every
        # GPT-2). BatchMatMulV3 rather than tf.matmul's V2: oneDNN swaps V2 for its own kernel, which is
        # many times slower on these one-query shapes (a large share of a tiny model's step); TensorFlow's
        # V3 kernel is not, and is no slower on 124M's shapes (figures: the README's speed section,
        # bench_generation_124m).
        scaled_q = q * tf.math.rsqrt(tf.cast(head_size, tf.float32))
        scores = [tf.raw_ops.BatchMatMulV3(x=scaled_q, y=part, Tout=tf.float32, adj_y=True) for part in keys]
        w = gpt2.softmax(tf.concat(scores, axis=-1) + bias)  # one part: the concat is an identity
        if len(scores) == 1:
            return tf.raw_ops.BatchMatMulV3(x=w, y=values[0], Tout=tf.float32)
        weights = tf.split(w, tf.stack([tf.shape(part)[-1] for part in scores]), axis=-1, num=len(scores))
        return tf.add_n([tf.raw_ops.BatchMatMulV3(x=part_w, y=part, Tout=tf.float32)
                         for part_w, part in zip(weights, values)])

    # -- prompt encoding: the rows are the prompt's tokens --
    prompt_steps = tf.shape(prompt)[1]
    causal_bias = tf.where(tf.range(prompt_steps)[:, None] >= tf.range(prompt_steps)[None, :], 0.0, -1e10)
    prompt_presents = []

    def attend_prompt(layer, q, k, v):
        q, k, v = (tf.transpose(tf.reshape(x, [1, -1, n_head, head_size]), [0, 2, 1, 3]) for x in (q, k, v))
        prompt_presents.append(tf.stack([k, v]))
        a = attention(q, [k], [v], causal_bias)
        return tf.reshape(tf.transpose(a, [0, 2, 1, 3]), [-1, n_embd])

    transformer(prompt[0], tf.range(prompt_steps), attend_prompt)
    prompt_presents = tf.stack(prompt_presents)

    # -- a block of sampling steps: the rows are the batch's rows, one token each --
    batch = tf.shape(tokens)[0]
    row_slots, shared_slots = tf.shape(row_past[0])[2], tf.shape(shared_past[0])[1]
    # Row b's first new token sits after its shared prompt and the row slots it sees.
    first_position = (shared_hi - shared_lo) + (row_used - row_start)

    # A step attends to three parts, each used where it is (no copy into one cache): the prompts
    # [1, heads, Sp, head_size] (one copy for every row), the rows' earlier steps [B, heads, S, head_size],
    # and the block's own steps [B, heads, BLOCK_STEPS, head_size], each step's in its slot.
    # Keys visible before the block [B, 1, 1, Sp + S]; at step i, block slots [0, i] are visible too.
    shared_index, row_index = tf.range(shared_slots)[None, :], tf.range(row_slots)[None, :]
    visible = tf.concat([(shared_index >= shared_lo[:, None]) & (shared_index < shared_hi[:, None]),
                         (row_index >= row_start[:, None]) & (row_index < row_used)], axis=1)
    past_bias = tf.where(visible, 0.0, -1e10)[:, None, None, :]
    block_slot = tf.range(BLOCK_STEPS)
    block_hidden = tf.fill([batch, 1, 1, BLOCK_STEPS], -1e10)
    block_cache = [tf.zeros([batch, n_head, BLOCK_STEPS, head_size])] * (2 * n_layer)

    def sample(logits, step):
        # gpt_2_simple.src.sample: temperature, then top_p if > 0, else top_k if > 0; per row.
        scaled = logits / temperature[:, None]
        filtered = _filter_logits(tf, scaled, top_k, top_p)
        step_seed = seed + tf.stack([tf.constant(0, tf.int64), tf.cast(step, tf.int64)])
        return tf.random.stateless_categorical(filtered, 1, step_seed, dtype=tf.int32)[:, 0]

    def body(step, finished, idle, step_tokens, sampled, *block_cache):
        at_step = tf.equal(block_slot, step)  # [BLOCK_STEPS]: the block slot this step fills
        at_slot = at_step[:, None]  # where the step's keys/values go in [..., BLOCK_STEPS, head_size]
        bias = tf.concat([past_bias, tf.where(block_slot <= step, 0.0, block_hidden)], axis=-1)
        block_cache = list(block_cache)

        def attend_block(layer, q, k, v):
            parts = []
            for kind, new in enumerate((k, v)):
                index = 2 * layer + kind
                block_cache[index] = tf.where(at_slot, tf.reshape(new, [-1, n_head, 1, head_size]), block_cache[index])
                parts.append([shared_past[index][None], row_past[index], block_cache[index]])
            a = attention(tf.reshape(q, [-1, n_head, 1, head_size]), *parts, bias)
            return tf.reshape(a, [-1, n_embd])

        next_tokens = sample(transformer(step_tokens, first_position + step, attend_block), step)
        sampled = tf.where(at_step[None, :], next_tokens[:, None], sampled)
        idle += tf.reduce_sum(tf.cast(finished, tf.int32))
        finished |= tf.gather(stop_tokens, next_tokens[:, None], batch_dims=1)[:, 0]
        return [step + 1, finished, idle, next_tokens, sampled, *block_cache]

    with _control_flow_v1():
        block_steps, _, _, _, block_tokens, *block_cache = tf.while_loop(
            lambda step, finished, idle, *_: ((step < max_steps) & (idle < IDLE_STEPS_PER_ROW * batch)
                                              & tf.logical_not(tf.reduce_all(finished))),
            body,
            [tf.constant(0), tf.zeros([batch], tf.bool), tf.constant(0), tokens, tf.zeros([batch, BLOCK_STEPS], tf.int32), *block_cache],
            maximum_iterations=BLOCK_STEPS,
        )
    block_presents = tf.reshape(tf.stack(block_cache), [n_layer, 2, batch, n_head, BLOCK_STEPS, head_size])

    return _Graph(
        prompt=prompt, prompt_presents=prompt_presents, tokens=tokens, row_past=row_past, row_used=row_used,
        row_start=row_start, shared_past=shared_past, shared_lo=shared_lo, shared_hi=shared_hi,
        temperature=temperature, top_k=top_k, top_p=top_p, stop_tokens=stop_tokens, max_steps=max_steps,
        seed=seed, block_tokens=block_tokens, block_steps=block_steps, block_presents=block_presents,
    )


def _filter_logits(tf, logits, top_k, top_p):
    """gpt_2_simple's top_p and top_k filters, per row: logits below the row's threshold become -1e10.

    The threshold is, for a row with top_p > 0, the smallest logit of its nucleus (the likeliest
    tokens before their probabilities add up to top_p); else, with top_k > 0, its k-th largest
    logit; else none. The logits are ranked as far as a row needs: all of them (a sort, as
    tf.sort does it) only when a row has top_p, else the largest top_k. Sorting a batch of GPT-2's
    whole vocabulary is a large share of a 124M step (figures: the README's speed section).
    """
    from gpt_2_simple.src import model as gpt2

    vocabulary = tf.shape(logits)[1]
    needed = tf.where(tf.reduce_any(top_p > 0), vocabulary, tf.clip_by_value(tf.reduce_max(top_k), 1, vocabulary))
    ranked = tf.math.top_k(logits, k=needed).values
    kth = tf.gather(ranked, tf.clip_by_value(top_k, 1, needed) - 1, batch_dims=1)
    cumulative = tf.cumsum(gpt2.softmax(ranked), axis=1, exclusive=True)  # used only when all are ranked
    # gpt_2_simple puts 1000 where this puts inf: with logits above 1000 (a cold temperature) it would keep them all.
    nucleus_min = tf.reduce_min(tf.where(cumulative < top_p[:, None], ranked, np.inf), axis=1)
    threshold = tf.where(top_p > 0, nucleus_min, tf.where(top_k > 0, kth, -np.inf))
    return tf.where(logits < threshold[:, None], -1e10, logits)


@contextmanager
def _control_flow_v1() -> Iterator[None]:
    """Build loops with TensorFlow 1's control flow (Enter/Exit frames).

    TensorFlow 2's while loop passes every tensor its body reads from outside (weights, masks,
    sampling parameters) through each iteration as a loop variable, four operations each a step;
    TensorFlow 1's loop lets them enter once per call.
    """
    from tensorflow.python.ops import control_flow_util

    enabled = control_flow_util.ENABLE_CONTROL_FLOW_V2
    control_flow_util.ENABLE_CONTROL_FLOW_V2 = False
    try:
        yield
    finally:
        control_flow_util.ENABLE_CONTROL_FLOW_V2 = enabled


def _session_callable(session, fetches: list, feeds: list):
    """Run `fetches` from positional numpy arrays for `feeds`, returning a list of arrays.

    Session.run (and make_callable with feeds, which calls it) converts and checks every feed in
    Python on every call, a large share of a tiny model's step. TensorFlow's own
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
        self._run_context = _session_callable(session, [graph.prompt_presents], [graph.prompt])
        self._run_block = _session_callable(
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
