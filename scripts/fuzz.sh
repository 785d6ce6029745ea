#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the parsers that read bytes from outside.
#   scripts/fuzz.sh                      # every target for 30 s each (CI runs 20 s each)
#   FUZZ_SECONDS=3600 scripts/fuzz.sh decode
#   FUZZ_RUNS=10000000 scripts/fuzz.sh pipeline
# Targets are in fuzz/fuzz_targets/; seeds in fuzz/corpus/<target>/seed-*; what the fuzzer adds
# to the corpus stays out of git, and a crash is written to fuzz/artifacts/<target>/ (add it as
# a regression test beside the code it broke, then fix the code).
# No sanitizer (-s none): the code under test is safe Rust, so libFuzzer's own checks (panics,
# hangs, memory limit) are what finds bugs there, and AddressSanitizer cannot link against the C
# libraries the bridge's crate builds (librdkafka and zstd). Twice the executions per second.
# cargo-fuzz needs a nightly compiler's flags: RUSTC_BOOTSTRAP=1 lets the stable toolchain take
# them. cargo-fuzz itself is built once into $EDGE_TOOLS_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export EDGE_TOOLS_DIR="${EDGE_TOOLS_DIR:-$HOME/.cache/edge-bridge-tools}"
CARGO_FUZZ_VERSION=0.13.2
if ! "$EDGE_TOOLS_DIR/bin/cargo-fuzz" --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: building cargo-fuzz $CARGO_FUZZ_VERSION into $EDGE_TOOLS_DIR (once)" >&2
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$EDGE_TOOLS_DIR" --quiet
fi
export PATH="$EDGE_TOOLS_DIR/bin:$PATH" RUSTC_BOOTSTRAP=1
# The fuzz crate has its own target directory: its instrumented builds share nothing with the
# workspace's.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/fuzz/target}"

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  list=$(cd fuzz && cargo fuzz list)
  mapfile -t targets <<<"$list"
fi
if [ "${#targets[@]}" -eq 0 ] || [ -z "${targets[0]}" ]; then
  echo "fuzz: no fuzz targets found in fuzz/" >&2
  exit 1
fi
limit=(-max_total_time="${FUZZ_SECONDS:-30}")
[ -n "${FUZZ_RUNS:-}" ] && limit=(-runs="$FUZZ_RUNS")
for t in "${targets[@]}"; do
  echo "== fuzz $t (${limit[*]})"
  mkdir -p "fuzz/corpus/$t"
  log="${TMPDIR:-/tmp}/fuzz-$t.log"
  status=0
  (cd fuzz && cargo fuzz run -s none "$t" "corpus/$t" -- "${limit[@]}" -print_final_stats=1) >"$log" 2>&1 || status=$?
  grep -a -E '^(stat::number_of_executed_units|stat::new_units_added|.*(ERROR|panicked|SUMMARY)|Done)' "$log" || true
  echo "fuzz $t: corpus $(find "fuzz/corpus/$t" -type f | wc -l) inputs; log $log"
  if [ "$status" -ne 0 ]; then
    echo "fuzz $t: FAILED (exit $status); the crashing input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
