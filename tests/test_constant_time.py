"""Secrets a client sends are compared with ours in constant time.

`==` on strings stops at the first differing byte, so its timing tells an attacker how much of a
guess is right. A behaviour test cannot see that, so this reads the comparing functions' source.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Every function that compares a secret sent by a client (token, CSRF token, cookie signature) with ours.
SECRET_COMPARISONS = [
    ("api/deps.py", "token_matches"),
    ("api/curate/session.py", "CurationSession.csrf_matches"),
    ("api/curate/session.py", "_verified"),
    ("ml/app.py", "require_token"),
]


def function_source(path: str, qualified_name: str) -> ast.FunctionDef:
    scope: ast.AST = ast.parse((REPO / path).read_text(encoding="utf-8"))
    for name in qualified_name.split("."):
        scope = next(
            (node for node in ast.iter_child_nodes(scope)
             if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name),
            None,
        )
        assert scope is not None, f"{path} has no {qualified_name}: update SECRET_COMPARISONS"
    return scope


def names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def is_compare_digest(call: ast.Call) -> bool:
    """secrets.compare_digest, hmac.compare_digest or a bare imported compare_digest."""
    func = call.func
    return (isinstance(func, ast.Attribute) and func.attr == "compare_digest") or (
        isinstance(func, ast.Name) and func.id == "compare_digest"
    )


@pytest.mark.parametrize(("path", "function"), SECRET_COMPARISONS)
def test_secrets_are_compared_with_compare_digest_never_with_equals(path, function):
    source = function_source(path, function)
    digest_calls = [node for node in ast.walk(source) if isinstance(node, ast.Call) and is_compare_digest(node)]
    assert digest_calls, f"{path}: {function} no longer compares with compare_digest"
    secrets_compared = set().union(*(names_in(arg) for call in digest_calls for arg in call.args))
    for node in ast.walk(source):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            leaked = names_in(node) & secrets_compared
            assert not leaked, f"{path}:{node.lineno}: {function} compares {sorted(leaked)} with == or !="


def test_no_code_compares_a_configured_secret_with_equals():
    """Anywhere else (a new route, a script), a secret read from the settings is compared with == nowhere."""
    secret_reads = {"SECRET_TOKEN", "GENERATION_TOKEN", "get_secret_value"}
    found = []
    for path in sorted(p for folder in ("api", "db", "ml", "scripts") for p in (REPO / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                if {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)} & secret_reads:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert found == [], "compare secrets with secrets.compare_digest:\n" + "\n".join(found)
