#!/bin/bash
# Installs the Debian 12 packages evs needs to build, test and run its demo.
# Idempotent: apt-get runs only when something is missing.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake ninja-build pkg-config git ca-certificates
  libssl-dev zlib1g-dev libisal-dev libzstd-dev libcurl4-openssl-dev
  libsqlite3-dev nlohmann-json3-dev libfuse3-dev libcli11-dev libtomlplusplus-dev
  libdevmapper-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libre2-dev
  libgtest-dev libgmock-dev
  # run
  fuse3 kmod util-linux mount
  # tests, demo and benchmarks: real parts and oracles
  containerd runc docker-registry stargz-snapshotter skopeo umoci
  erofs-utils cryptsetup-bin isal zstd gzip tar xz-utils attr curl
  apache2-utils iproute2 procps psmisc time busybox-static
  golang-go golang-github-containerd-containerd-dev
  # the dm-verity (kernel mode) tests run in a qemu guest: tests/verity/qemu
  qemu-system-x86
)

if [ "$(id -u)" != 0 ]; then
  echo "install-deps.sh: run as root (it calls apt-get)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
echo "install-deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2

# Debian starts packaged services on install where an init system runs them.
# evs's tests and demo start their own containerd and registry on private
# sockets and ports, so the packaged ones are left alone.
