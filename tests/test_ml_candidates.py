"""ml.model without TensorFlow: input checks, candidate filters, topping up, the candidate file, upload, download errors."""
from __future__ import annotations

import csv
import http.server
import random
import re
import socket
import subprocess
import sys
import threading
import time
import zlib
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import select

from api.app import create_app
from core.config import Settings
from core.tweet_text import END_TOKEN, START_TOKEN, parse_curated_file, validate_tweet
from db.engine import make_engine, make_session_factory
from db.models import Base, Tweet, TweetStatus
from ml.base_model import MODEL_FOLDER_FILES, ensure_base_model
from ml.candidates import (
    COPIES_REPORT_COLUMNS, GenerationOptions, UploadError, candidate_file_name, collect_candidates, copies_report_path,
    sampler_generate, upload_candidate_file, write_candidate_file, write_copies_report,
)
from ml.dataset import InputError, load_training_file, validate_run_name
from ml.filters import (
    COPY_MAX_SHARED_WORDS, MARKOVIFY_MAX_OVERLAP_RATIO, MARKOVIFY_MAX_OVERLAP_TOTAL,
    CandidateFilter, CopyFound, CopyKind, CopyMatch, CopyThresholds, DropReason, TrainingCopyIndex, _shingles,
)
from ml.model import (
    CHECKPOINT_DIR, MODELS_DIR, build_parser, copy_thresholds, generation_options, report_copies, training_options,
    upload_token,
)
from ml.training import TrainingOptions
from tests.conftest import ACCOUNT, TOKEN

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CSV = REPO / "ml" / "sample_data" / "tweets_sample.csv"

TRAINING_TWEETS = [
    "Three coffees in and the bug is still winning.",
    "Spent an hour naming a variable and I am still not happy with it.",
    "Rain on the window, tea on the desk, code on the screen.",
]


def write_csv(path: Path, tweets: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["tweets"])
        writer.writerows([t] for t in tweets)
    return path


def make_filter(**kwargs) -> CandidateFilter:
    return CandidateFilter(TrainingCopyIndex(TRAINING_TWEETS), **kwargs)


# ---- filters ----

@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        ("   \n ", DropReason.empty),
        (f"half a tweet {START_TOKEN}and the next", DropReason.unfinished),
        (f"ends twice{END_TOKEN}", DropReason.unfinished),
        ("x" * 281, DropReason.tweet_rule),
        ("read this https://example.com/a now", DropReason.url),
        ("bare domain example.com counts too", DropReason.url),
        ("three COFFEES in and the bug   is still winning.", DropReason.training_copy),  # same content_hash
        # a run of 8 words of a training tweet, with another start and punctuation
        ("Honestly: spent an hour naming a variable, and I am done", DropReason.training_copy),
    ],
)
def test_each_filter_drops_its_candidate(candidate, reason):
    candidate_filter = make_filter()
    assert candidate_filter.offer(candidate) is reason
    assert candidate_filter.kept == []
    assert candidate_filter.dropped == {reason: 1}


def test_a_good_candidate_is_kept_normalised():
    candidate_filter = make_filter()
    assert candidate_filter.offer("  Spent an hour naming a function. Worth it.\r\n") is None
    assert candidate_filter.kept == ["Spent an hour naming a function. Worth it."]


def test_seven_shared_words_are_not_a_copy():
    # "spent an hour naming a variable and" is 7 words of a training tweet: below COPY_MIN_WORDS.
    assert make_filter().offer("Spent an hour naming a variable and it was fun") is None


def test_repeated_candidate_is_a_duplicate_after_the_first():
    candidate_filter = make_filter()
    assert candidate_filter.offer("Tea first, then code.") is None
    assert candidate_filter.offer("tea first,   then CODE.") is DropReason.duplicate
    assert candidate_filter.kept == ["Tea first, then code."]


def test_urls_are_kept_when_allowed():
    candidate_filter = make_filter(drop_urls=False)
    assert candidate_filter.offer("notes at https://example.com") is None


def test_generator_flag_marks_unfinished():
    assert make_filter().offer("looks fine but ran to length", unfinished=True) is DropReason.unfinished


def test_filters_use_the_api_tweet_rule():
    # 140 CJK characters weigh 280: allowed by X; 141 are not. The count comes from core.tweet_text.
    candidate_filter = make_filter()
    assert candidate_filter.offer("漢" * 140) is None
    assert candidate_filter.offer("字" * 141) is DropReason.tweet_rule


# ---- topping up ----

class ScriptedGenerator:
    """Hands out prepared samples in order and records what it was asked for."""

    def __init__(self, samples):
        self.samples = list(samples)
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, count, seed):
        self.calls.append((count, seed))
        batch, self.samples = self.samples[:count], self.samples[count:]
        return [(text, False) for text in batch]


