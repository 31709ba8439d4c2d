#!/bin/bash
# Install what building and testing qimg needs, by Debian package name.
# Idempotent and quiet when everything is already there.
set -euo pipefail

pkgs=(
	build-essential clang libclang-rt-14-dev pkg-config
	libjson-c-dev libcmocka-dev zlib1g-dev libzstd-dev
	sparse bc flex bison libelf-dev libssl-dev cpio xz-utils rsync
	qemu-utils qemu-system-x86 busybox-static fio e2fsprogs kmod dmsetup fdisk
	linux-image-amd64 linux-headers-amd64 linux-source-6.1 dkms
	python3 gnuplot-nox
)

# The 6.12 kernel comes from bookworm-backports.  The suite is added with the
# same archive URI the machine already uses for bookworm, so no host name is
# baked in here.
add_backports() {
	local src=/etc/apt/sources.list.d/qimg-backports.sources uri
	[ -f "$src" ] && return 0
	uri=$(awk '/^URIs:/{u=$2} /^Suites:.*bookworm( |$)/{print u; exit}' \
		/etc/apt/sources.list.d/debian.sources 2>/dev/null)
	if [ -z "$uri" ]; then
		uri=$(awk '$1=="deb" && $3=="bookworm"{print $2; exit}' \
			/etc/apt/sources.list 2>/dev/null)
	fi
	[ -n "$uri" ] || return 1
	printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
		"$uri" >"$src"
	updated=
}

# Concrete 6.12 package names behind the backports meta-packages; the
# meta-packages themselves stay on 6.1 so both kernels are installed.
backports_kernel() {
	local meta dep
	for meta in linux-image-amd64 linux-headers-amd64; do
		dep=$(apt-cache show "$meta/bookworm-backports" 2>/dev/null |
			awk -F'[ ,]+' '/^Depends:/{print $2; exit}')
		[ -n "$dep" ] && echo "$dep"
	done
}

updated=
apt_update() {
	[ -n "$updated" ] && return 0
	apt-get update -qq
	updated=1
}

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
		missing+=("$p")
	fi
done
need_612=
ls -d /lib/modules/6.12*/build >/dev/null 2>&1 || need_612=1
[ ${#missing[@]} -eq 0 ] && [ -z "$need_612" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: need root to install: ${missing[*]} ${need_612:+linux 6.12}" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}"
	apt_update
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ -n "$need_612" ]; then
	add_backports || { echo "install-deps: cannot find the bookworm archive URI" >&2; exit 1; }
	apt_update
	mapfile -t k612 < <(backports_kernel)
	if [ ${#k612[@]} -ne 2 ]; then
		echo "install-deps: bookworm-backports has no 6.12 kernel packages" >&2
		exit 1
	fi
	echo "install-deps: installing ${k612[*]}"
	apt-get install -y -qq --no-install-recommends "${k612[@]}" >/dev/null
fi
