#!/usr/bin/env bash
# make image-test: build the images and run them for real, as a user would.
#
#   api       the API image from the files git tracks: non-root; /health 503 naming the missing table, then 200
#             after the image's own `alembic upgrade head`; an upload and a dry-run post through the published
#             port; a wrong token gets 401; SIGTERM stops it within 2 s; no secret in any layer or in the history.
#   compose   docker-compose.yml: Postgres healthy, then the one-shot migration, then the API and the scheduler;
#             the scheduler posts at a fire time a minute away; the data survives `down` and `up`.
#   py313     the API image on Python 3.13: the app imports and `pip check` passes.
#   generator ml/Dockerfile with a bundled tiny run (needs .venv with the ML requirements to make the run)
#             answers a generation request.
#   startup   (only when named) bench/bench_startup.py inside the API image: its /app and its Python against
#             a bare FastAPI app in the same container; prints the figures, asserts none. IMAGE_TEST_BENCH_RUNS
#             (default 7); IMAGE_TEST_BENCH_BASELINE=<another checkout> starts that one's API too (before/after).
# IMAGE_TEST_PARTS picks some of them (default: all but startup, in that order).
#
# IMAGE_TEST_ENGINE=podman (default; installed with Debian's packages when missing, as root) or docker.
# With podman, the bases are made here from Debian's packages (no image registry is needed): Python 3.11 from
# bookworm and 3.13 from trixie (a venv on PATH, as python:3.x-slim has pip on PATH; no setuptools, as on
# 3.12+ slim images), and Postgres from Debian's postgresql package. With docker, the official images are
# used: python:3.11-slim, python:3.13-slim, postgres:18. IMAGE_TEST_BASE, IMAGE_TEST_BASE_313 and
# IMAGE_TEST_POSTGRES name other images for either engine.
#
# Compose: `docker compose` with docker; with podman, Debian's docker-compose (v1) on podman's Docker API socket.
# Nothing of the host's is baked into an image: its CA bundle is mounted for the builds only.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

ENGINE="${IMAGE_TEST_ENGINE:-podman}"
PARTS="${IMAGE_TEST_PARTS:-api compose py313 generator}"
PREFIX=tweet-bot-image-test
PROJECT="$PREFIX"  # the compose project: never the name a real self-hosted stack uses
WORK="$(mktemp -d "/tmp/$PREFIX.XXXXXX")"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
API_TAG="localhost/$PREFIX-api:latest"
STEP="setup"
BACKGROUND_PIDS=()
T0=$SECONDS

say() { printf '[image-test %4ds] %s\n' "$((SECONDS - T0))" "$*"; }
step() { STEP="$*"; say "$STEP"; }
fail() { echo "image-test FAILED at step '$STEP': $*" >&2; exit 1; }
# run LOG COMMAND...: output into $LOGS/LOG; on failure its last lines are shown.
run() {
    local log="$LOGS/$1"; shift
    if ! "$@" >>"$log" 2>&1; then
        tail -n 40 "$log" >&2
        fail "$* exited non-zero (log: $log)"
    fi
}
# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND each second until it succeeds, or fail after SECONDS.
wait_for() {
    local limit="$1" what="$2"; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$what: not within ${limit}s"
        sleep 1
    done
}
has_part() { [[ " $PARTS " == *" $1 "* ]]; }
ours() { "$ENGINE" ps -a --format '{{.Names}}' 2>/dev/null | grep -E "^${PREFIX}[-_]" || true; }

cleanup() {
    local status=$?
    set +e
    trap - ERR
    if [ -f "$WORK/compose-up" ]; then "${COMPOSE[@]}" down --volumes --timeout 10 >>"$LOGS/compose-down" 2>&1; fi
    for name in $(ours); do "$ENGINE" rm --force --time 2 "$name" >/dev/null 2>&1; done
    for pid in "${BACKGROUND_PIDS[@]}"; do
        pkill -TERM -P "$pid" 2>/dev/null  # a base's mmdebstrap or podman import, then the job itself
        kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    done
    if [ "$status" -eq 0 ]; then rm -rf "$WORK"; else echo "image-test: logs kept in $LOGS" >&2; fi
    exit "$status"
}
trap cleanup EXIT
trap 'fail "line $LINENO: $BASH_COMMAND"' ERR

