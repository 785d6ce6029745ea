#!/usr/bin/env bash
# Upstream bytes on the wire per reading, counted on the socket: edge-sim -> embedded MQTT
# broker -> bridge -> byte-counting TCP proxy (scripts/lib/byte_proxy.py) -> tansu. What the
# proxy counts from the bridge to the broker is what a metered uplink bills: Kafka protocol,
# record batches, compression and the bridge's topic admin and probe included.
#   scripts/bench-uplink.sh                         # every variant, at 4 and at 1 reading/s
#   BENCH_RATES=4 BENCH_VARIANTS="defaults before" scripts/bench-uplink.sh
# Shape: BENCH_SENSORS sensors (1,000) at each of BENCH_RATES readings/s per sensor (4 1) for
# BENCH_SECONDS (30), 10 s windows (the tutorial's). After the simulator stops, the sensors'
# windows close by idleness (window.idle_timeout 2 s here), so every reading's aggregate is
# counted, then the bridge stops cleanly.
# Variants (BENCH_VARIANTS, default all of them):
#   defaults   the configuration as shipped
#   before     what the bridge sent before the lean raw stream: one producer, 20 ms linger,
#              zstd at its default level, `edge.id` and `mqtt.topic` on every raw record
#   ids        the defaults with record ids sent (kafka.record_id = "header")
#   deadband   raw.policy = "deadband", 0.5 absolute, 60 s heartbeat
#   sample     raw.policy = "sample", one reading per sensor per 10 s window
#   deferred   raw.policy = "deferred" with raw.send_window an hour that starts two hours from
#              now: raw records wait in the spool, and only the aggregates (and the protocol)
#              cross the uplink: what a metered link carries outside the window
#   split      kafka.raw_brokers = a second local tansu (the site's broker): raw, late and dead
#              letters go there, and only the aggregates cross the metered uplink
# Prints one line per variant and rate: readings, MQTT payload bytes per reading, wire bytes
# per reading (upstream, from the proxy), the ratio of the two, the bridge's own wire count
# against the proxy's, and the part of it that the aggregates' producer wrote (aggregates and
# dead letters, protocol included): the aggregates alone on the wire.
# BENCH_ENV="EDGE_BRIDGE_KEY=VALUE ..." adds settings to every variant (to try other values).
# BENCH_BIN_DIR=DIR measures the edge-bridge and edge-sim binaries in DIR instead (no build).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools.sh
. scripts/lib/ports.sh

SENSORS="${BENCH_SENSORS:-1000}"
SECONDS_EACH="${BENCH_SECONDS:-30}"
RATES="${BENCH_RATES:-4 1}"
VARIANTS="${BENCH_VARIANTS:-defaults before ids deadband sample deferred split}"
if [ -n "${BENCH_BIN_DIR:-}" ]; then
  BIN="$BENCH_BIN_DIR"
else
  cargo build --release --quiet -p edge-bridge -p edge-sim --bins
  BIN="${CARGO_TARGET_DIR:-target}/release"
fi

# The environment of a variant: EDGE_BRIDGE_* settings over the defaults.
variant_env() {
  case "$1" in
    defaults) ;;
    before)
      echo EDGE_BRIDGE_KAFKA_RECORD_ID=header EDGE_BRIDGE_KAFKA_RAW_TOPIC_HEADER=always \
        EDGE_BRIDGE_KAFKA_RAW_LINGER=20ms EDGE_BRIDGE_KAFKA_RAW_COMPRESSION_LEVEL=-1 ;;
    ids) echo EDGE_BRIDGE_KAFKA_RECORD_ID=header ;;
    deadband) echo EDGE_BRIDGE_RAW_POLICY=deadband EDGE_BRIDGE_RAW_DEADBAND_ABSOLUTE=0.5 EDGE_BRIDGE_RAW_INTERVAL=60s ;;
    sample) echo EDGE_BRIDGE_RAW_POLICY=sample EDGE_BRIDGE_RAW_INTERVAL=10s ;;
    deferred)
      local h=$(((10#$(date -u +%H) + 2) % 24))
      printf 'EDGE_BRIDGE_RAW_POLICY=deferred EDGE_BRIDGE_RAW_SEND_WINDOW=%02d:00-%02d:00\n' "$h" $(((h + 1) % 24)) ;;
    split) ;; # kafka.raw_brokers is set in run(), which starts the second cluster
    *) echo "unknown variant $1 (defaults, before, ids, deadband, sample, deferred, split)" >&2; exit 2 ;;
  esac
}

for variant in $VARIANTS; do variant_env "$variant" >/dev/null; done
WORK=$(mktemp -d)
echo "(logs: $WORK)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

