"""The server's text rules as data for the curation page's live counter (api/curate/static/tweet_counter.js).

The browser counts with the very weights, URL and emoji patterns that `core.tweet_text`
(through twitter-text-parser) uses for X, and its mention pattern and limits for Mastodon and
Bluesky, translated from Python's regex dialect to JavaScript's, so the counter and the server
agree; the server still validates every save. Built on the page's
first request for it (twitter-text is imported then), never at the service's start.
"""
from __future__ import annotations

import hashlib
import json
import re
import stringprep
import unicodedata
from functools import cache

from core.tweet_text import (
    BLUESKY_MAX_BYTES,
    BLUESKY_MAX_GRAPHEMES,
    CONTROL_CHARS,
    MARKERS,
    MASTODON_MENTION,
    MASTODON_MENTION_END,
    MASTODON_URL_LENGTH,
    MAX_WEIGHTED_LENGTH,
    URL_WEIGHT,
)

# Characters that may (and in places must) stay escaped in a JavaScript `u`-flag regex.
_JS_SYNTAX_CHARACTERS = set("^$\\.*+?()[]{}|/")
_PLAIN_ESCAPES = set("nrtfv")
_GROUP_OPENERS = ("(?:", "(?=", "(?!", "(?<=", "(?<!")


def js_regex_source(pattern: str, *, word: str | None = None) -> str:
    """Rewrite a Python regex for JavaScript's `u` flag; raises ValueError on what has no twin.

    `\\U0001F600` becomes `\\u{1F600}`, identity escapes JavaScript forbids (`\\!`, `\\'`...) lose
    their backslash, and escapes whose meaning differs between the two (`\\d`, `\\w`, `\\s`,
    `\\b`: Unicode-aware in Python, ASCII in JavaScript) are refused rather than mistranslated,
    but for `\\w` when `word` gives the class body standing for it (see python_word_class).
    """
    out: list[str] = []
    i, in_class, class_start = 0, False, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escaped = pattern[i + 1]
            if escaped == "U":
                out.append("\\u{%X}" % int(pattern[i + 2 : i + 10], 16))
                i += 10
            elif escaped in "ux":
                width = 4 if escaped == "u" else 2
                out.append(pattern[i : i + 2 + width])
                i += 2 + width
            elif escaped == "w" and word is not None:
                out.append(word if in_class else f"[{word}]")
                i += 2
            elif escaped.isalnum():
                if escaped not in _PLAIN_ESCAPES:
                    raise ValueError(f"\\{escaped} at {i} has no JavaScript twin")
                out.append(pattern[i : i + 2])
                i += 2
            else:
                keep = escaped in _JS_SYNTAX_CHARACTERS or (in_class and escaped == "-")
                out.append(f"\\{escaped}" if keep else escaped)
                i += 2
            class_start = False
            continue
        if in_class:
            if char == "]" and class_start:
                out.append("\\]")  # Python reads a leading ] as a literal; JavaScript as an empty class
            elif char == "]":
                in_class = False
                out.append(char)
            else:
                out.append(char)
            class_start = False
            i += 1
            continue
        if char == "[":
            in_class, class_start = True, True
            if pattern.startswith("[^", i):
                out.append("[^")
                i += 2
                continue
        elif char == "(" and pattern.startswith("(?", i) and not pattern.startswith(_GROUP_OPENERS, i):
            raise ValueError(f"group {pattern[i:i + 4]!r} at {i} has no JavaScript twin")
        out.append(char)
        i += 1
    return "".join(out)


def _code_point_ranges(code_points) -> list[list[int]]:
    """[[first, last], ...] covering the given code points."""
    ranges: list[list[int]] = []
    for code_point in sorted(code_points):
        if ranges and ranges[-1][1] >= code_point - 1:
            ranges[-1][1] = code_point
        else:
            ranges.append([code_point, code_point])
    return ranges


