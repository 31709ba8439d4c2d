#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the e2e suite (run by ../run-tests through qimg-vm, with
# qimg.ko loaded).  QEMU's own tools are the reference: every image is made
# with qemu-img/qemu-io, every byte read through /dev/qimgN is compared with
# "qemu-img convert -O raw", and every image written through /dev/qimgN must
# pass "qemu-img check" and "qemu-img compare" against a raw file that got
# the same writes.
#
# Env: QIMGCTL, QIMG_SCRATCH (set by qimg-vm), QIMG_E2E_FILTER (ERE over
# case names: run only those).
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
. "$REPO/tools/testing/lib.sh"

QIMGCTL=${QIMGCTL:-${QIMG_BUILD:-$REPO/build}/qimgctl}
FILTER=${QIMG_E2E_FILTER:-}
MNT=/mnt/e2e
# Seconds any single command may take; the debug kernel (KASAN, lockdep,
# kmemleak under TCG) is several times slower and sets more.
TO=${QIMG_E2E_CMD_TIMEOUT:-120}
# Bytes of the verified writer that races discards (less on the debug
# kernel: the race needs overlap in time, not volume).
RACE_SIZE=${QIMG_E2E_RACE_SIZE:-16M}
# Device name prefix: "qimg"; the suite's self-test (QIMG_E2E_MOCK=1, see
# mock-qimgctl) runs it against qemu-nbd's /dev/nbdN instead.
P=qimg
[ "${QIMG_E2E_MOCK:-0}" = 1 ] && P=nbd

if [ "${QIMG_VM_MODULE_LOADED:-0}" != 1 ] && [ "$P" = qimg ]; then
	t_fail "e2e: qimg.ko is not loaded in the guest"
	t_done
	exit 1
fi
if [ -z "${QIMG_SCRATCH:-}" ] || [ ! -d "$QIMG_SCRATCH" ]; then
	t_fail "e2e: no scratch disk (QIMG_SCRATCH)"
	t_done
	exit 1
fi
W=$QIMG_SCRATCH/e2e
mkdir -p "$W" "$MNT"
cd "$W" || exit 1

# --- helpers ---------------------------------------------------------------

# run CMD...: run with a time limit; on failure say which command failed.
run() {
	timeout "$TO" "$@" && return 0
	local rc=$?
	echo "FAILED (status $rc): $*"
	return 1
}

# dev_appears: wait (5 s at most) for $DEV to show up.
dev_appears() {
	for _ in $(seq 50); do
		[ -b "$DEV" ] && return 0
		sleep 0.1
	done
	echo "FAILED: $DEV did not appear"
	return 1
}

# q_attach [OPTS] IMG: attach, set DEV to /dev/qimgN.  qimgctl prints the
# device; accept "/dev/qimgN" or "qimgN" anywhere in its output.
q_attach() {
	local out
	DEV=
	if ! out=$(timeout 60 "$QIMGCTL" attach "$@" 2>&1); then
		echo "FAILED: qimgctl attach $*: $out"
		return 1
	fi
	DEV=$(printf '%s\n' "$out" | grep -o "/dev/${P}[0-9]\\+" | head -n 1)
	[ -n "$DEV" ] ||
		DEV=$(printf '%s\n' "$out" | grep -o "\\b${P}[0-9]\\+" | head -n 1 | sed 's|^|/dev/|')
	if [ -z "$DEV" ]; then
		echo "FAILED: qimgctl attach $* printed no device name: $out"
		return 1
	fi
	dev_appears
}

q_detach() {
	run "$QIMGCTL" detach "$1"
}

# detach_must_fail DEV N0: detach after a failed final write-back must
# say so (non-zero exit, a message naming the failure), the device goes
# away anyway, and the kernel log since line N0 names it too.
detach_must_fail() {
	local out rc
	out=$(timeout "$TO" "$QIMGCTL" detach "$1" 2>&1)
	rc=$?
	echo "detach said ($rc): $out"
	[ $rc != 124 ] || { echo "FAILED: detach hung"; return 1; }
	[ $rc != 0 ] || { echo "FAILED: detach reported success after its write-back failed"; return 1; }
	printf '%s\n' "$out" | grep -qi 'write-back' ||
		{ echo "FAILED: detach's message does not say the write-back failed"; return 1; }
	dmesg | tail -n +$(($2 + 1)) | grep -E "qimg[0-9]+: .*final write-back failed" ||
		{ echo "FAILED: no kernel message about the failed write-back"; return 1; }
	[ ! -b "$1" ] || { echo "FAILED: $1 still exists after detach"; return 1; }
}

# fsync_ro DEV: flush a (possibly read-only) device; its result is ours.
fsync_ro() {
	timeout "$TO" python3 -c 'import os, sys; os.fsync(os.open(sys.argv[1], os.O_RDONLY))' "$1"
}

# Bytes at an offset as big-endian hex, and writing a big-endian u64.
be_read() {
	od -An -tx1 -v -j "$2" -N "$3" "$1" | tr -d ' \n'
}
be_write64() {
	printf "$(printf '%016x' "$3" | sed 's/../\\x&/g')" |
		dd of="$1" bs=1 seek="$2" count=8 conv=notrunc status=none
}

# same_as_qemu DEV IMG: the device shows exactly what qemu-img reads.
same_as_qemu() {
	local dev=$1 img=$2 ref=$W/ref.raw sz
	run qemu-img convert -O raw "$img" "$ref" || return 1
	sz=$(blockdev --getsize64 "$dev")
	if [ "$sz" != "$(stat -c %s "$ref")" ]; then
		echo "FAILED: $dev has $sz bytes, qemu-img says $(stat -c %s "$ref")"
		return 1
	fi
	run cmp "$dev" "$ref" || return 1
	rm -f "$ref"
}

# ro_check IMG [ATTACH OPTS]: attach read-only and compare every byte.
ro_check() {
	local img=$1
	shift
	q_attach -r "$@" "$img" || return 1
	same_as_qemu "$DEV" "$img" || { q_detach "$DEV"; return 1; }
	q_detach "$DEV"
}

# dump_detach_compare DEV IMG: copy what the device shows into a raw file,
# detach, then QEMU must find the image clean and identical to that copy.
dump_detach_compare() {
	local dev=$1 img=$2 raw=$W/dump.raw
	run dd if="$dev" of="$raw" bs=1M status=none conv=sparse ||
		{ q_detach "$dev"; return 1; }
	q_detach "$dev" || return 1
	run qemu-img check -q "$img" || return 1
	run qemu-img compare -q -f qcow2 -F raw "$img" "$raw" || return 1
	rm -f "$raw"
}

# cmp_detach_check DEV IMG RAW: the device reads back RAW (through the
# driver, caches dropped), then, detached, IMG is qemu-img check clean
# and holds the same guest view.
cmp_detach_check() {
	blockdev --flushbufs "$1"
	echo 3 >/proc/sys/vm/drop_caches
	run cmp "$1" "$3" || return 1
	q_detach "$1" || return 1
	run qemu-img check -q "$2" || return 1
	run qemu-img compare -q -f qcow2 -F raw "$2" "$3"
}

# The same writes to a device/image and to a raw reference file.
# ops: "OFFSET LENGTH" pairs; data comes from $W/rnd at a per-op offset.
DD_OPS="0 512
1000 3000
65000 2000
131071 200000
3145735 1
8192 4096
2097152 131072
16776192 1024
8388607 65538
500000 13"
apply_ops() {
	local target=$1 flags=$2 off len n=0
	while read -r off len; do
		[ -n "$off" ] || continue
		dd if="$W/rnd" of="$target" bs="$len" count=1 skip=$((n * 4096)) \
			seek="$off" iflag=skip_bytes oflag=seek_bytes \
			conv=notrunc$flags status=none || return 1
		n=$((n + 1))
	done <<<"$DD_OPS"
}

