#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the benchmark (run by tools/testing/bench/run inside one
# qimg-vm guest).  On the ext4 scratch disk it prepares a raw file and a
# fully allocated qcow2 copy of it, then runs every fio workload against
# qimg (/dev/qimgN), loop (direct I/O on the raw file) and qemu-nbd (the
# same qcow2 image), interleaved round by round so that the host's load
# drifting over time hits all three alike.  Each fio run leaves its JSON in
# $QIMG_BENCH_OUT; the host parses them (report.py).  Nothing is judged
# here: a target that cannot be set up is recorded as an error and skipped.
#
# Env: QIMG_BENCH_OUT (dir on the share), QIMG_BENCH_RUNTIME (s per run),
# QIMG_BENCH_SIZE (file and device size), QIMG_BENCH_ROUNDS,
# QIMG_BENCH_ONLY (ERE: only the workloads it matches), QIMGCTL,
# QIMG_SCRATCH.
set -u

OUT=${QIMG_BENCH_OUT:?}
RT=${QIMG_BENCH_RUNTIME:-8}
SIZE=${QIMG_BENCH_SIZE:-512M}
ROUNDS=${QIMG_BENCH_ROUNDS:-1}
ONLY=${QIMG_BENCH_ONLY:-}
QIMGCTL=${QIMGCTL:?}
DIR=${QIMG_SCRATCH:?no scratch disk}/bench
NBD=/dev/nbd0

mkdir -p "$OUT" "$DIR" /run/lock
cd "$DIR" || exit 1
ERRS=$OUT/errors.txt
: >"$ERRS"

note() { echo "bench-guest: $*" >&2; }
err() {
	note "error: $*"
	echo "$*" >>"$ERRS"
}

# --- what ran where -------------------------------------------------------

modprobe nbd nbds_max=4 2>/dev/null || err "modprobe nbd failed"

# --aio=native needs O_DIRECT (cache=none); fall back to threads if this
# qemu-nbd refuses it, and say so in the results.
NBD_AIO=native

nbd_wait() {
	local want=$1 i
	for i in $(seq 100); do
		if [ "$want" = up ] && [ -e /sys/block/${NBD#/dev/}/pid ]; then
			return 0
		fi
		if [ "$want" = down ] && [ ! -e /sys/block/${NBD#/dev/}/pid ]; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# --- images ---------------------------------------------------------------

# A sequential fill with fio's (non-zero, incompressible) buffers, so every
# block of the raw file is written and qemu-img convert allocates every
# cluster of the qcow2 copy: reads and overwrites then hit allocated
# clusters (steady state), not holes.
prep() {
	fio --name=fill --filename=base.raw --rw=write --bs=1M --size="$SIZE" \
		--ioengine=libaio --direct=1 --iodepth=4 --refill_buffers \
		--eta=never --output=/dev/null || return 1
	qemu-img convert -O qcow2 -o cluster_size=65536 base.raw base.qcow2 ||
		return 1
	local alloc
	alloc=$(qemu-img map --output=json base.qcow2 | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(sum(e["length"] for e in m if e["data"]))')
	[ "$alloc" = "$(stat -c %s base.raw)" ] ||
		{ err "base.qcow2 not fully allocated ($alloc bytes)"; return 1; }
}

t0=$(date +%s)
prep || { err "image preparation failed"; exit 1; }
note "images ready in $(($(date +%s) - t0)) s ($SIZE)"

# --- targets --------------------------------------------------------------

# setup TARGET KIND: echo the block device to benchmark.  KIND "steady"
# uses the prefilled images, "alloc" a fresh empty one (qcow2 with no
# clusters; for loop a sparse raw file, so the file system allocates too).
setup() {
	local t=$1 kind=$2 img dev
	case $kind in
	steady) ;;
	alloc)
		rm -f fresh.qcow2 fresh.raw
		if [ "$t" = loop ]; then
			truncate -s "$SIZE" fresh.raw || return 1
		else
			qemu-img create -q -f qcow2 -o cluster_size=65536 \
				fresh.qcow2 "$SIZE" || return 1
		fi
		;;
	esac
	[ "$kind" = steady ] && img=base || img=fresh
	case $t in
	qimg)
		dev=$("$QIMGCTL" attach "$img.qcow2") || return 1
		;;
	loop)
		dev=$(losetup --direct-io=on -f --show "$img.raw") || return 1
		;;
	nbd)
		qemu-nbd -c "$NBD" -f qcow2 --cache=none --aio="$NBD_AIO" \
			"$img.qcow2" >/dev/null || return 1
		nbd_wait up || { qemu-nbd -d "$NBD" >/dev/null; return 1; }
		dev=$NBD
		;;
	esac
	udevadm settle 2>/dev/null
	echo "$dev"
}

teardown() {
	local t=$1 dev=$2
	case $t in
	qimg) "$QIMGCTL" detach "$dev" >/dev/null ;;
	loop) losetup -d "$dev" ;;
	nbd)
		qemu-nbd -d "$dev" >/dev/null
		nbd_wait down
		;;
	esac
}

