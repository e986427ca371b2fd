#!/bin/bash
# bench/verity: the verity module's figures, as ratios against a floor or a
# peer measured in the same run (issue 3, point 4; DESIGN.md §8).
#
#   1. tree build of a 1 GiB image (page cache warm): `evs verity format`
#      next to `veritysetup format` on the same file and next to the SHA-256
#      floor (`openssl speed -evp sha256 -bytes 4096`, both cores).
#      Targets: ≥ 0.9 × floor, faster than veritysetup.
#   2. `evs layer convert --verity` over `evs layer convert` on a gzip layer
#      of real files (/usr/lib). Target: verity adds ≤ 15 %.
#   3. sequential read of a 1 GiB file, cold cache: through the user-space
#      verified mount (FUSE + EROFS) next to a plain file-backed EROFS mount.
#
# Usage: bench/verity/verity_bench.sh BUILD_DIR [WORK_DIR]   (as root)
# Env:   RUNS (default 5; the best run counts), SKIP_CONVERT=1, SKIP_READ=1,
#        LAYER_SRC (directories tarred for part 2), WAIT_IDLE=seconds (wait
#        up to that long for the 1-minute load average to drop below 1),
#        NICE=-10 (run every measured command, floors included, at that
#        niceness, so that other load on a shared machine skews them less).
# Needs: openssl, veritysetup, igzip, tar, about 6 GiB free in WORK_DIR.
#
# On a shared machine wall times move with other load; each part also prints
# CPU seconds (user+sys), which do not.
set -euo pipefail

BUILD=${1:?usage: $0 BUILD_DIR [WORK_DIR]}
EVS=$(realpath "$BUILD/src/cli/evs")
WORK=${2:-/var/tmp/evs-verity-bench}
RUNS=${RUNS:-5}
LAYER_SRC=${LAYER_SRC:-"/usr/lib/x86_64-linux-gnu /usr/lib/go-1.19"}
SALT=5ea17c0011223344556677889900aabbccddeeff0102030405060708090a0b0c
GIB=$((1 << 30))