cleanup() {
	mountpoint -q "$MNT" && umount "$MNT"
	"$QIMGCTL" detach -a >/dev/null 2>&1
	losetup -D 2>/dev/null
	rm -f "$W"/*.qcow2 "$W"/*.raw "$W"/*.img
}

# unsupported_ok FUNC [ARGS]: for features the driver may refuse by design
# (zstd, writing extended L2): a clean "unsupported" refusal at attach
# time is a skip, not a failure (QIMG_E2E_STRICT=1 makes it a failure).
unsupported_ok() {
	local out rc
	out=$("$@" 2>&1)
	rc=$?
	printf '%s\n' "$out"
	[ $rc = 0 ] && return 0
	if [ "${QIMG_E2E_STRICT:-0}" != 1 ] &&
		printf '%s\n' "$out" | grep -q '^FAILED: qimgctl attach.*unsupported'; then
		echo "SKIP-UNSUPPORTED: $(printf '%s\n' "$out" | grep -m1 -o 'unsupported.*')"
		return 0
	fi
	return $rc
}

# The kernel-report patterns qimg-vm scans the whole log for (klog.sh),
# plus any stack trace.
# shellcheck source=../klog.sh
. "$REPO/tools/testing/vm/klog.sh"
KBAD="$QIMG_KLOG_BAD|Call Trace"
# tc NAME FUNC [ARGS]: one case.  Its output is shown only when it fails;
# a kernel splat while it ran fails it too, so blame lands on the right
# case (qimg-vm also fails the whole run for it).  A case that prints
# "SKIP-CASE: why" and returns 0 is a skip (the guest lacks something).
tc() {
	local name=$1 out n0 new
	shift
	if [ -n "$FILTER" ] && ! [[ $name =~ $FILTER ]]; then
		return 0
	fi
	n0=$(dmesg | wc -l)
	local t0=$SECONDS
	out=$("$@" 2>&1)
	local rc=$?
	echo "# $name: $((SECONDS - t0)) s"
	new=$(dmesg | tail -n +$((n0 + 1)) | grep -E "${TC_KBAD:-$KBAD}")
	if [ $rc = 0 ] && [ -z "$new" ]; then
		local skip
		skip=$(printf '%s\n' "$out" | sed -n 's/^SKIP-UNSUPPORTED: //p' | head -n 1)
		if [ -n "$skip" ]; then
			t_skip "$name" "refused cleanly: $skip"
		elif skip=$(printf '%s\n' "$out" | sed -n 's/^SKIP-CASE: //p' | head -n 1) &&
			[ -n "$skip" ]; then
			# The guest lacks what the case needs (a case says why).
			t_skip "$name" "$skip"
		else
			t_pass "$name"
		fi
	elif [ $rc = 0 ]; then
		t_fail "$name: kernel log: $(echo "$new" | head -n 1)"
		dmesg | tail -n +$((n0 + 1)) | head -n 60 | sed 's/^/#   /'
	else
		t_fail "$name: $(printf '%s\n' "$out" | grep -m1 -E 'FAILED|differ|error|Error' || echo "status $rc")"
		printf '%s\n' "$out" | tail -n 30 | sed 's/^/#   /'
		dmesg | tail -n +$((n0 + 1)) | tail -n 20 | sed 's/^/#   dmesg: /'
	fi
	cleanup
}

# Random data used by every write test, so host-side references can be
# rebuilt from the same bytes.
dd if=/dev/urandom of="$W/rnd" bs=1M count=1 status=none

if [ "$P" = qimg ] && [ ! -c /dev/qimg-control ]; then
	t_fail "e2e: /dev/qimg-control missing after insmod"
fi

# --- read-only: images written by QEMU --------------------------------------

# The qemu-io script used for several layouts: patterns at aligned and odd
# offsets, cluster-crossing writes, zero writes (with and without unmap),
# discards, and the last bytes of the disk.
QIO_PAT=(-c 'write -P 0xa1 0 64k' -c 'write -P 0xa2 1M 4k'
	-c 'write -P 0xa3 130001 70000' -c 'write -P 0xa4 4M 3M'
	-c 'write -z 5M 64k' -c 'write -z -u 6M 256k' -c 'discard 1M 4k'
	-c 'discard 4194304 65536' -c 'write -P 0xa5 10485761 511'
	-c 'write -P 0xee 15M 1M')

ro_patterns() {
	run qemu-img create -q -f qcow2 -o "cluster_size=$1" p.qcow2 16M || return 1
	run qemu-io -f qcow2 "${QIO_PAT[@]}" p.qcow2 >/dev/null || return 1
	ro_check p.qcow2
}
tc "ro: patterns, zero writes, discards (64k clusters)" ro_patterns 64k
tc "ro: cluster size 4k" ro_patterns 4k
tc "ro: cluster size 2M" ro_patterns 2M
tc "ro: cluster size 512" ro_patterns 512

ro_empty() {
	run qemu-img create -q -f qcow2 e.qcow2 64M || return 1
	ro_check e.qcow2
}
tc "ro: empty 64M image reads as zeros" ro_empty

ro_extl2() {
	run qemu-img create -q -f qcow2 -o cluster_size=64k,extended_l2=on x.qcow2 32M ||
		return 1
	# 2k subclusters: writes inside one, across two, zeroing one.
	run qemu-io -f qcow2 -c 'write -P 0xb1 2048 2048' -c 'write -P 0xb2 5000 3000' \
		-c 'write -P 0xb3 65536 64k' -c 'write -z 69632 2048' \
		-c 'discard 71680 2048' -c 'write -P 0xb4 200000 100' x.qcow2 >/dev/null ||
		return 1
	ro_check x.qcow2
}
tc "ro: extended_l2 subclusters" ro_extl2

ro_extl2_backing() {
	run qemu-img create -q -f qcow2 b.qcow2 32M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x11 0 1M' b.qcow2 >/dev/null || return 1
	run qemu-img create -q -f qcow2 -o cluster_size=64k,extended_l2=on \
		-b b.qcow2 -F qcow2 x.qcow2 || return 1
	run qemu-io -f qcow2 -c 'write -P 0xb1 2048 2048' -c 'write -z 8192 2048' \
		-c 'write -P 0xb2 70000 10' x.qcow2 >/dev/null || return 1
	ro_check x.qcow2
}
tc "ro: extended_l2 over a backing file" ro_extl2_backing

ro_chain() {
	run qemu-img create -q -f qcow2 c0.qcow2 64M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x01 0 4M' -c 'write -P 0x0f 60M 1M' \
		c0.qcow2 >/dev/null || return 1
	run qemu-img create -q -f qcow2 -b c0.qcow2 -F qcow2 c1.qcow2 || return 1
	run qemu-io -f qcow2 -c 'write -P 0x02 1M 1M' -c 'write -P 0x12 3000 5000' \
		-c 'write -z 2M 64k' c1.qcow2 >/dev/null || return 1
	run qemu-img create -q -f qcow2 -o cluster_size=4k -b c1.qcow2 -F qcow2 c2.qcow2 ||
		return 1
	run qemu-io -f qcow2 -c 'write -P 0x03 1572864 4096' -c 'write -P 0x13 4000 100' \
		-c 'write -z 60M 4k' -c 'discard 3M 64k' c2.qcow2 >/dev/null || return 1
	ro_check c2.qcow2
}
tc "ro: 3-deep backing chain" ro_chain

ro_raw_backing() {
	run dd if="$W/rnd" of=base.raw bs=1M count=1 status=none || return 1
	run truncate -s 8M base.raw || return 1
	run qemu-img create -q -f qcow2 -b base.raw -F raw o.qcow2 || return 1
	run qemu-io -f qcow2 -c 'write -P 0x77 10000 100' o.qcow2 >/dev/null || return 1
	ro_check o.qcow2
}
tc "ro: raw backing file" ro_raw_backing

ro_short_backing() {
	# A backing file smaller than the overlay: reads past its end are zero.
	run qemu-img create -q -f qcow2 s.qcow2 1M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x21 0 1M' s.qcow2 >/dev/null || return 1
	run qemu-img create -q -f qcow2 -b s.qcow2 -F qcow2 o.qcow2 16M || return 1
	ro_check o.qcow2
}
tc "ro: backing file shorter than the overlay" ro_short_backing

ro_snapshot() {
	run qemu-img create -q -f qcow2 s.qcow2 32M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x31 0 2M' s.qcow2 >/dev/null || return 1
	run qemu-img snapshot -c one s.qcow2 || return 1
	run qemu-io -f qcow2 -c 'write -P 0x32 1M 2M' -c 'write -P 0x33 100 10' \
		s.qcow2 >/dev/null || return 1
	run qemu-img snapshot -c two s.qcow2 || return 1
	run qemu-io -f qcow2 -c 'discard 0 64k' -c 'write -P 0x34 8M 64k' \
		s.qcow2 >/dev/null || return 1
	ro_check s.qcow2
}
tc "ro: internal snapshots (active layer)" ro_snapshot

ro_compressed() {
	# Compressible data (text and patterns) with holes, then a few normal
	# clusters written over compressed ones.
	{
		seq 1 200000
		head -c 1M "$W/rnd"
		yes qimg | head -c 2M
	} >src.raw
	run truncate -s 16M src.raw || return 1
	run qemu-img convert -q -c -O qcow2 -o "compression_type=$1" src.raw z.qcow2 ||
		return 1
	run qemu-io -f qcow2 -c 'write -P 0x41 65536 4096' z.qcow2 >/dev/null || return 1
	ro_check z.qcow2
}
tc "ro: compressed clusters (zlib)" ro_compressed zlib
tc "ro: compressed clusters (zstd)" unsupported_ok ro_compressed zstd

ro_refcount_bits() {
	run qemu-img create -q -f qcow2 -o "refcount_bits=$1" r.qcow2 16M || return 1
	run qemu-io -f qcow2 "${QIO_PAT[@]:0:8}" r.qcow2 >/dev/null || return 1
	ro_check r.qcow2
}
tc "ro: refcount_bits=1" ro_refcount_bits 1
tc "ro: refcount_bits=64" ro_refcount_bits 64

# --- writes through /dev/qimgN ----------------------------------------------

rw_dd() {
	run qemu-img create -q -f qcow2 -o "$1" w.qcow2 16M || return 1
	run truncate -s 16M w.raw || return 1
	q_attach w.qcow2 || return 1
	apply_ops "$DEV" ,fsync || { echo "FAILED: dd to $DEV"; return 1; }
	# O_DIRECT sub-cluster and cross-cluster writes too.
	run dd if="$W/rnd" of="$DEV" bs=4k count=3 skip=100 seek=2000 oflag=direct \
		conv=notrunc status=none || return 1
	run dd if="$W/rnd" of=w.raw bs=4k count=3 skip=100 seek=2000 \
		conv=notrunc status=none || return 1
	apply_ops w.raw "" || return 1
	# Read back through the driver before QEMU looks at the file.
	cmp_detach_check "$DEV" w.qcow2 w.raw || return 1
	# Second round: overwrite clusters that are allocated now.
	q_attach w.qcow2 || return 1
	run dd if="$W/rnd" of="$DEV" bs=1000 count=7 skip=3 seek=777 conv=notrunc,fsync \
		status=none || return 1
	run dd if="$W/rnd" of=w.raw bs=1000 count=7 skip=3 seek=777 conv=notrunc status=none ||
		return 1
	q_detach "$DEV" || return 1
	run qemu-img check -q w.qcow2 || return 1
	run qemu-img compare -q -f qcow2 -F raw w.qcow2 w.raw
}
tc "rw: dd at odd offsets (64k clusters)" rw_dd cluster_size=64k
tc "rw: dd at odd offsets (4k clusters)" rw_dd cluster_size=4k
tc "rw: dd at odd offsets (2M clusters)" rw_dd cluster_size=2M
tc "rw: dd at odd offsets (extended_l2)" rw_dd cluster_size=64k,extended_l2=on
tc "rw: dd at odd offsets (extended_l2, 2M clusters)" rw_dd cluster_size=2M,extended_l2=on
tc "rw: dd at odd offsets (refcount_bits=1)" rw_dd refcount_bits=1

rw_fio() {
	run qemu-img create -q -f qcow2 f.qcow2 128M || return 1
	q_attach f.qcow2 || return 1
	run fio --name=verify --filename="$DEV" --rw=randwrite --bsrange=4k-64k \
		--size=24M --ioengine=libaio --iodepth=16 --direct=1 \
		--verify=crc32c --verify_fatal=1 --randrepeat=0 --output=/dev/null ||
		{ q_detach "$DEV"; return 1; }
	dump_detach_compare "$DEV" f.qcow2
}
tc "rw: fio random writes, verify=crc32c" rw_fio

rw_ext4() {
	run qemu-img create -q -f qcow2 e.qcow2 256M || return 1
	q_attach e.qcow2 || return 1
	run mkfs.ext4 -q -F "$DEV" || return 1
	run mount "$DEV" "$MNT" || return 1
	mkdir "$MNT/tree"
	run cp -a "$REPO/drivers" "$REPO/tools" "$MNT/tree/" || return 1
	run dd if=/dev/urandom of="$MNT/big" bs=1M count=8 status=none || return 1
	(cd "$MNT" && find . -type f ! -name sums -exec sha256sum {} + >sums)
	run umount "$MNT" || return 1
	run e2fsck -fn "$DEV" || return 1
	run mount -o ro "$DEV" "$MNT" || return 1
	(cd "$MNT" && sha256sum --quiet -c sums) || { echo "FAILED: sums differ"; return 1; }
	run umount "$MNT" || return 1
	dump_detach_compare "$DEV" e.qcow2
}
tc "rw: mkfs.ext4, copy files, e2fsck -fn" rw_ext4

# COW: writes into an overlay whose backing file has data; the untouched
# parts of each cluster must come from the backing file.
rw_cow() {
	local bfmt=$1 ovopts=$2
	if [ "$bfmt" = raw ]; then
		run dd if="$W/rnd" of=base.img bs=1M count=1 status=none || return 1
		run truncate -s 16M base.img || return 1
	else
		run qemu-img create -q -f qcow2 base.img 16M || return 1
		run qemu-io -f qcow2 -c 'write -P 0x5a 0 4M' -c 'write -P 0x5b 9M 2M' \
			base.img >/dev/null || return 1
	fi
	run qemu-img create -q -f qcow2 -o "$ovopts" -b base.img -F "$bfmt" ov.qcow2 ||
		return 1
	run qemu-img convert -O raw base.img ov.raw || return 1
	q_attach ov.qcow2 || return 1
	apply_ops "$DEV" ,fsync || { echo "FAILED: dd to $DEV"; return 1; }
	apply_ops ov.raw "" || return 1
	q_detach "$DEV" || return 1
	run qemu-img check -q ov.qcow2 || return 1
	run qemu-img compare -q -f qcow2 -F raw ov.qcow2 ov.raw
}
tc "cow: overlay over qcow2 backing" rw_cow qcow2 cluster_size=64k
tc "cow: overlay over raw backing" rw_cow raw cluster_size=64k
tc "cow: overlay with 2M clusters" rw_cow qcow2 cluster_size=2M
tc "cow: extended_l2 overlay (subcluster COW)" rw_cow qcow2 cluster_size=64k,extended_l2=on
tc "cow: extended_l2 overlay over raw backing" rw_cow raw cluster_size=64k,extended_l2=on
# The page cache writes 4k pages: only subclusters past 4k (clusters past
# 128k) see writes that cover part of a subcluster.
tc "cow: extended_l2 overlay, 2M clusters (64k subclusters)" rw_cow qcow2 \
	cluster_size=2M,extended_l2=on
tc "cow: extended_l2 overlay, 512k clusters, raw backing" rw_cow raw \
	cluster_size=512k,extended_l2=on

# Extended L2 writes in every kind of cluster: partly allocated ones
# (qemu-io wrote subclusters first), zero subclusters, clusters shared
# with an internal snapshot, compressed clusters; discard and write
# zeroes; four writers in the same clusters; journal on and off.  The
# guest view is compared with a raw reference, the snapshot with its own.
rw_extl2_mix() {
	local jr=$1
	run qemu-img create -q -f qcow2 base.img 16M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x5a 0 6M' -c 'write -P 0x5b 9M 2M' \
		base.img >/dev/null || return 1
	run qemu-img create -q -f qcow2 -o cluster_size=64k,extended_l2=on \
		-b base.img -F qcow2 x.qcow2 || return 1
	run qemu-io -f qcow2 -c 'write -P 0xb1 2048 2048' -c 'write -z 8192 2048' \
		-c 'write -P 0xb2 65536 10000' -c 'write -P 0xb3 1M 256k' \
		-c 'write -z 2M 64k' -c 'write -P 0xb4 3M 64k' x.qcow2 >/dev/null || return 1
	run qemu-img snapshot -c s1 x.qcow2 || return 1
	run qemu-img convert -O raw x.qcow2 s1.raw || return 1
	# Compressed clusters at 4M..5M (the base's data, compressed).
	run qemu-io -f qcow2 -c 'write -c -P 0xc1 4M 512k' x.qcow2 >/dev/null ||
		return 1
	run qemu-img convert -O raw x.qcow2 x.raw || return 1
	q_attach "$jr" x.qcow2 || return 1
	apply_ops "$DEV" ,fsync || { echo "FAILED: dd to $DEV"; return 1; }
	apply_ops x.raw "" || return 1
	# Into the compressed and the snapshot-shared clusters, unaligned.
	run dd if="$W/rnd" of="$DEV" bs=3000 count=5 seek=1400 conv=notrunc,fsync \
		status=none || return 1
	run dd if="$W/rnd" of=x.raw bs=3000 count=5 seek=1400 conv=notrunc status=none ||
		return 1
	run dd if="$W/rnd" of="$DEV" bs=1k count=3 skip=9 seek=1100 oflag=direct \
		conv=notrunc status=none || return 1
	run dd if="$W/rnd" of=x.raw bs=1k count=3 skip=9 seek=1100 conv=notrunc \
		status=none || return 1
	# Whole clusters: discard and write zeroes read zeros (over a backing
	# file too), a partial discard changes nothing.
	run blkdiscard -o 7M -l 192k "$DEV" || return 1
	run blkdiscard -z -o 9M -l 64k "$DEV" || return 1
	run blkdiscard -o 12288 -l 4096 "$DEV" || return 1
	run dd if=/dev/zero of=x.raw bs=64k count=3 seek=112 conv=notrunc status=none ||
		return 1
	run dd if=/dev/zero of=x.raw bs=64k count=1 seek=144 conv=notrunc status=none ||
		return 1
	# Four writers in interleaved 4k slots of the same new clusters.
	run fio --filename="$DEV" --rw=write:12k --bs=4k --size=1M --ioengine=libaio \
		--iodepth=4 --direct=1 --verify=crc32c --verify_fatal=1 --output=/dev/null \
		--name=s0 --offset=13M --name=s1 --offset=13316k \
		--name=s2 --offset=13320k --name=s3 --offset=13324k ||
		{ q_detach "$DEV"; return 1; }
	run dd if="$DEV" of=fio.part bs=64k skip=208 count=20 iflag=direct status=none ||
		return 1
	run dd if=fio.part of=x.raw bs=64k seek=208 conv=notrunc status=none || return 1
	cmp_detach_check "$DEV" x.qcow2 x.raw || return 1
	# Attached again: the same view, then the snapshot is intact.
	q_attach -r x.qcow2 || return 1
	run cmp "$DEV" x.raw || return 1
	q_detach "$DEV" || return 1
	run qemu-img snapshot -a s1 x.qcow2 || return 1
	run qemu-img check -q x.qcow2 || return 1
	run qemu-img compare -q -f qcow2 -F raw x.qcow2 s1.raw
}
tc "rw: extended_l2 in every kind of cluster" rw_extl2_mix --journal=off
tc "rw: extended_l2 in every kind of cluster (journal on)" rw_extl2_mix --journal=on

# Four writers into unallocated clusters at once: disjoint regions, then
# interleaved 4k slots inside the same clusters.
conc() {
	run qemu-img create -q -f qcow2 c.qcow2 256M || return 1
	q_attach c.qcow2 || return 1
	run fio --name=c --filename="$DEV" --rw=randwrite --bs=4k --numjobs=4 \
		--offset_increment=32M --size=4M --ioengine=libaio --iodepth=8 \
		--direct=1 --verify=crc32c --verify_fatal=1 --output=/dev/null ||
		{ q_detach "$DEV"; return 1; }
	run fio --filename="$DEV" --rw=write:12k --bs=4k --size=2M --ioengine=libaio \
		--iodepth=4 --direct=1 --verify=crc32c --verify_fatal=1 --output=/dev/null \
		--name=s0 --offset=160M --name=s1 --offset=163844k \
		--name=s2 --offset=163848k --name=s3 --offset=163852k ||
		{ q_detach "$DEV"; return 1; }
	dump_detach_compare "$DEV" c.qcow2
}
tc "concurrency: 4 fio jobs allocating clusters" conc

# conc_ride CLUSTER_SIZE [ATTACH-ARGS...]: sequential 4k writes at QD32
# into an empty image.  Writes into a cluster whose allocation is in
# flight ride on it (alloc_riders) instead of waiting for the link; each
# reads back (fio's checksums) and the image holds the device's view.  At
# 2M clusters 512 writes share a cluster: past 64 riders the rest wait.
conc_ride() {
	local cs=$1 s n
	shift
	run qemu-img create -q -f qcow2 -o cluster_size="$cs" r.qcow2 64M || return 1
	q_attach "$@" r.qcow2 || return 1
	s=/sys/block/${DEV#/dev/}/qimg
	run fio --name=r --filename="$DEV" --rw=write --bs=4k --size=8M \
		--ioengine=libaio --iodepth=32 --direct=1 --verify=crc32c \
		--verify_fatal=1 --output=/dev/null || { q_detach "$DEV"; return 1; }
	n=$(cat $s/alloc_riders)
	echo "# $n of 2048 writes rode on an allocation in flight"
	[ "$n" -gt 0 ] ||
		{ echo "FAILED: no write rode on an allocation in flight"; q_detach "$DEV"; return 1; }
	dump_detach_compare "$DEV" r.qcow2
}
tc "concurrency: QD32 sequential 4k writes ride on allocations in flight" conc_ride 64k
tc "concurrency: the same, 2M clusters (riders capped), journal on" conc_ride 2M --journal=on

# Writes racing discards and flushes of the same region (A) free clusters
# and hand them to a verified writer of another region (B) while stale I/O
# to A may still be in flight: B must read back exactly what it wrote (a
# late write of A landing in a reused cluster would break its checksums),
# and the image must check clean.  A's own content is undefined.
conc_discard() {
	local pid dpid rc=0
	run qemu-img create -q -f qcow2 -o cluster_size=4k d.qcow2 64M || return 1
	q_attach d.qcow2 || return 1
	timeout "$TO" fio --name=a --filename="$DEV" --rw=randwrite --bs=4k \
		--size=16M --ioengine=libaio --iodepth=16 --direct=1 \
		--time_based --runtime=15 --output=a.fio.log &
	pid=$!
	(
		for _ in $(seq 40); do
			blkdiscard -o 0 -l 16M "$DEV" 2>/dev/null
			dd if=/dev/zero of="$DEV" bs=4k count=0 conv=fsync status=none
		done
	) &
	dpid=$!
	run fio --name=b --filename="$DEV" --rw=randwrite --bs=4k --offset=32M \
		--size="$RACE_SIZE" --ioengine=libaio --iodepth=16 --direct=1 \
		--verify=crc32c --verify_fatal=1 --output=/dev/null || rc=1
	wait "$dpid"
	wait "$pid" || { echo "FAILED: writer of region A"; tail -n 20 a.fio.log; rc=1; }
	[ $rc = 0 ] || { q_detach "$DEV"; return 1; }
	q_detach "$DEV" || return 1
	qemu-img check -q d.qcow2 ||
		{ echo "FAILED: qemu-img check after racing discards"; return 1; }
}
tc "concurrency: writes racing discards and flushes" conc_discard

# --- error paths --------------------------------------------------------------

# attach_refused IMG [OPTS]: attach must fail with a message and leave no
# device behind.
attach_refused() {
	local img=$1 out
	shift
	local before after
	before=$("$QIMGCTL" list 2>/dev/null | wc -l)
	if out=$(timeout 60 "$QIMGCTL" attach "$@" "$img" 2>&1); then
		echo "FAILED: attach of $img succeeded: $out"
		return 1
	fi
	[ -n "$out" ] || { echo "FAILED: attach failed without a message"; return 1; }
	echo "attach said: $out"
	after=$("$QIMGCTL" list 2>/dev/null | wc -l)
	[ "$before" = "$after" ] || { echo "FAILED: a device was left behind"; return 1; }
}

err_not_qcow2() {
	run dd if="$W/rnd" of=n.img bs=1M count=1 status=none || return 1
	attach_refused n.img
}
tc "err: attach of a non-qcow2 file refused" err_not_qcow2

err_empty_file() {
	: >e.img
	attach_refused e.img
}
tc "err: attach of an empty file refused" err_empty_file

err_header() {
	run qemu-img create -q -f qcow2 h.qcow2 16M || return 1
	case $1 in
	l1) be_write64 h.qcow2 40 74565 ;;		# unaligned L1 offset
	rt) be_write64 h.qcow2 48 $((1 << 50)) ;;	# refcount table past EOF
	cb) printf '\x00\x00\x00\x28' | dd of=h.qcow2 bs=1 seek=20 conv=notrunc status=none ;;
	feat) be_write64 h.qcow2 72 $((1 << 62)) ;;	# unknown incompatible bit
	ver) printf '\x00\x00\x00\x04' | dd of=h.qcow2 bs=1 seek=4 conv=notrunc status=none ;;
	esac
	attach_refused h.qcow2 -r
}
tc "err: unaligned L1 table offset refused" err_header l1
tc "err: refcount table past EOF refused" err_header rt
tc "err: cluster_bits 40 refused" err_header cb
tc "err: unknown incompatible feature refused" err_header feat
tc "err: qcow2 version 4 refused" err_header ver

err_data_file() {
	run qemu-img create -q -f qcow2 -o data_file=d.raw d.qcow2 16M || return 1
	# External data files may be unsupported: then refuse cleanly, else
	# show the right data.
	if out=$(timeout 60 "$QIMGCTL" attach -r d.qcow2 2>&1); then
		echo "attach accepted the external data file: $out"
		"$QIMGCTL" detach -a >/dev/null 2>&1
		ro_check d.qcow2
	else
		[ -n "$out" ] || { echo "FAILED: refused without a message"; return 1; }
	fi
}
tc "err: external data file refused or served" err_data_file

err_bad_l2_entry() {
	local l1 l2
	run qemu-img create -q -f qcow2 b.qcow2 16M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x61 0 64k' b.qcow2 >/dev/null || return 1
	l1=$((16#$(be_read b.qcow2 40 8)))
	l2=$(( (16#$(be_read b.qcow2 "$l1" 8)) & 0x00fffffffffffe00 ))
	# Point guest cluster 0 far beyond the end of the file.
	be_write64 b.qcow2 "$l2" $(( (1 << 63) | (1 << 44) ))
	if ! q_attach -r b.qcow2; then
		return 0	# refusing at attach time is fine too
	fi
	if dd if="$DEV" of=/dev/null bs=64k count=1 iflag=direct status=none 2>/dev/null; then
		echo "FAILED: read of a cluster past EOF succeeded"
		q_detach "$DEV"
		return 1
	fi
	# The rest of the device must still work.
	run dd if="$DEV" of=/dev/null bs=64k skip=1 count=4 status=none || return 1
	q_detach "$DEV"
}
tc "err: L2 entry past EOF gives EIO, no crash" err_bad_l2_entry

# --- overlap checks: no write may land in metadata --------------------------

# ol_write_refused DEV N0 [SEEK]: a 64k direct write at guest cluster SEEK
# (default 0) must fail, and
# the device must be read-only afterwards, with the overlap in dmesg.
ol_write_refused() {
	local dev=$1 n0=$2 seek=${3:-0}
	if dd if="$W/rnd" of="$dev" bs=64k count=1 seek="$seek" oflag=direct conv=notrunc status=none 2>/dev/null; then
		echo "FAILED: write landing in metadata succeeded"
		return 1
	fi
	[ "$(blockdev --getro "$dev")" = 1 ] ||
		{ echo "FAILED: $dev is not read-only after the overlap"; return 1; }
	dmesg | tail -n +$((n0 + 1)) | grep -q 'overlap' ||
		{ echo "FAILED: dmesg does not name the overlap"; return 1; }
}

# ol_same IMG ORIG OFF LEN: bytes [OFF, OFF+LEN) unchanged.
ol_same() {
	cmp -i "$3" -n "$4" "$1" "$2" >/dev/null ||
		{ echo "FAILED: $4 bytes of metadata at $3 changed"; return 1; }
}

# Refcount table entry 0 cleared: the refcount block the next allocation
# creates would cover -- and land in -- cluster 0, the header.  The L2
# table exists already, so the write needs one data cluster only.
err_ol_reftable0() {
	local rt n0
	run qemu-img create -q -f qcow2 o.qcow2 16M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x61 0 64k' o.qcow2 >/dev/null || return 1
	rt=$((16#$(be_read o.qcow2 48 8)))
	be_write64 o.qcow2 "$rt" 0
	cp o.qcow2 o.orig || return 1
	q_attach o.qcow2 || return 1
	n0=$(dmesg | wc -l)
	ol_write_refused "$DEV" "$n0" 1 || { q_detach "$DEV"; return 1; }
	q_detach "$DEV" || return 1
	# The header, but for the incompatible features (the corrupt bit).
	ol_same o.qcow2 o.orig 0 72 || return 1
	ol_same o.qcow2 o.orig 80 $((65536 - 80)) || return 1
	[ $(( 16#$(be_read o.qcow2 72 8) & 2 )) = 2 ] ||
		{ echo "FAILED: corrupt bit not set"; return 1; }
}
tc "err: overlap: refcount table entry 0 cleared, header not overwritten" err_ol_reftable0

# err_ol_entry KIND TARGET: guest cluster 0's L2 entry (COPIED; KIND normal
# or zero: zero-allocated) patched to point at metadata TARGET; a write
# there must fail and leave that metadata cluster untouched.
err_ol_entry() {
	local kind=$1 what=$2 l1 rt rb l2 l2b st tgt n0 raw
	run qemu-img create -q -f qcow2 o.qcow2 1G || return 1
	run qemu-io -f qcow2 -c 'write -P 0x61 0 64k' \
		-c 'write -P 0x62 512M 64k' o.qcow2 >/dev/null || return 1
	run qemu-img snapshot -c s1 o.qcow2 || return 1
	l1=$((16#$(be_read o.qcow2 40 8)))
	rt=$((16#$(be_read o.qcow2 48 8)))
	st=$((16#$(be_read o.qcow2 64 8)))
	rb=$(( 16#$(be_read o.qcow2 "$rt" 8) & ~511 ))
	l2=$(( 16#$(be_read o.qcow2 "$l1" 8) & 0x00fffffffffffe00 ))
	l2b=$(( 16#$(be_read o.qcow2 $((l1 + 8)) 8) & 0x00fffffffffffe00 ))
	case $what in
	l1) tgt=$l1 ;;
	reftable) tgt=$rt ;;
	refblock) tgt=$rb ;;
	l2) tgt=$l2b ;;		# another L2 table
	snaptable) tgt=$st ;;
	snapl1) tgt=$(( 16#$(be_read o.qcow2 "$st" 8) )) ;;
	esac
	raw=$(( (1 << 63) | tgt ))
	[ "$kind" = zero ] && raw=$(( raw | 1 ))
	be_write64 o.qcow2 "$l2" "$raw"
	cp o.qcow2 o.orig || return 1
	q_attach o.qcow2 || return 1
	n0=$(dmesg | wc -l)
	ol_write_refused "$DEV" "$n0" || { q_detach "$DEV"; return 1; }
	q_detach "$DEV" || return 1
	ol_same o.qcow2 o.orig "$tgt" 65536
}
for k in normal zero; do
	for t in l1 reftable refblock l2 snaptable snapl1; do
		tc "err: overlap: $k L2 entry pointing at the $t, write refused" err_ol_entry $k $t
	done
done

# Requests over several clusters: one kiocb while the clusters lie back
# to back in the file, cluster by cluster once two entries are swapped
# (not contiguous), and refused when an entry past the first names the
# L1 table (the overlap check of every cluster, not only the first).
io_multi() {
	local l1 l2 c1 c3 m=0x00fffffffffffe00 n0
	run qemu-img create -q -f qcow2 m.qcow2 16M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x11 0 64k' -c 'write -P 0x22 64k 64k' \
		-c 'write -P 0x33 128k 64k' -c 'write -P 0x44 192k 64k' \
		m.qcow2 >/dev/null || return 1
	run qemu-img convert -O raw m.qcow2 m.raw || return 1
	l1=$((16#$(be_read m.qcow2 40 8)))
	l2=$(( 16#$(be_read m.qcow2 "$l1" 8) & m ))
	c1=$((16#$(be_read m.qcow2 $((l2 + 8)) 8)))
	c3=$((16#$(be_read m.qcow2 $((l2 + 24)) 8)))
	[ $(( (c3 & m) - (c1 & m) )) = 131072 ] ||
		{ echo "FAILED: qemu-io did not write the clusters back to back"; return 1; }
	# io_multi_rw: 256k read, 256k write, read back, against m.raw.
	io_multi_rw() {
		q_attach m.qcow2 || return 1
		run dd if="$DEV" of=got bs=256k count=1 iflag=direct status=none &&
			run cmp -n 262144 got m.raw || { q_detach "$DEV"; return 1; }
		run dd if="$W/rnd" of="$DEV" bs=256k count=1 skip="$1" oflag=direct \
			conv=notrunc status=none || { q_detach "$DEV"; return 1; }
		run dd if="$W/rnd" of=m.raw bs=256k count=1 skip="$1" conv=notrunc \
			status=none || return 1
		run dd if="$DEV" of=got bs=256k count=1 iflag=direct status=none &&
			run cmp -n 262144 got m.raw || { q_detach "$DEV"; return 1; }
		q_detach "$DEV" || return 1
		run qemu-img check -q m.qcow2 &&
			run qemu-img compare -q -f qcow2 -F raw m.qcow2 m.raw
	}
	io_multi_rw 1 || return 1
	# Swap guest clusters 1 and 3 (and the reference's copies).
	be_write64 m.qcow2 $((l2 + 8)) "$c3"
	be_write64 m.qcow2 $((l2 + 24)) "$c1"
	run dd if=m.raw of=c1 bs=64k skip=1 count=1 status=none &&
		run dd if=m.raw of=m.raw bs=64k skip=3 seek=1 count=1 conv=notrunc status=none &&
		run dd if=c1 of=m.raw bs=64k seek=3 count=1 conv=notrunc status=none || return 1
	io_multi_rw 2 || return 1
	# Guest cluster 1 names the L1 table: a write over clusters 0-1 fails.
	be_write64 m.qcow2 $((l2 + 8)) $(( (1 << 63) | l1 ))
	cp m.qcow2 m.orig || return 1
	q_attach m.qcow2 || return 1
	n0=$(dmesg | wc -l)
	if dd if="$W/rnd" of="$DEV" bs=128k count=1 oflag=direct conv=notrunc status=none 2>/dev/null; then
		echo "FAILED: a write over an entry naming the L1 table succeeded"
		q_detach "$DEV"
		return 1
	fi
	[ "$(blockdev --getro "$DEV")" = 1 ] ||
		{ echo "FAILED: $DEV is not read-only after the overlap"; q_detach "$DEV"; return 1; }
	dmesg | tail -n +$((n0 + 1)) | grep -q 'overlap' ||
		{ echo "FAILED: dmesg does not name the overlap"; q_detach "$DEV"; return 1; }
	q_detach "$DEV" || return 1
	ol_same m.qcow2 m.orig "$l1" 65536
}
tc "io: requests over several clusters: contiguous, swapped, one naming the L1 table" io_multi

# A zero-allocated entry is range-checked like a normal one: an unaligned
# or past-EOF host offset is corrupt, for reads and writes alike.
err_ol_zero_bad() {
	local how=$1 l1 l2 data size
	run qemu-img create -q -f qcow2 o.qcow2 16M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x61 0 128k' o.qcow2 >/dev/null || return 1
	l1=$((16#$(be_read o.qcow2 40 8)))
	l2=$(( 16#$(be_read o.qcow2 "$l1" 8) & 0x00fffffffffffe00 ))
	data=$(( 16#$(be_read o.qcow2 "$l2" 8) & 0x00fffffffffffe00 ))
	case $how in
	unaligned) be_write64 o.qcow2 "$l2" $(( (1 << 63) | (data + 512) | 1 )) ;;
	eof) be_write64 o.qcow2 "$l2" $(( (1 << 63) | (1 << 40) | 1 )) ;;
	esac
	size=$(stat -c %s o.qcow2)
	q_attach o.qcow2 || return 1
	if dd if="$DEV" of=/dev/null bs=64k count=1 iflag=direct status=none 2>/dev/null; then
		echo "FAILED: read through a bad zero-allocated entry succeeded"
		q_detach "$DEV"
		return 1
	fi
	if dd if="$W/rnd" of="$DEV" bs=4k count=1 oflag=direct conv=notrunc status=none 2>/dev/null; then
		echo "FAILED: write through a bad zero-allocated entry succeeded"
		q_detach "$DEV"
		return 1
	fi
	run dd if="$DEV" of=/dev/null bs=64k skip=1 count=1 status=none ||
		{ q_detach "$DEV"; return 1; }
	q_detach "$DEV" || return 1
	[ "$(stat -c %s o.qcow2)" = "$size" ] ||
		{ echo "FAILED: image grew to $(stat -c %s o.qcow2) bytes"; return 1; }
}
tc "err: overlap: zero-allocated entry with an unaligned offset refused" err_ol_zero_bad unaligned
tc "err: overlap: zero-allocated entry past EOF refused" err_ol_zero_bad eof

err_busy() {
	run qemu-img create -q -f qcow2 m.qcow2 64M || return 1
	q_attach m.qcow2 || return 1
	run mkfs.ext4 -q -F "$DEV" || return 1
	run mount "$DEV" "$MNT" || return 1
	if out=$(timeout 60 "$QIMGCTL" detach "$DEV" 2>&1); then
		echo "FAILED: detach of a mounted device succeeded"
		return 1
	fi
	echo "detach said: $out"
	[ -n "$out" ] || { echo "FAILED: no message"; return 1; }
	run umount "$MNT" || return 1
	q_detach "$DEV"
}
tc "err: detach of a mounted device refused" err_busy

err_readonly() {
	run qemu-img create -q -f qcow2 r.qcow2 16M || return 1
	q_attach -r r.qcow2 || return 1
	[ "$(blockdev --getro "$DEV")" = 1 ] || { echo "FAILED: $DEV is not read-only"; return 1; }
	if dd if="$W/rnd" of="$DEV" bs=4k count=1 oflag=direct conv=notrunc status=none 2>/dev/null; then
		echo "FAILED: write to a read-only device succeeded"
		return 1
	fi
	q_detach "$DEV" || return 1
	run qemu-img check -q r.qcow2
}
tc "err: read-only attach refuses writes" err_readonly

err_detach_missing() {
	if out=$(timeout 60 "$QIMGCTL" detach /dev/${P}999 2>&1); then
		echo "FAILED: detach of /dev/${P}999 succeeded"
		return 1
	fi
	[ -n "$out" ] || { echo "FAILED: no message"; return 1; }
}
tc "err: detach of a missing device fails" err_detach_missing

list_json() {
	local d1 d2 js
	run qemu-img create -q -f qcow2 l1.qcow2 16M || return 1
	run qemu-img create -q -f qcow2 -b l1.qcow2 -F qcow2 l2.qcow2 || return 1
	q_attach -r l1.qcow2 || return 1
	d1=$DEV
	q_attach l2.qcow2 || return 1
	d2=$DEV
	js=$(run "$QIMGCTL" list --json) || return 1
	echo "$js"
	printf '%s' "$js" | python3 -c '
import json, sys
doc = json.load(sys.stdin)
text = json.dumps(doc)
for want in sys.argv[1:]:
    if want not in text:
        sys.exit("FAILED: %s not in list --json" % want)
' "$W/l1.qcow2" "$W/l2.qcow2" "${d1#/dev/}" "${d2#/dev/}" || return 1
	q_detach "$d2" || return 1
	q_detach "$d1" || return 1
	js=$(run "$QIMGCTL" list --json) || return 1
	printf '%s' "$js" | python3 -c 'import json, sys; json.load(sys.stdin)' ||
		{ echo "FAILED: list --json after detach is not JSON: $js"; return 1; }
	if printf '%s' "$js" | grep -q "$W/l1.qcow2"; then
		echo "FAILED: detached image still listed"
		return 1
	fi
}
tc "list --json shows attached devices" list_json

# qemu_io_refused WHAT ARGS...: qemu-io ARGS must fail, saying WHAT.
qemu_io_refused() {
	local what=$1 out
	shift
	if out=$(timeout 60 qemu-io "$@" 2>&1); then
		echo "FAILED: qemu-io $* succeeded on a locked image"
		return 1
	fi
	printf '%s\n' "$out" | grep -qF "$what" && return 0
	echo "FAILED: qemu-io $*: no '$what' in: $out"
	return 1
}

# An attached image stays locked the way QEMU locks images (the kernel
# holds the very file qimgctl locked): QEMU must not open it read-write, or
# read-only without -U, while it is attached read-write, and its backing
# file only for reading; after detach it is free again.
attach_locks() {
	run qemu-img create -q -f qcow2 kb.qcow2 16M || return 1
	run qemu-img create -q -f qcow2 -b kb.qcow2 -F qcow2 k.qcow2 || return 1
	q_attach k.qcow2 || return 1
	qemu_io_refused 'Failed to get "write" lock' \
		-f qcow2 -c 'read 0 512' k.qcow2 || { q_detach "$DEV"; return 1; }
	qemu_io_refused 'Failed to get shared "write" lock' \
		-r -f qcow2 -c 'read 0 512' k.qcow2 || { q_detach "$DEV"; return 1; }
	run qemu-io -r -U -f qcow2 -c 'read 0 512' k.qcow2 >/dev/null ||
		{ q_detach "$DEV"; return 1; }
	qemu_io_refused 'Failed to get "write" lock' \
		-f qcow2 -c 'read 0 512' kb.qcow2 || { q_detach "$DEV"; return 1; }
	run qemu-io -r -f qcow2 -c 'read 0 512' kb.qcow2 >/dev/null ||
		{ q_detach "$DEV"; return 1; }
	q_detach "$DEV" || return 1
	# The kernel may drop its last reference a moment after detach.
	for _ in $(seq 50); do
		qemu-io -f qcow2 -c 'read 0 512' k.qcow2 >/dev/null 2>&1 && break
		sleep 0.1
	done
	run qemu-io -f qcow2 -c 'read 0 512' k.qcow2 >/dev/null ||
		{ echo "FAILED: still locked after detach"; return 1; }
	run qemu-io -f qcow2 -c 'read 0 512' kb.qcow2 >/dev/null || return 1
	# Read-only: QEMU may read along, not write.
	q_attach -r k.qcow2 || return 1
	qemu_io_refused 'Failed to get "write" lock' \
		-f qcow2 -c 'read 0 512' k.qcow2 || { q_detach "$DEV"; return 1; }
	run qemu-io -r -f qcow2 -c 'read 0 512' k.qcow2 >/dev/null ||
		{ q_detach "$DEV"; return 1; }
	q_detach "$DEV"
}
tc "attach: attached image stays locked against QEMU" attach_locks

# A backing chain that comes back to one of its files (here through a hard
# link) is refused as a loop, before the kernel sees it.
err_chain_loop() {
	local out
	run qemu-img create -q -f qcow2 la.qcow2 16M || return 1
	run ln -f la.qcow2 la-link.qcow2 || return 1
	run qemu-img create -q -f qcow2 -u -b la-link.qcow2 -F qcow2 lb.qcow2 16M || return 1
	run qemu-img rebase -u -b lb.qcow2 -F qcow2 la.qcow2 || return 1
	out=$(attach_refused la.qcow2 -r) || { echo "$out"; return 1; }
	echo "$out"
	printf '%s\n' "$out" | grep -q 'loop' ||
		{ echo "FAILED: the refusal does not name the loop"; return 1; }
}
tc "err: attach of a backing chain loop refused" err_chain_loop

# --- fault injection -----------------------------------------------------------
#
# What a user expects of a storage driver when the disk under the image
# fails or memory runs out: errors reach the caller, nothing hangs or
# splats, and the image stays consistent.  The disk faults come in two
# kinds: fail_make_request on the loop device (kernels with the debugfs
# fault attributes: the debug kernel), and a device-mapper table switched
# from "linear" to "error" (every kernel with dm-mod, the stock ones
# included).  The allocation faults need the debug kernel.

DBG=/sys/kernel/debug
FMNT=/mnt/fault
FLOOP=
# Injected allocation failures print "page allocation failure" with a stack
# trace by design; every real splat still matches one of the other patterns.
KBAD_FAULT=${KBAD%|Call Trace}

fi_set() {
	echo "$3" >"$DBG/$1/$2" || { echo "FAILED: cannot set $DBG/$1/$2"; return 1; }
}

# The image lives on its own small file system, on a loop device, so that
# only the image's disk fails and never the scratch disk (a failing journal
# write would make the scratch ext4 read-only for every later case).  No
# journal and errors=continue: ext4's own reaction is not under test.
# With FAULT_DM=1 the file system sits on a dm device over the loop device
# (FLOOP then names the dm device, FLOOP_LO the loop device).
FAULT_DM=0
FLOOP_LO=
FDM=qimgfault
fault_disk_up() {
	local sectors
	FLOOP=
	FLOOP_LO=
	run truncate -s 80M "$W/fdisk.img" || return 1
	FLOOP=$(losetup -f --show "$W/fdisk.img") || { echo "FAILED: losetup"; return 1; }
	if [ "$FAULT_DM" = 1 ]; then
		FLOOP_LO=$FLOOP
		FLOOP=
		sectors=$(blockdev --getsz "$FLOOP_LO")
		run dmsetup create --noudevsync $FDM \
			--table "0 $sectors linear $FLOOP_LO 0" || return 1
		FLOOP=/dev/$(dmsetup info -c --noheadings -o blkdevname $FDM | tr -d ' ')
		[ -b "$FLOOP" ] || { echo "FAILED: no device for dm $FDM"; FLOOP=; return 1; }
	fi
	run mkfs.ext4 -q -F -O ^has_journal -E nodiscard "$FLOOP" || return 1
	mkdir -p "$FMNT"
	run mount -o noatime,errors=continue "$FLOOP" "$FMNT"
}

# fault_dm_table TABLE: switch the dm device to TABLE; I/O in flight is
# kept and goes to the new table (no flush, no file system freeze).
fault_dm_table() {
	dmsetup suspend --noudevsync --nolockfs --noflush $FDM &&
		dmsetup load $FDM --table "$1" &&
		dmsetup resume --noudevsync $FDM ||
		{ echo "FAILED: cannot switch $FDM to: $1"; return 1; }
}

fault_mr_off() {
	if [ "$FAULT_DM" = 1 ]; then
		[ -n "$FLOOP_LO" ] && dmsetup info $FDM >/dev/null 2>&1 &&
			fault_dm_table "0 $(blockdev --getsz "$FLOOP_LO") linear $FLOOP_LO 0"
		return 0
	fi
	[ -n "$FLOOP" ] && echo 0 >"/sys/block/${FLOOP#/dev/}/make-it-fail" 2>/dev/null
	echo 0 >"$DBG/fail_make_request/probability" 2>/dev/null
}

# Every request to the image's disk fails until fault_mr_off.
fault_mr_on() {
	if [ "$FAULT_DM" = 1 ]; then
		fault_dm_table "0 $(blockdev --getsz "$FLOOP_LO") error"
		return
	fi
	fi_set fail_make_request verbose 0 &&
		fi_set fail_make_request interval 1 &&
		fi_set fail_make_request space 0 &&
		fi_set fail_make_request times -1 &&
		fi_set fail_make_request probability 100 &&
		echo 1 >"/sys/block/${FLOOP#/dev/}/make-it-fail"
}

# Unmount and mount again: what qemu-img reads next comes from the disk,
# not from pages whose write-back failed.
fault_remount() {
	run umount "$FMNT" || return 1
	run mount -o noatime,errors=continue "$FLOOP" "$FMNT"
}

fault_disk_down() {
	fault_mr_off
	"$QIMGCTL" detach -a >/dev/null 2>&1
	mountpoint -q "$FMNT" && umount "$FMNT"
	if [ -n "$FLOOP_LO" ]; then
		dmsetup remove --noudevsync $FDM 2>/dev/null
		losetup -d "$FLOOP_LO"
	elif [ -n "$FLOOP" ]; then
		losetup -d "$FLOOP"
	fi
	FLOOP=
	FLOOP_LO=
	rm -f "$W/fdisk.img"
}

# fault_on_disk FUNC [ARGS]: run a case with the image disk set up, and
# always switch the faults off and tear it down afterwards.
fault_on_disk() {
	local rc
	if fault_disk_up; then
		"$@"
		rc=$?
	else
		rc=1
	fi
	fault_disk_down
	return $rc
}

# fw TARGET OFFSET LEN SRC [DD ARGS]: write LEN bytes of $W/rnd, taken at
# SRC, at byte OFFSET of TARGET.
fw() {
	local t=$1 off=$2 len=$3 src=$4
	shift 4
	timeout "$TO" dd if="$W/rnd" of="$t" bs="$len" count=1 skip="$src" \
		seek="$off" iflag=skip_bytes oflag=seek_bytes conv=notrunc \
		status=none "$@"
}

# must_eio WHAT CMD...: CMD (a time-limited write or flush while the disk
# fails) must fail with EIO.
must_eio() {
	local what=$1 out rc
	shift
	out=$("$@" 2>&1)
	rc=$?
	if [ $rc = 0 ]; then
		echo "FAILED: $what succeeded while the image's disk failed"
		return 1
	fi
	if [ $rc = 124 ]; then
		echo "FAILED: $what hung (more than $TO s)"
		return 1
	fi
	if ! printf '%s\n' "$out" | grep -q 'Input/output error'; then
		echo "FAILED: $what did not fail with EIO: $out"
		return 1
	fi
	echo "$what: $out"
}

# flush_dev DEV: fsync the block device (a REQ_OP_FLUSH to the driver).
flush_dev() {
	timeout "$TO" dd if=/dev/null of="$1" conv=fsync,notrunc status=none
}

# old_or_new GOT OLD NEW: every 512-byte sector of GOT equals the same
# sector of OLD or of NEW (blocks whose write failed may hold either,
# never a third thing; where OLD and NEW agree, exactly that).
old_or_new() {
	python3 - "$@" <<'PY'
import sys
got, old, new = (open(p, "rb").read() for p in sys.argv[1:4])
if not (len(got) == len(old) == len(new)):
    sys.exit("FAILED: sizes differ: %d %d %d" % (len(got), len(old), len(new)))
bad = [o for o in range(0, len(got), 512)
       if got[o:o + 512] != old[o:o + 512] and got[o:o + 512] != new[o:o + 512]]
if bad:
    sys.exit("FAILED: %s: %d sectors are neither old nor new data, first at byte %d"
             % (sys.argv[1], len(bad), bad[0]))
PY
}

# check_0_or_3 IMG: qemu-img check finds no corruption (leaks are fine).
check_0_or_3() {
	local out rc
	out=$(timeout "$TO" qemu-img check "$1" 2>&1)
	rc=$?
	case $rc in
	0 | 3) echo "qemu-img check: status $rc" ;;
	*)
		echo "FAILED: qemu-img check status $rc: $out"
		return 1
		;;
	esac
}

# A 32M image whose first 8M are allocated and whose file has 16M of free
# (refcount 0) but written clusters after them: allocations reuse those, so
# the file system under the image needs no new blocks while its disk fails.
fault_image() {
	run qemu-img create -q -f qcow2 "$1" 32M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x11 0 8M' -c 'write -P 0x22 8M 16M' \
		"$1" >/dev/null || return 1
	run qemu-io --image-opts -c 'discard 8M 16M' \
		"driver=qcow2,discard=unmap,pass-discard-request=off,file.driver=file,file.filename=$1" \
		>/dev/null
}

M=1048576
# B1/B2: acknowledged, not flushed when the disk starts failing.
fault_b_writes() {
	fw "$1" $((12 * M)) 196608 200000 "${@:2}" && fw "$1" $((2 * M)) 4096 400000 "${@:2}"
}

# ro_or_working DEV: after the fault the device either took writes again
# (returns 0) or turned read-only with a message and refuses writes and
# flushes, since what it acknowledged can no longer be made durable
# (returns 2).  Anything else fails (1).
ro_or_working() {
	if [ "$(blockdev --getro "$1")" = 1 ]; then
		dmesg | grep -E "qimg[0-9]+: .*read-only" | tail -n 1 | grep . ||
			{ echo "FAILED: $1 turned read-only without a message"; return 1; }
		if fw "$1" $((6 * M)) 65536 800000 oflag=direct conv=fsync 2>/dev/null; then
			echo "FAILED: a write to the read-only $1 succeeded"
			return 1
		fi
		if flush_dev "$1" 2>/dev/null; then
			echo "FAILED: a flush succeeded after write-back failed for good"
			return 1
		fi
		return 2
	fi
	echo "$1 still writable after the fault"
	fw "$1" $((6 * M)) 65536 800000 oflag=direct conv=fsync ||
		{ echo "FAILED: write after the fault stopped"; return 1; }
	fw old.raw $((6 * M)) 65536 800000 && fw new.raw $((6 * M)) 65536 800000
}

# fault_detach_check ST IMG: detach after a fault (it must say that its
# write-back failed when ro_or_working returned ST=2), then IMG, read from
# the disk, is consistent and holds old or new data.
fault_detach_check() {
	if [ "$1" = 2 ]; then
		detach_must_fail "$DEV" "$(dmesg | wc -l)" || return 1
	else
		q_detach "$DEV" || return 1
	fi
	fault_remount || return 1
	check_0_or_3 "$2" || return 1
	run qemu-img convert -O raw "$2" got.raw || return 1
	old_or_new got.raw old.raw new.raw
}

fault_mr_writes() {
	local img=$FMNT/f.qcow2 st
	fault_image "$img" || return 1
	run qemu-img convert -O raw "$img" old.raw || return 1
	q_attach "$img" || return 1

	# Acknowledged and flushed before the fault: must read back exactly.
	fw "$DEV" $M 65536 0 oflag=direct conv=fsync || return 1
	fw old.raw $M 65536 0 || return 1
	fw "$DEV" $((9 * M)) 131072 65536 oflag=direct conv=fsync || return 1
	fw old.raw $((9 * M)) 131072 65536 || return 1
	cp old.raw new.raw || return 1
	# An allocation whose refcount and L2 updates are still in the
	# driver's caches, and an overwrite: old or new data afterwards.
	fault_b_writes "$DEV" oflag=direct || return 1
	fault_b_writes new.raw || return 1

	fault_mr_on || return 1
	# A read of allocated data (its L2 table cached) reaches the disk.
	must_eio "read of an allocated cluster" timeout "$TO" dd if="$DEV" \
		of=/dev/null bs=65536 count=1 skip=$((9 * M)) iflag=direct,skip_bytes \
		status=none || return 1
	must_eio "overwrite of an allocated cluster" \
		fw "$DEV" $((3 * M)) 4096 500000 oflag=direct || return 1
	fw new.raw $((3 * M)) 4096 500000 || return 1
	# The flush writes the pending metadata and must fail, and the
	# message names no sector (a flush has none).
	must_eio "flush with pending metadata" flush_dev "$DEV" || return 1
	if dmesg | grep -E "qimg[0-9]+: .*flush at sector"; then
		echo "FAILED: a failed flush is reported at a sector"
		return 1
	fi
	must_eio "buffered write + fsync" \
		fw "$DEV" $((5 * M)) 8192 700000 conv=fsync || return 1
	fw new.raw $((5 * M)) 8192 700000 || return 1
	fault_mr_off

	# Reads work again, and show old or new data.
	run dd if="$DEV" of=cur.raw bs=1M iflag=direct status=none || return 1
	old_or_new cur.raw old.raw new.raw || return 1
	ro_or_working "$DEV"
	st=$?
	[ $st = 1 ] && return 1
	if [ $st = 0 ]; then
		# A flush that succeeds vouches for every write acknowledged
		# before it, B1 and B2 included (their metadata may have been
		# lost with the failed write-back: it must be written again).
		flush_dev "$DEV" || { echo "FAILED: flush after the fault stopped"; return 1; }
		fault_b_writes old.raw || return 1
	fi
	# After a failed write-back detach must say so; else it succeeds.
	fault_detach_check "$st" "$img" || return 1

	# Attached again with the disk healthy, the image takes writes.
	q_attach "$img" || return 1
	fw "$DEV" $((7 * M)) 65536 900000 oflag=direct conv=fsync ||
		{ echo "FAILED: write to the re-attached image"; return 1; }
	q_detach "$DEV" || return 1
	check_0_or_3 "$img"
}

# Allocating writes (plain, FUA, spanning clusters) while the disk fails:
# their data never lands, the clusters they reserved must not end up
# referenced, and the device works again afterwards.
fault_mr_alloc() {
	local img=$FMNT/a.qcow2 st
	fault_image "$img" || return 1
	q_attach "$img" || return 1
	fw "$DEV" $M 65536 0 oflag=direct conv=fsync || return 1
	# The image is attached (and so locked): read it force-shared.
	run qemu-img convert -U -O raw "$img" old.raw || return 1
	cp old.raw new.raw || return 1
	fault_mr_on || return 1
	must_eio "allocating write" \
		fw "$DEV" $((16 * M)) 65536 100000 oflag=direct || return 1
	must_eio "allocating FUA write" \
		fw "$DEV" $((20 * M)) 65536 600000 oflag=direct,dsync || return 1
	must_eio "allocating write over 3 clusters + fsync" \
		fw "$DEV" $((13 * M - 4096)) 139264 300000 oflag=direct conv=fsync || return 1
	for w in "$((16 * M)) 65536 100000" "$((20 * M)) 65536 600000" \
		"$((13 * M - 4096)) 139264 300000"; do
		# shellcheck disable=SC2086
		fw new.raw $w || return 1
	done
	fault_mr_off
	run dd if="$DEV" of=cur.raw bs=1M iflag=direct status=none || return 1
	old_or_new cur.raw old.raw new.raw || return 1
	ro_or_working "$DEV"
	st=$?
	[ $st = 1 ] && return 1
	if [ $st = 0 ]; then
		fw "$DEV" $((22 * M)) 65536 0 oflag=direct conv=fsync ||
			{ echo "FAILED: allocating write after the fault"; return 1; }
		fw old.raw $((22 * M)) 65536 0 && fw new.raw $((22 * M)) 65536 0 || return 1
	fi
	fault_detach_check "$st" "$img"
}

# A write-back error on the image file that is not the driver's own (in
# life the outer file system's metadata buffers of the file, written back
# late; here a buffered rewrite of the file's first sector, with the same
# bytes, written back by sync(2) while the disk fails) stays recorded on
# the file's page cache, and the next direct read of the file reports it
# once (filemap_check_errors()), whatever range that read covers.  Reads
# of intact clusters must not fail for it, neither on the fast path (one
# allocated cluster) nor on the synchronous one (a read that ends in an
# unallocated cluster); the error still reaches the driver's next flush.
fault_foreign_wb() {
	local img=$FMNT/w.qcow2 st r what
	fault_image "$img" || return 1
	q_attach "$img" || return 1
	run qemu-img convert -U -O raw "$img" old.raw || return 1
	cp old.raw new.raw || return 1
	run dd if="$img" of=hdr.bin bs=512 count=1 status=none || return 1
	for r in "fast 65536 $((2 * M))" "sync 131072 $((8 * M - 65536))"; do
		# shellcheck disable=SC2086
		set -- $r
		what="$1 path read of $2 bytes at $3"
		fault_mr_on || return 1
		run dd if=hdr.bin of="$img" bs=512 count=1 conv=notrunc status=none ||
			return 1
		timeout "$TO" sync
		fault_mr_off
		run timeout "$TO" dd if="$DEV" of=part.bin bs="$2" count=1 skip="$3" \
			iflag=direct,skip_bytes status=none ||
			{ echo "FAILED: $what after a foreign write-back error"; return 1; }
		run dd if=old.raw of=want.bin bs="$2" count=1 skip="$3" \
			iflag=skip_bytes status=none || return 1
		cmp part.bin want.bin || { echo "FAILED: $what read wrong data"; return 1; }
		echo "$what: ok"
	done
	# The file did lose a write: a flush may say so (then the device is
	# read-only), never pretend otherwise afterwards.
	flush_dev "$DEV" 2>/dev/null && echo "flush after the fault: ok" ||
		echo "flush after the fault failed"
	ro_or_working "$DEV"
	st=$?
	[ $st = 1 ] && return 1
	fault_detach_check "$st" "$img"
}

# The final write-back of detach fails: detach still finishes, says so,
# and the image is consistent.
fault_mr_detach() {
	local img=$FMNT/d.qcow2 n0 out
	fault_image "$img" || return 1
	q_attach "$img" || return 1
	fw "$DEV" $M 65536 0 oflag=direct conv=fsync || return 1
	# The image is attached (and so locked): read it force-shared.
	run qemu-img convert -U -O raw "$img" old.raw || return 1
	cp old.raw new.raw || return 1
	fw "$DEV" $((10 * M)) 262144 100000 oflag=direct || return 1
	fw new.raw $((10 * M)) 262144 100000 || return 1
	n0=$(dmesg | wc -l)
	fault_mr_on || return 1
	detach_must_fail "$DEV" "$n0" || return 1
	fault_mr_off
	[ ! -b "$DEV" ] || { echo "FAILED: $DEV still exists after detach"; return 1; }
	fault_remount || return 1
	check_0_or_3 "$img" || return 1
	run qemu-img convert -O raw "$img" got.raw || return 1
	old_or_new got.raw old.raw new.raw
}

# Systematic allocation failures in attach: /proc/thread-self/fail-nth
# makes the Nth fault-injection point of one task fail, so attempt N fails
# the Nth allocation of the attach ioctl (failslab, and fail_page_alloc for
# orders >= 1), until an attempt makes fewer than N.  Every failed attach
# must return ENOMEM and leave no device behind and the image unchanged.
# The ioctl is issued directly (a qimgctl process would spend the count
# in execve).
FAULT_ATTACH_PY='
import ctypes, errno, fcntl, glob, hashlib, os, struct, sys

ATTACH, DETACH = 0xC050D500, 0x4020D501
img, backing = sys.argv[1], sys.argv[2:]
files = [img] + backing


def digest():
    return [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in files]


def devices():
    return sorted(glob.glob("/dev/qimg[0-9]*"))


ctl = os.open("/dev/qimg-control", os.O_RDWR)
nth = os.open("/proc/thread-self/fail-nth", os.O_RDWR)
fd = os.open(img, os.O_RDWR)
bfds = [os.open(p, os.O_RDONLY) for p in backing]
barr = (ctypes.c_int32 * 2 * max(1, len(bfds)))()
for i, b in enumerate(bfds):
    barr[i][0], barr[i][1] = b, 1
bptr = ctypes.addressof(barr) if bfds else 0
before = digest()
failed = 0
errs = []
for n in range(1, 3000):
    req = bytearray(struct.pack("<IIiIQQQII4Q", 80, 8, fd, len(bfds), bptr,
                                0, 0, 0, 0, 0, 0, 0, 0))
    os.write(nth, b"%d" % n)
    try:
        fcntl.ioctl(ctl, ATTACH, req, True)
        err = 0
    except OSError as e:
        err = e.errno
    left = int(os.pread(nth, 32, 0) or b"0")
    os.write(nth, b"0")
    if err == 0:
        idx = struct.unpack_from("<I", req, 40)[0]
        fcntl.ioctl(ctl, DETACH, struct.pack("<II2I2Q", 32, idx, 0, 0, 0, 0))
        if left:
            print("attempt %d: attach made fewer than %d injection calls: done"
                  % (n, n))
            break
        before = digest()
        continue
    failed += 1
    if left:
        sys.exit("FAILED: attempt %d: attach failed (%s) with no fault injected"
                 % (n, os.strerror(err)))
    if err != errno.ENOMEM and len(errs) < 3:
        # Once more with the injection points stack-dumped, to the log.
        for f in ("failslab", "fail_page_alloc"):
            open("/sys/kernel/debug/%s/verbose" % f, "w").write("2")
        os.write(nth, b"%d" % n)
        try:
            fcntl.ioctl(ctl, ATTACH, req, True)
            os.write(nth, b"0")
            fcntl.ioctl(ctl, DETACH, struct.pack("<II2I2Q", 32, struct.unpack_from("<I", req, 40)[0], 0, 0, 0, 0))
        except OSError:
            pass
        os.write(nth, b"0")
        for f in ("failslab", "fail_page_alloc"):
            open("/sys/kernel/debug/%s/verbose" % f, "w").write("0")
        errs.append("attempt %d: %s" % (n, os.strerror(err)))
    left_over = devices()
    if left_over:
        sys.exit("FAILED: attempt %d failed (%s) but left %s behind"
                 % (n, os.strerror(err), left_over))
    if digest() != before:
        sys.exit("FAILED: attempt %d failed (%s) but changed the image"
                 % (n, os.strerror(err)))
else:
    sys.exit("FAILED: attach still failing after 3000 attempts")
print("%d attempts, %d failed cleanly" % (n, failed))
if errs:
    sys.exit("FAILED: errors other than ENOMEM: " + "; ".join(errs[:5]))
if not failed:
    sys.exit("FAILED: no attempt failed: fault injection did not reach attach")
'

fault_slab_attach() {
	local rc=0 out
	run qemu-img create -q -f qcow2 b.qcow2 16M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x31 0 1M' b.qcow2 >/dev/null || return 1
	run qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 a.qcow2 || return 1
	run qemu-io -f qcow2 -c 'write -P 0x32 64k 64k' a.qcow2 >/dev/null || return 1
	fi_set failslab verbose 0 && fi_set failslab ignore-gfp-wait N &&
		fi_set fail_page_alloc verbose 0 &&
		fi_set fail_page_alloc ignore-gfp-wait N || return 1
	timeout 1200 python3 -c "$FAULT_ATTACH_PY" "$W/a.qcow2" "$W/b.qcow2" || rc=1
	fi_set failslab ignore-gfp-wait Y
	fi_set fail_page_alloc ignore-gfp-wait Y
	[ $rc = 0 ] || return 1

	# Nothing left: no device, an empty list; kmemleak (if present) finds
	# nothing now (qimg-vm scans once more at shutdown).
	out=$("$QIMGCTL" list 2>&1)
	if [ -n "$(ls /dev/qimg[0-9]* 2>/dev/null)" ] || printf '%s\n' "$out" | grep -q /dev/qimg; then
		echo "FAILED: devices left after failed attaches: $out"
		return 1
	fi
	if [ -w "$DBG/kmemleak" ]; then
		sleep 6
		echo scan >"$DBG/kmemleak"
		if grep -q qimg "$DBG/kmemleak"; then
			echo "FAILED: kmemleak:"
			head -n 40 "$DBG/kmemleak"
			return 1
		fi
	fi
	# Without faults, attach works and the images are fine.
	q_attach a.qcow2 || return 1
	fw "$DEV" 0 65536 0 oflag=direct conv=fsync ||
		{ echo "FAILED: write after the faults"; return 1; }
	q_detach "$DEV" || return 1
	run qemu-img check -q a.qcow2 && run qemu-img check -q b.qcow2
}

# The same, cheaply, where the open bug was: device_add_disk() ignores a
# failed dev_set_name() and device_add() then returns EINVAL for the
# nameless device.  A binary search over the fail-nth count (the stack of
# the injected failure, verbose=2, says whether it came from inside
# device_add_disk) finds where device_add_disk starts, then a short walk
# finds the device name allocation itself; every attempt on the way must
# fail with ENOMEM (or absorb the failure) and leave nothing.  About 20
# attempts instead of the ~700 of the whole attach.
FAULT_ADD_DISK_PY='
import errno, fcntl, glob, os, re, struct, sys, time

ATTACH, DETACH = 0xC050D500, 0x4020D501
img = sys.argv[1]
ctl = os.open("/dev/qimg-control", os.O_RDWR)
nth = os.open("/proc/thread-self/fail-nth", os.O_RDWR)
fd = os.open(img, os.O_RDWR)
km = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
os.lseek(km, 0, os.SEEK_END)


def kmsg():
    """The functions of the reliable frames of the new stack traces."""
    out = set()
    while True:
        try:
            rec = os.read(km, 8192).decode(errors="replace")
        except BlockingIOError:
            return out
        except OSError as e:
            if e.errno != errno.EPIPE:
                raise
            continue
        m = re.match(r"[^;]*;\s*([A-Za-z0-9_.]+)\+0x", rec)
        if m:
            out.add(m.group(1))


def attempt(n):
    """Attach with the nth injection point failing: (errno, left, frames)."""
    kmsg()
    req = bytearray(struct.pack("<IIiIQQQII4Q", 80, 8, fd, 0, 0, 0, 0, 0,
                                0, 0, 0, 0, 0))
    os.write(nth, b"%d" % n)
    try:
        fcntl.ioctl(ctl, ATTACH, req, True)
        err = 0
    except OSError as e:
        err = e.errno
    left = int(os.pread(nth, 32, 0) or b"0")
    os.write(nth, b"0")
    if err == 0:
        idx = struct.unpack_from("<I", req, 40)[0]
        fcntl.ioctl(ctl, DETACH, struct.pack("<II2I2Q", 32, idx, 0, 0, 0, 0))
    # fail_dump() is ratelimited (10 per 5 s): keep below that.
    time.sleep(0.6)
    return err, left, kmsg()


# How many injection points a whole attach passes.
big = 100000
err, left, _ = attempt(big)
if err or not left:
    sys.exit("FAILED: attach without a fault: %s" % os.strerror(err))
total = big - left


def inside(n):
    """Did the nth failure come from device_add_disk or later?  A failure
    without a stack (absorbed __GFP_NOWARN ones, many of them inside
    device_add_disk) says nothing: ask its next neighbours instead."""
    for k in range(8):
        err, left, log = attempt(n + k)
        if left or "device_add_disk" in log:
            return True
        if log:
            return False
    return False


lo, hi = 0, total + 1   # attempt lo fails before device_add_disk, hi not
while hi - lo > 1:
    mid = (lo + hi) // 2
    if inside(mid):
        hi = mid
    else:
        lo = mid
print("%d injection points in an attach; device_add_disk from %d on"
      % (total, hi))
# The counts vary from one attach to the next (the KASAN stack depot and
# kmemleak allocate now and then, lazily created caches), so from the
# bound walk by what the stack of each injected failure says: before
# device_add_disk, forward; inside it past the name, back; until the
# device name allocation itself failed.  A failure without a stack (a
# __GFP_NOWARN allocation, absorbed) keeps the direction.
named = None
bad = []
seen = []
n, step = hi, 1
for _ in range(60):
    err, left, log = attempt(n)
    # Where the failure was: Before device_add_disk, in the Name, After
    # it, no stack (-), or not reached (+).
    where = ("+" if left else "N" if "dev_set_name" in log else
             "A" if "device_add_disk" in log else "B" if log else "-")
    seen.append("%d:%s:%s" % (n, errno.errorcode.get(err, err) if err else "ok",
                              where))
    if err and err != errno.ENOMEM:
        bad.append("attempt %d: %s" % (n, os.strerror(err)))
    if glob.glob("/dev/qimg[0-9]*"):
        sys.exit("FAILED: attempt %d (%s) left a device" % (n, os.strerror(err)))
    if "dev_set_name" in log and not left:
        named = (n, err)
        break
    if left:
        step = -1
    elif "device_add_disk" in log:
        step = -1
    elif log:
        step = 1
    n = max(1, n + step)
print("attempts: " + " ".join(seen))
if bad:
    sys.exit("FAILED: not ENOMEM: " + "; ".join(bad))
if named is None:
    sys.exit("FAILED: no attempt near %d failed the device name allocation" % hi)
named = named[0]
print("the device name allocation failed at attempt %d: ENOMEM" % named)
'

fault_add_disk() {
	local rc=0
	run qemu-img create -q -f qcow2 ad.qcow2 16M || return 1
	fi_set failslab ignore-gfp-wait N && fi_set fail_page_alloc ignore-gfp-wait N &&
		fi_set failslab verbose 2 && fi_set fail_page_alloc verbose 2 || return 1
	timeout 600 python3 -c "$FAULT_ADD_DISK_PY" "$W/ad.qcow2" || rc=1
	fi_set failslab verbose 0
	fi_set fail_page_alloc verbose 0
	fi_set failslab ignore-gfp-wait Y
	fi_set fail_page_alloc ignore-gfp-wait Y
	[ $rc = 0 ] || return 1
	q_attach ad.qcow2 || return 1
	q_detach "$DEV" || return 1
	run qemu-img check -q ad.qcow2
}

if [ "$P" = qimg ] && [ -e "$DBG/fail_make_request" ] &&
	[ -e "$DBG/failslab" ] && [ -e "$DBG/fail_page_alloc" ] &&
	[ -e /proc/self/fail-nth ]; then
	TC_KBAD=$KBAD_FAULT tc "fault: disk fails under writes and flushes" \
		fault_on_disk fault_mr_writes
	TC_KBAD=$KBAD_FAULT tc "fault: allocating writes while the disk fails" \
		fault_on_disk fault_mr_alloc
	TC_KBAD=$KBAD_FAULT tc "fault: disk fails during detach's write-back" \
		fault_on_disk fault_mr_detach
	TC_KBAD=$KBAD_FAULT tc "fault: every allocation in attach fails once (fail-nth)" \
		fault_slab_attach
	TC_KBAD=$KBAD_FAULT tc "fault: add_disk allocations fail with ENOMEM (fail-nth at the device name)" \
		fault_add_disk
fi

# The same disk failures on every kernel: the image's file system on a dm
# device whose table turns to "error" and back.
if [ "$P" = qimg ] && command -v dmsetup >/dev/null &&
	{ modprobe -q dm-mod 2>/dev/null; [ -c /dev/mapper/control ]; }; then
	FAULT_DM=1 TC_KBAD=$KBAD_FAULT tc "fault: disk fails under reads, writes and flushes (dm error)" \
		fault_on_disk fault_mr_writes
	FAULT_DM=1 TC_KBAD=$KBAD_FAULT tc "fault: allocating writes while the disk fails (dm error)" \
		fault_on_disk fault_mr_alloc
	FAULT_DM=1 TC_KBAD=$KBAD_FAULT tc "fault: disk fails during detach's write-back (dm error)" \
		fault_on_disk fault_mr_detach
	FAULT_DM=1 TC_KBAD=$KBAD_FAULT tc "fault: a write-back error of the image file fails no read (dm error)" \
		fault_on_disk fault_foreign_wb
fi

# QEMU stopped (killed) with lazy refcounts: the dirty bit is set and the
# refcounts lag behind the L2 tables.  A read-only attach leaves the image
# alone; a read-write one rebuilds the refcounts first, as QEMU does when
# it opens such an image for writing, says so, and then takes writes.
rw_dirty_lazy() {
	local out img=lz.qcow2
	run qemu-img create -q -f qcow2 -o lazy_refcounts=on "$img" 64M || return 1
	qemu-io -f qcow2 -c 'write -P 0x51 0 1M' -c 'write -P 0x52 40M 192k' -c abort \
		"$img" >/dev/null 2>&1
	[ $(( (16#$(be_read "$img" 72 8)) & 1 )) = 1 ] || { echo "FAILED: qemu-io abort left no dirty bit"; return 1; }
	if qemu-img check -q "$img" >/dev/null 2>&1; then
		echo "FAILED: the dirty image is check-clean already (nothing to repair)"
		return 1
	fi
	ro_check "$img" || return 1
	[ $(( (16#$(be_read "$img" 72 8)) & 1 )) = 1 ] || { echo "FAILED: a read-only attach cleared the dirty bit"; return 1; }
	if [ "$P" = qimg ]; then
		out=$(timeout 60 "$QIMGCTL" attach "$img" 2>&1) ||
			{ echo "FAILED: read-write attach of the dirty image: $out"; return 1; }
		echo "attach said: $out"
		printf '%s\n' "$out" | grep -q 'left dirty.*rebuilt' ||
			{ echo "FAILED: the attach does not say it rebuilt the refcounts"; return 1; }
		DEV=$(printf '%s\n' "$out" | grep -o "/dev/${P}[0-9]\\+" | head -n 1)
		dev_appears || return 1
	else
		q_attach "$img" || return 1
	fi
	fw "$DEV" $((8 * M)) 131072 0 oflag=direct conv=fsync || { q_detach "$DEV"; return 1; }
	fw "$DEV" $((40 * M + 65536)) 4096 300000 oflag=direct conv=fsync || { q_detach "$DEV"; return 1; }
	q_detach "$DEV" || return 1
	[ $(( (16#$(be_read "$img" 72 8)) & 1 )) = 0 ] || { echo "FAILED: the dirty bit is still set"; return 1; }
	run qemu-img check -q "$img" || return 1
	dd if="$W/rnd" of=lz.want bs=131072 count=1 status=none &&
		dd if="$W/rnd" of=lz.want2 bs=4096 count=1 skip=300000 iflag=skip_bytes status=none || return 1
	run qemu-io -f qcow2 -c 'read -P 0x51 0 1M' -c 'read -P 0x52 40M 64k' \
		-c "read -P 0x52 $((40 * M + 69632)) $((128 * 1024 - 4096))" "$img" >/dev/null || return 1
	run qemu-img convert -O raw "$img" lz.raw || return 1
	run cmp -n 131072 lz.raw lz.want $((8 * M)) 0 || return 1
	run cmp -n 4096 lz.raw lz.want2 $((40 * M + 65536)) 0
}
tc "rw: a dirty image with lazy refcounts is repaired at a read-write attach" rw_dirty_lazy

# --- driver foundations: data safety and the control interface -------------
#
# Each case below was red on the driver before the fix it is named after
# (issue "Driver foundations"); they run on every kernel.

QIOCTL="python3 $HERE/qimg_ioctl.py"

# Defect 1: after corruption is found the device refuses new writes, but
# the metadata of writes it already acknowledged must still reach the
# disk: at the next flush (which only then reports success) and at detach.
safe_corrupt_keeps_acked() {
	local l1 l2 img=c.qcow2
	run qemu-img create -q -f qcow2 "$img" 16M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x61 0 64k' -c 'write -P 0x62 8M 64k' "$img" >/dev/null || return 1
	l1=$((16#$(be_read "$img" 40 8)))
	l2=$(( (16#$(be_read "$img" "$l1" 8)) & 0x00fffffffffffe00 ))
	# Guest cluster 128 (8M) points far past the end of the file.
	be_write64 "$img" $((l2 + 128 * 8)) $(( (1 << 63) | (1 << 44) ))
	q_attach "$img" || return 1
	# Acknowledged, not flushed: two allocating writes.
	head -c 65536 /dev/zero | tr '\0' 'Z' >pat
	run dd if=pat of="$DEV" bs=64k seek=32 count=1 oflag=direct status=none || return 1
	run dd if=pat of="$DEV" bs=4k seek=1024 count=1 oflag=direct status=none || return 1
	if dd if="$DEV" of=/dev/null bs=64k skip=128 count=1 iflag=direct status=none 2>/dev/null; then
		echo "FAILED: read of the bad cluster succeeded"
		return 1
	fi
	dmesg | grep -Eq "qimg[0-9]+: .*corrupt metadata" || { echo "FAILED: corruption not reported"; return 1; }
	[ "$(blockdev --getro "$DEV")" = 1 ] || { echo "FAILED: $DEV not read-only after corruption"; return 1; }
	if fw "$DEV" $((6 * M)) 4096 0 oflag=direct 2>/dev/null; then
		echo "FAILED: a new write after corruption succeeded"
		return 1
	fi
	fsync_ro "$DEV" || { echo "FAILED: flush after corruption failed"; return 1; }
	# The flush succeeded: what it covered must be on disk now.
	run qemu-io -r -U -f qcow2 -c 'read -P 0x5a 2M 64k' -c 'read -P 0x5a 4M 4k' "$img" ||
		{ echo "FAILED: data acknowledged before the corruption is not in the image after a successful flush"; return 1; }
	q_detach "$DEV" || return 1
	run qemu-io -r -f qcow2 -c 'read -P 0x5a 2M 64k' -c 'read -P 0x5a 4M 4k' "$img" ||
		{ echo "FAILED: acknowledged writes lost at detach"; return 1; }
	[ $(( 16#$(be_read "$img" 72 8) & 2 )) = 2 ] || { echo "FAILED: corrupt bit not set"; return 1; }
}
tc "safety: writes acknowledged before corruption was found survive flush and detach" safe_corrupt_keeps_acked

# --- block device ------------------------------------------------------------

# The queue advertises a volatile write cache and FUA on every kernel
# (6.1: blk_queue_write_cache(); 6.12: queue_limits features): without the
# write cache, the block layer drops every flush before it reaches us.
bdev_cache_fua() {
	local q wc fua
	run qemu-img create -q -f qcow2 wc.qcow2 16M || return 1
	q_attach wc.qcow2 || return 1
	q=/sys/block/${DEV#/dev/}/queue
	wc=$(cat "$q/write_cache")
	fua=$(cat "$q/fua")
	q_detach "$DEV" || return 1
	[ "$wc" = "write back" ] || { echo "FAILED: write_cache is '$wc', not 'write back'"; return 1; }
	[ "$fua" = 1 ] || { echo "FAILED: fua is '$fua', not 1"; return 1; }
}
[ "$P" = qimg ] && tc "bdev: write cache and FUA advertised ($(uname -r))" bdev_cache_fua

# The module cannot be removed while a device is attached.
bdev_rmmod_busy() {
	run qemu-img create -q -f qcow2 rm.qcow2 16M || return 1
	q_attach rm.qcow2 || return 1
	if rmmod qimg 2>rmmod.err; then
		echo "FAILED: rmmod qimg succeeded with $DEV attached"
		return 1
	fi
	echo "rmmod said: $(cat rmmod.err)"
	[ -b "$DEV" ] || { echo "FAILED: $DEV gone after the refused rmmod"; return 1; }
	run dd if=/dev/zero of="$DEV" bs=4k count=1 oflag=direct conv=fsync status=none || return 1
	q_detach "$DEV" || return 1
	run qemu-img check -q rm.qcow2
}
[ "$P" = qimg ] && tc "bdev: rmmod refused while a device is attached" bdev_rmmod_busy

# wait_bdev PATH: the node of a new partition appears a moment later.
wait_bdev() {
	for _ in $(seq 50); do
		[ -b "$1" ] && return 0
		sleep 0.1
	done
	echo "FAILED: $1 did not appear"
	return 1
}

# sfdisk input: a fixed disk id, so that the table written to the device
# and the one written to the raw reference are the same bytes.
PT_TABLE1='label: dos
label-id: 0x51ab0001
start=2048, size=4096, type=83
start=6144, type=83'
PT_TABLE2='label: dos
label-id: 0x51ab0001
start=2048, size=4096, type=83
start=6144, size=2048, type=83
start=8192, type=83'

# attach -P: the partitions of a table sfdisk wrote appear as
# /dev/qimgNpM and show the image's bytes; a new table written to the
# device reaches the block layer through BLKRRPART (blockdev --rereadpt);
# without -P there are no partitions and BLKRRPART is refused.
bdev_partitions() {
	local p n sz
	command -v sfdisk >/dev/null || { echo "FAILED: no sfdisk (Debian package fdisk)"; return 1; }
	run truncate -s 8M pt.raw || return 1
	printf '%s\n' "$PT_TABLE1" | run sfdisk -q pt.raw || return 1
	fw pt.raw $((3 * M + 4096)) 65536 1000 || return 1
	run qemu-img convert -O qcow2 pt.raw pt.qcow2 || return 1
	q_attach -P pt.qcow2 || return 1
	p=${DEV}p
	n=${DEV#/dev/}
	wait_bdev "${p}1" && wait_bdev "${p}2" || return 1
	sz=$(<"/sys/class/block/${n}p1/size")
	[ "$sz" = 4096 ] || { echo "FAILED: ${p}1 has $sz sectors, not 4096"; return 1; }
	run cmp -n $((5 * M)) "${p}2" pt.raw 0 $((3 * M)) || return 1
	fw "${p}1" 12288 4096 5000 oflag=direct conv=fsync || return 1
	fw pt.raw $((M + 12288)) 4096 5000 || return 1
	# The new table: p2 shrinks to 1 MiB, p3 follows.
	printf '%s\n' "$PT_TABLE2" | run sfdisk -q --no-reread --no-tell-kernel "$DEV" || return 1
	printf '%s\n' "$PT_TABLE2" | run sfdisk -q pt.raw || return 1
	[ ! -e "/sys/block/$n/${n}p3" ] || { echo "FAILED: ${p}3 before the re-read"; return 1; }
	run blockdev --rereadpt "$DEV" || return 1
	wait_bdev "${p}3" || return 1
	sz=$(<"/sys/class/block/${n}p2/size")
	[ "$sz" = 2048 ] || { echo "FAILED: ${p}2 has $sz sectors after the re-read"; return 1; }
	run cmp -n $((4 * M)) "${p}3" pt.raw 0 $((4 * M)) || return 1
	q_detach "$DEV" || return 1
	[ ! -e "${p}1" ] || { echo "FAILED: ${p}1 left after detach"; return 1; }
	run qemu-img compare -q -f qcow2 -F raw pt.qcow2 pt.raw || return 1
	# Without -P: no partition devices, and no re-read.
	q_attach pt.qcow2 || return 1
	n=${DEV#/dev/}
	sleep 0.5
	if [ -e "/sys/block/$n/${n}p1" ] || [ -e "${DEV}p1" ]; then
		echo "FAILED: partitions without -P"
		q_detach "$DEV"
		return 1
	fi
	if blockdev --rereadpt "$DEV" 2>/dev/null; then
		echo "FAILED: BLKRRPART succeeded without -P"
		q_detach "$DEV"
		return 1
	fi
	q_detach "$DEV"
}
[ "$P" = qimg ] && tc "bdev: partitions with attach -P, re-read after a table change" bdev_partitions

# --- online grow ---------------------------------------------------------------

# ue_watch OUT: print "ACTION NAME RESIZE" for every block uevent of a
# qimg device into OUT, until killed (at most 120 s); returns once the
# socket listens.  Sets UE_PID.
ue_watch() {
	rm -f "$1" "$1.ready"
	python3 - "$1" >"$1" 2>&1 <<'PY' &
import socket, select, sys, time
s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)
s.bind((0, 1))
open(sys.argv[1] + '.ready', 'w').close()
end = time.time() + 120
while time.time() < end:
    if not select.select([s], [], [], 1)[0]:
        continue
    f = s.recv(65536).split(b'\0')
    env = dict(x.split(b'=', 1) for x in f[1:] if b'=' in x)
    name = env.get(b'DEVPATH', b'').decode().rsplit('/', 1)[-1]
    if env.get(b'SUBSYSTEM') != b'block' or not name.startswith('qimg'):
        continue
    print(env.get(b'ACTION', b'').decode(), name,
          env.get(b'RESIZE', b'-').decode(), flush=True)
PY
	UE_PID=$!
	for _ in $(seq 100); do [ -e "$1.ready" ] && return 0; sleep 0.1; done
	echo "FAILED: the uevent listener did not start"
	return 1
}

# zeros_at DEV OFF LEN: LEN bytes at OFF read as zeros.
zeros_at() {
	timeout "$TO" dd if="$1" bs=64k iflag=skip_bytes,count_bytes skip="$2" \
		count="$3" status=none | timeout "$TO" cmp -n "$3" - /dev/zero ||
		{ echo "FAILED: $1 at $2: not $3 bytes of zeros"; return 1; }
}

# qimgctl resize of an attached device, by its name and by its file: the
# capacity reaches the block layer with a RESIZE uevent, the new space
# reads zeros, writes across the old end and at the new end land; a
# shrink and a read-only device are refused with a message, size kept.
# $1: qemu-img -o options; $2: attach options; $3 $4: sizes to grow to;
# $5: the size to start from (MiB).
bdev_grow() {
	local opts=$1 aopts=$2 s1=$3 s2=$4 b=$(($5 * M)) n out l1a l1b
	run qemu-img create -q -f qcow2 -o "$opts" g.qcow2 "$b" || return 1
	run truncate -s "$b" g.raw || return 1
	l1a=$(be_read g.qcow2 40 8)
	# shellcheck disable=SC2086
	q_attach $aopts g.qcow2 || return 1
	n=${DEV#/dev/}
	fw "$DEV" $((b - 5000)) 5000 1 conv=fsync || return 1
	fw g.raw $((b - 5000)) 5000 1 || return 1
	ue_watch ue.out || return 1
	out=$("$QIMGCTL" resize "$DEV" "$s1" 2>&1) || { echo "FAILED: resize $DEV $s1: $out"; kill "$UE_PID"; return 1; }
	[ "$(blockdev --getsize64 "$DEV")" = $(($(numfmt --from=iec "$s1"))) ] ||
		{ echo "FAILED: $DEV has $(blockdev --getsize64 "$DEV") bytes after resize to $s1"; kill "$UE_PID"; return 1; }
	for _ in $(seq 50); do grep -q "^change $n 1" ue.out && break; sleep 0.1; done
	kill "$UE_PID" 2>/dev/null
	wait "$UE_PID" 2>/dev/null
	grep -q "^change $n 1" ue.out || { echo "FAILED: no RESIZE=1 change uevent for $n"; cat ue.out; return 1; }
	run truncate -s "$s1" g.raw || return 1
	zeros_at "$DEV" $((b)) $(($(numfmt --from=iec "$s1") - b)) || return 1
	# By the image's file name, relative.
	out=$("$QIMGCTL" resize g.qcow2 "+$s2" 2>&1) || { echo "FAILED: resize g.qcow2 +$s2: $out"; return 1; }
	run truncate -s "+$s2" g.raw || return 1
	[ "$(blockdev --getsize64 "$DEV")" = "$(stat -c %s g.raw)" ] ||
		{ echo "FAILED: $DEV has $(blockdev --getsize64 "$DEV") bytes, not $(stat -c %s g.raw)"; return 1; }
	zeros_at "$DEV" $((b)) $(($(stat -c %s g.raw) - b)) || return 1
	fw "$DEV" $((b - 3000)) 70000 100 conv=fsync || return 1
	fw g.raw $((b - 3000)) 70000 100 || return 1
	fw "$DEV" $(($(stat -c %s g.raw) - 4096)) 4096 200 oflag=direct || return 1
	fw g.raw $(($(stat -c %s g.raw) - 4096)) 4096 200 || return 1
	# Refusals: smaller, not a multiple of 512.
	if out=$("$QIMGCTL" resize "$DEV" $((b / 2)) 2>&1); then
		echo "FAILED: shrinking an attached device succeeded"; return 1
	fi
	printf '%s\n' "$out" | grep -q "cannot shrink" || { echo "FAILED: shrink refusal said: $out"; return 1; }
	if out=$("$QIMGCTL" resize "$DEV" +1000 2>&1); then
		echo "FAILED: resize by 1000 bytes succeeded"; return 1
	fi
	[ "$(blockdev --getsize64 "$DEV")" = "$(stat -c %s g.raw)" ] ||
		{ echo "FAILED: size changed by a refused resize"; return 1; }
	echo 3 >/proc/sys/vm/drop_caches
	run cmp "$DEV" g.raw || return 1
	q_detach "$DEV" || return 1
	l1b=$(be_read g.qcow2 40 8)
	echo "L1 at 0x$l1a before, 0x$l1b after"
	[ -z "${GROW_MOVES:-}" ] || [ "$l1a" != "$l1b" ] ||
		{ echo "FAILED: the L1 table did not move"; return 1; }
	run qemu-img check -q g.qcow2 || return 1
	run qemu-img compare -q -f qcow2 -F raw g.qcow2 g.raw || return 1
	[ "$(qemu-img info --output=json g.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = "$(stat -c %s g.raw)" ] ||
		{ echo "FAILED: the header's size is not the new one"; return 1; }
	# Read-only: refused, and by the driver too (the ioctl's own check).
	q_attach -r g.qcow2 || return 1
	if out=$("$QIMGCTL" resize "$DEV" +1M 2>&1); then
		echo "FAILED: growing a read-only device succeeded"; q_detach "$DEV"; return 1
	fi
	printf '%s\n' "$out" | grep -q "read-only" || { echo "FAILED: read-only refusal said: $out"; q_detach "$DEV"; return 1; }
	q_detach "$DEV"
}
[ "$P" = qimg ] && tc "bdev: online grow, L1 in place (64k clusters)" bdev_grow cluster_size=64k "" 48M 16M 16
bdev_grow_moves() {
	GROW_MOVES=1 bdev_grow "$@"
}
[ "$P" = qimg ] && tc "bdev: online grow, L1 moved (512-byte clusters, journal on)" \
	bdev_grow_moves cluster_size=512 --journal=on 5M 3M 4

# Over a backing file longer than the old size, the new space reads
# zeros, not the backing file's bytes (qemu's truncate rule): the device
# shows what qemu-img resize makes of a copy, byte for byte; the cluster
# holding an unaligned old end keeps its backing bytes before it.  A
# version 2 overlay has no zero clusters: refused, as qemu-img refuses.
bdev_grow_backing() {
	local out
	run qemu-img create -q -f qcow2 gb.qcow2 8M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x6b 0 8M' gb.qcow2 >/dev/null || return 1
	run qemu-img create -q -f qcow2 -b gb.qcow2 -F qcow2 go.qcow2 1000K || return 1
	run cp go.qcow2 ref.qcow2 || return 1
	run qemu-img resize -q ref.qcow2 12M || return 1
	q_attach go.qcow2 || return 1
	out=$("$QIMGCTL" resize "$DEV" 12M 2>&1) || { echo "FAILED: resize: $out"; return 1; }
	same_as_qemu "$DEV" ref.qcow2 || return 1
	fw "$DEV" $((5 * M)) 3000 7 conv=fsync || return 1
	q_detach "$DEV" || return 1
	run qemu-img check -q go.qcow2 || return 1
	run qemu-img convert -O raw ref.qcow2 ref.raw || return 1
	fw ref.raw $((5 * M)) 3000 7 || return 1
	run qemu-img compare -q -f qcow2 -F raw go.qcow2 ref.raw || return 1
	# Version 2.
	run qemu-img create -q -f qcow2 -o compat=0.10 -b gb.qcow2 -F qcow2 g2.qcow2 1M || return 1
	q_attach g2.qcow2 || return 1
	if out=$("$QIMGCTL" resize "$DEV" 4M 2>&1); then
		echo "FAILED: a v2 overlay grew over its longer backing file"; return 1
	fi
	echo "refused: $out"
	[ "$(blockdev --getsize64 "$DEV")" = $((1 * M)) ] || { echo "FAILED: size changed"; return 1; }
	dmesg | tail -n 5 | grep -q "version 2 image" || { echo "FAILED: no kernel message"; return 1; }
	q_detach "$DEV" || return 1
	run qemu-img check -q g2.qcow2
}
[ "$P" = qimg ] && tc "bdev: online grow over a longer backing file reads zeros; v2 refused" bdev_grow_backing

# The user's flow: ext4 mounted on the device, the device grown, then
# resize2fs online; while fio verifies its writes on the first part of the
# device.  Everything survives a detach and e2fsck.
bdev_grow_ext4() {
	local fpid rc=0
	run qemu-img create -q -f qcow2 -o cluster_size=4k ge.qcow2 64M || return 1
	q_attach ge.qcow2 || return 1
	run mkfs.ext4 -q -F -E nodiscard "$DEV" 32M || return 1
	fio --name=v --filename="$DEV" --offset=40M --size=8M --rw=randwrite --bs=4k \
		--ioengine=libaio --iodepth=8 --direct=1 --verify=crc32c --verify_fatal=1 \
		--time_based --runtime=6 --output=/dev/null &
	fpid=$!
	run "$QIMGCTL" resize "$DEV" 2G || rc=1
	run "$QIMGCTL" resize "$DEV" +2G || rc=1
	wait "$fpid" || { echo "FAILED: fio verify during the grow"; rc=1; }
	[ $rc = 0 ] || return 1
	run mount "$DEV" "$MNT" || return 1
	run resize2fs "$DEV" >/dev/null 2>&1 || { umount "$MNT"; echo "FAILED: resize2fs"; return 1; }
	run dd if=/dev/urandom of="$MNT/big" bs=1M count=40 status=none || { umount "$MNT"; return 1; }
	(cd "$MNT" && sha256sum big >sums)
	df -k "$MNT" | awk 'NR == 2 && $2 < 3000000 { print "FAILED: ext4 has only " $2 " KiB"; exit 1 }' ||
		{ umount "$MNT"; return 1; }
	run umount "$MNT" || return 1
	run e2fsck -fn "$DEV" || return 1
	q_detach "$DEV" || return 1
	run qemu-img check -q ge.qcow2 || return 1
	q_attach ge.qcow2 || return 1
	run mount -o ro "$DEV" "$MNT" || return 1
	(cd "$MNT" && sha256sum --quiet -c sums) || { umount "$MNT"; echo "FAILED: sums"; return 1; }
	umount "$MNT"
	q_detach "$DEV"
}
[ "$P" = qimg ] && tc "bdev: ext4 grown online (resize2fs) while fio verifies writes" bdev_grow_ext4

# l2_kinds IMG N: the kinds of guest clusters 0..N-1 (first L2 table), one
# word each: unalloc (entry 0), zero-plain (zero flag, no host cluster),
# zero-alloc (zero flag and a host cluster), data (a host cluster, no
# zero flag).  Three od calls: every process costs under TCG.
l2_kinds() {
	local l1 l2 e off out=''
	l1=$((16#$(be_read "$1" 40 8)))
	l2=$(( (16#$(be_read "$1" "$l1" 8)) & 0x00fffffffffffe00 ))
	for e in $(od -An -tx8 --endian=big -v -j "$l2" -N $(($2 * 8)) "$1"); do
		e=$((16#$e))
		off=$((e & 0x00fffffffffffe00))
		if [ "$e" = 0 ]; then out+=" unalloc"
		elif [ $((e & 1)) = 1 ] && [ $off = 0 ]; then out+=" zero-plain"
		elif [ $((e & 1)) = 1 ]; then out+=" zero-alloc"
		elif [ $off != 0 ]; then out+=" data"
		else out+=" other:$(printf '%#x' "$e")"
		fi
	done
	echo "${out# }"
}

# l2_expect IMG KIND...: clusters 0, 1, ... are of these kinds.
l2_expect() {
	local img=$1 got
	shift
	got=$(l2_kinds "$img" $#)
	[ "$got" = "$*" ] && return 0
	echo "FAILED: clusters of $img: $got; want $*"
	return 1
}

# zero_ops DEV: the discard and write-zeroes requests userspace can send,
# one per 64k cluster: 0 discard (BLKDISCARD), 1 write zeroes that must
# not unmap (BLKZEROOUT = blkdiscard -z: REQ_NOUNMAP), 2 write zeroes that
# may unmap (fallocate --punch-hole on the device), 3 fallocate
# --zero-range (REQ_NOUNMAP), 4 write zeroes of 8k inside the cluster,
# 5 discard of 8k inside the cluster (advisory: nothing happens).
zero_ops() {
	run blkdiscard -o 0 -l 65536 "$1" &&
		run blkdiscard -z -o 65536 -l 65536 "$1" &&
		run fallocate -p -o 131072 -l 65536 "$1" &&
		run fallocate -z -o 196608 -l 65536 "$1" &&
		run blkdiscard -z -o $((262144 + 4096)) -l 8192 "$1" &&
		run blkdiscard -o $((327680 + 4096)) -l 8192 "$1"
}
# zero_ref FILE: what zero_ops leaves in a raw copy.
zero_ref() {
	run dd if=/dev/zero of="$1" bs=65536 count=4 conv=notrunc status=none &&
		run dd if=/dev/zero of="$1" bs=4096 seek=65 count=2 conv=notrunc status=none
}

# Discard and write zeroes on a v3 image (qcow2 rules, as QEMU): without a
# backing file a discard or an unmapping write zeroes deallocates the
# cluster; a write zeroes with REQ_NOUNMAP keeps it allocated with the
# zero flag; partial clusters get zeros written (write zeroes) or are left
# alone (discard).  Everything reads back as zeros, the freed clusters
# leave the file (allocated size shrinks), and QEMU agrees.
bdev_discard_v3() {
	local b0 b1
	run qemu-img create -q -f qcow2 -o compat=1.1 dz.qcow2 8M || return 1
	q_attach dz.qcow2 || return 1
	run dd if="$W/rnd" of="$DEV" bs=1M count=1 oflag=direct conv=fsync status=none || return 1
	cp "$W/rnd" dz.raw && truncate -s 8M dz.raw || return 1
	b0=$(stat -c %b dz.qcow2)
	zero_ops "$DEV" || return 1
	zero_ref dz.raw || return 1
	run cmp "$DEV" dz.raw || return 1
	q_detach "$DEV" || return 1
	b1=$(stat -c %b dz.qcow2)
	echo "allocated 512-byte blocks: $b0 before, $b1 after"
	# Two clusters are 256 blocks; punching them may split the host
	# file's extents so that ext4 adds one 4 KiB extent-tree block (seen
	# once under load): allow that, not a third of a cluster more.
	[ $((b0 - b1)) -ge 248 ] || { echo "FAILED: two clusters freed but the file shrank by $(((b0 - b1) * 512)) bytes"; return 1; }
	l2_expect dz.qcow2 unalloc zero-alloc unalloc zero-alloc data data || return 1
	run qemu-img check -q dz.qcow2 || return 1
	run qemu-img compare -q -f qcow2 -F raw dz.qcow2 dz.raw
}
[ "$P" = qimg ] && tc "bdev: discard, write zeroes (NOUNMAP keeps the cluster, zero flag), v3" bdev_discard_v3

# Over a backing file (v3): the zero flag hides the backing data, so a
# discard reads zeros, not what the backing file has there.
bdev_discard_backing() {
	run qemu-img create -q -f qcow2 db.qcow2 8M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x5b 0 1M' db.qcow2 >/dev/null || return 1
	run qemu-img create -q -f qcow2 -b db.qcow2 -F qcow2 do.qcow2 || return 1
	run qemu-io -f qcow2 -c 'write -P 0x5c 64k 64k' do.qcow2 >/dev/null || return 1
	head -c $((8 * M)) /dev/zero >do.raw && head -c $M /dev/zero | tr '\0' '\133' |
		dd of=do.raw conv=notrunc status=none || return 1
	q_attach do.qcow2 || return 1
	zero_ops "$DEV" || return 1
	zero_ref do.raw || return 1
	run cmp "$DEV" do.raw || return 1
	q_detach "$DEV" || return 1
	l2_expect do.qcow2 zero-plain zero-alloc zero-plain zero-plain || return 1
	run qemu-img check -q do.qcow2 || return 1
	run qemu-img compare -q -f qcow2 -F raw do.qcow2 do.raw
}
[ "$P" = qimg ] && tc "bdev: discard over a backing file reads zeros (zero flag), v3" bdev_discard_backing

# xl2_entries IMG N: the first N extended L2 entries of IMG's first L2
# table, as hex words (entry, then its subcluster bitmap).
xl2_entries() {
	local l1 l2
	l1=$((16#$(be_read "$1" 40 8)))
	l2=$(( (16#$(be_read "$1" "$l1" 8)) & 0x00fffffffffffe00 ))
	od -An -tx8 --endian=big -v -j "$l2" -N $(($2 * 16)) "$1" | tr -s ' \n' ' '
}

# Extended L2 (64k clusters, 2k subclusters): write zeroes of whole
# subclusters makes them zero subclusters (zero bit set, allocation bit
# cleared), entry for entry what QEMU's write zeroes makes of a copy: an
# unallocated cluster hides its backing data there without getting a
# host cluster, an allocated one keeps its cluster.  Unaligned edges get
# zeros as data.
bdev_zero_subclusters() {
	local ours theirs
	run qemu-img create -q -f qcow2 zb.qcow2 1M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x5b 0 1M' zb.qcow2 >/dev/null || return 1
	run qemu-img create -q -f qcow2 -o cluster_size=64k,extended_l2=on \
		-b zb.qcow2 -F qcow2 zs.qcow2 || return 1
	# Cluster 0 unallocated, 1 allocated whole, 2 subclusters 0-1 only.
	run qemu-io -f qcow2 -c 'write -P 0x5c 64k 64k' -c 'write -P 0x5d 128k 4k' \
		zs.qcow2 >/dev/null || return 1
	cp zs.qcow2 zq.qcow2 && run qemu-img convert -O raw zs.qcow2 zs.raw || return 1
	q_attach zs.qcow2 || return 1
	run blkdiscard -z -o 4096 -l 8192 "$DEV" &&
		run blkdiscard -z -o $((65536 + 2048)) -l 4096 "$DEV" &&
		run blkdiscard -z -o $((131072 + 2048)) -l 6144 "$DEV" &&
		run blkdiscard -z -o $((196608 + 1536)) -l 5120 "$DEV" || return 1
	run dd if=/dev/zero of=zs.raw bs=1024 seek=4 count=8 conv=notrunc status=none &&
		run dd if=/dev/zero of=zs.raw bs=1024 seek=66 count=4 conv=notrunc status=none &&
		run dd if=/dev/zero of=zs.raw bs=1024 seek=130 count=6 conv=notrunc status=none &&
		run dd if=/dev/zero of=zs.raw bs=512 seek=387 count=10 conv=notrunc status=none ||
		return 1
	run cmp "$DEV" zs.raw || return 1
	q_detach "$DEV" || return 1
	run qemu-io -f qcow2 -c 'write -z 4k 8k' -c 'write -z 67584 4k' -c 'write -z 133120 6k' \
		-c 'write -z 198144 5120' zq.qcow2 >/dev/null || return 1
	ours=$(xl2_entries zs.qcow2 3) theirs=$(xl2_entries zq.qcow2 3)
	echo "L2 entries 0-2: $ours"
	[ "$ours" = "$theirs" ] || { echo "FAILED: QEMU made $theirs"; return 1; }
	run qemu-img check -q zs.qcow2 || return 1
	run qemu-img compare -q -f qcow2 -F raw zs.qcow2 zs.raw || return 1
	run qemu-img compare -q zs.qcow2 zq.qcow2
}
[ "$P" = qimg ] && tc "bdev: write zeroes of subclusters (extended_l2) as QEMU" bdev_zero_subclusters

# compat=0.10 has no zero flag: without a backing file a discard or an
# unmapping write zeroes deallocates, a REQ_NOUNMAP write zeroes writes
# zeros into the cluster; no entry may carry the zero flag.  With a
# backing file a discard changes nothing (deallocating would show the
# backing data) and write zeroes writes zeros.
bdev_discard_v2() {
	run qemu-img create -q -f qcow2 -o compat=0.10 d2.qcow2 8M || return 1
	q_attach d2.qcow2 || return 1
	run dd if="$W/rnd" of="$DEV" bs=1M count=1 oflag=direct conv=fsync status=none || return 1
	cp "$W/rnd" d2.raw && truncate -s 8M d2.raw || return 1
	zero_ops "$DEV" || return 1
	zero_ref d2.raw || return 1
	run cmp "$DEV" d2.raw || return 1
	q_detach "$DEV" || return 1
	# No zero flag anywhere (zero-plain/zero-alloc would say so).
	l2_expect d2.qcow2 unalloc data unalloc data data data data data \
		data data data data data data data data || return 1
	run qemu-img check -q d2.qcow2 || return 1
	run qemu-img compare -q -f qcow2 -F raw d2.qcow2 d2.raw || return 1
	# With a backing file.
	run qemu-img create -q -f qcow2 -o compat=0.10 d2b.qcow2 8M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x5b 0 1M' d2b.qcow2 >/dev/null || return 1
	run qemu-img create -q -f qcow2 -o compat=0.10 -b d2b.qcow2 -F qcow2 d2o.qcow2 || return 1
	run qemu-io -f qcow2 -c 'write -P 0x5c 0 512k' d2o.qcow2 >/dev/null || return 1
	run qemu-img convert -O raw d2o.qcow2 d2.raw || return 1
	q_attach d2o.qcow2 || return 1
	run blkdiscard -o 0 -l 65536 "$DEV" && run blkdiscard -z -o 65536 -l 65536 "$DEV" &&
		run fallocate -p -o 131072 -l 65536 "$DEV" || return 1
	run dd if=/dev/zero of=d2.raw bs=65536 seek=1 count=2 conv=notrunc status=none || return 1
	run cmp "$DEV" d2.raw || return 1
	q_detach "$DEV" || return 1
	run qemu-img compare -q -f qcow2 -F raw d2o.qcow2 d2.raw
}
[ "$P" = qimg ] && tc "bdev: discard and write zeroes on compat=0.10 (no zero flag)" bdev_discard_v2

# fstrim on ext4 on the device gives the freed space back: the image file
# shrinks by about what was deleted, and stays clean.
bdev_fstrim() {
	local b0 b1 out
	run qemu-img create -q -f qcow2 ft.qcow2 64M || return 1
	q_attach ft.qcow2 || return 1
	run mkfs.ext4 -q -F -E nodiscard "$DEV" || return 1
	run mount "$DEV" "$MNT" || return 1
	run dd if=/dev/urandom of="$MNT/f" bs=1M count=16 conv=fsync status=none || return 1
	sync -f "$MNT"
	b0=$(stat -c %b ft.qcow2)
	rm "$MNT/f"
	# The freed blocks are free for fstrim once the journal committed.
	sync -f "$MNT"
	out=$(timeout "$TO" fstrim -v "$MNT") || { echo "FAILED: fstrim: $out"; umount "$MNT"; return 1; }
	echo "$out"
	umount "$MNT" || return 1
	q_detach "$DEV" || return 1
	b1=$(stat -c %b ft.qcow2)
	echo "image: $((b0 * 512)) bytes allocated with the file, $((b1 * 512)) after fstrim"
	[ $(((b0 - b1) * 512)) -ge $((14 * M)) ] ||
		{ echo "FAILED: 16 MiB deleted and trimmed, the image shrank by $(((b0 - b1) * 512)) bytes"; return 1; }
	run qemu-img check -q ft.qcow2
}
[ "$P" = qimg ] && tc "bdev: fstrim on ext4 shrinks the image" bdev_fstrim

# Attach policy, in the kernel (the ioctl directly, past qimgctl's own
# locks): an image attached read-write cannot be attached again, by any
# name of the same inode (a hard link, a bind mount), not even read-only;
# the backing file of an attached image can be attached read-only only.
# One python process for all the attempts (each costs seconds under TCG).
POLICY_PY='
import errno, os, struct, sys
sys.path.insert(0, sys.argv[1])
import qimg_ioctl as q
for spec in sys.argv[2:]:
    path, mode = spec.rsplit(":", 1)
    ro = mode == "ro"
    fd = os.open(path, os.O_RDONLY if ro else os.O_RDWR)
    flags = q.ATTACH_DIRECT_IO | (q.ATTACH_READ_ONLY if ro else 0)
    buf = bytearray(struct.pack(q.ATTACH_FMT, 80, flags, fd, 0, 0, 0, 0, 0,
                                0, 0, 0, 0, 0))
    try:
        q.do_ioctl(q.ioc(3, 0, 80), buf)
        idx = struct.unpack_from("<I", buf, 40)[0]
        q.do_ioctl(q.ioc(1, 1, 32), bytearray(struct.pack(q.DETACH_FMT, 32,
                                                          idx, 0, 0, 0, 0)))
        res = "attached"
    except OSError as e:
        res = errno.errorcode.get(e.errno, str(e.errno))
    os.close(fd)
    print("%s %s" % (spec, res))
'
bdev_policy() {
	local out want rc=0 d1 d2
	run qemu-img create -q -f qcow2 pa.qcow2 16M || return 1
	run qemu-img create -q -f qcow2 pb.qcow2 16M || return 1
	run qemu-img create -q -f qcow2 -b pb.qcow2 -F qcow2 po.qcow2 || return 1
	run ln -f pa.qcow2 pa-link.qcow2 && run ln -f pb.qcow2 pb-link.qcow2 || return 1
	mkdir -p "$W/bind" && run mount --bind "$W" "$W/bind" || return 1
	q_attach pa.qcow2 && d1=$DEV && q_attach po.qcow2 && d2=$DEV ||
		{ umount "$W/bind"; return 1; }
	want='pa.qcow2:rw EBUSY
pa.qcow2:ro EBUSY
pa-link.qcow2:rw EBUSY
pa-link.qcow2:ro EBUSY
bind/pa.qcow2:rw EBUSY
bind/pa-link.qcow2:ro EBUSY
pb.qcow2:rw EBUSY
pb-link.qcow2:rw EBUSY
bind/pb-link.qcow2:rw EBUSY
bind/pb-link.qcow2:ro attached'
	# shellcheck disable=SC2046 # one word per line of $want
	out=$(timeout "$TO" python3 -c "$POLICY_PY" "$HERE" $(printf '%s\n' "$want" | cut -d' ' -f1))
	if [ "$out" != "$want" ]; then
		echo "FAILED: attach attempts gave:"
		printf '%s\n' "$out"
		rc=1
	fi
	# qimgctl refuses too, and says why.
	if [ $rc = 0 ] && "$QIMGCTL" attach bind/pa-link.qcow2 >att.out 2>&1; then
		echo "FAILED: qimgctl attach of a hard link through the bind mount succeeded"
		rc=1
	fi
	echo "qimgctl said: $(cat att.out)"
	q_detach "$d2"
	q_detach "$d1"
	umount "$W/bind"
	[ $rc = 0 ] || return 1
	dmesg | tail -n 30 | grep -q 'already attached' ||
		{ echo "FAILED: no kernel message naming the conflict"; return 1; }
}
[ "$P" = qimg ] && tc "bdev: attach policy: a hard link, a bind mount, the backing file" bdev_policy

# The image file changed under an attached device by someone else: cut
# short (truncate), its data clusters gone, reads of them fail with EIO and
# the kernel says why (the device turns read-only, as for any corruption);
# unlinked, the device goes on serving the open file like loop does.
# Either way no splat, and detach works.
bdev_file_gone() {
	local n0 d
	run qemu-img create -q -f qcow2 tr.qcow2 8M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x71 1M 1M' tr.qcow2 >/dev/null || return 1
	q_attach tr.qcow2 || return 1
	run dd if="$DEV" of=/dev/null bs=64k count=1 skip=16 iflag=direct status=none || return 1
	n0=$(dmesg | wc -l)
	# Header, L1 and refcount tables stay, the data goes.
	run truncate -s 327680 tr.qcow2 || return 1
	if dd if="$DEV" of=/dev/null bs=64k count=16 skip=16 iflag=direct status=none 2>dd.err; then
		echo "FAILED: reading clusters past the end of the truncated file succeeded"
		q_detach "$DEV"
		return 1
	fi
	echo "read said: $(cat dd.err)"
	grep -q 'Input/output error' dd.err || { echo "FAILED: not EIO"; q_detach "$DEV"; return 1; }
	dmesg | tail -n +$((n0 + 1)) | grep -E "qimg[0-9]+: .*(past the end|corrupt)" ||
		{ echo "FAILED: no kernel message about the truncated image"; q_detach "$DEV"; return 1; }
	if fw "$DEV" 0 4096 0 oflag=direct conv=fsync 2>/dev/null; then
		echo "FAILED: a write after the corruption succeeded"
		q_detach "$DEV"
		return 1
	fi
	timeout "$TO" "$QIMGCTL" detach "$DEV" || echo "detach reported status $?"
	[ ! -b "$DEV" ] || { echo "FAILED: $DEV still there after detach"; return 1; }

	# Unlinked while attached: I/O goes on, to the open file.
	run qemu-img create -q -f qcow2 ul.qcow2 8M || return 1
	q_attach ul.qcow2 || return 1
	d=$DEV
	run dd if="$W/rnd" of="$d" bs=64k count=4 oflag=direct conv=fsync status=none || return 1
	rm ul.qcow2
	run dd if="$W/rnd" of="$d" bs=64k count=4 seek=8 oflag=direct conv=fsync status=none || return 1
	run cmp -n 262144 "$d" "$W/rnd" || return 1
	run cmp -n 262144 "$d" "$W/rnd" $((8 * 65536)) 0 || return 1
	q_detach "$d"
}
[ "$P" = qimg ] && tc "bdev: image file truncated (EIO) or unlinked (still served) while attached" bdev_file_gone

# Defect 3: the image descriptor's open flags must not reach our I/O.
safe_open_flags() {
	local out idx
	run qemu-img create -q -f qcow2 f.qcow2 16M || return 1
	cp f.qcow2 f.orig
	if out=$($QIOCTL attach f.qcow2 --open append); then
		echo "FAILED: a descriptor opened with O_APPEND was attached read-write ($out)"
		"$QIMGCTL" detach -a >/dev/null 2>&1
		return 1
	fi
	[ "$out" = "errno EINVAL" ] || { echo "FAILED: O_APPEND refused with $out, not EINVAL"; return 1; }
	dmesg | tail -n 5 | grep -q "O_APPEND" || { echo "FAILED: no message about O_APPEND"; return 1; }
	cmp -s f.qcow2 f.orig || { echo "FAILED: refused attach changed the image"; return 1; }
	# Read-only with O_APPEND is harmless.
	idx=$($QIOCTL attach f.qcow2 --ro --open append) || { echo "FAILED: read-only attach: $idx"; return 1; }
	q_detach "/dev/${P}$idx" || return 1
	# O_DIRECT and O_DSYNC on the descriptor: tables still written in place.
	idx=$($QIOCTL attach f.qcow2 --open direct,dsync) || { echo "FAILED: attach with O_DIRECT: $idx"; return 1; }
	DEV=/dev/${P}$idx
	for _ in $(seq 50); do [ -b "$DEV" ] && break; sleep 0.1; done
	cp "$W/rnd" ref.raw && truncate -s 16M ref.raw
	run dd if="$W/rnd" of="$DEV" bs=1M count=1 oflag=direct conv=fsync status=none || return 1
	fw "$DEV" $((9 * M)) 3000 5 conv=fsync || return 1
	fw ref.raw $((9 * M)) 3000 5 || return 1
	q_detach "$DEV" || return 1
	run qemu-img check -q f.qcow2 || return 1
	run qemu-img compare -q -f qcow2 -F raw f.qcow2 ref.raw
}
tc "safety: O_APPEND descriptors refused, O_DIRECT/O_DSYNC ones write tables in place" safe_open_flags

# Defect 4: the workers that write the image file carry PF_LOCAL_THROTTLE
# (and PF_MEMALLOC_NOIO), as loop's do.  An allocating write to an image
# whose file system is frozen blocks a worker inside our work (old and new
# drivers alike); its task flags are read from /proc/PID/stat then.
safe_worker_flags() {
	local img=$FMNT/w.qcow2 pid seen=0 bad=0 st line flags name
	run qemu-img create -q -f qcow2 "$img" 16M || return 1
	q_attach "$img" || return 1
	name=${DEV#/dev/}
	run fsfreeze -f "$FMNT" || return 1
	fw "$DEV" $M 4096 0 oflag=direct &
	pid=$!
	sleep 3
	for st in /proc/[0-9]*/stat; do
		read -r line <"$st" 2>/dev/null || continue
		# "kworker/u4:1+qimg0": '+' while it runs a work item of ours.
		case $line in *"+$name)"*|*"+${name}_link)"*) ;; *) continue ;; esac
		set -- ${line##*) }
		[ "$1" = D ] || continue
		flags=$7
		seen=$((seen + 1))
		echo "blocked worker: ${line%%) *}) flags $(printf '%#x' "$flags")"
		[ $((flags & 0x00180000)) = $((0x00180000)) ] || bad=$((bad + 1))
	done
	fsfreeze -u "$FMNT"
	wait $pid
	q_detach "$DEV" || return 1
	[ $seen -gt 0 ] || { echo "FAILED: no worker of $name blocked on the frozen file system"; return 1; }
	[ $bad = 0 ] || { echo "FAILED: image-file writers lack PF_LOCAL_THROTTLE|PF_MEMALLOC_NOIO"; return 1; }
}
tc "safety: image-file writers run with PF_LOCAL_THROTTLE and PF_MEMALLOC_NOIO" fault_on_disk safe_worker_flags

