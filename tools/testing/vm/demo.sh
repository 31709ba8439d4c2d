#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The qimg demo, run inside the test guest by `make demo` (through qimg-vm,
# with qimg.ko loaded): create a qcow2 image, attach it, put ext4 on
# /dev/qimgN, copy files in, detach, and let QEMU's own qemu-img judge the
# result.  Every command is echoed before it runs, like a terminal session.
# Any failure stops the demo with a non-zero status: it never pretends.
#
# Env: QIMGCTL (default build/qimgctl), QIMG_SCRATCH (set by qimg-vm).
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
QIMGCTL=${QIMGCTL:-$REPO/build/qimgctl}
DIR=${QIMG_SCRATCH:-/tmp}
IMG=$DIR/demo.qcow2
MNT=/mnt/demo
DEV=

die() {
	echo
	echo "DEMO FAILED: $*"
	# Leave nothing attached or mounted behind, but keep the verdict.
	mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
	[ -n "$DEV" ] && "$QIMGCTL" detach "$DEV" 2>/dev/null
	exit 1
}

# Show a command the way a shell prompt would, then run it.
run() {
	printf '\n# %s\n' "$*"
	"$@" || die "'$*' exited with status $?"
}

[ "${QIMG_VM_MODULE_LOADED:-0}" = 1 ] ||
	die "qimg.ko is not loaded in the guest (run 'make module' first)"
[ -x "$QIMGCTL" ] || die "no qimgctl at $QIMGCTL (run 'make build/qimgctl')"
# The demo's commands read better as plain "qimgctl".
PATH=$(dirname "$QIMGCTL"):$PATH
QIMGCTL=qimgctl

echo "qimg demo on $(uname -r), image directory $DIR"
run qimgctl create "$IMG" 1G
run qimgctl info "$IMG"

printf '\n# qimgctl attach %s\n' "$IMG"
DEV=$(qimgctl attach "$IMG") || die "qimgctl attach failed"
[ -b "$DEV" ] || die "qimgctl attach printed '$DEV', not a block device"
echo "$DEV"
run qimgctl list
run lsblk -o NAME,SIZE,PHY-SEC,LOG-SEC,OPT-IO "$DEV"

run mkfs.ext4 -q -L qimg-demo "$DEV"
run mkdir -p "$MNT"
run mount "$DEV" "$MNT"
run cp -a /usr/share/doc/e2fsprogs /usr/share/doc/qemu-utils "$MNT"/
run dd if=/dev/urandom of="$MNT/random.bin" bs=1M count=64 status=none
run sha256sum "$MNT/random.bin"
sum1=$(sha256sum <"$MNT/random.bin")
run df -h "$MNT"
run sync
run umount "$MNT"
run qimgctl detach "$DEV"
DEV=

# Back from the image file, through a second attach, read-only.
printf '\n# qimgctl attach -r %s\n' "$IMG"
DEV=$(qimgctl attach -r "$IMG") || die "read-only attach failed"
echo "$DEV"
run mount -o ro,noload "$DEV" "$MNT"
printf '\n# sha256sum %s (after detach + re-attach)\n' "$MNT/random.bin"
sum2=$(sha256sum <"$MNT/random.bin") || die "cannot read the file back"
echo "$sum2"
[ "$sum1" = "$sum2" ] || die "the file changed across detach/attach"
run umount "$MNT"
run qimgctl detach "$DEV"
DEV=

run qemu-img check "$IMG"
run qemu-img info "$IMG"
run qimgctl check "$IMG"
run qimgctl info "$IMG"
echo
echo "DEMO OK: ext4 written through /dev/qimgN, and qemu-img check calls the image clean."
