"""The tweet rule and the curated file format."""
import pytest
from hypothesis import given, settings, strategies as st
from twitter_text import parse_tweet
from twitter_text.extract_urls import max_url_length

from core import tweet_text
from core.tweet_text import (
    BLUESKY_MAX_BYTES,
    BLUESKY_MAX_GRAPHEMES,
    MASTODON_LATIN_ACCENTS,
    MAX_COMBINING_RUN,
    MAX_TWEET_CODE_POINTS,
    CuratedFileError,
    TweetRejected,
    bluesky_text_problem,
    content_hash,
    grapheme_count,
    join_samples,
    mastodon_length,
    mastodon_text_problem,
    parse_curated_file,
    split_samples,
    validate_tweet,
    weighted_length,
)

DELIM = "=" * 20


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hello", 5),
        ("see https://example.com/a/very/long/path/indeed", 4 + 23),
        ("example.com", 23),
        ("e.g. this", 9),
        ("日本語", 6),
        ("😀", 2),
        ("👨‍👩‍👧", 2),
        ("café", 4),
    ],
)
def test_weighted_length_follows_x(text, expected):
    assert weighted_length(text) == expected == parse_tweet(text).weightedLength


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("abc .:/-_#@") + ["com", "http://", "x.co", "é", "日", "😀", "\n"]), max_size=40).map("".join))
def test_fast_path_agrees_with_twitter_text(text):
    text = text.strip()
    assert weighted_length(text) == parse_tweet(text).weightedLength


def test_validate_normalises_and_trims():
    assert validate_tweet("  cafe\u0301 \r\nnext  ") == "café \nnext"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("hi <|endoftext|>", "<|endoftext|>"),
        ("<|startoftext|>hi", "<|startoftext|>"),
        ("a" * 281, "281 weighted characters"),
        ("日" * 141, "282 weighted characters"),
        ("bad \ufffe char", "characters X does not allow"),
        ("nul \x00 byte", "control character U\\+0000"),
        ("bell \x07", "control character U\\+0007"),
        ("c1 \x85 control", "control character U\\+0085"),
        ("lone \ud800 surrogate", "control character U\\+D800"),
    ],
)
def test_validate_rejects(text, reason):
    with pytest.raises(TweetRejected, match=reason.replace("|", r"\|")):
        validate_tweet(text)


def test_newlines_and_tabs_are_kept():
    assert validate_tweet("line one\n\tline two") == "line one\n\tline two"


def test_limit_is_inclusive():
    assert validate_tweet("a" * 280) == "a" * 280
    assert validate_tweet("日" * 140) == "日" * 140


def test_the_url_length_bound_is_twitter_texts():
    """core.tweet_text copies it so that importing the rule does not import twitter-text."""
    assert tweet_text.MAX_URL_LENGTH == max_url_length


def test_longest_links_twitter_text_counts_fit_under_the_code_point_cap():
    """The densest tweets are links of twitter-text's longest (a longer one is not a link to it,
    and its protocol counts twice there)."""
    link = "https://example.com/" + "a" * (max_url_length - 2 * len("https://") - len("example.com/"))
    assert parse_tweet(link).weightedLength == 23
    assert parse_tweet(link + "a").weightedLength > 23
    densest = " ".join([link] * 11) + " " + "b" * 16
    assert weighted_length(densest) == 11 * 23 + 11 + 16 == 280
    assert validate_tweet(densest) == densest
    assert len(densest) <= MAX_TWEET_CODE_POINTS


HUGE = 5_000_000


