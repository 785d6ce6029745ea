#!/usr/bin/env bash
# Installs what the tests and the demo need, once, and reuses it afterwards.
#   - Debian packages: a C toolchain and OpenSSL headers for librdkafka, Mosquitto as the external MQTT broker, and
#     Chromium for the headless test of the bridge's status page.
#   - tansu, a Kafka-API broker from crates.io, as the local stand-in for Redpanda. Building it
#     takes about 8 minutes on 2 cores, so it is cached under $EDGE_TOOLS_DIR.
# Source it (`. scripts/tools.sh`) to get EDGE_TOOLS_DIR and TANSU_BIN exported.
set -euo pipefail

export EDGE_TOOLS_DIR="${EDGE_TOOLS_DIR:-$HOME/.cache/edge-bridge-tools}"
TANSU_VERSION=0.6.0
export TANSU_BIN="$EDGE_TOOLS_DIR/bin/tansu"
mkdir -p "$EDGE_TOOLS_DIR"

apt_packages=(build-essential pkg-config cmake libssl-dev mosquitto mosquitto-clients python3-venv chromium)
. "$(dirname "${BASH_SOURCE[0]}")/lib/debian.sh"
debian_install tools "${apt_packages[@]}"

if [ ! -x "$TANSU_BIN" ] || ! "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "tools: building tansu $TANSU_VERSION into $EDGE_TOOLS_DIR (about 8 minutes, once)" >&2
  cargo install tansu --version "$TANSU_VERSION" --features dynostore --locked \
    --root "$EDGE_TOOLS_DIR" --quiet
fi
