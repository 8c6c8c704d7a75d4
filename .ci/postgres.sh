# Sourced by .ci/run (bash): a throwaway PostgreSQL server for the PostgreSQL store's tests.
#
#   byte8_pg_start   installs Debian's `postgresql` if no server binaries are found, makes a new
#                    cluster in a temporary directory (as the `postgres` user when running as
#                    root: initdb refuses root), starts it listening on a unix socket in that
#                    directory only (no TCP port, so it never clashes with another server),
#                    creates the database `byte8_test` and exports BYTE8_TEST_DATABASE_URL.
#                    When BYTE8_TEST_DATABASE_URL is already set it does nothing and uses it.
#   byte8_pg_stop    stops that server and removes its directory (safe to call twice).
#
# A developer can use it too:
#   source .ci/postgres.sh && byte8_pg_start && cargo test --all-features; byte8_pg_stop

BYTE8_PG_DIR=""
BYTE8_PG_BIN=""
BYTE8_PG_RUN_AS=()

# The newest installed server's bin directory (Debian: /usr/lib/postgresql/<major>/bin), if any.
byte8_pg_find_bin() {
    local dir best=""
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] || continue
        if [ -z "$best" ] || [ "$(basename "$(dirname "$dir")")" -gt "$(basename "$(dirname "$best")")" ] 2>/dev/null; then
            best="$dir"
        fi
    done
    if [ -z "$best" ] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        best="$(dirname "$(command -v initdb)")"
    fi
    printf '%s' "$best"
}

byte8_pg_start() {
    if [ -n "${BYTE8_TEST_DATABASE_URL:-}" ]; then
        echo "== PostgreSQL: using BYTE8_TEST_DATABASE_URL from the environment"
        return 0
    fi
    BYTE8_PG_BIN="$(byte8_pg_find_bin)"
    if [ -z "$BYTE8_PG_BIN" ]; then
        echo "== PostgreSQL: no server found, installing Debian's postgresql"
        local sudo=()
        if [ "$(id -u)" -ne 0 ]; then sudo=(sudo -n); fi
        ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends postgresql >/dev/null
        BYTE8_PG_BIN="$(byte8_pg_find_bin)"
    fi
    if [ -z "$BYTE8_PG_BIN" ]; then
        echo "PostgreSQL server binaries not found after installing postgresql" >&2
        return 1
    fi

    BYTE8_PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/byte8-pg.XXXXXX")"
    BYTE8_PG_RUN_AS=()
    if [ "$(id -u)" -eq 0 ]; then
        # initdb and postgres refuse to run as root: run them as an unprivileged user.
        local user=postgres
        if ! id -u "$user" >/dev/null 2>&1; then
            user=byte8pg
            id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
        fi
        chown "$user" "$BYTE8_PG_DIR"
        BYTE8_PG_RUN_AS=(runuser -u "$user" --)
    fi

    echo "== PostgreSQL: starting a throwaway server ($("$BYTE8_PG_BIN/postgres" --version)) in $BYTE8_PG_DIR"
    (cd / && ${BYTE8_PG_RUN_AS[@]+"${BYTE8_PG_RUN_AS[@]}"} "$BYTE8_PG_BIN/initdb" -D "$BYTE8_PG_DIR/data" \
        -U postgres -A trust -E UTF8 --no-locale --no-sync >"$BYTE8_PG_DIR/initdb.log" 2>&1) || {
        cat "$BYTE8_PG_DIR/initdb.log" >&2
        return 1
    }
    # Unix socket in the cluster's own directory, no TCP listener; durability is not needed here.
    (cd / && ${BYTE8_PG_RUN_AS[@]+"${BYTE8_PG_RUN_AS[@]}"} "$BYTE8_PG_BIN/pg_ctl" -D "$BYTE8_PG_DIR/data" \
        -l "$BYTE8_PG_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses='' -k $BYTE8_PG_DIR -c fsync=off -c synchronous_commit=off -c max_connections=200" \
        start >/dev/null) || {
        cat "$BYTE8_PG_DIR/server.log" >&2
        return 1
    }
    (cd / && ${BYTE8_PG_RUN_AS[@]+"${BYTE8_PG_RUN_AS[@]}"} "$BYTE8_PG_BIN/createdb" -h "$BYTE8_PG_DIR" -U postgres byte8_test)
    export BYTE8_TEST_DATABASE_URL="postgres://postgres@localhost/byte8_test?host=$BYTE8_PG_DIR"
    echo "== PostgreSQL: BYTE8_TEST_DATABASE_URL=$BYTE8_TEST_DATABASE_URL"
}

byte8_pg_stop() {
    if [ -n "$BYTE8_PG_DIR" ] && [ -d "$BYTE8_PG_DIR" ]; then
        if [ -f "$BYTE8_PG_DIR/data/postmaster.pid" ]; then
            (cd / && ${BYTE8_PG_RUN_AS[@]+"${BYTE8_PG_RUN_AS[@]}"} "$BYTE8_PG_BIN/pg_ctl" -D "$BYTE8_PG_DIR/data" \
                -m fast -w -t 60 stop >/dev/null 2>&1) || true
        fi
        rm -rf "$BYTE8_PG_DIR"
    fi
    BYTE8_PG_DIR=""
}
