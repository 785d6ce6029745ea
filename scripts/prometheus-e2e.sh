#!/usr/bin/env bash
# End-to-end test of the alert rules (deploy/prometheus/edge-bridge-alerts.yml) with a real
# Prometheus server scraping a real bridge:
#   tansu (Kafka API) <- edge-bridge (embedded MQTT broker, /metrics) <- readings over MQTT
#   Prometheus scrapes /metrics every second and evaluates the rules every second.
# 1. While the uplink works, no alert at all may be pending or firing.
# 2. Then the uplink is cut (tansu killed, or stopped with E2E_CUT=stop) while readings keep
#    coming, and EdgeBridgeUplinkDown and EdgeBridgeKafkaUnreachable must fire (the bridge is
#    still scraped: EdgeBridgeDown must not).
# The rules are loaded from a temporary copy in which every `for:` is shortened to 5s (sed
# below), so that an alert fires 5 s after its condition holds instead of after minutes.
#   scripts/prometheus-e2e.sh
# EDGE_BRIDGE_BIN / EDGE_SIM_BIN: the binaries (default ${CARGO_TARGET_DIR:-target}/debug/...;
# they are copied first, so a rebuild during the run does not matter). Without edge-sim the
# readings come from mosquitto_pub. E2E_DEADLINE: seconds to wait for each step (default 90).
# Installs what it needs once: the test tools (scripts/tools.sh) and the Debian package
# prometheus.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$EPOCHREALTIME
. scripts/tools.sh
. scripts/lib/debian.sh
debian_install prometheus-e2e prometheus

DEADLINE="${E2E_DEADLINE:-90}"
CUT="${E2E_CUT:-kill}"
case "$CUT" in kill | stop) ;; *) echo "E2E_CUT must be kill or stop" >&2; exit 2 ;; esac
TARGET="${CARGO_TARGET_DIR:-target}"
BRIDGE_SRC="${EDGE_BRIDGE_BIN:-$TARGET/debug/edge-bridge}"
SIM_SRC="${EDGE_SIM_BIN:-$TARGET/debug/edge-sim}"
if [ ! -x "$BRIDGE_SRC" ]; then
  echo "prometheus-e2e: no edge-bridge binary at $BRIDGE_SRC: build it (cargo build -p edge-bridge) or set EDGE_BRIDGE_BIN" >&2
  exit 1
fi

WORK=$(mktemp -d)
pids=()   # everything started here, in start order
stopped_pid=""
cleanup() {
  local rc=$? i p
  if [ -n "$stopped_pid" ]; then kill -CONT "$stopped_pid" 2>/dev/null || true; fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    # The bridge spools what is unconfirmed and exits within kafka.shutdown_timeout (1 s here).
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    for f in bridge.log prometheus.log tansu.log publisher.log; do
      [ -s "$WORK/$f" ] && { echo "--- last lines of $f"; tail -n 15 "$WORK/$f"; }
    done >&2
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

. scripts/lib/ports.sh
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.1f}')" "$EPOCHREALTIME" "$1"; }
alive() { kill -0 "$1" 2>/dev/null || { echo "prometheus-e2e: $2 (pid $1) exited" >&2; exit 1; }; }
# wait_until DESCRIPTION COMMAND...: polls COMMAND until it succeeds, for at most $DEADLINE s.
wait_until() {
  local desc=$1 end=$((SECONDS + DEADLINE))
  shift
  until "$@"; do
    alive "$BRIDGE" edge-bridge
    alive "$PROM_PID" prometheus
    if [ "$SECONDS" -ge "$end" ]; then
      echo "prometheus-e2e: FAILED: no $desc within ${DEADLINE}s" >&2
      return 1
    fi
    sleep 0.2
  done
}
listening() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
http_ok() { curl -sf -o /dev/null "$1"; }

# The binaries may be rebuilt by someone else at any moment: run copies.
cp "$BRIDGE_SRC" "$WORK/edge-bridge"
SIM=""
if [ -x "$SIM_SRC" ]; then cp "$SIM_SRC" "$WORK/edge-sim"; SIM="$WORK/edge-sim"; fi

ports=$(free_ports 4)
read -r KAFKA MQTT HTTP PROM <<<"$ports"
API="http://127.0.0.1:$PROM/api/v1"
PROM_PID=""; BRIDGE=""

