# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash disable=SC2034
#
# The write-path matrix (issue "The write-path matrix"), sourced by e2e.sh
# (its helpers: tc, run, q_attach, q_detach, unsupported_ok, $W, $FILTER).
#
# One parametrised case, wm_case: an image made by qemu-img (and maybe
# prepared: snapshot, compressed clusters, bitmap, dirty bit ...), copied
# as the reference; a fixed set of writes, zero writes, discards and
# flushes goes to /dev/qimgN and, through qemu-io, to the copy.  After
# each round the device must read what qemu-img reads from the copy;
# after detach "qemu-img check" must exit 0 (no corruption, no leak) and
# "qemu-img compare" must find both images identical.  Round 2 runs after
# a re-attach and rewrites what round 1 allocated, discards clusters and
# writes partly into them again: the reused clusters must show no stale
# bytes.
#
# A few combinations run in every `make check`; QIMG_E2E_FULL=1 (make
# check-full) runs the whole matrix.

# Random sources, 1 MiB each, shared by both sides of every write.
wm_chunks() {
	local k
	for k in 0 1 2 3 4 5 6 7; do
		[ -s "$W/wm.c$k" ] && continue
		dd if=/dev/urandom of="$W/wm.c$k" bs=1M count=1 status=none || return 1
	done
}

# Ops, one a line: KIND OFFSET LENGTH [CHUNK].  w: buffered write of
# LENGTH bytes of chunk CHUNK; o: the same with O_DIRECT (512-aligned);
# z: write zeroes (BLKZEROOUT); d: discard (BLKDISCARD); f: flush.
# Offsets are relative to each base of WM_BASES.  Every offset is below
# 16 MiB; the discards cover whole 2 MiB clusters (4M-6M) and parts of
# clusters (5M-6M and 0-64k: whole clusters up to 64k, nothing for 2M
# ones).  Round 1 frees clusters that round 2, after the re-attach, finds
# first; round 2 frees more and writes parts of clusters into them again.
WM_OPS1="w 0 512 0
w 1000 3000 1
w 65000 2000 2
w 131071 200000 3
o 1048576 1048576 4
w 2097151 65538 5
z 2621440 131072
o 3145728 524288 6
w 4194304 1048576 7
f
w 5242880 1048576 0
f
d 5242880 1048576
w 8388607 65538 1
o 9437184 4096 2
w 12582912 1000 2
w 16776192 1024 3
f"
WM_OPS2="w 777 7000 4
o 1048576 65536 5
d 4194304 2097152
f
w 4206649 3000 6
o 5242880 4096 7
w 5300001 70000 0
w 3145729 10 0
z 131072 65536
d 0 65536
w 100 50 1
o 9437184 8192 3
w 16776192 1024 2
f"

# wm_apply_dev DEV OPS BASE: the ops on the device.  Page-cache data is
# written back before each zero write and discard (they drop the cached
# pages of their range).
wm_apply_dev() {
	local dev=$1 base=$3 k off len c
	while read -r k off len c; do
		[ -n "$k" ] || continue
		off=$((base + ${off:-0}))
		case $k in
		w | o)
			local fl=seek_bytes
			[ "$k" = o ] && fl=direct,seek_bytes
			timeout "$TO" dd if="$W/wm.c$c" of="$dev" bs="$len" count=1 \
				seek="$off" oflag=$fl conv=notrunc status=none ||
				{ echo "FAILED: $k $off $len on $dev"; return 1; }
			;;
		z | d)
			run dd if=/dev/null of="$dev" conv=fsync,notrunc status=none || return 1
			if [ "$k" = z ]; then
				run blkdiscard -z -o "$off" -l "$len" "$dev" || return 1
			else
				run blkdiscard -o "$off" -l "$len" "$dev" || return 1
			fi
			;;
		f) run dd if=/dev/null of="$dev" conv=fsync,notrunc status=none || return 1 ;;
		esac
	done <<<"$2"
}

# wm_apply_ref IMG OPS BASE...: the same ops through one qemu-io run.
wm_apply_ref() {
	local img=$1 ops=$2 base k off len c
	local -a cmd=()
	shift 2
	for base in "$@"; do
		while read -r k off len c; do
			[ -n "$k" ] || continue
			off=$((base + ${off:-0}))
			case $k in
			w | o) cmd+=(-c "write -q -s $W/wm.c$c $off $len") ;;
			z) cmd+=(-c "write -q -z $off $len") ;;
			d) cmd+=(-c "discard -q $off $len") ;;
			f) cmd+=(-c flush) ;;
			esac
		done <<<"$ops"
	done
	wm_qio -d unmap -f qcow2 "${cmd[@]}" "$img"
}

