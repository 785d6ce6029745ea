#!/usr/bin/env bash
# The soak (bridge/tests/soak.rs): the bridge for a long run at the tutorial's rate with uplink
# cuts, two SIGTERM restarts and a kill -9, then every reading, aggregate, counter, memory and
# file-descriptor figure checked. Installs the test tools once (scripts/tools.sh).
#   scripts/soak.sh                                     # 1 hour, 10,000 sensors x 4 readings/s
#   SOAK_SECONDS=180 scripts/soak.sh                    # the 3-minute version CI runs
#   SOAK_SENSORS=1000 SOAK_RATE=2 SOAK_SECONDS=600 scripts/soak.sh
# SOAK_REPORT=FILE also writes the figures to FILE; SOAK_KEEP=1 keeps the run's directory (the
# bridge's log, its exit summaries) when the soak passes, as it always is when it fails.
# Built with --release (a soak measures the binary users run); SOAK_PROFILE=dev uses the test
# build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools.sh
profile=(--release)
[ "${SOAK_PROFILE:-release}" = dev ] && profile=()
exec cargo test "${profile[@]}" --locked -p edge-bridge --test soak -- --ignored --nocapture
