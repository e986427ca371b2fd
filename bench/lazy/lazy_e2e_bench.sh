#!/bin/bash
# bench/lazy/lazy_e2e_bench.sh: lazy pulling end to end (issue 6 point 4;
# DESIGN.md §8), in one run:
#
# 1. read throughput of a large file in a lazy layer once fully fetched,
#    next to a local verified mount of the same image (bench/lazy/lazy_bench
#    --throughput-only; target >= 0.9);
# 2. pull start to first output of a Python image (>= 300 MB gzip, built by
#    bench/pull-run from this machine's python3.11 and libraries) with the
#    registry behind a shaped link (bench/lazy/shaped-link.sh: veth into a
#    network namespace, tbf 100 Mbit/s both ways, 20 ms round trip), for
#    containerd's overlayfs snapshotter (full pull) and evs lazy (the image
#    converted once by `evs image convert --layer-media-type oci`), two
#    workloads — `print("hello")` and a heavier one that imports 20
#    standard modules — with the layer bytes the registry served before the
#    first output; the ratio evs-lazy / overlayfs is the figure (target
#    <= 0.25).
#
# Usage: bench/lazy/lazy_e2e_bench.sh BUILD_DIR [WORK_DIR]
# Env:   RUNS (default 3), IMAGE_MB (default 1500), RATE, DELAY_MS (the link;
#        shaped-link.sh), WORKLOADS (default "hello imports").
# Needs: what bench/pull-run/pull_run_bench.sh and bench/lazy/shaped-link.sh
#        need (root, containerd, ctr-remote, runc, docker-registry, skopeo,
#        python3.11, ip, tc); ~5 GB in WORK.
set -euo pipefail

BUILD=$(realpath "${1:?usage: $0 BUILD_DIR [WORK_DIR]}")
WORK=${2:-/var/tmp/evs-lazy-e2e-bench}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$WORK"
WORK=$(realpath "$WORK")
for t in lazy_bench lazy_delay_proxy; do
  [ -x "$BUILD/bench/lazy/$t" ] || { echo "no $BUILD/bench/lazy/$t (ninja -C $BUILD $t)" >&2; exit 1; }
done

link="$WORK/link"
trap '"$HERE/shaped-link.sh" down "$link" >/dev/null 2>&1 || true' EXIT
hosts=$("$HERE/shaped-link.sh" up "$link" "$BUILD")
direct=$(sed -n 's/^direct=//p' <<< "$hosts")
shaped=$(sed -n 's/^shaped=//p' <<< "$hosts")
echo "== the link (direct $direct, shaped $shaped)"
"$HERE/shaped-link.sh" check "$link"

echo
# First, on a quiet machine: right after part 2 (gigabytes written and
# removed) it measured half as fast.
echo "== 1. read throughput of a fully fetched lazy layer (unshaped registry)"
"$BUILD/bench/lazy/lazy_bench" --registry "$direct" --work "$WORK/throughput" --throughput-only \
  --runs 5
echo
echo "== 2. pull to first output over the shaped link"
PUSH_HOST=$direct PULL_HOST=$shaped REGISTRY_LOG="$link/ns-registry.log" \
  MODES="overlayfs evs-lazy" WORKLOADS=${WORKLOADS:-"hello imports"} \
  "$HERE/../pull-run/pull_run_bench.sh" "$BUILD" "$WORK/pull-run"

