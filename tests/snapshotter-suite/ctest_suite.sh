#!/bin/bash
# CTest entry for containerd's snapshotter conformance suite against
# containerd-evs-grpc (see README.md here).
#
#   ctest_suite.sh DAEMON_BINARY WORK_DIR [extra daemon flags...]
#
# Builds the harness into WORK_DIR/bin on first use (Debian's golang-go and
# golang-github-containerd-containerd-dev, no apt), then runs all subtests with
# --strict-cleanup. Exit 77 (CTest: skipped) when not root or when Go or
# containerd's sources are missing.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DAEMON="$1"
WORK="$2"
shift 2
EXTRA="$*"

if [ "$(id -u)" != 0 ]; then echo "skip: the suite mounts filesystems; needs root"; exit 77; fi
command -v go >/dev/null || { echo "skip: needs go (Debian golang-go)"; exit 77; }
[ -d /usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite ] || {
    echo "skip: needs containerd sources (Debian golang-github-containerd-containerd-dev)"; exit 77; }

mkdir -p "$WORK"
BIN="$WORK/bin"
if [ ! -x "$BIN/snapshotter-suite.test" ] || [ "$HERE/suite/suite_test.go" -nt "$BIN/snapshotter-suite.test" ] ||
   [ "$HERE/suite/proxy_test.go" -nt "$BIN/snapshotter-suite.test" ]; then
    OUT_DIR="$BIN" NO_APT=1 GOCACHE="$WORK/gocache" "$HERE/build.sh" || exit 1
fi
OUT="$WORK/run"
rm -rf "$OUT"
exec "$HERE/run.sh" --bin-dir "$BIN" --out "$OUT" --strict-cleanup \
    "$DAEMON --root {root} --address {socket} --config /dev/null $EXTRA"
