"""Candidate tweets: sample them, filter them, top up when too few survive, write and upload the file to curate."""
from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.tweet_text import END_TOKEN, START_TOKEN, join_samples
from ml.filters import CandidateFilter, CopyFound, CopyKind, DropReason

log = logging.getLogger(__name__)

UPLOAD_TIMEOUT_SECONDS = 60
COPIES_REPORT_SUFFIX = "_copies_report.csv"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
COPIES_REPORT_COLUMNS = ("kind", "shared_words", "jaccard", "candidate", "training_tweet")

# (how many, seed) -> [(text, unfinished)]: `unfinished` when the sample ran to `length` without an end.
Generate = Callable[[int, "int | None"], list[tuple[str, bool]]]


@dataclass(frozen=True)
class GenerationOptions:
    """gpt_2_simple.generate's knobs, with the original project's settings for tweets."""

    nsamples: int = 1000
    batch_size: int = 10
    length: int = 200
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.9
    prefix: str | None = START_TOKEN
    truncate: str | None = END_TOKEN
    include_prefix: bool = False
    seed: int | None = None
    oversample_limit: float = 3.0   # generate at most this many times nsamples in all

    @property
    def max_generated(self) -> int:
        return max(self.nsamples, math.ceil(self.nsamples * self.oversample_limit))


def sampler_generate(sampler, options: GenerationOptions) -> Generate:
    """A `Generate` over ml.sampler.Sampler: a sample is unfinished when it ran to `length` without `truncate`."""

    def generate(count: int, seed: int | None) -> list[tuple[str, bool]]:
        samples = sampler.generate_samples(
            nsamples=count, length=options.length, temperature=options.temperature, top_k=options.top_k,
            top_p=options.top_p, prefix=options.prefix, truncate=options.truncate,
            include_prefix=options.include_prefix, seed=seed, progress=True, batch_size=options.batch_size,
        )
        return [(sample.text, options.truncate is not None and not sample.ended) for sample in samples]

    return generate


@dataclass
class CandidateReport:
    wanted: int
    max_generated: int
    rounds: int
    candidate_filter: CandidateFilter

    @property
    def generated(self) -> int:
        return self.candidate_filter.offered

    @property
    def kept(self) -> list[str]:
        return self.candidate_filter.kept[: self.wanted]

    def summary(self) -> str:
        dropped = self.candidate_filter.dropped
        kinds = Counter(found.match.kind for found in self.candidate_filter.copies)
        parts = [
            f"{reason.name} {dropped[reason]}"
            + (f" ({', '.join(f'{kind.value} {kinds[kind]}' for kind in CopyKind if kinds[kind])})"
               if reason is DropReason.training_copy else "")
            for reason in DropReason if dropped[reason]
        ]
        # A top-up round can overshoot: what passed beyond `wanted` is not written, and said so.
        surplus = len(self.candidate_filter.kept) - len(self.kept)
        line = (
            f"generated {self.generated}, kept {len(self.kept)} of {self.wanted} wanted"
            + (f" ({surplus} more passed, not needed)" if surplus else "")
            + f", dropped {sum(dropped.values())}" + (f" ({', '.join(parts)})" if parts else "")
        )
        if len(self.kept) < self.wanted:
            line += f"; stopped at the limit of {self.max_generated} generated (--oversample_limit)"
        return line