HOSTILE_ENTRIES = {
    "plain": lambda: "a" * HUGE,
    "dotted words": lambda: "a.b " * (HUGE // 4),
    "a dotted chain": lambda: "a." * (HUGE // 2),
    "accented": lambda: "é" * HUGE,
    "emoji": lambda: "😀" * HUGE,
    "combining marks out of order": lambda: "a" + "\u0301" * (HUGE // 2) + "\u0316" * (HUGE // 2),
}


@pytest.mark.parametrize("kind", HOSTILE_ENTRIES)
def test_entry_over_the_cap_is_rejected_before_any_parse(monkeypatch, kind):
    text = HOSTILE_ENTRIES[kind]()

    def not_reached(*_args):
        raise AssertionError("an entry over the cap reached a costly step")

    for costly in ("normalize_text", "parse_tweet", "extract_urls_with_indices", "has_invalid_characters"):
        monkeypatch.setattr(tweet_text, costly, not_reached)
    with pytest.raises(TweetRejected, match=f"tweet is {len(text.strip()):,} characters long"):
        validate_tweet(text)


def test_code_point_cap_boundary_and_trimmed_whitespace():
    with pytest.raises(TweetRejected, match=f"tweet is {MAX_TWEET_CODE_POINTS + 1:,} characters long"):
        validate_tweet("a" * (MAX_TWEET_CODE_POINTS + 1))
    with pytest.raises(TweetRejected, match=f"tweet is {MAX_TWEET_CODE_POINTS} weighted characters"):
        validate_tweet("a" * MAX_TWEET_CODE_POINTS)
    assert validate_tweet(" " * HUGE + "hi\r\n" * 2 + "\n" * HUGE) == "hi\nhi"


def test_long_run_of_combining_marks_is_rejected_before_nfc(monkeypatch):
    """NFC sorts a run of marks by insertion: out of order, its time grows with the run's square."""
    run = MAX_COMBINING_RUN + 1
    text = "a" + "\u0301" * (run // 2) + "\u0316" * (run - run // 2)
    monkeypatch.setattr(tweet_text, "normalize_text", lambda _text: pytest.fail("the run reached NFC"))
    with pytest.raises(TweetRejected, match=f"tweet has {run:,} combining marks in a row"):
        validate_tweet(text)


def test_run_of_combining_marks_a_link_may_hold_passes_the_guard():
    with pytest.raises(TweetRejected, match="weighted characters, over X's limit"):
        validate_tweet("a" + "\u0301" * MAX_COMBINING_RUN)


def test_content_hash_ignores_case_and_whitespace_runs():
    assert content_hash("Hello  World") == content_hash("hello world")
    assert content_hash("hello world") != content_hash("hello world!")


@pytest.mark.parametrize(
    "raw",
    [
        f"one\n{DELIM}\ntwo\n{DELIM}\n",
        f"one\r\n{DELIM}\r\ntwo",
        f"\n\n  one  \n{DELIM}\n\n{DELIM}\ntwo\n\n{DELIM}   \n\n",
    ],
)
def test_split_samples_variants(raw):
    assert split_samples(raw) == ["one", "two"]


def test_longer_or_inline_equals_are_text():
    raw = f"a line with {DELIM} inside\n{DELIM}\n{'=' * 21}"
    assert split_samples(raw) == [f"a line with {DELIM} inside", "=" * 21]


def test_join_then_split_round_trips():
    samples = ["first", "multi\nline", "third"]
    assert split_samples(join_samples(samples)) == samples


def test_csv_with_tweets_column():
    data = 'id,tweets\n1,"comma, inside"\n2,"multi\nline ""quoted"""\n3,\n'.encode()
    assert parse_curated_file(data, "x.csv") == ["comma, inside", 'multi\nline "quoted"']


def test_csv_detected_by_header_without_extension():
    assert parse_curated_file(b"tweets\nhello\n", "upload") == ["hello"]


@pytest.mark.parametrize(
    "data, filename, message",
    [
        (b"", "a.txt", "empty"),
        (b"  \n\n", "a.txt", "empty"),
        (b"\xff\xfe caf\xe9", "a.txt", "not UTF-8"),
        (b"text,other\na,b\n", "a.csv", "no 'tweets' column"),
    ],
)
def test_parse_errors(data, filename, message):
    with pytest.raises(CuratedFileError, match=message):
        parse_curated_file(data, filename)


UTF8_BOM = "\ufeff".encode()  # what spreadsheet programs put first in a "CSV UTF-8" file


@pytest.mark.parametrize(
    "data, filename, expected",
    [
        (UTF8_BOM + f"first sample\n{DELIM}\nsecond\n{DELIM}\n".encode(), "curated.txt", ["first sample", "second"]),
        (UTF8_BOM + b"tweets\nfirst row\nsecond row\n", "export.csv", ["first row", "second row"]),
        (UTF8_BOM + b"tweets\nfirst row\n", "upload", ["first row"]),  # the header alone says CSV
        (UTF8_BOM + b'"tweets",id\n"first, quoted",1\n', "export.csv", ["first, quoted"]),
    ],
    ids=["curated", "csv", "csv-by-header", "quoted-header"],
)
def test_a_leading_byte_order_mark_is_not_part_of_the_file(data, filename, expected):
    assert parse_curated_file(data, filename) == expected


# ---- pinned by the mutation run (issue 15) ---------------------------------------------------

def test_a_non_string_is_rejected_saying_so():
    with pytest.raises(TweetRejected) as caught:
        validate_tweet(12)
    assert str(caught.value) == "tweet must be a string"


@pytest.mark.parametrize(
    "text, message",
    [
        ("  \n ", "tweet is empty"),
        ("bad \ufffe char", "tweet contains characters X does not allow"),
    ],
)
def test_rejection_messages_are_whole(text, message):
    with pytest.raises(TweetRejected) as caught:
        validate_tweet(text)
    assert str(caught.value) == message


def test_a_lone_carriage_return_is_a_line_break():
    assert validate_tweet("one\rtwo\r\nthree") == "one\ntwo\nthree"


def test_text_too_short_to_hold_a_long_run_of_marks_skips_the_scan(monkeypatch):
    """The scan walks every character: only a text longer than MAX_COMBINING_RUN can need it."""
    monkeypatch.setattr(tweet_text, "_longest_combining_run", lambda _text: pytest.fail("scanned"))
    assert validate_tweet("café") == "café"
    with pytest.raises(TweetRejected, match=f"tweet is {MAX_COMBINING_RUN} weighted characters"):
        validate_tweet("é" * MAX_COMBINING_RUN)


def test_a_run_of_marks_at_the_start_counts_from_its_first_mark():
    """A run of exactly MAX_COMBINING_RUN marks passes the guard, even with no base character."""
    with pytest.raises(TweetRejected, match="weighted characters, over X's limit"):
        validate_tweet("\u0301" * MAX_COMBINING_RUN + "a")


@pytest.mark.parametrize(
    "text, expected",
    [("plain", None), ("nul \x00", "\x00"), ("c1 \x85 then \x07", "\x85"), ("tab\tand\nnewline", None)],
)
def test_control_character_names_the_first(text, expected):
    assert tweet_text.control_character(text) == expected


def test_content_hash_is_sha256_of_the_folded_single_spaced_text():
    """Stored hashes depend on this key: changing it would let duplicates of old tweets in."""
    import hashlib

    assert content_hash("  Hello \n\t World ") == hashlib.sha256(b"hello world").hexdigest()


def test_split_samples_keeps_line_breaks_inside_a_sample_and_reads_carriage_returns():
    assert split_samples(f"one\r\nline\r\n{DELIM}\r\ntwo") == ["one\nline", "two"]
    assert split_samples(f"one\rline\r{DELIM}\rtwo\r") == ["one\nline", "two"]


def test_csv_with_carriage_return_line_endings():
    """What older spreadsheet programs write ("CSV (Macintosh)")."""
    assert parse_curated_file(b"tweets\rone\rtwo\r", "x.csv") == ["one", "two"]


def test_csv_rows_shorter_than_the_header_have_no_tweet():
    assert parse_curated_file(b"id,tweets\n1\n2,hi\n3,\n", "x.csv") == ["hi"]


@pytest.mark.parametrize("data", [b"\xef\xbb\xbf", b"\xef\xbb\xbf\n"])
def test_a_csv_holding_only_a_byte_order_mark_has_no_tweets_column(data):
    with pytest.raises(CuratedFileError, match="CSV file has no 'tweets' column"):
        parse_curated_file(data, "x.csv")


def test_csv_error_on_the_header_names_line_one():
    with pytest.raises(CuratedFileError, match="at line 1 "):
        parse_curated_file(b'"tweets\n', "x.csv")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"id,text\n1,a\n", "CSV file has no 'tweets' column: the first line must be a header naming it"),
        (b"", "file is empty: upload a file of samples separated by a line of 20 '='"),
        (
            b'tweets\n"fine\n',
            "CSV file cannot be read at line 2 (unexpected end of data): quote a cell holding commas, "
            'quotes or line breaks in "..." with inner quotes doubled, and keep each cell one tweet',
        ),
    ],
)
def test_curated_file_messages_are_whole(data, message):
    with pytest.raises(CuratedFileError) as caught:
        parse_curated_file(data, "x.csv")
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "data, expected",
    [
        (b'"tweets"\nhello\n', ["hello"]),  # a quoted header still says CSV
        (f"tweets about cats\n{DELIM}\nmore\n".encode(), ["tweets about cats", "more"]),  # a line, not a header
        (f"Xtweets\n{DELIM}\n".encode(), ["Xtweets"]),
    ],
)
def test_csv_is_detected_by_the_whole_first_line(data, expected):
    assert parse_curated_file(data, "upload") == expected


