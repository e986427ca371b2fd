#!/bin/bash
# bench/convert: how fast `evs layer convert` turns a gzip layer into an EROFS
# image, as ratios against the floors measured in the same run on the same
# file (issue 2 point 3, DESIGN.md §8):
#
#   gzip -dc > /dev/null              zlib, the classic floor
#   igzip -d -c > /dev/null           ISA-L (Debian package isal): the floor
#                                     the converter is held to (≤ 1.3 ×)
#   evs layer convert (full, index)   blob → EROFS image, fsynced and renamed
#   … + digest checks                 also hashing the blob and the tar (SHA-256)
#                                     and checking both, as convert-on-pull must
#   tar -x, then mkfs.erofs           what Debian 12 offers: erofs-utils 1.5
#                                     has no --tar, so the layer is extracted
#                                     first (not fsynced, unlike evs)
#
# Each row is the best wall time of --runs runs (default 3), with the CPU time
# (user + sys, all threads) and peak RSS of that run. Targets: convert ≤ 1.3 ×
# igzip, peak RSS ≤ 64 MiB.
#
# usage: bench/convert/convert_bench.sh [--runs N] [--evs PATH] [--out-dir DIR]
#                                       [BLOB.tar.gz]
# Without BLOB it builds $TMPDIR/evs-bench-convert/usr.tar.gz once (a tar of
# /usr/include, /usr/share/doc, /usr/share/man and /usr/lib/python3: ~430 MB
# of tar in ~40 000 entries, most of them small files, the hard case for a
# converter) and reuses it. Override the directories with
# EVS_BENCH_PATHS="bin share/doc" (relative to /usr).
#
# The machine's load skews every row; the rows are measured round-robin so
# that it skews them alike, and the load average is printed with the table.
set -euo pipefail

runs=3
evs=""
blob=""
out_dir=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --evs) evs="$2"; shift 2 ;;
    --out-dir) out_dir="$2"; shift 2 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) blob="$1"; shift ;;
  esac
done

root="$(cd "$(dirname "$0")/../.." && pwd)"
if [[ -z "$evs" ]]; then
  for candidate in "$root"/build/src/cli/evs "$root"/build-*/src/cli/evs; do
    if [[ -x "$candidate" ]]; then evs="$candidate"; break; fi
  done
fi
[[ -x "$evs" ]] || { echo "convert_bench: no evs binary (build it, or pass --evs PATH)" >&2; exit 1; }
for tool in gzip igzip tar /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "convert_bench: needs $tool (apt-get install isal time)" >&2; exit 1; }
done

work="${TMPDIR:-/tmp}/evs-bench-convert"
mkdir -p "$work"
if [[ -z "$blob" ]]; then
  blob="$work/usr.tar.gz"
  if [[ ! -s "$blob" ]]; then
    paths="${EVS_BENCH_PATHS:-include share/doc share/man lib/python3}"
    echo "building $blob from /usr/{${paths// /,}} …" >&2
    # shellcheck disable=SC2086
    tar --sort=name -C /usr -cf - $paths 2>/dev/null | gzip -6 > "$blob.tmp"
    mv "$blob.tmp" "$blob"
  fi
fi
out="${out_dir:-$work}/evs-bench-out"
rm -rf "$out"
mkdir -p "$out"
# Every row reads the blob from memory: a copy in /dev/shm (tmpfs), which the
# page-cache reclaim some VMs run (DAMON here) cannot evict between runs.
# The images are written to $work (disk, as in real use) or to --out-dir
# (e.g. /dev/shm, to take the disk out of the comparison).
source_blob="$blob"
shm_blob=""
if [[ -d /dev/shm && -w /dev/shm ]]; then
  shm_blob="$(mktemp /dev/shm/evs-bench-blob.XXXXXX)"
  cp "$blob" "$shm_blob"
  blob="$shm_blob"
fi
trap 'rm -rf "$out" ${shm_blob:+"$shm_blob"}' EXIT

tar_bytes=$(gzip -dc "$blob" | wc -c)
blob_bytes=$(stat -c %s "$blob")
blob_digest="sha256:$(sha256sum "$blob" | cut -d' ' -f1)"
diff_id="sha256:$(gzip -dc "$blob" | sha256sum | cut -d' ' -f1)"

# The rows, measured round-robin (run 1 of every row, then run 2, …) so that
# a change in the machine's load hits all rows alike; each row keeps its best
# wall time and that run's peak RSS.
names=("gzip -dc > /dev/null" "igzip -d -c > /dev/null" "evs layer convert (full)"
       "evs layer convert --mode index" "evs layer convert + digest checks")