[ -x "$EVS" ] || { echo "no evs binary at $EVS (ninja -C $BUILD evs)" >&2; exit 1; }
mkdir -p "$WORK"
MNT_PLAIN="$WORK/mnt-plain"
MNT_VERIFIED="$WORK/mnt-verified"
cleanup() {
  umount "$MNT_PLAIN" 2>/dev/null || true
  if [ -n "${MOUNT_PID:-}" ]; then kill -TERM "$MOUNT_PID" 2>/dev/null || true; wait "$MOUNT_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

# timed CMD…: runs CMD (stdout discarded), prints "wall user sys".
NICE=${NICE:-0}
timed() {
  nice -n "$NICE" /usr/bin/time -f "%e %U %S" -o "$WORK/.time" "$@" >/dev/null
  cat "$WORK/.time"
}
# best "wall user sys" lines on stdin → the line with the smallest wall time.
best() { grep -v '^$' | sort -n -k1,1 | head -1; }
rate() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.2f", b / t / 1e9 }'; }   # GB/s
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cpu() { awk '{ printf "%.2f", $2 + $3 }' <<<"$1"; }
wall() { awk '{ print $1 }' <<<"$1"; }
# Drops one file's pages from the page cache (no global drop_caches).
uncache() { sync "$1"; dd if="$1" iflag=nocache count=0 status=none; }

if [ -n "${WAIT_IDLE:-}" ]; then
  deadline=$(( $(date +%s) + WAIT_IDLE ))
  while awk '{ exit !($1 >= 1.0) }' /proc/loadavg && [ "$(date +%s)" -lt "$deadline" ]; do sleep 20; done
fi
echo "== verity bench: $(nproc) CPUs, kernel $(uname -r), $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"

# --- 1. tree build --------------------------------------------------------------
floor_multi=$(nice -n "$NICE" openssl speed -evp sha256 -bytes 4096 -multi "$(nproc)" -seconds 3 2>/dev/null |
  awk '/^sha256/ { sub("k", "", $2); print $2 * 1000 }')
floor_one=$(nice -n "$NICE" openssl speed -evp sha256 -bytes 4096 -seconds 3 2>/dev/null |
  awk '/^sha256/ { sub("k", "", $NF); print $NF * 1000 }')
if [ ! -f "$WORK/image.bin" ] || [ "$(stat -c %s "$WORK/image.bin")" != "$GIB" ]; then
  head -c "$GIB" /dev/urandom > "$WORK/image.bin"
fi
# Both copies on the work disk, in the page cache and written back before
# timing: each tool's final fsync then only writes its tree. (Not tmpfs:
# faults on a shmem mapping cost ~0.5 s of system time per GiB, which no
# layer on a real filesystem pays.)
cp "$WORK/image.bin" "$WORK/evs.img"
cp "$WORK/image.bin" "$WORK/vs.img"
sync
evs_runs=""; vs_runs=""
for _ in $(seq "$RUNS"); do
  truncate -s "$GIB" "$WORK/evs.img"
  sync "$WORK/evs.img"
  evs_runs+="$(timed "$EVS" verity format --salt "$SALT" "$WORK/evs.img")"$'\n'
  truncate -s "$GIB" "$WORK/vs.img"
  sync "$WORK/vs.img"
  vs_runs+="$(timed veritysetup format --salt="$SALT" --hash-offset="$GIB" "$WORK/vs.img" "$WORK/vs.img")"$'\n'
done
e=$(best <<<"$evs_runs"); v=$(best <<<"$vs_runs")
echo
echo "-- tree build, 1 GiB image, 4096-byte blocks, sha256, salted (best of $RUNS)"
echo "SHA-256 floor:        $(rate "$floor_multi" 1) GB/s ($(nproc) cores), $(rate "$floor_one" 1) GB/s (1 core)"
echo "evs verity format:    $(rate $GIB "$(wall "$e")") GB/s   $(wall "$e") s wall, $(cpu "$e") s CPU"
echo "veritysetup format:   $(rate $GIB "$(wall "$v")") GB/s   $(wall "$v") s wall, $(cpu "$v") s CPU"
echo "evs / floor:          $(ratio "$(rate $GIB "$(wall "$e")")" "$(rate "$floor_multi" 1)")   (target >= 0.90)"
echo "evs CPU / 1-core floor: $(ratio "$(rate $GIB "$(cpu "$e")")" "$(rate "$floor_one" 1)")   (hashing efficiency, load-independent)"
echo "evs / veritysetup:    $(ratio "$(wall "$v")" "$(wall "$e")") x faster   (target > 1)"
rm -f "$WORK/evs.img" "$WORK/vs.img"

# --- 2. conversion ----------------------------------------------------------------
if [ -z "${SKIP_CONVERT:-}" ]; then
  if [ ! -f "$WORK/layer.tar.gz" ]; then
    # shellcheck disable=SC2086
    tar --sort=name -cf - $LAYER_SRC 2>/dev/null | igzip -3 -c > "$WORK/layer.tar.gz"
  fi
  tar_bytes=$(igzip -d -c "$WORK/layer.tar.gz" | wc -c)
  cat "$WORK/layer.tar.gz" > /dev/null
  for mode in full index; do
    plain_runs=""; verity_runs=""; igzip_runs=""
    for _ in $(seq "$RUNS"); do
      igzip_runs+="$(timed igzip -d -c "$WORK/layer.tar.gz")"$'\n'
      plain_runs+="$(timed "$EVS" layer convert --mode $mode "$WORK/layer.tar.gz" "$WORK/out.erofs")"$'\n'
      rm -f "$WORK/out.erofs"
      verity_runs+="$(timed "$EVS" layer convert --verity --mode $mode "$WORK/layer.tar.gz" "$WORK/out.erofs")"$'\n'
      rm -f "$WORK/out.erofs"
    done
    p=$(best <<<"$plain_runs"); q=$(best <<<"$verity_runs"); g=$(best <<<"$igzip_runs")
    echo
    echo "-- conversion, mode $mode: $(du -m "$WORK/layer.tar.gz" | cut -f1) MB gzip, $((tar_bytes >> 20)) MiB tar (best of $RUNS)"
    echo "igzip -d (floor):     $(wall "$g") s"
    echo "convert:              $(wall "$p") s wall, $(cpu "$p") s CPU"
    echo "convert --verity:     $(wall "$q") s wall, $(cpu "$q") s CPU"
    echo "verity adds:          $(awk -v a="$(wall "$q")" -v b="$(wall "$p")" 'BEGIN { printf "%.1f %%", (a / b - 1) * 100 }') wall, $(awk -v a="$(cpu "$q")" -v b="$(cpu "$p")" 'BEGIN { printf "%.1f %%", (a / b - 1) * 100 }') CPU   (target <= 15 % wall)"
    echo "convert --verity / igzip: $(ratio "$(wall "$q")" "$(wall "$g")")"
  done
fi

# --- 3. reads through the verified mount ------------------------------------------
echo; echo "(load now: $(cut -d' ' -f1-3 /proc/loadavg))"
if [ -z "${SKIP_READ:-}" ]; then
  mkdir -p "$WORK/tree" "$MNT_PLAIN" "$MNT_VERIFIED"
  [ -f "$WORK/tree/big.bin" ] || cp "$WORK/image.bin" "$WORK/tree/big.bin"
  rm -f "$WORK/plain.erofs" "$WORK/verity.erofs"
  "$EVS" layer convert --from-dir "$WORK/tree" "$WORK/plain.erofs"
  root=$("$EVS" layer convert --verity --from-dir "$WORK/tree" "$WORK/verity.erofs" | tail -1)
  # read_plain cold|warm, read_verified cold|warm [evs verity mount args]:
  # a fresh mount each time (so EROFS caches nothing); "cold" also drops the
  # layer file from the page cache, "warm" reads it into it first.
  prepare() { if [ "$1" = cold ]; then uncache "$2"; else cat "$2" > /dev/null; fi; }
  read_plain() {
    mount -t erofs -o ro "$WORK/plain.erofs" "$MNT_PLAIN"
    prepare "$1" "$WORK/plain.erofs"
    timed cat "$MNT_PLAIN/big.bin"
    umount "$MNT_PLAIN"
  }
  read_verified() {
    local how=$1; shift
    # The FUSE server runs at normal priority, like the kernel workers that
    # serve the plain mount's reads; only the reader (timed) gets NICE.
    "$EVS" verity mount "$WORK/verity.erofs" "$MNT_VERIFIED" --root-digest "$root" "$@" \
      > "$WORK/mount.log" 2>&1 &
    MOUNT_PID=$!
    for _ in $(seq 100); do mountpoint -q "$MNT_VERIFIED" && break; sleep 0.05; done
    prepare "$how" "$WORK/verity.erofs"
    timed cat "$MNT_VERIFIED/big.bin"
    kill -TERM "$MOUNT_PID"; wait "$MOUNT_PID"; MOUNT_PID=""
  }
  for how in cold warm; do
    plain_runs=""; verified_runs=""; cached_runs=""
    for _ in $(seq "$RUNS"); do
      plain_runs+="$(read_plain $how)"$'\n'
      verified_runs+="$(read_verified $how)"$'\n'
      cached_runs+="$(read_verified $how --page-cache)"$'\n'
    done
    p=$(best <<<"$plain_runs"); q=$(best <<<"$verified_runs"); c=$(best <<<"$cached_runs")
    echo
    if [ $how = cold ]; then
      echo "-- sequential read of a 1 GiB file, cold: layer file and EROFS not cached (best of $RUNS)"
    else
      echo "-- sequential read of a 1 GiB file, layer file in the page cache, fresh EROFS mount (best of $RUNS)"
    fi
    echo "plain file-backed EROFS:        $(rate $GIB "$(wall "$p")") GB/s   $(cpu "$p") s CPU (reader)"
    echo "verified (FUSE direct_io):      $(rate $GIB "$(wall "$q")") GB/s   ratio $(ratio "$(wall "$p")" "$(wall "$q")")"
    echo "verified (FUSE page cache too): $(rate $GIB "$(wall "$c")") GB/s   ratio $(ratio "$(wall "$p")" "$(wall "$c")")"
  done
  rm -f "$WORK/plain.erofs" "$WORK/verity.erofs"
fi