# wm_qio ARGS...: qemu-io, its output shown only when it fails.
wm_qio() {
	local out
	out=$(timeout "$TO" qemu-io "$@" 2>&1) && return 0
	echo "FAILED (status $?): qemu-io $*: $out" | head -c 2000
	return 1
}

# wm_same DEV IMG: the device reads what qemu-img reads from IMG: every
# byte for images up to 64 MiB, else the first and last 32 MiB (where the
# ops are).
wm_same() {
	local dev=$1 sz w
	run qemu-img convert -O raw "$2" "$W/wm.raw" || return 1
	sz=$(blockdev --getsize64 "$dev")
	[ "$sz" = "$(stat -c %s "$W/wm.raw")" ] ||
		{ echo "FAILED: $dev has $sz bytes, qemu-img says $(stat -c %s "$W/wm.raw")"; return 1; }
	if [ "$sz" -le $((64 << 20)) ]; then
		run cmp "$dev" "$W/wm.raw" || return 1
	else
		w=$((32 << 20))
		run cmp -n $w "$dev" "$W/wm.raw" || return 1
		run cmp -n $w "$dev" "$W/wm.raw" $((sz - w)) $((sz - w)) || return 1
	fi
	rm -f "$W/wm.raw"
}

# wm_hook NAME: run the hook function named by $NAME if set.
wm_hook() {
	[ -z "${!1:-}" ] && return 0
	"${!1}"
}

# wm_round N ATTACH_OPTS...: attach, round N's ops, compare, detach,
# check, compare with the reference.
wm_round() {
	local n=$1 ops base
	shift
	[ "$n" = 1 ] && ops=$WM_OPS1 || ops=$WM_OPS2
	q_attach "$@" wm.qcow2 || return 1
	for base in $WM_BASES; do
		wm_apply_dev "$DEV" "$ops" "$base" || { q_detach "$DEV"; return 1; }
	done
	# shellcheck disable=SC2086
	wm_apply_ref wmref.qcow2 "$ops" $WM_BASES || { q_detach "$DEV"; return 1; }
	run dd if=/dev/null of="$DEV" conv=fsync,notrunc status=none || return 1
	echo 3 >/proc/sys/vm/drop_caches
	wm_same "$DEV" wmref.qcow2 || { q_detach "$DEV"; return 1; }
	WM_ROUND=$n
	wm_hook WM_WHILE || { q_detach "$DEV"; return 1; }
	q_detach "$DEV" || return 1
	run qemu-img check -q wm.qcow2 || return 1
	run qemu-img check -q wmref.qcow2 || return 1
	run qemu-img compare -q wm.qcow2 wmref.qcow2
}

# wm_case CREATE_OPTS [ATTACH_OPTS...]: the case.  WM_SIZE (16M), WM_BASES
# (0), and hooks named by WM_PREP (after qemu-img create, before the copy;
# may make wm.qcow2 anew), WM_WHILE (attached, after each round's ops;
# WM_ROUND says which), WM_AFTER (at the end).
wm_case() {
	local opts=$1
	shift
	WM_SIZE=${WM_SIZE:-16M}
	WM_BASES=${WM_BASES:-0}
	WM_OPTS=$opts
	WM_N0=$(dmesg | wc -l)
	wm_chunks || return 1
	run qemu-img create -q -f qcow2 -o "$opts" wm.qcow2 "$WM_SIZE" || return 1
	wm_hook WM_PREP || return 1
	cp --sparse=always wm.qcow2 wmref.qcow2 || return 1
	wm_round 1 "$@" || return 1
	wm_round 2 "$@" || return 1
	wm_hook WM_AFTER
}

# --- hooks ---------------------------------------------------------------