cmds=("gzip -dc '$blob' > /dev/null" "igzip -d -c '$blob' > /dev/null"
      "rm -f '$out/full.erofs'; '$evs' layer convert '$blob' '$out/full.erofs'"
      "rm -f '$out/index.erofs'; '$evs' layer convert --mode index '$blob' '$out/index.erofs'"
      "rm -f '$out/checked.erofs'; '$evs' layer convert --blob-digest $blob_digest --diff-id $diff_id '$blob' '$out/checked.erofs'")
if command -v mkfs.erofs >/dev/null; then
  names+=("tar -xzf, then mkfs.erofs (1.5)" "  of which mkfs.erofs")
  cmds+=("rm -rf '$out/x' && mkdir '$out/x' && tar --numeric-owner -C '$out/x' -xzf '$blob'"
         "rm -f '$out/mkfs.erofs'; mkfs.erofs '$out/mkfs.erofs' '$out/x' > /dev/null")
fi
declare -a walls rsses cpus
for ((run = 0; run < runs; run++)); do
  for i in "${!cmds[@]}"; do
    # Setup (rm) is part of the timed shell but costs nothing measurable.
    /usr/bin/time -f "%e %M %U %S" -o "$out/time" bash -c "${cmds[$i]}"
    read -r wall rss user sys < "$out/time"
    if [[ -z "${walls[$i]:-}" ]] || awk "BEGIN{exit !($wall < ${walls[$i]})}"; then
      walls[$i]=$wall
      rsses[$i]=$rss
      cpus[$i]=$(awk "BEGIN{print $user + $sys}")
    fi
  done
done
floor=${walls[1]}
convert_wall=${walls[2]}; convert_rss=${rsses[2]}
index_wall=${walls[3]}; index_rss=${rsses[3]}
image_bytes=$(stat -c %s "$out/full.erofs")
if [[ ${#cmds[@]} -gt 5 ]]; then
  # The extract+mkfs row is the sum of its two steps.
  walls[5]=$(awk "BEGIN{print ${walls[5]} + ${walls[6]}}")
  cpus[5]=$(awk "BEGIN{print ${cpus[5]} + ${cpus[6]}}")
  rsses[5]=$((rsses[5] > rsses[6] ? rsses[5] : rsses[6]))
fi
load=$(cut -d' ' -f1-3 /proc/loadavg)

printf '\nbench/convert: %s\n' "$source_blob"
printf 'blob %.1f MB gzip, tar %.1f MB, image %.1f MB; best of %d runs; images on %s (%s);\n%s, %s cores, load %s\n\n' \
  "$(awk "BEGIN{print $blob_bytes/1e6}")" "$(awk "BEGIN{print $tar_bytes/1e6}")" \
  "$(awk "BEGIN{print $image_bytes/1e6}")" "$runs" "$out" "$(stat -f -c %T "$out")" \
  "$(uname -r)" "$(nproc)" "$load"
printf '%-34s %8s %8s %9s %8s %10s\n' "" "wall s" "× igzip" "tar MB/s" "CPU s" "peak RSS"
for i in "${!names[@]}"; do
  printf '%-34s %8.2f %8.2f %9.0f %8.2f %6.1f MiB\n' "${names[$i]}" "${walls[$i]}" \
    "$(awk "BEGIN{print ${walls[$i]} / $floor}")" \
    "$(awk "BEGIN{w=${walls[$i]}; print (w > 0 ? $tar_bytes / 1e6 / w : 0)}")" \
    "${cpus[$i]}" "$(awk "BEGIN{print ${rsses[$i]} / 1024}")"
done
verdict() { if awk "BEGIN{exit !($1)}"; then echo met; else echo MISSED; fi; }
printf '\ntargets: convert ≤ 1.3 × igzip: %s (%.2f ×, index mode %.2f ×); peak RSS ≤ 64 MiB: %s (%.1f MiB, index %.1f MiB)\n' \
  "$(verdict "$convert_wall <= 1.3 * $floor")" "$(awk "BEGIN{print $convert_wall / $floor}")" \
  "$(awk "BEGIN{print $index_wall / $floor}")" \
  "$(verdict "$convert_rss <= 65536 && $index_rss <= 65536")" \
  "$(awk "BEGIN{print $convert_rss / 1024}")" "$(awk "BEGIN{print $index_rss / 1024}")"
