#!/usr/bin/env bash
# Run every fuzz target for a bounded time each (default 30 s): fuzz/run.sh [SECONDS] [TARGET...]
#
# cargo-fuzz needs nightly-only flags (-Zsanitizer); RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. Install once with `cargo install cargo-fuzz`. Corpora grow in
# fuzz/corpus/<target>/, crashes land in fuzz/artifacts/<target>/ and fail this script.
# Prints one summary line per target: executions, exec/s, corpus size, result.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-30}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(frame_decoder io_attr route_list payloads eblob_record eblob_open node_config)
fi
export RUSTC_BOOTSTRAP=1
# eblob_open writes a backend dir per input: on tmpfs it runs ~100x faster than on disk.
if [ -z "${TMPDIR:-}" ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 2; }
# Build first so the time budget is spent fuzzing (debug assertions on: overflow panics).
for t in "${TARGETS[@]}"; do cargo fuzz build --release --debug-assertions "$t"; done
failed=0
summary=()
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="$(mktemp)"
  if cargo fuzz run --release --debug-assertions "$t" -- \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      >"$log" 2>&1; then
    result=ok
  else
    result="CRASH (see fuzz/artifacts/$t)"
    failed=1
    tail -40 "$log" >&2
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  corpus=$(find "corpus/$t" -type f | wc -l)
  summary+=("$(printf '%-14s %12s execs %8s exec/s corpus %6s  %s' "$t" "$execs" "$rate" "$corpus" "$result")")
  rm -f "$log"
done
printf '%s\n' "${summary[@]}"
exit "$failed"
