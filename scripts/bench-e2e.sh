#!/usr/bin/env bash
# End-to-end benchmark: edge-sim --flood -> embedded MQTT broker -> bridge -> local Kafka-API
# broker (tansu), both streams on; then, on the same number of readings, the tutorial's own
# Quix Streams pipeline from ../shared/peers, for a side-by-side ratio.
#   BENCH_READINGS=1000000 BENCH_SENSORS=10000 BENCH_QUIX=1 scripts/bench-e2e.sh
# BENCH_RATE=R paces the simulator at R readings per sensor per second instead of flooding
# (R x BENCH_SENSORS readings/s offered), to find the rate the bridge takes with nothing dropped.
# The simulator stands in for sensors, which on a gateway do not share its CPU; it runs at
# nice BENCH_SIM_NICE (19 by default) so that it takes the CPU the bridge and the Kafka-API
# broker leave instead of competing with them for the two cores. BENCH_SIM_NICE=0 measures the
# simulator as an equal competitor.
# BENCH_PROFILE=NAME measures the binaries of another Cargo profile (default: release);
# BENCH_BIN_DIR=DIR measures the edge-bridge and edge-sim binaries in DIR instead (no build).
# BENCH_FAMILY=zigbee2mqtt|tasmota|esphome|shelly|sparkplug has the simulator publish that family's
# payloads and chatter (edge-sim --profile) and the bridge read them with the routes of
# deploy/routes-example.toml; the figures then also give measurements/s. --count counts
# messages, status chatter included (one after every 20 readings).
# Prints readings/s, the bridge's peak RSS, CPU seconds per million readings, and bytes sent
# upstream per reading (raw and aggregate).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools.sh
command -v /usr/bin/time >/dev/null || { apt-get install -y -qq time >/dev/null; }

N="${BENCH_READINGS:-1000000}"
SENSORS="${BENCH_SENSORS:-10000}"
PEERS="${PEERS_DIR:-$(cd .. && pwd)/shared/peers}"
PROFILE="${BENCH_PROFILE:-release}"
if [ -n "${BENCH_BIN_DIR:-}" ]; then
  # Binaries built elsewhere (an older commit, say), to compare two builds in one session.
  BIN="$BENCH_BIN_DIR"
else
  cargo build --profile "$PROFILE" --quiet -p edge-bridge -p edge-sim --bins
  BIN="${CARGO_TARGET_DIR:-target}/$PROFILE"
fi

. scripts/lib/ports.sh
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

start_tansu() {
  local port=$1
  "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ --silent >"$WORK/tansu-$port.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
}

if [ -n "${BENCH_RATE:-}" ]; then pace=(--rate "$BENCH_RATE"); else pace=(--flood --rate 4); fi
family=() routes=() MEASUREMENTS=1
if [ -n "${BENCH_FAMILY:-}" ]; then
  family=(--profile "$BENCH_FAMILY") routes=(--config deploy/routes-example.toml)
  case "$BENCH_FAMILY" in
    zigbee2mqtt) MEASUREMENTS=3 ;; tasmota | shelly) MEASUREMENTS=2 ;; sparkplug) MEASUREMENTS=10 ;; *) MEASUREMENTS=1 ;;
  esac
fi
echo "== edge-bridge: $N readings from $SENSORS sensors, edge-sim ${pace[*]} ${family[*]} (nice ${BENCH_SIM_NICE:-19}) -> embedded broker -> bridge -> tansu"
ports=$(free_ports 2)
read -r KAFKA MQTT <<<"$ports"
start_tansu "$KAFKA"
# window.max_sensors bounds series: one per sensor and measurement.
EDGE_BRIDGE_LOG_SUMMARY_INTERVAL=1s EDGE_BRIDGE_WINDOW_MAX_SENSORS=$((SENSORS * MEASUREMENTS * 2)) \
  /usr/bin/time -v -o "$WORK/bridge.time" "$BIN/edge-bridge" "${routes[@]}" --mqtt-listen "127.0.0.1:$MQTT" \
  --kafka-brokers "127.0.0.1:$KAFKA" --state-dir "$WORK/state" >"$WORK/summary.txt" 2>"$WORK/bridge.log" &
BRIDGE=$!
wait_port "$MQTT"
nice -n "${BENCH_SIM_NICE:-19}" "$BIN/edge-sim" --mqtt-url "mqtt://127.0.0.1:$MQTT" "${pace[@]}" "${family[@]}" --sensors "$SENSORS" \
  --count "$N" --quiet | tee "$WORK/sim.txt"
