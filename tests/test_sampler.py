"""ml.sampler on the tiny model: same outputs as gpt_2_simple's model, early stop, batching, sliding window."""
from __future__ import annotations

import json
from contextlib import contextmanager

import numpy as np
import pytest

from core.tweet_text import END_TOKEN, join_samples
from ml import sampler as sampler_module
from ml.sampler import CONTEXT_CACHE_ENTRIES, MAX_TRUNCATE_CHARS, SampleJob, SampleRequest, Sampler, SamplerError, Truncation
from ml.tiny import write_tiny_run

pytestmark = pytest.mark.ml

PREFIX = "<|startoftext|>"
ATTENTION_SCALE = 6.0


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_tiny_run(root / "checkpoint", "run1", root / "models")


@pytest.fixture(scope="module")
def sampler(run_folder):
    with Sampler.load(run_folder, batch_size=4) as loaded:
        yield loaded


@contextmanager
def gpt_2_simple_greedy(run_folder):
    """Greedy decoding with gpt_2_simple's own model.model, re-reading the whole sequence each step."""
    import tensorflow as tf
    from gpt_2_simple.src import model

    hparams = model.default_hparams()
    hparams.override_from_dict(json.loads((run_folder / "hparams.json").read_text()))
    graph = tf.Graph()
    with graph.as_default():
        tokens = tf.compat.v1.placeholder(tf.int32, [1, None])
        logits = model.model(hparams=hparams, X=tokens)["logits"][0, -1]
        saver = tf.compat.v1.train.Saver()
    session = tf.compat.v1.Session(graph=graph)
    saver.restore(session, tf.train.latest_checkpoint(str(run_folder)))

    def greedy(context: list[int], steps: int) -> list[int]:
        sequence = list(context)
        for _ in range(steps):
            sequence.append(int(np.argmax(session.run(logits, {tokens: [sequence]}))))
        return sequence[len(context):]

    try:
        yield greedy
    finally:
        session.close()


@pytest.fixture(scope="module")
def greedy_reference(run_folder):
    with gpt_2_simple_greedy(run_folder) as greedy:
        yield greedy


@pytest.fixture(scope="module")
def sharp_run_folder(run_folder, tmp_path_factory):
    """The tiny run with its attention weights scaled up. At the random start's small weights attention
    barely moves the logits, so greedy tokens would not show a wrong key, value or mask; here they do."""
    import shutil

    import tensorflow as tf

    folder = tmp_path_factory.mktemp("sharp") / "run1"
    shutil.copytree(run_folder, folder)
    reader = tf.train.load_checkpoint(str(run_folder))
    graph = tf.Graph()
    with graph.as_default():
        variables = [
            tf.compat.v1.Variable(reader.get_tensor(name) * (ATTENTION_SCALE if "/attn/" in name else 1.0), name=name)
            for name in reader.get_variable_to_shape_map()
        ]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(variables).save(session, str(folder / "model"), global_step=0)
    return folder


def decode(sampler: Sampler, tokens: list[int]) -> str:
    return b"".join(sampler._token_bytes[t] for t in tokens).decode("utf-8", errors="replace")


def test_greedy_samples_equal_gpt_2_simple_models_greedy_decoding(sampler, greedy_reference):
    for prefix in (PREFIX, "hello", None):
        context = sampler.encoder.encode(prefix) if prefix else [sampler.encoder.encoder[END_TOKEN]]
        expected = decode(sampler, greedy_reference(context, 12))
        texts = sampler.generate(nsamples=2, length=12, top_k=1, prefix=prefix, include_prefix=False)
        assert texts == [expected.lstrip("\n")] * 2