def test_more_batches_are_generated_until_enough_survive():
    # Half of the first 4 survive, so the second round asks for 2 missing / (2 kept / 4 made) = 4.
    samples = ["good one", "x" * 300, "good two", "good two", "good three", "https://a.io", "good four", "good five"]
    generator = ScriptedGenerator(samples)
    report = collect_candidates(generator, make_filter(), GenerationOptions(nsamples=4, seed=7))
    assert generator.calls == [(4, 7), (4, 8)]
    assert report.kept == ["good one", "good two", "good three", "good four"]
    assert report.rounds == 2
    assert report.summary() == (
        "generated 8, kept 4 of 4 wanted (1 more passed, not needed), dropped 3 (tweet_rule 1, url 1, duplicate 1)"
    )


def test_topping_up_stops_at_the_limit_and_says_so():
    generator = ScriptedGenerator(["same"] * 100)
    report = collect_candidates(generator, make_filter(), GenerationOptions(nsamples=5, oversample_limit=2.0))
    assert report.generated == 10
    assert [count for count, _ in generator.calls] == [5, 5]
    assert report.kept == ["same"]
    assert "kept 1 of 5 wanted" in report.summary()
    assert "stopped at the limit of 10 generated" in report.summary()


def test_nothing_kept_asks_for_everything_the_limit_allows():
    generator = ScriptedGenerator([""] * 3 + ["fine"] * 20)
    report = collect_candidates(generator, make_filter(), GenerationOptions(nsamples=3, oversample_limit=3.0))
    assert [count for count, _ in generator.calls] == [3, 6]
    assert report.kept == ["fine"]


class ScriptedSampler:
    """Stands in for ml.sampler.Sampler: canned samples, and the arguments it was called with."""

    def __init__(self, samples):
        self.samples = samples
        self.asked: dict = {}

    def generate_samples(self, **kwargs):
        self.asked = kwargs
        return self.samples[: kwargs["nsamples"]]


def test_samples_cut_at_length_count_as_unfinished():
    from ml.sampler import GeneratedSample

    sampler = ScriptedSampler([GeneratedSample("ended", True, 6), GeneratedSample("cut at length", False, 10)])
    generate = sampler_generate(sampler, GenerationOptions(length=10, seed=5))
    assert generate(2, 5) == [("ended", False), ("cut at length", True)]
    assert sampler.asked["truncate"] == END_TOKEN and sampler.asked["prefix"] == START_TOKEN
    assert sampler.asked["include_prefix"] is False and sampler.asked["seed"] == 5 and sampler.asked["length"] == 10
    assert sampler.asked["progress"] is True  # the progress bar
    # without truncate every sample runs to length by request: none is unfinished
    assert sampler_generate(sampler, GenerationOptions(length=10, truncate=None))(2, None) == [
        ("ended", False), ("cut at length", False),
    ]


# ---- the candidate file ----

def test_candidate_file_uses_the_curation_format(tmp_path):
    texts = ["first tweet", "second\nwith two lines", "third & <b>last</b>"]
    path = write_candidate_file(tmp_path / candidate_file_name("run1"), texts)
    assert re.fullmatch(r"gpt2_run1_\d{8}_\d{6}\.txt", path.name)
    assert parse_curated_file(path.read_bytes(), path.name) == texts
    assert path.read_text(encoding="utf-8").endswith("third & <b>last</b>\n" + "=" * 20 + "\n")
    assert not list(tmp_path.glob("*.partial"))


def test_candidate_file_never_replaces_another(tmp_path):
    name = candidate_file_name("run1", datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc))
    paths = [write_candidate_file(tmp_path / name, [f"candidate of run {n}"]) for n in range(3)]
    assert [p.name for p in paths] == [
        "gpt2_run1_20261201_093000.txt", "gpt2_run1_20261201_093000_2.txt", "gpt2_run1_20261201_093000_3.txt",
    ]
    assert [parse_curated_file(p.read_bytes(), p.name) for p in paths] == [[f"candidate of run {n}"] for n in range(3)]
    assert sorted(tmp_path.iterdir()) == sorted(paths)


def test_candidate_file_on_a_filesystem_without_hard_links(tmp_path, monkeypatch):
    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("ml.candidates.os.link", no_links)
    first = write_candidate_file(tmp_path / "c.txt", ["first"])
    second = write_candidate_file(tmp_path / "c.txt", ["second"])
    assert (first.name, second.name) == ("c.txt", "c_2.txt")
    assert [parse_curated_file(p.read_bytes(), p.name) for p in (first, second)] == [["first"], ["second"]]
    assert sorted(tmp_path.iterdir()) == [first, second]


