#!/usr/bin/env bash
# Heap allocations an event in `serve` at the busy hour (BENCHMARKS.md, round 37), and where they
# come from. Uprobes on mimalloc's entry points count every allocation the serve process makes in
# a window of `bench_service`'s measured minute; the events are the runs created in that window.
# A second, shorter window records each allocation's call stack.
#
#   benches/alloc_census.sh OUT BENCH SERVE DATABASE_URL [bench_service options]
#
# SERVE must be a build with its symbol table and frame pointers (the stacks are walked by frame
# pointer), built e.g. with
#
#   CARGO_PROFILE_RELEASE_STRIP=none RUSTFLAGS="-C force-frame-pointers=yes" \
#       cargo build --release --bin byte8-ledger
#
# BENCH is a `bench_service` binary, DATABASE_URL its database (wiped at every run). Needs `perf`
# (Debian's linux-perf) and root, for the probes. The options go to `bench_service`; the default
# is `--tenants 1000 --warmup 30 --seconds 60 --drain 20`. Writes OUT/bench.txt (the bench's
# report), OUT/stat.txt (the counts over 15 s), OUT/events.txt (the runs created in those 15 s),
# OUT/perf.data (10 s of stacks) and OUT/callers.txt, and prints the allocations an event.
# The counts do not depend on the machine's speed the way CPU does: they are what the code asks of
# the allocator for the bench's mix of events. The probes slow `serve` down: its CPU figures in
# OUT/bench.txt mean nothing.
set -euo pipefail
out=$1 bench=$2 serve=$3 url=$4
shift 4
options=("$@")
if [ ${#options[@]} -eq 0 ]; then
    options=(--tenants 1000 --warmup 30 --seconds 60 --drain 20)
fi
mkdir -p "$out"

# A probe at a symbol's address: `perf probe` takes a file offset, and the text segment of a
# position-independent executable is loaded one page above its file offset (readelf -l).
probe() {
    local name=$1 sym=$2 addr seg_vaddr seg_offset
    addr=$(nm "$serve" | awk -v s="$sym" '$3 == s && !found {print $1; found = 1}')
    [ -n "$addr" ] || { echo "no symbol $sym in $serve (a build with its symbol table is needed)" >&2; exit 1; }
    read -r seg_offset seg_vaddr < <(readelf -lW "$serve" | awk '$1 == "LOAD" && $8 == "E" && !found {print $2, $3; found = 1}')
    perf probe -q -x "$serve" -a "$name=$(printf '0x%x' $((0x$addr - seg_vaddr + seg_offset)))"
}
perf probe -q -d 'probe_byte8:*' 2>/dev/null || true
probe mal mi_malloc_aligned
probe zal mi_zalloc_aligned
probe real mi_realloc_aligned
events=probe_byte8:mal,probe_byte8:zal,probe_byte8:real

# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
start_bench "$out/bench.txt" "$bench" --database-url "$url" --bin "$serve" "${options[@]}"
pid=$BENCH_PID
sleep 35
serve_pid=$(pgrep -f "byte8-ledger serve" | head -1)
from=$(psql "$url" -Atc 'SELECT now()')
perf stat -e "$events" -p "$serve_pid" -- sleep 15 >"$out/stat.txt" 2>&1
to=$(psql "$url" -Atc 'SELECT now()')
psql "$url" -Atc "SELECT count(*) FROM runs WHERE created_at >= '$from' AND created_at < '$to'" >"$out/events.txt"
perf record -q -e "$events" -g -p "$serve_pid" -o "$out/perf.data" -- sleep 10 >/dev/null 2>&1
wait "$pid"
perf probe -q -d 'probe_byte8:*' 2>/dev/null || true

n=$(cat "$out/events.txt")
allocs=$(awk '/probe_byte8:(mal|zal|real)/ {gsub(",", "", $1); s += $1} END {print s}' "$out/stat.txt")
echo "allocations (malloc, zalloc, realloc) in 15 s: $allocs; events: $n; an event: $(awk -v a="$allocs" -v n="$n" 'BEGIN {printf "%.0f", a / n}')"
# The first frame of the crate's own code above each allocation, by share of the samples.
perf script -i "$out/perf.data" -F ip,sym 2>/dev/null | awk '
    /^$/ { if (seen) { total++; if (ours != "") count[ours]++; else count["(none of ours)"]++ } seen = 0; ours = ""; next }
    { seen = 1; if (ours == "" && $0 ~ /byte8_ledger/) { $1 = ""; sub(/::h[0-9a-f]+$/, ""); ours = substr($0, 2) } }
    END { for (k in count) printf "%6.2f %%  %s\n", 100 * count[k] / total, k }' | sort -rn | head -40 >"$out/callers.txt"
echo "where they come from (first frame of the crate's code): $out/callers.txt"
