#!/usr/bin/env bash
# Every check that gates a change, in order:
#   1. formatting (cargo fmt --check)
#   2. lints (cargo clippy, warnings are errors; --all-features so the peer
#      benchmarks behind zrpc-benches' "peers" feature are checked too)
#   3. the API docs build without warnings (broken links are errors)
#   4. all tests: unit, transition, legacy, test vectors, property, model-based,
#      allocation-count and doc tests (cargo test --workspace), with the
#      people tests on both stores (scripts/with-postgres.sh installs
#      Debian's postgresql when missing and runs a throwaway server), and
#      the hyper and axum mounts (zrpc-tokio's "hyper" and "axum" features)
#   5. examples/own-service: a crate of its own (only zrpc-tokio and
#      zrpc-build as dependencies, a proto with tricky message names) built
#      and run, all four call kinds
#   6. the TypeScript client (clients/js): installs Chromium (Debian package)
#      and its npm packages from the lockfile if missing, then type checks,
#      lint and format (biome), generated code and the bundled web app up to
#      date, the bundle size bound, and its tests: the protocol alone, the
#      test vectors, a hostile fake server, Node against the real server,
#      and the web app in headless Chromium
#   7. the rolling restart: scripts/rolling-restart.sh (installs Debian's
#      nginx and postgresql when missing) runs 3 instances behind nginx on
#      one PostgreSQL and restarts each under mixed load: no failed unary
#      call, every write in the database exactly once
#   8. the benchmarks build (cargo bench --no-run), so they cannot rot
#   9. a fuzz smoke: each cargo-fuzz target (frame_decode, connection,
#      handshake) for FUZZ_SECONDS (default 30) on
#      nightly; installs cargo-fuzz once if it is missing
set -euo pipefail
cd "$(dirname "$0")/.."
# One build from scratch: incremental caches (2.8 GB of target/) would
# never be reused.
export CARGO_INCREMENTAL=0

echo "== fmt";    cargo fmt --all -- --check
cargo fmt --manifest-path examples/own-service/Cargo.toml -- --check
echo "== clippy"; cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== docs";   RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== test (the people tests on SQLite and on a throwaway PostgreSQL)"
# Bounded: a test that hangs fails the run in 20 minutes (cargo names it
# after 60 s) instead of holding CI to its limit.
ZRPC_REQUIRE_POSTGRES=1 bash scripts/with-postgres.sh timeout 1200 cargo test --workspace
timeout 600 cargo test -p zrpc-tokio --features axum --test axum_mount --test hyper_mount
echo "== own service (a crate outside the workspace, depending on zrpc as a user's does)"
CARGO_TARGET_DIR="$PWD/target" cargo run --quiet --locked --manifest-path examples/own-service/Cargo.toml
echo "== javascript"
cargo build -p zrpc-cli
bash scripts/setup-js.sh
(cd clients/js && npm run check && node scripts/size.mjs --max=12900 && npm test)
echo "== rolling restart (3 instances behind nginx on one PostgreSQL, each restarted under load)"
cargo build -p zrpc-cli --example cluster
ZRPC_BIN="$PWD/target/debug/zrpc" CLUSTER_BIN="$PWD/target/debug/examples/cluster" bash scripts/rolling-restart.sh 8
echo "== bench build"; cargo bench --workspace --no-run

echo "== fuzz smoke"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
log=$(mktemp)
for target in frame_decode connection handshake envelope; do
  if ! cargo +nightly fuzz run "$target" -- -max_total_time="${FUZZ_SECONDS:-30}" -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -60 "$log"
    echo "fuzz target $target failed (crash input saved under fuzz/artifacts/$target/)"
    exit 1
  fi
  echo "$target: $(grep -E '^Done' "$log")"
done
rm -f "$log"
echo "== all checks passed"