def test_greedy_samples_equal_gpt_2_simple_models_where_attention_decides(sharp_run_folder):
    """Rows with prompts of different lengths in one batch, over several blocks of steps: each row's keys
    come from the shared prompts, the earlier blocks and its own block, and any mistake in one shows."""
    prefixes = ("hello there", PREFIX, None, "a")
    with gpt_2_simple_greedy(sharp_run_folder) as greedy, Sampler.load(sharp_run_folder, batch_size=len(prefixes)) as sharp:
        expected = []
        for prefix in prefixes:
            context = sharp.encoder.encode(prefix) if prefix else [sharp.encoder.encoder[END_TOKEN]]
            expected.append(decode(sharp, greedy(context, 40)).lstrip("\n"))
        results = {}
        jobs = [SampleJob(SampleRequest(length=40, top_k=1, prefix=prefix, include_prefix=False),
                          lambda sample, i=i: results.__setitem__(i, sample.text)) for i, prefix in enumerate(prefixes)]
        sharp.run(lambda: jobs.pop(0) if jobs else None)
    assert [results[i] for i in range(len(prefixes))] == expected
    assert len(set(expected)) == len(expected)


def test_continuous_batching_gives_each_sample_its_own_rows_output(sampler):
    """More jobs than rows, each with its own prompt, length and parameters, refilled as rows end."""
    requests = [
        SampleRequest(length=length, top_k=1, prefix=prefix, include_prefix=False)
        for length, prefix in [(9, "one"), (3, "two two"), (14, None), (5, "one"), (7, PREFIX), (2, "x")]
    ]
    alone = [sampler.generate(nsamples=1, length=r.length, top_k=1, prefix=r.prefix, include_prefix=False)[0]
             for r in requests]
    results: dict[int, str] = {}
    queue = list(enumerate(requests))

    def take_job():
        if not queue:
            return None
        index, request = queue.pop(0)
        return SampleJob(request, lambda sample, index=index: results.__setitem__(index, sample.text))

    stats = sampler.run(take_job, batch_size=2)
    assert [results[i] for i in range(len(requests))] == alone
    assert stats.samples == len(requests)
    assert stats.steps < sum(r.length for r in requests)


def test_rows_that_end_at_different_steps_keep_only_their_own_text(sampler):
    """A block goes on after a row's sample ended (the row idles); what it sampled after is dropped."""
    requests = []
    for prefix in ("two two", "hello", PREFIX):
        greedy = sampler.generate(nsamples=1, length=40, top_k=1, prefix=prefix, include_prefix=False)[0]
        # The character that appears last for the first time, so that the samples end at different steps.
        first = {c: greedy.index(c) for c in greedy if c.isascii() and c.isprintable()}
        truncate = max(first, key=first.get)
        requests.append(SampleRequest(length=40, top_k=1, prefix=prefix, truncate=truncate, include_prefix=False))
    alone = [sampler.generate_samples(nsamples=1, length=r.length, top_k=1, prefix=r.prefix, truncate=r.truncate,
                                      include_prefix=False)[0] for r in requests]
    assert len({sample.tokens for sample in alone}) > 1 and all(sample.ended for sample in alone)
    results: dict[int, object] = {}
    queue = list(enumerate(requests))

    def take_job():
        if not queue:
            return None
        index, request = queue.pop(0)
        return SampleJob(request, lambda sample, index=index: results.__setitem__(index, sample))

    stats = sampler.run(take_job, batch_size=3)
    assert [results[i] for i in range(len(requests))] == alone
    assert stats.generated_tokens == sum(sample.tokens for sample in alone)


def test_same_seed_gives_the_same_texts(sampler):
    first = sampler.generate(nsamples=6, length=15, seed=7)
    assert sampler.generate(nsamples=6, length=15, seed=7) == first
    assert sampler.generate(nsamples=6, length=15, seed=8) != first
    assert len(set(first)) > 1


def test_top_k_1_is_greedy_and_ignores_the_seed(sampler):
    texts = sampler.generate(nsamples=3, length=10, top_k=1, seed=1)
    assert len(set(texts)) == 1
    assert sampler.generate(nsamples=3, length=10, top_k=1, seed=2) == texts
    # A tiny nucleus or a cold temperature keeps only the likeliest token too.
    assert sampler.generate(nsamples=3, length=10, top_p=1e-6, seed=3) == texts
    assert sampler.generate(nsamples=3, length=10, temperature=1e-4, seed=4) == texts
    # A top_p that float32 would round to 0 (no filter) still keeps only the likeliest token.
    assert sampler.generate(nsamples=3, length=10, top_p=1e-50, seed=3) == texts
    # Wider top_k samples.
    assert len(set(sampler.generate(nsamples=4, length=10, top_k=40, seed=5))) > 1