def test_a_blank_line_before_the_tweets_header_is_an_error_not_a_tweet():
    """Read as the curated format it would store "tweets\\nhello" as one tweet."""
    with pytest.raises(CuratedFileError, match="the first line must be a header"):
        parse_curated_file(b"\n\ntweets\nhello\n", "upload")


FAMILY = "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466"  # man, woman, girl, boy joined by ZWJs
FLAG_FR = "\U0001F1EB\U0001F1F7"  # two regional indicators
WAVE_DARK = "\U0001F44B\U0001F3FF"  # emoji with a skin tone modifier
E_ACUTE_DECOMPOSED = "e\u0301"  # e and a combining acute accent


@pytest.mark.parametrize(
    "text, graphemes",
    [
        ("hello", 5),
        (FAMILY, 1),
        (FLAG_FR, 1),
        (FLAG_FR * 3, 3),
        (WAVE_DARK, 1),
        (E_ACUTE_DECOMPOSED, 1),
        ("caf\u00e9", 4),
        ("\r\n", 1),
        ("日本語", 3),
    ],
)
def test_grapheme_count_follows_unicode_clusters(text, graphemes):
    assert grapheme_count(text) == graphemes


@pytest.mark.parametrize("unit", ["a", FAMILY, FLAG_FR, E_ACUTE_DECOMPOSED, "é"])
def test_bluesky_takes_300_graphemes_whatever_they_are_made_of(unit):
    """A family emoji is 7 code points and 25 bytes but one grapheme: 301 of anything is one grapheme too many
    (300 families pass the grapheme count; the byte limit refuses them, tested below)."""
    text = unit * BLUESKY_MAX_GRAPHEMES
    if len(text.encode()) <= BLUESKY_MAX_BYTES:
        assert bluesky_text_problem(text) is None
    assert bluesky_text_problem(text + unit) == f"301 graphemes over Bluesky's {BLUESKY_MAX_GRAPHEMES}"