@cache
def nameprep_tables() -> dict[str, list[list[int]]]:
    """RFC 3454 tables as Python's `idna` codec applies them (encodings.idna.nameprep).

    twitter-text only counts a URL whose domain Python can IDNA-encode, so the browser needs
    the same tables: characters mapped to nothing (B.1), prohibited ones (C.1.2-C.9) and the
    bidi classes (D.1 RandALCat, D.2 LCat). Built from `stringprep`'s own data (Unicode 3.2)
    in one pass over the code points (one to two seconds, once per process, on the first request).
    """
    ucd = unicodedata.ucd_3_2_0
    chars = [chr(code_point) for code_point in range(0x110000)]
    categories = map(ucd.category, chars)
    prohibited = {
        cp for cp, category in enumerate(categories)
        if category in ("Co", "Cs") or (category == "Zs" and cp != 0x20) or (category == "Cc" and cp >= 0x80)
    }  # C.1.2, C.2.2 (with c22_specials), C.3, C.5
    prohibited.update(range(0xFDD0, 0xFDF0))  # C.4
    prohibited.update(plane | last for plane in range(0, 0x110000, 0x10000) for last in (0xFFFE, 0xFFFF))
    prohibited |= stringprep.c22_specials | stringprep.c6_set | stringprep.c7_set | stringprep.c8_set | stringprep.c9_set
    bidi = list(map(ucd.bidirectional, chars))
    return {
        "mappedToNothing": _code_point_ranges(stringprep.b1_set),
        "prohibited": _code_point_ranges(prohibited),
        "randAL": _code_point_ranges(cp for cp, klass in enumerate(bidi) if klass in ("R", "AL")),
        "leftToRight": _code_point_ranges(cp for cp, klass in enumerate(bidi) if klass == "L"),
    }


@cache
def python_word_class() -> str:
    """A JavaScript class body (`\\u{30}-\\u{39}...`) holding exactly the characters Python's `\\w`
    matches in a str pattern (letters, digits and numbers by Python's Unicode data, and `_`)."""
    # One search over every code point in order, each run of matches a range: far faster than a
    # match per code point, on the first request for the rule script.
    every_character = "".join(map(chr, range(0x110000)))
    ranges = [(run.start(), run.end() - 1) for run in re.finditer(r"\w+", every_character)]
    return "".join(
        "\\u{%X}" % first if first == last else "\\u{%X}-\\u{%X}" % (first, last) for first, last in ranges
    )


def _js_regex(compiled: re.Pattern, *, word: str | None = None) -> dict[str, str]:
    flags = "u" + ("i" if compiled.flags & re.IGNORECASE else "")
    return {"source": js_regex_source(compiled.pattern, word=word), "flags": flags}


@cache
def counter_rule() -> dict:
    """Everything tweet_counter.js needs to compute `core.tweet_text.weighted_length` and
    `mastodon_length`, and Bluesky's limits (an instance's Mastodon limit is the page's, per bot)."""
    from twitter_text.config import config as twitter_config
    from twitter_text.extract_urls import default_protocol, max_tco_slug_length, max_url_length
    from twitter_text.regexp.emoji import emoji
    from twitter_text.regexp.extract_url import extract_url
    from twitter_text.regexp.invalid_chars import invalid_chars
    from twitter_text.regexp.invalid_url_without_protocol_preceding_chars import (
        invalid_url_without_protocol_preceding_chars,
    )
    from twitter_text.regexp.valid_ascii_domain import valid_ascii_domain
    from twitter_text.regexp.valid_tco_url import valid_tco_url

    weights = twitter_config["defaults"]
    return {
        "maxWeightedLength": MAX_WEIGHTED_LENGTH,
        "transformedUrlLength": URL_WEIGHT,
        "scale": weights["scale"],
        "defaultWeight": weights["default_weight"],
        "ranges": [[r["start"], r["end"], r["weight"]] for r in weights["ranges"]],
        "defaultProtocol": default_protocol,
        "maxUrlLength": max_url_length,
        "maxTcoSlugLength": max_tco_slug_length,
        "markers": list(MARKERS),
        "nameprep": nameprep_tables(),
        "patterns": {
            "url": _js_regex(extract_url),
            "asciiDomain": _js_regex(valid_ascii_domain),
            "tcoUrl": _js_regex(valid_tco_url),
            "invalidUrlWithoutProtocolPrecedingChars": _js_regex(invalid_url_without_protocol_preceding_chars),
            "emoji": _js_regex(emoji),
            "invalidChars": _js_regex(invalid_chars),
            "controlChars": _js_regex(CONTROL_CHARS),
        },
        "mastodon": {
            "urlLength": MASTODON_URL_LENGTH,
            "mention": _js_regex(MASTODON_MENTION, word=python_word_class()),
            "mentionEnd": _js_regex(MASTODON_MENTION_END),
        },
        "bluesky": {"maxGraphemes": BLUESKY_MAX_GRAPHEMES, "maxBytes": BLUESKY_MAX_BYTES},
    }


@cache
def counter_rule_script() -> tuple[str, str]:
    """The rule as a script defining `window.TWEET_RULE`, and a short version tag for caching."""
    body = "window.TWEET_RULE = " + json.dumps(counter_rule(), ensure_ascii=True, separators=(",", ":")) + ";\n"
    return body, hashlib.sha256(body.encode()).hexdigest()[:12]
