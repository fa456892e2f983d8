"""The Makefile's deployment targets (deploy.mk), run with fake `gcloud` and `docker` that record their arguments.

Each test runs make in a copy of the Makefile and deploy.mk under tmp_path, with its own .env, a
PATH whose first folder holds the fakes, and none of the caller's environment variables.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE_SECRET = "value-from-secret-manager-7f3a"
SERVICE_URL = "https://tweet-bot-abc123-ew.a.run.app"

# Deployment settings and, in the same .env, secrets that must never reach make's output or gcloud's arguments.
DEPLOY_ENV = {
    "PROJECT_ID": "my-proj",
    "REGION": "europe-west1",
    "DOCKER_INSTANCE_NAME": "tweet-bot",
    "DB_INSTANCE": "tweets-db",
    "DB_USERNAME": "tweetbot",
    "DB_NAME": "tweets",
    "ACCOUNT": "my_bot",
    "SCHEDULER_JOB_NAME": "post-tweet",
    "CLOUD_RUN_URL": SERVICE_URL + "/",
    "SCHEDULE": "0 9 * * *",
    "TIME_ZONE": "Europe/Paris",
}
SECRETS = {
    "SECRET_TOKEN": "tok-9c1b2d3e4f5a6b7c8d9e",
    "DB_PASSWORD": "pa$$word#with(make)$(shell false)",
    "CONSUMER_KEY": "ck-111",
    "CONSUMER_SECRET": "cs-222",
    "ACCESS_KEY": "ak-333",
    "ACCESS_SECRET": "as-444",
}

FAKE_PROGRAM = r'''#!{python}
"""Fake {name}: records its arguments (and standard input when --data-file=-) as one JSON line.

In "args", --flags-file=PATH stands as --flags-file=<the file's text>: the file is gone once make is done.
"""
import json, os, stat, sys
argv = sys.argv[1:]
stdin = sys.stdin.read() if "--data-file=-" in argv else None
args, flags_mode = [], None
for arg in argv:
    if arg.startswith("--flags-file="):
        path = arg.partition("=")[2]
        flags_mode = stat.S_IMODE(os.stat(path).st_mode)
        arg = "--flags-file=" + open(path).read().strip()
    args.append(arg)
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"program": "{name}", "args": args, "argv": argv, "stdin": stdin, "flags_mode": flags_mode}}) + "\n")
if os.environ.get("FAKE_FAIL_ON") and any(os.environ["FAKE_FAIL_ON"] in arg for arg in args):
    sys.exit(1)
if args[:3] == ["secrets", "versions", "access"]:
    print("{secret}")
elif args[:3] == ["run", "services", "describe"]:
    print("{url}")
elif args[:3] == ["scheduler", "jobs", "create"] and not any(arg.startswith("--format=") for arg in args):
    print(" ".join(args))  # like the created job gcloud prints, its headers included
elif args[:2] == ["secrets", "describe"]:
    sys.exit(0 if args[2] in os.environ.get("FAKE_EXISTING_SECRETS", "").split() else 1)
elif "describe" in args:
    sys.exit(int(os.environ.get("FAKE_DESCRIBE_EXIT", "1")))
'''


class MakeRun:
    def __init__(self, result: subprocess.CompletedProcess, log: Path):
        self.returncode = result.returncode
        self.output = result.stdout + result.stderr
        self.calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    @property
    def commands(self) -> list[list[str]]:
        return [[call["program"], *call["args"]] for call in self.calls]


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A folder with the Makefile, deploy.mk, the fakes in bin/, and a .env with DEPLOY_ENV and SECRETS."""
    work = tmp_path / "work"
    work.mkdir()
    for makefile in (REPO / "Makefile", *REPO.glob("*.mk")):
        shutil.copy(makefile, work / makefile.name)
    (work / "scripts").symlink_to(REPO / "scripts")  # cloud_secrets.py, deploy_env.awk
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name in ("gcloud", "docker"):
        program = fake_bin / name
        program.write_text(FAKE_PROGRAM.format(python=sys.executable, name=name, secret=FAKE_SECRET, url=SERVICE_URL))
        program.chmod(0o755)
    write_env(work / ".env", {**DEPLOY_ENV, **SECRETS})
    return work


def write_env(path: Path, values: dict[str, str]) -> None:
    lines = [f"{name}='{value}'" if "$" in value or "#" in value else f"{name}={value}" for name, value in values.items()]
    path.write_text("# written by tests/test_deploy_make.py\n" + "\n".join(lines) + "\n")


