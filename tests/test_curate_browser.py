"""The curation page in a real browser: Debian's Chromium (headless, driven by Playwright) against a
real uvicorn server on 127.0.0.1 with SQLite and TWITTER_DRY_RUN=true.

Skips when Chromium or Playwright is missing, unless REQUIRE_BROWSER=1 (CI), where it fails.
Screenshots go to CURATE_SCREENSHOT_DIR, or to a pytest temporary directory (printed).
Never run `playwright install`: the tests use /usr/bin/chromium.
"""
from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.curate.actions import REVIEW_PAGE_SIZE
from core.tweet_text import TweetRejected, clean_text, grapheme_count, mastodon_length, normalize_text, weighted_length
from db.engine import make_engine, make_session_factory
from db.models import Delivery, DeliveryStatus, Tweet, TweetStatus, utcnow
from tests.conftest import TOKEN

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ACCOUNT = "curation_bot"
SEEDED_X_ID = "1790000000000000042"
FOUND_X_ID = "1790000000000000077"
# Tweets whose posting call lost X's answer (the end-to-end test marks the first posted).
UNCONFIRMED = ["an unconfirmed post that did reach X", "an unconfirmed post still to check"]
DELIM = "=" * 20
HOSTILE = '<script>window.__pwned = 1</script> and <img src=x onerror="window.__pwned = 2">'


def _browser_missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing: apt-get install -y chromium (Debian's package)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is missing: pip install -r requirements-dev.txt"
    return None


@pytest.fixture(scope="module", autouse=True)
def _need_browser():
    reason = _browser_missing()
    if reason:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, base_url: str, database_url: str, log_path: Path):
        self.base_url = base_url
        self.log_path = log_path
        self.session_factory = make_session_factory(make_engine(database_url))

    def count(self, status: TweetStatus) -> int:
        with self.session_factory() as session:
            return session.scalar(select(func.count()).select_from(Tweet).where(Tweet.status == status))

    def tweet(self, text: str) -> Tweet:
        with self.session_factory() as session:
            return session.scalar(select(Tweet).where(Tweet.text == text))