# --- Kafka-API broker -------------------------------------------------------------------------
"$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$KAFKA" --advertised-listener-url "tcp://127.0.0.1:$KAFKA" \
  --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1 &
TANSU=$!; pids+=("$TANSU")
end=$((SECONDS + DEADLINE))
until listening "$KAFKA"; do
  alive "$TANSU" tansu
  [ "$SECONDS" -lt "$end" ] || { echo "prometheus-e2e: tansu not listening within ${DEADLINE}s" >&2; exit 1; }
  sleep 0.1
done

# --- The bridge ---------------------------------------------------------------------------------
# Only the settings below: no EDGE_BRIDGE_* variable of the caller's environment leaks in.
for v in $(compgen -e | grep '^EDGE_BRIDGE_' || true); do unset "$v"; done
EDGE_BRIDGE_KAFKA_SHUTDOWN_TIMEOUT=1s EDGE_BRIDGE_LOG_SUMMARY_INTERVAL=0s \
  "$WORK/edge-bridge" --mqtt-listen "127.0.0.1:$MQTT" --mqtt-listen-v5 "" \
  --kafka-brokers "127.0.0.1:$KAFKA" --http-listen "127.0.0.1:$HTTP" --state-dir "$WORK/state" \
  --window 2s >"$WORK/bridge.out" 2>"$WORK/bridge.log" &
BRIDGE=$!; pids+=("$BRIDGE")

# --- Prometheus ---------------------------------------------------------------------------------
# The rules with every `for:` shortened to 5s; the count shows that the sed met each of them.
sed -E 's/^([[:space:]]+for:[[:space:]]*).*$/\15s/' deploy/prometheus/edge-bridge-alerts.yml >"$WORK/rules.yml"
n_for=$(grep -cE '^[[:space:]]+for:' deploy/prometheus/edge-bridge-alerts.yml || true)
n_5s=$(grep -cE '^[[:space:]]+for:[[:space:]]*5s$' "$WORK/rules.yml" || true)
if [ "$n_for" -eq 0 ] || [ "$n_for" -ne "$n_5s" ]; then
  echo "prometheus-e2e: the for: rewrite met $n_5s of $n_for" >&2
  exit 1
fi
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $WORK/rules.yml
scrape_configs:
  - job_name: edge-bridge
    static_configs:
      - targets: ["127.0.0.1:$HTTP"]
EOF
promtool check config "$WORK/prometheus.yml" >/dev/null
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!; pids+=("$PROM_PID")

wait_until "bridge ready (/readyz)" http_ok "http://127.0.0.1:$HTTP/readyz"
wait_until "Prometheus ready" http_ok "http://127.0.0.1:$PROM/-/ready"

# --- Readings: 5 sensors x 4/s from edge-sim, or one sensor at about 10/s from mosquitto_pub ------
if [ -n "$SIM" ]; then
  "$SIM" --mqtt-url "mqtt://127.0.0.1:$MQTT" --sensors 5 --rate 4 --quiet >"$WORK/publisher.log" 2>&1 &
  pids+=($!)
  echo "prometheus-e2e: readings from edge-sim"
else
  mkfifo "$WORK/readings"
  mosquitto_pub -h 127.0.0.1 -p "$MQTT" -q 1 -t sensors/e2e-1/temperature -l <"$WORK/readings" >"$WORK/publisher.log" 2>&1 &
  pids+=($!)
  # The pace of the readings (not a synchronisation): one every 0.1 s, stamped now.
  (exec >"$WORK/readings"; while :; do
    printf '{"ts": %d, "value": 21.%d}\n' "$((${EPOCHREALTIME/./} / 1000))" "$((RANDOM % 10))"; sleep 0.1
  done) &
  pids+=($!)
  echo "prometheus-e2e: readings from mosquitto_pub (no edge-sim binary at $SIM_SRC)"
fi

