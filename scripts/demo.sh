#!/bin/bash
# The main job, as root on a fresh Debian 12 machine: installs what evs needs,
# builds it, and shows the snapshotter working with containerd, end to end,
# in a scratch directory that is removed on exit (even on failure or ^C):
#
#   1. a local docker-registry, containerd 1.6 (its own config, socket, root
#      and state; a proxy_plugins block naming evs) and containerd-evs-grpc;
#   2. a sample multi-layer image (busybox shell, a data layer, an upper
#      layer that deletes a file and makes a directory opaque), pushed;
#   3. the unpack path: `ctr images pull --snapshotter evs` (containerd
#      downloads and unpacks, evs turns each layer into EROFS + dm-verity
#      tree on commit), then `ctr run`;
#   4. convert-on-pull: `ctr-remote images rpull` (the labels the CRI also
#      sends): evs downloads and converts every layer itself, containerd
#      downloads none — the registry's access log and containerd's content
#      store show it — then `ctr run`;
#   5. lazy pull: the image converted with `evs image convert` (EROFS layers
#      with their dm-verity trees), pulled through evs, which mounts each
#      layer at once and fetches blocks when the container reads them, each
#      verified (DESIGN.md §1; docs/lazy.md); bytes fetched before the first
#      output are printed.
#
# Prints what happened and how long each step took. EVS_BUILD_DIR overrides
# the build directory ($ROOT/build).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${EVS_BUILD_DIR:-$ROOT/build}"
if [ "$(id -u)" != 0 ]; then echo "demo.sh: run as root (containerd, mounts)" >&2; exit 1; fi

now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
declare -a SUMMARY=()
# step NAME COMMAND...: runs it, prints and records how long it took.
step() {
  local name=$1
  shift
  local t0 t1
  t0=$(now)
  "$@"
  t1=$(now)
  SUMMARY+=("$(printf '%-58s %7s s' "$name" "$(secs "$t0" "$t1")")")
  printf '   (%s s)\n' "$(secs "$t0" "$t1")"
}

echo "== 0. installing Debian packages (scripts/install-deps.sh) and building evs"
build() {
  "$ROOT/scripts/install-deps.sh"
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  ninja -C "$BUILD" containerd-evs-grpc evs-verify-layer evs >/dev/null
}
step "install dependencies and build" build
DAEMON="$BUILD/plugin/containerd-evs-grpc"
EVS="$BUILD/src/cli/evs"