@pytest.mark.parametrize("rows", [
    [(0, 0.9), (5, 0.0), (0, 0.0), (1, 0.5)],   # a row with top_p: every logit is ranked
    [(5, 0.0), (0, 0.0), (40, 0.0)],            # top_k only: the largest top_k are
    [(0, 0.0), (0, 0.0)],                       # no filter
])
def test_filter_keeps_what_gpt_2_simples_top_k_and_top_p_keep(rows):
    import tensorflow as tf
    from gpt_2_simple.src.sample import top_k_logits, top_p_logits

    from ml.graph import filter_logits

    logits = np.random.default_rng(0).normal(0, 3, (len(rows), 300)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        top_k = tf.constant([k for k, _ in rows], tf.int32)
        top_p = tf.constant([p for _, p in rows], tf.float32)
        ours = filter_logits(tf, tf.constant(logits), top_k, top_p)
        # gpt_2_simple filters a whole batch with one top_p (if > 0), else one top_k.
        theirs = [top_p_logits(tf.constant(logits[i:i + 1]), p) if p > 0 else top_k_logits(tf.constant(logits[i:i + 1]), k)
                  for i, (k, p) in enumerate(rows)]
        with tf.compat.v1.Session() as session:
            ours, theirs = session.run([ours, theirs])
    for row, (k, p) in enumerate(rows):
        kept = ours[row] > -1e9
        np.testing.assert_array_equal(kept, theirs[row][0] > -1e9)
        np.testing.assert_array_equal(ours[row][kept], logits[row][kept])
        if p:
            assert 1 <= kept.sum() < 300
        else:
            assert kept.sum() == (k or 300)


def test_top_p_keeps_only_the_nucleus_when_logits_are_large():
    """At a cold temperature logits pass 1000, which gpt_2_simple's nucleus filter takes for its own marker."""
    import tensorflow as tf

    from ml.graph import filter_logits

    logits = np.array([[5000.0, 4000.0, 3000.0]], np.float32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        kept = session.run(filter_logits(tf, tf.constant(logits), tf.constant([0]), tf.constant([0.5])))
    assert (kept > -1e9).tolist() == [[True, False, False]]


def test_a_batch_stops_as_soon_as_every_row_has_ended(sampler, greedy_reference):
    context = sampler.encoder.encode(PREFIX)
    greedy = greedy_reference(context, 40)
    # An ASCII byte of the greedy continuation, as a one-character truncate text.
    stop_at = next(i for i, t in enumerate(greedy) if i >= 3 and 32 <= t < 127)
    truncate = chr(greedy[stop_at])
    stop_at = greedy.index(greedy[stop_at])
    assert sampler.encoder.encoder[END_TOKEN] not in greedy[:stop_at]
    samples = sampler.generate_samples(nsamples=4, length=200, top_k=1, prefix=PREFIX, truncate=truncate,
                                       include_prefix=False)
    assert sampler.last_run.steps == stop_at + 1
    assert [s.text for s in samples] == [decode(sampler, greedy[:stop_at]).lstrip("\n")] * 4
    assert all(s.ended and s.tokens == stop_at + 1 for s in samples)
    cut = sampler.generate_samples(nsamples=1, length=stop_at, top_k=1, prefix=PREFIX, truncate=truncate)
    assert not cut[0].ended and cut[0].tokens == stop_at


def test_a_sample_ends_at_truncate_spelled_over_several_tokens_or_at_the_end_token():
    token_bytes = [b"hi there", b" <|", b"endof", b"text|>and more", b"short", END_TOKEN.encode(), b">", b"x"]
    end = 5
    truncation = Truncation(END_TOKEN, token_bytes, end)
    # The loop may stop where the text can end: its last bytes begin the token, or at the end token.
    assert truncation.stop_tokens.tolist() == [False, False, False, True, False, True, True, False]
    tokens = [0, 1, 2, 3]
    assert truncation.find_end(b"", tokens)[0] == 3
    assert truncation.text(tokens, True) == "hi there "
    # Fed a token at a time, the bytes kept between calls let the text complete across calls.
    recent = b""
    for token in tokens[:3]:
        ended_at, recent = truncation.find_end(recent, [token])
        assert ended_at is None
    assert len(recent) == len(END_TOKEN) - 1 and truncation.find_end(recent, [3])[0] == 0
    assert truncation.find_end(b"", [0, 6])[0] is None  # a stop token that does not finish the text
    assert truncation.find_end(b"", [4, end])[0] == 1 and truncation.text([4, end], True) == "short"

    no_truncate = Truncation(None, token_bytes, end)
    assert not no_truncate.stop_tokens.any() and no_truncate.find_end(b"", [7, end]) == (None, b"")
    assert no_truncate.text([7, end], False) == "x<|endoftext|>"


def test_truncate_texts_of_the_longest_length_are_matched_in_linear_time():
    """Stop tokens are found without listing the text's tails, and matching keeps a bounded tail."""
    wanted = "ab" * (MAX_TRUNCATE_CHARS // 2)
    token_bytes = [bytes([b]) for b in range(256)]
    truncation = Truncation(wanted, token_bytes, None)
    assert truncation.stop_tokens.nonzero()[0].tolist() == [ord("b")]  # the text's last byte begins no other
    recent = b""
    for _ in range(3):  # almost the text, many times: never an end, never more kept than the text's length
        ended_at, recent = truncation.find_end(recent, list(b"ab" * 99 + b"x"))
        assert ended_at is None and len(recent) == len(wanted) - 1
    assert truncation.find_end(recent, list(wanted.encode()))[0] == len(wanted) - 1


def test_prefix_is_kept_or_dropped(sampler):
    kept = sampler.generate(nsamples=1, length=8, top_k=1, prefix="Hello world")[0]
    dropped = sampler.generate(nsamples=1, length=8, top_k=1, prefix="Hello world", include_prefix=False)[0]
    assert kept.startswith("Hello world")
    assert kept[len("Hello world"):].lstrip("\n") == dropped


def test_generates_past_the_models_window_by_sliding(sampler):
    n_ctx = sampler.hparams.n_ctx
    texts = sampler.generate(nsamples=1, length=n_ctx + 60, prefix="slide", batch_size=1, seed=0)
    stats = sampler.last_run
    assert stats.steps == n_ctx + 60 and stats.generated_tokens == n_ctx + 60
    assert stats.context_encodings >= 1  # the window was encoded again when it filled
    assert len(texts) == 1 and texts[0].startswith("slide")


def test_generate_to_file_writes_the_curation_format(sampler, tmp_path):
    path = tmp_path / "samples.txt"
    written = sampler.generate_to_file(path, nsamples=5, length=6, seed=3, prefix=PREFIX, include_prefix=False)
    assert written == 5
    assert path.read_bytes().decode("utf-8") == join_samples(  # bytes: a sampled "\r" stays "\r"
        sampler.generate(nsamples=5, length=6, seed=3, prefix=PREFIX, include_prefix=False)
    )
    assert not path.with_name("samples.txt.partial").exists()


def test_the_graph_is_built_once(sampler):
    before = sampler.operation_count
    for top_p, top_k in [(0.9, 0), (0.0, 5), (0.0, 0)]:
        sampler.generate(nsamples=3, length=4, top_p=top_p, top_k=top_k, prefix="abc", truncate="z")
    assert sampler.operation_count == before
    assert sampler._session.graph.finalized


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0}, "temperature must be between 0.0001 and 100"),
        ({"top_p": 1.5}, "top_p must be between 0 and 1"),
        ({"top_k": -1}, "top_k must be a whole number"),
        ({"length": 0}, "length must be"),
        ({"nsamples": 0}, "nsamples must be >= 1"),
        ({"truncate": ""}, "truncate must be None or a non-empty text"),
        ({"temperature": 1e-50}, "temperature must be between 0.0001 and 100"),
        ({"temperature": float("nan")}, "temperature must be between"),
        ({"top_k": 2**31}, "top_k must be a whole number between 0 and 50257"),
        ({"top_p": float("nan")}, "top_p must be between 0 and 1"),
        ({"truncate": "x" * 201}, "truncate must be at most 200 characters"),
        ({"prefix": "a\ud800"}, "prefix has a lone surrogate"),
        ({"truncate": "\x00"}, "truncate has a NUL character"),
        ({"prefix": "\U0001F600" * 300}, "prefix is 1200 tokens"),
    ],
)
def test_bad_parameters_are_refused_with_a_clear_message(sampler, kwargs, message):
    with pytest.raises(SamplerError, match=message):
        sampler.generate(**kwargs)