# Probe the nbd AIO mode once.
if dev=$(setup nbd steady 2>/dev/null); then
	teardown nbd "$dev"
else
	NBD_AIO=threads
	note "qemu-nbd --aio=native refused, using --aio=threads"
fi

# --- workloads ------------------------------------------------------------

# name kind rw bs iodepth
WORKLOADS="randread-4k steady randread 4k 32
randwrite-4k steady randwrite 4k 32
seqread-64k steady read 64k 8
seqwrite-64k steady write 64k 8
alloc-randwrite-4k alloc randwrite 4k 32"

TARGETS=(qimg loop nbd)

run_one() {
	local name=$1 kind=$2 rw=$3 bs=$4 qd=$5 t=$6 round=$7 dev
	local f=$OUT/$name.$t.$round.json
	dev=$(setup "$t" "$kind") || { err "$name/$t/$round: setup of $t failed"; return; }
	sync
	echo 3 >/proc/sys/vm/drop_caches
	# Same seed for every target: the same offsets in the same order.
	# The allocating run has no ramp: its first seconds are the point.
	local ramp=1
	[ "$kind" = alloc ] && ramp=0
	if ! fio --name="$name" --filename="$dev" --rw="$rw" --bs="$bs" \
		--iodepth="$qd" --ioengine=libaio --direct=1 --size="$SIZE" \
		--time_based --runtime="$RT" --ramp_time="$ramp" \
		--randrepeat=1 --randseed=4242 --refill_buffers \
		--output-format=json --output="$f.tmp" >/dev/null 2>"$f.err"; then
		err "$name/$t/$round: fio failed: $(tail -n 3 "$f.err" | tr '\n' ' ')"
	else
		mv "$f.tmp" "$f"
		rm -f "$f.err"
	fi
	teardown "$t" "$dev"
	# The allocating run must leave a consistent image behind.
	if [ "$kind" = alloc ] && [ "$t" != loop ]; then
		qemu-img check -q fresh.qcow2 >/dev/null 2>&1 ||
			err "$name/$t/$round: qemu-img check of the fresh image failed"
	fi
}

n=0
for round in $(seq "$ROUNDS"); do
	while read -r name kind rw bs qd; do
		if [ -n "$ONLY" ] && ! [[ $name =~ $ONLY ]]; then
			continue
		fi
		# Rotate the target order per workload and round, so no target
		# always runs first (or right after the prefill's writeback).
		for i in 0 1 2; do
			t=${TARGETS[$(((i + n) % 3))]}
			note "round $round: $name on $t (t+$(($(date +%s) - t0)) s)"
			run_one "$name" "$kind" "$rw" "$bs" "$qd" "$t" "$round"
		done
		n=$((n + 1))
	done <<<"$WORKLOADS"
done

qemu-img check -q base.qcow2 >/dev/null 2>&1 ||
	err "qemu-img check of base.qcow2 failed after the runs"

{
	printf '{"kernel": "%s", "nproc": %s, ' "$(uname -r)" "$(nproc)"
	printf '"cpu": "%s", ' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
	printf '"fio": "%s", ' "$(fio --version)"
	printf '"qemu_nbd": "%s", ' "$(qemu-nbd --version | head -n 1)"
	printf '"nbd_aio": "%s", "size": "%s", "runtime": %s, "rounds": %s, ' \
		"$NBD_AIO" "$SIZE" "$RT" "$ROUNDS"
	printf '"qimg_module_loaded": "%s", ' "${QIMG_VM_MODULE_LOADED:-?}"
	printf '"total_seconds": %s}\n' "$(($(date +%s) - t0))"
} >"$OUT/meta.json"
rm -f fresh.qcow2 fresh.raw
exit 0
