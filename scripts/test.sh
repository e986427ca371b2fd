#!/bin/bash
# The whole test suite, as root on Debian 12: installs what it needs, builds
# evs (Release, plus an AddressSanitizer/UBSan build for the hostile-input
# tests), and runs every test this machine can run. Tests that need something
# the machine lacks (device-mapper, for one) skip and say why.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -L unit         only tests with a label (ctest -L)
#   EVS_TEST_SKIP_ASAN=1 scripts/test.sh   skip the sanitizer build
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${EVS_BUILD_DIR:-$ROOT/build}"
BUILD_ASAN="${EVS_BUILD_ASAN_DIR:-$ROOT/build-asan}"
JOBS="${EVS_JOBS:-$(nproc)}"
start=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - start ))s)"; }

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: run as root: the tests mount filesystems and start containerd" >&2
  exit 1
fi

step "installing Debian packages"
"$ROOT/scripts/install-deps.sh"

step "building (Release) in $BUILD"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$BUILD" -j "$JOBS"

failed=0
step "running tests"
# This machine has no device-mapper: the kernel-verification tests run in a
# qemu guest whose Debian kernel package (linux-image-amd64's dependency)
# is fetched with `apt-get download` into $BUILD/qemu-guest, nothing
# installed (tests/verity/qemu/run_guest_test.sh).
export EVS_GUEST_DOWNLOAD="${EVS_GUEST_DOWNLOAD:-1}"
ctest --test-dir "$BUILD" --output-on-failure --no-tests=error -j 1 "$@" || failed=1

if [ "${EVS_TEST_SKIP_ASAN:-0}" != 1 ] && [ $# -eq 0 ]; then
  step "building hostile-input tests with AddressSanitizer + UBSan in $BUILD_ASAN"
  cmake -S "$ROOT" -B "$BUILD_ASAN" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DEVS_SANITIZE=ON -DEVS_BUILD_DAEMON=OFF >/dev/null
  ninja -C "$BUILD_ASAN" -j "$JOBS" hostile_tests
  step "running hostile-input tests under ASan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir "$BUILD_ASAN" --output-on-failure --no-tests=error -L hostile -j 1 || failed=1
fi

step "done"
if [ "$failed" != 0 ]; then
  echo "test.sh: FAILED" >&2
  exit 1
fi
echo "test.sh: all tests passed"
