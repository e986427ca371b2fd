#!/bin/bash
# bench/pull-run: from the start of a pull to the first output of a container
# (issue 5 point 4; DESIGN.md §8), for one multi-layer image on a local
# registry, three ways, in one run:
#
#   overlayfs  containerd 1.6's own overlayfs snapshotter (the baseline)
#   evs-unpack evs, containerd downloads and unpacks (convert_on_pull = false)
#   evs-cop    evs convert-on-pull: evs downloads and converts every layer
#   evs-cop-trusting  (not by default) convert-on-pull with verify_diff_id =
#              false: what the diffID check costs
#   evs-lazy   evs lazy pull of the image converted by `evs image convert
#              --layer-media-type oci`
#              (blocks fetched when read; bytes fetched before the output
#              are reported)
#
# Every sample is cold (reference/remote-snapshotters.md §3, stargz's
# hello-bench method): a fresh containerd root and snapshotter root, caches
# dropped, then `ctr-remote images rpull` (containerd's client pull with
# unpack: the path the CRI takes, 3 downloads at once) and `ctr run` of
# `python3 -c 'print("hello")'` until "hello" is printed. The modes alternate
# RUNS times; medians are printed, with the ratios to overlayfs (target:
# evs-cop <= 0.7; DESIGN.md §8 aims at 0.15), the CPU time containerd and
# the daemon spent, and the disk each mode uses (snapshotter root +
# containerd's content store, allocated bytes).
#
# The image is built once from files on this machine into WORK/image: a
# busybox-static shell and the C libraries Python needs, the Python 3.11
# runtime, then layers of shared libraries and of /usr/share (IMAGE_MB of
# them, uncompressed), gzip -6 as registries serve them, plus a top layer
# that deletes a file and makes a directory opaque.
#
# Usage: bench/pull-run/pull_run_bench.sh BUILD_DIR [WORK_DIR]
# Env:   RUNS (default 3), IMAGE_MB (default 1500: ~1 GB, >= 300 MB gzip), VERITY (evs --verity,
#        default auto), MODES (default "overlayfs evs-unpack evs-cop evs-lazy"),
#        WORKLOADS (default "hello"; "imports" is the heavier one: python3
#        imports 20 standard modules, ~270 with their imports, then prints hello),
#        REBUILD=1 (build the image again),
#        PUSH_HOST, PULL_HOST, REGISTRY_LOG: use a registry already running
#        (the image is pushed and converted through PUSH_HOST, pulled
#        through PULL_HOST — e.g. the same storage behind a shaped link,
#        bench/lazy/lazy_e2e_bench.sh — and REGISTRY_LOG is its access log)
#        instead of starting one on 127.0.0.1.
# Needs: root, containerd, ctr, ctr-remote (stargz-snapshotter), runc,
#        docker-registry, skopeo, python3.11, busybox-static, gzip; ~4 GB in WORK.
set -euo pipefail

BUILD=${1:?usage: $0 BUILD_DIR [WORK_DIR]}
BUILD=$(realpath "$BUILD")
DAEMON="$BUILD/plugin/containerd-evs-grpc"
REGISTRY_SH="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tests/tools/local-registry.sh"
WORK=${2:-/var/tmp/evs-pull-run-bench}
RUNS=${RUNS:-3}
IMAGE_MB=${IMAGE_MB:-1500}
VERITY=${VERITY:-auto}
MODES=${MODES:-"overlayfs evs-unpack evs-cop evs-lazy"}
WORKLOADS=${WORKLOADS:-hello}
PUSH_HOST=${PUSH_HOST:-}
PULL_HOST=${PULL_HOST:-}
REGISTRY_LOG=${REGISTRY_LOG:-}

