#!/usr/bin/env bash
# A throwaway PostgreSQL for the test suite, so the server's store is tested on PostgreSQL too.
#
#   eval "$(scripts/postgres-test.sh)"    # sets PIPENB_TEST_POSTGRES_URL when PostgreSQL can run
#
# stdout carries `PIPENB_TEST_POSTGRES_URL=...`, or nothing when PostgreSQL is not available (the
# PostgreSQL tests are then skipped), and `PIPENB_TEST_PG_STARTED=1` when this run started the
# cluster (not when it reused a running one); every note goes to stderr.
#
#   scripts/postgres-test.sh stop         # stop the cluster (`make test` does, if it started it)
#
# - PIPENB_TEST_POSTGRES_URL already set: print it, start nothing.
# - Otherwise find initdb/pg_ctl (/usr/lib/postgresql/*/bin, then PATH); as root with apt-get,
#   install Debian's `postgresql` package when they are missing.
# - One cluster per user in /tmp/pipenb-pg-$UID (PIPENB_TEST_PG_DIR overrides), listening on
#   127.0.0.1 only (port 55432, or the next free one; PIPENB_TEST_PG_PORT overrides), trust auth
#   for loopback, with a `pipenb_test` database. Run again, it reuses the running cluster.
# - As root the cluster runs as the `postgres` system user (PostgreSQL refuses to run as root).
#
# `make test` stops the cluster when the tests end if it started it (PIPENB_TEST_PG_KEEP=1 keeps
# it running for the next run). By hand: scripts/postgres-test.sh stop
set -euo pipefail

note() { echo "postgres-test: $*" >&2; }

emit() { printf 'PIPENB_TEST_POSTGRES_URL=%q\n' "$1"; }

if [ -n "${PIPENB_TEST_POSTGRES_URL:-}" ] && [ "${1:-}" != stop ]; then
    note "using PIPENB_TEST_POSTGRES_URL from the environment"
    emit "$PIPENB_TEST_POSTGRES_URL"
    exit 0
fi

BASE=${PIPENB_TEST_PG_DIR:-/tmp/pipenb-pg-$(id -u)}
DATA=$BASE/data
RUN=$BASE/run
LOG=$BASE/server.log
DB=pipenb_test
PG_USER=postgres # the database superuser created by initdb -U

# ------------------------------------------------------------------------------ binaries
find_bindir() {
    local d best=""
    # the newest installed major version first (sort -V: 9.6 < 10 < 15)
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            best=$d
            break
        fi
    done
    if [ -z "$best" ] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        best=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
    fi
    [ -n "$best" ] && echo "$best"
}

BINDIR=$(find_bindir || true)
if [ -z "$BINDIR" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    note "PostgreSQL server binaries not found; installing Debian's postgresql package"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2; then
        note "apt-get could not install postgresql"
    fi
    BINDIR=$(find_bindir || true)
fi
if [ -z "$BINDIR" ]; then
    note "no PostgreSQL server binaries (initdb, pg_ctl): the PostgreSQL tests will be skipped"
    exit 0
fi

tool() { # a client tool: next to the server binaries, else on PATH
    if [ -x "$BINDIR/$1" ]; then echo "$BINDIR/$1"; else command -v "$1"; fi
}
PG_CTL=$BINDIR/pg_ctl
INITDB=$BINDIR/initdb
PG_ISREADY=$(tool pg_isready)
PSQL=$(tool psql)

# ------------------------------------------------------------------------------ who runs it
if [ "$(id -u)" = 0 ]; then
    RUN_AS=postgres
    if ! id "$RUN_AS" >/dev/null 2>&1; then
        note "creating the system user $RUN_AS (PostgreSQL does not run as root)"
        useradd --system --home-dir "$BASE" --shell /bin/sh "$RUN_AS"
    fi
else
    RUN_AS=""
fi

as_owner() { # run a command as the cluster's owner
    if [ -z "$RUN_AS" ]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u "$RUN_AS" -- "$@"
    else
        su "$RUN_AS" -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
}

port_in_use() { # something accepts connections on 127.0.0.1:$1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

running() { as_owner "$PG_CTL" -D "$DATA" status >/dev/null 2>&1; }

ready() { "$PG_ISREADY" -q -h 127.0.0.1 -p "$1" -U "$PG_USER" -t 1 >/dev/null 2>&1; }

if [ "${1:-}" = stop ]; then
    if [ -f "$DATA/PG_VERSION" ] && running; then
        note "stopping the cluster in $DATA"
        as_owner "$PG_CTL" -D "$DATA" -m fast -w stop >&2
    else
        note "no cluster running in $DATA"
    fi
    exit 0
fi

# ------------------------------------------------------------------------------ the cluster
STARTED=""
PORT=""
if [ -f "$DATA/PG_VERSION" ] && running && [ -f "$BASE/port" ]; then
    PORT=$(cat "$BASE/port")
    if ready "$PORT"; then
        note "reusing the cluster running in $DATA on port $PORT"
    else
        note "the cluster in $DATA does not answer on port $PORT; restarting it"
        as_owner "$PG_CTL" -D "$DATA" -m fast -w stop >&2 || true
        PORT=""
    fi
fi

if [ -z "$PORT" ]; then
    version=$("$PG_CTL" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')
    if [ -d "$DATA" ] && [ "$(cat "$DATA/PG_VERSION" 2>/dev/null)" != "$version" ]; then
        note "discarding the unusable cluster in $DATA"
        rm -rf "$DATA"
    fi
    mkdir -p "$BASE" "$RUN"
    chmod 700 "$BASE"
    [ -n "$RUN_AS" ] && chown -R "$RUN_AS" "$BASE"
    if [ ! -d "$DATA" ]; then
        note "creating a cluster in $DATA"
        as_owner "$INITDB" -D "$DATA" -U "$PG_USER" --auth=trust --encoding=UTF8 --locale=C \
            --no-sync >"$BASE/initdb.log" 2>&1 || {
            cat "$BASE/initdb.log" >&2
            note "initdb failed"
            exit 1
        }
        # loopback only, trust: a throwaway cluster for tests, reachable from this host only
        as_owner sh -c "cat > '$DATA/pg_hba.conf'" <<EOF
local   all all              trust
host    all all 127.0.0.1/32 trust
EOF
        as_owner sh -c "cat >> '$DATA/postgresql.conf'" <<EOF

# pipenb tests: loopback only, speed over durability
listen_addresses = '127.0.0.1'
unix_socket_directories = '$RUN'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
    fi
    PORT=${PIPENB_TEST_PG_PORT:-55432}
    while port_in_use "$PORT"; do
        PORT=$((PORT + 1))
    done
    note "starting PostgreSQL $version on 127.0.0.1:$PORT"
    if ! as_owner "$PG_CTL" -D "$DATA" -l "$LOG" -o "-p $PORT" -w -t 60 start >&2; then
        tail -n 30 "$LOG" >&2 || true
        note "PostgreSQL did not start"
        exit 1
    fi
    echo "$PORT" >"$BASE/port"
    STARTED=1
fi

for _ in $(seq 1 300); do
    ready "$PORT" && break
    sleep 0.1
done
if ! ready "$PORT"; then
    tail -n 30 "$LOG" >&2 || true
    note "PostgreSQL on port $PORT is not ready"
    exit 1
fi

psql_admin() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U "$PG_USER" -d postgres "$@"; }
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE $DB" >&2
fi

emit "postgresql://$PG_USER@127.0.0.1:$PORT/$DB"
[ -z "$STARTED" ] || echo "PIPENB_TEST_PG_STARTED=1"
