#!/usr/bin/env bash
# Installs what the tests and the demo need, once, and reuses it afterwards.
#   - Debian packages: a C toolchain and OpenSSL headers for librdkafka, Mosquitto as the external MQTT broker, and
#     Chromium for the headless test of the bridge's status page.
#   - tansu, a Kafka-API broker from crates.io, as the local stand-in for Redpanda. Building it
#     takes about 8 minutes on 2 cores, so it is cached under $EDGE_TOOLS_DIR.
#   - nisshi, tansu's successor, for the SASL test (bridge/tests/kafka_sasl.rs): the one
#     Kafka-API broker from the registries with SCRAM users. 0.7.0-pre.2 is its last release that
#     builds with this machine's Rust 1.95 (0.7.0 and later need rama 0.4, hence Rust 1.96). Its
#     SQLite storage (feature libsql) is what lets users be made before authentication is on.
#     About a quarter of an hour to build, once, also cached under $EDGE_TOOLS_DIR.
#   - A Python environment with confluent-kafka and xxhash from PyPI, for the consumer-side
#     example (examples/dedup.py) and its test (bridge/tests/dedup_example.rs), and pysparkplug
#     (with its paho-mqtt), an independent Sparkplug B implementation, for the edge node of
#     examples/sparkplug_node.py and its test (bridge/tests/sparkplug.rs).
# Source it (`. scripts/tools.sh`) to get EDGE_TOOLS_DIR, TANSU_BIN, NISSHI_BIN and
# EDGE_EXAMPLES_PYTHON exported.
set -euo pipefail

export EDGE_TOOLS_DIR="${EDGE_TOOLS_DIR:-$HOME/.cache/edge-bridge-tools}"
TANSU_VERSION=0.6.0
export TANSU_BIN="$EDGE_TOOLS_DIR/bin/tansu"
NISSHI_VERSION=0.7.0-pre.2
export NISSHI_BIN="$EDGE_TOOLS_DIR/nisshi/bin/nisshi"
EXAMPLES_VENV="$EDGE_TOOLS_DIR/venv-examples"
export EDGE_EXAMPLES_PYTHON="$EXAMPLES_VENV/bin/python"
mkdir -p "$EDGE_TOOLS_DIR"

apt_packages=(build-essential pkg-config cmake libssl-dev mosquitto mosquitto-clients python3-venv chromium)
. "$(dirname "${BASH_SOURCE[0]}")/lib/debian.sh"
debian_install tools "${apt_packages[@]}"

if [ ! -x "$TANSU_BIN" ] || ! "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "tools: building tansu $TANSU_VERSION into $EDGE_TOOLS_DIR (about 8 minutes, once)" >&2
  cargo install tansu --version "$TANSU_VERSION" --features dynostore --locked \
    --root "$EDGE_TOOLS_DIR" --quiet
fi

# Its own root: nisshi's binary must not replace another tool's, and its version is checked
# from cargo's record of what it installed there.
if ! grep -qF "nisshi $NISSHI_VERSION " "$EDGE_TOOLS_DIR/nisshi/.crates.toml" 2>/dev/null || [ ! -x "$NISSHI_BIN" ]; then
  echo "tools: building nisshi $NISSHI_VERSION into $EDGE_TOOLS_DIR/nisshi (about 15 minutes, once)" >&2
  cargo install nisshi --version "$NISSHI_VERSION" --features libsql --locked \
    --root "$EDGE_TOOLS_DIR/nisshi" --quiet
fi

# Pinned: the example's test checks its output, not the clients' changelogs.
if ! "$EDGE_EXAMPLES_PYTHON" -c 'import confluent_kafka, xxhash, pysparkplug' 2>/dev/null; then
  echo "tools: installing confluent-kafka, xxhash and pysparkplug into $EXAMPLES_VENV" >&2
  python3 -m venv "$EXAMPLES_VENV"
  "$EXAMPLES_VENV/bin/pip" install --quiet confluent-kafka==2.16.1 xxhash==4.1.0 pysparkplug==0.6.1
fi