# ---------------------------------------------------------------- tools
install_tools() {
    step "install podman, runc, mmdebstrap and docker-compose (Debian's packages)"
    local missing=() command
    for command in podman runc mmdebstrap docker-compose curl; do
        command -v "$command" >/dev/null || missing+=("$command")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    [ "$(id -u)" -eq 0 ] || fail "missing ${missing[*]}: install them (apt-get install ${missing[*]}) or run as root"
    export DEBIAN_FRONTEND=noninteractive
    run apt apt-get update -qq
    # podman with its recommended packages (iptables for published ports, fuse-overlayfs, ...); docker-compose
    # without them: it recommends docker.io, a Docker engine that is not wanted here.
    run apt apt-get install -y -qq podman runc mmdebstrap curl </dev/null
    run apt apt-get install -y -qq --no-install-recommends docker-compose </dev/null
}

# This machine (no systemd, cgroups v1, no capability to raise rlimits) needs runc, cgroupfs and ulimits
# within the current hard limits; a containers.conf of our own keeps the host's untouched.
configure_podman() {
    local nproc
    nproc="$(ulimit -Hu)"
    if [ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ]; then nproc=4096; fi
    cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    export CONTAINERS_CONF="$WORK/containers.conf"
}

# build_flags BASE: BUILD_FLAGS for a build from BASE. With podman, pip inside the build reaches PyPI, as pip
# here does, through the host's network and with the host's CA bundle mounted read-only over the base's
# bundles (the system one, and the one pip carries); a mount adds no file to a layer, as it would for a
# pip.conf the base has not. The host's pip settings add only that bundle and local file:// folders.
build_flags() {
    BUILD_FLAGS=(--pull=never --build-arg "BASE_IMAGE=$1")
    [ "$ENGINE" = podman ] || return 0
    local host_bundle=/etc/ssl/certs/ca-certificates.crt pip_bundle
    pip_bundle="$(podman run --rm "$1" python -c 'from pip._vendor import certifi; print(certifi.where())')"
    BUILD_FLAGS+=(--network=host -v "$host_bundle:/etc/ssl/certs/ca-certificates.crt:ro" -v "$host_bundle:$pip_bundle:ro")
}

# ---------------------------------------------------------------- bases (podman)
debian_mirror() {
    local uri
    uri="$(grep -hoE '^URIs: *http[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1 | sed 's/^URIs: *//')"
    [ -n "$uri" ] || uri="$(grep -hoE '^deb +http[^ ]+/debian/? ' /etc/apt/sources.list 2>/dev/null | head -n 1 | awk '{print $2}')"
    echo "${uri:-http://deb.debian.org/debian}"
}

# make_base TAG SUITE PACKAGES IMPORT_CHANGES HOOKS...: a Debian root file system made by mmdebstrap and
# imported as TAG, unless an image made from the same recipe is there already.
make_base() {
    local name="$1" suite="$2" packages="$3" changes="$4"; shift 4
    local key tag
    key="$(printf '%s\n' "$suite" "$packages" "$changes" "$@" | cat - "$REPO/scripts/image_test/postgres-entrypoint.sh" | sha256sum | cut -c1-12)"
    tag="localhost/$PREFIX-$name:$key"
    if ! podman image exists "$tag"; then
        local hooks=()
        for hook in "$@"; do hooks+=(--customize-hook="$hook"); done
        run "base-$name" mmdebstrap --variant=minbase --format=tar --include="$packages" \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            "${hooks[@]}" --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
            "$suite" "$WORK/$name.tar" "$(debian_mirror)" </dev/null
        local change_flags=()
        while IFS= read -r change; do [ -z "$change" ] || change_flags+=(--change "$change"); done <<<"$changes"
        run "base-$name" podman import "${change_flags[@]}" "$WORK/$name.tar" "$tag"
        rm -f "$WORK/$name.tar"
    fi
    echo "$tag"
}

python_base() {
    local suite="$1"
    make_base "python-$suite" "$suite" python3,python3-venv,ca-certificates \
        $'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nENV LANG=C.UTF-8\nCMD ["python3"]' \
        'chroot "$1" python3 -m venv /opt/venv' \
        'chroot "$1" /opt/venv/bin/python -m pip uninstall --yes --quiet setuptools'
}