# The header's incompatible feature bit N of IMG: 0 or 1.
wm_incompat() {
	echo $(( (16#$(be_read "$1" 72 8) >> $2) & 1 ))
}

# qemu-img data: patterns over the first 8 MiB, so that round 1 writes
# into clusters that hold data.
wm_prep_data() {
	wm_qio -f qcow2 -c 'write -P 0x31 0 3M' -c 'write -P 0x32 4M 2M' \
		-c 'write -P 0x33 8M 1M' -c 'write -P 0x34 12M 64k' wm.qcow2
}

# Internal snapshot over that data: round 1 writes into data clusters and
# L2 tables shared with it; afterwards applying it restores its bytes.
wm_prep_snap() {
	wm_prep_data || return 1
	run qemu-img convert -O raw wm.qcow2 wmsnap.raw || return 1
	run qemu-img snapshot -c s1 wm.qcow2
}
wm_after_snap() {
	run qemu-img snapshot -a s1 wm.qcow2 || return 1
	run qemu-img check -q wm.qcow2 || return 1
	run qemu-img compare -q -f qcow2 -F raw wm.qcow2 wmsnap.raw ||
		{ echo "FAILED: snapshot s1 no longer holds its bytes"; return 1; }
}

# Compressed clusters under every op: compressible text and a pattern
# (and a hole), written by qemu-img convert -c.
wm_prep_compressed() {
	{
		seq 1 700000
		yes qimg-matrix | head -c 6M
	} >wmsrc.raw
	run truncate -s "$WM_SIZE" wmsrc.raw || return 1
	run qemu-img convert -q -c -O qcow2 -o "$WM_OPTS" wmsrc.raw wm.qcow2 || return 1
	rm -f wmsrc.raw
	# "N/M = x% allocated, y% fragmented, z% compressed clusters"
	qemu-img check wm.qcow2 | grep -E '% compressed' | grep -vqE ' 0\.00% compressed' ||
		{ echo "FAILED: qemu-img wrote no compressed cluster"; return 1; }
}

# A big image whose host offsets start past 4 GiB: 5G preallocated
# (metadata only, the file is sparse), held by a snapshot, then discarded
# in the active layer: every allocation lands past the 5 GiB the snapshot
# keeps.  The ops run at the start and 16 MiB before the end.
wm_prep_big() {
	run qemu-img create -q -f qcow2 -o "$WM_OPTS,preallocation=metadata" wm.qcow2 5G ||
		return 1
	run qemu-img snapshot -c pre wm.qcow2 || return 1
	# (qemu-io takes less than 2 GiB per request)
	wm_qio -d unmap -f qcow2 -c 'discard -q 0 1G' -c 'discard -q 1G 1G' \
		-c 'discard -q 2G 1G' -c 'discard -q 3G 1G' -c 'discard -q 4G 1G' wm.qcow2
}
wm_after_big() {
	local max
	max=$(qemu-img map --output=json wm.qcow2 |
		sed -n 's/.*"data": true.*"offset": \([0-9]*\).*/\1/p' | sort -n | tail -n 1)
	echo "highest host offset of guest data: ${max:-none}"
	if [ -z "$max" ] || [ "$max" -le $((4 << 30)) ]; then
		echo "FAILED: no data cluster past 4 GiB in the file"
		return 1
	fi
	run qemu-img snapshot -d pre wm.qcow2 || return 1
	run qemu-img check -q wm.qcow2
}

# Tiny caches (4 tables each): the ops touch more tables than that, so
# dirty tables are written back on eviction; the miss counters must show
# more misses than the cache holds tables (refcount blocks too unless
# WM_TINY_RC=0: 4k clusters with 64-bit refcounts touch three only).
wm_while_tiny() {
	local s=/sys/block/${DEV#/dev/}/qimg c k n m
	[ "$P" = qimg ] || return 0	# the self-test's qemu-nbd has no counters
	c=$(cat "$s/cluster_size")
	for k in l2 refcount; do
		[ "$k" = refcount ] && [ "${WM_TINY_RC:-1}" = 0 ] && continue
		n=$(( $(cat "$s/${k}_cache_size") / c ))
		m=$(cat "$s/${k}_cache_misses")
		echo "$k cache: $n tables, $m misses"
		[ "$n" -le 4 ] || { echo "FAILED: $k cache of $n tables, not tiny"; return 1; }
		[ "$m" -gt "$n" ] ||
			{ echo "FAILED: $m misses in a $k cache of $n tables: no eviction"; return 1; }
	done
}

# The refcount table (one cluster: 64 refcount blocks of 64 clusters each
# with 512-byte clusters and 64-bit refcounts) must grow.
wm_while_grow() {
	wm_while_tiny || return 1
	[ "$WM_ROUND" = 1 ] && [ "$P" = qimg ] || return 0
	dmesg | tail -n +$((WM_N0 + 1)) | grep -q 'refcount table grown' ||
		{ echo "FAILED: the refcount table did not grow"; return 1; }
}

# Persistent bitmap: flagged in use while attached, still there (in use,
# its clusters referenced) after detach.
wm_prep_bitmap() {
	run qemu-img bitmap --add wm.qcow2 b0 || return 1
	wm_qio -f qcow2 -c 'write -P 0x41 1M 64k' wm.qcow2
}
wm_bitmap_flags() {
	qemu-img info -U --output=json wm.qcow2 | python3 -c '
import json, sys
bm = json.load(sys.stdin)["format-specific"]["data"].get("bitmaps", [])
print(" ".join("%s:%s" % (b["name"], ",".join(b["flags"])) for b in bm))'
}
wm_while_bitmap() {
	local f
	f=$(wm_bitmap_flags)
	echo "bitmaps while attached: $f"
	case " $f " in *" b0:"*in-use*) ;; *) echo "FAILED: bitmap b0 not in use while attached"; return 1 ;; esac
}
wm_after_bitmap() {
	local f
	f=$(wm_bitmap_flags)
	echo "bitmaps after detach: $f"
	case " $f " in *" b0:"*) ;; *) echo "FAILED: bitmap b0 gone after detach"; return 1 ;; esac
	run qemu-img bitmap --remove wm.qcow2 b0 || return 1
	run qemu-img check -q wm.qcow2
}