# Defect 4: asynchronous writes hold freeze protection of the image's file
# system: while it is frozen, a write to the device waits.
safe_freeze() {
	local img=$FMNT/z.qcow2 pid
	run qemu-img create -q -f qcow2 "$img" 16M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x33 0 1M' "$img" >/dev/null || return 1
	q_attach "$img" || return 1
	run fsfreeze -f "$FMNT" || return 1
	fw "$DEV" 65536 4096 0 oflag=direct &
	pid=$!
	sleep 3
	if ! kill -0 $pid 2>/dev/null; then
		fsfreeze -u "$FMNT"
		wait $pid
		echo "FAILED: a direct write to an allocated cluster completed while the image's file system was frozen"
		return 1
	fi
	run fsfreeze -u "$FMNT" || return 1
	wait $pid || { echo "FAILED: the write failed after thawing"; return 1; }
	q_detach "$DEV" || return 1
	run qemu-img check -q "$img"
}
tc "safety: writes wait while the image's file system is frozen" fault_on_disk safe_freeze

# Defect 4: the image-file I/O of a request is charged to the submitter's
# cgroup (io.stat of that cgroup shows the scratch disk), as loop does.
safe_blkcg() {
	local cg=/sys/fs/cgroup majmin rc
	# The debug kernel is built without cgroups: nothing to check there.
	grep -qw cgroup2 /proc/filesystems ||
		{ echo "SKIP-CASE: this kernel has no cgroup2"; return 0; }
	mountpoint -q $cg || mount -t cgroup2 none $cg || { echo "FAILED: no cgroup2"; return 1; }
	grep -qw io $cg/cgroup.controllers || { echo "FAILED: no io controller"; return 1; }
	echo +io >$cg/cgroup.subtree_control 2>/dev/null
	mkdir -p $cg/qimgt
	run qemu-img create -q -f qcow2 g.qcow2 64M || return 1
	q_attach g.qcow2 || return 1
	majmin=$(findmnt -no MAJ:MIN -T "$W" | tr -d ' ')
	sh -c "echo \$\$ >$cg/qimgt/cgroup.procs && exec dd if=$W/rnd of=$DEV bs=64k count=16 oflag=direct status=none"
	rc=$?
	# Overwrites and reads of those clusters take the batched fast path
	# (qimg_drain_work()): charged to their own submitter too.
	mkdir -p $cg/qimgf
	sh -c "echo \$\$ >$cg/qimgf/cgroup.procs && dd if=$W/rnd of=$DEV bs=64k count=16 oflag=direct status=none && exec dd if=$DEV of=/dev/null bs=64k count=16 iflag=direct status=none" ||
		rc=1
	q_detach "$DEV" || return 1
	[ $rc = 0 ] || { echo "FAILED: dd in the cgroup"; return 1; }
	echo "io.stat: $(cat $cg/qimgt/io.stat) / $(cat $cg/qimgf/io.stat)"
	grep -q "^$majmin .*wbytes=[1-9]" $cg/qimgt/io.stat ||
		{ echo "FAILED: image writes ($majmin) not charged to the writer's cgroup"; rmdir $cg/qimgt $cg/qimgf; return 1; }
	grep -q "^$majmin .*rbytes=[1-9].*wbytes=[1-9]" $cg/qimgf/io.stat ||
		{ echo "FAILED: fast-path image I/O ($majmin) not charged to the submitter's cgroup"; rmdir $cg/qimgt $cg/qimgf; return 1; }
	rmdir $cg/qimgt $cg/qimgf
}
tc "safety: image-file I/O is charged to the submitter's blkcg" safe_blkcg