# query EXPR: the first value of an instant query, or nothing.
query() {
  curl -sf --get --data-urlencode "query=$1" "$API/query" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
# alerts: "NAME STATE" per active alert.
alerts() {
  curl -sf "$API/alerts" |
    python3 -c 'import json,sys; [print(a["labels"]["alertname"], a["state"]) for a in json.load(sys.stdin)["data"]["alerts"]]'
}
query_true() { [ -n "$(query "$1")" ]; }
firing() { alerts | grep -x "$1 firing" >/dev/null; }

# --- 1. Healthy: records delivered, and at least 8 s of scrapes (longer than every `for:`) ------
wait_until "records delivered to tansu, seen by Prometheus" \
  query_true 'sum(edge_bridge_records_delivered_total{job="edge-bridge"}) > 0'
wait_until "8 s of scrapes with the uplink up" \
  query_true 'count_over_time(edge_bridge_kafka_reachable{job="edge-bridge"}[10s]) >= 8 and edge_bridge_kafka_reachable == 1'
before=$(alerts)
if [ -n "$before" ]; then
  echo "prometheus-e2e: FAILED: alerts active while the bridge is healthy:" >&2
  echo "$before" >&2
  exit 1
fi
echo "prometheus-e2e: healthy bridge: $(query 'sum(edge_bridge_readings_received_total)') readings in, $(query 'sum(edge_bridge_records_delivered_total)') records delivered, no alert pending or firing"
# Every rule evaluated without error on the real series, and every query of the Grafana
# dashboard runs ($__rate_interval as 5s, four scrape intervals; $instance as .*).
curl -sf "$API/rules" | python3 -c '
import json, sys
rules = [r for g in json.load(sys.stdin)["data"]["groups"] for r in g["rules"]]
bad = ["%s: %s" % (r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
print(f"prometheus-e2e: {len(rules)} rules evaluated, {len(bad)} with errors")
sys.exit("\n".join(bad) if bad else 0)'
python3 - "$API" deploy/grafana/edge-bridge-dashboard.json <<'PY'
import json, re, sys, urllib.parse, urllib.request
api, path = sys.argv[1:]
exprs = [t["expr"] for p in json.load(open(path))["panels"] for t in p.get("targets", []) if "expr" in t]
empty, errors = [], []
for e in exprs:
    q = re.sub(r"\$\{?__rate_interval\}?", "5s", e)
    q = re.sub(r"\$\{?instance\}?", ".*", q)
    try:
        with urllib.request.urlopen(f"{api}/query?" + urllib.parse.urlencode({"query": q})) as r:
            if not json.load(r)["data"]["result"]:
                empty.append(e)
    except urllib.error.HTTPError as err:
        errors.append(f"{e}: {err.read().decode()}")
print(f"prometheus-e2e: {len(exprs)} dashboard queries run, {len(exprs) - len(empty)} with data "
      f"(empty ones select only non-zero rates or series: {len(empty)})")
sys.exit("\n".join(errors) if errors else 0)
PY

# --- 2. Cut the uplink while readings keep coming ------------------------------------------------
cut_at=$EPOCHREALTIME
if [ "$CUT" = stop ]; then
  kill -STOP "$TANSU"; stopped_pid=$TANSU
else
  kill -KILL "$TANSU"; wait "$TANSU" 2>/dev/null || true
fi
echo "prometheus-e2e: uplink cut (tansu: SIG${CUT^^})"
wait_until "edge_bridge_uplink_down == 1" query_true 'edge_bridge_uplink_down == 1'
echo "prometheus-e2e: edge_bridge_uplink_down = 1 after $(elapsed "$cut_at") s"
wait_until "EdgeBridgeUplinkDown firing" firing EdgeBridgeUplinkDown
echo "prometheus-e2e: EdgeBridgeUplinkDown firing after $(elapsed "$cut_at") s"
wait_until "EdgeBridgeKafkaUnreachable firing" firing EdgeBridgeKafkaUnreachable
echo "prometheus-e2e: EdgeBridgeKafkaUnreachable firing after $(elapsed "$cut_at") s"
after=$(alerts)
echo "prometheus-e2e: active alerts now:"
echo "$after" | sed 's/^/  /'
if grep -q '^EdgeBridgeDown ' <<<"$after"; then
  echo "prometheus-e2e: FAILED: EdgeBridgeDown active, the bridge should still be scraped" >&2
  exit 1
fi
curl -sf "$API/alerts" | python3 -c '
import json, sys
for a in json.load(sys.stdin)["data"]["alerts"]:
    if a["labels"]["alertname"] == "EdgeBridgeUplinkDown":
        print("prometheus-e2e: as rendered:", a["labels"]["severity"], "-", a["annotations"]["summary"])'
echo "prometheus-e2e: spool: $(query 'sum(edge_bridge_spool_records)') records, $(query 'sum(edge_bridge_spool_bytes)') bytes"
echo "prometheus-e2e: passed in $(elapsed "$started") s"
