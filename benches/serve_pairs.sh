#!/usr/bin/env bash
# Two builds of `serve` measured at the same time (BENCHMARKS.md, round 34): each round runs two
# `bench_service` programs at once, one a build, each with half the tenants on a database of its
# own, and prints each build's CPU an event and their ratio. The host this project is measured on
# moves a build's figure by ±30 % from one two-minute run to the next (round 33's six interleaved
# pairs); two builds measured in the same minutes share the host's state, so their ratio holds
# still where their figures do not.
#
#   benches/serve_pairs.sh ROUNDS BENCH SERVE_A SERVE_B URL_1 URL_2 [bench_service options]
#
# BENCH is one `bench_service` binary (the load program, the same for both builds), SERVE_A and
# SERVE_B the two `byte8-ledger` binaries, URL_1 and URL_2 two PostgreSQL databases on one server
# (the bench drops each one's schema at every run). The builds swap databases every round. The
# options go to both programs; the default is `--tenants 500 --warmup 30 --seconds 60 --drain 20`
# (two halves of round 33's 1,000 tenants at 2 events a minute each, with one back-filling
# business each). Each program's full report is kept in `serve_pairs.N.{a,b}.txt` of the current
# directory. Both programs start at once, and each syncs its catalogue before its window, so the
# windows line up within a few seconds (the catalogue lines say when each began). Each report's
# figure for the whole PostgreSQL server counts both programs' work (it reads every process of the
# server): compare the `serve` and client-backend figures, which are each program's own.
set -euo pipefail
rounds=$1 bench=$2 serve_a=$3 serve_b=$4 url_1=$5 url_2=$6
shift 6
options=("$@")
if [ ${#options[@]} -eq 0 ]; then
    options=(--tenants 500 --warmup 30 --seconds 60 --drain 20)
fi

# The report's "CPU per event: serve processes / PostgreSQL backends" figures, as "SERVE BACKENDS".
cpu_of() {
    sed -nE 's/^\| CPU per event: serve processes \/ PostgreSQL backends \| \*\*([0-9.]+) ms\*\* \/ ([0-9.]+) ms.*/\1 \2/p' "$1"
}

printf '| round | UTC | A: serve / backends (ms an event) | B: serve / backends | serve A ÷ B |\n|---:|---|---:|---:|---:|\n'
for ((round = 1; round <= rounds; round++)); do
    if ((round % 2 == 1)); then url_a=$url_1 url_b=$url_2; else url_a=$url_2 url_b=$url_1; fi
    started=$(date -u +%H:%M)
    "$bench" --database-url "$url_a" --bin "$serve_a" "${options[@]}" >"serve_pairs.$round.a.txt" 2>&1 &
    pid_a=$!
    "$bench" --database-url "$url_b" --bin "$serve_b" "${options[@]}" >"serve_pairs.$round.b.txt" 2>&1 &
    pid_b=$!
    wait "$pid_a" "$pid_b"
    read -r serve_a_ms backends_a_ms < <(cpu_of "serve_pairs.$round.a.txt")
    read -r serve_b_ms backends_b_ms < <(cpu_of "serve_pairs.$round.b.txt")
    ratio=$(awk -v a="$serve_a_ms" -v b="$serve_b_ms" 'BEGIN { printf "%.2f", a / b }')
    printf '| %d | %s | %s / %s | %s / %s | %s |\n' "$round" "$started" \
        "$serve_a_ms" "$backends_a_ms" "$serve_b_ms" "$backends_b_ms" "$ratio"
done