[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
[ -x "$DAEMON" ] || { echo "no daemon at $DAEMON (ninja -C $BUILD containerd-evs-grpc)" >&2; exit 1; }
for p in containerd ctr ctr-remote runc docker-registry skopeo python3.11 gzip tar curl; do
  command -v "$p" >/dev/null || { echo "needs $p" >&2; exit 1; }
done
[ -x /bin/busybox ] || { echo "needs /bin/busybox (busybox-static)" >&2; exit 1; }
mkdir -p "$WORK"
WORK=$(realpath "$WORK")
S="$WORK/s"  # the sample's scratch directory (short: socket paths)

ctd_pid=""
evs_pid=""
registry_pid=""
stop_world() {
  if [ -n "$ctd_pid" ]; then
    kill "$ctd_pid" 2>/dev/null || true
    while kill -0 "$ctd_pid" 2>/dev/null; do sleep 0.05; done
    ctd_pid=""
  fi
  if [ -n "$evs_pid" ]; then
    kill "$evs_pid" 2>/dev/null || true
    while kill -0 "$evs_pid" 2>/dev/null; do sleep 0.05; done
    evs_pid=""
  fi
  # The daemon unmounts what no container uses when it stops; anything
  # left is detached.
  { grep -o " $S/[^ ]*" /proc/self/mounts 2>/dev/null || true; } | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf "$S"
}
cleanup() {
  stop_world
  if [ -n "$registry_pid" ]; then "$REGISTRY_SH" stop "$WORK/registry"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- the image
layout="$WORK/image"
build_image() {
  echo "== building the image from this machine's files (IMAGE_MB=$IMAGE_MB)"
  rm -rf "$layout" "$WORK/layers"
  mkdir -p "$layout/blobs/sha256" "$WORK/layers"
  echo '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
  local L="$WORK/layers"

  # 0: a shell and the C libraries python3.11 links (usr-merged layout).
  local base="$L/base"
  mkdir -p "$base/usr/bin" "$base/usr/lib/x86_64-linux-gnu" "$base/usr/lib64" "$base/etc" \
           "$base/tmp" "$base/proc" "$base/sys" "$base/dev"
  cp /bin/busybox "$base/usr/bin/"
  for a in sh cat ls echo head rm mkdir; do ln -s busybox "$base/usr/bin/$a"; done
  ln -s usr/bin "$base/bin"; ln -s usr/lib "$base/lib"; ln -s usr/lib64 "$base/lib64"
  for lib in $(ldd /usr/bin/python3.11 | grep -o '/[^ ]*' | sort -u); do
    cp -L "$lib" "$base/usr/lib/x86_64-linux-gnu/"
  done
  mv "$base/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$base/usr/lib64/"
  echo "root:x:0:0:root:/root:/bin/sh" > "$base/etc/passwd"

  # 1: the Python runtime (below).
  # 2..4: bulk, IMAGE_MB in all: shared libraries, then /usr/share.
  local budget=$((IMAGE_MB * 1000 * 1000))
  local per=$((budget / 3))
  # (awk stops early, so sort may get SIGPIPE: hence the "|| true")
  find /usr/lib/x86_64-linux-gnu -xdev -type f -name '*.so*' -size -40M -printf '%s\t%P\n' \
    2>/dev/null | sort -t$'\t' -k2 | awk -F'\t' -v per="$per" \
    '{ if (t + $1 > 2 * per) exit; t += $1; print "usr/lib/x86_64-linux-gnu/" $2 }' \
    > "$L/libs.all" || true
  local half=$(( $(wc -l < "$L/libs.all") / 2 ))
  head -n "$half" "$L/libs.all" > "$L/2.list"
  tail -n +"$((half + 1))" "$L/libs.all" > "$L/3.list"
  find /usr/share -xdev -type f -size -8M -printf '%s\t%P\n' 2>/dev/null | sort -t$'\t' -k2 |
    awk -F'\t' -v per="$per" '{ if (t + $1 > per) exit; t += $1; print "usr/share/" $2 }' \
    > "$L/4.list" || true
  # 5: the top layer deletes a file and makes a directory opaque.
  local top="$L/top"
  local gone
  gone=$(head -n1 "$L/2.list")
  mkdir -p "$top/usr/share/doc" "$top/app" "$top/$(dirname "$gone")"
  : > "$top/usr/share/doc/.wh..wh..opq"
  : > "$top/$(dirname "$gone")/.wh.$(basename "$gone")"
  echo 'print("hello")' > "$top/app/hello.py"

  local layers_json="" diff_ids="" total=0 total_tar=0
  for i in 0 1 2 3 4 5; do
    local tar="$L/$i.tar"
    local opts=(--sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner)
    case $i in
      0) tar "${opts[@]}" -C "$base" -cf "$tar" . ;;
      1) tar "${opts[@]}" --exclude=usr/lib/python3.11/test --exclude='__pycache__' \
           -C / -cf "$tar" usr/bin/python3.11 usr/lib/python3.11
         # python3 -> python3.11 in the image
         mkdir -p "$L/py/usr/bin"; ln -sf python3.11 "$L/py/usr/bin/python3"
         tar "${opts[@]}" -C "$L/py" -rf "$tar" usr/bin/python3 ;;
      2|3|4) tar "${opts[@]}" -C / -cf "$tar" --verbatim-files-from -T "$L/$i.list" ;;
      5) tar "${opts[@]}" -C "$top" -cf "$tar" . ;;
    esac
    local diff_id size digest
    diff_id=$(sha256sum "$tar" | cut -d' ' -f1)
    total_tar=$((total_tar + $(stat -c %s "$tar")))
    gzip -n -6 -c "$tar" > "$tar.gz"
    digest=$(sha256sum "$tar.gz" | cut -d' ' -f1)
    size=$(stat -c %s "$tar.gz")
    mv "$tar.gz" "$layout/blobs/sha256/$digest"
    rm -f "$tar"
    layers_json+="${layers_json:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$digest\",\"size\":$size}"
    diff_ids+="${diff_ids:+,}\"sha256:$diff_id\""
    total=$((total + size))
  done
  local config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/usr/bin:/bin\"],\"Cmd\":[\"/bin/sh\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diff_ids]}}"
  printf '%s' "$config" > "$WORK/config"
  local cdigest msize mdigest
  cdigest=$(sha256sum "$WORK/config" | cut -d' ' -f1)
  mv "$WORK/config" "$layout/blobs/sha256/$cdigest"
  local manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cdigest\",\"size\":${#config}},\"layers\":[$layers_json]}"
  printf '%s' "$manifest" > "$WORK/manifest"
  mdigest=$(sha256sum "$WORK/manifest" | cut -d' ' -f1)
  msize=$(stat -c %s "$WORK/manifest")
  mv "$WORK/manifest" "$layout/blobs/sha256/$mdigest"
  echo "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$mdigest\",\"size\":$msize,\"annotations\":{\"org.opencontainers.image.ref.name\":\"v1\"}}]}" > "$layout/index.json"
  echo "$((total_tar / 1000000)) $((total / 1000000)) $IMAGE_MB" > "$layout/sizes"
  rm -rf "$WORK/layers"
}
built_mb=$(awk '{ print $3 }' "$layout/sizes" 2>/dev/null || true)
if [ "${REBUILD:-0}" = 1 ] || [ "$built_mb" != "$IMAGE_MB" ]; then build_image; fi
read -r tar_mb gz_mb _ < "$layout/sizes"
echo "== image: 6 layers, $tar_mb MB uncompressed, $gz_mb MB gzip ($layout)"