def test_summary_and_copies_report_give_each_copy_with_its_training_tweet(tmp_path):
    generator = ScriptedGenerator([
        "Three coffees in and the bug is still winning.", "Rain on the window, coffee on the desk, code on the screen.",
        "Today I spent an hour naming a variable and I am still not happy with it", "a fresh one", "a \ufffd one",
    ])
    report = collect_candidates(generator, make_filter(), GenerationOptions(nsamples=1, oversample_limit=5.0))
    assert report.summary() == (
        "generated 5, kept 1 of 1 wanted, dropped 4 "
        "(invalid_utf8 1, training_copy 3 (exact 1, shared run 1, near-duplicate 1))"
    )
    candidates = write_candidate_file(tmp_path / "gpt2_run1_20261201_093000.txt", report.kept)
    path = write_copies_report(copies_report_path(candidates), report.candidate_filter.copies)
    assert path.name == "gpt2_run1_20261201_093000_copies_report.csv"
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    assert tuple(rows[0]) == COPIES_REPORT_COLUMNS
    assert [(row[0], row[1], row[3], row[4]) for row in rows[1:]] == [
        ("exact", "9", "Three coffees in and the bug is still winning.", TRAINING_TWEETS[0]),
        ("near-duplicate", "7", "Rain on the window, coffee on the desk, code on the screen.", TRAINING_TWEETS[2]),
        ("shared run", "14", "Today I spent an hour naming a variable and I am still not happy with it", TRAINING_TWEETS[1]),
    ]
    assert float(rows[2][2]) >= 0.5


def test_copies_report_cells_a_spreadsheet_would_run_as_formulas_are_text(tmp_path):
    """Tweets are untrusted: a copied tweet like =HYPERLINK(...) must not become a formula in the curator's spreadsheet."""
    hostile = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1+1 cmd", "-2+3 formula", "@SUM(A1) hi"]
    copies = [CopyFound(text, CopyMatch(CopyKind.exact, text, 3, 1.0)) for text in hostile]
    path = write_copies_report(tmp_path / "report.csv", copies)
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))[1:]
    assert [(row[3], row[4]) for row in rows] == [("'" + text, "'" + text) for text in hostile]


def test_a_copies_report_never_replaces_another_runs(tmp_path):
    name = candidate_file_name("run1", datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc))
    reports = []
    for run in range(2):
        candidates = write_candidate_file(tmp_path / name, [f"candidate of run {run}"])
        reports.append(write_copies_report(copies_report_path(candidates), []))
    assert [p.name for p in reports] == [
        "gpt2_run1_20261201_093000_copies_report.csv", "gpt2_run1_20261201_093000_2_copies_report.csv",
    ]
    # a report name already taken (a run with no candidate file) is not replaced either
    again = write_copies_report(reports[0], [])
    assert again.name == "gpt2_run1_20261201_093000_copies_report_2.csv"
    assert all(p.read_bytes() == ",".join(COPIES_REPORT_COLUMNS).encode() + b"\r\n" for p in [*reports, again])


def test_a_run_reports_its_copies_only_when_it_dropped_some(tmp_path, caplog):
    candidate_filter = make_filter()
    candidate_filter.offer("a fresh one")
    path = tmp_path / "gpt2_run1_20261201_093000_copies_report.csv"
    assert report_copies(candidate_filter, path) is None and not path.exists()
    candidate_filter.offer("Rain on the window, coffee on the desk, code on the screen.")
    with caplog.at_level("INFO", logger="ml.model"):
        assert report_copies(candidate_filter, path) == path
    assert f"1 candidates dropped as copies of training tweets are listed, with the tweet each copies, in {path}" \
        in caplog.text
    assert TRAINING_TWEETS[2] in path.read_text(encoding="utf-8")


# ---- the training file ----

def test_csv_is_read_as_gpt_2_simple_reads_it(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["one, with a comma", "two\nlines"])
    training = load_training_file(path)
    assert training.tweets == ["one, with a comma", "two\nlines"]
    assert training.text == f"{START_TOKEN}one, with a comma{END_TOKEN}\n{START_TOKEN}two\nlines{END_TOKEN}\n"


def test_txt_tweets_are_its_marked_texts_or_its_lines(tmp_path):
    marked = tmp_path / "marked.txt"
    marked.write_text(f"{START_TOKEN}a b{END_TOKEN}\n{START_TOKEN}c{END_TOKEN}\n", encoding="utf-8")
    assert load_training_file(marked).tweets == ["a b", "c"]
    plain = tmp_path / "plain.txt"
    plain.write_text("first line\n\nsecond line\n", encoding="utf-8")
    training = load_training_file(plain)
    assert training.tweets == ["first line", "second line"]
    assert training.text == "first line\n\nsecond line\n" + END_TOKEN  # gpt_2_simple's marker after a short file


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "not found"),
        ("latin1.csv", "tweets\ncaf\xe9\n".encode("latin-1"), "is not UTF-8 (byte 0xe9 on line 2)"),
        ("noheader.csv", b"just a tweet\nanother\n", "has no 'tweets' header"),
        ("blank.csv", b"tweets\nfirst\n\nthird\n", "line 3 has no tweet"),
        ("emptycell.csv", b'tweets\nfirst\n""\n', "line 3 has no tweet"),
        ("header_only.csv", b"tweets\n", "has a header but no tweets"),
        ("data.json", b"{}", "neither .csv"),
    ],
)
def test_bad_training_files_say_what_is_wrong(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=re.escape(message)):
        load_training_file(path)


