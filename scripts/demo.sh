#!/usr/bin/env bash
# The main job, end to end, without Docker: a local Kafka-API broker (tansu), the bridge with its
# embedded MQTT broker, the simulator (5 sensors, 4 readings/s each), and the aggregates printed
# as they arrive in agg-temperature; then the bridge's summary (bytes in, bytes sent, reduction).
#   DEMO_SECONDS=60 scripts/demo.sh     # run the simulator longer (default 25 s)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools.sh

SECONDS_TO_RUN="${DEMO_SECONDS:-25}"
echo "demo: building (release)..." >&2
cargo build --release --quiet -p edge-bridge -p edge-sim --bins --example tail
BIN="${CARGO_TARGET_DIR:-target}/release"

. scripts/lib/ports.sh
ports=$(free_ports 3)
read -r KAFKA_PORT MQTT_PORT HTTP_PORT <<<"$ports"
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

"$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine memory://tansu/ --silent \
  >"$WORK/tansu.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$KAFKA_PORT") 2>/dev/null && break; sleep 0.1; done
echo "demo: Kafka-API broker (tansu) on 127.0.0.1:$KAFKA_PORT" >&2

"$BIN/edge-bridge" --mqtt-listen "127.0.0.1:$MQTT_PORT" --kafka-brokers "127.0.0.1:$KAFKA_PORT" \
  --idle-timeout 3s --state-dir "$WORK/state" --http-listen "127.0.0.1:$HTTP_PORT" \
  >"$WORK/summary.txt" 2>"$WORK/bridge.log" &
BRIDGE=$!
pids+=($BRIDGE)
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$MQTT_PORT") 2>/dev/null && break; sleep 0.1; done
echo "demo: bridge running, embedded MQTT broker on 127.0.0.1:$MQTT_PORT; live status: http://127.0.0.1:$HTTP_PORT/status (metrics: /metrics)" >&2

"$BIN/examples/tail" "127.0.0.1:$KAFKA_PORT" agg-temperature &
pids+=($!)

echo "demo: simulator: 5 sensors x 4 readings/s for ${SECONDS_TO_RUN}s; aggregates appear every 10 s" >&2
"$BIN/edge-sim" --mqtt-url "mqtt://127.0.0.1:$MQTT_PORT" --sensors 5 --rate 4 \
  --duration "${SECONDS_TO_RUN}s" --quiet
# The last windows close after 3 s of silence (idle timeout); give them time to arrive.
sleep 5
kill -TERM "$BRIDGE"
wait "$BRIDGE" || true
echo
echo "== bridge summary"
cat "$WORK/summary.txt"
