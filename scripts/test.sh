#!/usr/bin/env bash
# The test command: installs the test tools once (Mosquitto, tansu; see scripts/tools.sh),
# then runs every test of the workspace. Integration tests start their own brokers on free
# local ports and stop them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools.sh
cargo test --workspace --locked "$@"
