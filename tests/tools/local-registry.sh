#!/bin/bash
# A throwaway registry for shell-based tests and benchmarks: Debian's
# docker-registry on 127.0.0.1 at a free port, storage under DIR. The shell
# twin of tests/support/local_registry.h.
#
#   host=$(tests/tools/local-registry.sh start DIR [USER:PASSWORD])   # prints 127.0.0.1:PORT
#   tests/tools/local-registry.sh stop DIR                             # stops it (DIR stays)
#
# With USER:PASSWORD the registry requires Basic auth (htpasswd -B). With
# EVS_REGISTRY_ACCESS_LOG=1 it logs every request to DIR/registry.log
# (combined format: the demo and bench/pull-run count the bytes served).
set -euo pipefail

usage() { echo "usage: $0 start DIR [USER:PASSWORD] | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
access_log_disabled=true
[ "${EVS_REGISTRY_ACCESS_LOG:-0}" = 1 ] && access_log_disabled=false
dir=$(mkdir -p "$2" && cd "$2" && pwd)

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

case "$cmd" in
start)
  command -v docker-registry >/dev/null || { echo "$0: docker-registry not installed" >&2; exit 1; }
  mkdir -p "$dir/storage"
  auth=""
  if [ $# -ge 3 ]; then
    user=${3%%:*}
    pass=${3#*:}
    htpasswd -Bbn "$user" "$pass" > "$dir/htpasswd"
    auth="auth:
  htpasswd:
    realm: evs-test
    path: $dir/htpasswd"
  fi
  for attempt in 1 2 3 4 5; do
    port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    port_free "$port" || continue
    cat > "$dir/config.yml" <<CONFIG
version: 0.1
log:
  level: warn
  accesslog:
    disabled: $access_log_disabled
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: evs-test-secret
$auth
CONFIG
    docker-registry serve "$dir/config.yml" >> "$dir/registry.log" 2>&1 &
    echo $! > "$dir/pid"
    for _ in $(seq 1 200); do
      if ! port_free "$port"; then
        echo "127.0.0.1:$port" > "$dir/host"
        echo "127.0.0.1:$port"
        exit 0
      fi
      kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
      sleep 0.05
    done
    kill "$(cat "$dir/pid")" 2>/dev/null || true
  done
  echo "$0: docker-registry did not start; see $dir/registry.log" >&2
  exit 1
  ;;
stop)
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid" "$dir/host"
  fi
  ;;
*) usage ;;
esac
