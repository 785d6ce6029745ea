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
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "tools: installing Debian packages: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian may start a system-wide Mosquitto on 1883 when it installs the package. The tests
  # start their own on free ports, and the demo needs 1883 for the bridge's embedded broker.
  if [[ " ${missing[*]} " == *" mosquitto "* ]]; then
    $SUDO service mosquitto stop >/dev/null 2>&1 || true
  fi
fi

if [ ! -x "$TANSU_BIN" ] || ! "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "tools: building tansu $TANSU_VERSION into $EDGE_TOOLS_DIR (about 8 minutes, once)" >&2
  cargo install tansu --version "$TANSU_VERSION" --features dynostore --locked \
    --root "$EDGE_TOOLS_DIR" --quiet
fi
