# Sourced by the scripts that start servers: `free_ports N` prints N free local ports, or fails;
# `wait_port PORT` waits up to 20 s for a server to listen on it, or exits.
# They come from below the kernel's ephemeral range (from 10000 on; a range that starts below
# 11000 leaves no room and is refused): a port picked by binding port 0 and
# closing can be handed to an outgoing connection (a Kafka client, a scrape) before the
# server meant to have it binds it.
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
if lo < 11000:
    sys.exit(f"free_ports: the ephemeral port range starts at {lo}, leaving no room below it")
ports = []
for port in random.sample(range(10000, lo), 200):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    ports.append(port)
    if len(ports) == int(sys.argv[1]):
        break
else:
    sys.exit(f"free_ports: found only {len(ports)} free ports")
print(*ports)
PY
}

wait_port() { for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