def run_make(
    workdir: Path, target: str, *assignments: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> MakeRun:
    log = workdir.parent / "calls.jsonl"
    log.unlink(missing_ok=True)
    environ = {
        "PATH": f"{workdir.parent / 'bin'}:{os.environ['PATH']}",
        "HOME": str(workdir.parent),
        "FAKE_LOG": str(log),
        **(env or {}),
    }
    result = subprocess.run(
        ["make", "--no-print-directory", target, f"BIN={REPO / '.venv' / 'bin'}", *assignments],
        cwd=cwd or workdir, env=environ, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
    )
    return MakeRun(result, log)


def assert_no_secret_shown(run: MakeRun) -> None:
    for value in (*SECRETS.values(), FAKE_SECRET):
        assert value not in run.output


def assert_no_env_secret_passed(run: MakeRun) -> None:
    for call in run.calls:
        for value in SECRETS.values():
            assert all(value not in arg for arg in call["args"])


IMAGE = "europe-west1-docker.pkg.dev/my-proj/tweet-bot/tweet-bot:latest"
RUN_SA = "tweet-bot-run@my-proj.iam.gserviceaccount.com"
INVOKER_SA = "tweet-bot-invoker@my-proj.iam.gserviceaccount.com"
CONNECTION = "my-proj:europe-west1:tweets-db"
ALL_SECRET_REFS = (
    "SECRET_TOKEN=tweet-bot-SECRET_TOKEN:latest,DB_PASSWORD=tweet-bot-DB_PASSWORD:latest,"
    "CONSUMER_KEY=tweet-bot-CONSUMER_KEY:latest,CONSUMER_SECRET=tweet-bot-CONSUMER_SECRET:latest,"
    "ACCESS_KEY=tweet-bot-ACCESS_KEY:latest,ACCESS_SECRET=tweet-bot-ACCESS_SECRET:latest"
)

BUILD = ["gcloud", "builds", "submit", "--project=my-proj", "--region=europe-west1", f"--tag={IMAGE}", "."]
MIGRATE = [
    "gcloud", "run", "jobs", "deploy", "tweet-bot-migrate", "--project=my-proj", "--region=europe-west1",
    f"--image={IMAGE}", f"--service-account={RUN_SA}", f"--set-cloudsql-instances={CONNECTION}",
    f"--set-env-vars=CONNECTION_NAME={CONNECTION},DB_USERNAME=tweetbot,DB_NAME=tweets",
    "--set-secrets=DB_PASSWORD=tweet-bot-DB_PASSWORD:latest",
    "--command=alembic", "--args=upgrade,head", "--max-retries=0", "--task-timeout=10m", "--execute-now", "--wait",
]
DEPLOY = [
    "gcloud", "run", "deploy", "tweet-bot", "--project=my-proj", "--region=europe-west1", f"--image={IMAGE}",
    f"--service-account={RUN_SA}", f"--add-cloudsql-instances={CONNECTION}",
    f"--set-env-vars=ACCOUNT=my_bot,CONNECTION_NAME={CONNECTION},DB_USERNAME=tweetbot,DB_NAME=tweets",
    f"--set-secrets={ALL_SECRET_REFS}", "--max-instances=2", "--no-allow-unauthenticated",
]
DESCRIBE_URL = [
    "gcloud", "run", "services", "describe", "tweet-bot", "--project=my-proj", "--region=europe-west1",
    "--format=value(status.url)",
]

EXPECTED_COMMANDS = {
    "cloud-setup": [
        ["gcloud", "services", "enable", "run.googleapis.com", "sqladmin.googleapis.com", "cloudbuild.googleapis.com",
         "artifactregistry.googleapis.com", "secretmanager.googleapis.com", "cloudscheduler.googleapis.com",
         "iam.googleapis.com", "--project=my-proj"],
        ["gcloud", "artifacts", "repositories", "describe", "tweet-bot", "--location=europe-west1", "--project=my-proj"],
        ["gcloud", "artifacts", "repositories", "create", "tweet-bot", "--repository-format=docker",
         "--location=europe-west1", "--project=my-proj"],
        ["gcloud", "iam", "service-accounts", "describe", RUN_SA, "--project=my-proj"],
        ["gcloud", "iam", "service-accounts", "create", "tweet-bot-run", "--display-name=tweet bot service", "--project=my-proj"],
        ["gcloud", "iam", "service-accounts", "describe", INVOKER_SA, "--project=my-proj"],
        ["gcloud", "iam", "service-accounts", "create", "tweet-bot-invoker", "--display-name=tweet bot scheduler", "--project=my-proj"],
        ["gcloud", "projects", "add-iam-policy-binding", "my-proj", f"--member=serviceAccount:{RUN_SA}",
         "--role=roles/cloudsql.client", "--condition=None"],
        ["gcloud", "projects", "add-iam-policy-binding", "my-proj", f"--member=serviceAccount:{RUN_SA}",
         "--role=roles/secretmanager.secretAccessor", "--condition=None"],
    ],
    "create-postgres-instance": [
        ["gcloud", "sql", "instances", "create", "tweets-db", "--project=my-proj", "--region=europe-west1",
         "--database-version=POSTGRES_18", "--edition=ENTERPRISE", "--tier=db-f1-micro"],
        ["gcloud", "sql", "databases", "create", "tweets", "--instance=tweets-db", "--project=my-proj"],
        ["gcloud", "secrets", "versions", "access", "latest", "--secret=tweet-bot-DB_PASSWORD", "--project=my-proj"],
        ["gcloud", "sql", "users", "create", "tweetbot", "--instance=tweets-db", "--project=my-proj",
         f'--flags-file={{"--password": "{FAKE_SECRET}"}}'],
    ],
    "docker-cloud-build": [BUILD],
    "cloud-migrate": [MIGRATE],
    "docker-cloud-run": [DEPLOY, DESCRIBE_URL],
    "docker-cloud-build-run": [BUILD, MIGRATE, DEPLOY, DESCRIBE_URL],
    "add-scheduler": [
        ["gcloud", "run", "services", "add-iam-policy-binding", "tweet-bot", "--project=my-proj", "--region=europe-west1",
         f"--member=serviceAccount:{INVOKER_SA}", "--role=roles/run.invoker"],
        ["gcloud", "secrets", "versions", "access", "latest", "--secret=tweet-bot-SECRET_TOKEN", "--project=my-proj"],
        ["gcloud", "scheduler", "jobs", "create", "http", "post-tweet", "--project=my-proj", "--location=europe-west1",
         "--schedule=0 9 * * *", "--time-zone=Europe/Paris", f"--uri={SERVICE_URL}/tweet_curated/", "--http-method=POST",
         f'--flags-file={{"--headers": {{"x-token": "{FAKE_SECRET}"}}}}', f"--oidc-service-account-email={INVOKER_SA}",
         f"--oidc-token-audience={SERVICE_URL}", "--attempt-deadline=120s", "--max-retry-attempts=3",
         "--min-backoff=30s", "--max-backoff=600s", "--max-doublings=3", "--format=value(name)"],
    ],
    "scheduler-pause": [["gcloud", "scheduler", "jobs", "pause", "post-tweet", "--project=my-proj", "--location=europe-west1"]],
    "scheduler-resume": [["gcloud", "scheduler", "jobs", "resume", "post-tweet", "--project=my-proj", "--location=europe-west1"]],
    "scheduler-run-now": [["gcloud", "scheduler", "jobs", "run", "post-tweet", "--project=my-proj", "--location=europe-west1"]],
    "scheduler-delete": [
        ["gcloud", "scheduler", "jobs", "delete", "post-tweet", "--project=my-proj", "--location=europe-west1", "--quiet"],
    ],
    "docker-cloud-run-generator": [
        ["gcloud", "run", "deploy", "tweet-bot-generator", "--project=my-proj", "--region=europe-west1",
         "--image=europe-west1-docker.pkg.dev/my-proj/tweet-bot/tweet-bot-generator:latest",
         f"--service-account={RUN_SA}", "--memory=4Gi", "--cpu=2", "--max-instances=2", "--no-allow-unauthenticated"],
    ],
}

# What each target needs; each is emptied in turn on the command line.
REQUIRED = {
    "cloud-setup": ["PROJECT_ID", "REGION", "ARTIFACT_REPOSITORY", "RUN_SERVICE_ACCOUNT", "SCHEDULER_SERVICE_ACCOUNT"],
    "cloud-secrets": ["PROJECT_ID", "DOCKER_INSTANCE_NAME"],
    "create-postgres-instance": ["PROJECT_ID", "REGION", "DOCKER_INSTANCE_NAME", "DB_INSTANCE", "DB_USERNAME", "DB_NAME",
                                 "DB_VERSION", "DB_TIER", "DB_EDITION"],
    "docker-cloud-build": ["PROJECT_ID", "REGION", "ARTIFACT_REPOSITORY", "DOCKER_INSTANCE_NAME"],
    "cloud-migrate": ["PROJECT_ID", "REGION", "ARTIFACT_REPOSITORY", "DOCKER_INSTANCE_NAME", "CONNECTION_NAME",
                      "DB_USERNAME", "DB_NAME", "RUN_SERVICE_ACCOUNT"],
    "docker-cloud-run": ["PROJECT_ID", "REGION", "ARTIFACT_REPOSITORY", "DOCKER_INSTANCE_NAME", "CONNECTION_NAME",
                         "DB_USERNAME", "DB_NAME", "RUN_SERVICE_ACCOUNT", "ACCOUNT"],
    "docker-cloud-build-run": ["PROJECT_ID", "REGION", "ARTIFACT_REPOSITORY", "DOCKER_INSTANCE_NAME", "CONNECTION_NAME",
                               "DB_USERNAME", "DB_NAME", "RUN_SERVICE_ACCOUNT", "ACCOUNT"],
    "add-scheduler": ["PROJECT_ID", "REGION", "DOCKER_INSTANCE_NAME", "SCHEDULER_JOB_NAME", "CLOUD_RUN_URL", "SCHEDULE",
                      "TIME_ZONE", "SCHEDULER_SERVICE_ACCOUNT"],
    "scheduler-pause": ["PROJECT_ID", "REGION", "SCHEDULER_JOB_NAME"],
    "scheduler-resume": ["PROJECT_ID", "REGION", "SCHEDULER_JOB_NAME"],
    "scheduler-run-now": ["PROJECT_ID", "REGION", "SCHEDULER_JOB_NAME"],
    "scheduler-delete": ["PROJECT_ID", "REGION", "SCHEDULER_JOB_NAME"],
    "docker-generator": ["RUN_NAME"],
    "docker-cloud-build-generator": ["PROJECT_ID", "REGION", "ARTIFACT_REPOSITORY", "GENERATOR_SERVICE_NAME", "RUN_NAME"],
    "docker-cloud-run-generator": ["PROJECT_ID", "REGION", "ARTIFACT_REPOSITORY", "GENERATOR_SERVICE_NAME",
                                   "RUN_SERVICE_ACCOUNT", "GENERATOR_MEMORY", "GENERATOR_CPU"],
}


@pytest.mark.parametrize("target", sorted(EXPECTED_COMMANDS))
def test_cloud_target_runs_exactly_these_commands(workdir, target):
    run = run_make(workdir, target)
    assert run.returncode == 0, run.output
    assert run.commands == EXPECTED_COMMANDS[target]
    assert_no_secret_shown(run)
    assert_no_env_secret_passed(run)


@pytest.mark.parametrize(
    ("target", "variable"), [(target, variable) for target, names in sorted(REQUIRED.items()) for variable in names]
)
def test_missing_variable_is_named_and_nothing_runs(workdir, target, variable):
    run = run_make(workdir, target, f"{variable}=")
    assert run.returncode != 0
    assert f"Missing {variable}:" in run.output
    assert "nothing was run" in run.output
    assert run.calls == []


@pytest.mark.parametrize("target", ["docker-cloud-run", "add-scheduler", "create-postgres-instance"])
def test_each_missing_variable_gets_its_own_line(workdir, target):
    (workdir / ".env").unlink()
    run = run_make(workdir, target)
    assert run.returncode != 0
    assert run.calls == []
    missing_lines = [line for line in run.output.splitlines() if line.startswith("Missing ")]
    named = [line.split()[1].rstrip(":") for line in missing_lines]
    defaults = {"REGION", "ARTIFACT_REPOSITORY", "DB_NAME", "DB_VERSION", "DB_TIER", "DB_EDITION", "SCHEDULE", "TIME_ZONE"}
    assert named == [name for name in REQUIRED[target] if name not in defaults]


def test_command_line_wins_over_env_file(workdir):
    run = run_make(workdir, "scheduler-pause", "PROJECT_ID=other-proj")
    assert run.commands == [["gcloud", "scheduler", "jobs", "pause", "post-tweet", "--project=other-proj", "--location=europe-west1"]]


def test_env_file_export_quotes_and_comments_are_understood(workdir):
    (workdir / ".env").write_text(
        "export PROJECT_ID=\"quoted-proj\"   # the project\nREGION='asia-east1'\nSCHEDULER_JOB_NAME=job-1 # comment\n"
    )
    run = run_make(workdir, "scheduler-run-now")
    assert run.commands == [["gcloud", "scheduler", "jobs", "run", "job-1", "--project=quoted-proj", "--location=asia-east1"]]


def test_opt_out_of_authentication(workdir):
    run = run_make(workdir, "docker-cloud-run", "ALLOW_UNAUTHENTICATED=true")
    assert "--allow-unauthenticated" in run.commands[0]
    assert "--no-allow-unauthenticated" not in run.commands[0]


def test_extra_env_vars_and_explicit_connection_name(workdir):
    """EXTRA_ENV_VARS is a second --set-env-vars list: gcloud merges the two."""
    run = run_make(workdir, "docker-cloud-run", "EXTRA_ENV_VARS=TWEET_ORDER=oldest,TWITTER_DRY_RUN=true", "CONNECTION_NAME=p:r:i", "DB_INSTANCE=")
    assert "--add-cloudsql-instances=p:r:i" in run.commands[0]
    assert [arg for arg in run.commands[0] if arg.startswith("--set-env-vars=")] == [
        "--set-env-vars=ACCOUNT=my_bot,CONNECTION_NAME=p:r:i,DB_USERNAME=tweetbot,DB_NAME=tweets",
        "--set-env-vars=TWEET_ORDER=oldest,TWITTER_DRY_RUN=true",
    ]


def test_builtin_postgres_user_gets_a_password_instead_of_being_created(workdir):
    run = run_make(workdir, "create-postgres-instance", "DB_USERNAME=postgres")
    assert run.commands[-1] == [
        "gcloud", "sql", "users", "set-password", "postgres", "--instance=tweets-db", "--project=my-proj",
        f'--flags-file={{"--password": "{FAKE_SECRET}"}}',
    ]


@pytest.mark.parametrize("target, flags_of", [
    ("add-scheduler", lambda secret: {"--headers": {"x-token": secret}}),
    ("create-postgres-instance", lambda secret: {"--password": secret}),
])
def test_secrets_reach_gcloud_in_a_private_flags_file_only(workdir, tmp_path, target, flags_of):
    """Never on a command line (ps shows those to every user), quoted as JSON whatever they hold."""
    secret = 'se"cr\\et $HOME %s `id` \'q\''
    fake = tmp_path / "bin" / "gcloud"
    fake.write_text(fake.read_text().replace(f'    print("{FAKE_SECRET}")', f"    print({secret!r})"))
    run = run_make(workdir, target)
    assert run.returncode == 0, run.output
    [call] = [call for call in run.calls if call["flags_mode"] is not None]
    assert call["flags_mode"] == 0o600
    [flags_file] = [arg.partition("=")[2] for arg in call["argv"] if arg.startswith("--flags-file=")]
    assert not Path(flags_file).exists()
    [flags] = [json.loads(arg.partition("=")[2]) for arg in call["args"] if arg.startswith("--flags-file=")]
    assert flags == flags_of(secret)
    assert not any(secret in arg for call in run.calls for arg in call["argv"])
    assert secret not in run.output


def test_failed_secret_read_creates_no_user(workdir, tmp_path):
    failing = tmp_path / "bin" / "gcloud"
    failing.write_text(failing.read_text().replace('    print("' + FAKE_SECRET + '")', "    sys.exit(1)"))
    run = run_make(workdir, "create-postgres-instance")
    assert run.returncode != 0
    assert [command[1:3] for command in run.commands] == [["sql", "instances"], ["sql", "databases"], ["secrets", "versions"]]


# ---- the local targets (Makefile), in the repository ----

def make_in_repo(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """make in the repository, the virtualenv's stamps taken as up to date, no .env and none of the caller's settings."""
    up_to_date = [f"--old-file=.venv/{stamp}" for stamp in (".api", ".dev", ".ml", ".scrape")]
    return subprocess.run(
        ["make", "--no-print-directory", *up_to_date, *arguments, "ENV_FILE=/dev/null"],
        cwd=REPO, env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **(env or {})},
        capture_output=True, text=True, timeout=120,
    )


LOCAL_COMMANDS = [
    (["run-local"], [".venv/bin/python scripts/init_local_env.py .env", ".venv/bin/alembic upgrade head",
                     ".venv/bin/uvicorn api.main:app --host 127.0.0.1 --port 8000"]),
    (["migrate"], [".venv/bin/alembic upgrade head"]),
    (["test", "PYTEST_ARGS=-x tests/test_config.py"], [".venv/bin/python -m pytest -x tests/test_config.py"]),
    (["download-tweets", "USERNAME=karpathy", "LIMIT=6000", "SOURCE=api"],
     [".venv/bin/python scripts/download_tweets.py --username='karpathy' --limit='6000' --source='api'"]),
    (["train", "FILENAME=karpathy_tweets.csv", "RUN_NAME=run2", "STEPS=20"],
     [".venv/bin/python -m ml.model --filename='karpathy_tweets.csv' --run_name='run2' --steps='20'"]),
    (["serve-generation"], [".venv/bin/uvicorn ml.serve:app --host 127.0.0.1 --port 8001"]),
]


@pytest.mark.parametrize(("arguments", "commands"), LOCAL_COMMANDS, ids=[arguments[0] for arguments, _ in LOCAL_COMMANDS])
def test_local_target_commands(arguments, commands):
    result = make_in_repo("--dry-run", *arguments)
    assert result.returncode == 0, result.stderr
    printed = re.sub(r"\\\n\s*", " ", result.stdout)
    assert [" ".join(line.split()) for line in printed.splitlines()] == commands


def test_help_lists_the_targets_in_one_column():
    result = make_in_repo("help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    listed = [line.split()[0] for line in lines]
    original = ["run-local", "docker-compose", "create-postgres-instance", "docker-cloud-build", "docker-cloud-run",
                "docker-cloud-build-run", "add-scheduler"]
    assert set(original + [*EXPECTED_COMMANDS, *REQUIRED, "migrate", "test", "download-tweets", "train"]) <= set(listed)
    assert len(listed) == len(set(listed))
    assert all(line[:30].rstrip() == name and line[30] != " " for line, name in zip(lines, listed))


def test_migrate_creates_the_schema(tmp_path):
    database = tmp_path / "migrated.db"
    result = make_in_repo("migrate", env={"DATABASE_URL": f"sqlite:///{database}"})
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(database) as connection:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"alembic_version", "tweets"} <= tables


# ---- cloud-secrets: .env -> Secret Manager through standard input ----

def test_cloud_secrets_sends_values_on_stdin(workdir):
    run = run_make(workdir, "cloud-secrets", env={"FAKE_EXISTING_SECRETS": "tweet-bot-SECRET_TOKEN"})
    assert run.returncode == 0, run.output
    writes = [call for call in run.calls if "--data-file=-" in call["args"]]
    assert [call["args"][:3] for call in writes] == [
        ["secrets", "versions", "add"]] + [["secrets", "create", f"tweet-bot-{name}"] for name in list(SECRETS)[1:]]
    assert writes[0]["args"][3] == "tweet-bot-SECRET_TOKEN"
    assert {call["args"][3 if call["args"][1] == "versions" else 2]: call["stdin"] for call in writes} == {
        f"tweet-bot-{name}": value for name, value in SECRETS.items()
    }
    assert all("--project=my-proj" in call["args"] for call in run.calls)
    assert_no_secret_shown(run)
    assert_no_env_secret_passed(run)
    assert "SECRET_TOKEN -> secret tweet-bot-SECRET_TOKEN (updated)" in run.output


def test_cloud_secrets_names_every_missing_secret_and_sends_nothing(workdir):
    write_env(workdir / ".env", {**DEPLOY_ENV, "SECRET_TOKEN": SECRETS["SECRET_TOKEN"], "ACCESS_KEY": ""})
    run = run_make(workdir, "cloud-secrets")
    assert run.returncode != 0
    assert run.calls == []
    for name in ("DB_PASSWORD", "CONSUMER_KEY", "CONSUMER_SECRET", "ACCESS_KEY", "ACCESS_SECRET"):
        assert f"Missing {name}:" in run.output
    assert "Missing SECRET_TOKEN" not in run.output


# ---- docker compose and the generation image ----

def test_docker_compose_target(workdir):
    run = run_make(workdir, "docker-compose")
    assert run.returncode == 0, run.output
    assert run.commands == [["docker", "compose", "up", "--build", "--detach"], ["docker", "compose", "ps"]]


def test_docker_compose_without_env_file_says_what_to_do(workdir):
    (workdir / ".env").unlink()
    run = run_make(workdir, "docker-compose")
    assert run.returncode != 0
    assert "copy .env_reference to .env" in run.output
    assert run.calls == []


def make_run_folder(root: Path) -> Path:
    run_folder = root / "checkpoint" / "tweets1"
    run_folder.mkdir(parents=True)
    for name in ("hparams.json", "encoder.json", "vocab.bpe", "checkpoint", "model-10.index"):
        (run_folder / name).write_text("{}")
    return run_folder


def test_generator_context_holds_code_and_the_run_folder_only(tmp_path):
    """Runs in the repository itself: the context takes the core/ and ml/ files git does not ignore."""
    run_folder = make_run_folder(tmp_path)
    context = tmp_path / "context"
    result = subprocess.run(
        ["make", "--no-print-directory", "generator-context", f"CHECKPOINT_DIR={run_folder.parent}", "RUN_NAME=tweets1",
         f"GENERATOR_CONTEXT={context}", "ENV_FILE=/dev/null"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    staged_dockerfile = (context / "Dockerfile").read_text()
    assert "\nARG RUN_NAME=tweets1\n" in staged_dockerfile
    assert staged_dockerfile.replace("ARG RUN_NAME=tweets1", "ARG RUN_NAME=run1") == (REPO / "ml" / "Dockerfile").read_text()
    staged_run = context / "checkpoint" / "tweets1"
    assert sorted(path.name for path in staged_run.iterdir()) == sorted(path.name for path in run_folder.iterdir())
    # ml.serve, with the image's settings (WORKDIR /app, COPY checkpoint/ checkpoint/), loads that folder
    from ml.config import GenerationSettings

    image_env = dict(re.findall(r"(GENERATION_\w+)=(\S+)", staged_dockerfile))
    assert image_env == {"GENERATION_CHECKPOINT_DIR": "/app/checkpoint", "GENERATION_RUN_NAME": "${RUN_NAME}"}
    image_env["GENERATION_RUN_NAME"] = "tweets1"
    assert GenerationSettings(_env_file=None, **image_env).run_folder == Path("/app") / staged_run.relative_to(context)
    assert (context / "requirements-ml.txt").is_file() and (context / "requirements-core.txt").is_file()
    assert (context / "core" / "tweet_text.py").is_file() and not (context / "api").exists()
    tracked = set(subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "core", "ml"], cwd=REPO, capture_output=True, text=True,
    ).stdout.split())
    staged = {str(path.relative_to(context)) for path in context.rglob("*") if path.is_file()}
    code = {path for path in staged if path.startswith(("core/", "ml/"))}
    assert code == tracked
    assert not any(name.endswith((".env", ".db")) or "__pycache__" in name for name in staged)


def test_generator_context_without_run_folder_says_what_to_do(tmp_path):
    result = subprocess.run(
        ["make", "--no-print-directory", "generator-context", f"CHECKPOINT_DIR={tmp_path}", "RUN_NAME=absent",
         f"GENERATOR_CONTEXT={tmp_path / 'context'}", "ENV_FILE=/dev/null"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert f"No run folder {tmp_path}/absent" in result.stderr
    assert not (tmp_path / "context").exists()


def test_checkpoint_dir_defaults_to_where_ml_model_writes_runs(tmp_path, monkeypatch):
    """make's CHECKPOINT_DIR, ml.model's --checkpoint_dir, ml.serve's GENERATION_CHECKPOINT_DIR and .env_reference agree."""
    from ml import model
    from ml.config import GenerationSettings

    result = subprocess.run(
        ["make", "--no-print-directory", "generator-context", "RUN_NAME=absent", f"GENERATOR_CONTEXT={tmp_path / 'context'}",
         "ENV_FILE=/dev/null"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={name: value for name, value in os.environ.items() if name != "CHECKPOINT_DIR"},
    )
    assert f"No run folder {model.CHECKPOINT_DIR}/absent " in result.stderr
    monkeypatch.delenv("GENERATION_CHECKPOINT_DIR", raising=False)
    assert GenerationSettings(_env_file=None).GENERATION_CHECKPOINT_DIR == Path(model.CHECKPOINT_DIR)
    reference = dict(re.findall(r"^([A-Z_]+)=(.*)$", (REPO / ".env_reference").read_text(), flags=re.M))
    assert reference["CHECKPOINT_DIR"] == reference["GENERATION_CHECKPOINT_DIR"] == model.CHECKPOINT_DIR == "ml/checkpoint"


@pytest.mark.parametrize(("run_name", "message"), [
    ("../escape", "RUN_NAME must be one folder name"),
    ("a b", "RUN_NAME must be one folder name"),
    ("x'; cd; touch ran; '", "RUN_NAME must be one folder name"),
    ("", "Missing RUN_NAME:"),
])
def test_generator_context_refuses_a_run_name_that_is_not_one_folder(tmp_path, run_name, message):
    result = subprocess.run(
        ["make", "--no-print-directory", "generator-context", f"CHECKPOINT_DIR={tmp_path}", f"RUN_NAME={run_name}",
         f"GENERATOR_CONTEXT={tmp_path / 'context'}", "ENV_FILE=/dev/null"],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )
    assert result.returncode != 0
    assert message in result.stdout
    assert "nothing was run" in result.stderr
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "context").exists()


def test_docker_cloud_build_generator_uploads_the_staged_context(workdir, tmp_path):
    """Runs in the repository (generator-context asks git for its files), settings from the test's .env."""
    run_folder = make_run_folder(tmp_path)
    context = tmp_path / "context"
    run = run_make(
        workdir, "docker-cloud-build-generator", f"CHECKPOINT_DIR={run_folder.parent}", "RUN_NAME=tweets1",
        f"GENERATOR_CONTEXT={context}", f"ENV_FILE={workdir / '.env'}", cwd=REPO,
    )
    assert run.returncode == 0, run.output
    assert run.commands == [[
        "gcloud", "builds", "submit", str(context), "--project=my-proj", "--region=europe-west1", "--timeout=3600s",
        "--tag=europe-west1-docker.pkg.dev/my-proj/tweet-bot/tweet-bot-generator:latest",
    ]]
    assert (context / "checkpoint" / "tweets1" / "hparams.json").is_file()


def test_docker_generator_builds_the_staged_context(workdir, tmp_path):
    """Runs in the repository (generator-context asks git for its files), settings from the test's .env."""
    run_folder = make_run_folder(tmp_path)
    context = tmp_path / "context"
    run = run_make(
        workdir, "docker-generator", f"CHECKPOINT_DIR={run_folder.parent}", "RUN_NAME=tweets1",
        f"GENERATOR_CONTEXT={context}", f"ENV_FILE={workdir / '.env'}", cwd=REPO,
    )
    assert run.returncode == 0, run.output
    assert run.commands == [["docker", "build", "-t", "tweet-bot-generator:local", str(context)]]
    assert (context / "checkpoint" / "tweets1" / "hparams.json").is_file()


def test_docker_generator_needs_no_service_name_for_a_local_build(workdir, tmp_path):
    """The README's `make docker-generator RUN_NAME=run1` with no Cloud settings: a fixed local tag."""
    run_folder = make_run_folder(tmp_path)
    context = tmp_path / "context"
    run = run_make(
        workdir, "docker-generator", "DOCKER_INSTANCE_NAME=", f"CHECKPOINT_DIR={run_folder.parent}", "RUN_NAME=tweets1",
        f"GENERATOR_CONTEXT={context}", f"ENV_FILE={workdir / '.env'}", cwd=REPO,
    )
    assert run.returncode == 0, run.output
    assert run.commands == [["docker", "build", "-t", "gpt2-tweet-bot-generator:local", str(context)]]


@pytest.mark.parametrize("target", ["docker-cloud-build-generator", "docker-cloud-run-generator"])
def test_generator_name_comes_from_docker_instance_name(workdir, target):
    run = run_make(workdir, target, "DOCKER_INSTANCE_NAME=")
    assert run.returncode != 0
    assert run.calls == []
    assert "Missing GENERATOR_SERVICE_NAME: set DOCKER_INSTANCE_NAME" in run.output


def test_env_file_values_are_not_expanded_by_make(workdir):
    """`$` and `#` in a .env value stay text: `$%` would be make's automatic variable, `$(...)` a function."""
    write_env(workdir / ".env", {**DEPLOY_ENV, "EXTRA_ENV_VARS": "NOTE=cost$%#1", "ACCOUNT": "x$(shell touch pwned)"})
    run = run_make(workdir, "docker-cloud-run", "ACCOUNT=my_bot")
    assert run.returncode == 0, run.output
    assert not (workdir / "pwned").exists()
    assert "--set-env-vars=NOTE=cost$%#1" in run.commands[0]


# ---- hostile values: each reaches gcloud/docker as one literal argument, or is refused before anything runs ----

# Shell and make syntax of every kind. `cd;touch ran` (no slash: the value also names folders) would create
# HOME/ran if any part of a value ran as a command; HOME is tmp_path in run_make.
HOSTILE = "x`cd;touch ran`$(cd;touch ran)$HOME;cd;touch ran&&cd|touch ran'sq'\"dq\"\\%#1 $(shell cd;touch ran)"
# On the command line a value may also hold a newline and a comment; .env values are one line.
HOSTILE_ON_COMMAND_LINE = HOSTILE + "\nline two #2"


def ran_a_command(workdir: Path) -> bool:
    return (workdir.parent / "ran").exists()


def set_in_env_file(workdir: Path, name: str, value: str) -> None:
    """Appends NAME=value, unquoted, to the test's .env: the last line of a name wins."""
    with open(workdir / ".env", "a") as env_file:
        env_file.write(f"{name}={value}\n")


def hostile_run(workdir: Path, target: str, name: str, source: str, *assignments: str) -> tuple[MakeRun, str]:
    """make TARGET with NAME set to a hostile value in .env or on the command line; returns the run and the value."""
    if source == ".env":
        set_in_env_file(workdir, name, HOSTILE)
        return run_make(workdir, target, *assignments), HOSTILE
    return run_make(workdir, target, *assignments, f"{name}={HOSTILE_ON_COMMAND_LINE}"), HOSTILE_ON_COMMAND_LINE


def assert_deploy_keeps_its_guards(run: MakeRun) -> None:
    """`gcloud run deploy` ran once and still has its secrets, its instance cap and its authentication flag."""
    [deploy] = [command for command in run.commands if command[1:3] == ["run", "deploy"]]
    assert f"--set-secrets={ALL_SECRET_REFS}" in deploy
    assert any(arg.startswith("--max-instances=") for arg in deploy)
    assert "--no-allow-unauthenticated" in deploy


# Free-form values: quoted, whatever they hold. (variable, target, the argument it becomes with %s for the value)
LITERAL_VALUES = [
    ("SCHEDULE", "add-scheduler", "--schedule=%s"),
    ("TIME_ZONE", "add-scheduler", "--time-zone=%s"),
    ("SCHEDULER_ATTEMPT_DEADLINE", "add-scheduler", "--attempt-deadline=%s"),
    ("SCHEDULER_MAX_RETRY_ATTEMPTS", "add-scheduler", "--max-retry-attempts=%s"),
    ("SCHEDULER_MIN_BACKOFF", "add-scheduler", "--min-backoff=%s"),
    ("SCHEDULER_MAX_BACKOFF", "add-scheduler", "--max-backoff=%s"),
    ("SCHEDULER_MAX_DOUBLINGS", "add-scheduler", "--max-doublings=%s"),
    ("EXTRA_ENV_VARS", "docker-cloud-run", "--set-env-vars=%s"),
    ("CLOUD_RUN_MAX_INSTANCES", "docker-cloud-run", "--max-instances=%s"),
    ("DB_VERSION", "create-postgres-instance", "--database-version=%s"),
    ("DB_TIER", "create-postgres-instance", "--tier=%s"),
    ("DB_EDITION", "create-postgres-instance", "--edition=%s"),
    ("GENERATOR_MEMORY", "docker-cloud-run-generator", "--memory=%s"),
    ("GENERATOR_CPU", "docker-cloud-run-generator", "--cpu=%s"),
]


@pytest.mark.parametrize("source", [".env", "command line"])
@pytest.mark.parametrize(("name", "target", "argument"), LITERAL_VALUES, ids=[name for name, _, _ in LITERAL_VALUES])
def test_free_form_value_reaches_gcloud_as_one_literal_argument(workdir, name, target, argument, source):
    run, value = hostile_run(workdir, target, name, source)
    assert run.returncode == 0, run.output
    assert not ran_a_command(workdir)
    assert run.commands == [with_argument(command, argument % value, added=name == "EXTRA_ENV_VARS")
                            for command in EXPECTED_COMMANDS[target]]
    if target == "docker-cloud-run":
        assert_deploy_keeps_its_guards(run)


def with_argument(command: list[str], argument: str, added: bool) -> list[str]:
    """The expected command with `argument` in place of its flag's default value, or after it when `added`."""
    flag = argument.partition("=")[0] + "="
    at = [index for index, arg in enumerate(command) if arg.startswith(flag)]
    if not at:
        return command
    if added:
        return [*command[:at[0] + 1], argument, *command[at[0] + 1:]]
    return [*command[:at[0]], argument, *command[at[0] + 1:]]


def test_image_from_the_command_line_is_one_literal_argument(workdir):
    run = run_make(workdir, "docker-cloud-build", f"IMAGE={HOSTILE_ON_COMMAND_LINE}")
    assert run.returncode == 0, run.output
    assert not ran_a_command(workdir)
    assert run.commands == [[*BUILD[:-2], f"--tag={HOSTILE_ON_COMMAND_LINE}", "."]]


def test_semicolon_in_extra_env_vars_does_not_split_the_deploy(workdir):
    set_in_env_file(workdir, "EXTRA_ENV_VARS", "TWEET_ORDER=oldest;cd;touch ran")
    run = run_make(workdir, "docker-cloud-run")
    assert run.returncode == 0, run.output
    assert not ran_a_command(workdir)
    assert run.commands[0] == [*DEPLOY[:10], "--set-env-vars=TWEET_ORDER=oldest;cd;touch ran", *DEPLOY[10:]]


def test_extra_env_vars_may_use_gclouds_own_delimiter_syntax(workdir):
    """A value with a comma: gcloud reads `^;^` at the start of one --set-env-vars list as "split on ; here"."""
    run = run_make(workdir, "docker-cloud-run", "EXTRA_ENV_VARS=^;^NOTE=a,b;TWEET_ORDER=oldest")
    assert run.returncode == 0, run.output
    assert run.commands[0] == [*DEPLOY[:10], "--set-env-vars=^;^NOTE=a,b;TWEET_ORDER=oldest", *DEPLOY[10:]]


# Values of a known shape: refused, one line naming the variable, before anything runs. (variable, a target using it)
SHAPED_VALUES = [
    ("PROJECT_ID", "scheduler-pause"),
    ("REGION", "scheduler-pause"),
    ("DOCKER_INSTANCE_NAME", "docker-cloud-run"),
    ("ARTIFACT_REPOSITORY", "docker-cloud-build"),
    ("IMAGE_TAG", "docker-cloud-build"),
    ("ACCOUNT", "docker-cloud-run"),
    ("DB_INSTANCE", "create-postgres-instance"),
    ("CONNECTION_NAME", "cloud-migrate"),
    ("DB_USERNAME", "create-postgres-instance"),
    ("DB_NAME", "create-postgres-instance"),
    ("RUN_SERVICE_ACCOUNT", "cloud-setup"),
    ("SCHEDULER_SERVICE_ACCOUNT", "add-scheduler"),
    ("ALLOW_UNAUTHENTICATED", "docker-cloud-run"),
    ("SECRET_PREFIX", "docker-cloud-run"),
    ("MIGRATE_JOB_NAME", "cloud-migrate"),
    ("CLOUD_RUN_URL", "add-scheduler"),
    ("SCHEDULER_JOB_NAME", "scheduler-run-now"),
    ("GENERATOR_SERVICE_NAME", "docker-cloud-run-generator"),
]


@pytest.mark.parametrize("source", [".env", "command line"])
@pytest.mark.parametrize(("name", "target"), SHAPED_VALUES, ids=[name for name, _ in SHAPED_VALUES])
def test_value_of_a_known_shape_is_refused_before_anything_runs(workdir, name, target, source):
    run, _ = hostile_run(workdir, target, name, source)
    assert run.returncode != 0
    assert run.calls == []
    assert not ran_a_command(workdir)
    [line] = [line for line in run.output.splitlines() if line.startswith(f"{name} must be ")]
    assert "nothing was run" in run.output


@pytest.mark.parametrize(("name", "value", "target"), [
    ("DOCKER_INSTANCE_NAME", "--allow-unauthenticated", "docker-cloud-run"),
    ("PROJECT_ID", "-my-proj", "cloud-setup"),
    ("SCHEDULER_JOB_NAME", "--help", "scheduler-delete"),
    ("ACCOUNT", "my_bot,TWITTER_DRY_RUN=false", "docker-cloud-run"),
    ("SECRET_PREFIX", "x-,CONSUMER_KEY=other", "docker-cloud-run"),
    ("CLOUD_RUN_URL", "http://tweet-bot.example", "add-scheduler"),
    ("ALLOW_UNAUTHENTICATED", "no true", "docker-cloud-run"),
    ("REGION", "evil.example/x", "docker-cloud-build"),
    ("CLOUD_RUN_SECRETS", "SECRET_TOKEN,X=y", "cloud-secrets"),
])
def test_value_that_would_become_another_flag_list_item_or_host_is_refused(workdir, name, value, target):
    run = run_make(workdir, target, f"{name}={value}")
    assert run.returncode != 0
    assert run.calls == []
    assert any(line.startswith(f"{name} must be ") for line in run.output.splitlines())


@pytest.mark.parametrize(("assignment", "expected"), [
    ("PROJECT_ID=my-proj-2", "--project=my-proj-2"),
    ("ACCOUNT=@my_bot", "--set-env-vars=ACCOUNT=@my_bot,CONNECTION_NAME=my-proj:europe-west1:tweets-db,DB_USERNAME=tweetbot,DB_NAME=tweets"),
    ("CONNECTION_NAME=example.com:my-proj:europe-west1:db-1", "--add-cloudsql-instances=example.com:my-proj:europe-west1:db-1"),
    ("ALLOW_UNAUTHENTICATED=yes", "--allow-unauthenticated"),
])
def test_values_of_the_right_shape_are_accepted(workdir, assignment, expected):
    run = run_make(workdir, "docker-cloud-run", assignment)
    assert run.returncode == 0, run.output
    assert expected in run.commands[0]


def test_env_file_reader_keeps_make_text_out_of_values(workdir):
    """The reader joins its lines with @NL@; a value holding @NL@, a trailing backslash or `#` stays one value."""
    set_in_env_file(workdir, "TIME_ZONE", "Europe/Paris@NL@override PROJECT_ID := evil-proj")
    set_in_env_file(workdir, "SCHEDULE", "0 9 * * 1\\")
    set_in_env_file(workdir, "SCHEDULER_MIN_BACKOFF", "'  30s #not a comment'")
    run = run_make(workdir, "add-scheduler")
    assert run.returncode == 0, run.output
    [create] = [command for command in run.commands if command[1:4] == ["scheduler", "jobs", "create"]]
    assert "--project=my-proj" in create
    assert "--time-zone=Europe/Paris@NL@override PROJECT_ID := evil-proj" in create
    assert "--schedule=0 9 * * 1\\" in create
    assert "--min-backoff=  30s #not a comment" in create


def test_values_from_the_environment_are_taken_literally(workdir):
    run = run_make(workdir, "add-scheduler", env={"TIME_ZONE": HOSTILE_ON_COMMAND_LINE})
    assert run.returncode == 0, run.output
    assert not ran_a_command(workdir)
    assert f"--time-zone={HOSTILE_ON_COMMAND_LINE}" in run.commands[-1]


def test_build_run_passes_literal_values_to_its_own_make(workdir):
    run = run_make(workdir, "docker-cloud-build-run", f"EXTRA_ENV_VARS={HOSTILE_ON_COMMAND_LINE}")
    assert run.returncode == 0, run.output
    assert not ran_a_command(workdir)
    assert f"--set-env-vars={HOSTILE_ON_COMMAND_LINE}" in run.commands[2]
    assert_deploy_keeps_its_guards(run)


def test_env_file_path_is_one_literal_argument(workdir):
    env_file = workdir.parent / "my .env `cd;touch ran` $(cd;touch ran) 'q'"
    shutil.copy(workdir / ".env", env_file)
    (workdir / ".env").unlink()
    run = run_make(workdir, "scheduler-pause", f"ENV_FILE={env_file}")
    assert run.returncode == 0, run.output
    assert not ran_a_command(workdir)
    assert run.commands == EXPECTED_COMMANDS["scheduler-pause"]


def test_generator_paths_are_literal_arguments(workdir, tmp_path):
    """Runs in the repository (generator-context asks git for its files); folder names hold shell syntax."""
    folder_name = "ck `cd;touch ran` $(cd;touch ran) 'q' \"d\";x"
    run_folder = make_run_folder(tmp_path / folder_name)
    context = tmp_path / ("context " + folder_name)
    run = run_make(
        workdir, "docker-generator", f"CHECKPOINT_DIR={run_folder.parent}", "RUN_NAME=tweets1",
        f"GENERATOR_CONTEXT={context}", f"ENV_FILE={workdir / '.env'}", cwd=REPO,
    )
    assert run.returncode == 0, run.output
    assert not ran_a_command(workdir)
    assert run.commands == [["docker", "build", "-t", "tweet-bot-generator:local", str(context)]]
    assert (context / "checkpoint" / "tweets1" / "hparams.json").is_file()


@pytest.mark.parametrize(("target", "variable", "flag"), [
    ("train", "RUN_NAME", "--run_name"),
    ("train", "FILENAME", "--filename"),
    ("download-tweets", "ARCHIVE", "--archive"),
    ("download-tweets", "USERNAME", "--username"),
])
def test_local_target_passes_a_value_as_one_literal_argument(workdir, tmp_path, target, variable, flag):
    """`make train` / `make download-tweets` hand their values to Python as one argument; nothing in them runs."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    recorder = venv / "bin" / "python"
    recorder.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                        "open(os.environ['FAKE_LOG'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    recorder.chmod(0o755)
    for requirements in ("requirements-core.txt", "requirements.txt", "requirements-ml.txt", "requirements-scrape.txt"):
        (workdir / requirements).touch()
        os.utime(workdir / requirements, (0, 0))
    for marker in (".api", ".ml", ".scrape"):
        (venv / marker).touch()
    value = f"x `touch {workdir}/pwned`;$(touch {workdir}/pwned) 'q\" $$HOME"
    # RUN_NAME is also read from .env; the others come from the command line only.
    assignments = [] if variable == "RUN_NAME" else [f"{variable}={value}"]
    set_in_env_file(workdir, variable, value)
    log = workdir.parent / "calls.jsonl"
    result = subprocess.run(
        ["make", "--no-print-directory", target, f"VENV={venv}", f"BIN={venv / 'bin'}", *assignments],
        cwd=workdir, env={"PATH": os.environ["PATH"], "FAKE_LOG": str(log)},
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (workdir / "pwned").exists()
    (argv,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert f"{flag}={value}" in argv


# ---- several bots (BOTS): a Cloud Scheduler job per bot, each bot's settings and secrets on Cloud Run ----

BOTS_ENV = {
    "BOTS": "alice,bob",
    "BOT_ALICE_DESTINATIONS": "x,mastodon",
    "BOT_ALICE_MASTODON_API_BASE_URL": "https://mastodon.example",
    "BOT_ALICE_SCHEDULE": "30 8 * * 1-5",
    "BOT_ALICE_TIME_ZONE": "America/New_York",
    "BOT_BOB_DESTINATIONS": "bluesky",
    "BOT_BOB_BLUESKY_HANDLE": "bob.bsky.social",
}
BOT_SECRETS = {
    "BOT_ALICE_CONSUMER_KEY": "alice-ck-1", "BOT_ALICE_CONSUMER_SECRET": "alice-cs-2", "BOT_ALICE_ACCESS_KEY": "alice-ak-3",
    "BOT_ALICE_ACCESS_SECRET": "alice-as-4", "BOT_ALICE_MASTODON_ACCESS_TOKEN": "alice-mastodon-5",
    "BOT_BOB_BLUESKY_APP_PASSWORD": "bob-app-password-6",
}


@pytest.fixture
def bots_workdir(workdir) -> Path:
    """The workdir with two bots in .env (ACCOUNT unset: with BOTS it is optional), their settings and secrets."""
    write_env(workdir / ".env", {**{k: v for k, v in DEPLOY_ENV.items() if k != "ACCOUNT"}, **SECRETS, **BOTS_ENV, **BOT_SECRETS})
    return workdir


def scheduler_job(name: str, schedule: str, time_zone: str, uri: str) -> list[list[str]]:
    """add-scheduler's commands for a job, as EXPECTED_COMMANDS has them for today's job."""
    binding, read_token, create = EXPECTED_COMMANDS["add-scheduler"]
    replaced = {"post-tweet": name, "--schedule=0 9 * * *": f"--schedule={schedule}",
                "--time-zone=Europe/Paris": f"--time-zone={time_zone}", f"--uri={SERVICE_URL}/tweet_curated/": f"--uri={uri}"}
    return [binding, read_token, [replaced.get(arg, arg) for arg in create]]


def test_add_scheduler_for_a_bot_makes_its_own_job(bots_workdir):
    run = run_make(bots_workdir, "add-scheduler", "BOT=alice")
    assert run.returncode == 0, run.output
    assert run.commands == scheduler_job(
        "post-tweet-alice", "30 8 * * 1-5", "America/New_York", f"{SERVICE_URL}/tweet_curated/?bot=alice")
    assert_no_secret_shown(run)


def test_a_bot_without_its_own_schedule_gets_the_services_defaults(bots_workdir):
    """As core/config.py reads it: bob's schedule is BOT_BOB_SCHEDULE, else the default, never the plain SCHEDULE."""
    run = run_make(bots_workdir, "add-scheduler", "BOT=bob")
    assert run.returncode == 0, run.output
    assert run.commands == scheduler_job("post-tweet-bob", "0 9 * * *", "Etc/UTC", f"{SERVICE_URL}/tweet_curated/?bot=bob")


def test_add_schedulers_makes_every_bots_job(bots_workdir):
    run = run_make(bots_workdir, "add-schedulers")
    assert run.returncode == 0, run.output
    assert run.commands == [
        *scheduler_job("post-tweet-alice", "30 8 * * 1-5", "America/New_York", f"{SERVICE_URL}/tweet_curated/?bot=alice"),
        *scheduler_job("post-tweet-bob", "0 9 * * *", "Etc/UTC", f"{SERVICE_URL}/tweet_curated/?bot=bob"),
    ]
    assert_no_secret_shown(run)


def test_add_schedulers_stops_at_the_first_bot_whose_job_fails(bots_workdir):
    run = run_make(bots_workdir, "add-schedulers", env={"FAKE_FAIL_ON": "post-tweet-alice"})
    assert run.returncode != 0
    commands = [" ".join(command) for command in run.commands]
    assert any("post-tweet-alice" in command for command in commands)
    assert not any("post-tweet-bob" in command for command in commands)


def test_add_schedulers_needs_several_bots(workdir):
    run = run_make(workdir, "add-schedulers")
    assert run.returncode == 2
    assert "add-schedulers makes a job per bot of BOTS" in run.output
    assert run.commands == []


def test_without_bot_add_scheduler_makes_todays_job(bots_workdir):
    run = run_make(bots_workdir, "add-scheduler")
    assert run.returncode == 0, run.output
    assert run.commands == EXPECTED_COMMANDS["add-scheduler"]


def test_bot_may_name_the_one_bot(workdir):
    """Without BOTS, BOT=ACCOUNT makes a job of its own for the one bot, on SCHEDULE and TIME_ZONE."""
    run = run_make(workdir, "add-scheduler", "BOT=my_bot")
    assert run.returncode == 0, run.output
    assert run.commands == scheduler_job("post-tweet-my_bot", "0 9 * * *", "Europe/Paris", f"{SERVICE_URL}/tweet_curated/?bot=my_bot")


@pytest.mark.parametrize("target", ["scheduler-pause", "scheduler-resume", "scheduler-run-now", "scheduler-delete"])
def test_job_targets_act_on_the_bots_job(bots_workdir, target):
    run = run_make(bots_workdir, target, "BOT=bob")
    assert run.returncode == 0, run.output
    assert run.commands == [[arg.replace("post-tweet", "post-tweet-bob") for arg in command] for command in EXPECTED_COMMANDS[target]]


@pytest.mark.parametrize("source", ["environment", "command line"])
def test_a_bots_schedule_is_one_literal_argument(bots_workdir, source):
    assignment = f"BOT_ALICE_TIME_ZONE={HOSTILE_ON_COMMAND_LINE}"
    if source == "environment":
        run = run_make(bots_workdir, "add-scheduler", "BOT=alice", env={"BOT_ALICE_TIME_ZONE": HOSTILE_ON_COMMAND_LINE})
    else:
        run = run_make(bots_workdir, "add-scheduler", "BOT=alice", assignment)
    assert run.returncode == 0, run.output
    assert not ran_a_command(bots_workdir)
    assert f"--time-zone={HOSTILE_ON_COMMAND_LINE}" in run.commands[-1]


@pytest.mark.parametrize("source", ["environment", "command line"])
@pytest.mark.parametrize("value", [HOSTILE_ON_COMMAND_LINE, "--help", "alice,bob", "alice&bob", "../alice", "a" * 16],
                         ids=["shell", "flag", "list", "query", "path", "too-long"])
def test_hostile_bot_is_refused_before_anything_runs(bots_workdir, value, source):
    if source == "environment":
        run = run_make(bots_workdir, "add-scheduler", env={"BOT": value})
    else:
        run = run_make(bots_workdir, "add-scheduler", f"BOT={value}")
    assert run.returncode != 0
    assert run.calls == []
    assert not ran_a_command(bots_workdir)
    assert any(line.startswith("BOT must be ") for line in run.output.splitlines())
    assert "nothing was run" in run.output


@pytest.mark.parametrize(("bots", "bot", "said"), [
    ("alice,bob", "carol", "BOT must be one of BOTS (alice,bob)"),
    ("alice,bob", "Alice", "BOT must be one of BOTS (alice,bob)"),
    ("", "alice", "BOT must be one of ACCOUNT (my_bot), the one bot"),
])
def test_a_bot_that_is_not_configured_gets_no_job(workdir, bots, bot, said):
    run = run_make(workdir, "add-scheduler", f"BOT={bot}", f"BOTS={bots}")
    assert run.returncode != 0
    assert run.calls == []
    assert said in run.output.splitlines()


MULTI_BOT_SECRET_REFS = ",".join(
    f"{name}=tweet-bot-{name}:latest" for name in ("SECRET_TOKEN", "DB_PASSWORD", *BOT_SECRETS)
)


def test_deploy_with_several_bots_passes_their_settings_and_maps_their_secrets(bots_workdir):
    run = run_make(bots_workdir, "docker-cloud-run")
    assert run.returncode == 0, run.output
    [deploy, _describe] = run.commands
    assert [arg for arg in deploy if arg.startswith("--set-env-vars=")] == [
        f"--set-env-vars=CONNECTION_NAME={CONNECTION},DB_USERNAME=tweetbot,DB_NAME=tweets",
        "--set-env-vars=^;^BOTS=alice,bob;BOT_ALICE_DESTINATIONS=x,mastodon;BOT_ALICE_MASTODON_API_BASE_URL=https://mastodon.example;"
        "BOT_BOB_DESTINATIONS=bluesky;BOT_BOB_BLUESKY_HANDLE=bob.bsky.social",
    ]
    assert f"--set-secrets={MULTI_BOT_SECRET_REFS}" in deploy
    assert_no_secret_shown(run)
    for value in BOT_SECRETS.values():
        assert value not in run.output
        assert not any(value in arg for call in run.calls for arg in call["argv"])


def test_a_bot_with_no_destinations_set_posts_to_x(bots_workdir):
    run = run_make(bots_workdir, "docker-cloud-run", "BOT_BOB_DESTINATIONS=")
    assert run.returncode == 0, run.output
    [secrets] = [arg for arg in run.commands[0] if arg.startswith("--set-secrets=")]
    assert secrets.endswith(",BOT_BOB_CONSUMER_KEY=tweet-bot-BOT_BOB_CONSUMER_KEY:latest,"
                            "BOT_BOB_CONSUMER_SECRET=tweet-bot-BOT_BOB_CONSUMER_SECRET:latest,"
                            "BOT_BOB_ACCESS_KEY=tweet-bot-BOT_BOB_ACCESS_KEY:latest,BOT_BOB_ACCESS_SECRET=tweet-bot-BOT_BOB_ACCESS_SECRET:latest")


def test_cloud_secrets_copies_every_bots_credentials(bots_workdir):
    run = run_make(bots_workdir, "cloud-secrets")
    assert run.returncode == 0, run.output
    writes = {call["args"][2]: call["stdin"] for call in run.calls if call["args"][:2] == ["secrets", "create"]}
    assert writes == {f"tweet-bot-{name}": value for name, value in {
        "SECRET_TOKEN": SECRETS["SECRET_TOKEN"], "DB_PASSWORD": SECRETS["DB_PASSWORD"], **BOT_SECRETS}.items()}
    assert_no_secret_shown(run)


def test_one_bot_posting_to_mastodon_and_bluesky_gets_their_settings_and_secrets(workdir):
    set_in_env_file(workdir, "DESTINATIONS", "mastodon,bluesky")
    set_in_env_file(workdir, "MASTODON_API_BASE_URL", "https://mastodon.example")
    set_in_env_file(workdir, "BLUESKY_HANDLE", "my.bsky.social")
    run = run_make(workdir, "docker-cloud-run")
    assert run.returncode == 0, run.output
    deploy = run.commands[0]
    assert [arg for arg in deploy if arg.startswith("--set-env-vars=")] == [
        DEPLOY[9],
        "--set-env-vars=^;^DESTINATIONS=mastodon,bluesky;MASTODON_API_BASE_URL=https://mastodon.example;BLUESKY_HANDLE=my.bsky.social",
    ]
    assert ("--set-secrets=SECRET_TOKEN=tweet-bot-SECRET_TOKEN:latest,DB_PASSWORD=tweet-bot-DB_PASSWORD:latest,"
            "MASTODON_ACCESS_TOKEN=tweet-bot-MASTODON_ACCESS_TOKEN:latest,BLUESKY_APP_PASSWORD=tweet-bot-BLUESKY_APP_PASSWORD:latest") in deploy


@pytest.mark.parametrize("source", [".env", "command line"])
@pytest.mark.parametrize("name", ["BOTS", "BOT_ALICE_DESTINATIONS", "BOT_BOB_BLUESKY_HANDLE", "BOT_ALICE_MASTODON_API_BASE_URL",
                                  "DESTINATIONS", "MASTODON_MAX_CHARACTERS", "BLUESKY_PDS_URL"])
def test_a_bots_setting_of_the_wrong_shape_is_refused_before_anything_runs(bots_workdir, name, source):
    run, _ = hostile_run(bots_workdir, "docker-cloud-run", name, source)
    assert run.returncode != 0
    assert run.calls == []
    assert not ran_a_command(bots_workdir)
    assert any(line.startswith(f"{name} must be ") for line in run.output.splitlines())


@pytest.mark.parametrize(("name", "value"), [
    ("BOT_ALICE_DESTINATIONS", "x;BOTS=evil"), ("BOT_ALICE_MASTODON_API_BASE_URL", "https://m.example;BOT_ALICE_DESTINATIONS=x"),
    ("BOTS", "alice;bob"), ("BOTS", "alice, bob"), ("BOT_ALICE_DESTINATIONS", "x,twitter"),
])
def test_a_value_that_would_split_the_bots_settings_list_is_refused(bots_workdir, name, value):
    run = run_make(bots_workdir, "docker-cloud-run", f"{name}={value}")
    assert run.returncode != 0
    assert run.calls == []
    assert any(line.startswith(f"{name} must be ") for line in run.output.splitlines())
