#!/bin/sh
# Entry point of make image-test's stand-in for the official postgres image, built from Debian's
# postgresql package (CI reaches no image registry). It honours what docker-compose.yml gives the
# official one: POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB on first start, data under
# /var/lib/postgresql/<major>/docker (the volume is /var/lib/postgresql), password auth over TCP.
set -eu
major="$(ls /usr/lib/postgresql)"
bin="/usr/lib/postgresql/$major/bin"
PGDATA="/var/lib/postgresql/$major/docker"
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
# setpriv execs the command itself (no parent left waiting), so postgres is PID 1 and gets the stop signal.
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres /var/lib/postgresql "/var/lib/postgresql/$major" "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password_file="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
    chown postgres "$password_file"
    as_postgres "$bin/initdb" --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$password_file" \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        as_postgres "$bin/pg_ctl" --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait --silent start
        echo 'CREATE DATABASE :"db"' | as_postgres psql --no-psqlrc --username="$POSTGRES_USER" --dbname=postgres \
            --quiet --set=ON_ERROR_STOP=1 --set=db="$POSTGRES_DB"
        as_postgres "$bin/pg_ctl" --pgdata="$PGDATA" --mode=fast --wait --silent stop
    fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$PGDATA" -c listen_addresses='*'
