#!/bin/bash
# Runs the dm-verity kernel tests (verity_dm_test: DmVerityKernel.* and the
# rest), then the snapshotter's tests in kernel verification mode
# (snapshotter_test, Verity/*/kernel: layers verified by dm-verity, mounted
# from a loop device since the guest kernel predates file-backed EROFS),
# inside a qemu guest booted from a Debian kernel, because the development
# machine has no device-mapper. The guest is a throw-away
# initramfs: busybox, the test binary and the few host programs it calls
# (mkfs.erofs, find, sort, sha256sum, getfattr), with their libraries, and
# the kernel modules dm-verity needs. No disk image, no network.
#
# Usage: tests/verity/qemu/run_guest_test.sh BUILD_DIR [GTEST_FILTER]
# (GTEST_FILTER applies to verity_dm_test; EVS_GUEST_SNAPSHOT=0 leaves the
# snapshotter's tests out.)
# Needs (Debian packages): qemu-system-x86, busybox-static, and a kernel:
#   - EVS_GUEST_KERNEL_DIR: a directory with boot/vmlinuz-* and lib/modules/
#     (an unpacked linux-image-*.deb), or else
#   - with EVS_GUEST_DOWNLOAD=1, the linux-image-amd64 dependency is fetched
#     with `apt-get download` into BUILD_DIR/qemu-guest and unpacked there
#     (nothing is installed; ~70 MB, kept for later runs).
# Exit status: the test binary's; 77 when something needed is missing (ctest
# SKIP_RETURN_CODE).
set -euo pipefail

BUILD=$(realpath "${1:?usage: $0 BUILD_DIR [GTEST_FILTER]}")
FILTER=${2:-*}
TEST_BIN="$BUILD/tests/verity/verity_dm_test"
SNAPSHOT_BIN="$BUILD/tests/snapshot/snapshotter_test"
[ "${EVS_GUEST_SNAPSHOT:-1}" = 0 ] && SNAPSHOT_BIN=""
CACHE="$BUILD/qemu-guest"
skip() { echo "SKIP: $*" >&2; exit 77; }

command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
[ -x /bin/busybox ] || skip "busybox missing (apt-get install busybox-static)"
[ -x "$TEST_BIN" ] || skip "$TEST_BIN not built"
for p in mkfs.erofs getfattr find sort sha256sum xargs tar dd; do
  command -v "$p" >/dev/null || skip "$p missing"
done
if [ -n "$SNAPSHOT_BIN" ] && [ ! -x "$SNAPSHOT_BIN" ]; then
  echo "note: $SNAPSHOT_BIN not built; running verity_dm_test only" >&2
  SNAPSHOT_BIN=""
fi
mkdir -p "$CACHE"

# --- kernel -------------------------------------------------------------------
KDIR=${EVS_GUEST_KERNEL_DIR:-}
if [ -z "$KDIR" ]; then
  KDIR="$CACHE/kernel"
  if ! ls "$KDIR"/boot/vmlinuz-* >/dev/null 2>&1; then
    [ -n "${EVS_GUEST_DOWNLOAD:-}" ] ||
      skip "no guest kernel: set EVS_GUEST_KERNEL_DIR, or EVS_GUEST_DOWNLOAD=1 to fetch one"
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')
    [ -n "$pkg" ] || skip "no linux-image-amd64 in apt (set EVS_GUEST_KERNEL_DIR)"
    (cd "$CACHE" && apt-get download "$pkg" >/dev/null 2>&1) || skip "apt-get download $pkg failed"
    dpkg -x "$CACHE/$pkg"_*.deb "$KDIR"
  fi
fi
VMLINUZ=$(ls "$KDIR"/boot/vmlinuz-* | head -1)
KVER=${VMLINUZ##*/vmlinuz-}
MODDIR="$KDIR/lib/modules/$KVER/kernel"

# --- initramfs ----------------------------------------------------------------
ROOT="$CACHE/initramfs"
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,lib/modules,dev,proc,sys,tmp,run,etc}
cp /bin/busybox "$ROOT/bin/busybox"
for applet in sh mount umount mkdir insmod poweroff cat echo ls losetup grep sync sleep printf rm; do
  ln -sf busybox "$ROOT/bin/$applet"
