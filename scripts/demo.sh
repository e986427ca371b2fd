#!/bin/bash
# The main job, as root on Debian 12: installs what it needs, builds evs, and
# shows it working on this machine. Today: builds a sample layer tarball from
# files on this machine, converts it to EROFS with its dm-verity tree, mounts
# it, lists a few paths and prints the conversion throughput.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${EVS_BUILD_DIR:-$ROOT/build}"
if [ "$(id -u)" != 0 ]; then echo "demo.sh: run as root (it mounts filesystems)" >&2; exit 1; fi

echo "== installing Debian packages and building evs"
"$ROOT/scripts/install-deps.sh"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$BUILD" evs >/dev/null
EVS="$BUILD/src/cli/evs"

WORK="$(mktemp -d /tmp/evs-demo.XXXXXX)"
cleanup() { umount "$WORK/mnt" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

echo "== building a sample layer from /usr/share and /usr/lib/python3*"
tar -C / -cf - usr/share/doc usr/share/man usr/bin 2>/dev/null | gzip -1 > "$WORK/layer.tar.gz"
size=$(stat -c %s "$WORK/layer.tar.gz")
usize=$(gzip -dc "$WORK/layer.tar.gz" | wc -c)
echo "   layer.tar.gz: $((size / 1000000)) MB compressed, $((usize / 1000000)) MB uncompressed"

echo "== evs layer convert --verity layer.tar.gz layer.erofs"
t0=$(date +%s.%N)
"$EVS" layer convert --verity "$WORK/layer.tar.gz" "$WORK/layer.erofs" | tail -1 > "$WORK/root"
t1=$(date +%s.%N)
secs=$(echo "$t1 - $t0" | bc -l)
printf "   converted in %.2f s: %.0f MB/s of tar; root digest %s\n" "$secs" "$(echo "$usize / 1000000 / $secs" | bc -l)" "$(cat "$WORK/root")"

echo "== evs verity verify (whole image against its root digest)"
"$EVS" verity verify "$WORK/layer.erofs" --root-digest "$(cat "$WORK/root")"

echo "== mount -t erofs (file-backed) and list a few paths"
mkdir -p "$WORK/mnt"
mount -t erofs -o ro "$WORK/layer.erofs" "$WORK/mnt"
ls -la "$WORK/mnt/usr/bin" | head -8
echo "   files in image: $(find "$WORK/mnt" -type f | wc -l); same as tar: $(gzip -dc "$WORK/layer.tar.gz" | tar -t | grep -vc '/$')"
diff -r "$WORK/mnt/usr/share/doc" /usr/share/doc >/dev/null && echo "   /usr/share/doc in the image is identical to the original"