def test_bluesky_counts_flags_and_zwj_sequences_as_one_grapheme_each():
    text = (FLAG_FR + FAMILY + " ") * 40 + "x" * 180  # 300 graphemes, 1,340 + 180 bytes, 460 code points
    assert len(text) > BLUESKY_MAX_GRAPHEMES and grapheme_count(text) == BLUESKY_MAX_GRAPHEMES
    assert bluesky_text_problem(text) is None
    assert bluesky_text_problem(text + FLAG_FR) == "301 graphemes over Bluesky's 300"


def test_bluesky_refuses_more_than_3000_bytes_even_under_300_graphemes():
    text = FAMILY * 120  # 120 graphemes, 3,000 bytes
    assert len(text.encode()) == BLUESKY_MAX_BYTES and bluesky_text_problem(text) is None
    assert bluesky_text_problem(text + "!") == "3,001 bytes of UTF-8 over Bluesky's 3,000"


def test_bluesky_refuses_an_empty_post():
    assert bluesky_text_problem("") == "post is empty"
    assert bluesky_text_problem(" \n") == "post is empty"


def test_bluesky_counts_what_x_weighs_differently():
    """X weighs a link 23 and an emoji 2; Bluesky counts what is there."""
    text = "x" * 290 + " " + "https://example.com/a"
    assert weighted_length(text) > 280 and grapheme_count(text) == 312
    assert bluesky_text_problem(text) == "312 graphemes over Bluesky's 300"
    assert bluesky_text_problem("😀" * 300) is None and weighted_length("😀" * 141) > 280