# Defect 5: the image's disk fails after the writes were acknowledged (a
# dm table switched to "error"; stock kernels): detach must report it.
safe_detach_fails() {
	local loopd sectors img=$FMNT/d.qcow2 n0 dm rc
	modprobe -q dm-mod 2>/dev/null
	run truncate -s 80M "$W/dmdisk.img" || return 1
	loopd=$(losetup -f --show "$W/dmdisk.img") || return 1
	sectors=$(blockdev --getsz "$loopd")
	run dmsetup create --noudevsync qimgflt --table "0 $sectors linear $loopd 0" || { losetup -d "$loopd"; return 1; }
	dm=/dev/$(dmsetup info -c --noheadings -o blkdevname qimgflt | tr -d ' ')
	(
		set -e
		mkfs.ext4 -q -F -O ^has_journal "$dm"
		mkdir -p "$FMNT"
		mount -o noatime,errors=continue "$dm" "$FMNT"
	) || { echo "FAILED: cannot set up the dm disk"; dmsetup remove --noudevsync qimgflt; losetup -d "$loopd"; return 1; }
	rc=0
	run qemu-img create -q -f qcow2 "$img" 32M && q_attach "$img" &&
		fw "$DEV" $M 262144 0 oflag=direct || rc=1
	if [ $rc = 0 ]; then
		n0=$(dmesg | wc -l)
		dmsetup suspend --noudevsync --nolockfs --noflush qimgflt &&
			dmsetup load qimgflt --table "0 $sectors error" &&
			dmsetup resume --noudevsync qimgflt || rc=1
		[ $rc = 0 ] && { detach_must_fail "$DEV" "$n0" || rc=1; }
	fi
	"$QIMGCTL" detach -a >/dev/null 2>&1
	umount "$FMNT" 2>/dev/null
	dmsetup remove --noudevsync qimgflt
	losetup -d "$loopd"
	rm -f "$W/dmdisk.img"
	return $rc
}
TC_KBAD=$KBAD_FAULT tc "safety: detach reports a failed final write-back (dm error)" safe_detach_fails