WORK="$(mktemp -d /tmp/evs-demo.XXXXXX)"
registry_pid="" evs_pid="" ctd_pid=""
stop() {  # pid: SIGTERM, then wait for it
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
  kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
  local status=$?
  set +e
  if [ -n "$ctd_pid" ]; then
    for ns in unpack pull lazy; do
      ctr --address "$WORK/ctd/c.sock" -n "$ns" task ls -q 2>/dev/null |
        xargs -r -n1 ctr --address "$WORK/ctd/c.sock" -n "$ns" task kill -s KILL >/dev/null 2>&1
    done
  fi
  stop "$ctd_pid"
  stop "$evs_pid"
  stop "$registry_pid"
  # Whatever is still mounted under the scratch directory, innermost first.
  grep -o " $WORK/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$WORK"
  if [ "$status" != 0 ]; then
    echo "demo.sh: failed (exit $status); everything it started is stopped and removed" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait_socket() {
  for _ in $(seq 1 1000); do [ -S "$1" ] && return 0; sleep 0.01; done
  echo "demo.sh: $1 did not appear; see $2" >&2
  tail -n 20 "$2" >&2
  return 1
}

echo "== 1. starting docker-registry, containerd-evs-grpc and containerd in $WORK"
start_world() {
  mkdir -p "$WORK/ctd"
  # The registry logs every request: the access log shows who downloaded
  # which layer.
  HOST=$(EVS_REGISTRY_ACCESS_LOG=1 "$ROOT/tests/tools/local-registry.sh" start "$WORK/registry")
  registry_pid=$(cat "$WORK/registry/pid")

  # evs: its own root and socket; registry credentials from
  # ~/.docker/config.json, mirrors from hosts.toml (none here: a localhost
  # registry is plain http).
  "$DAEMON" --config /dev/null --root "$WORK/evs" --address "$WORK/evs.sock" \
    --registry-config-path "" > "$WORK/evs.log" 2>&1 &
  evs_pid=$!
  wait_socket "$WORK/evs.sock" "$WORK/evs.log"

  cat > "$WORK/ctd/config.toml" <<EOF
version = 2
root = "$WORK/ctd/root"
state = "$WORK/ctd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$WORK/ctd/c.sock"
[ttrpc]
  address = "$WORK/ctd/c.sock.ttrpc"
[proxy_plugins]
  [proxy_plugins.evs]
    type = "snapshot"
    address = "$WORK/evs.sock"
EOF
  containerd --config "$WORK/ctd/config.toml" > "$WORK/containerd.log" 2>&1 &
  ctd_pid=$!
  wait_socket "$WORK/ctd/c.sock" "$WORK/containerd.log"
  echo "   registry $HOST, evs $WORK/evs.sock ($(grep -o 'verity=[a-z]*' "$WORK/evs.log" | tail -1)), containerd $WORK/ctd/c.sock"
}
step "start registry, evs, containerd" start_world
CTR="ctr --address $WORK/ctd/c.sock"

echo "== 2. building a sample image (3 layers) and pushing it"
# The layer digests of a manifest on stdin: its "digest" keys (annotations
# use others) after the config's.
layer_digests() { grep -o '"digest": *"sha256:[0-9a-f]\{64\}"' | tail -n +2 | grep -o 'sha256:[0-9a-f]*'; }
build_image() {
  local b="$WORK/image"
  mkdir -p "$b/l0/bin" "$b/l0/etc" "$b/l0/data" "$b/l0/opaque" "$b/l1/data" "$b/l1/opaque" \
           "$b/l2/etc" "$b/l2/etc/share"
  cp /bin/busybox "$b/l0/bin/"
  for a in sh cat ls echo find wc du head; do ln -s busybox "$b/l0/bin/$a"; done
  echo "layer 0" > "$b/l0/etc/motd"
  echo "deleted in layer 1" > "$b/l0/data/gone.txt"
  echo "kept" > "$b/l0/data/kept.txt"
  echo "hidden by layer 1" > "$b/l0/opaque/old.txt"
  # layer 1: some bulk (this machine's documentation), a whiteout, an
  # opaque directory.
  tar -C /usr/share -cf - doc 2>/dev/null | tar -C "$b/l1/data" -xf -
  : > "$b/l1/data/.wh.gone.txt"
  : > "$b/l1/opaque/.wh..wh..opq"
  echo "new in layer 1" > "$b/l1/opaque/new.txt"
  echo "hello from evs" > "$b/l2/etc/motd"
  umoci init --layout "$b/oci" && umoci new --image "$b/oci:v1"
  for i in 0 1 2; do
    tar --numeric-owner --owner=0 --group=0 -C "$b/l$i" -cf "$b/l$i.tar" .
    umoci raw add-layer --image "$b/oci:v1" "$b/l$i.tar"
  done
  umoci config --image "$b/oci:v1" --config.cmd /bin/sh
  skopeo copy --quiet --dest-tls-verify=false "oci:$b/oci:v1" "docker://$HOST/demo/app:v1"
  IMAGE="$HOST/demo/app:v1"
  LAYERS=$(skopeo inspect --raw --tls-verify=false "docker://$IMAGE" | layer_digests)
  echo "   pushed $IMAGE: $(du -sh "$b/oci/blobs" | cut -f1) of blobs"
}
step "build and push the sample image" build_image
SCRIPT='cat /etc/motd; echo "/data: $(ls /data | tr "\n" " ")"; echo "/opaque: $(ls /opaque)"; test -e /data/gone.txt && echo LEAK; echo "files: $(find / -xdev -type f | wc -l)"'

echo "== 3. unpack path: ctr images pull --snapshotter evs (containerd downloads and unpacks)"
pull_unpack() { $CTR -n unpack images pull --plain-http --snapshotter evs "$IMAGE" >/dev/null; }
step "ctr images pull --snapshotter evs" pull_unpack
echo "   evs stored $(ls "$WORK/evs/layers/sha256" | wc -l) layers as EROFS + dm-verity tree:"
du -sh "$WORK"/evs/layers/sha256/*/layer.erofs | sed "s|$WORK/||; s/^/     /"
echo "   ctr run:"
step "ctr run (unpack path)" $CTR -n unpack run --rm --snapshotter evs "$IMAGE" demo1 /bin/sh -c "$SCRIPT"
$CTR -n unpack images rm --sync "$IMAGE" >/dev/null
echo "   image removed; evs layers left: $(ls "$WORK/evs/layers/sha256" | wc -l)"

echo "== 4. convert-on-pull: ctr-remote images rpull (evs downloads and converts every layer)"
rpull() {
  ctr-remote --address "$WORK/ctd/c.sock" -n pull images rpull --plain-http --snapshotter evs \
    "$IMAGE" >/dev/null
}
log_before=$(wc -l < "$WORK/registry/registry.log")
step "ctr-remote images rpull --snapshotter evs" rpull
grep -E "layer converted|layer prepared remotely" "$WORK/evs.log" |
  sed -E 's/.*(layer converted|layer prepared remotely).* (layer=sha256:[0-9a-f]{12})[0-9a-f]*.* (ms=[0-9]+).*/     \1 \2… \3/'
content=$($CTR -n pull content ls -q)
fetched_by_containerd=0
for l in $LAYERS; do
  case "$content" in *"$l"*) fetched_by_containerd=$((fetched_by_containerd + 1)) ;; esac