# Wait until the bridge has taken everything in or counted it dropped (or its summary line has
# stopped moving for 3 s).
prev=-1; still=0
for _ in $(seq 120); do
  sleep 1
  line=$(grep -o 'readings_in=[0-9]*.*broker_dropped=[0-9]*' "$WORK/bridge.log" | tail -1 || true)
  cur=$(echo "$line" | grep -o 'readings_in=[0-9]*' | cut -d= -f2)
  dropped=$(echo "$line" | grep -o 'broker_dropped=[0-9]*' | cut -d= -f2)
  [ $(( ${cur:-0} + ${dropped:-0} )) -ge "$N" ] && break
  if [ "$cur" = "$prev" ]; then still=$((still + 1)); [ "$still" -ge 3 ] && break; else still=0; fi
  prev=$cur
done
BRIDGE_PID=$(pgrep -P "$BRIDGE" -x edge-bridge || echo "$BRIDGE")
kill -TERM "$BRIDGE_PID"
wait "$BRIDGE" || true
cat "$WORK/summary.txt"
echo "(bridge log: $WORK/bridge.log)"
python3 - "$WORK/summary.txt" "$WORK/bridge.time" "$N" "$MEASUREMENTS" "${BENCH_FAMILY:-}" <<'PY'
import re, sys
summary, timing, n = open(sys.argv[1]).read(), open(sys.argv[2]).read(), int(sys.argv[3])
per_reading, family = int(sys.argv[4]), sys.argv[5]
rate = float(re.search(r"rate: (\d+) readings/s", summary).group(1))
readings = int(re.search(r"readings in: (\d+)", summary).group(1))
raw = int(re.search(r"raw: produced \d+, delivered \d+, failed \d+, (\d+) bytes", summary).group(1))
# No aggregate line when no window closed during the run (open windows are saved at the stop).
m = re.search(r"aggregate: produced \d+, delivered (\d+), failed \d+, (\d+) bytes", summary)
aggs, agg = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
user = float(re.search(r"User time \(seconds\): ([\d.]+)", timing).group(1))
sys_ = float(re.search(r"System time \(seconds\): ([\d.]+)", timing).group(1))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing).group(1))
print(f"edge-bridge: {readings} of {n} readings in; {rate:,.0f} readings/s end to end; "
      f"peak RSS {rss/1024:.1f} MiB; {(user+sys_)/readings*1e6:.2f} CPU-s per million readings; "
      f"upstream bytes per reading: raw {raw/readings:.1f}, aggregate {agg/readings:.2f} "
      f"({aggs} windows closed, {agg/max(aggs, 1):.0f} bytes each; open windows are saved at "
      f"the stop, not sent)")
if family:
    aggregated = int(re.search(r"aggregated (\d+)", summary).group(1))
    print(f"measurements: {per_reading} per reading aggregated; {aggregated} of {readings} messages "
          f"were readings (the rest status chatter): {rate * aggregated / readings * per_reading:,.0f} "
          f"measurements/s")
open("/tmp/edge-bridge-bench.txt", "w").write(f"{rate} {(user+sys_)/readings*1e6}\n")
PY

if [ "${BENCH_QUIX:-1}" = "1" ]; then
  if [ ! -f "$PEERS/quix_seed_processor.py" ]; then
    echo "Quix comparison skipped: $PEERS/quix_seed_processor.py not found (set PEERS_DIR)" >&2
    exit 0
  fi
  VENV="$EDGE_TOOLS_DIR/quix-venv"
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q quixstreams confluent-kafka
  fi
  echo "== Quix Streams (the tutorial's pipeline): $N readings from $SENSORS sensors, tansu"
  KAFKA2=$(free_ports 1)
  start_tansu "$KAFKA2"
  (cd "$PEERS" && "$VENV/bin/python" produce_readings.py "127.0.0.1:$KAFKA2" raw-temperature "$N" "$SENSORS")
  (cd "$PEERS" && /usr/bin/time -v -o "$WORK/quix.time" "$VENV/bin/python" quix_seed_processor.py "127.0.0.1:$KAFKA2" 5) | tee "$WORK/quix.txt"
  python3 - "$WORK/quix.txt" "$WORK/quix.time" "$N" <<'PY'
import re, sys
out, timing, n = open(sys.argv[1]).read(), open(sys.argv[2]).read(), int(sys.argv[3])
secs = float(re.search(r"in ([\d.]+)s", out).group(1))
user = float(re.search(r"User time \(seconds\): ([\d.]+)", timing).group(1))
sys_ = float(re.search(r"System time \(seconds\): ([\d.]+)", timing).group(1))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing).group(1))
rate, cpu = n / secs, (user + sys_) / n * 1e6
print(f"quix: {rate:,.0f} readings/s; peak RSS {rss/1024:.1f} MiB; {cpu:.2f} CPU-s per million readings")
ours_rate, ours_cpu = map(float, open("/tmp/edge-bridge-bench.txt").read().split())
print(f"ratio edge-bridge / quix: {ours_rate/rate:.1f}x readings/s, {cpu/ours_cpu:.1f}x less CPU per reading")
PY
fi
