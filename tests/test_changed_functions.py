"""scripts/changed_functions.py and `make mutation SINCE=<commit>`: the mutants of the functions a change touched."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from scripts.changed_functions import changed_patterns, main

REPO = Path(__file__).resolve().parents[1]

BEFORE = '''
def kept(x):
    return x + 1


def edited(x):
    return x * 2


class Box:
    def kept(self):
        return 1

    def edited(self):
        return 2


def removed():
    pass
'''

AFTER = '''
def kept(x):
    # a comment and other layout change nothing
    return (x + 1)


def edited(x):
    return x * 3


class Box:
    def kept(self):
        return 1

    def edited(self):
        return 3

    def added(self):
        return 4


def added():
    pass
'''


def test_the_functions_and_methods_that_differ_or_are_new_in_mutmuts_names():
    assert changed_patterns("pkg/mod.py", BEFORE, AFTER) == [
        "pkg.mod.x_edited__mutmut_*",
        "pkg.mod.xǁBoxǁedited__mutmut_*",
        "pkg.mod.xǁBoxǁadded__mutmut_*",
        "pkg.mod.x_added__mutmut_*",
    ]
    assert changed_patterns("pkg/mod.py", BEFORE, BEFORE) == []


def git(work: Path, *arguments: str) -> str:
    return subprocess.run(["git", "-C", str(work), *arguments], check=True, capture_output=True, text=True).stdout.strip()


def make_mutation(work: Path, since: str, *options: str, modules: str = "pkg/mod.py") -> subprocess.CompletedProcess:
    """make mutation in `work`, the virtualenv taken as up to date (its checks run before anything else)."""
    return subprocess.run(
        ["make", *options, "--no-print-directory", "--old-file=.venv/.dev", "mutation",
         f"MODULES={modules}", "TESTS=tests/test_mod.py", f"SINCE={since}", "ENV_FILE=/dev/null"],
        cwd=work, env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")},
        capture_output=True, text=True, timeout=60,
    )


def test_make_mutation_since_a_commit_runs_only_the_changed_functions(tmp_path):
    work = tmp_path / "work"
    (work / "pkg").mkdir(parents=True)
    for makefile in (REPO / "Makefile", *REPO.glob("*.mk")):
        shutil.copy(makefile, work / makefile.name)
    (work / "scripts").symlink_to(REPO / "scripts")
    (work / "pkg" / "mod.py").write_text(BEFORE)
    git(work, "init", "-q")
    git(work, "add", "pkg/mod.py")
    git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "before")
    (work / "pkg" / "mod.py").write_text(AFTER)

    run = make_mutation(work, git(work, "rev-parse", "HEAD"), "-n")
    assert run.returncode == 0, run.stderr
    assert "mutmut run 'pkg.mod.x_edited__mutmut_*' 'pkg.mod.xǁBoxǁedited__mutmut_*'" in run.stdout

    for hostile in ("HEAD;touch pwned", "HEAD';touch pwned;'", "`touch pwned`"):
        assert make_mutation(work, hostile).returncode == 2
        assert not (work / "pwned").exists()

    unknown = make_mutation(work, "no-such-commit")
    assert unknown.returncode == 2
    assert "pkg/mod.py is not in no-such-commit" in unknown.stderr
    assert "SINCE=no-such-commit: no list of changed functions" in unknown.stderr

    (work / "pkg" / "mod.py").write_text(BEFORE)
    unchanged = make_mutation(work, "HEAD")
    assert unchanged.returncode == 2
    assert "no function of pkg/mod.py changed since HEAD: nothing to run" in unchanged.stderr
    (work / "pkg" / "other.py").write_text(BEFORE)
    git(work, "add", "pkg/other.py")
    git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "another")
    two_unchanged = make_mutation(work, "HEAD", modules="pkg/mod.py pkg/other.py")
    assert two_unchanged.returncode == 2
    assert "nothing to run" in two_unchanged.stderr


def test_main_prints_each_modules_patterns_and_refuses_what_it_cannot_compare(tmp_path, monkeypatch, capsys):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(BEFORE)
    (tmp_path / "pkg" / "same.py").write_text(BEFORE)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "pkg")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "before")
    (tmp_path / "pkg" / "mod.py").write_text(AFTER)
    monkeypatch.chdir(tmp_path)

    assert main(["HEAD", "pkg/same.py", "pkg/mod.py"]) == 0
    assert capsys.readouterr().out.splitlines() == changed_patterns("pkg/mod.py", BEFORE, AFTER)

    assert main(["HEAD", "pkg/new.py"]) == 2
    assert capsys.readouterr().err.startswith("pkg/new.py is not in HEAD: fatal: ")  # git's words, as text
    assert main(["HEAD"]) == 2
    assert capsys.readouterr().err.startswith("usage: python scripts/changed_functions.py COMMIT MODULE.py")