done
echo "   layer blobs in containerd's content store: $fetched_by_containerd of 3"
echo "   layer blob downloads during the rpull (registry access log), by user agent:"
for l in $LAYERS; do
  tail -n +"$((log_before + 1))" "$WORK/registry/registry.log" | grep "GET /v2/demo/app/blobs/$l" |
    grep -o '"[^"]*"$' | sort | uniq -c | sed "s/^ */     ${l:0:19}… /"
done
echo "   ctr run:"
step "ctr run (convert-on-pull)" $CTR -n pull run --rm --snapshotter evs "$IMAGE" demo2 /bin/sh -c "$SCRIPT"

echo "== 5. lazy pull: evs image convert, then ctr-remote images rpull (blocks fetched when read)"
lazy_convert() {
  # --layer-media-type oci: containerd 1.6/1.7 take only OCI/Docker layer
  # media types as layers, so the layers are typed
  # application/vnd.oci.image.layer.v1.erofs (the default,
  # application/vnd.erofs.layer.v1, is containerd 2.3's name; docs/lazy.md).
  LAZY="$HOST/demo/app:lazy"
  "$EVS" image convert --layer-media-type oci --hosts-dir "" "$IMAGE" "$LAZY" >/dev/null
  skopeo inspect --raw --tls-verify=false "docker://$LAZY" > "$WORK/lazy-manifest.json"
  LAZY_LAYERS=$(layer_digests < "$WORK/lazy-manifest.json")
}
step "evs image convert (layers become EROFS + dm-verity tree)" lazy_convert
lazy_bytes() {  # layer blob bytes the registry served since line $1 of its log
  local total=0 l
  for l in $LAZY_LAYERS; do
    total=$((total + $(tail -n +"$(($1 + 1))" "$WORK/registry/registry.log" |
      grep "GET /v2/demo/app/blobs/$l " | awk '{ t += $10 } END { print t + 0 }')))
  done
  echo "$total"
}
log_before=$(wc -l < "$WORK/registry/registry.log")
lazy_pull() {
  ctr-remote --address "$WORK/ctd/c.sock" -n lazy images rpull --plain-http --snapshotter evs \
    "$LAZY" >/dev/null
}
step "ctr-remote images rpull (lazy: mounted at once)" lazy_pull
echo "   $(grep -c "lazy layer prepared" "$WORK/evs.log") layers mounted lazily; fetched so far: $(($(lazy_bytes "$log_before") / 1000)) kB (hash trees first, then blocks as read and in the background)"
lazy_run() {
  $CTR -n lazy run --rm --snapshotter evs "$LAZY" demo3 /bin/sh -c "$SCRIPT" | {
    IFS= read -r first
    FIRST_BYTES=$(lazy_bytes "$log_before")
    echo "$first"
    cat
    echo "   fetched before the first output: $((FIRST_BYTES / 1000)) kB of $((LAZY_TOTAL / 1000)) kB of layers"
  }
}
LAZY_TOTAL=0
for l in $LAZY_LAYERS; do
  LAZY_TOTAL=$((LAZY_TOTAL + $(stat -c %s "$WORK/registry/storage/docker/registry/v2/blobs/sha256/${l:7:2}/${l:7}/data")))
done
echo "   ctr run:"
step "ctr run (lazy)" lazy_run

echo
echo "== summary (this machine: $(nproc) CPUs)"
printf '   %s\n' "${SUMMARY[@]}"
