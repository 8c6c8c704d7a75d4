#!/usr/bin/env bash
# A profile-guided build of `byte8-ledger` (BENCHMARKS.md, round 35): the service's own busy hour
# teaches LLVM which paths are hot, and the release build lays out and inlines the code for them.
#
#   benches/pgo.sh DATABASE_URL [OUT]
#
# DATABASE_URL is a PostgreSQL database the training run may drop and fill (as `bench_service`
# does); OUT is where the optimised binary goes [target/pgo/byte8-ledger]. Needs rustc's own
# `llvm-profdata` (`rustup component add llvm-tools`: a profile is read only by the LLVM that
# wrote its format, so a distribution's `llvm-profdata` of another version will not do).
#
# Steps, each printed as it starts:
#   1. `byte8-ledger` built with instrumentation (`-Cprofile-generate`), in target/pgo/gen;
#   2. training: `bench_service` drives that build's `serve` with 300 tenants at the busy hour's
#      mix on DATABASE_URL (webhooks, the Sage simulator, callbacks; SIGTERM at the end, which
#      writes the profile), then `byte8-ledger demo` runs the command's own sync once;
#   3. the profiles merged (`llvm-profdata merge`);
#   4. `byte8-ledger` built with them (`-Cprofile-use`), in target/pgo/use, and copied to OUT.
#
# The release profile's whole-program LTO applies to both builds. The profile is the code's as it
# is now: build again after a change (a function whose code changed gets no profile, and LLVM
# treats it as it would without one). `RUSTFLAGS` is set here, so a linker chosen in a cargo
# config's `rustflags` is not used for these builds. cargo-pgo (crates.io) does the same steps
# for a project that prefers a tool to this script.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
url=${1:?usage: benches/pgo.sh DATABASE_URL [OUT]}
out=${2:-$root/target/pgo/byte8-ledger}
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
    echo "no llvm-profdata in rustc's sysroot: rustup component add llvm-tools" >&2
    exit 1
fi
data="$root/target/pgo/data"
rm -rf "$data"
mkdir -p "$data"
cd "$root"

echo "== 1. the instrumented build"
RUSTFLAGS="-Cprofile-generate=$data" cargo build --release --bin byte8-ledger --target-dir target/pgo/gen
cargo build --release --example bench_service -p byte8-ledger-service --features postgres

echo "== 2. training: the service at the busy hour, then the demo"
target/release/examples/bench_service --database-url "$url" --bin target/pgo/gen/release/byte8-ledger \
    --tenants 300 --warmup 20 --seconds 40 --drain 20
demo_dir=$(mktemp -d)
(cd "$demo_dir" && "$root/target/pgo/gen/release/byte8-ledger" demo > /dev/null)
rm -rf "$demo_dir"
ls "$data"/*.profraw > /dev/null

echo "== 3. the profiles merged"
"$profdata" merge -o "$data/merged.profdata" "$data"/*.profraw

echo "== 4. the build that uses them"
RUSTFLAGS="-Cprofile-use=$data/merged.profdata" cargo build --release --bin byte8-ledger --target-dir target/pgo/use
mkdir -p "$(dirname "$out")"
cp target/pgo/use/release/byte8-ledger "$out"
echo "profile-guided build: $out"