def test_loading_a_folder_that_is_not_a_checkpoint_says_what_is_missing(tmp_path):
    with pytest.raises(SamplerError, match="missing hparams.json"):
        Sampler.load(tmp_path)


def test_a_job_that_fails_fails_alone_and_the_batch_goes_on(sampler, monkeypatch):
    """One job cannot start (its prefix is too long), one samples a token outside the vocabulary
    (as NaN logits would give): each gets its own error through `fail`, the others their texts."""
    requests = [SampleRequest(length=12, top_k=1, prefix=prefix, include_prefix=False)
                for prefix in ("broken", "one", "\U0001F600" * 300, "two")]
    alone = {i: sampler.generate(nsamples=1, length=12, top_k=1, prefix=requests[i].prefix, include_prefix=False)[0]
             for i in (1, 3)}
    real_run_block = sampler._run_block

    def first_row_breaks(*feeds):
        tokens, steps, presents = real_run_block(*feeds)
        tokens[0, :] = sampler.hparams.n_vocab
        return tokens, steps, presents

    monkeypatch.setattr(sampler, "_run_block", first_row_breaks)
    results, errors = {}, {}
    jobs = [SampleJob(request, lambda sample, i=i: results.__setitem__(i, sample.text),
                      lambda exc, i=i: errors.__setitem__(i, exc)) for i, request in enumerate(requests)]
    sampler.run(lambda: jobs.pop(0) if jobs else None, batch_size=4)
    assert results == alone
    assert sorted(errors) == [0, 2]
    assert isinstance(errors[2], SamplerError) and "1200 tokens" in str(errors[2])
    assert not isinstance(errors[0], SamplerError) and "outside the vocabulary" in str(errors[0])


def test_caches_stay_bounded_however_many_distinct_prefixes_and_truncate_texts(sampler, monkeypatch):
    """One long run (jobs keep coming) with a new prefix and truncate text each time, and many new words."""
    monkeypatch.setattr(sampler_module, "ENCODER_CACHE_WORDS", 50)
    def word(number: int) -> str:  # a word of letters only: the encoder splits at digits
        return "".join(chr(ord("a") + int(digit)) for digit in str(number))

    jobs = [SampleJob(SampleRequest(length=1, prefix=" ".join(word(20 * i + j) for j in range(20)), truncate=word(i)),
                      lambda sample: None) for i in range(4 * CONTEXT_CACHE_ENTRIES)]
    stats = sampler.run(lambda: jobs.pop(0) if jobs else None, batch_size=2)
    assert stats.samples == 4 * CONTEXT_CACHE_ENTRIES
    assert len(sampler._truncations) <= CONTEXT_CACHE_ENTRIES and len(sampler._contexts) <= CONTEXT_CACHE_ENTRIES
    assert len(sampler._prompt_tokens) <= CONTEXT_CACHE_ENTRIES
    assert len(sampler.encoder.cache) <= 50
