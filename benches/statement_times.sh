#!/usr/bin/env bash
# What each statement of `serve` costs PostgreSQL in bench_service's measured window
# (BENCHMARKS.md, "The database profiled"): execution and planning time per event, from
# `pg_stat_statements`, nested statements (those of PL/pgSQL functions and triggers) included.
#
# The server must load the extension, e.g. started with
#   -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all \
#   -c pg_stat_statements.track_planning=on
# and have it created in the `postgres` database (`CREATE EXTENSION pg_stat_statements`; the bench
# drops its own database's schema at every run; `STATS_URL` names another). Then, with the release
# build:
#
#   benches/statement_times.sh LABEL 'postgres://postgres@localhost/byte8_bench?host=/work/pg' \
#       target/release/examples/bench_service target/release/byte8-ledger \
#       --tenants 1000 --warmup 30 --seconds 30 --drain 20
#
# The statistics are reset when the warm-up ends (the catalogue line printed, then the warm-up's
# seconds) and kept in table `pgss_LABEL` of the `postgres` database when the window ends, so that
# two builds can be compared afterwards. "Events" are the webhooks' enqueue statements in that
# time (`byte8_enqueue_bound`, or `byte8_enqueue_turn` when the webhook begins the turn, migration
# 0028). Timings are wall time inside the server, not CPU: compare runs made one after the other.
set -euo pipefail
label=$1 url=$2 bench=$3 serve=$4
shift 4
warmup=30 window=30
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
        --warmup) warmup=${args[i + 1]} ;;
        --seconds) window=${args[i + 1]} ;;
    esac
done
# Where the extension's view is read: STATS_URL, else the bench's URL with database `postgres`.
stats_url=${STATS_URL:-$(printf '%s' "$url" | sed -E 's#^([a-z]+://[^/]*)/[^?]*#\1/postgres#')}
psql_admin() { psql "$stats_url" -Atq "$@"; }
out=$(mktemp)
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
start_bench "$out" "$bench" --database-url "$url" --bin "$serve" "$@"
pid=$BENCH_PID
sleep "$warmup"
psql_admin -c 'SELECT pg_stat_statements_reset()' >/dev/null
sleep "$window"
psql_admin -c "SET client_min_messages = warning; DROP TABLE IF EXISTS pgss_$label; CREATE TABLE pgss_$label AS SELECT * FROM pg_stat_statements"
wait "$pid"
grep -E 'outcomes in|under their limit|CPU per|transactions per|back-fill bench' "$out"
rm -f "$out"
psql_admin -F ' | ' -c "
    WITH s AS (SELECT * FROM pgss_$label WHERE query NOT LIKE '%pg_stat%' AND query NOT LIKE '%pgss_%'),
         ev AS (SELECT sum(calls) AS n FROM s WHERE toplevel AND (query LIKE '%byte8_enqueue_bound(%' OR query LIKE '%byte8_enqueue_turn(%'))
    SELECT 'per event: statements ' || round((sum(total_exec_time + total_plan_time) FILTER (WHERE toplevel) / ev.n)::numeric, 3)
           || ' ms, of which planning ' || round((sum(total_plan_time) / ev.n)::numeric, 3)
           || ' ms; plans ' || round((sum(plans) / ev.n)::numeric, 2) || ' (' || ev.n || ' events)'
    FROM s, ev GROUP BY ev.n"
psql_admin -F ' | ' -c "
    WITH ev AS (SELECT sum(calls) AS n FROM pgss_$label WHERE toplevel AND (query LIKE '%byte8_enqueue_bound(%' OR query LIKE '%byte8_enqueue_turn(%'))
    SELECT round((calls / ev.n)::numeric, 2) AS per_event, round(((total_exec_time + total_plan_time) / calls)::numeric, 3) AS ms_a_call,
           plans, CASE WHEN toplevel THEN '' ELSE '(nested) ' END || left(regexp_replace(query, '\s+', ' ', 'g'), 90)
    FROM pgss_$label, ev WHERE calls > 0 AND query NOT LIKE '%pg_stat%' AND query NOT LIKE '%pgss_%'
    ORDER BY total_exec_time + total_plan_time DESC LIMIT 15"
