#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the benchmark (run by tools/testing/bench/run inside one
# qimg-vm guest).  On the ext4 scratch disk it prepares a raw file and a
# fully allocated qcow2 copy of it (the same bytes), then runs every fio
# workload against these targets:
#
#   qimg   /dev/qimgN on the qcow2 image, journal off
#   qimgj  /dev/qimgN on the qcow2 image, attach --journal=on (fresh
#          images and overlays made by qimgctl create -o journal=on)
#   loop   losetup --direct-io=on on the raw file
#   nbd    qemu-nbd --cache=none --aio=native on the qcow2 image
#   raw    fio directly on the raw file (O_DIRECT; the ceiling)
#
# Rounds are interleaved and the target order rotates per workload and
# round, so the host's load drifting over time hits all targets alike; the
# host computes the ratios per round and takes their median (report.py).
# Each fio run leaves its JSON in $QIMG_BENCH_OUT (journal counters of the
# qimgj runs next to it as *.jrnl); nothing is judged here: a target that
# cannot be set up is recorded as an error and skipped.
#
# Env: QIMG_BENCH_OUT (dir on the share), QIMG_BENCH_RUNTIME (s per run),
# QIMG_BENCH_SIZE (file and device size), QIMG_BENCH_ROUNDS,
# QIMG_BENCH_ONLY (ERE: only the workloads it matches),
# QIMG_BENCH_CACHE_VSIZE (virtual size of the cache-scaling image),
# QIMG_BENCH_CACHE_SIZES (L2 cache sizes of the cache-scaling run),
# QIMG_BENCH_EXT4_SIZE (data per job of the ext4 fsync workload),
# QIMG_BENCH_FSYNC_RUNTIME (s per fsync run, default 3 x the runtime),
# QIMGCTL, QIMG_SCRATCH.
set -u

OUT=${QIMG_BENCH_OUT:?}
RT=${QIMG_BENCH_RUNTIME:-2}
# fsync workloads make a few hundred syncs a second under TCG, and the
# host's flush latency wanders: they run longer to average it out.
FRT=${QIMG_BENCH_FSYNC_RUNTIME:-$((3 * RT))}
SIZE=${QIMG_BENCH_SIZE:-256M}
ROUNDS=${QIMG_BENCH_ROUNDS:-1}
ONLY=${QIMG_BENCH_ONLY:-}
CACHE_VSIZE=${QIMG_BENCH_CACHE_VSIZE:-32G}
CACHE_SIZES=${QIMG_BENCH_CACHE_SIZES:-256K 512K 1M 2M 4M 8M}
EXT4_SIZE=${QIMG_BENCH_EXT4_SIZE:-16M}
QIMGCTL=${QIMGCTL:?}
DIR=${QIMG_SCRATCH:?no scratch disk}/bench
NBD=/dev/nbd0
MNT=/mnt/qimg-bench

mkdir -p "$OUT" "$DIR" "$MNT" /run/lock
cd "$DIR" || exit 1
ERRS=$OUT/errors.txt
: >"$ERRS"

note() { echo "bench-guest: $*" >&2; }
err() {
	note "error: $*"
	echo "$*" >>"$ERRS"
}

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

# setup TARGET KIND: echo the block device (or, for raw, the file) to
# benchmark.  KIND "steady" uses the prefilled images; "alloc" and "ext4"
# a fresh empty one (qcow2 with no clusters; for loop and raw a sparse raw
# file, so the file system allocates too); "cow" an empty qcow2 overlay
# over the full base.qcow2, "cowx" the same with extended L2 entries.
setup() {
	local t=$1 kind=$2 img=fresh dev
	rm -f fresh.qcow2 fresh.raw
	case $kind in
	steady) img=base ;;
	alloc | ext4)
		case $t in
		loop | raw) truncate -s "$SIZE" fresh.raw || return 1 ;;
		qimgj) "$QIMGCTL" create -q -o cluster_size=65536,journal=on \
			fresh.qcow2 "$SIZE" || return 1 ;;
		*)
			qemu-img create -q -f qcow2 -o cluster_size=65536 \
				fresh.qcow2 "$SIZE" || return 1
			;;
		esac
		;;
	cowx)
		# The same overlay with extended L2 entries (subclusters).
		qemu-img create -q -f qcow2 -o cluster_size=65536,extended_l2=on \
			-b base.qcow2 -F qcow2 fresh.qcow2 "$SIZE" || return 1
		;;
	cow)
		# An overlay's header holds the backing file name, which can
		# leave no room for the journal extension: qimgctl create
		# -o journal=on reserves it.
		if [ "$t" = qimgj ]; then
			"$QIMGCTL" create -q -o cluster_size=65536,journal=on \
				-b base.qcow2 -F qcow2 fresh.qcow2 "$SIZE" || return 1
		else
			qemu-img create -q -f qcow2 -o cluster_size=65536 \
				-b base.qcow2 -F qcow2 fresh.qcow2 "$SIZE" || return 1
		fi
		;;
	esac
	case $t in
	qimg) dev=$("$QIMGCTL" attach "$img.qcow2") || return 1 ;;
	qimgj) dev=$("$QIMGCTL" attach --journal=on "$img.qcow2") || return 1 ;;
	loop) dev=$(losetup --direct-io=on -f --show "$img.raw") || return 1 ;;
	nbd)
		qemu-nbd -c "$NBD" -f qcow2 --cache=none --aio="$NBD_AIO" \
			"$img.qcow2" >/dev/null || return 1
		nbd_wait up || { qemu-nbd -d "$NBD" >/dev/null; return 1; }
		dev=$NBD
		;;
	raw) dev=$DIR/$img.raw ;;
	esac
	udevadm settle 2>/dev/null
	echo "$dev"
}

