"""requirements.txt is the API image's whole runtime: every distribution the API's modules import is listed
there or required by one listed there, so the image works on a base that brings nothing else (no setuptools).
`make image-test` checks the same on real images; this catches it in seconds.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = {"api", "db", "migrations"}


def requirement_name(line: str) -> str:
    return re.split(r"[=<>!~\[; ]", line.strip())[0].lower().replace("_", "-")


def listed_names(path: Path) -> list[str]:
    """The names a requirements file lists, following its `-r other.txt` includes."""
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            names += listed_names(path.parent / line[3:].strip())
        elif line:
            names.append(requirement_name(line))
    return names


def listed_with_their_dependencies(path: Path) -> set[str]:
    """The names in a requirements file and, recursively, what the installed distributions say they require."""
    pending = listed_names(path)
    closure: set[str] = set()
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        pending += [requirement_name(spec) for spec in requires if "extra ==" not in spec]
    return closure


# Runs in a child interpreter of this virtualenv, which holds more than requirements.txt: a distribution that is
# not in requirements.txt's closure cannot be imported, as in the image; optional imports still fall back.
ONLY_REQUIREMENTS_PROBE = """
import json, sys
from importlib import metadata
allowed, project = set(json.loads(sys.argv[1])), set(json.loads(sys.argv[2]))
providers = metadata.packages_distributions()
# setuptools' pkg_resources falls back on its own vendored copies (packaging, ...) where the image has none.
import importlib.machinery, importlib.util, os
vendored_dir = os.path.join(os.path.dirname(importlib.util.find_spec("setuptools").origin), "_vendor")

class OnlyRequirements:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in project:
            return None
        if "setuptools" in allowed and os.path.exists(os.path.join(vendored_dir, top)):
            return importlib.machinery.PathFinder.find_spec(name, path if "." in name else [vendored_dir])
        distributions = {d.lower().replace("_", "-") for d in providers.get(top, [])}
        if distributions and not distributions & allowed:
            raise ModuleNotFoundError(f"No module named {name!r}: {sorted(distributions)} not in requirements.txt", name=name)
        return None

sys.meta_path.insert(0, OnlyRequirements())
import api.main, api.scheduler, api.post_next
# What the service imports on first use (a tweet's full length check, the curation page, posting to
# Mastodon and Bluesky) must be there too.
import twitter_text, jinja2, fastapi.templating, regex, mastodon, atproto_client, httpx, cryptography.fernet
"""


def test_the_api_imports_with_only_what_requirements_txt_installs(tmp_path):
    allowed = listed_with_their_dependencies(REPO / "requirements.txt")
    environment = {**os.environ, "SECRET_TOKEN": "requirements-test-token-0123456789", "ACCOUNT": "req_bot",
                   "SQLITE_PATH": str(tmp_path / "t.db"), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", ONLY_REQUIREMENTS_PROBE, json.dumps(sorted(allowed)), json.dumps(sorted(PROJECT_PACKAGES))],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
