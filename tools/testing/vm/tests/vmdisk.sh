# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# /dev/qimgN as the disk of a VM (issue 11; sourced by e2e.sh, which gives
# $W, $FILTER, $REPO, $QIMGCTL, tc, q_attach and lib.sh).  Two qcow2 images
# are attached and handed to a nested guest, booted with qimg-vm from
# inside this one (TCG in TCG, the host root again over 9p), as virtio
# disks with cache=none: /dev/vda with aio=native, /dev/vdb with
# aio=io_uring.  tests/nested-guest.sh makes an ext4 on each, copies files
# with known checksums onto it, checks them, unmounts, syncs and powers
# off.  Then each case here: the guest said NESTED-DISK-OK for its disk
# and NESTED-GUEST-DONE at the end, qemu-img check is clean, e2fsck -fn is
# clean through a read-only re-attach, and the files mounted read-only
# match the checksums taken before the boot.  A nested guest that timed
# out, died or reported anything in its kernel log fails both cases.
#
# One nested boot serves both cases (~6 min under TCG on 2 busy cores),
# so they run only with QIMG_E2E_FULL=1 (make check-full) or when
# QIMG_E2E_FILTER names them.  Env: QIMG_E2E_NESTED_TIMEOUT (s, default
# 1500) limits the nested run.

VD=$W/vmdisk
VD_KINDS="native io_uring"

# vd_boot: boot the nested guest once; later calls report the first one's
# verdict (status in $VD/boot.rc, a message in $VD/boot.msg).
vd_boot() {
	local to=${QIMG_E2E_NESTED_TIMEOUT:-1500} kargs=() drives=() disks=()
	local k vdn=a rc t0 f out msg

	if [ -f "$VD/boot.rc" ]; then
		cat "$VD/boot.msg"
		return "$(cat "$VD/boot.rc")"
	fi
	mkdir -p "$VD/src/sub" || return 1
	# Files of odd sizes, one sparse, one empty, in two directories.
	f=$VD/src
	run dd if=/dev/urandom of="$f/a.bin" bs=1M count=3 status=none || return 1
	run dd if=/dev/urandom of="$f/sub/b.bin" bs=4097 count=129 status=none || return 1
	run dd if=/dev/urandom of="$f/sub/sparse.bin" bs=64k count=3 seek=77 status=none ||
		return 1
	: >"$f/sub/empty"
	seq 1 20000 >"$f/sub/seq.txt" || return 1
	(cd "$f" && find . -type f | LC_ALL=C sort | xargs sha256sum) >"$VD/sums" ||
		return 1

	# aio=io_uring needs a QEMU built with liburing and a kernel that lets
	# it in: probed on a plain file first, so that a failure on the
	# device itself is a failure, not a skip.
	run dd if=/dev/zero of="$VD/probe.raw" bs=1M count=1 status=none || return 1
	if ! out=$(timeout 60 qemu-io -f raw -t none -i io_uring -c 'read 0 4k' \
		"$VD/probe.raw" 2>&1); then
		echo "aio=io_uring unavailable: $(printf '%s\n' "$out" | head -n 1)" \
			>"$VD/io_uring.skip"
	fi
	rm -f "$VD/probe.raw"

	for k in $VD_KINDS; do
		[ -f "$VD/$k.skip" ] && continue
		run qemu-img create -q -f qcow2 "$VD/$k.qcow2" 256M || return 1
		q_attach "$VD/$k.qcow2" || return 1
		echo "$DEV" >"$VD/$k.dev"
		echo "/dev/vd$vdn" >"$VD/$k.vd"
		drives+=(--drive "file=$DEV,format=raw,if=virtio,cache=none,aio=$k")
		disks+=("/dev/vd$vdn")
		vdn=$(echo "$vdn" | tr a-y b-z)
	done

	# The nested guest runs this kernel when it is an installed one
	# (else qimg-vm's default, the newest installed: the debug kernel is
	# a bzImage of its own).  The outer run's memory, kernel arguments
	# and accelerator are not the nested guest's.
	[ -f "/boot/vmlinuz-$(uname -r)" ] && [ -d "/lib/modules/$(uname -r)" ] &&
		kargs=(--kernel "$(uname -r)")
	t0=$SECONDS
	env -u QIMG_VM_MEM -u QIMG_VM_APPEND -u QIMG_VM_ACCEL \
		timeout -k 10 $((to + 60)) "$REPO/tools/testing/vm/qimg-vm" run \
		"${kargs[@]}" --module none --scratch-size 0 --mem 256 --smp 1 \
		--timeout "$to" "${drives[@]}" -- \
		"$REPO/tools/testing/vm/tests/nested-guest.sh" "$VD/src" "$VD/sums" \
		"${disks[@]}" >"$VD/nested.log" 2>&1 </dev/null
	rc=$?
	echo "# vmdisk: the nested run took $((SECONDS - t0)) s (status $rc)"
	for k in $VD_KINDS; do
		[ -f "$VD/$k.dev" ] || continue
		q_detach "$(cat "$VD/$k.dev")" || rc=1
	done

	case $rc in
	0) msg="nested guest ran to the end" ;;
	124) msg="FAILED: the nested guest timed out after $to s" ;;
	120) msg="FAILED: the nested guest's kernel log shows problems" ;;
	*) msg="FAILED: the nested run exited with status $rc" ;;
	esac
	if [ "$rc" = 0 ] && ! grep -qx NESTED-GUEST-DONE "$VD/nested.log"; then
		msg="FAILED: the nested guest did not print NESTED-GUEST-DONE"
		rc=1
	fi
	[ "$rc" = 0 ] || rc=1
	echo "$msg" >"$VD/boot.msg"
	echo "$rc" >"$VD/boot.rc"
	cat "$VD/boot.msg"
	[ "$rc" = 0 ] || sed 's/^/nested| /' "$VD/nested.log" | tail -n 60
	return "$rc"
}