teardown() {
	local t=$1 dev=$2
	case $t in
	qimg | qimgj) "$QIMGCTL" detach "$dev" >/dev/null ;;
	loop) losetup -d "$dev" ;;
	nbd)
		qemu-nbd -d "$dev" >/dev/null
		nbd_wait down
		;;
	raw) ;;
	esac
}

# Journal counters of a qimg device (/sys/block/qimgN/qimg/journal/) as
# one "journal_NAME value" line each, the names report.py reads.
jrnl_counters() {
	local d=/sys/block/${1#/dev/}/qimg/journal f
	for f in "$d"/*; do
		[ -f "$f" ] || continue
		printf 'journal_%s %s\n' "${f##*/}" "$(head -n 1 "$f" 2>/dev/null)"
	done
}

# Probe the nbd AIO mode once.
if dev=$(setup nbd steady 2>/dev/null); then
	teardown nbd "$dev"
else
	NBD_AIO=threads
	note "qemu-nbd --aio=native refused, using --aio=threads"
fi

# --- workloads ------------------------------------------------------------

# name kind rw bs iodepth numjobs extra-fio-args targets
ALL="qimg,qimgj,loop,nbd,raw"
WORKLOADS="randread-4k-qd1 steady randread 4k 1 1 - $ALL
randread-4k-qd32 steady randread 4k 32 1 - $ALL
randwrite-4k-qd1 steady randwrite 4k 1 1 - $ALL
randwrite-4k-qd32 steady randwrite 4k 32 1 - $ALL
randread-4k-4x8 steady randread 4k 8 4 - $ALL
randwrite-4k-4x8 steady randwrite 4k 8 4 - $ALL
seqread-1m steady read 1M 4 1 - $ALL
seqwrite-1m steady write 1M 4 1 - $ALL
randrw-70-30 steady randrw 4k 16 1 --rwmixread=70 $ALL
alloc-4k alloc randwrite 4k 32 1 - $ALL
alloc-64k alloc randwrite 64k 8 1 - $ALL
alloc-seq-4k alloc write 4k 32 1 - $ALL
cow-4k cow randwrite 4k 32 1 - qimg,qimgj,nbd
cow-4k-xl2 cowx randwrite 4k 32 1 - qimg,nbd
fsync-empty-4k alloc randwrite 4k 1 1 --fsync=1 $ALL
fsync-alloc-4k steady randwrite 4k 1 1 --fsync=1 $ALL
ext4-fsync ext4 randwrite 4k 1 2 --fsync=1 qimg,qimgj,loop,nbd"

# ext4 on the device: mkfs, mount, fio on files with --fsync=1 (each job
# its own 8 files), unmount.  Prints the fio JSON path on success.
run_ext4() {
	local name=$1 dev=$2 bs=$3 jobs=$4 f=$5 rt=$6
	mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$dev" ||
		return 1
	mount -t ext4 "$dev" "$MNT" || return 1
	local rc=0
	fio --name="$name" --directory="$MNT" --rw=randwrite --bs="$bs" \
		--numjobs="$jobs" --nrfiles=8 --size="$EXT4_SIZE" \
		--ioengine=psync --fsync=1 --file_service_type=random \
		--time_based --runtime="$rt" --group_reporting \
		--randrepeat=1 --randseed=4242 --refill_buffers \
		--output-format=json --output="$f.tmp" >/dev/null 2>"$f.err" || rc=1
	umount "$MNT" || rc=1
	return $rc
}

