#!/bin/bash
# Install what building and testing qimg needs, by Debian package name.
# Idempotent and quiet when everything is already there.
set -euo pipefail

pkgs=(
	build-essential clang libclang-rt-14-dev pkg-config
	libjson-c-dev libcmocka-dev zlib1g-dev libzstd-dev
	sparse bc flex bison libelf-dev libssl-dev cpio xz-utils rsync
	qemu-utils qemu-system-x86 busybox-static fio e2fsprogs kmod
	linux-image-amd64 linux-headers-amd64 linux-source-6.1 dkms
	python3
)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: need root to apt-get install the packages above" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