# vd_case KIND: the checks for the disk with aio=KIND.
vd_case() {
	local k=$1 img=$VD/$1.qcow2 vd mnt=$VD/mnt rc=0

	vd_boot || return 1
	if [ -f "$VD/$k.skip" ]; then
		echo "SKIP-CASE: $(cat "$VD/$k.skip")"
		return 0
	fi
	vd=$(cat "$VD/$k.vd")
	grep -qx "NESTED-DISK-OK $vd" "$VD/nested.log" ||
		{ echo "FAILED: the nested guest did not finish $vd"; return 1; }
	run qemu-img check -q "$img" || return 1
	q_attach -r "$img" || return 1
	run e2fsck -fn "$DEV" || rc=1
	mkdir -p "$mnt"
	if [ $rc = 0 ] && run mount -t ext4 -o ro "$DEV" "$mnt"; then
		# The checksums taken before the boot, and the same set of files.
		(cd "$mnt/data" && run sha256sum --quiet -c "$VD/sums") || rc=1
		(cd "$mnt/data" && find . -type f | LC_ALL=C sort) >"$VD/found.list"
		cut -c67- "$VD/sums" >"$VD/want.list"
		run cmp "$VD/want.list" "$VD/found.list" || rc=1
		run cmp "$VD/sums" "$mnt/SHA256SUMS" || rc=1
		umount "$mnt" || rc=1
	else
		rc=1
	fi
	q_detach "$DEV" || rc=1
	return $rc
}

vd_wanted() {
	[ -n "${QIMG_E2E_FULL:-}" ] || { [ -n "$FILTER" ] && [[ $1 =~ $FILTER ]]; }
}

for k in $VD_KINDS; do
	n="vmdisk: nested guest on /dev/qimgN (cache=none,aio=$k)"
	vd_wanted "$n" && tc "$n" vd_case "$k"
done
rm -rf "$VD"
