# Shared by the bench scripts (sourced): starting `bench_service` and waiting for its window.

# start_bench REPORT COMMAND...: kills stray `serve` processes, starts COMMAND (a `bench_service`
# run) in the background with its output in REPORT, sets BENCH_PID, and returns once the report's
# `catalogue:` line is printed (the catalogue is synced: the warm-up begins). A program that ends
# before then has its report printed and the script exits.
start_bench() {
    local report=$1
    shift
    pkill -9 -f "byte8-ledger serve" 2>/dev/null || true
    "$@" >"$report" 2>&1 &
    BENCH_PID=$!
    until grep -q '^catalogue:' "$report"; do
        kill -0 "$BENCH_PID" 2>/dev/null || { cat "$report"; exit 1; }
        sleep 1
    done
}
