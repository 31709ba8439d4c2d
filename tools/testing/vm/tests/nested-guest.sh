#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the nested guest of the "vmdisk:" e2e cases (e2e.sh boots it
# with qimg-vm from inside the e2e guest; its virtio disks are /dev/qimgN
# devices of that guest).  For each DISK: make an ext4 on it, copy the
# files of SRC (a directory of the outer guest, seen here through the 9p
# root) onto it with their checksums (SUMS, sha256sum format, names
# relative to SRC), drop the caches and check the copies against the
# sums, unmount, sync, and print "NESTED-DISK-OK DISK".  The last line
# is NESTED-GUEST-DONE, printed only when every disk passed; the outer
# cases fail without it.
#
# usage: nested-guest.sh SRC SUMS DISK...
set -u -o pipefail

SRC=$1 SUMS=$2
shift 2
M=/mnt/nested

# step CMD...: run CMD; on failure say which and give up on this disk.
step() {
	"$@" && return 0
	echo "nested: FAILED (status $?): $*"
	return 1
}

one_disk() {
	local disk=$1
	echo "nested: $disk: $(blockdev --getsize64 "$disk") bytes"
	step test -b "$disk" || return 1
	step mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 \
		"$disk" || return 1
	step mount -t ext4 "$disk" "$M" || return 1
	if step mkdir "$M/data" && step cp -a "$SRC/." "$M/data/" &&
		step cp "$SUMS" "$M/SHA256SUMS" && step sync; then
		echo 3 >/proc/sys/vm/drop_caches
		(cd "$M/data" && step sha256sum --quiet -c "$M/SHA256SUMS") || {
			umount "$M"
			return 1
		}
	else
		umount "$M"
		return 1
	fi
	step umount "$M" || return 1
	step sync || return 1
	echo "NESTED-DISK-OK $disk"
}

echo "nested: kernel $(uname -r), $(nproc) CPU(s), disks: $*"
mkdir -p "$M" || exit 1
rc=0
for d in "$@"; do
	one_disk "$d" || rc=1
done
[ $rc = 0 ] && echo NESTED-GUEST-DONE
exit $rc