# lazy_refcounts=on: qimg keeps refcounts exact, so the dirty bit may be
# set while attached but never after detach.
wm_while_lazy() {
	echo "dirty bit while attached: $(wm_incompat wm.qcow2 0)"
}
wm_after_lazy() {
	[ "$(wm_incompat wm.qcow2 0)" = 0 ] || { echo "FAILED: dirty bit set after detach"; return 1; }
}

# lazy_refcounts=on, dirty: QEMU stopped without writing its refcounts.
# A read-only attach leaves the image as it is; a read-write attach
# rebuilds the refcounts first (as QEMU does when it opens such an image
# for writing) and says so; the rounds then run on the repaired image.
wm_prep_dirty() {
	local out
	wm_prep_data || return 1
	qemu-io -f qcow2 -c 'write -P 0x35 2M 2M' -c 'write -P 0x36 10M 128k' -c abort \
		wm.qcow2 >/dev/null 2>&1
	[ "$(wm_incompat wm.qcow2 0)" = 1 ] || { echo "FAILED: qemu-io abort left no dirty bit"; return 1; }
	# (QEMU itself, in the self-test, repairs the image at open.)
	[ "$P" = qimg ] || return 0
	ro_check wm.qcow2 || return 1
	[ "$(wm_incompat wm.qcow2 0)" = 1 ] || { echo "FAILED: a read-only attach cleared the dirty bit"; return 1; }
	out=$(timeout 60 "$QIMGCTL" attach wm.qcow2 2>&1) ||
		{ echo "FAILED: read-write attach of a dirty image: $out"; return 1; }
	echo "attach said: $out"
	printf '%s\n' "$out" | grep -q 'left dirty.*rebuilt' ||
		{ echo "FAILED: the attach does not say it rebuilt the refcounts"; return 1; }
	DEV=$(printf '%s\n' "$out" | grep -o "/dev/${P}[0-9]\\+" | head -n 1)
	q_detach "$DEV" || return 1
	[ "$(wm_incompat wm.qcow2 0)" = 0 ] || { echo "FAILED: the repair left the dirty bit"; return 1; }
	run qemu-img check -q wm.qcow2
}

# --- the cases -------------------------------------------------------------

# wmc NAME OPTS [ATTACH_OPTS...] with WM_* hook variables in the caller's
# environment for this one case.
wmc() {
	local name=$1
	shift
	tc "matrix: $name" wm_case "$@"
}

wm_default() {
	wmc "64k clusters" cluster_size=64k
	WM_PREP=wm_prep_snap WM_AFTER=wm_after_snap \
		wmc "writes into clusters and L2 tables shared with a snapshot" cluster_size=64k
	WM_WHILE=wm_while_grow \
		wmc "512-byte clusters, refcount_bits=64, tiny caches, refcount table growth" \
		cluster_size=512,refcount_bits=64 --l2-cache-size=1 --refcount-cache-size=1
	WM_PREP=wm_prep_big WM_AFTER=wm_after_big WM_BASES="0 $(((5 << 30) - (16 << 20)))" \
		wmc "5 GiB, host offsets past 4 GiB" cluster_size=64k
	WM_PREP=wm_prep_snap WM_AFTER=wm_after_snap \
		wmc "extended_l2, writes into clusters shared with a snapshot" \
		cluster_size=64k,extended_l2=on
}