# The registry: docker-registry on a free port, logging every request (the
# bytes a lazy pull fetched are read from its access log).
start_registry() {
  rm -rf "$WORK/registry"
  host=$(EVS_REGISTRY_ACCESS_LOG=1 "$REGISTRY_SH" start "$WORK/registry")
  registry_pid=$(cat "$WORK/registry/pid")
}
if [ -n "$PULL_HOST" ]; then
  [ -n "$PUSH_HOST" ] && [ -f "$REGISTRY_LOG" ] ||
    { echo "PULL_HOST needs PUSH_HOST and REGISTRY_LOG (an existing file)" >&2; exit 1; }
  host=$PUSH_HOST
  pull_host=$PULL_HOST
  reglog=$REGISTRY_LOG
else
  start_registry
  pull_host=$host
  reglog="$WORK/registry/registry.log"
fi
ref="$host/bench/pull-run:v1"
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:v1" "docker://$ref"
lazy_ref="$host/bench/pull-run:lazy"
if [[ " $MODES " == *" evs-lazy "* ]]; then
  # The lazy image: `evs image convert`, with the layer media type
  # containerd 1.6 takes as a layer (docs/lazy.md, "Which media type").
  t0=$(date +%s%N)
  "$BUILD/src/cli/evs" image convert --layer-media-type oci --hosts-dir "" "$ref" "$lazy_ref" \
    >/dev/null
  t1=$(date +%s%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "== evs image convert: %.1f s (once; not in the timings)\n", (b - a) / 1e9 }'