@pytest.mark.parametrize("run_name", ["a/b", "..\\up", "../x"])
def test_run_names_with_path_separators_are_refused(run_name):
    with pytest.raises(InputError, match="path separator"):
        validate_run_name(run_name)


# ---- the command line refuses bad input before TensorFlow starts ----

def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ml.model's main in a fresh interpreter; prints whether TensorFlow got imported."""
    code = (
        "import sys; from ml.model import main; status = main(sys.argv[1:]); "
        "print('tensorflow imported:', 'tensorflow' in sys.modules); sys.exit(status)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def short_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "short.csv", ["only a few tweets", "not enough for a window"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--filename", "nowhere.csv"], "training file nowhere.csv not found"),
        (["--filename", "{latin1}"], "is not UTF-8"),
        (["--filename", "{noheader}"], "has no 'tweets' header"),
        (["--filename", "{blank}"], "line 3 has no tweet"),
        (["--filename", "{short}"], "too short for the model's 1024-token window"),
        (["--filename", str(SAMPLE_CSV), "--model_name", "300M"], "unknown model '300M'"),
        (["--filename", str(SAMPLE_CSV), "--run_name", "a/b"], "contains a path separator"),
        (["train"], "training needs --filename"),
        (["generate", "--run_name", "never_trained"], "no trained run at"),
        (["--filename", str(SAMPLE_CSV), "--upload", "http://127.0.0.1:9"], "--upload needs the store's token"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_without_tensorflow(tmp_path, short_csv, args, message):
    files = {
        "latin1": tmp_path / "latin1.csv", "noheader": tmp_path / "noheader.csv",
        "blank": tmp_path / "blank.csv", "short": short_csv,
    }
    files["latin1"].write_bytes("tweets\ncaf\xe9\n".encode("latin-1"))
    files["noheader"].write_bytes(b"just a tweet\n")
    files["blank"].write_bytes(b"tweets\nfirst\n\nthird\n")
    args = [arg.format(**{k: str(v) for k, v in files.items()}) for arg in args]
    result = run_cli([*args, "--models_dir", str(tmp_path / "models"), "--checkpoint_dir", str(tmp_path / "ck")], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "tensorflow imported: False" in result.stdout
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--temperature", "1e-50", "--temperature: must be between 0.0001 and 100"),
    ("--temperature", "nan", "--temperature: must be between 0.0001 and 100"),
    ("--top_k", "2147483648", "--top_k: must be a whole number from 0 (off) to 50257"),
    ("--top_k", "-1", "--top_k: must be a whole number from 0 (off) to 50257"),
])
def test_sampling_flags_outside_the_samplers_bounds_are_refused_by_the_parser(flag, value, message, capsys):
    """The command line takes what the sampler takes: a value it would refuse stops here, before any training."""
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args([flag, value])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_help_shows_each_flags_true_default():
    """--help states the default of every flag, and the URL pair's as it is (drop unless --allow_urls)."""
    help_text = " ".join(build_parser().format_help().split())
    assert "--learning_rate LEARNING_RATE Adam's learning rate (the peak of --lr_schedule) (default: 0.0001)" in help_text
    assert "--temperature TEMPERATURE divides the logits: lower is more predictable (default: 1.0)" in help_text
    assert "--no_urls drop candidates holding a URL (on unless --allow_urls) (default: True)" in help_text
    assert "--allow_urls keep candidates holding a URL (off) --" in help_text
    assert build_parser().parse_args([]).no_urls is True
    assert build_parser().parse_args(["--allow_urls"]).no_urls is False


def test_generate_without_a_known_training_file_is_exit_2(tmp_path):
    (tmp_path / "ck" / "copied_run").mkdir(parents=True)
    (tmp_path / "ck" / "copied_run" / "checkpoint").write_text('model_checkpoint_path: "model-5"\n')
    result = run_cli(["generate", "--run_name", "copied_run", "--checkpoint_dir", str(tmp_path / "ck")], tmp_path)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "no training file known for run" in line and "pass --filename" in line
    assert "tensorflow imported: False" in result.stdout