# Defect 7: struct sizes of other qimgctl versions.
ctl_versioned_structs() {
	local idx out
	run qemu-img create -q -f qcow2 v.qcow2 16M || return 1
	# A newer caller: a bigger struct whose unknown tail is zero, and a
	# command number that encodes that size.
	idx=$($QIOCTL attach v.qcow2 --size 96 --cmd-size 96) || { echo "FAILED: 96-byte attach: $idx"; return 1; }
	out=$($QIOCTL info "$idx" --size 2200) || { echo "FAILED: 2200-byte info: $out"; return 1; }
	case $out in "$idx $W/v.qcow2 2176") ;; *) echo "FAILED: info said: $out"; return 1 ;; esac
	out=$($QIOCTL detach "$idx" --size 48) || { echo "FAILED: 48-byte detach: $out"; return 1; }
	# Non-zero bytes the module does not know: E2BIG, nothing attached.
	out=$($QIOCTL attach v.qcow2 --size 96 --tail 01)
	[ "$out" = "errno E2BIG" ] || { echo "FAILED: unknown non-zero tail gave: $out"; return 1; }
	# Smaller than the first version: EINVAL.
	out=$($QIOCTL attach v.qcow2 --size 40)
	[ "$out" = "errno EINVAL" ] || { echo "FAILED: 40-byte attach gave: $out"; return 1; }
	! ls /dev/${P}[0-9]* >/dev/null 2>&1 || { echo "FAILED: a device was left behind"; ls /dev/${P}*; return 1; }
}
tc "control: ioctl structs of older and newer sizes" ctl_versioned_structs

