#!/usr/bin/env bash
# A local Kafka-API broker for trials: tansu with in-memory storage, installed once into
# $EDGE_TOOLS_DIR (see scripts/tools.sh), advertised on 127.0.0.1.
#   scripts/kafka-local.sh start [PORT]   # prints the bootstrap address; PORT defaults to a free one
#   scripts/kafka-local.sh stop
#   scripts/kafka-local.sh status
# Data lives in memory and is gone when the broker stops.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools.sh >&2
STATE="$EDGE_TOOLS_DIR/kafka-local"
mkdir -p "$STATE"

running() { [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; }

case "${1:-status}" in
  start)
    if running; then echo "127.0.0.1:$(cat "$STATE/port")"; exit 0; fi
    PORT="${2:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
    nohup "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$PORT" --storage-engine memory://tansu/ \
      >"$STATE/tansu.log" 2>&1 &
    echo $! >"$STATE/pid"
    echo "$PORT" >"$STATE/port"
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
    running || { echo "tansu did not start; see $STATE/tansu.log" >&2; exit 1; }
    echo "127.0.0.1:$PORT"
    ;;
  stop)
    if running; then kill "$(cat "$STATE/pid")"; fi
    rm -f "$STATE/pid" "$STATE/port"
    ;;
  status)
    if running; then echo "running on 127.0.0.1:$(cat "$STATE/port")"; else echo "not running"; exit 1; fi
    ;;
  *) echo "usage: $0 start [PORT] | stop | status" >&2; exit 2 ;;
esac
