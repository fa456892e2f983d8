"""Copy secrets from the environment or .env to Google Secret Manager (`make cloud-secrets`).

    python scripts/cloud_secrets.py --project=P --prefix=tweet-bot- [--env-file=.env] NAME [NAME ...]

Each NAME becomes the secret PREFIX+NAME: created when new, given a new version otherwise. Values
go to gcloud on standard input, never on a command line, and are never printed. Every missing
value is named before anything is sent.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from dotenv import dotenv_values


def read_values(names: Sequence[str], env_file: Path, environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Values by name (the environment wins over the file, as in the service's settings) and the missing names."""
    from_file = dotenv_values(env_file) if env_file.is_file() else {}
    values, missing = {}, []
    for name in names:
        value = environ.get(name) or from_file.get(name) or ""
        if value.strip():
            values[name] = value
        else:
            missing.append(name)
    return values, missing


def push_secret(secret_id: str, value: str, *, project: str) -> str:
    """Store `value` as the latest version of `secret_id`; return "created" or "updated"."""
    exists = subprocess.run(
        ["gcloud", "secrets", "describe", secret_id, f"--project={project}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
    ).returncode == 0
    if exists:
        command = ["gcloud", "secrets", "versions", "add", secret_id, "--data-file=-", f"--project={project}"]
    else:
        command = ["gcloud", "secrets", "create", secret_id, "--data-file=-", "--replication-policy=automatic", f"--project={project}"]
    subprocess.run(command, input=value.encode("utf-8"), stdout=subprocess.DEVNULL, check=True)
    return "updated" if exists else "created"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--prefix", required=True, help="prepended to each name to form the secret's id")
    parser.add_argument("--env-file", type=Path, default=Path(".env"))
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)

    values, missing = read_values(args.names, args.env_file, os.environ)
    if missing:
        for name in missing:
            print(f"Missing {name}: set it in {args.env_file} or the environment (see .env_reference).", file=sys.stderr)
        print("Nothing was sent to Secret Manager.", file=sys.stderr)
        return 2
    for name in args.names:
        secret_id = f"{args.prefix}{name}"
        try:
            outcome = push_secret(secret_id, values[name], project=args.project)
        except subprocess.CalledProcessError as exc:
            print(f"gcloud failed storing {name} as {secret_id} (exit {exc.returncode}); see its message above.", file=sys.stderr)
            return 1
        print(f"{name} -> secret {secret_id} ({outcome})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