run_one() {
	local name=$1 kind=$2 rw=$3 bs=$4 qd=$5 jobs=$6 extra=$7 t=$8 round=$9
	local f=$OUT/$name.$t.$round.json dev ok=1 ts=$EPOCHSECONDS tf
	dev=$(setup "$t" "$kind") || { err "$name/$t/$round: setup of $t failed"; return; }
	sync
	echo 3 >/proc/sys/vm/drop_caches
	[ "$t" = qimgj ] && jrnl_counters "$dev" >"$f.jrnl0"
	tf=$EPOCHSECONDS
	# Same seed for every target: the same offsets in the same order.
	# Allocating, COW and fsync runs have no ramp: their first seconds
	# are the point.
	local ramp=1 args=() rt=$RT
	[ "$kind" = steady ] || ramp=0
	[ "$extra" = --fsync=1 ] && ramp=0 rt=$FRT
	[ "$extra" = - ] || args+=("$extra")
	if [ "$kind" = ext4 ]; then
		run_ext4 "$name" "$dev" "$bs" "$jobs" "$f" "$rt" || ok=0
	elif ! fio --name="$name" --filename="$dev" --rw="$rw" --bs="$bs" \
		--iodepth="$qd" --numjobs="$jobs" --group_reporting \
		--ioengine=libaio --direct=1 --size="$SIZE" "${args[@]}" \
		--time_based --runtime="$rt" --ramp_time="$ramp" \
		--randrepeat=1 --randseed=4242 --refill_buffers \
		--output-format=json --output="$f.tmp" >/dev/null 2>"$f.err"; then
		ok=0
	fi
	tf=$((EPOCHSECONDS - tf))
	if [ $ok = 1 ]; then
		mv "$f.tmp" "$f"
		rm -f "$f.err"
	else
		err "$name/$t/$round: fio failed: $(tail -n 3 "$f.err" 2>/dev/null | tr '\n' ' ')"
	fi
	if [ "$t" = qimgj ]; then
		jrnl_counters "$dev" >"$f.jrnl1"
		[ -s "$f.jrnl1" ] || err "$name/$t/$round: no journal counters in sysfs"
	fi
	teardown "$t" "$dev"
	# A run on a fresh qcow2 image must leave a consistent image behind.
	if [ "$kind" != steady ] && [ -f fresh.qcow2 ]; then
		qemu-img check -q fresh.qcow2 >/dev/null 2>&1 ||
			err "$name/$t/$round: qemu-img check of the fresh image failed"
	fi
	note "  $name on $t: $((EPOCHSECONDS - ts)) s, fio $tf s"
}

# Cache scaling: 4k randread over the whole of a big image whose L2 tables
# all exist (one 64k cluster written in each 512M an L2 table maps, so an
# image of CACHE_VSIZE has CACHE_VSIZE/8192 of L2 tables; the other reads
# hit unallocated entries: L2 lookups without data I/O), qimg only, one
# run per L2 cache size.
cache_prep() {
	local vs off cmds=()
	vs=$(numfmt --from=iec "$CACHE_VSIZE") || return 1
	qemu-img create -q -f qcow2 -o cluster_size=65536 cache.qcow2 "$vs" ||
		return 1
	for ((off = 0; off < vs; off += 512 << 20)); do
		cmds+=(-c "write -q -P 0x5a $off 64k")
	done
	qemu-io -f qcow2 "${cmds[@]}" cache.qcow2 >/dev/null
}

run_cache() {
	local round=$1 c dev f
	for c in $CACHE_SIZES; do
		f=$OUT/cache-randread-4k.l2-$c.$round.json
		note "round $round: cache scaling, L2 cache $c (t+$(($(date +%s) - t0)) s)"
		dev=$("$QIMGCTL" attach --l2-cache-size="$c" cache.qcow2) ||
			{ err "cache/$c/$round: attach failed"; continue; }
		udevadm settle 2>/dev/null
		echo 3 >/proc/sys/vm/drop_caches
		if fio --name=cache --filename="$dev" --rw=randread --bs=4k \
			--iodepth=32 --ioengine=libaio --direct=1 \
			--time_based --runtime="$RT" --ramp_time=1 \
			--randrepeat=1 --randseed=4242 \
			--output-format=json --output="$f.tmp" >/dev/null 2>"$f.err"; then
			mv "$f.tmp" "$f"
			rm -f "$f.err"
		else
			err "cache/$c/$round: fio failed: $(tail -n 3 "$f.err" | tr '\n' ' ')"
		fi
		"$QIMGCTL" detach "$dev" >/dev/null
	done
}

want() { [ -z "$ONLY" ] || [[ $1 =~ $ONLY ]]; }

CACHE=0
if want cache-randread-4k; then
	if cache_prep; then
		CACHE=1
	else
		err "cache scaling: cannot create a $CACHE_VSIZE image"
	fi
fi

n=0
for round in $(seq "$ROUNDS"); do
	while read -r name kind rw bs qd jobs extra tl; do
		want "$name" || continue
		IFS=, read -r -a ts <<<"$tl"
		# Rotate the target order per workload and round, so no target
		# always runs first (or right after the prefill's writeback).
		for i in "${!ts[@]}"; do
			t=${ts[$(((i + n) % ${#ts[@]}))]}
			note "round $round: $name on $t (t+$(($(date +%s) - t0)) s)"
			run_one "$name" "$kind" "$rw" "$bs" "$qd" "$jobs" "$extra" "$t" "$round"
		done
		n=$((n + 1))
	done <<<"$WORKLOADS"
	[ $CACHE = 1 ] && run_cache "$round"
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
	printf '"cache_vsize": "%s", "cache_sizes": "%s", "ext4_size": "%s", ' \
		"$CACHE_VSIZE" "$CACHE_SIZES" "$EXT4_SIZE"
	printf '"qimg_module_loaded": "%s", ' "${QIMG_VM_MODULE_LOADED:-?}"
	printf '"total_seconds": %s}\n' "$(($(date +%s) - t0))"
} >"$OUT/meta.json"
rm -f fresh.qcow2 fresh.raw cache.qcow2
exit 0