@contextmanager
def serve(workdir: Path, settings_env: dict[str, str], seed: Callable[[Session], None]) -> Iterator[Server]:
    """`alembic upgrade head`, `seed` run on the new database, then uvicorn serving api.main:app with these settings."""
    database = workdir / "tweets.db"
    env = {
        **{name: value for name, value in os.environ.items() if name not in ("ACCOUNT", "BOTS")},
        "SECRET_TOKEN": TOKEN,
        "SQLITE_PATH": str(database),
        "DATABASE_URL": "",
        "CONNECTION_NAME": "",
        "DB_HOST": "",
        "QUEUE_WARNING_THRESHOLD": "7",
        "LOG_LEVEL": "WARNING",
        **settings_env,
    }
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
    )
    database_url = f"sqlite:///{database}"
    with make_session_factory(make_engine(database_url))() as session:
        seed(session)
        session.commit()

    port = _free_port()
    log_path = workdir / "uvicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Server(base_url, database_url, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _seed_one_bot(session: Session) -> None:
    """An earlier, real post, for the history's link to X, and unconfirmed ones."""
    session.add(Tweet(
        account=ACCOUNT, text="an earlier post that reached X", content_hash="seeded-post",
        status=TweetStatus.posted, position=0, posted_at=utcnow(), x_tweet_id=SEEDED_X_ID,
        x_url=f"https://x.com/{ACCOUNT}/status/{SEEDED_X_ID}",
    ))
    session.add_all(
        Tweet(
            account=ACCOUNT, text=text, content_hash=f"seeded-unconfirmed-{n}", status=TweetStatus.unconfirmed,
            position=0, claimed_at=utcnow() - timedelta(hours=1), idempotency_key=f"2026-11-22T0{n}:00:00Z",
            error=f"X did not answer in time; X may have posted it: check https://x.com/{ACCOUNT} and set it to posted or queued",
        )
        for n, text in enumerate(UNCONFIRMED)
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The one bot of today's setup (ACCOUNT), posting to X as dry runs."""
    settings_env = {"ACCOUNT": ACCOUNT, "TWITTER_DRY_RUN": "true", "TWEET_ORDER": "oldest"}
    with serve(tmp_path_factory.mktemp("curate-server"), settings_env, _seed_one_bot) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    chosen = os.environ.get("CURATE_SCREENSHOT_DIR")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("curate-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\ncuration page screenshots: {folder}")
    return folder


def new_page(browser, server, **context_options):
    context = browser.new_context(base_url=server.base_url, **context_options)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    return page


def sign_in(page) -> None:
    page.goto("/curate")
    assert page.url.endswith("/curate/sign-in")
    page.locator("#token").fill(TOKEN)
    page.keyboard.press("Enter")
    page.wait_for_url("**/curate")


def upload(page, tmp_path: Path, samples: list[str]) -> None:
    path = tmp_path / "generated.txt"
    path.write_text("".join(f"{sample}\n{DELIM}\n" for sample in samples), encoding="utf-8")
    page.locator("#upload-file").set_input_files(str(path))
    page.get_by_role("button", name="Upload for review").click()
    page.wait_for_selector("#upload-summary")
    # The summary is parsed before the page's script at its end: wait until that script has run too.
    page.wait_for_load_state("domcontentloaded")


def card(page, text: str):
    return page.locator("#review-list .card", has=page.locator(".tweet-text", has_text=text))


def flash_text(page) -> str:
    return page.locator("#flash").inner_text()


def test_curation_end_to_end(browser, server, screenshots, tmp_path):
    page = new_page(browser, server, viewport={"width": 1100, "height": 1000})

    # Sign in once; the session is an HttpOnly, SameSite=Strict cookie (not Secure: http on loopback).
    sign_in(page)
    cookie, = [c for c in page.context.cookies() if c["name"] == "curate_session"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"], cookie["path"]) == (True, "Strict", False, "/curate")
    assert TOKEN not in page.url

    # Upload a generated file: the same summary as /add_tweets_file/.
    first, second, third, fourth = (
        "first candidate, approved with the keyboard",
        "second candidate, approved with its button",
        "third candidate, rejected",
        "fourth candidate, to be edited",
    )
    upload(page, tmp_path, [first, second, third, fourth, HOSTILE, "x" * 300, first.upper()])
    summary = page.locator("#upload-summary").inner_text()
    assert "5 added" in summary and "1 duplicate skipped" in summary and "1 rejected" in summary
    page.locator("#upload-summary summary").click()
    assert "Sample #6: tweet is 300 weighted characters, over X's limit of 280" in page.locator(".rejections").inner_text()

    # Tweet text with HTML in it is shown as text and never runs.
    assert card(page, "window.__pwned").locator(".tweet-text").inner_text() == HOSTILE
    assert page.locator("#review-list img").count() == 0
    assert page.evaluate("window.__pwned") is None
    page.screenshot(path=str(screenshots / "curate-review.png"), full_page=True)

    # Approve the first with the keyboard (j goes to the first candidate), the second with its button.
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.dataset.tweetId") == str(server.tweet(first).id)
    page.keyboard.press("a")
    card(page, first).wait_for(state="detached")
    assert flash_text(page) == "Approved 1 tweet."
    card(page, second).get_by_role("button", name="Approve").click()
    card(page, second).wait_for(state="detached")

    # Reject the third with the keyboard: the focus moved on to it.
    focused_id = lambda: page.evaluate("document.activeElement.dataset.tweetId")  # noqa: E731
    assert focused_id() == str(server.tweet(third).id)
    page.keyboard.press("r")
    card(page, third).wait_for(state="detached")
    assert flash_text(page) == "Rejected 1 tweet."

    # Edit the fourth: the counter follows X's weights and blocks 281.
    assert focused_id() == str(server.tweet(fourth).id)
    page.keyboard.press("e")
    editor = card(page, fourth).locator("textarea")
    counter = card(page, fourth).locator("output.counter")
    save = card(page, fourth).get_by_role("button", name="Save & approve")
    assert page.evaluate("document.activeElement.tagName") == "TEXTAREA"
    assert counter.inner_text() == f"{len(fourth)}/280"
    page.keyboard.type(" https://example.com/a/very/long/path/that/counts/as/twenty/three")
    assert counter.inner_text() == f"{len(fourth) + 1 + 23}/280"
    editor.fill("日" * 140)
    assert counter.inner_text() == "280/280" and save.is_enabled()
    editor.fill("y" * 281)
    assert counter.inner_text() == "281/280 · over 280"
    assert save.is_disabled()
    page.keyboard.press("Control+Enter")  # blocked: nothing is sent
    assert server.tweet(fourth).status is TweetStatus.pending
    page.screenshot(path=str(screenshots / "curate-edit-over-limit.png"), full_page=False)
    edited = "fourth candidate, edited in the browser — at most 280 weighted characters"
    editor.fill(edited)
    assert counter.inner_text() == f"{weighted_length(edited)}/280"
    page.keyboard.press("Control+Enter")
    card(page, fourth).wait_for(state="detached")
    assert flash_text(page) == f"Tweet {server.tweet(edited).id} edited and approved."
    assert server.tweet(edited).status is TweetStatus.queued
    assert server.tweet(third).status is TweetStatus.rejected
    assert page.locator('[data-count="queued"]').inner_text() == "3"

    # The queue: posting order (oldest first), a warning below 7, reorder with buttons.
    page.get_by_role("link", name="Queue").click()
    page.wait_for_url("**/curate/queue")
    queue_texts = lambda: page.locator(".queue-list .tweet-text").all_inner_texts()  # noqa: E731
    assert queue_texts() == [first, second, edited]
    assert "Only 3 approved tweets left in the queue." in page.locator("#queue-warning").inner_text()
    page.get_by_role("button", name=f"Move tweet {server.tweet(edited).id} top").click()
    page.wait_for_url("**/curate/queue*")
    assert queue_texts() == [edited, first, second]

    # Post next now (dry run): the scheduler's code path; a double click posts once.
    posted_before = server.count(TweetStatus.posted)
    page.get_by_role("button", name="Post next now").dblclick()
    page.wait_for_url("**/curate/history")
    assert server.count(TweetStatus.posted) == posted_before + 1
    assert server.tweet(edited).status is TweetStatus.posted and server.tweet(edited).dry_run
    assert f"Dry run: tweet {server.tweet(edited).id} recorded as posted" in flash_text(page)

    # History: the dry run marked as such, the earlier post linked to X, the rejection with its reason.
    posted = page.locator(".posted-list .card")
    assert posted.nth(0).locator(".tweet-text").inner_text() == edited
    assert posted.nth(0).locator(".status-dry-run").inner_text().lower() == "dry run"
    link = page.get_by_role("link", name="View on X")
    assert link.get_attribute("href") == f"https://x.com/{ACCOUNT}/status/{SEEDED_X_ID}"
    rejected = page.locator(".card", has=page.locator(".tweet-text", has_text=third))
    assert "rejected by the curator" in rejected.locator(".reason").inner_text()
    page.screenshot(path=str(screenshots / "curate-history.png"), full_page=True)

    # An unconfirmed tweet found on X: marked posted with its link, which the history then shows.
    unsure = page.locator(".card", has=page.locator(".tweet-text", has_text=UNCONFIRMED[0]))
    unsure.get_by_label("Found it on X?").fill(f"https://twitter.com/{ACCOUNT}/status/{FOUND_X_ID}?s=20")
    with page.expect_navigation():
        unsure.get_by_role("button", name="Mark posted").click()
    found = server.tweet(UNCONFIRMED[0])
    assert flash_text(page) == f"Tweet {found.id} is recorded as posted."
    assert (found.status, found.x_tweet_id) == (TweetStatus.posted, FOUND_X_ID)
    found_card = posted.filter(has=page.locator(".tweet-text", has_text=UNCONFIRMED[0]))
    assert found_card.get_by_role("link", name="View on X").get_attribute("href") == f"https://x.com/{ACCOUNT}/status/{FOUND_X_ID}"
    rejected.get_by_role("button", name="Requeue").click()
    page.wait_for_url("**/curate/history")
    assert server.tweet(third).status is TweetStatus.queued

    # Sign out: the cookie is gone and the pages ask to sign in again.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/curate/sign-in")
    assert not [c for c in page.context.cookies() if c["name"] == "curate_session"]
    page.goto("/curate/queue")
    assert page.url.endswith("/curate/sign-in")
    assert page.errors == []
    page.context.close()


def test_phone_sized_screen_and_keyboard_only(browser, server, screenshots, tmp_path):
    page = new_page(browser, server, viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    sign_in(page)
    upload(page, tmp_path, ["a phone-sized candidate", "another one, long enough to wrap " + "word " * 30])
    for path in ("/curate", "/curate/queue", "/curate/history"):
        page.goto(path)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), f"{path} scrolls sideways"
    page.goto("/curate")
    page.screenshot(path=str(screenshots / "curate-review-phone.png"), full_page=False)

    # Tab through to the first candidate's approve button and press Enter: no mouse needed.
    target = card(page, "a phone-sized candidate").get_by_role("button", name="Approve")
    page.locator("body").focus()
    for _ in range(40):
        page.keyboard.press("Tab")
        if target.evaluate("button => button === document.activeElement"):
            break
    else:
        pytest.fail("Tab never reached the approve button")
    page.keyboard.press("Enter")
    card(page, "a phone-sized candidate").wait_for(state="detached")
    assert server.tweet("a phone-sized candidate").status is TweetStatus.queued
    assert page.errors == []
    page.context.close()


def test_bulk_selection_and_navigation_with_the_keyboard(browser, server, tmp_path):
    page = new_page(browser, server, viewport={"width": 1100, "height": 1000})
    sign_in(page)
    texts = [f"bulk candidate number {n}" for n in range(4)]
    upload(page, tmp_path, texts)
    assert page.url.endswith("/curate")  # reloading the upload's result shows the list, never uploads again
    ids = [str(server.tweet(text).id) for text in texts]
    focused_id = lambda: page.evaluate("document.activeElement.dataset.tweetId")  # noqa: E731

    card(page, texts[0]).focus()
    page.keyboard.press("x")
    page.keyboard.press("j")
    page.keyboard.press("x")
    assert page.locator("#selected-count").inner_text() == "2 selected"
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")  # back one
    assert focused_id() == ids[2]
    page.keyboard.press("Shift+A")
    card(page, texts[1]).wait_for(state="detached")
    assert flash_text(page) == "Approved 2 tweets."
    assert [server.tweet(text).status for text in texts] == [TweetStatus.queued] * 2 + [TweetStatus.pending] * 2

    assert focused_id() == ids[2]  # the focus stayed on the candidate it was on
    page.keyboard.press("x")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("x")
    page.keyboard.press("Shift+R")
    card(page, texts[3]).wait_for(state="detached")
    assert flash_text(page) == "Rejected 2 tweets."
    assert [server.tweet(text).status for text in texts[2:]] == [TweetStatus.rejected] * 2
    page.reload()
    assert page.locator("#upload-summary").count() == 0 and page.url.endswith("/curate")
    assert page.errors == []
    page.context.close()


def test_an_upload_of_more_candidates_than_a_page_reloads_as_the_list_and_pages_on(browser, server, tmp_path):
    """130 candidates: the result shows the first page (100); reloading it shows the list and stores
    nothing again; approving every shown candidate brings the next page."""
    page = new_page(browser, server, viewport={"width": 1100, "height": 1000})
    sign_in(page)
    before = server.count(TweetStatus.pending)
    texts = [f"page test candidate {n:03d}" for n in range(130)]
    upload(page, tmp_path, texts)
    assert "130 added" in page.locator("#upload-summary").inner_text()
    cards = page.locator("#review-list .card")
    pending_title = page.locator("#review-title .muted")

    def shows(pending: int) -> None:
        assert pending_title.inner_text() == f"{pending} pending"
        assert page.locator('[data-count="pending"]').inner_text() == str(pending)
        assert cards.count() == min(pending, REVIEW_PAGE_SIZE)
        note = page.get_by_text("Showing the first", exact=False)
        assert note.count() == (1 if pending > REVIEW_PAGE_SIZE else 0)

    shows(before + 130)
    assert page.url.endswith("/curate")
    page.reload()
    assert page.locator("#upload-summary").count() == 0 and page.url.endswith("/curate")
    assert server.count(TweetStatus.pending) == before + 130  # the file was not sent again
    shows(before + 130)

    shown = [int(card_id.removeprefix("tweet-")) for card_id in cards.evaluate_all("cards => cards.map(c => c.id)")]
    page.locator("#select-all").check()
    page.get_by_role("button", name="Approve selected").click()
    # The last shown card went and more are pending: the page reloads with the next ones.
    page.wait_for_function(
        "([count, title]) => document.querySelectorAll('#review-list .card').length === count"
        " && document.querySelector('#review-title .muted').textContent === title",
        arg=[min(before + 30, REVIEW_PAGE_SIZE), f"{before + 30} pending"],
    )
    shows(before + 30)
    assert server.count(TweetStatus.pending) == before + 30
    with server.session_factory() as session:
        assert set(session.scalars(select(Tweet.status).where(Tweet.id.in_(shown)))) == {TweetStatus.queued}
    assert page.errors == []
    page.context.close()


COUNTER_PIECES = [
    "hello", " ", "\n", "\r\n", "日本語", "한국어", "😷", "👍🏽", "🇺🇸", "1️⃣", "#⃣", "👨‍👩‍👧", "🧑‍🧑‍🧒", "©", "™", "é", "e\u0301",
    "https://example.com/path?q=1", "http://t.co/abcdef", "example.com", "a.co", "file.txt", "www.例え.jp", "例え.jp/path",
    "https://例え.テスト", ".", "-", "_", "/", "@", "#", "$", "foo.bar.baz", "t.co/x", "\u2013", "\u2026", "\u2018", "\u3000",
    "\t", "\x85", "\ufeff", "ı", "<script>", "ok.google", "http://localhost", "https://a.b", "مرحبا", "שלום", "привет",
    "Ελληνικά", "১২৩", "\u200d", "\u1100", "\u10ff", "İ", "ß", "ﬁ", "\u00ad", "Straße.de", "例" * 30 + ".jp",
    "xn--abc.com", "ＡＢＣ．ｃｏｍ", ":8080", "?q=x&y=1", "/path",
]
COUNTER_CASES = [
    "", "plain ascii", "a" * 280, "a" * 281, "日" * 140, "日" * 141, "😷" * 140, "https://example.com " * 12,
    "see https://example.com/foo.", "(example.com)", "http://t.co/" + "a" * 41, "a" * 64 + ".com",
    "@example.com", "$example.com", "#example.com", "foo-example.com", "  trimmed \n",
]


def test_counter_in_the_browser_agrees_with_the_server(browser, server):
    """The live counter (api/curate/static/tweet_counter.js) against core.tweet_text.weighted_length."""
    generator = random.Random(8)
    cases = COUNTER_CASES + [
        "".join(generator.choice(COUNTER_PIECES) for _ in range(generator.randint(1, 12))) for _ in range(600)
    ]
    page = new_page(browser, server)
    sign_in(page)
    counted = page.evaluate("(texts) => texts.map((text) => TweetCounter.weightedLength(text))", cases)
    expected = [weighted_length(normalize_text(text)) for text in cases]
    disagreements = [(text, server_length, browser_length)
                     for text, server_length, browser_length in zip(cases, expected, counted)
                     if server_length != browser_length]
    assert disagreements == []
    over = page.evaluate("(texts) => texts.map((text) => TweetCounter.check(text).destinations[0].problem)", ["a" * 280, "a" * 281, "日" * 141])
    assert over == [None, "over 280", "over 280"]
    # What the server refuses for every destination, as it says it (core.tweet_text.clean_text).
    refused = ["a\x00b", "bell \x07", "\x1b[31mred", "del\x7f", "c1 \x9f", "tab\tand\nnewline are fine", "\u200b"]
    problems = page.evaluate("(texts) => texts.map((text) => TweetCounter.check(text).problem)", refused)
    expected_problems = []
    for text in refused:
        try:
            clean_text(text)
            expected_problems.append(None)
        except TweetRejected as exc:
            expected_problems.append(str(exc).removeprefix("tweet ").removesuffix(": remove it"))
    assert problems == expected_problems
    assert problems[0] == "contains the control character U+0000"
    assert page.errors == []
    page.context.close()


# Where Mastodon's and Bluesky's counts differ from X's: clusters, links with and without http(s)://, mentions.
GRAPHEME_PIECES = [
    "👨‍👩‍👧", "👩🏽‍💻", "🏳️‍🌈", "🇫🇷", "🇺🇸🇫🇷", "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "é", "ạ̈", "각", "각", "क्षि", "กำ", "‍", "️", "❤️", "1️⃣",
    "@alice", "@alice@mastodon.social", "@Bob_1@example.org.", "@a.b-c@host", "bob@example.com", "=@x", "/@x", "é@x",
    "@x@", "@éa", "@x́", "@İ", "@ı", "@K", "https://mastodon.social/@alice", "@bob@host.example://x", "@ａ", "@ab@ho\u0345st.com", "@ſam", "@\u212aate",
]


def test_mastodon_and_bluesky_counts_in_the_browser_agree_with_the_server(browser, server):
    """tweet_counter.js's Mastodon count and grapheme count against core.tweet_text.mastodon_length and grapheme_count."""
    generator = random.Random(11)
    pieces = COUNTER_PIECES + GRAPHEME_PIECES
    cases = COUNTER_CASES + GRAPHEME_PIECES + [
        "".join(generator.choice(pieces) for _ in range(generator.randint(1, 12))) for _ in range(800)
    ]
    page = new_page(browser, server)
    sign_in(page)
    counted = page.evaluate(
        "(texts) => texts.map((text) => [TweetCounter.mastodonLength(text), TweetCounter.graphemeCount(TweetCounter.normalize(text))])",
        cases,
    )
    expected = [[mastodon_length(normalize_text(text)), grapheme_count(normalize_text(text))] for text in cases]
    disagreements = [(text, server_counts, browser_counts)
                     for text, server_counts, browser_counts in zip(cases, expected, counted)
                     if server_counts != browser_counts]
    assert disagreements == []
    assert page.errors == []
    page.context.close()


def test_a_file_over_the_upload_limit_is_refused_before_it_is_sent(browser, server, tmp_path):
    page = new_page(browser, server)
    sign_in(page)
    file_input = page.locator("#upload-file")
    limit = int(file_input.get_attribute("data-max-bytes"))
    assert f"up to {limit:,} bytes" in page.locator("label[for=upload-file]").inner_text()
    uploads = []
    page.on("request", lambda request: uploads.append(request) if request.method == "POST" else None)

    too_large = tmp_path / "too-large.txt"
    too_large.write_bytes(b"x" * (limit + 1))
    file_input.set_input_files(str(too_large))
    assert page.locator("#flash.flash-error").is_visible()
    assert flash_text(page) == (
        f"too-large.txt is {limit + 1:,} bytes, over the {limit:,}-byte limit (MAX_UPLOAD_BYTES): "
        "split the file and upload the parts. Nothing was sent."
    )
    page.get_by_role("button", name="Upload for review").click()
    assert file_input.evaluate("input => input.validity.customError")

    # A file within the limit clears the message and is sent: the only upload the browser made.
    within = tmp_path / "within.txt"
    within.write_bytes(b"x" * limit)
    file_input.set_input_files(str(within))
    assert page.locator("#flash").is_hidden()
    assert not file_input.evaluate("input => input.validity.customError")
    upload(page, tmp_path, ["a candidate from a file within the limit"])
    assert "1 added" in page.locator("#upload-summary").inner_text()
    assert [request.url for request in uploads] == [f"{server.base_url}/curate/upload"]
    assert not page.errors



def test_without_javascript_an_upload_over_the_limit_comes_back_to_the_page_with_the_reason(browser, server, tmp_path):
    """The server refuses it before parsing (api/request_limits.py) and drops the body the browser still
    sends, so the browser shows the page's answer instead of "connection reset"."""
    page = new_page(browser, server, java_script_enabled=False)
    sign_in(page)
    limit = int(page.locator("#upload-file").get_attribute("data-max-bytes"))
    pending = server.count(TweetStatus.pending)
    too_large = tmp_path / "too-large.txt"
    too_large.write_bytes(b"x" * (limit + 100_000))  # over the limit and the form's framing, within twice them
    page.locator("#upload-file").set_input_files(str(too_large))
    with page.expect_navigation():
        page.get_by_role("button", name="Upload for review").click()
    assert page.url == f"{server.base_url}/curate"
    assert page.locator("#flash.flash-error").is_visible()
    assert f"{limit:,} bytes (MAX_UPLOAD_BYTES): split the file" in flash_text(page)
    assert server.count(TweetStatus.pending) == pending


# ---- several bots, several destinations ----

BOB_EARLIER = "bob's earlier post, on X, Mastodon and Bluesky"
BOB_PARTLY = "bob's tweet already on X, Mastodon and Bluesky still to post"
BOB_TOO_LONG = "bob's tweet with a long link: https://example.com/" + "a" * 300
ALICE_NEXT = "alice's next tweet"
BLUESKY_POST = "https://bsky.app/profile/bob.bsky.social/post/3kseeded22a"
MASTODON_POST = "https://mastodon.example/@bob/113500000000000001"
RATE_LIMITED = "Bluesky's rate limit is reached (until 2026-11-22 09:05 UTC); the tweet is back in the queue"


def _seed_two_bots(session: Session) -> None:
    """bob: an earlier post on his three destinations, a tweet X has and the others still lack, one too
    long for Bluesky; alice: one queued tweet."""
    earlier = Tweet(account="bob", text=BOB_EARLIER, content_hash="bob-earlier", status=TweetStatus.posted, position=0,
                    posted_at=utcnow() - timedelta(days=1), x_tweet_id=SEEDED_X_ID, x_url=f"https://x.com/bob/status/{SEEDED_X_ID}")
    partly = Tweet(account="bob", text=BOB_PARTLY, content_hash="bob-partly", status=TweetStatus.queued, position=1,
                   error=f"last attempt: {RATE_LIMITED}")
    session.add_all([
        earlier, partly,
        Tweet(account="bob", text=BOB_TOO_LONG, content_hash="bob-too-long", status=TweetStatus.queued, position=2),
        Tweet(account="alice", text=ALICE_NEXT, content_hash="alice-next", status=TweetStatus.queued, position=0),
    ])
    session.flush()
    session.add_all([
        Delivery(tweet_id=earlier.id, destination="x", status=DeliveryStatus.posted, remote_id=SEEDED_X_ID,
                 url=earlier.x_url, posted_at=earlier.posted_at),
        Delivery(tweet_id=earlier.id, destination="mastodon", status=DeliveryStatus.posted, remote_id="113500000000000001",
                 url=MASTODON_POST, posted_at=earlier.posted_at),
        Delivery(tweet_id=earlier.id, destination="bluesky", status=DeliveryStatus.posted, remote_id="at://seeded",
                 url=BLUESKY_POST, posted_at=earlier.posted_at),
        Delivery(tweet_id=partly.id, destination="x", status=DeliveryStatus.posted, remote_id=FOUND_X_ID,
                 url=f"https://x.com/bob/status/{FOUND_X_ID}", posted_at=utcnow()),
        Delivery(tweet_id=partly.id, destination="bluesky", status=DeliveryStatus.queued, key="seeded-key", error=RATE_LIMITED),
    ])


@pytest.fixture(scope="module")
def two_bot_server(tmp_path_factory):
    """BOTS=alice,bob: alice posts to X, bob to X, Mastodon and Bluesky; every destination a dry run."""
    settings_env = {
        "BOTS": "alice,bob",
        "BOT_ALICE_DESTINATIONS": "x", "BOT_ALICE_TWITTER_DRY_RUN": "true", "BOT_ALICE_TWEET_ORDER": "oldest",
        "BOT_BOB_DESTINATIONS": "x,mastodon,bluesky", "BOT_BOB_TWITTER_DRY_RUN": "true", "BOT_BOB_MASTODON_DRY_RUN": "true",
        "BOT_BOB_BLUESKY_DRY_RUN": "true",
        "BOT_BOB_TWEET_ORDER": "oldest",
    }
    with serve(tmp_path_factory.mktemp("curate-two-bots"), settings_env, _seed_two_bots) as running:
        yield running


def destination(card, network: str):
    return card.locator(f'.destination[data-network="{network}"]')


def shown(locator) -> str:
    """What a part of the page says, spaces squeezed, in lower case (labels are shown in capitals)."""
    return " ".join(locator.inner_text().split()).lower()


def test_two_bots_each_destinations_state_and_link_and_post_next_per_bot(browser, two_bot_server, screenshots):
    server = two_bot_server
    page = new_page(browser, server, viewport={"width": 1100, "height": 1000})
    sign_in(page)  # one sign-in for every bot

    # No bot named: the first of BOTS. The picker names both; alice's queue has only alice's tweet.
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Queue").click()
    page.wait_for_url("**/curate/queue?bot=alice")
    bots = page.get_by_role("navigation", name="Bots")
    assert bots.get_by_role("link").all_inner_texts() == ["@alice", "@bob"]
    assert bots.locator('[aria-current="true"]').inner_text() == "@alice"
    assert page.locator(".queue-list .tweet-text").all_inner_texts() == [ALICE_NEXT]
    alices_card = page.locator(".queue-list .card")
    assert shown(destination(alices_card, "x")) == "x not posted yet"
    assert destination(alices_card, "bluesky").count() == 0

    # bob's queue: each destination's state, the link where it is posted, and the text too long for Bluesky.
    bots.get_by_role("link", name="@bob").click()
    page.wait_for_url("**/curate/queue?bot=bob")
    assert page.locator(".queue-list .tweet-text").all_inner_texts() == [BOB_PARTLY, BOB_TOO_LONG]
    partly = page.locator(".queue-list .card").nth(0)
    assert destination(partly, "x").get_by_role("link", name="View on X").get_attribute("href") == f"https://x.com/bob/status/{FOUND_X_ID}"
    assert destination(partly, "bluesky").get_attribute("data-status") == "queued"
    assert RATE_LIMITED in destination(partly, "bluesky").inner_text()
    assert shown(destination(partly, "mastodon")) == "mastodon not posted yet"
    too_long = page.locator(".queue-list .card").nth(1)
    graphemes = len(BOB_TOO_LONG)
    assert too_long.locator(".text-problem").inner_text() == f"Not valid for Bluesky: {graphemes} graphemes over Bluesky's 300"
    assert "It will be posted only to X, Mastodon." in too_long.locator(".text-problems").inner_text()
    page.screenshot(path=str(screenshots / "curate-two-bots-queue.png"), full_page=True)

    # Post next now as bob: bob's tweet X already has goes to Mastodon and Bluesky only; alice's stays queued.
    page.get_by_role("button", name="Post next now as @bob").click()
    page.wait_for_url("**/curate/history?bot=bob")
    assert flash_text(page) == (f"New tweet posted @ https://x.com/bob/status/{FOUND_X_ID}; "
                                "Bluesky: dry run, nothing sent; Mastodon: dry run, nothing sent")  # deliveries in the order they were made
    assert server.tweet(BOB_PARTLY).status is TweetStatus.posted
    assert server.tweet(ALICE_NEXT).status is TweetStatus.queued

    # bob's history: per destination, the link to each post, the dry run marked as such.
    posted = page.locator(".posted-list .card")
    assert posted.locator(".tweet-text").all_inner_texts() == [BOB_PARTLY, BOB_EARLIER]
    assert destination(posted.nth(0), "x").get_by_role("link", name="View on X").get_attribute("href") == f"https://x.com/bob/status/{FOUND_X_ID}"
    assert destination(posted.nth(0), "mastodon").locator(".delivery-dry-run").inner_text().lower() == "dry run"
    assert destination(posted.nth(0), "bluesky").locator(".delivery-dry-run").inner_text().lower() == "dry run"
    assert destination(posted.nth(1), "mastodon").get_by_role("link", name="View on Mastodon").get_attribute("href") == MASTODON_POST
    assert destination(posted.nth(1), "bluesky").get_by_role("link", name="View on Bluesky").get_attribute("href") == BLUESKY_POST
    assert destination(posted.nth(1), "x").get_by_role("link", name="View on X").get_attribute("href") == f"https://x.com/bob/status/{SEEDED_X_ID}"
    page.screenshot(path=str(screenshots / "curate-two-bots-history.png"), full_page=True)

    # The picker keeps the section: alice's history has none of bob's posts; her own post next now.
    page.get_by_role("navigation", name="Bots").get_by_role("link", name="@alice").click()
    page.wait_for_url("**/curate/history?bot=alice")
    assert page.locator(".posted-list .card").count() == 0
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Queue").click()
    page.wait_for_url("**/curate/queue?bot=alice")
    page.get_by_role("button", name="Post next now as @alice").click()
    page.wait_for_url("**/curate/history?bot=alice")
    alices = server.tweet(ALICE_NEXT)
    assert alices.status is TweetStatus.posted
    assert flash_text(page) == f"Dry run: tweet {alices.id} recorded as posted; nothing was sent to X"
    assert shown(destination(page.locator(".posted-list .card"), "x")) == "x dry run not sent to x (dry run)."
    assert server.tweet(BOB_TOO_LONG).status is TweetStatus.queued

    # A bot the service does not have: back to the review list, saying so.
    page.goto("/curate/queue?bot=carol")
    page.wait_for_url("**/curate")
    assert flash_text(page) == "no bot is named 'carol': the bots are alice, bob"
    assert page.errors == []
    page.context.close()


# ---- the live counter follows the bot's destinations ----

MONA_TEXT = "mona's candidate, for Mastodon only"
MIX_TEXT = "mix's candidate, for X and Mastodon"
SKY_TEXT = "sky's candidate, for Bluesky only"
FAMILY = "👨\u200d👩\u200d👧"  # 5 code points, 18 bytes of UTF-8, one grapheme


def _seed_counter_bots(session: Session) -> None:
    for account, text in (("mona", MONA_TEXT), ("mix", MIX_TEXT), ("sky", SKY_TEXT)):
        session.add(Tweet(account=account, text=text, content_hash=f"{account}-candidate", status=TweetStatus.pending, position=0))


@pytest.fixture(scope="module")
def counter_server(tmp_path_factory):
    """BOTS=mona,mix,sky: mona posts to Mastodon (an instance allowing 500 characters), mix to X and
    Mastodon, sky to Bluesky; every destination a dry run."""
    settings_env = {"BOTS": "mona,mix,sky", "BOT_MONA_DESTINATIONS": "mastodon", "BOT_MIX_DESTINATIONS": "x,mastodon",
                    "BOT_SKY_DESTINATIONS": "bluesky"}
    for name in ("MONA", "MIX", "SKY"):
        for variable in ("TWITTER_DRY_RUN", "MASTODON_DRY_RUN", "BLUESKY_DRY_RUN"):
            settings_env[f"BOT_{name}_{variable}"] = "true"
    with serve(tmp_path_factory.mktemp("curate-counter-bots"), settings_env, _seed_counter_bots) as running:
        yield running


def open_editor(page, bot: str, text: str):
    """The review page of `bot` with `text`'s editor open: its textarea, counter and save button."""
    page.goto(f"/curate?bot={bot}")
    candidate = card(page, text)
    candidate.get_by_text("Edit").click()
    return (candidate.locator("textarea"), candidate.locator("output.counter"),
            candidate.get_by_role("button", name="Save & approve"))


def test_a_mastodon_only_bots_counter_counts_mastodons_characters_and_saves_400(browser, counter_server):
    page = new_page(browser, counter_server, viewport={"width": 1100, "height": 1000})
    sign_in(page)
    editor, counter, save = open_editor(page, "mona", MONA_TEXT)
    assert counter.inner_text() == f"{len(MONA_TEXT)}/500"
    editor.fill("see https://example.com/" + "a" * 100 + " and example.com")  # a link counts 23, example.com as written
    assert counter.inner_text() == f"{4 + 23 + 16}/500"
    editor.fill("@someone@mastodon.example hi")  # a remote mention counts as its local part
    assert counter.inner_text() == "11/500"
    editor.fill("m" * 501)
    assert counter.inner_text() == "501/500 · over 500" and save.is_disabled()
    assert counter.evaluate("output => output.classList.contains('over')")
    long_text = "m" * 400
    editor.fill(long_text)
    assert counter.inner_text() == "400/500" and save.is_enabled()
    page.keyboard.press("Control+Enter")
    card(page, MONA_TEXT).wait_for(state="detached")
    saved = counter_server.tweet(long_text)
    assert flash_text(page) == f"Tweet {saved.id} edited and approved."
    assert saved.status is TweetStatus.queued
    assert page.errors == []
    page.context.close()


def test_an_x_and_mastodon_bots_counter_says_where_a_text_goes_and_blocks_only_what_none_takes(browser, counter_server, screenshots):
    page = new_page(browser, counter_server, viewport={"width": 1100, "height": 1000})
    sign_in(page)
    editor, counter, save = open_editor(page, "mix", MIX_TEXT)
    assert counter.inner_text() == f"X {len(MIX_TEXT)}/280 · Mastodon {len(MIX_TEXT)}/500"
    editor.fill("see example.com")  # X counts a link written without http(s):// as 23, Mastodon as written
    assert counter.inner_text() == "X 27/280 · Mastodon 15/500"
    editor.fill("x" * 501)
    assert counter.inner_text() == "X 501/280 (over 280) · Mastodon 501/500 (over 500)"
    assert save.is_disabled()
    assert counter.locator(".over").all_inner_texts() == ["X 501/280 (over 280)", "Mastodon 501/500 (over 500)"]
    long_text = "x" * 300
    editor.fill(long_text)
    assert counter.inner_text() == "X 300/280 (over 280) · Mastodon 300/500 · posted only to Mastodon"
    assert counter.locator(".over").all_inner_texts() == ["X 300/280 (over 280)"]
    assert save.is_enabled()
    page.screenshot(path=str(screenshots / "curate-counter-x-and-mastodon.png"), full_page=False)
    save.click()
    card(page, MIX_TEXT).wait_for(state="detached")
    assert counter_server.tweet(long_text).status is TweetStatus.queued
    assert page.errors == []
    page.context.close()


def test_a_bluesky_only_bots_counter_counts_graphemes_and_bytes(browser, counter_server):
    page = new_page(browser, counter_server, viewport={"width": 1100, "height": 1000})
    sign_in(page)
    editor, counter, save = open_editor(page, "sky", SKY_TEXT)
    assert counter.inner_text() == f"{len(SKY_TEXT)}/300"
    editor.fill(FAMILY * 10 + "cafe\u0301 🇫🇷")  # 10 families, c-a-f-é, a space and a flag
    assert counter.inner_text() == "16/300" and save.is_enabled()
    editor.fill("e\u0301" * 301)
    assert counter.inner_text() == "301/300 · over 300" and save.is_disabled()
    editor.fill(FAMILY * 200)  # 200 graphemes, 3,600 bytes
    assert counter.inner_text() == "200/300 · 3,600 bytes, over 3,000" and save.is_disabled()
    editor.fill(FAMILY * 166)  # 2,988 bytes
    assert counter.inner_text() == "166/300" and save.is_enabled()
    assert page.errors == []
    page.context.close()