# Defect 7: the number cannot be handed back (read-only argument memory):
# the attach is undone by the kernel itself, other devices untouched.
ctl_attach_efault() {
	local out
	run qemu-img create -q -f qcow2 e1.qcow2 16M || return 1
	run qemu-img create -q -f qcow2 e2.qcow2 16M || return 1
	q_attach e1.qcow2 || return 1
	out=$($QIOCTL attach e2.qcow2 --ro-arg)
	[ "$out" = "errno EFAULT" ] || { echo "FAILED: attach with read-only argument gave: $out"; return 1; }
	[ -b "$DEV" ] || { echo "FAILED: $DEV vanished"; return 1; }
	[ "$(ls /dev/${P}[0-9]* | wc -l)" = 1 ] || { echo "FAILED: devices: $(ls /dev/${P}*)"; return 1; }
	q_detach "$DEV"
}
tc "control: attach whose result cannot be copied back leaves nothing" ctl_attach_efault

# Defect 7: the control mutex is not held across image I/O: an attach
# stuck writing the image (its file system frozen) does not block list.
ctl_slow_attach() {
	local img=$FMNT/s.qcow2 pid rc=0
	run qemu-img create -q -f qcow2 "$img" 16M || return 1
	# A persistent bitmap: a read-write attach must write the image first.
	run qemu-img bitmap --add "$img" b0 || return 1
	run fsfreeze -f "$FMNT" || return 1
	timeout 60 "$QIMGCTL" attach "$img" >att.out 2>&1 &
	pid=$!
	sleep 3
	kill -0 $pid 2>/dev/null || { echo "attach did not block: $(cat att.out)"; }
	if ! timeout 10 "$QIMGCTL" list >/dev/null 2>&1; then
		echo "FAILED: qimgctl list blocked behind an attach writing to a frozen file system"
		rc=1
	fi
	fsfreeze -u "$FMNT"
	wait $pid || { echo "FAILED: attach after thawing: $(cat att.out)"; rc=1; }
	"$QIMGCTL" detach -a >/dev/null 2>&1
	return $rc
}
tc "control: a slow attach does not block other control operations" fault_on_disk ctl_slow_attach

