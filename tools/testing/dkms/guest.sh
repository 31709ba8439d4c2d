#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the DKMS suite (run by ./run through qimg-vm, with no module
# preloaded).  Does what a user on a real host does: `make dkms-install`
# against the headers of the running kernel, `modprobe qimg`, a tiny attach,
# then `make dkms-remove`.  The guest's /usr/src, /var/lib/dkms and
# /lib/modules are tmpfs overlays over the host's, so nothing leaks out.
#
# Env: QIMGCTL (optional: without it the attach smoke test is skipped),
# QIMG_SCRATCH (set by qimg-vm).
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
. "$REPO/tools/testing/lib.sh"

K=$(uname -r)
T="dkms $K"
cd "$REPO" || exit 1
VER=$(make -s --no-print-directory qimg-version)
LOG=/tmp/dkms-install.log

# Nothing may be left over from the host: this must be a first install.
if [ -e "/usr/src/qimg-$VER" ] || dkms status -m qimg 2>/dev/null | grep -q .; then
	t_fail "$T: the guest already has qimg registered with dkms (host state leaked?)"
fi

start=$(date +%s)
if make --no-print-directory dkms-install DKMS_KERNELS="$K" >"$LOG" 2>&1; then
	t_pass "$T: make dkms-install ($(($(date +%s) - start)) s)"
else
	t_fail "$T: make dkms-install"
	tail -n 40 "$LOG" | sed 's/^/#   /'
	# The build log dkms keeps is the useful part.
	tail -n 30 /var/lib/dkms/qimg/"$VER"/build/make.log 2>/dev/null | sed 's/^/#   make.log: /'
	t_done
	exit 1
fi

st=$(dkms status -m qimg -v "$VER" -k "$K" 2>&1)
case $st in
*installed*) t_pass "$T: dkms status says installed" ;;
*) t_fail "$T: dkms status: '$st'" ;;
esac

ko=$(modinfo -n qimg 2>/dev/null)
case $ko in
/lib/modules/"$K"/updates/dkms/qimg.ko*) t_pass "$T: modinfo finds $ko" ;;
*) t_fail "$T: modinfo -n qimg gives '$ko', not the dkms copy" ;;
esac
vm=$(modinfo -F vermagic qimg 2>/dev/null | awk '{print $1}')
if [ "$vm" = "$K" ]; then
	t_pass "$T: vermagic matches the running kernel"
else
	t_fail "$T: vermagic '$vm' != '$K'"
fi

if out=$(modprobe qimg 2>&1) && grep -q '^qimg ' /proc/modules; then
	t_pass "$T: modprobe qimg"
else
	t_fail "$T: modprobe qimg: $out"
	dmesg | tail -n 20 | sed 's/^/#   /'
fi
# devtmpfs creates the node when the misc device registers.
for _ in 1 2 3 4 5 6 7 8 9 10; do
	[ -c /dev/qimg-control ] && break
	sleep 0.2
done
if [ -c /dev/qimg-control ]; then
	t_pass "$T: /dev/qimg-control exists"
else
	t_fail "$T: no /dev/qimg-control after modprobe"
fi

# The module DKMS built must serve an image, not just load.
if [ -n "${QIMGCTL:-}" ] && [ -x "$QIMGCTL" ] && [ -n "${QIMG_SCRATCH:-}" ]; then
	img=$QIMG_SCRATCH/dkms.qcow2
	smoke() {
		local dev size
		"$QIMGCTL" create -q "$img" 64M || return 1
		dev=$("$QIMGCTL" attach "$img") || return 1
		echo "attached $dev"
		size=$(blockdev --getsize64 "$dev") || return 1
		[ "$size" = 67108864 ] || { echo "size $size"; return 1; }
		dd if=/dev/urandom of="$dev" bs=64k count=4 oflag=direct status=none ||
			return 1
		"$QIMGCTL" detach "$dev" || return 1
		qemu-img check -q "$img" || return 1
	}
	t_check "$T: attach, write, detach, qemu-img check" smoke
else
	echo "# $T: attach smoke test skipped (no QIMGCTL or scratch disk)"
fi

if out=$(rmmod qimg 2>&1); then
	t_pass "$T: rmmod qimg"
else
	t_fail "$T: rmmod qimg: $out"
fi

if make --no-print-directory dkms-remove >"$LOG" 2>&1; then
	t_pass "$T: make dkms-remove"
else
	t_fail "$T: make dkms-remove"
	tail -n 20 "$LOG" | sed 's/^/#   /'
fi
left=$(find "/lib/modules/$K" -name 'qimg.ko*' 2>/dev/null)
if [ -z "$left" ] && [ ! -e "/usr/src/qimg-$VER" ] &&
	! dkms status -m qimg 2>/dev/null | grep -q . &&
	! modprobe -n qimg 2>/dev/null; then
	t_pass "$T: nothing left after dkms-remove"
else
	t_fail "$T: left after dkms-remove: ${left:-} $(ls -d /usr/src/qimg-* 2>/dev/null)"
fi
t_done
