#!/bin/bash
# bench/lazy/shaped-link.sh: a registry behind a shaped link, the way
# DESIGN.md §8 and issue 6 ask for it — 100 Mbit/s and 20 ms round trip —
# on a kernel that has tbf/htb but no netem:
#
#   client ──► lazy_delay_proxy ──► veth evs-lzb0 ══ tbf ══ veth evs-lzb1 ──► docker-registry
#              127.0.0.1:PORT        (host)    rate 100mbit    (netns)        10.231.0.2:5000
#              +DELAY_MS each way              both ends
#
# plus the same storage served directly (unshaped) on the host, for pushing
# and converting the images the benchmark then pulls through the link.
#
#   bench/lazy/shaped-link.sh up WORK_DIR BUILD_DIR   # prints "direct=HOST" and "shaped=HOST"
#   bench/lazy/shaped-link.sh check WORK_DIR          # measures the link (curl of a 20 MB blob)
#   bench/lazy/shaped-link.sh down WORK_DIR
#
# Env: RATE (tbf rate, default 100mbit), DELAY_MS (per direction, default 10,
# i.e. 20 ms RTT), NS (namespace, default evs-lazy-bench), NET (first three
# octets, default 10.231.0), SHAPED_PORT (default 5099).
# Needs root, ip, tc, docker-registry, and BUILD_DIR/bench/lazy/lazy_delay_proxy.
set -euo pipefail

RATE=${RATE:-100mbit}
DELAY_MS=${DELAY_MS:-10}
NS=${NS:-evs-lazy-bench}
NET=${NET:-10.231.0}
SHAPED_PORT=${SHAPED_PORT:-5099}
HOST_IF=evs-lzb0
NS_IF=evs-lzb1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REGISTRY_SH="$HERE/../../tests/tools/local-registry.sh"

usage() { echo "usage: $0 up WORK_DIR BUILD_DIR | check WORK_DIR | down WORK_DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
work=$(mkdir -p "$2" && cd "$2" && pwd)

down() {
  [ -f "$work/delay.pid" ] && kill "$(cat "$work/delay.pid")" 2>/dev/null || true
  [ -f "$work/ns-registry.pid" ] && kill "$(cat "$work/ns-registry.pid")" 2>/dev/null || true
  rm -f "$work/delay.pid" "$work/ns-registry.pid"
  "$REGISTRY_SH" stop "$work/registry" 2>/dev/null || true
  ip link del "$HOST_IF" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}

case "$cmd" in
up)
  [ $# -ge 3 ] || usage
  proxy=$(realpath "$3/bench/lazy/lazy_delay_proxy")
  [ -x "$proxy" ] || { echo "no $proxy (ninja -C $3 lazy_delay_proxy)" >&2; exit 1; }
  [ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, tc)" >&2; exit 1; }
  down
  # The unshaped registry on the host; its storage is shared with the one
  # in the namespace.
  direct=$("$REGISTRY_SH" start "$work/registry")
  storage="$work/registry/storage"

  ip netns add "$NS"
  ip link add "$HOST_IF" type veth peer name "$NS_IF"
  ip link set "$NS_IF" netns "$NS"
  ip addr add "$NET.1/24" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  ip netns exec "$NS" ip addr add "$NET.2/24" dev "$NS_IF"
  ip netns exec "$NS" ip link set "$NS_IF" up
  ip netns exec "$NS" ip link set lo up
  # tbf on both ends: requests and responses each get RATE. burst must
  # hold at least one MTU-sized packet per timer tick; 64 KiB does at 100
  # Mbit/s; latency bounds the queue.
  tc qdisc add dev "$HOST_IF" root tbf rate "$RATE" burst 64kb latency 50ms
  ip netns exec "$NS" tc qdisc add dev "$NS_IF" root tbf rate "$RATE" burst 64kb latency 50ms

  cat > "$work/ns-registry.yml" <<CONFIG
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false  # bench/lazy/lazy_e2e_bench.sh counts the bytes served
storage:
  filesystem:
    rootdirectory: $storage
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $NET.2:5000
  secret: evs-bench-secret
CONFIG
  ip netns exec "$NS" docker-registry serve "$work/ns-registry.yml" > "$work/ns-registry.log" 2>&1 &
  echo $! > "$work/ns-registry.pid"
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/$NET.2/5000") 2>/dev/null && break
    sleep 0.05
  done
  "$proxy" --listen "127.0.0.1:$SHAPED_PORT" --upstream "$NET.2:5000" --delay-ms "$DELAY_MS" \
    > "$work/delay.log" 2>&1 &
  echo $! > "$work/delay.pid"
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$SHAPED_PORT") 2>/dev/null && break
    sleep 0.05
  done
  echo "direct=$direct"
  echo "shaped=127.0.0.1:$SHAPED_PORT"
  ;;
check)
  # A 20 MB blob through both paths: throughput and the round trip of a
  # small request.
  direct=$(sed -n 's/.*addr: \(127.0.0.1:[0-9]*\).*/\1/p' "$work/registry/config.yml")
  head -c 20000000 /dev/urandom > "$work/check.bin"
  digest=sha256:$(sha256sum "$work/check.bin" | cut -d' ' -f1)
  loc=$(curl -sSf -X POST -D - "http://$direct/v2/check/blobs/uploads/" -o /dev/null |
        tr -d '\r' | sed -n 's/^Location: //Ip')
  case "$loc" in http*) ;; *) loc="http://$direct$loc" ;; esac
  sep='?'; case "$loc" in *\?*) sep='&' ;; esac
  curl -sSf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$work/check.bin" \
    "$loc${sep}digest=$digest" -o /dev/null
  rm -f "$work/check.bin"
  for host in "$direct" "127.0.0.1:$SHAPED_PORT"; do
    curl -sS -o /dev/null -w "$host: %{size_download} bytes in %{time_total} s = %{speed_download} B/s, first byte after %{time_starttransfer} s\n" \
      "http://$host/v2/check/blobs/$digest"
    curl -sS -o /dev/null -r 0-0 -w "$host: 1-byte range request: %{time_total} s\n" \
      "http://$host/v2/check/blobs/$digest"
  done
  ;;
down)
  down
  ;;
*)
  usage
  ;;
esac