# --- a first performance figure (not a test) --------------------------------

# --- the metadata journal (issue "The metadata journal") -------------------
#
# Attached through qimg_ioctl.py with QIMG_ATTACH_JOURNAL (0x10).

j_attach() {
	local img=$1 n
	shift
	n=$($QIOCTL attach "$img" --journal on "$@") ||
		{ echo "FAILED: journal attach of $img: $n"; return 1; }
	DEV=/dev/qimg$n
	dev_appears
}

# jsys NAME: /sys/block/qimgN/qimg/journal/NAME of the current device.
jsys() {
	cat "/sys/block/${DEV#/dev/}/qimg/journal/$1"
}

# Incompatible bit 32 (journal dirty) of an image file: 0 or 1.
j_dirty() {
	echo $(( (16#$(be_read "$1" 72 8) >> 32) & 1 ))
}

jr_matrix() {
	local opts=$1 n0 c0 f0 g0 s0 b0 cmt
	n0=$(dmesg | wc -l)
	run qemu-img create -q -f qcow2 -o "$opts" j.qcow2 16M || return 1
	run truncate -s 16M j.raw || return 1
	j_attach j.qcow2 || return 1
	# No interval commit racing with the flushes counted below.
	echo 600000 >"/sys/block/${DEV#/dev/}/qimg/journal/commit_interval_ms"
	dmesg | tail -n +$((n0 + 1)) | grep -q 'metadata journal on' ||
		{ echo "FAILED: no 'metadata journal on' in the kernel log"; return 1; }
	[ "$(jsys enabled)" = 1 ] || { echo "FAILED: journal/enabled is not 1"; return 1; }
	[ "$(j_dirty j.qcow2)" = 1 ] ||
		{ echo "FAILED: journal dirty not set while attached"; return 1; }
	apply_ops "$DEV" ,fsync || { echo "FAILED: dd to $DEV"; return 1; }
	apply_ops j.raw "" || return 1
	cmt=$(jsys commits)
	[ "$cmt" -gt 0 ] || { echo "FAILED: no journal commit after fsync"; return 1; }
	# One allocating write, then one guest flush: at most two barriers.
	run dd if="$W/rnd" of="$DEV" bs=4k count=1 seek=3000 oflag=direct \
		conv=notrunc status=none || return 1
	run dd if="$W/rnd" of=j.raw bs=4k count=1 seek=3000 conv=notrunc status=none || return 1
	f0=$(jsys device_flushes)
	g0=$(jsys guest_flushes)
	s0=$(jsys single_sync_commits)
	fsync_ro "$DEV" || return 1
	b0=$(( $(jsys device_flushes) - f0 ))
	echo "device barriers for $(( $(jsys guest_flushes) - g0 )) guest flush after an allocating write: $b0"
	[ "$(( $(jsys guest_flushes) - g0 ))" = 1 ] || { echo "FAILED: fsync sent $(( $(jsys guest_flushes) - g0 )) flushes"; return 1; }
	# A fresh cluster (never written, no backing file) inside a file
	# size the fsync above made durable: records and commit block
	# together, one barrier.
	[ "$b0" = 1 ] && [ "$(( $(jsys single_sync_commits) - s0 ))" = 1 ] ||
		{ echo "FAILED: $b0 barriers, $(( $(jsys single_sync_commits) - s0 )) single-sync commits for one allocating write into a fresh cluster"; return 1; }
	# An overwrite of an allocated cluster with a flush: no journal commit.
	c0=$(jsys commits)
	run dd if="$W/rnd" of="$DEV" bs=4k count=1 seek=3000 skip=9 oflag=direct,sync \
		conv=notrunc status=none || return 1
	run dd if="$W/rnd" of=j.raw bs=4k count=1 seek=3000 skip=9 conv=notrunc status=none || return 1
	[ "$(jsys commits)" = "$c0" ] ||
		{ echo "FAILED: a flush with no metadata change committed a transaction"; return 1; }
	blockdev --flushbufs "$DEV"
	echo 3 >/proc/sys/vm/drop_caches
	run cmp "$DEV" j.raw || return 1
	n0=$(dmesg | wc -l)
	q_detach "$DEV" || return 1
	dmesg | tail -n +$((n0 + 1)) | grep -q 'journal checkpointed and removed' ||
		{ echo "FAILED: detach did not remove the journal"; return 1; }
	[ "$(j_dirty j.qcow2)" = 0 ] || { echo "FAILED: journal dirty after detach"; return 1; }
	run qemu-img check j.qcow2 || return 1
	run qemu-img compare -q -f qcow2 -F raw j.qcow2 j.raw
}
tc "journal: dd + fsync, barriers, clean detach (64k clusters)" jr_matrix cluster_size=64k

# A qemu-img overlay has its backing file name right after the header
# extensions' end mark: the journal extension needs that room, so attach
# moves the name.  The image keeps its backing file for QEMU.
jr_overlay() {
	local bf f0 s0
	run qemu-img create -q -f qcow2 jb.qcow2 16M || return 1
	run qemu-io -f qcow2 -c 'write -P 0x5a 0 2M' jb.qcow2 >/dev/null || return 1
	run qemu-img create -q -f qcow2 -b jb.qcow2 -F qcow2 jo.qcow2 || return 1
	run qemu-img convert -O raw jb.qcow2 jo.raw || return 1
	q_attach --journal=on jo.qcow2 || return 1
	[ "$(jsys enabled)" = 1 ] || { echo "FAILED: journal/enabled is not 1"; return 1; }
	fsync_ro "$DEV" || return 1
	f0=$(jsys device_flushes)
	s0=$(jsys single_sync_commits)
	run dd if="$W/rnd" of="$DEV" bs=4k count=64 seek=100 oflag=direct \
		conv=notrunc status=none || return 1
	run dd if="$W/rnd" of=jo.raw bs=4k count=64 seek=100 conv=notrunc \
		status=none || return 1
	fsync_ro "$DEV" || return 1
	# Copy-on-write of backing data: the data is ordered before the
	# commit (two barriers), never a single-sync commit.
	[ "$(( $(jsys device_flushes) - f0 ))" = 2 ] && [ "$(jsys single_sync_commits)" = "$s0" ] ||
		{ echo "FAILED: $(( $(jsys device_flushes) - f0 )) barriers, $(( $(jsys single_sync_commits) - s0 )) single-sync commits for copy-on-write writes and a flush"; return 1; }
	q_detach "$DEV" || return 1
	run qemu-img check jo.qcow2 || return 1
	bf=$(qemu-img info --output=json jo.qcow2 |
		sed -n 's/.*"backing-filename": "\([^"]*\)".*/\1/p' | head -n 1)
	[ "$bf" = jb.qcow2 ] || { echo "FAILED: backing file is now '$bf'"; return 1; }
	run qemu-img compare -q -f qcow2 -F raw jo.qcow2 jo.raw || return 1
	# Again: the extension is there now (offset 0), nothing moves.
	q_attach --journal=on jo.qcow2 || return 1
	run cmp "$DEV" jo.raw || return 1
	q_detach "$DEV" || return 1
	run qemu-img check jo.qcow2
}
tc "journal: a qemu-img overlay (backing name after the extensions) gets a journal" jr_overlay
# The rest of the matrix: make check-full (QIMG_E2E_FULL=1).
if [ -n "${QIMG_E2E_FULL:-}" ]; then
	tc "journal: dd + fsync, barriers, clean detach (4k clusters, refcount_bits=1)" \
		jr_matrix cluster_size=4k,refcount_bits=1
	tc "journal: dd + fsync, barriers, clean detach (2M clusters)" jr_matrix cluster_size=2M
	tc "journal: dd + fsync, barriers, clean detach (refcount_bits=64)" jr_matrix refcount_bits=64
fi

# The image as a crash would leave it: copied while attached, after a
# flush; the tables in place are older than the journal.  qemu-img must
# refuse it, an attach replays it, and then it reads what was flushed.
jr_replay() {
	local n0
	run qemu-img create -q -f qcow2 r.qcow2 64M || return 1
	run truncate -s 64M r.raw || return 1
	j_attach r.qcow2 || return 1
	echo 60000 >"/sys/block/${DEV#/dev/}/qimg/journal/commit_interval_ms"
	apply_ops "$DEV" ,fsync || return 1
	apply_ops r.raw "" || return 1
	run fio --name=w --filename="$DEV" --rw=randwrite --bs=4k --size=8M \
		--offset=32M --ioengine=libaio --iodepth=8 --direct=1 --fsync=16 \
		--randseed=7 --output=/dev/null || return 1
	run dd if="$DEV" of=r.raw bs=1M skip=32 seek=32 count=8 iflag=direct \
		conv=notrunc status=none || return 1
	[ "$(jsys checkpoints)" = 0 ] || echo "note: a checkpoint ran ($(jsys checkpoints))"
	run sync || return 1
	cp --sparse=always r.qcow2 crash.qcow2 || return 1
	q_detach "$DEV" || return 1
	[ "$(j_dirty crash.qcow2)" = 1 ] || { echo "FAILED: copy not journal dirty"; return 1; }
	if qemu-img check crash.qcow2 >qc.out 2>&1; then
		echo "FAILED: qemu-img accepted an image with a dirty journal"; cat qc.out; return 1
	fi
	# (A QEMU-made image has no name for bit 32 in its feature table.)
	grep -qiE 'journal dirty|incompatible feature' qc.out ||
		{ echo "FAILED: qemu-img did not refuse the journal"; cat qc.out; return 1; }
	n0=$(dmesg | wc -l)
	j_attach crash.qcow2 || return 1
	# Before the device has a number, the message names the image.
	dmesg | tail -n +$((n0 + 1)) | grep -E 'qimg: [^ ]*crash\.qcow2: journal replayed: [1-9][0-9]* transaction' ||
		{ echo "FAILED: no replay reported for crash.qcow2"; dmesg | tail -n +$((n0 + 1)); return 1; }
	[ "$(jsys replayed)" -gt 0 ] || { echo "FAILED: journal/replayed is 0"; return 1; }
	echo 3 >/proc/sys/vm/drop_caches
	run cmp "$DEV" r.raw || return 1
	q_detach "$DEV" || return 1
	run qemu-img check crash.qcow2 || return 1
	run qemu-img compare -q -f qcow2 -F raw crash.qcow2 r.raw
}
tc "journal: image copied while attached is replayed at attach" jr_replay

# --- zeros written ahead for flush-heavy writers (qimg_map.c) -------------
#
# Commits of the scratch file system's jbd2 journal (the image lives
# there): the host-side cost of a sync that finds newly allocated blocks.
scratch_commits() {
	local d
	d=$(ls -d /proc/fs/jbd2/vda* 2>/dev/null | head -n 1)
	[ -n "$d" ] || return 1
	sed -n 's/^\([0-9]*\) transactions.*/\1/p' "$d/info"
}

# pz_fio OFFSET: 128 direct 4k writes, each into a new 64k cluster and
# each followed by an fsync (what a database or a guest journal does).
pz_fio() {
	run fio --name=pz --filename="$DEV" --rw=write:60k --bs=4k \
		--offset="$1" --size=8M --ioengine=psync --direct=1 --fsync=1 \
		--output=/dev/null
}

# pz_case ATTACH-ARGS...: without zeros ahead every fsync'd allocating
# write makes the host file system commit (its blocks are new); with them
# about one commit per megabyte of zeros.  Writers that do not flush get
# holes, as before.  Data and image stay exact either way.
pz_case() {
	local s c0 n_off n_on n_ow z
	run "$QIMGCTL" create -q pz.qcow2 64M || return 1
	q_attach "$@" pz.qcow2 || return 1
	s=/sys/block/${DEV#/dev/}/qimg
	[ "$(cat $s/prezero)" = 1 ] || { echo "FAILED: prezero is not on by default"; return 1; }
	c0=$(scratch_commits) || { echo "SKIP-CASE: no jbd2 statistics for the scratch disk"; q_detach "$DEV"; return 0; }
	echo 0 >$s/prezero || return 1
	pz_fio 0 || return 1
	n_off=$(( $(scratch_commits) - c0 ))
	[ "$(cat $s/prezero_bytes)" = 0 ] || { echo "FAILED: zeros written with prezero=0"; return 1; }
	echo 1 >$s/prezero || return 1
	c0=$(scratch_commits)
	pz_fio 16M || return 1
	n_on=$(( $(scratch_commits) - c0 ))
	z=$(cat $s/prezero_bytes)
	echo "host commits for 128 fsync'd allocating writes: $n_off with holes, $n_on with zeros ahead ($z bytes)"
	[ "$z" -ge $((6 << 20)) ] || { echo "FAILED: only $z bytes of zeros written ahead"; return 1; }
	[ "$n_off" -ge 96 ] || { echo "FAILED: $n_off host commits with holes (the case measures nothing)"; return 1; }
	[ "$n_on" -le 40 ] || { echo "FAILED: $n_on host commits with zeros ahead"; return 1; }
	# Overwrites with an fsync each: the host has nothing to commit
	# (fdatasync: a new mtime alone is not worth a commit).
	c0=$(scratch_commits)
	pz_fio 0 || return 1
	n_ow=$(( $(scratch_commits) - c0 ))
	echo "host commits for 128 fsync'd overwrites: $n_ow"
	[ "$n_ow" -le 12 ] || { echo "FAILED: $n_ow host commits for 128 fsync'd overwrites"; return 1; }
	# Allocating writes without flushes get no zeros.
	sleep 1.5
	run dd if="$W/rnd" of="$DEV" bs=64k count=16 seek=512 oflag=direct \
		conv=notrunc status=none || return 1
	[ "$(cat $s/prezero_bytes)" = "$z" ] ||
		{ echo "FAILED: zeros written ahead without flushes ($(cat $s/prezero_bytes) bytes, $z before)"; return 1; }
	run dd if="$DEV" of=pz.raw bs=1M iflag=direct status=none || return 1
	q_detach "$DEV" || return 1
	run qemu-img check pz.qcow2 || return 1
	run qemu-img compare -q -f qcow2 -F raw pz.qcow2 pz.raw || return 1
	rm -f pz.qcow2 pz.raw
}
tc "prezero: fsync'd allocating writes get zeros ahead, one host commit per step" pz_case
tc "prezero: the same with the journal on" pz_case --journal=on

# ext4 with the journal on, small ring (many checkpoints), then e2fsck.
jr_ext4() {
	# The image asks for a journal (offset-0 extension): a plain attach
	# makes one.
	run "$QIMGCTL" create -o cluster_size=4k,journal=on,journal_size=256k je.qcow2 128M || return 1
	q_attach je.qcow2 || return 1
	[ "$(jsys enabled)" = 1 ] || { echo "FAILED: image with journal=on attached without a journal"; return 1; }
	[ "$(jsys size)" = $((256 << 10)) ] || { echo "FAILED: journal size $(jsys size)"; return 1; }
	run mkfs.ext4 -q -F "$DEV" || return 1
	run mount "$DEV" "$MNT" || return 1
	run cp -a "$REPO/drivers" "$MNT/" || return 1
	run dd if=/dev/urandom of="$MNT/big" bs=1M count=4 conv=fsync status=none || return 1
	# Frees with the journal: in the transaction of their unlinking,
	# the clusters quarantined until it is durable.
	run dd if=/dev/urandom of="$MNT/gone" bs=1M count=8 conv=fsync status=none || return 1
	rm -f "$MNT/gone"
	run fstrim "$MNT" || return 1
	run dd if=/dev/urandom of="$MNT/after" bs=1M count=6 conv=fsync status=none || return 1
	rm -rf "$MNT/drivers/block/qimg/tests"
	(cd "$MNT" && find . -type f ! -name sums -exec sha256sum {} + >sums)
	run umount "$MNT" || return 1
	echo "commits $(jsys commits) checkpoints $(jsys checkpoints) barriers $(jsys device_flushes) flushes $(jsys guest_flushes)"
	[ "$(jsys checkpoints)" -gt 0 ] || { echo "FAILED: no checkpoint with a 256 KiB journal"; return 1; }
	run e2fsck -fn "$DEV" || return 1
	dump_detach_compare "$DEV" je.qcow2 || return 1
	q_attach --journal=off je.qcow2 || return 1
	[ "$(jsys enabled)" = 0 ] || { echo "FAILED: --journal=off attached with a journal"; return 1; }
	run mount -o ro "$DEV" "$MNT" || return 1
	(cd "$MNT" && sha256sum --quiet -c sums) || { echo "FAILED: sums differ"; return 1; }
	run umount "$MNT" || return 1
	q_detach "$DEV" || return 1
	run qemu-img check je.qcow2
}
tc "journal: ext4 with a 256 KiB journal (4k clusters), checkpoints, e2fsck" jr_ext4

# The files of /sys/block/qimgN/qimg/journal/, journal on and off.
JSYS_FILES="enabled size blocks commit_interval_ms commits single_sync_commits blocks_written
device_flushes guest_flushes checkpoints replayed fill"

# jsys_check: every file of qimg/journal/ is there and reads one number.
jsys_check() {
	local d=/sys/block/${DEV#/dev/}/qimg/journal f v
	[ -d "$d" ] || { echo "FAILED: no directory $d"; return 1; }
	for f in $JSYS_FILES; do
		[ -f "$d/$f" ] || { echo "FAILED: no file $d/$f"; return 1; }
		v=$(cat "$d/$f") || { echo "FAILED: cannot read $d/$f"; return 1; }
		[[ $v =~ ^[0-9]+$ ]] || { echo "FAILED: $d/$f reads '$v'"; return 1; }
	done
	# The flat files of before are gone; qimg/ keeps the others.
	[ ! -e "${d}_commits" ] || { echo "FAILED: ${d}_commits still there"; return 1; }
	[ -f "${d%/journal}/image" ] || { echo "FAILED: no ${d%/journal}/image"; return 1; }
}

# jsys_write VALUE: write VALUE to commit_interval_ms; its status.
jsys_write() {
	(echo "$1" >"/sys/block/${DEV#/dev/}/qimg/journal/commit_interval_ms") 2>/dev/null
}

jr_sysfs() {
	local d f v n bs
	run qemu-img create -q -f qcow2 -o cluster_size=64k s.qcow2 64M || return 1
	j_attach s.qcow2 || return 1
	d=/sys/block/${DEV#/dev/}/qimg/journal
	jsys_check || return 1
	for f in $JSYS_FILES; do printf '%s=%s ' "$f" "$(jsys "$f")"; done; echo
	[ "$(jsys enabled)" = 1 ] || { echo "FAILED: enabled is $(jsys enabled)"; return 1; }
	[ "$(jsys commit_interval_ms)" = 5000 ] ||
		{ echo "FAILED: default commit interval $(jsys commit_interval_ms) ms"; return 1; }
	[ "$(jsys replayed)" = 0 ] || { echo "FAILED: replayed $(jsys replayed) at a clean attach"; return 1; }
	# size is the area, blocks its ring: the area less two header blocks.
	n=$(jsys blocks)
	[ "$n" -ge 3 ] || { echo "FAILED: a ring of $n blocks"; return 1; }
	[ $(( $(jsys size) % (n + 2) )) = 0 ] ||
		{ echo "FAILED: size $(jsys size) is not a multiple of blocks + 2 ($n + 2)"; return 1; }
	bs=$(( $(jsys size) / (n + 2) ))
	[ "$bs" -ge 512 ] || { echo "FAILED: journal blocks of $bs bytes"; return 1; }
	[ $(( bs & (bs - 1) )) = 0 ] || { echo "FAILED: journal blocks of $bs bytes"; return 1; }
	# The interval: 1..3600000 ms, 0 and above refused.
	if jsys_write 0; then echo "FAILED: commit_interval_ms accepted 0"; return 1; fi
	if jsys_write 3600001; then echo "FAILED: commit_interval_ms accepted 3600001"; return 1; fi
	if jsys_write x; then echo "FAILED: commit_interval_ms accepted x"; return 1; fi
	[ "$(jsys commit_interval_ms)" = 5000 ] ||
		{ echo "FAILED: a refused write changed the interval to $(jsys commit_interval_ms)"; return 1; }
	jsys_write 1000 || { echo "FAILED: commit_interval_ms refused 1000"; return 1; }
	[ "$(jsys commit_interval_ms)" = 1000 ] ||
		{ echo "FAILED: commit interval $(jsys commit_interval_ms) after writing 1000"; return 1; }
	jsys_write 3600000 || { echo "FAILED: commit_interval_ms refused 3600000"; return 1; }
	# Allocating writes and a flush move the counters (fill may be 0
	# again: a checkpoint can follow the commit).
	run dd if="$W/rnd" of="$DEV" bs=64k count=8 oflag=direct conv=notrunc,fsync \
		status=none || return 1
	for f in commits blocks_written device_flushes guest_flushes; do
		[ "$(jsys "$f")" -gt 0 ] || { echo "FAILED: $f is 0 after writes and a flush"; return 1; }
	done
	[ "$(jsys blocks_written)" -ge "$(jsys commits)" ] ||
		{ echo "FAILED: $(jsys blocks_written) blocks for $(jsys commits) commits"; return 1; }
	[ "$(jsys fill)" -le "$n" ] || { echo "FAILED: fill $(jsys fill) above $n blocks"; return 1; }
	q_detach "$DEV" || return 1
	[ ! -e "$d" ] || { echo "FAILED: $d left after detach"; return 1; }

	# Without the journal: the same files, reading 0.
	q_attach --journal=off s.qcow2 || return 1
	jsys_check || return 1
	for f in $JSYS_FILES; do
		v=$(jsys "$f")
		[ "$v" = 0 ] || { echo "FAILED: $f reads $v with the journal off"; return 1; }
	done
	if jsys_write 1000; then echo "FAILED: commit_interval_ms accepted 1000 with the journal off"; return 1; fi
	[ "$(jsys commit_interval_ms)" = 0 ] || { echo "FAILED: interval set with the journal off"; return 1; }
	q_detach "$DEV" || return 1

	# Readers in the files while the device comes and goes.
	(
		end=$((SECONDS + 30))
		while [ $SECONDS -lt $end ] && [ ! -e stop-readers ]; do
			cat /sys/block/qimg*/qimg/journal/* /sys/block/qimg*/qimg/* \
				>/dev/null 2>&1
		done
	) &
	v=$!
	for n in 1 2 3 4 5 end; do
		[ "$n" = end ] && break
		j_attach s.qcow2 || break
		jsys_write 1000 || { echo "FAILED: commit_interval_ms refused 1000"; break; }
		q_detach "$DEV" || break
	done
	touch stop-readers
	wait "$v"
	rm -f stop-readers
	[ "$n" = end ] || { echo "FAILED: attach/detach loop stopped at round $n"; return 1; }
	[ ! -e "$d" ] || { echo "FAILED: $d left after the last detach"; return 1; }
	run qemu-img check s.qcow2
}
tc "journal: sysfs qimg/journal/ files, journal on and off, readers racing detach" jr_sysfs

# udev rules may read /sys/block/qimgN/qimg/: the directory comes after
# the disk's "add" uevent, so a "change" uevent must follow once it is
# there.  A netlink listener records what it sees when that event comes.
sysfs_uevent() {
	local pid n
	rm -f ue.out ue.ready
	python3 - >ue.out 2>&1 <<'PY' &
import os, socket, select, time
s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)
s.bind((0, 1))
open('ue.ready', 'w').close()
end = time.time() + 60
while time.time() < end:
    if not select.select([s], [], [], 1)[0]:
        continue
    f = s.recv(65536).split(b'\0')
    env = dict(x.split(b'=', 1) for x in f[1:] if b'=' in x)
    dp = env.get(b'DEVPATH', b'').decode()
    name = dp.rsplit('/', 1)[-1]
    if env.get(b'SUBSYSTEM') != b'block' or not name.startswith('qimg'):
        continue
    act = env.get(b'ACTION', b'').decode()
    there = os.path.isdir('/sys/block/%s/qimg/journal' % name)
    print(act, name, 'qimg-dir' if there else 'no-qimg-dir', flush=True)
    if act == 'change':
        break
PY
	pid=$!
	for _ in $(seq 100); do [ -e ue.ready ] && break; sleep 0.1; done
	run qemu-img create -q -f qcow2 ue.qcow2 16M || { kill "$pid"; return 1; }
	q_attach ue.qcow2 || { kill "$pid"; return 1; }
	n=${DEV#/dev/}
	for _ in $(seq 100); do grep -q "^change $n " ue.out && break; sleep 0.1; done
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	q_detach "$DEV" || return 1
	grep -qx "change $n qimg-dir" ue.out ||
		{ echo "FAILED: no change uevent for $n with qimg/ in place"; cat ue.out; return 1; }
}
tc "sysfs: a change uevent once /sys/block/qimgN/qimg/ exists" sysfs_uevent

# shellcheck source=matrix.sh
. "$HERE/matrix.sh"

fio_iops() {
	timeout "$TO" fio --name=b --filename="$1" --rw="$2" --bs=4k --iodepth=32 \
		--ioengine=libaio --direct=1 --time_based --runtime=4 --ramp_time=1 \
		--output-format=json 2>/dev/null | python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
print(int(j["read"]["iops"] + j["write"]["iops"]))' 2>/dev/null || echo "n/a"
}

bench() {
	local loopdev
	[ -z "$FILTER" ] || [[ bench =~ $FILTER ]] || return 0
	dd if=/dev/urandom of=bench.raw bs=1M count=128 status=none || return 0
	qemu-img convert -O qcow2 bench.raw bench.qcow2 || return 0
	loopdev=$(losetup --direct-io=on -f --show bench.raw) || return 0
	if q_attach bench.qcow2 >/dev/null; then
		for rw in randread randwrite; do
			echo "# bench: $rw 4k QD32: qimg $(fio_iops "$DEV" $rw) IOPS, loop(raw, dio) $(fio_iops "$loopdev" $rw) IOPS"
		done
		"$QIMGCTL" detach "$DEV" >/dev/null 2>&1
	else
		echo "# bench: qimg attach failed"
	fi
	losetup -d "$loopdev"
	cleanup
}
# /dev/qimgN as the disk of a nested guest: tests/vmdisk.sh.
# shellcheck source=vmdisk.sh
. "$HERE/vmdisk.sh"

# Hostile images in the kernel: tests/hostile.sh, one case per image.
# shellcheck source=hostile.sh
. "$HERE/hostile.sh"

bench

t_done
