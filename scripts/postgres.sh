#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and the multi-host demo, under
# build/postgres: installs Debian's `postgresql` package when it is missing,
# creates the cluster once, starts it on a local port (STEPWISE_PG_PORT,
# default 55432) and creates the database `stepwise`. Idempotent: when the
# cluster runs already it only prints the URL. Prints the store URL on stdout;
# everything else goes to stderr.
#   scripts/postgres.sh         start (or find) the cluster, print its URL
#   scripts/postgres.sh stop    stop it
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
port=${STEPWISE_PG_PORT:-55432}
dir="$root/build/postgres"

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true; }
bin=$(find_bin)
if [ -z "$bin" ]; then
    echo "installing postgresql (Debian package)" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bin=$(find_bin)
fi

# PostgreSQL refuses to run as root: run it as the package's `postgres` user.
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

mkdir -p "$dir"
if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    # A checkout under a directory the `postgres` user cannot enter (e.g.
    # /root): the cluster lives in /var/tmp instead, one per checkout.
    if ! runuser -u postgres -- test -w "$dir"; then
        dir="/var/tmp/stepwise-postgres-$(printf '%s' "$root" | md5sum | cut -c1-12)"
        mkdir -p "$dir" && chown postgres "$dir"
    fi
fi

if [ "${1:-}" = stop ]; then
    [ -f "$dir/data/PG_VERSION" ] && as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast stop >&2 || true
    exit 0
fi

if [ ! -f "$dir/data/PG_VERSION" ]; then
    echo "creating a PostgreSQL cluster in $dir/data" >&2
    as_postgres "$bin/initdb" -D "$dir/data" -A trust -U stepwise --encoding UTF8 > "$dir/initdb.log"
fi
if ! as_postgres "$bin/pg_ctl" -D "$dir/data" status > /dev/null 2>&1; then
    # Something else listens there (often another checkout's cluster): say
    # so, instead of PostgreSQL's "could not start server".
    if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
        echo "port $port is taken by another process (another checkout's cluster? its scripts/postgres.sh stop ends it); or set STEPWISE_PG_PORT" >&2
        exit 1
    fi
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=128MB" \
        start >&2
fi
if ! as_postgres "$bin/psql" -h 127.0.0.1 -p "$port" -U stepwise -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'stepwise'" | grep -q 1; then
    as_postgres "$bin/createdb" -h 127.0.0.1 -p "$port" -U stepwise stepwise
fi
echo "postgres://stepwise@127.0.0.1:$port/stepwise"
