"""The sampling graph: GPT-2 written out for continuous batching, and the per-row logit filters.

The model is gpt_2_simple's (same variables, same checkpoint, same computation as
`gpt_2_simple.src.model`), written out here so that each row has its own positions and its own
set of visible keys, and so that a step runs few operations; a block of steps runs in a
tf.while_loop that stops early, in-graph, soon after rows sampled a token their sample may end
in. Sampling follows `gpt_2_simple.src.sample` (temperature, then top_p if it is > 0, else top_k),
with per-row parameters. ml/sampler.py drives this graph from Python (batching, rows, windows).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

BLOCK_STEPS = 16
# A block goes on after rows have sampled a token they may end in (those rows idle: what they sample
# next is thrown away) until they have idled this many steps per row of the batch in all, or until
# every row has: on a small model a session call, with Python's work between calls, costs more than
# a step, so stopping at every end to refill the row at once is slower (~15% on the tweet bench).
IDLE_STEPS_PER_ROW = 2


@dataclass
class Graph:
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


def build_graph(tf, hparams) -> Graph:
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
        filtered = filter_logits(tf, scaled, top_k, top_p)
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

    with control_flow_v1():
        block_steps, _, _, _, block_tokens, *block_cache = tf.while_loop(
            lambda step, finished, idle, *_: ((step < max_steps) & (idle < IDLE_STEPS_PER_ROW * batch)
                                              & tf.logical_not(tf.reduce_all(finished))),
            body,
            [tf.constant(0), tf.zeros([batch], tf.bool), tf.constant(0), tokens, tf.zeros([batch, BLOCK_STEPS], tf.int32), *block_cache],
            maximum_iterations=BLOCK_STEPS,
        )
    block_presents = tf.reshape(tf.stack(block_cache), [n_layer, 2, batch, n_head, BLOCK_STEPS, head_size])

    return Graph(
        prompt=prompt, prompt_presents=prompt_presents, tokens=tokens, row_past=row_past, row_used=row_used,
        row_start=row_start, shared_past=shared_past, shared_lo=shared_lo, shared_hi=shared_hi,
        temperature=temperature, top_k=top_k, top_p=top_p, stop_tokens=stop_tokens, max_steps=max_steps,
        seed=seed, block_tokens=block_tokens, block_steps=block_steps, block_presents=block_presents,
    )


def filter_logits(tf, logits, top_k, top_p):
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
def control_flow_v1() -> Iterator[None]:
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


def session_callable(session, fetches: list, feeds: list):
    """Run `fetches` from positional numpy arrays for `feeds`, returning a list of arrays.

    Session.run (and make_callable with feeds, which calls it) converts and checks every feed in
    Python on every call, a large share of a tiny model's step. TensorFlow's own
    Session._make_callable_from_options (as Keras's v1 backend uses it) hands the arrays straight
    to the C++ session; the arrays must already have the placeholders' dtypes.
    """
    from tensorflow.core.protobuf import config_pb2

    options = config_pb2.CallableOptions(feed=[t.name for t in feeds], fetch=[t.name for t in fetches])
    return session._make_callable_from_options(options)