fi
pull_ref="$pull_host/bench/pull-run:v1"
pull_lazy_ref="$pull_host/bench/pull-run:lazy"
echo "== registry $pull_host; $RUNS cold samples per mode and workload, alternating; verity=$VERITY"

# ---------------------------------------------------------------- a sample
served_since() {  # layer blob bytes in the registry's access log after line $1
  tail -n +"$(($1 + 1))" "$reglog" |
    awk '/"GET \/v2\/bench\/pull-run\/blobs\/sha256:/ { t += $10 } END { print t + 0 }'
}
cpu_of() {  # utime+stime of a live process, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}
wait_socket() {
  for _ in $(seq 1 1000); do [ -S "$1" ] && return 0; sleep 0.01; done
  echo "no socket $1" >&2; return 1
}
now() { date +%s%N; }

# The workloads: the command the container runs; each prints "hello" first.
workload_cmd() {
  case $1 in
    hello) echo "print('hello')" ;;
    # 20 modules of the standard library, ~270 with what they import
    # (python3.11 -X importtime); none needs a library the image lacks.
    imports) echo "import asyncio, json, email.mime.multipart, http.server, xml.dom.minidom, argparse, logging.handlers, unittest, urllib.request, concurrent.futures, tarfile, zipfile, csv, difflib, pydoc, statistics, typing, xml.etree.ElementTree, pickle, dataclasses; print('hello')" ;;
    *) echo "unknown workload $1" >&2; return 1 ;;
  esac
}

sample() {  # mode workload -> prints "total_s pull_s run_s cpu_s disk_bytes fetched_bytes"
  local mode=$1 workload=$2 snap=evs cmd
  cmd=$(workload_cmd "$workload")
  stop_world
  mkdir -p "$S/ctd"
  cat > "$S/ctd/config.toml" <<EOF
version = 2
root = "$S/ctd/root"
state = "$S/ctd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$S/ctd/c.sock"
[ttrpc]
  address = "$S/ctd/c.sock.ttrpc"
[proxy_plugins]
  [proxy_plugins.evs]
    type = "snapshot"
    address = "$S/evs.sock"
EOF
  local image=$pull_ref
  case $mode in
    overlayfs) snap=overlayfs ;;
    evs-unpack|evs-cop|evs-cop-trusting|evs-lazy)
      local cop=true diff=true
      [ "$mode" = evs-unpack ] && cop=false
      [ "$mode" = evs-cop-trusting ] && diff=false
      [ "$mode" = evs-lazy ] && image=$pull_lazy_ref
      "$DAEMON" --config /dev/null --root "$S/evs" --address "$S/evs.sock" --verity "$VERITY" \
        --registry-config-path "" --convert-on-pull "$cop" --verify-diff-id "$diff" \
        > "$S/evs.log" 2>&1 &
      evs_pid=$!
      wait_socket "$S/evs.sock" ;;
  esac
  containerd --config "$S/ctd/config.toml" > "$S/ctd.log" 2>&1 &
  ctd_pid=$!
  wait_socket "$S/ctd/c.sock"
  local ctr="ctr --address $S/ctd/c.sock --namespace bench"
  sync
  echo 3 > /proc/sys/vm/drop_caches

  local t0 t1 t2 out log_before
  log_before=$(wc -l < "$reglog")
  t0=$(now)
  ctr-remote --address "$S/ctd/c.sock" --namespace bench images rpull --plain-http \
    --snapshotter "$snap" "$image" > "$S/pull.log" 2>&1 || { cat "$S/pull.log" >&2; return 1; }
  t1=$(now)
  # The first line, and at that moment the layer bytes the registry has
  # served since the pull began.
  out=$($ctr run --rm --snapshotter "$snap" "$image" hello /usr/bin/python3 -c "$cmd" |
        { IFS= read -r first; echo "$first $(served_since "$log_before")"; cat >/dev/null; })
  t2=$(now)
  local fetched=${out#* }
  out=${out%% *}
  [ "$out" = hello ] || { echo "$mode $workload: container printed '$out'" >&2; return 1; }

  local cpu disk snaproot
  cpu=$(cpu_of "$ctd_pid")
  [ -n "$evs_pid" ] && cpu=$(awk -v a="$cpu" -v b="$(cpu_of "$evs_pid")" 'BEGIN { print a + b }')
  if [ "$snap" = overlayfs ]; then
    snaproot="$S/ctd/root/io.containerd.snapshotter.v1.overlayfs"
  else
    snaproot="$S/evs"
  fi
  # -x: not into the layer mounts under evs/m. (containerd may be removing
  # the container's snapshot meanwhile: du's complaints about it are noise.)
  disk=$({ du -sx --block-size=1 "$snaproot" "$S/ctd/root/io.containerd.content.v1.content" \
           2>/dev/null || true; } | awk '{ t += $1 } END { print t }')
  awk -v a="$t0" -v b="$t1" -v c="$t2" -v cpu="$cpu" -v d="$disk" -v f="$fetched" \
    'BEGIN { printf "%.3f %.3f %.3f %s %d %d\n", (c - a) / 1e9, (b - a) / 1e9, (c - b) / 1e9, cpu, d, f }'
}

