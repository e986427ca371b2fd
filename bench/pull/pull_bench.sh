#!/bin/bash
# bench/pull: pulling a multi-layer image of ≥ 300 MB from a local registry
# into an OCI image layout, `evs image pull` next to
# `skopeo copy docker://… oci:…` on the same image and registry, in the same
# run (issue 4, point 4). Target: evs at least as fast as skopeo
# (ratio evs/skopeo ≤ 1.0).
#
# The image: LAYERS gzip layers of random data (sizes rising from 5 to
# 80 MB, 330 MB in all by default) plus a config, built with tar and gzip
# and pushed once with skopeo. Each run pulls into an empty directory; the
# two tools alternate, RUNS times each; the median and best wall times are
# printed with CPU seconds (user+sys), which other load on the machine does
# not move.
#
# Usage: bench/pull/pull_bench.sh BUILD_DIR [WORK_DIR]
# Env:   RUNS (default 5), LAYER_MB (space-separated layer sizes in MB),
#        JOBS (evs --jobs, default 4).
# Needs: docker-registry, skopeo, tar, gzip, sha256sum; ~1.5 GB in WORK_DIR.
set -euo pipefail

BUILD=${1:?usage: $0 BUILD_DIR [WORK_DIR]}
EVS=$(realpath "$BUILD/src/cli/evs")
WORK=${2:-/var/tmp/evs-pull-bench}
RUNS=${RUNS:-5}
JOBS=${JOBS:-4}
LAYER_MB=${LAYER_MB:-"5 10 20 35 50 60 70 80"}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REGISTRY_SH="$HERE/../../tests/tools/local-registry.sh"

[ -x "$EVS" ] || { echo "no evs binary at $EVS (ninja -C $BUILD evs)" >&2; exit 1; }
for p in docker-registry skopeo tar gzip sha256sum; do
  command -v "$p" >/dev/null || { echo "needs $p" >&2; exit 1; }
done
rm -rf "$WORK"
mkdir -p "$WORK"
cleanup() { "$REGISTRY_SH" stop "$WORK/registry" || true; }
trap cleanup EXIT

echo "== building the image: layers of ${LAYER_MB} MB"
layout="$WORK/src"
mkdir -p "$layout/blobs/sha256"
echo '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
layers_json=""
diff_ids=""
total=0
i=0
for mb in $LAYER_MB; do
  d="$WORK/layer$i"
  mkdir -p "$d/data"
  head -c $((mb * 1000 * 1000)) /dev/urandom > "$d/data/blob$i.bin"
  tar --sort=name --mtime=@0 --owner=0 --group=0 -C "$d" -cf "$d.tar" data
  diff_id=$(sha256sum "$d.tar" | cut -d' ' -f1)
  gzip -n -1 -c "$d.tar" > "$d.tar.gz"
  digest=$(sha256sum "$d.tar.gz" | cut -d' ' -f1)
  size=$(stat -c %s "$d.tar.gz")
  mv "$d.tar.gz" "$layout/blobs/sha256/$digest"
  rm -rf "$d" "$d.tar"
  layers_json+="${layers_json:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$digest\",\"size\":$size}"
  diff_ids+="${diff_ids:+,}\"sha256:$diff_id\""
  total=$((total + size))
  i=$((i + 1))
done
config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diff_ids]}}"
printf '%s' "$config" > "$WORK/config"
cdigest=$(sha256sum "$WORK/config" | cut -d' ' -f1)
mv "$WORK/config" "$layout/blobs/sha256/$cdigest"
manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cdigest\",\"size\":${#config}},\"layers\":[$layers_json]}"
printf '%s' "$manifest" > "$WORK/manifest"
mdigest=$(sha256sum "$WORK/manifest" | cut -d' ' -f1)
msize=$(stat -c %s "$WORK/manifest")
mv "$WORK/manifest" "$layout/blobs/sha256/$mdigest"
echo "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$mdigest\",\"size\":$msize,\"annotations\":{\"org.opencontainers.image.ref.name\":\"v1\"}}]}" > "$layout/index.json"
echo "   $i layers, $((total / 1000000)) MB compressed"

host=$("$REGISTRY_SH" start "$WORK/registry")
ref="$host/bench/pull:v1"
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:v1" "docker://$ref"
echo "== registry $host; pulling $ref ($RUNS runs each, alternating)"

TIMEFORMAT='%R %U %S'
evs_times=()
skopeo_times=()
measure() {  # prints "wall user sys" of the command; fails if it fails
  local out
  out=$( { time "$@" >"$WORK/cmd.log" 2>&1; } 2>&1 ) || { cat "$WORK/cmd.log" >&2; return 1; }
  echo "$out"
}
for run in $(seq 1 "$RUNS"); do
  rm -rf "$WORK/out-evs" "$WORK/out-skopeo"
  sync
  evs_times+=("$(measure "$EVS" image pull "$ref" --oci-layout "$WORK/out-evs" --jobs "$JOBS")")
  skopeo_times+=("$(measure skopeo copy --quiet --src-tls-verify=false "docker://$ref" \
    "oci:$WORK/out-skopeo:v1")")
  read -r ew eu es <<< "${evs_times[-1]}"
  read -r sw su ss <<< "${skopeo_times[-1]}"
  awk -v r="$run" -v ew="$ew" -v ec="$(awk "BEGIN{print $eu + $es}")" -v sw="$sw" \
      -v sc="$(awk "BEGIN{print $su + $ss}")" \
      'BEGIN { printf "   run %d: evs %.3f s (cpu %.2f s)   skopeo %.3f s (cpu %.2f s)\n", r, ew, ec, sw, sc }'
done

# Both tools wrote every blob, byte for byte.
for b in "$layout"/blobs/sha256/*; do
  for out in out-evs out-skopeo; do
    cmp -s "$b" "$WORK/$out/blobs/sha256/$(basename "$b")" \
      || { echo "$out: blob $(basename "$b") differs or is missing" >&2; exit 1; }
  done
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
best() { sort -n | head -1; }
walls() { printf '%s\n' "$@" | awk '{ print $1 }'; }
cpus() { printf '%s\n' "$@" | awk '{ print $2 + $3 }'; }
evs_med=$(walls "${evs_times[@]}" | median)
evs_best=$(walls "${evs_times[@]}" | best)
evs_cpu=$(cpus "${evs_times[@]}" | median)
sk_med=$(walls "${skopeo_times[@]}" | median)
sk_best=$(walls "${skopeo_times[@]}" | best)
sk_cpu=$(cpus "${skopeo_times[@]}" | median)
mb=$((total / 1000000))
echo
echo "== results: $mb MB in $i layers, median of $RUNS runs"
awk -v mb="$mb" -v em="$evs_med" -v eb="$evs_best" -v ec="$evs_cpu" \
    -v sm="$sk_med" -v sb="$sk_best" -v sc="$sk_cpu" 'BEGIN {
  printf "evs image pull   median %6.2f s  best %6.2f s  (%5.0f MB/s)  cpu %5.2f s\n", em, eb, mb / em, ec
  printf "skopeo copy      median %6.2f s  best %6.2f s  (%5.0f MB/s)  cpu %5.2f s\n", sm, sb, mb / sm, sc
  printf "ratio evs/skopeo: wall %.2f (target <= 1.00), cpu %.2f\n", em / sm, ec / sc
}'