done

# Host programs with the libraries they load.
copy_with_libs() {
  local bin=$1 dest=$2
  mkdir -p "$ROOT$(dirname "$dest")"
  cp -L "$bin" "$ROOT$dest"
  ldd "$bin" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -Ln "$lib" "$ROOT$lib"
  done
}
copy_with_libs "$TEST_BIN" /bin/verity_dm_test
[ -n "$SNAPSHOT_BIN" ] && copy_with_libs "$SNAPSHOT_BIN" /bin/snapshotter_test
for p in mkfs.erofs getfattr find sort sha256sum xargs cut tar dd; do
  copy_with_libs "$(command -v "$p")" "/usr/bin/$p"
done

# Modules in dependency order (modinfo's "depends"), plus the crc32c
# implementation libcrc32c asks the crypto API for.
declare -A loaded=()
modules=()
add_module() {
  local name=$1 file dep
  [ -n "${loaded[$name]:-}" ] && return
  file=$(find "$MODDIR" \( -name "$name.ko" -o -name "${name//-/_}.ko" -o -name "${name//_/-}.ko" \) | head -1)
  if [ -z "$file" ]; then
    # Built into the kernel: nothing to load.
    grep -q "/${name//-/[-_]}.ko" "$KDIR/lib/modules/$KVER/modules.builtin" 2>/dev/null && return
    skip "kernel module $name not found in $MODDIR"
  fi
  loaded[$name]=1
  for dep in $(modinfo -F depends "$file" | tr , ' '); do add_module "$dep"; done
  cp "$file" "$ROOT/lib/modules/"
  modules+=("$(basename "$file")")
}
for m in crc32c_generic loop dm-mod dm-bufio dm-verity erofs overlay; do add_module "$m"; done

cat > "$ROOT/init" <<EOF
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in ${modules[*]}; do insmod /lib/modules/\$m || echo "insmod \$m failed"; done
echo "EVS-GUEST: kernel \$(cat /proc/sys/kernel/osrelease), /dev/mapper: \$(ls /dev/mapper)"
cd /tmp
PATH=/usr/bin:/bin TMPDIR=/tmp /bin/verity_dm_test --gtest_filter='$FILTER' --gtest_color=no
code=\$?
if [ -x /bin/snapshotter_test ]; then
  PATH=/usr/bin:/bin TMPDIR=/tmp /bin/snapshotter_test --gtest_filter='Verity/*/kernel' --gtest_color=no
  s=\$?
  [ \$code = 0 ] && code=\$s
fi
echo "EVS-GUEST-EXIT=\$code"
sync
poweroff -f
EOF
chmod +x "$ROOT/init"
(cd "$ROOT" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$CACHE/initramfs.gz"

# --- boot ---------------------------------------------------------------------
# TCG by default: under nested KVM (this machine is itself a VM) the Debian
# kernel hangs right after decompression, and "-cpu host" trips over MSRs
# the outer hypervisor does not offer. TCG boots and runs the tests in
# about 25 s. EVS_GUEST_KVM=1 uses KVM where it works.
accel=()
[ -n "${EVS_GUEST_KVM:-}" ] && [ -w /dev/kvm ] && accel=(-enable-kvm -cpu host)
timeout 600 qemu-system-x86_64 "${accel[@]}" -m 1024 -smp 2 -nographic -no-reboot \
  -kernel "$VMLINUZ" -initrd "$CACHE/initramfs.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3" | tee "$CACHE/console.log" | tr -d '\r'
code=$(tr -d '\r' < "$CACHE/console.log" | sed -n 's/^EVS-GUEST-EXIT=//p' | tail -1)
[ -n "$code" ] || { echo "guest did not finish (see $CACHE/console.log)" >&2; exit 1; }
exit "$code"