declare -A results
for run in $(seq 1 "$RUNS"); do
  for workload in $WORKLOADS; do
    for mode in $MODES; do
      # Not in $(…): the sample's daemons must be known to this shell, which
      # stops them before the next sample and on exit.
      sample "$mode" "$workload" > "$WORK/sample.out"
      r=$(cat "$WORK/sample.out")
      results["$mode/$workload"]+="$r"$'\n'
      read -r total pull runs cpu disk fetched <<< "$r"
      printf '   run %d %-10s %-8s total %7.2f s (pull %6.2f, run %5.2f)  cpu %6.2f s  disk %5d MB  fetched %4d MB\n' \
        "$run" "$mode" "$workload" "$total" "$pull" "$runs" "$cpu" $((disk / 1000000)) $((fetched / 1000000))
    done
  done
done
stop_world

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { printf '%s' "${results[$1]}" | awk -v c="$2" 'NF { print $c }' | median; }
ratio() {  # mode workload label
  local w=$2
  if [[ " $MODES " == *" overlayfs "* && " $MODES " == *" $1 "* ]]; then
    awk -v a="$(col "$1/$w" 1)" -v b="$(col "overlayfs/$w" 1)" -v m="$1" -v w="$w" -v l="$3" 'BEGIN {
      printf "ratio %s / overlayfs (%s): %.2f (%s)\n", m, w, a / b, l }'
  fi
}
for workload in $WORKLOADS; do
  echo
  echo "== $workload: pull start to first output, median of $RUNS cold runs ($tar_mb MB image, $gz_mb MB gzip, registry $pull_host)"
  base=""
  for mode in $MODES; do
    k="$mode/$workload"
    t=$(col "$k" 1); p=$(col "$k" 2); r=$(col "$k" 3); c=$(col "$k" 4); d=$(col "$k" 5)
    f=$(col "$k" 6)
    [ -z "$base" ] && base=$t
    awk -v m="$mode" -v t="$t" -v p="$p" -v r="$r" -v c="$c" -v d="$d" -v f="$f" -v b="$base" 'BEGIN {
      printf "%-10s %6.2f s (pull %6.2f + run %5.2f) %5.2f x overlayfs  cpu %6.2f s  disk %5d MB  fetched before output %4d MB\n",
             m, t, p, r, t / b, c, d / 1e6, f / 1e6 }'
  done
  ratio evs-cop "$workload" "target <= 0.70; DESIGN.md §8 aims at 0.15"
  ratio evs-lazy "$workload" "target <= 0.25 over a 100 Mbit/s link; DESIGN.md §8: <= 0.08"
done