def test_upload_token_comes_from_the_environment_or_dot_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SECRET_TOKEN", raising=False)
    assert upload_token() == ""
    (tmp_path / ".env").write_text("SECRET_TOKEN=from-the-dot-env-file\n")
    assert upload_token() == "from-the-dot-env-file"
    monkeypatch.setenv("SECRET_TOKEN", "from-the-environment")
    assert upload_token() == "from-the-environment"


def closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_download_fails_fast_with_one_clear_line(tmp_path):
    base = f"http://127.0.0.1:{closed_loopback_port()}/gpt-2"
    started = time.monotonic()
    result = run_cli(
        ["train", "--filename", str(SAMPLE_CSV), "--model_name", "124M", "--models_dir", str(tmp_path / "models"),
         "--checkpoint_dir", str(tmp_path / "ck"), "--download_url", base],
        tmp_path,
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "GPT-2 124M is not in" in lines[0] and "downloading it" in lines[0]
    [line] = [line for line in lines if "error" in line]
    assert line == lines[-1]
    assert f"from {base}/models/124M/checkpoint" in line
    assert "place a model folder with checkpoint, encoder.json, hparams.json" in line
    assert f"at {tmp_path / 'models' / '124M'} by hand" in line
    assert "tensorflow imported: False" in result.stdout
    assert list((tmp_path / "models").iterdir()) == []  # no half-downloaded folder left behind


def test_download_fetches_every_model_file_once(tmp_path):
    """The files gpt_2_simple.download_gpt2 fetches, from the same paths, served here on loopback."""
    served = tmp_path / "served" / "gpt-2" / "models" / "124M"
    served.mkdir(parents=True)
    for name in MODEL_FOLDER_FILES:
        (served / name).write_bytes(f"{name} contents".encode() * 1000)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "served"))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}/gpt-2"
        folder = ensure_base_model(tmp_path / "models", "124M", base_url=base)
        server.shutdown()
    assert folder == tmp_path / "models" / "124M"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["124M"]  # no staging folder left
    for name in MODEL_FOLDER_FILES:
        assert (folder / name).read_bytes() == (served / name).read_bytes()
    # present now: used as it is (the server is gone, so a second download would fail)
    assert ensure_base_model(tmp_path / "models", "124M", base_url=base) == folder


# ---- upload to the store over real HTTP ----

