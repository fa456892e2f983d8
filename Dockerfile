# The API image: the tweet store service (uvicorn api.main:app), its migrations and the scheduler.
#   docker build -t tweet-bot .                    (make docker-compose / make docker-cloud-build)
#   command: serve on $PORT (Cloud Run sets it; 8080 otherwise)
#   alembic upgrade head                           (make cloud-migrate; the compose `migrate` service)
#   python -m posting.scheduler                    (the compose `scheduler` service)
# Only requirements.txt is installed (no TensorFlow). No settings or secrets live in the image:
# they come from the environment (Cloud Run, Secret Manager, docker compose's env_file).
# BASE_IMAGE: any Debian-based Python 3.11+ image with python and pip on PATH (make image-test builds
# on Debian's own Python that way, since CI reaches no image registry).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LOG_FORMAT=json \
    SQLITE_PATH=/data/tweets.db

WORKDIR /app

COPY requirements-core.txt requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# A fixed, unprivileged user; /data is the only place it may write (SQLite when no Postgres is set).
RUN groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app \
    && mkdir /data && chown app:app /data

COPY alembic.ini .
COPY migrations/ migrations/
COPY core/ core/
COPY db/ db/
COPY api/ api/
COPY posting/ posting/
# Compiled once here, so a cold start (Cloud Run scales to zero) does not compile the service's modules.
RUN python -m compileall -q core api posting db migrations

USER 10001:10001
EXPOSE 8080
# sh expands $PORT; exec replaces sh with uvicorn so SIGTERM from Cloud Run or docker reaches it.
CMD ["sh", "-c", "exec uvicorn api.main:app --host 0.0.0.0 --port ${PORT:-8080}"]
