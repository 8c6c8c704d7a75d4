#!/usr/bin/env bash
# A back-fill's local cost (BENCHMARKS.md, round 38): `byte8-ledger sync` of an events file into
# the Sage simulator (no latency), on an SQLite file or a PostgreSQL database, and the CPU an event
# of the `sync` process and, on PostgreSQL, of the database's client backends serving it.
#
#   benches/backfill_cpu.sh BIN EVENTS STATE
#
# BIN is a `byte8-ledger` binary, EVENTS a file of `gen_events` (`cargo build --release --example
# gen_events -p byte8-ledger-simulators; target/release/examples/gen_events 10000 > events.jsonl`,
# which also writes workload-policy.json in the current directory, used here), STATE an SQLite
# file (removed first) or a PostgreSQL URL whose database is dropped and created again (the
# server's superuser, e.g. 'postgres://postgres@localhost/byte8_bf?host=/work/pg'). The Sage
# limit is SAGE_REQUESTS_PER_MINUTE (default 6000000, far above what the run sends: the
# simulator's own limit is off; 0: no limiter); BENCH_SIM_ARGS goes to `byte8-ledger simulate`
# (e.g. '--latency-ms 100-150 --requests-per-minute 200': Sage's pace). Needs psql, openssl and GNU time
# (/usr/bin/time). Prints one line: outcomes, wall time, CPU an event (the `sync` process's user
# and system time; the client backends' from /proc, read every half second while `sync` runs, so
# the last half second of a backend's work may be missed), peak RSS.
#
# On PostgreSQL two more, for BENCHMARKS.md round 41: BENCH_AFTER_CONNECT_SQL, SQL run on the
# database after `connect` has migrated it and before `sync` (e.g. a column's compression set
# back to pglz, to compare with migration 0032); BENCH_WAL_CENSUS=1 prints the WAL `sync` wrote
# and its records by kind (`pg_walinspect`'s `pg_get_wal_stats`, PostgreSQL 15 or later: the
# extension is created in the server's `postgres` database), counts that do not drift with the
# machine's speed.
set -euo pipefail
bin=$1 events=$2 state=$3
port=${BENCH_SIM_PORT:-8099}
pkill -f "byte8-ledger simulate --port $port" 2>/dev/null || true
# shellcheck disable=SC2086 # BENCH_SIM_ARGS is a list of options
"$bin" simulate --port "$port" --token-ttl-secs 3600 ${BENCH_SIM_ARGS:-} >simulate.log 2>&1 &
sim=$!
trap 'kill $sim 2>/dev/null || true' EXIT
sleep 1
export SAGE_CLIENT_ID=demo-client SAGE_CLIENT_SECRET=demo-secret
export SAGE_REQUESTS_PER_MINUTE=${SAGE_REQUESTS_PER_MINUTE:-6000000}
LEDGER_MASTER_KEY=$(openssl rand -base64 32)
export LEDGER_MASTER_KEY
db=""
case $state in
    postgres://* | postgresql://*)
        db=$(printf '%s' "$state" | sed -E 's#^[a-z]+://[^/]*/([^?]*).*#\1#')
        admin=$(printf '%s' "$state" | sed -E 's#^([a-z]+://[^/]*)/[^?]*#\1/postgres#')
        psql "$admin" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
        export BYTE8_DATABASE_URL=$state
        where=()
        ;;
    *)
        rm -f "$state" "$state"-wal "$state"-shm
        where=(--state "$state")
        ;;
esac
BYTE8_REFRESH_TOKEN=demo-refresh-token "$bin" connect "${where[@]}" --business-id demo-business \
    --sage-base-url "http://127.0.0.1:$port/v3.1" --sage-token-url "http://127.0.0.1:$port/token" >connect.log
wal_from=""
if [ -n "$db" ]; then
    if [ -n "${BENCH_AFTER_CONNECT_SQL:-}" ]; then
        psql "$state" -qc "$BENCH_AFTER_CONNECT_SQL"
    fi
    if [ "${BENCH_WAL_CENSUS:-0}" = 1 ]; then
        psql "$admin" -q -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS pg_walinspect"
        wal_from=$(psql "$admin" -Atc "SELECT pg_current_wal_lsn()")
    fi
fi
/usr/bin/time -f "%U %S %e %M" -o sync.time "$bin" sync "${where[@]}" --events "$events" \
    --policy workload-policy.json >outcomes.jsonl 2>sync.log &
sync=$!
declare -A ticks=()
while kill -0 "$sync" 2>/dev/null; do
    if [ -n "$db" ]; then
        for p in $(psql "$admin" -Atc "SELECT pid FROM pg_stat_activity WHERE datname = '$db' AND backend_type = 'client backend'"); do
            t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) && ticks[$p]=$t
        done
    fi
    sleep 0.5
done
wait "$sync"
if [ -n "$wal_from" ]; then
    wal_to=$(psql "$admin" -Atc "SELECT pg_current_wal_lsn()")
    # Read only once flushed (with synchronous_commit off the last commits may still be in memory).
    until [ "$(psql "$admin" -Atc "SELECT pg_current_wal_flush_lsn() >= '$wal_to'")" = t ]; do sleep 0.2; done
    psql "$admin" -qc "SELECT round(pg_wal_lsn_diff('$wal_to', '$wal_from') / 1e6, 1) AS wal_mb" \
        -c "SELECT \"resource_manager/record_type\" AS record, count, round(combined_size / 1e6, 1) AS mb
            FROM pg_get_wal_stats('$wal_from', '$wal_to', true) WHERE count > 0 ORDER BY combined_size DESC"
fi
backends=0
for p in "${!ticks[@]}"; do backends=$((backends + ticks[$p])); done
hz=$(getconf CLK_TCK)
read -r user sys wall rss <sync.time
awk -v u="$user" -v s="$sys" -v e="$wall" -v m="$rss" -v n="$(wc -l <outcomes.jsonl)" -v b="$backends" -v hz="$hz" 'BEGIN {
    printf "outcomes %d; wall %.2f ms an event; sync CPU %.2f ms an event (user %.2f, system %.2f); client backends %.2f ms an event; peak RSS %.1f MB\n",
        n, 1000 * e / n, 1000 * (u + s) / n, 1000 * u / n, 1000 * s / n, 1000 * b / hz / n, m / 1024 }'