postgres_base() {
    make_base postgres bookworm postgresql \
        $'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]\nSTOPSIGNAL SIGINT\nEXPOSE 5432\nVOLUME /var/lib/postgresql' \
        'copy-in scripts/image_test/postgres-entrypoint.sh /usr/local/bin' \
        'mv "$1"/usr/local/bin/postgres-entrypoint.sh "$1"/usr/local/bin/postgres-entrypoint' \
        'rm -rf "$1"/var/lib/postgresql/* "$1"/etc/postgresql/*'
}

# start_base NAME COMMAND...: make a base in the background (mmdebstrap mostly waits on the mirror and the
# disk, so the bases are made while other parts run); finish_base NAME VARIABLE waits and sets VARIABLE to its tag.
declare -A BASE_JOBS
start_base() {
    local name="$1"; shift
    ("$@" >"$WORK/$name.tag") &
    BASE_JOBS[$name]=$!
    BACKGROUND_PIDS+=($!)
}
finish_base() {
    wait "${BASE_JOBS[$1]}" || fail "the $1 base could not be made (log: $LOGS/base-$1)"
    printf -v "$2" '%s' "$(cat "$WORK/$1.tag")"
}

# BASE_311, BASE_313 and POSTGRES_IMAGE: the images named in the environment, the official ones with docker
# (POSTGRES_IMAGE empty: docker-compose.yml's own), or made here from Debian's packages with podman.
choose_images() {
    BASE_311="${IMAGE_TEST_BASE:-}" BASE_313="${IMAGE_TEST_BASE_313:-}" POSTGRES_IMAGE="${IMAGE_TEST_POSTGRES:-}"
    if [ "$ENGINE" = docker ]; then
        : "${BASE_311:=python:3.11-slim}" "${BASE_313:=python:3.13-slim}"
        return 0
    fi
    if has_part py313 && [ -z "$BASE_313" ]; then start_base python-trixie python_base trixie; fi
    if has_part compose && [ -z "$POSTGRES_IMAGE" ]; then start_base postgres postgres_base; fi
    if [ -z "$BASE_311" ]; then
        step "the Python 3.11 base (Debian bookworm; the other bases are made meanwhile, in the background)"
        start_base python-bookworm python_base bookworm
        finish_base python-bookworm BASE_311
    fi
}