def collect_candidates(generate: Generate, candidate_filter: CandidateFilter, options: GenerationOptions) -> CandidateReport:
    """Generate and filter until `nsamples` survive or `max_generated` were generated.

    The first round asks for `nsamples`; each later round asks for what is missing divided by the
    share kept so far (all that the limit allows when none was kept), with its own seed.
    """
    wanted, limit = options.nsamples, options.max_generated
    report = CandidateReport(wanted=wanted, max_generated=limit, rounds=0, candidate_filter=candidate_filter)
    while len(candidate_filter.kept) < wanted and candidate_filter.offered < limit:
        missing = wanted - len(candidate_filter.kept)
        if report.rounds == 0:
            count = wanted
        elif candidate_filter.kept:
            count = math.ceil(missing * candidate_filter.offered / len(candidate_filter.kept))
        else:
            count = limit
        count = min(count, limit - candidate_filter.offered)
        seed = None if options.seed is None else options.seed + report.rounds
        if report.rounds:
            log.info("%d of %d candidates kept: generating %d more", len(candidate_filter.kept), wanted, count)
        for text, unfinished in generate(count, seed):
            candidate_filter.offer(text, unfinished=unfinished)
        report.rounds += 1
    return report


def candidate_file_name(run_name: str, now: datetime | None = None) -> str:
    """`gpt2_<run_name>_<UTC yyyymmdd_HHMMSS>.txt`, as the original named its output."""
    now = now or datetime.now(timezone.utc)
    return f"gpt2_{run_name}_{now.astimezone(timezone.utc):%Y%m%d_%H%M%S}.txt"


def write_new_file(path: Path, content: str) -> Path:
    """Write `content` whole or not at all, never over another file.

    When `path` exists (two runs in the same second), the file is `<stem>_2<suffix>`,
    `<stem>_3<suffix>`, ...; the path written is returned.
    """
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(content, encoding="utf-8", newline="")
    target, number = path, 1
    while True:
        try:
            os.link(partial, target)  # fails, unlike a rename, when the target exists
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: check, then rename
            if not target.exists():
                partial.replace(target)
                return target
        else:
            partial.unlink()
            return target
        number += 1
        target = path.with_name(f"{path.stem}_{number}{path.suffix}")


def write_candidate_file(path: Path, texts: list[str]) -> Path:
    """The curation format (samples separated by a line of 20 `=`), written as `write_new_file` does."""
    return write_new_file(path, join_samples(texts))


def copies_report_path(candidate_path: Path) -> Path:
    """The run's copy report beside its candidate file, named after it (so `_2` runs get `_2` reports)."""
    return candidate_path.with_name(candidate_path.stem + COPIES_REPORT_SUFFIX)


def spreadsheet_safe(text: str) -> str:
    """Text a spreadsheet shows as text: one starting with =, +, -, @, tab or CR would be read as a
    formula (tweets are untrusted), so it gets a leading apostrophe, as OWASP's CSV-injection advice says."""
    return "'" + text if text[:1] in FORMULA_STARTS else text


def write_copies_report(path: Path, copies: list[CopyFound]) -> Path:
    """One CSV row per candidate dropped as a training copy: how it copies, the candidate, the training tweet."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COPIES_REPORT_COLUMNS)
    for found in copies:
        match = found.match
        writer.writerow([match.kind.value, match.shared_words, f"{match.jaccard:.3f}", spreadsheet_safe(found.candidate),
                         spreadsheet_safe(match.training_tweet)])
    return write_new_file(path, buffer.getvalue())


class UploadError(RuntimeError):
    """The store did not take the file; str(exc) says why (the file stays where it is)."""


def upload_candidate_file(path: Path, base_url: str, token: str, *, status: str = "pending",
                          timeout: float = UPLOAD_TIMEOUT_SECONDS) -> dict:
    """POST the file to `base_url/add_tweets_file/?status=<status>` with the x-token; returns the store's answer."""
    import requests

    url = f"{base_url.rstrip('/')}/add_tweets_file/"
    try:
        with path.open("rb") as file:
            response = requests.post(
                url, params={"status": status}, headers={"x-token": token},
                files={"file": (path.name, file, "text/plain")}, timeout=timeout,
            )
    except requests.RequestException as exc:
        raise UploadError(f"could not reach {url} ({type(exc).__name__}: {exc})") from None
    if response.status_code != 201:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise UploadError(f"{url} answered {response.status_code}: {str(detail)[:300]}")
    return response.json()