run() {
  local variant=$1 rate=$2 dir="$WORK/$1-$2"
  mkdir -p "$dir"
  read -r KAFKA PROXY MQTT <<<"$(free_ports 3)"
  "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$KAFKA" --advertised-listener-url "tcp://127.0.0.1:$PROXY" \
    --storage-engine memory://tansu/ --silent >"$dir/tansu.log" 2>&1 &
  local tansu=$!
  pids+=("$tansu")
  wait_port "$KAFKA"
  python3 scripts/lib/byte_proxy.py "$PROXY" "127.0.0.1:$KAFKA" "$dir/proxy.counts" &
  local proxy=$!
  pids+=("$proxy")
  wait_port "$PROXY"
  local split_env="" site=""
  if [ "$variant" = split ]; then
    # The site's own broker, on the gateway's network: not behind the metered proxy.
    local SITE
    SITE=$(free_ports 1)
    "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$SITE" --advertised-listener-url "tcp://127.0.0.1:$SITE" \
      --storage-engine memory://tansu/ --silent >"$dir/tansu-site.log" 2>&1 &
    site=$!
    pids+=("$site")
    wait_port "$SITE"
    split_env="EDGE_BRIDGE_KAFKA_RAW_BROKERS=127.0.0.1:$SITE"
  fi
  # shellcheck disable=SC2046,SC2086 # the variant's settings are words on purpose
  env $(variant_env "$variant") $split_env ${BENCH_ENV:-} EDGE_BRIDGE_WINDOW_IDLE_TIMEOUT=2s EDGE_BRIDGE_LOG_SUMMARY_INTERVAL=1s \
    EDGE_BRIDGE_WINDOW_MAX_SENSORS=$((SENSORS * 2)) \
    "$BIN/edge-bridge" --mqtt-listen "127.0.0.1:$MQTT" --kafka-brokers "127.0.0.1:$PROXY" \
    --state-dir "$dir/state" >"$dir/summary.txt" 2>"$dir/bridge.log" &
  local bridge=$!
  pids+=("$bridge")
  wait_port "$MQTT"
  "$BIN/edge-sim" --mqtt-url "mqtt://127.0.0.1:$MQTT" --rate "$rate" --sensors "$SENSORS" \
    --duration "${SECONDS_EACH}s" --quiet >"$dir/sim.txt"
  # Idle windows close 2 s after the last reading; librdkafka's byte count is refreshed every
  # second. Wait until the proxy has carried nothing new for 3 s.
  local last="" same=0
  for _ in $(seq 60); do
    sleep 1
    local now
    now=$(cat "$dir/proxy.counts")
    if [ "$now" = "$last" ]; then same=$((same + 1)); [ "$same" -ge 3 ] && break; else same=0; fi
    last=$now
  done
  kill -TERM "$bridge"
  wait "$bridge" || true
  kill -TERM "$proxy"
  wait "$proxy" || true
  kill "$tansu" $site
  wait "$tansu" $site 2>/dev/null || true
  pids=()
  python3 - "$variant" "$rate" "$dir/summary.txt" "$dir/proxy.counts" <<'PY'
import re, sys
variant, rate, summary, counts = sys.argv[1], sys.argv[2], open(sys.argv[3]).read(), open(sys.argv[4]).read()
m = re.search(r"readings in: (\d+) \((\d+) bytes\)", summary)
if not m or int(m.group(1)) == 0:
    sys.exit(f"{variant} at {rate}/s: the bridge took in no reading; see its log")
readings, mqtt_bytes = int(m.group(1)), int(m.group(2))
wire = max(int(re.search(r"upstream=(\d+)", counts).group(1)), 1)
own = re.search(r"uplink: (\d+) bytes on the wire", summary)
own = int(own.group(1)) if own else 0
# With kafka.raw_brokers the uplink carries the aggregates' producer alone.
own_raw = re.search(r"uplink: \d+ bytes on the wire.*?the raw stream (\d+)\)", summary)
own_raw = int(own_raw.group(1)) if own_raw else 0
aggs = re.search(r"aggregate: produced \d+, delivered (\d+)", summary)
aggs = int(aggs.group(1)) if aggs else 0
print(f"{variant:>9} {rate:>4}/s  {readings:>7} readings  {mqtt_bytes/readings:6.2f} MQTT B/reading  "
      f"{wire/readings:6.2f} wire B/reading ({mqtt_bytes/wire:5.2f}x less)  "
      f"bridge counted {own} of {wire} ({(wire-own)/wire*100:+.2f}% under)  "
      f"aggregates' producer {(own-own_raw)/readings:5.2f} wire B/reading ({mqtt_bytes/max(own-own_raw, 1):5.1f}x less; {aggs} aggregates)")
PY
}

echo "== upstream bytes on the wire: $SENSORS sensors for ${SECONDS_EACH}s at each of: ${RATES} readings/s per sensor"
for rate in $RATES; do
  for variant in $VARIANTS; do
    run "$variant" "$rate"
  done
done