# ---------------------------------------------------------------- helpers
# The files git tracks or would track (never .env, venvs, databases), plus decoys that must stay out of the image.
clean_context() {
    local context="$WORK/context"
    rm -rf "$context" && mkdir -p "$context"
    git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$context"
    echo "$CANARY" >"$context/.env"
    echo "SECRET_TOKEN=$CANARY" >"$context/api/.env"
    echo "$CANARY" >"$context/tweets.db"
    echo "$context"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
published_port() { "$ENGINE" port "$1" 8080 | head -n 1 | sed 's/.*://'; }
# http METHOD URL [CURL ARGS...]: prints "STATUS BODY".
http() {
    local method="$1" url="$2"; shift 2
    curl --silent --show-error --max-time 30 --output "$WORK/body" --write-out '%{http_code}' -X "$method" "$@" "$url" \
        || fail "$method $url: no answer"
    printf ' %s\n' "$(cat "$WORK/body")"
}
expect() {  # expect STATUS "ANSWER" [TEXT]: the answer has that status (and holds TEXT)
    [ "${2%% *}" = "$1" ] || fail "expected HTTP $1, got: ${2:0:500}"
    [ -z "${3:-}" ] || [[ "$2" == *"$3"* ]] || fail "expected '$3' in: ${2:0:500}"
}
image_size() { "$ENGINE" image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }
started_ns() { date -d "$("$ENGINE" inspect --format "{{.State.$2}}" "$1" | sed 's/ [A-Z]*$//')" +%s%N; }

SAMPLES=$'An image test tweet, the first one.\n====================\nAn image test tweet, the second one.\n'

# ---------------------------------------------------------------- the API image
build_api() {
    local base="$1" tag="$2" context
    context="$(clean_context)"
    build_flags "$base"
    run "build-$(basename "$tag")" "$ENGINE" build "${BUILD_FLAGS[@]}" -t "$tag" "$context"
}

test_api() {
    step "build the API image on $BASE_311"
    build_api "$BASE_311" "$API_TAG"
    say "API image: $API_TAG, $(image_size "$API_TAG")"

    step "the API image runs as a non-root user"
    local user c="$PREFIX-api"
    user="$("$ENGINE" image inspect --format '{{.Config.User}}' "$API_TAG")"
    [ -n "$user" ] && [ "${user%%:*}" != 0 ] && [ "${user%%:*}" != root ] || fail "image user is '$user'"

    step "start the API container (SQLite in /data, dry-run posting)"
    "$ENGINE" rm --force "$c" >/dev/null 2>&1 || true
    run api "$ENGINE" run --detach --name "$c" --publish 127.0.0.1::8080 \
        -e SECRET_TOKEN="$TOKEN" -e ACCOUNT=image_bot -e TWITTER_DRY_RUN=true "$API_TAG"
    [ "$("$ENGINE" exec "$c" id -u)" != 0 ] || fail "the service runs as root"
    local port base
    port="$(published_port "$c")"
    base="http://127.0.0.1:$port"
    wait_for 60 "the API answering on $base" curl --silent --max-time 2 --output /dev/null "$base/health"

    step "/health before the migrations: 503 naming the missing table"
    expect 503 "$(http GET "$base/health")" "tweets table is missing"

    step "the image's migration command (alembic upgrade head), then /health 200"
    run api "$ENGINE" exec "$c" alembic upgrade head
    expect 200 "$(http GET "$base/health")" '"ok"'

    step "upload, dry-run post and a wrong token through the container's port"
    printf '%s' "$SAMPLES" >"$WORK/samples.txt"
    expect 201 "$(http POST "$base/add_tweets_file/" -H "x-token: $TOKEN" -F "file=@$WORK/samples.txt")" '"added":2'
    expect 200 "$(http POST "$base/tweet_curated/" -H "x-token: $TOKEN")" "Dry run"
    expect 401 "$(http GET "$base/tweets/" -H "x-token: wrong-$TOKEN")"

    step "SIGTERM stops the API within 2 s"
    # Sent straight to the container's process and timed to the exit the engine recorded, so that the
    # engine's own command-line start-up is not counted.
    local pid signalled elapsed
    pid="$("$ENGINE" inspect --format '{{.State.Pid}}' "$c")"
    signalled="$(date +%s%N)"
    kill -TERM "$pid" 2>/dev/null || "$ENGINE" kill --signal TERM "$c" >/dev/null  # an engine in a VM: its pid is not ours
    timeout 10 "$ENGINE" wait "$c" >/dev/null || fail "still running 10 s after SIGTERM"
    elapsed=$((($(started_ns "$c" FinishedAt) - signalled) / 1000000))
    say "stopped ${elapsed} ms after SIGTERM"
    [ "$elapsed" -le 2000 ] || fail "took ${elapsed} ms"
    local logs
    logs="$("$ENGINE" logs "$c" 2>&1)"
    grep -q "Finished server process" <<<"$logs" || fail "uvicorn did not shut down gracefully"
    ! grep -qF "$TOKEN" <<<"$logs" || fail "the token is in the logs"
    "$ENGINE" rm "$c" >/dev/null

    step "no secret in any layer of the API image nor in its history"
    check_no_secrets "$API_TAG"
}

# Every layer, not only the final file system: a file deleted in a later layer is still shipped.
check_no_secrets() {
    local image="$1" archive="$WORK/image" found="" needles=("$CANARY")
    # The host's own CA certificates (mounted for pip during the build) must not be in the image either.
    for certificate in /usr/local/share/ca-certificates/*.crt; do
        [ -f "$certificate" ] && needles+=("$(sed -n 2p "$certificate")")
    done
    rm -rf "$archive" && mkdir -p "$archive"
    run save "$ENGINE" save -o "$archive/image.tar" "$image"
    tar -xf "$archive/image.tar" -C "$archive"
    rm "$archive/image.tar"
    while IFS= read -r layer; do
        tar -tf "$layer" >/dev/null 2>&1 || continue  # the archive's manifests and configs
        for needle in "${needles[@]}"; do
            # grep -c reads the whole layer: with -q, tar could die of SIGPIPE and pipefail would hide the match.
            if [ "$(tar -xOf "$layer" | grep -acF -e "$needle" || true)" -gt 0 ]; then found+=" '${needle:0:24}...' in $(basename "$layer")"; fi
        done
        found+="$(tar -tf "$layer" | grep -E '(^|/)(\.env|pip\.conf|[^/]*\.db)$' | sed 's/^/ file:/' | tr '\n' ' ' || true)"
    done < <(find "$archive" -type f)
    "$ENGINE" history --no-trunc "$image" | grep -E "$CANARY|pip\.conf|ca-certificates\.crt|PIP_CERT|PIP_INDEX" && found+=" history"
    rm -rf "$archive"
    [ -z "$found" ] || fail "found in the image:$found"
}

# ---------------------------------------------------------------- docker-compose.yml
# COMPOSE: the compose command for the test project, its file and the override naming the test's images.
set_compose() {
    local files=(-p "$PROJECT" --project-directory "$CONTEXT" -f "$CONTEXT/$1" -f "$WORK/compose.override.yml")
    if [ "$ENGINE" = docker ]; then COMPOSE=(docker compose "${files[@]}")
    else COMPOSE=(env "DOCKER_HOST=unix://$WORK/podman.sock" docker-compose "${files[@]}")
    fi
}

# podman runs healthchecks from systemd timers; with no systemd here, this loop stands in for them and
# notes when each container first reports healthy.
drive_healthchecks() {
    while sleep 2; do
        for name in $(podman ps --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}'); do
            if podman healthcheck run "$name" >/dev/null 2>&1 && ! grep -q "^$name " "$WORK/healthy" 2>/dev/null; then
                echo "$name $(date +%s%N)" >>"$WORK/healthy"
            fi
        done
    done
}

container_of() { "$ENGINE" ps -a --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -n 1; }

test_compose() {
    local postgres fire_time api_port base
    if [ -n "${BASE_JOBS[postgres]:-}" ]; then
        step "the Postgres image from Debian's postgresql package"
        finish_base postgres POSTGRES_IMAGE
    fi
    postgres="$POSTGRES_IMAGE"
    step "compose: the stack from docker-compose.yml, with the images built here"
    CONTEXT="$(clean_context)"
    if [ "$ENGINE" = docker ]; then set_compose docker-compose.yml
    else
        # docker-compose v1 knows no top-level `name:`; -p gives the project its (test) name anyway.
        sed '/^name:/d' "$CONTEXT/docker-compose.yml" >"$CONTEXT/docker-compose.v1.yml"
        set_compose docker-compose.v1.yml
        podman system service --time=0 "unix://$WORK/podman.sock" >>"$LOGS/podman-service" 2>&1 &
        BACKGROUND_PIDS+=($!)
        wait_for 30 "podman's API socket" curl --silent --unix-socket "$WORK/podman.sock" http://d/_ping
        drive_healthchecks 2>>"$LOGS/healthchecks" &
        BACKGROUND_PIDS+=($!)
    fi
    {
        echo "services:"
        [ -z "$postgres" ] || printf '  postgres:\n    image: %s\n' "$postgres"
        for service in migrate api scheduler; do printf '  %s:\n    image: %s\n' "$service" "$API_TAG"; done
    } >"$WORK/compose.override.yml"

    # The scheduler's first fire time: the next whole minute at least 40 s away (time to start and upload first).
    fire_time=$(( ($(date +%s) + 40 + 59) / 60 * 60 ))
    api_port="$(free_port)"
    cat >"$CONTEXT/.env" <<EOF
SECRET_TOKEN=$TOKEN
ACCOUNT=image_bot
DB_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
TWITTER_DRY_RUN=true
SCHEDULE=$(date -u -d "@$fire_time" +'%-M %-H') * * *
TIME_ZONE=Etc/UTC
API_PORT=$api_port
EOF
    base="http://127.0.0.1:$api_port"

    step "compose up: Postgres healthy, then the migration, then the API and the scheduler"
    touch "$WORK/compose-up"
    "${COMPOSE[@]}" down --volumes --timeout 5 >>"$LOGS/compose" 2>&1 || true
    run compose timeout 300 "${COMPOSE[@]}" up --detach --no-build
    check_start_order
    wait_for 60 "the API answering on $base" curl --silent --fail --max-time 2 --output /dev/null "$base/health"

    step "compose: upload, then the scheduler posts at $(date -u -d "@$fire_time" +%H:%M:%S) UTC"
    printf '%s' "$SAMPLES" >"$WORK/samples.txt"
    expect 201 "$(http POST "$base/add_tweets_file/" -H "x-token: $TOKEN" -F "file=@$WORK/samples.txt")" '"added":2'
    [ "$(date +%s)" -lt "$fire_time" ] || fail "the upload ended after the fire time"
    wait_for $((fire_time - $(date +%s) + 60)) "a post by the scheduler" \
        bash -c "curl --silent --max-time 5 -H 'x-token: $TOKEN' '$base/tweets/?status=posted' | grep -q '\"count\":1'"
    local key
    key="$(date -u -d "@$fire_time" +%Y-%m-%dT%H:%M:%SZ)"
    grep -qF "$key" <<<"$("$ENGINE" logs "$(container_of scheduler)" 2>&1)" || fail "the scheduler's log does not name the run $key"
    say "posted by the scheduler $(( $(date +%s) - fire_time )) s after the fire time"

    step "compose down, up: the tweets are still there"
    run compose "${COMPOSE[@]}" down --timeout 30
    run compose timeout 300 "${COMPOSE[@]}" up --detach --no-build
    wait_for 90 "the API answering again" curl --silent --fail --max-time 2 --output /dev/null "$base/health"
    expect 200 "$(http GET "$base/tweets/" -H "x-token: $TOKEN")" '"count":2'
    expect 200 "$(http GET "$base/tweets/?status=posted" -H "x-token: $TOKEN")" '"count":1'
    run compose "${COMPOSE[@]}" down --volumes --timeout 30
    rm -f "$WORK/compose-up"
}

check_start_order() {
    local postgres migrate api scheduler
    postgres="$(container_of postgres)" migrate="$(container_of migrate)"
    api="$(container_of api)" scheduler="$(container_of scheduler)"
    [ -n "$postgres" ] && [ -n "$migrate" ] && [ -n "$api" ] && [ -n "$scheduler" ] || fail "not all four services were created"
    [ "$("$ENGINE" inspect --format '{{.State.ExitCode}}' "$migrate")" = 0 ] || fail "the migration failed: $("$ENGINE" logs "$migrate" 2>&1 | tail -n 5)"
    local migrate_started migrate_finished healthy
    migrate_started="$(started_ns "$migrate" StartedAt)"
    migrate_finished="$(started_ns "$migrate" FinishedAt)"
    if [ -f "$WORK/healthy" ]; then
        healthy="$(awk -v name="$postgres" '$1 == name {print $2}' "$WORK/healthy")"
        [ -n "$healthy" ] && [ "$healthy" -le "$migrate_started" ] || fail "the migration started before Postgres was healthy"
    else
        say "(docker keeps no time of the first healthy check: Postgres before the migration is compose's word)"
    fi
    for service in "$api" "$scheduler"; do
        [ "$(started_ns "$service" StartedAt)" -ge "$migrate_finished" ] || fail "$service started before the migration finished"
    done
    say "order: postgres healthy -> migrate (exit 0, $(( (migrate_finished - migrate_started) / 1000000 )) ms) -> api, scheduler"
}

# ---------------------------------------------------------------- Python 3.13
test_py313() {
    if [ -n "${BASE_JOBS[python-trixie]:-}" ]; then
        step "the Python 3.13 base (Debian trixie)"
        finish_base python-trixie BASE_313
    fi
    step "the API image on Python 3.13 ($BASE_313)"
    local tag="localhost/$PREFIX-api:py3.13"
    build_api "$BASE_313" "$tag"
    local version
    version="$("$ENGINE" run --rm "$tag" python -c 'import sys; print(sys.version.split()[0])')"
    case "$version" in 3.13.*) ;; *) fail "the base has Python $version, not 3.13" ;; esac
    run py313 "$ENGINE" run --rm -e SECRET_TOKEN="$TOKEN" -e ACCOUNT=image_bot "$tag" \
        python -c 'import api.main, api.scheduler, api.post_next'
    run py313 "$ENGINE" run --rm "$tag" pip check
    say "Python $version: the API imports, pip check passes ($(image_size "$tag"))"
}

# ---------------------------------------------------------------- the start-up bench in the API image
test_startup() {
    if ! has_part api && ! has_part compose; then
        step "build the API image on $BASE_311"
        build_api "$BASE_311" "$API_TAG"
    fi
    step "the start-up bench inside the API image (this checkout's bench/ mounted read-only; ${IMAGE_TEST_BENCH_RUNS:-7} runs)"
    # The bench and the fake X come from this checkout; the app, its packages and Python from the image.
    local baseline=()
    if [ -n "${IMAGE_TEST_BENCH_BASELINE:-}" ]; then
        baseline=(-v "$(realpath "$IMAGE_TEST_BENCH_BASELINE"):/baseline:ro")
    fi
    if ! "$ENGINE" run --rm --network none --name "$PREFIX-startup" -v "$REPO:/bench:ro" "${baseline[@]}" -w /bench "$API_TAG" \
        sh -c 'exec python -m bench.bench_startup --app-dir /app --runs "$0" --venv "$(dirname "$(dirname "$(command -v uvicorn)")")" \
            ${1:+--baseline "$1"}' "${IMAGE_TEST_BENCH_RUNS:-7}" "${IMAGE_TEST_BENCH_BASELINE:+/baseline}" 2>&1 | tee "$LOGS/startup"; then
        fail "the bench failed (log: $LOGS/startup)"
    fi
}

# ---------------------------------------------------------------- the generation image
test_generator() {
    local python="$REPO/.venv/bin/python" tag="localhost/$PREFIX-generator:latest" c="$PREFIX-generator"
    step "a tiny run for the generation image (.venv's TensorFlow)"
    "$python" -c 'import tensorflow, gpt_2_simple' 2>/dev/null || fail "$python cannot import TensorFlow and gpt_2_simple: make .venv/.ml installs them (or leave generator out of IMAGE_TEST_PARTS)"
    run generator "$python" -c 'import sys; from ml.tiny import write_tiny_run; write_tiny_run(sys.argv[1], "tiny_run", sys.argv[2])' \
        "$WORK/checkpoint" "$WORK/models"
    run generator make --no-print-directory generator-context CHECKPOINT_DIR="$WORK/checkpoint" RUN_NAME=tiny_run \
        GENERATOR_CONTEXT="$WORK/generator" ENV_FILE=/dev/null

    step "build the generation image on $BASE_311 (TensorFlow)"
    build_flags "$BASE_311"
    run build-generator "$ENGINE" build "${BUILD_FLAGS[@]}" -t "$tag" "$WORK/generator"
    say "generation image: $tag, $(image_size "$tag")"

    step "the generation image answers a generation request"
    "$ENGINE" rm --force "$c" >/dev/null 2>&1 || true
    run generator "$ENGINE" run --detach --name "$c" --publish 127.0.0.1::8080 "$tag"
    local base
    base="http://127.0.0.1:$(published_port "$c")"
    wait_for 240 "the generation service's /health" curl --silent --fail --max-time 5 --output /dev/null "$base/health"
    expect 200 "$(http POST "$base/" -H 'Content-Type: application/json' -d '{"length": 5, "prefix": "hi"}')" '"text":"hi'
    "$ENGINE" rm --force --time 5 "$c" >/dev/null
}

# ---------------------------------------------------------------- main
CANARY="image-test-canary-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
TOKEN="image-test-token-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
case "$ENGINE" in
    podman) install_tools; configure_podman ;;
    docker) command -v docker >/dev/null && docker info >/dev/null 2>&1 || fail "no Docker engine answers" ;;
    *) fail "IMAGE_TEST_ENGINE must be podman or docker, not '$ENGINE'" ;;
esac
for name in $(ours); do "$ENGINE" rm --force --time 2 "$name" >/dev/null; done  # left by an interrupted run

choose_images

has_part api || has_part compose && test_api
has_part compose && test_compose
has_part py313 && test_py313
has_part generator && test_generator
has_part startup && test_startup
say "all passed: $PARTS"
echo "image-test: $(wc -w <<<"$PARTS") passed, 0 failed"