LONG_LINK = "https://example.com/" + "a" * 200


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hello", 5),
        (f"see {LONG_LINK}", 4 + 23),  # a link counts 23 whatever its length
        (f"{LONG_LINK} {LONG_LINK}", 23 + 1 + 23),
        ("https://t.co/x", 23),  # and a short one 23 too
        ("example.com", 11),  # without http(s):// Mastodon's extractor finds no link: counted as written
        ("https://a.io example.com", 23 + 1 + 11),  # also beside a link it does find
        ("@alice@mastodon.social https://example.com/x", len("@alice ") + 23),  # mentions and links both
        ("@alice@mastodon.social hi", len("@alice hi")),  # a remote mention counts as its local part
        ("@alice hi", 9),
        ("write to bob@example.com", 24),  # an address is no mention
        ("@bob@host.example://x", 21),  # nor is a match followed by :// (twitter-text's end_mention_match)
        ("日本語", 3),  # X weighs these 6
        ("👨\u200d👩\u200d👧", 1),  # a family emoji: 5 code points, one grapheme cluster
        ("🇫🇷", 1),
        ("cafe\u0301", 4),  # e + combining acute: one cluster
        ("a\r\nb", 3),
    ],
)
def test_mastodon_counts_grapheme_clusters_links_23_and_mentions_without_their_domain(text, expected):
    assert mastodon_length(text) == expected


def test_mastodon_accepts_up_to_max_characters():
    assert mastodon_text_problem("x" * 500) is None
    assert mastodon_text_problem("x" * 501) == "501 characters, 1 over Mastodon's 500"
    assert mastodon_text_problem("😀" * 500) is None  # X would refuse: 1,000 weighted characters


def test_mastodon_limit_is_the_instances():
    assert mastodon_text_problem("x" * 912, max_characters=500) == "912 characters, 412 over Mastodon's 500"
    assert mastodon_text_problem("x" * 912, max_characters=1000) is None
    assert mastodon_text_problem("x" * 12, max_characters=11) == "12 characters, 1 over Mastodon's 11"


def test_long_links_fit_mastodon_when_their_23s_do():
    text = " ".join([LONG_LINK] * 20)  # 4,239 code points, 20 * 23 + 19 = 479 as Mastodon counts
    assert len(text) > 4000 and mastodon_text_problem(text) is None


@pytest.mark.parametrize("text", ["", " \n "])
def test_mastodon_refuses_an_empty_status(text):
    assert mastodon_text_problem(text) == "empty: Mastodon refuses a status without text"


def test_the_latin_accents_copy_matches_twitter_text():
    from twitter_text.regexp.latin_accent_chars import latin_accent_chars

    assert MASTODON_LATIN_ACCENTS == latin_accent_chars.pattern