wm_full() {
	local b
	wmc "2M clusters" cluster_size=2M
	wmc "4k clusters" cluster_size=4k
	WM_PREP=wm_prep_data wmc "512-byte clusters over qemu-img data" cluster_size=512
	for b in 1 2 4 8 16 32 64; do
		WM_PREP=wm_prep_data wmc "refcount_bits=$b" "cluster_size=64k,refcount_bits=$b"
	done
	WM_PREP=wm_prep_data wmc "refcount_bits=1, 4k clusters" cluster_size=4k,refcount_bits=1
	WM_PREP=wm_prep_data wmc "compat=0.10" compat=0.10
	WM_PREP=wm_prep_snap WM_AFTER=wm_after_snap \
		wmc "compat=0.10, snapshot" compat=0.10
	WM_PREP=wm_prep_snap WM_AFTER=wm_after_snap \
		wmc "snapshot, 512-byte clusters" cluster_size=512
	WM_PREP=wm_prep_snap WM_AFTER=wm_after_snap \
		wmc "snapshot, 2M clusters, refcount_bits=2" cluster_size=2M,refcount_bits=2
	WM_PREP=wm_prep_compressed wmc "overwriting compressed clusters" cluster_size=64k
	WM_PREP=wm_prep_compressed wmc "compressed, 4k clusters" cluster_size=4k
	WM_PREP=wm_prep_compressed wmc "compressed, 2M clusters" cluster_size=2M
	WM_PREP=wm_prep_compressed wmc "compressed, compat=0.10" compat=0.10
	WM_PREP=wm_prep_data WM_WHILE=wm_while_lazy WM_AFTER=wm_after_lazy \
		wmc "lazy_refcounts=on" lazy_refcounts=on
	WM_PREP=wm_prep_dirty \
		wmc "lazy_refcounts=on, dirty image (repaired at attach)" lazy_refcounts=on
	WM_PREP=wm_prep_bitmap WM_WHILE=wm_while_bitmap WM_AFTER=wm_after_bitmap \
		wmc "persistent bitmap in use while attached, intact after" cluster_size=64k
	WM_PREP=wm_prep_data wmc "--direct-io=off" cluster_size=64k --direct-io=off
	WM_PREP=wm_prep_snap WM_AFTER=wm_after_snap \
		wmc "--direct-io=off, snapshot, 4k clusters" cluster_size=4k --direct-io=off
	WM_WHILE=wm_while_tiny WM_TINY_RC=0 \
		wmc "4k clusters, refcount_bits=64, tiny caches" \
		cluster_size=4k,refcount_bits=64 --l2-cache-size=1 --refcount-cache-size=1
	WM_PREP=wm_prep_snap WM_AFTER=wm_after_snap WM_WHILE=wm_while_tiny \
		wmc "512-byte clusters, snapshot, tiny caches, --direct-io=off" \
		cluster_size=512,refcount_bits=64 --l2-cache-size=1 --refcount-cache-size=1 \
		--direct-io=off
	WM_PREP=wm_prep_big WM_AFTER=wm_after_big WM_BASES="0 $(((5 << 30) - (16 << 20)))" \
		wmc "5 GiB, 2M clusters, refcount_bits=64, tiny caches" \
		cluster_size=2M,refcount_bits=64 --l2-cache-size=1 --refcount-cache-size=1
	WM_PREP=wm_prep_data wmc "extended_l2 over qemu-img data" cluster_size=64k,extended_l2=on
	WM_PREP=wm_prep_data wmc "extended_l2, 16k clusters" cluster_size=16k,extended_l2=on
	WM_PREP=wm_prep_compressed wmc "extended_l2, overwriting compressed clusters" \
		cluster_size=64k,extended_l2=on
	# Six L2 tables of 16M each for a cache of at most four.
	WM_WHILE=wm_while_tiny WM_TINY_RC=0 WM_SIZE=96M \
		WM_BASES="0 $((16 << 20)) $((32 << 20)) $((48 << 20)) $((64 << 20)) $((80 << 20))" \
		wmc "extended_l2, 16k clusters, tiny caches" \
		cluster_size=16k,extended_l2=on --l2-cache-size=1 --refcount-cache-size=1
}

wm_default
[ -n "${QIMG_E2E_FULL:-}" ] && wm_full
