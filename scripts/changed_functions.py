"""Print mutmut's name patterns for the functions of MODULES that changed since a commit.

Used by `make mutation SINCE=<commit>`: mutmut keeps no verdicts across runs here, so a module
that changed a little is measured again only in the functions that changed (and the new ones),
and the README's table keeps the earlier run's verdicts for the rest.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


def functions(source: str) -> dict[tuple[str, str], str]:
    """Each top-level function and method by (class, name), as its AST (blind to comments and layout)."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[("", node.name)] = ast.dump(node)
        elif isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found[(node.name, member.name)] = ast.dump(member)
    return found


def changed_patterns(module: str, old_source: str, new_source: str) -> list[str]:
    """mutmut 3's names for the mutants of every function that differs or is new (`module.x_name__mutmut_*`,
    `module.xǁClassǁname__mutmut_*`)."""
    before = functions(old_source)
    dotted = module.removesuffix(".py").replace("/", ".")
    return [
        f"{dotted}.x\u01c1{cls}\u01c1{name}__mutmut_*" if cls else f"{dotted}.x_{name}__mutmut_*"
        for (cls, name), tree in functions(new_source).items()
        if before.get((cls, name)) != tree
    ]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python scripts/changed_functions.py COMMIT MODULE.py [MODULE.py ...]", file=sys.stderr)
        return 2
    commit, modules = argv[0], argv[1:]
    for module in modules:
        old = subprocess.run(["git", "show", f"{commit}:{module}"], capture_output=True, text=True)
        if old.returncode != 0:
            print(f"{module} is not in {commit}: {old.stderr.strip()}", file=sys.stderr)
            return 2
        for pattern in changed_patterns(module, old.stdout, Path(module).read_text(encoding="utf-8")):
            print(pattern)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