@pytest.fixture
def live_store(tmp_path):
    """The tweet store on SQLite, served by uvicorn on an ephemeral loopback port."""
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    Base.metadata.create_all(engine)
    settings = Settings(SECRET_TOKEN=TOKEN, ACCOUNT=ACCOUNT, SQLITE_PATH=str(tmp_path / "unused.db"), _env_file=None)
    app = create_app(settings, engine=engine, configure_logs=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the store did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", make_session_factory(engine)
    server.should_exit = True
    thread.join(10)
    engine.dispose()


def test_upload_stores_the_file_as_pending_tweets(tmp_path, live_store):
    url, session_factory = live_store
    path = write_candidate_file(tmp_path / "gpt2_run1_20250101_000000.txt", ["first candidate", "second candidate"])
    answer = upload_candidate_file(path, url, TOKEN)
    assert answer["added"] == 2 and answer["duplicates"] == 0 and answer["rejected"] == []
    with session_factory() as session:
        stored = session.execute(select(Tweet.text, Tweet.status).order_by(Tweet.id)).all()
    assert stored == [("first candidate", TweetStatus.pending), ("second candidate", TweetStatus.pending)]
    assert all(validate_tweet(text) == text for text, _ in stored)


def test_upload_with_a_wrong_token_says_what_the_store_answered(tmp_path, live_store):
    url, _ = live_store
    path = write_candidate_file(tmp_path / "c.txt", ["a candidate"])
    with pytest.raises(UploadError, match="answered 401"):
        upload_candidate_file(path, url, "wrong-token-0123456789")
    assert path.exists()


def test_what_the_pipeline_writes_is_ignored_by_git():
    """Weights, runs, candidate files and downloaded tweets are never committed by accident."""
    written = [f"{MODELS_DIR}/124M/model.ckpt.data-00000-of-00001", f"{CHECKPOINT_DIR}/run1/model-1000.index",
               "gpt2_run1_20250101_120000.txt", "karpathy_tweets.csv", "karpathy_tweets.partial.csv"]
    shipped = ["ml/sample_data/tweets_sample.csv"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *written, *shipped], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.split() == written, result.stderr


def test_config_of_generation_defaults_matches_the_original():
    options = GenerationOptions()
    assert (options.nsamples, options.length, options.temperature, options.top_p) == (1000, 200, 1.0, 0.9)
    assert (options.prefix, options.truncate, options.include_prefix) == (START_TOKEN, END_TOKEN, False)


def test_command_line_defaults_are_the_options_defaults():
    args = build_parser().parse_args([])
    assert (args.mode, args.model_name, args.models_dir, args.checkpoint_dir) == ("both", "124M", "ml/models", "ml/checkpoint")
    assert training_options(args) == TrainingOptions()
    assert generation_options(args) == GenerationOptions()
    assert copy_thresholds(args) == CopyThresholds() == CopyThresholds(8, 0.7, 0.5)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--copy_max_words", "16", "--copy_max_words: must be a whole number from 1 to 15 (markovify's limit)"),
    ("--copy_max_words", "0", "--copy_max_words: must be a whole number from 1 to 15"),
    ("--copy_max_ratio", "0.8", "--copy_max_ratio: must be above 0 and at most 0.7 (markovify's limit)"),
    ("--copy_max_ratio", "nan", "--copy_max_ratio: must be above 0 and at most 0.7"),
    ("--near_duplicate_jaccard", "0", "--near_duplicate_jaccard: must be above 0 and at most 1"),
])
def test_copy_thresholds_laxer_than_markovify_are_refused(flag, value, message, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([flag, value])
    assert message in capsys.readouterr().err


def test_copy_flags_reach_the_thresholds():
    args = build_parser().parse_args(["--copy_max_words", "6", "--copy_max_ratio", "0.5", "--near_duplicate_jaccard", "0.8"])
    assert copy_thresholds(args) == CopyThresholds(6, 0.5, 0.8)
    assert args.no_urls is True


# ---- what the filters and the training file must not miss ----

# Training tweet 2 has 14 words: "spent an hour naming a variable and i am still not happy with it".
@pytest.mark.parametrize(
    "candidate",
    [
        "Well and I am still not happy with it, says everyone",  # its last 8 words
        "Spent an hour naming a variable and I quit",  # exactly COPY_MIN_WORDS shared words
        "SPENT AN HOUR NAMING A VARIABLE AND I AM DONE",  # the case differs, the words do not
        "Tea, then: Spent an Hour naming A variable and i, am",  # case and punctuation around the run
    ],
    ids=["end-of-training-tweet", "exactly-min-words", "all-caps", "mixed-case"],
)
def test_training_copies_are_caught_at_the_edges(candidate):
    assert make_filter().offer(candidate) is DropReason.training_copy


def test_a_training_csv_with_a_byte_order_mark_keeps_its_header_and_first_tweet(tmp_path):
    """Spreadsheet programs save "CSV UTF-8" with a byte-order mark before the header."""
    path = tmp_path / "export.csv"
    path.write_bytes("\ufefftweets\nfirst tweet\nsecond tweet\n".encode())
    training = load_training_file(path)
    assert training.tweets == ["first tweet", "second tweet"]
    assert training.text.startswith(f"{START_TOKEN}first tweet{END_TOKEN}")
    text_file = tmp_path / "export.txt"
    text_file.write_bytes("\ufefffirst line\nsecond line\n".encode())
    assert load_training_file(text_file).tweets == ["first line", "second line"]


def test_seven_shared_words_at_the_end_are_not_a_copy_either():
    # "i am still not happy with it" ends training tweet 2 and this candidate: 7 of its 12 words,
    # below both COPY_MAX_SHARED_WORDS and 70% of the candidate.
    assert make_filter().offer("Honestly, after all this time, I am still not happy with it") is None


def test_a_short_candidate_that_is_mostly_a_training_run_is_a_copy():
    """markovify's ratio: 7 shared words are 87% of this 8-word candidate (it was kept before the ratio rule)."""
    candidate_filter = make_filter()
    assert candidate_filter.offer("Honestly I am still not happy with it") is DropReason.training_copy
    [found] = candidate_filter.copies
    assert found.match.kind is CopyKind.shared_run and found.match.shared_words == 7
    assert found.match.training_tweet == TRAINING_TWEETS[1]


@pytest.mark.parametrize("word_count", range(1, 61))
def test_the_copy_rule_is_never_laxer_than_markovifys(word_count):
    """markovify rejects a shared run of min(15, round(0.7 * words)) + 1 words; ours copies at that length or less."""
    markovify = min(MARKOVIFY_MAX_OVERLAP_TOTAL, round(MARKOVIFY_MAX_OVERLAP_RATIO * word_count)) + 1
    ours = CopyThresholds().run_that_copies(word_count)
    assert ours <= max(1, min(markovify, word_count))
    assert ours == min(COPY_MAX_SHARED_WORDS, int(0.7 * word_count + 1e-9) + 1)


def test_copies_are_listed_with_their_kind_and_training_tweet():
    candidate_filter = make_filter()
    candidates = [
        "three COFFEES in and the bug   is still winning.",  # exact, but for case and spaces
        "Today I spent an hour naming a variable and I am still not happy with it!",  # a run of 14 words
        "Rain on the window, coffee on the desk, code on the screen.",  # one word changed
    ]
    assert [candidate_filter.offer(text) for text in candidates] == [DropReason.training_copy] * 3
    assert [(found.candidate, found.match.kind, found.match.shared_words, found.match.training_tweet)
            for found in candidate_filter.copies] == [
        (candidates[0], CopyKind.exact, 9, TRAINING_TWEETS[0]),
        (candidates[1], CopyKind.shared_run, 14, TRAINING_TWEETS[1]),
        (candidates[2], CopyKind.near_duplicate, 7, TRAINING_TWEETS[2]),
    ]
    assert candidate_filter.copies[0].match.jaccard == 1.0
    assert 0.5 <= candidate_filter.copies[2].match.jaccard < 1.0


def test_a_run_filter_alone_misses_the_near_duplicate_with_one_word_changed():
    """7 of 12 words in a row shared: under 8 words and under 70%, so only the shingles see the copy."""
    candidate = "Rain on the window, coffee on the desk, code on the screen."
    run_only = CandidateFilter(TrainingCopyIndex(TRAINING_TWEETS, CopyThresholds(near_duplicate_jaccard=1.0)))
    assert run_only.offer(candidate) is None
    assert make_filter().offer(candidate) is DropReason.training_copy


def one_word_changed(rng: random.Random, tweet: str) -> str:
    words = tweet.split()
    words[rng.randrange(len(words))] = "zebra"
    return " ".join(words)


def test_minhash_finds_what_the_exact_jaccard_finds_on_a_large_training_set(monkeypatch):
    """Above EXACT_JACCARD_MAX_TWEETS (lowered here) the near-duplicates come from MinHash LSH: same matches here."""
    rng = random.Random(5)
    vocabulary = [f"w{n}" for n in range(3000)]
    training = [" ".join(rng.choices(vocabulary, k=rng.randint(8, 20))) for _ in range(2500)]
    monkeypatch.setattr("ml.filters.EXACT_JACCARD_MAX_TWEETS", len(training) - 1)
    near = [one_word_changed(rng, tweet) for tweet in rng.sample(training, 40)]
    fresh = [" ".join(rng.choices(vocabulary, k=12)) for _ in range(40)]
    thresholds = CopyThresholds(max_shared_words=15, max_shared_ratio=0.7)  # let the shingles decide

    def matches(index):
        return [(m.kind, m.training_tweet) if (m := index.match(text)) else None for text in near + fresh]

    with_minhash = TrainingCopyIndex(training, thresholds)
    assert type(with_minhash._near).__name__ == "_MinHashShingleIndex"
    monkeypatch.setattr("ml.filters.EXACT_JACCARD_MAX_TWEETS", len(training))
    exact = TrainingCopyIndex(training, thresholds)
    assert type(exact._near).__name__ == "_ExactShingleIndex"
    found = matches(exact)
    assert sum(match is not None for match in found[:40]) >= 30 and found[40:] == [None] * 40
    assert matches(with_minhash) == found


def near_duplicate_index(kind: str, training: list[str], monkeypatch) -> TrainingCopyIndex:
    """Either near-duplicate index; MinHash's with a hash that Python does not salt per process, so that LSH
    finds the same training tweets in every run."""
    if kind == "minhash":
        monkeypatch.setattr("ml.filters.EXACT_JACCARD_MAX_TWEETS", 0)
        monkeypatch.setattr("ml.filters._hash32", lambda shingle: zlib.crc32(shingle.encode()))
    index = TrainingCopyIndex(training)
    assert type(index._near).__name__ == {"exact": "_ExactShingleIndex", "minhash": "_MinHashShingleIndex"}[kind]
    return index


@pytest.mark.parametrize("kind", ["exact", "minhash"])
@pytest.mark.parametrize(
    ("training", "candidate", "expected"),
    [
        # the 4 shingles of "whatever" are 4 of the 8 of "whatevermore": a Jaccard of 0.5, the threshold itself
        (["whatever"], "Whatevermore", CopyMatch(CopyKind.near_duplicate, "whatever", 0, 0.5)),
        (["whatever"], "Whatever, dude", None),  # 4 of 9: 0.444, under the threshold (LSH looks from 0.4)
        # the nearer of two, whatever their order: 5 of 6 shingles shared against 4 of 6
        (["whateverr", "whatever"], "whateverrr", CopyMatch(CopyKind.near_duplicate, "whateverr", 0, 0.833)),
        (["whatever", "whateverr"], "whateverrr", CopyMatch(CopyKind.near_duplicate, "whateverr", 0, 0.833)),
    ],
    ids=["at-threshold", "under-threshold", "nearer-first", "nearer-second"],
)
def test_near_duplicates_are_judged_by_their_exact_jaccard(kind, training, candidate, expected, monkeypatch):
    assert near_duplicate_index(kind, training, monkeypatch).match(candidate) == expected


@pytest.mark.parametrize(
    ("training", "candidate", "expected"),
    [
        # a text of up to 5 characters is one shingle, itself: "b cat" is 1 of the 3 of "a b cat"
        (["a b cat"], "B cat", CopyMatch(CopyKind.shared_run, "a b cat", 2, 0.333)),
        (["🎉 🎉"], "😀", None),  # no words, so no shingles: nothing to be near
        (["🎉"], "🎉", CopyMatch(CopyKind.exact, "🎉", 0, 0.0)),  # the Jaccard of no shingles with none is 0
    ],
    ids=["five-characters", "no-words", "no-words-exact"],
)
def test_copies_of_texts_with_few_or_no_words(training, candidate, expected):
    assert TrainingCopyIndex(training).match(candidate) == expected


def test_a_candidate_with_runs_of_two_training_tweets_is_reported_with_the_longer_run():
    training = ["the cat sat on the mat and looked at the rain", "my dog sat on the mat and looked at the rain all day"]
    match = TrainingCopyIndex(training).match("Yesterday my dog sat on the mat and looked at the rain")  # 9, 11 shared
    assert (match.kind, match.training_tweet, match.shared_words) == (CopyKind.shared_run, training[1], 11)


def test_shared_words_are_counted_in_a_training_text_of_200_words_or_more():
    """A .txt line has no length limit; in a text of 200 words or more, difflib's autojunk would skip the words
    making up over 1% of it (here every word of the shared run)."""
    song = " ".join(f"verse {n} la la la la la la la la" for n in range(20))  # 200 words
    match = TrainingCopyIndex([song]).match("Sing along la la la la la la la la")
    assert (match.kind, match.shared_words) == (CopyKind.shared_run, 8)


def test_runs_whose_hashes_collide_are_told_apart_by_their_words(monkeypatch):
    """Every run of 8 words hashes alike here: the index still names the tweet holding the run, and only it."""
    real_hash = hash
    monkeypatch.setattr("ml.filters.hash", lambda value: 0 if isinstance(value, tuple) else real_hash(value),
                        raising=False)
    index = TrainingCopyIndex(TRAINING_TWEETS)
    match = index.match("Spent an hour naming a variable and I quit")
    assert (match.kind, match.training_tweet, match.shared_words) == (CopyKind.shared_run, TRAINING_TWEETS[1], 8)
    assert index.match("Nine words that no training tweet holds in a row") is None


def test_minhash_scores_only_the_training_tweets_lsh_finds_near(monkeypatch):
    """What keeps a candidate's cost flat: one sharing no shingle with the training tweets is scored against none."""
    monkeypatch.setattr("ml.filters.EXACT_JACCARD_MAX_TWEETS", 0)
    rng = random.Random(7)
    training = [" ".join("".join(rng.choices("abcdefgh", k=5)) for _ in range(6)) for _ in range(200)]
    near = TrainingCopyIndex(training)._near
    scored = []

    def shingles_of(index):
        scored.append(index)
        return _shingles(training[index].split())

    assert near.best({"12 34", "2 345", " 3456"}, 0.5, shingles_of) is None
    assert scored == []
    assert near.best(_shingles(training[0].split()), 0.5, shingles_of) == (0, 1.0)


def test_a_candidate_with_a_replacement_character_is_dropped_and_counted():
    """The sampler decodes bytes that are not UTF-8 as U+FFFD; `make demo` once queued such a tweet."""
    candidate_filter = make_filter()
    assert candidate_filter.offer("m8p\ufffd\ufffd\ufffdl\ufffd\ufffd\ufffd5%") is DropReason.invalid_utf8
    assert candidate_filter.kept == [] and candidate_filter.dropped == {DropReason.invalid_utf8: 1}


def test_a_training_tweet_shorter_than_the_minimum_run_is_caught_by_its_hash():
    candidate_filter = CandidateFilter(TrainingCopyIndex(["Good morning, world"]))  # 3 words: no run of 8
    assert candidate_filter.offer("good MORNING,   world") is DropReason.training_copy


def test_reason_to_drop_only_tells():
    candidate_filter = make_filter()
    assert candidate_filter.reason_to_drop("Tea first, then code.") is None  # finished unless told otherwise
    assert candidate_filter.reason_to_drop("Tea first, then code.", unfinished=True) is DropReason.unfinished
    assert candidate_filter.reason_to_drop(TRAINING_TWEETS[0]) is DropReason.training_copy  # the reason, not the match
    assert (candidate_filter.kept, candidate_filter.offered, candidate_filter.copies) == ([], 0, [])


def test_drops_are_counted_per_reason():
    candidate_filter = make_filter()
    for text in ("", "  \n", "x" * 281):
        candidate_filter.offer(text)
    assert candidate_filter.dropped == {DropReason.empty: 2, DropReason.tweet_rule: 1}
    assert candidate_filter.offered == 3
