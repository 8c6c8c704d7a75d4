#!/usr/bin/env bash
# The webhook's enqueue statement, before and after migration 0027 (BENCHMARKS.md, round 31):
# `byte8_enqueue_bound` (three nested PL/pgSQL functions) against `byte8_enqueue_checked` (one),
# and `byte8_enqueue_once` against `byte8_enqueue_checked` without the binding check, each a new
# run with a new replay key, one client, prepared statements, in alternation so that both see
# the same machine and the same table sizes.
#
#   benches/enqueue_pgbench.sh 'postgres://postgres@localhost/byte8_main?host=/work/pg' [ROUNDS] [SECONDS]
#
# The database must be migrated to 0027 or later (a test or `serve` run against it does that).
# It writes runs of business `pgbench-enqueue` and replay keys `pgbench-enqueue-…`, and deletes
# them (and its binding) at the end. Prints each run's mean latency (pgbench's, client round
# trip included) and the means of each variant.
set -euo pipefail
url=$1 rounds=${2:-6} seconds=${3:-6}
pgbench=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | tail -1)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
scope=pgbench-enqueue tenant=pgbench-enqueue-t
cleanup() {
    psql "$url" -q -c "DELETE FROM runs WHERE scope = '$scope'" \
        -c "DELETE FROM replay_cache WHERE key LIKE '$scope-%'" -c "DELETE FROM bindings WHERE tenant_id = '$tenant'"
}
cleanup
psql "$url" -q -c "INSERT INTO bindings (tenant_id, scope, magento_base_url, api_key, policy, status, \
    magento_connection_status, paired_at, created_at, updated_at) \
    VALUES ('$tenant', '$scope', 'http://magento.invalid', 'unused', '{}', 'active', 'active', now(), now(), now())"
version=$(psql "$url" -Atc "SELECT xmin::text FROM bindings WHERE tenant_id = '$tenant'")
# One script a variant: the function, and its leading arguments (the binding version, if any).
write() {
    cat >"$dir/$1.sql" <<EOF
\set n random(1, 2000000000)
SELECT kind FROM $2 '$scope-$1-' || :n, 4000000000, 1, '$scope', 'invoice.created:' || :n, '$tenant', 'fp',
    false, 'invoice.created', 1, '\x00'::bytea, NULL, now(), NULL);
EOF
}
write bound "byte8_enqueue_bound($version,"
write checked_bound "byte8_enqueue_checked($version,"
write once "byte8_enqueue_once("
write checked_once "byte8_enqueue_checked(NULL,"
for ((i = 0; i < rounds; i++)); do
    for v in bound checked_bound once checked_once; do
        ms=$("$pgbench" -n -M prepared -T "$seconds" -c 1 -f "$dir/$v.sql" "$url" 2>&1 | sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p')
        echo "$v $ms"
    done
done | tee "$dir/runs" | awk '{ printf "%-14s %s ms\n", $1, $2 }'
awk '{ s[$1] += $2; n[$1]++ } END { for (v in s) printf "mean %-14s %.3f ms\n", v, s[v] / n[v] }' "$dir/runs" | sort
cleanup
