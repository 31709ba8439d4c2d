#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the DKMS suite (run by ./run through qimg-vm, with no module
# preloaded).  The host already ran `make dkms-install` into a private DKMS
# tree (QIMG_DKMS_TREE, sources in QIMG_DKMS_SRC): compiling under TCG takes
# minutes, so the guest does what needs the running kernel: `dkms install`
# of that build into the real /lib/modules, `modprobe qimg`, a tiny attach,
# `rmmod` and `dkms uninstall`.  The guest's /lib/modules is a tmpfs
# overlay over the host's, so nothing leaks out.
#
# dkms runs `depmod -a` after install and uninstall; over 9p under TCG that
# reads every module of the kernel and takes more than four minutes, so the
# guest passes --no-depmod and indexes just the installed module itself
# (`depmod VER FILE`: modules.dep then lists only qimg, which depends on
# nothing, in the guest's throw-away overlay).  On a real host dkms's own
# depmod does the full job.
#
# Env: QIMG_DKMS_TREE, QIMG_DKMS_SRC, QIMGCTL (optional: without it the
# attach smoke test is skipped), QIMG_SCRATCH (set by qimg-vm).
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
. "$REPO/tools/testing/lib.sh"

K=$(uname -r)
T="dkms $K"
VER=$(sed -n 's/^PACKAGE_VERSION="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$REPO/dkms.conf")
DK=(dkms --dkmstree "${QIMG_DKMS_TREE:?}" --sourcetree "${QIMG_DKMS_SRC:?}")
LOG=/tmp/dkms.log

if grep -q '^qimg ' /proc/modules || modprobe -n qimg 2>/dev/null; then
	t_fail "$T: the guest already has a qimg module before dkms install"
fi

start=$(date +%s)
if "${DK[@]}" install --no-depmod -m qimg -v "$VER" -k "$K" >"$LOG" 2>&1 &&
	depmod "$K" "$(ls /lib/modules/"$K"/updates/dkms/qimg.ko* | head -n 1)" >>"$LOG" 2>&1; then
	t_pass "$T: dkms install of the host's build ($(($(date +%s) - start)) s)"
else
	t_fail "$T: dkms install"
	tail -n 40 "$LOG" | sed 's/^/#   /'
	t_done
	exit 1
fi

st=$("${DK[@]}" status -m qimg -v "$VER" -k "$K" 2>&1)
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
	t_skip "$T: attach, write, detach, qemu-img check" "no QIMGCTL or scratch disk"
fi

if out=$(rmmod qimg 2>&1); then
	t_pass "$T: rmmod qimg"
else
	t_fail "$T: rmmod qimg: $out"
fi

if "${DK[@]}" uninstall --no-depmod -m qimg -v "$VER" -k "$K" >"$LOG" 2>&1; then
	t_pass "$T: dkms uninstall"
else
	t_fail "$T: dkms uninstall"
	tail -n 20 "$LOG" | sed 's/^/#   /'
fi
left=$(find "/lib/modules/$K" -name 'qimg.ko*' 2>/dev/null)
if [ -z "$left" ]; then
	t_pass "$T: no qimg module left after dkms uninstall"
else
	t_fail "$T: left after dkms uninstall: $left"
fi
t_done
