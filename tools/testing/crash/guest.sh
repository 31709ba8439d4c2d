#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the power-cut suite (run by ./run through qimg-vm, with
# qimg.ko loaded and a scratch disk that survives from one boot to the
# next).  One boot does, in this order:
#
#   verify (QIMG_CRASH_VERIFY="ITER KIND SEED CUT"): the previous boot was cut
#     off while iteration ITER was writing.  The scratch ext4 was e2fsck'ed
#     by the guest's init (QIMG_SCRATCH_FSCK); now qemu-img check and
#     qimgctl check must find the image consistent (leaks allowed) and
#     agree, every record made durable before the cut must read back intact
#     (qimg-crashrec verify, through the driver and through QEMU), and after
#     qimgctl check -r leaks both checkers must find it clean.
#   start (QIMG_CRASH_START="ITER KIND SEED CUT"): create an image of KIND,
#     attach it, run qimg-crashrec write on it, and once a few generations
#     are durable, cut the power: CUT sysrq: after a random delay, reset
#     the machine with sysrq-b (no sync, no unmount, writes in flight);
#     CUT kill: print QIMG-CRASH-ARMED ITER and keep writing until the
#     host kills QEMU (SIGKILL, at a random moment).  This never returns.
#   replay (QIMG_CRASH_REPLAY="KIND SEED POINTS[,KIND SEED POINTS...]"): see
#     replay() below, once per KIND.
#
# Every cut and every replayed crash state is one "crash point" test line.
#
# KIND: c64 (64 KiB clusters, O_DIRECT writers), c4 (4 KiB clusters,
# buffered writers), ovl (64 KiB-cluster overlay over a qcow2 backing file
# full of records), xovl (ovl with 512 KiB clusters and extended L2
# entries: 16 KiB subclusters, partly covered by the writers' 4 KiB
# records), j64 (c64 with the metadata journal), js (j64 with a
# 128 KiB journal, whose transactions are committed in parts; in the
# replay the inner ext4 discards what it deletes), grow (1 KiB clusters,
# the image grown online while attached: its L1 table outgrows its
# clusters and moves; in the replay the grow runs beside the file
# workload and the block records go into the new space), jgrow (grow
# with the metadata journal and 64-bit refcounts, so that the refcount
# table outgrows its cluster too).
#
# Env: QIMGCTL, QIMG_CRASH_REC (the qimg-crashrec binary), QIMG_CRASH_OUT
# (a directory on the read-write share: failing images are copied there),
# QIMG_CRASH_MIN_GENS (default 3) durable generations before the cut may
# come, QIMG_CRASH_MAX_DELAY (default 4) seconds of random delay after that.
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
. "$REPO/tools/testing/lib.sh"
# shellcheck source=SCRIPTDIR/../vm/klog.sh
. "$REPO/tools/testing/vm/klog.sh"

QIMGCTL=${QIMGCTL:-${QIMG_BUILD:-$REPO/build}/san/qimgctl}
REC=${QIMG_CRASH_REC:?}
OUT=${QIMG_CRASH_OUT:?}
MIN_GENS=${QIMG_CRASH_MIN_GENS:-3}
MAX_DELAY=${QIMG_CRASH_MAX_DELAY:-4}
SIZE=64M
# The replay's image: an ext4 below ROFF, block records above.
RSIZE=48M
ROFF=$((24 << 20))
TO=300

if [ "${QIMG_VM_MODULE_LOADED:-0}" != 1 ]; then
	t_fail "crash: qimg.ko is not loaded in the guest"
	t_done
	exit 1
fi
[ -d "${QIMG_SCRATCH:-}" ] || { t_fail "crash: no scratch disk"; t_done; exit 1; }
ROOT=$QIMG_SCRATCH/crash
mkdir -p "$ROOT"

# run CMD...: with a time limit, output shown (indented) only on failure.
run() {
	local out rc
	out=$(timeout "$TO" "$@" 2>&1)
	rc=$?
	[ $rc = 0 ] && return 0
	echo "#   FAILED (status $rc): $*"
	printf '%s\n' "$out" | tail -n 20 | sed 's/^/#     /'
	return $rc
}

attach() {
	local out
	DEV=
	out=$(timeout 60 "$QIMGCTL" attach "$@" 2>&1) || {
		echo "#   qimgctl attach $* failed: $out"
		return 1
	}
	DEV=$(printf '%s\n' "$out" | grep -o '/dev/qimg[0-9]\+' | head -n 1)
	[ -n "$DEV" ] || { echo "#   no device in: $out"; return 1; }
	for _ in $(seq 50); do
		[ -b "$DEV" ] && return 0
		sleep 0.1
	done
	echo "#   $DEV did not appear"
	return 1
}

# Incompatible bit 32 (journal dirty) of an image: 0 or 1.
jdirty() {
	echo $(( (16#$(od -An -tx1 -v -j 72 -N 8 "$1" | tr -d ' \n') >> 32) & 1 ))
}

# jreplay NAME IMG: a journal-dirty image is replayed by a read-write
# attach (the kernel's replay) and detached; qemu-img refuses it before.
jreplay() {
	local name=$1 img=$2 n0
	[ "$(jdirty "$img")" = 1 ] || { echo "journal clean (nothing committed since the last checkpoint)"; return 0; }
	if timeout "$TO" qemu-img check "$img" >/dev/null 2>&1; then
		echo "qemu-img check accepted a journal-dirty image"
		return 1
	fi
	n0=$(dmesg | wc -l)
	attach "$img" || { echo "read-write attach (journal replay) failed"; return 1; }
	run "$QIMGCTL" detach "$DEV" || return 1
	[ "$(jdirty "$img")" = 0 ] || { echo "still journal dirty after attach and detach"; return 1; }
	dmesg | tail -n +$((n0 + 1)) | grep -o 'journal replayed: [0-9]* transaction(s)' | head -n 1
}

# check_rc CHECKER IMG: the checker's exit status (0 clean, 3 leaks, ...);
# its output in $CHECK_OUT.
check_rc() {
	CHECK_OUT=$(timeout "$TO" "$@" 2>&1)
}

# ---------------------------------------------------------------------------
verify() {
	local iter=$1 kind=$2 seed=$3 cut=${4:-sysrq} dir name qrc crc rc3 ok=1 bopt=() raw out
	dir=$ROOT/$iter
	name="iter $iter ($kind, seed $seed)"
	verify_checks "$@" || ok=0
	# One crash point per cut, whatever the number of checks above.
	if [ $ok = 1 ]; then
		t_pass "crash point: $name, cut by $cut: all checks passed"
	else
		t_fail "crash point: $name, cut by $cut"
	fi
	[ $ok = 1 ]
}

verify_checks() {
	local iter=$1 kind=$2 seed=$3 dir name qrc crc rc3 ok=1 bopt=() raw out
	dir=$ROOT/$iter
	name="iter $iter ($kind, seed $seed)"
	[[ $kind == *ovl ]] && bopt=(-B $((seed + 1000000)))

	case ${QIMG_SCRATCH_FSCK:-x} in
	0 | 1)
		t_pass "$name: e2fsck of the scratch ext4 after the cut (status $QIMG_SCRATCH_FSCK)"
		# What it fixed (after a crash: journal replay, summary counts).
		grep -vE '^(e2fsck [0-9]|Pass [0-9]|/dev/vda: [0-9]+/|$)' \
			/run/qimg-vm/scratch-fsck.log 2>/dev/null | head -n 8 | sed 's/^/#   fsck: /'
		;;
	*)
		t_fail "$name: e2fsck of the scratch ext4 after the cut: status ${QIMG_SCRATCH_FSCK:-unknown}"
		sed 's/^/#   /' /run/qimg-vm/scratch-fsck.log 2>/dev/null | tail -n 20
		;;
	esac
	if [ ! -f "$dir/cut" ] || [ ! -f "$dir/img.qcow2" ]; then
		t_fail "$name: the previous boot did not reach the power cut (no $dir/cut)"
		return 1
	fi
	if [[ $kind == j* ]]; then
		if out=$(jreplay "$name" "$dir/img.qcow2" 2>&1); then
			t_pass "$name: journal after the cut: $out"
		else
			t_fail "$name: journal replay after the cut: $out"
			ok=0
		fi
	fi

	check_rc qemu-img check "$dir/img.qcow2"
	qrc=$?
	case $qrc in
	0 | 3) t_pass "$name: qemu-img check after the cut: status $qrc ($(printf '%s\n' "$CHECK_OUT" | grep -o '[0-9]* leaked clusters' || echo 'no leaks'))" ;;
	*)
		t_fail "$name: qemu-img check after the cut: status $qrc (2 = corruption)"
		printf '%s\n' "$CHECK_OUT" | head -n 30 | sed 's/^/#   /'
		ok=0
		;;
	esac
	check_rc "$QIMGCTL" check "$dir/img.qcow2"
	crc=$?
	if [ $crc = $qrc ]; then
		t_pass "$name: qimgctl check agrees with qemu-img check (status $crc)"
	else
		t_fail "$name: qimgctl check status $crc, qemu-img check $qrc"
		printf '%s\n' "$CHECK_OUT" | head -n 30 | sed 's/^/#   /'
		ok=0
	fi

	# What was durable before the cut, through the driver.
	if attach -r "$dir/img.qcow2"; then
		if out=$(timeout "$TO" "$REC" verify "${bopt[@]}" "$DEV" "$seed" "$dir/log" 2>&1); then
			t_pass "$name: durable records intact through qimg: ${out#*: }"
		else
			t_fail "$name: records lost or damaged through qimg"
			printf '%s\n' "$out" | sed 's/^/#   /'
			ok=0
		fi
		# The driver and QEMU must read the same bytes.
		raw=$ROOT/raw.$iter
		if run qemu-img convert -O raw "$dir/img.qcow2" "$raw" &&
			run cmp "$DEV" "$raw"; then
			t_pass "$name: qimg reads the same bytes as qemu-img convert"
		else
			t_fail "$name: qimg and qemu-img read different bytes"
			ok=0
		fi
		rm -f "$raw"
		run "$QIMGCTL" detach "$DEV" || ok=0
	else
		t_fail "$name: read-only attach after the cut"
		ok=0
	fi

	if [ $ok = 0 ]; then
		# Keep the evidence before the repair touches it.
		mkdir -p "$OUT"
		cp -r --sparse=always "$dir" "$OUT/fail-$iter-$kind" &&
			echo "# $name: image, backing file and log copied to $OUT/fail-$iter-$kind"
	fi

	check_rc "$QIMGCTL" check -r leaks "$dir/img.qcow2"
	crc=$?
	check_rc qemu-img check "$dir/img.qcow2"
	qrc=$?
	local out2=$CHECK_OUT
	check_rc "$QIMGCTL" check "$dir/img.qcow2"
	rc3=$?
	if [ $crc = 0 ] && [ $qrc = 0 ] && [ $rc3 = 0 ]; then
		t_pass "$name: clean after qimgctl check -r leaks"
	else
		t_fail "$name: after qimgctl check -r leaks (status $crc): qemu-img check $qrc, qimgctl check $rc3"
		printf '%s\n%s\n' "$out2" "$CHECK_OUT" | head -n 30 | sed 's/^/#   /'
		ok=0
	fi
	[ $ok = 1 ] && rm -rf "$dir"
	[ $ok = 1 ]
}

# ---------------------------------------------------------------------------
start() {
	local iter=$1 kind=$2 seed=$3 cut=${4:-sysrq} dir name wopts=() cs=65536 bk=() n delay i
	local jopt=() xo='' csize=$SIZE
	dir=$ROOT/$iter
	name="iter $iter ($kind, seed $seed)"
	rm -rf "$dir"
	mkdir -p "$dir"
	case $kind in
	c64) wopts=(-t 4) ;;
	j64) wopts=(-t 4) jopt=(--journal=on) ;;
	js) wopts=(-t 4) jopt=(--journal=on --journal-size=128K) ;;
	c4) cs=4096 wopts=(-t 2 -b) ;;
	grow | jgrow)
		cs=1024 wopts=(-t 4) csize=$((${SIZE%M} / 2))M
		[ "$kind" = jgrow ] && jopt=(--journal=on) xo=,refcount_bits=64
		;;
	ovl | xovl)
		wopts=(-t 4)
		[ "$kind" = xovl ] && cs=524288 xo=,extended_l2=on
		if ! run truncate -s $SIZE "$dir/base.raw" ||
			! run "$REC" fill "$dir/base.raw" $((seed + 1000000)) ||
			! run qemu-img convert -O qcow2 -o cluster_size=65536 \
				"$dir/base.raw" "$dir/base.qcow2"; then
			t_fail "$name: make the backing file"
			return 1
		fi
		rm -f "$dir/base.raw"
		bk=(-b "$dir/base.qcow2" -F qcow2)
		;;
	*) t_fail "$name: unknown kind"; return 1 ;;
	esac
	# A growing kind starts at half the size and grows once attached.
	if ! run "$QIMGCTL" create -o cluster_size=$cs$xo "${bk[@]}" "$dir/img.qcow2" "$csize"; then
		t_fail "$name: qimgctl create"
		return 1
	fi
	# Everything made so far must survive the cut (qemu-img does not
	# fsync what it writes; a backing file lost with the power would
	# look like lost data in the overlay).
	sync "$dir"/* "$dir"
	attach "${jopt[@]}" "$dir/img.qcow2" || { t_fail "$name: attach"; return 1; }
	if [ "$csize" != $SIZE ] && ! run "$QIMGCTL" resize "$DEV" $SIZE; then
		t_fail "$name: online grow from $csize to $SIZE"
		return 1
	fi

	"$REC" write "${wopts[@]}" "$DEV" "$seed" "$dir/log" &
	local wpid=$!
	# Enough durable generations that the check means something, then a
	# random delay so the cut lands anywhere in a generation.
	for ((i = 0; i < 1200; i++)); do
		n=0
		[ -f "$dir/log" ] && n=$(wc -l <"$dir/log")
		[ "$n" -ge "$MIN_GENS" ] && break
		kill -0 $wpid 2>/dev/null || break
		sleep 0.1
	done
	RANDOM=$seed
	delay=$((RANDOM % (MAX_DELAY * 10 + 1)))
	# A kill from the host comes after a delay of the host's own.
	[ "$cut" = kill ] && delay=0
	sleep "$((delay / 10)).$((delay % 10))"
	if ! kill -0 $wpid 2>/dev/null; then
		wait $wpid
		t_fail "$name: the writer died before the cut (status $?, $(wc -l <"$dir/log") generations)"
		return 1
	fi
	n=$(wc -l <"$dir/log")
	# The marker is fsynced on its own: a global sync would flush the
	# qimg device too, which is exactly what must not happen here.
	echo "cut after $n durable generations, delay $delay/10 s" >"$dir/cut"
	sync "$dir/cut" "$dir"
	dmesg >"$ROOT/dmesg.$iter"
	if bad=$(klog_scan "$ROOT/dmesg.$iter"); then
		t_fail "$name: kernel log problems while writing"
		printf '%s\n' "$bad" | head -n 20 | sed 's/^/#   /'
	elif [ "$cut" = kill ]; then
		t_pass "$name: $n generations durable, QEMU to be killed by the host"
	else
		t_pass "$name: $n generations durable, power cut $((delay / 10)).$((delay % 10)) s later"
	fi
	# This boot never reaches the guest's own log dump: send it now, in
	# qimg-vm's markers, so the host scans it like any other guest's.
	echo "QIMG-VM-DMESG-BEGIN"
	cat "$ROOT/dmesg.$iter"
	echo "QIMG-VM-DMESG-END"
	rm -f "$ROOT/dmesg.$iter"
	if [ "$cut" = kill ]; then
		# The host kills QEMU (SIGKILL) at a random moment from now
		# on, the writer still running.
		echo "QIMG-CRASH-ARMED $iter"
		sleep 120
		t_fail "$name: QEMU was not killed"
		return 1
	fi
	echo "QIMG-CRASH-CUT $iter"
	# Let the console drain: the host needs the lines above.
	sleep 1
	echo b >/proc/sysrq-trigger
	sleep 30
	t_fail "$name: sysrq-b did not reset the machine"
	return 1
}

# ---------------------------------------------------------------------------
# replay KIND SEED POINTS: the power cut with a volatile write cache, which
# a reset of the guest cannot show (QEMU completed every write it was
# given).  The outer ext4 holding the images sits on dm-log-writes, which
# records every write and flush in completion order on a device of its own
# (a loop device apart from the data one: nothing the writers fsync lands
# on it).  One image of KIND on it, split in two: its first half holds an
# inner ext4 with qimg-crashrec's file workload (creates, overwrites,
# fsync, rename, delete), the second half qimg-crashrec's block records
# (O_DIRECT; every fourth generation RWF_DSYNC, i.e. FUA writes), both
# writers at the same time.  Each writer appends "durable N" to its log on the outer fs
# once step N is durable: the manifest of what must be there, as of any
# point of the write log.  The writers run to the end; then POINTS crash
# states are rebuilt from the log and checked:
#   - a prefix at every FLUSH and FUA entry while writing (when they are
#     at most 3/4 of POINTS, else at POINTS/2 of them, evenly spread): the
#     disk with every write up to there, in order;
#   - the rest at random entries: writes up to the last flush before, then
#     a random part of the ones after it, FUA ones always (lost writes).
# The replica is brought forward from one point to the next (points in
# increasing order, qimg-crashrec replay -f), never rewritten from the
# start; each point is checked on a dm-snapshot of it, so the checks'
# own writes (journal replays, mounts) vanish with the snapshot, and
# QIMG_CRASH_REPLAY_JOBS (default 2) points at a time.  A point
# passes if the outer ext4 mounts, the image attaches (read-write: the
# journal replay for a journaled KIND), every durable record reads back,
# the inner ext4 mounts and holds what was fsynced, e2fsck -fn finds it
# clean, and after detach qemu-img check exits 0 (journaled KIND: leaks
# are not allowed) or 3 (leaks; without the journal).  Each point is one
# "crash point" test line.
#
# A growing KIND (grow, jgrow) makes the image only as large as the inner
# ext4 (ROFF) and, at a moment derived from SEED while the file workload
# runs, grows it online to RSIZE, appends "grown" to grow.log on the
# outer fs (fsynced), and only then starts the block writer in the new
# space.  At each point the image must have the old size with nothing
# durable past it, or the new size with the records; "grown" in grow.log
# means the new size must have survived.  The grow lies between the marks
# "grow" and "grown" of the write log: its FLUSH/FUA entries (up to a
# third of POINTS) and two random entries in it are points of their own.
replay() {
	local kind=$1 seed=$2 points=$3 name lw=$ROOT/lw dm data logd gsize=
	local cs=65536 xo="" bopt=() bk=() list first last ok=1 jopt=() mopt=() e
	local mnt=/mnt/crash-lw inner=/mnt/crash-in idev img=/mnt/crash-lw/img.qcow2
	name="replay ($kind, seed $seed)"
	export DM_DISABLE_UDEV=1
	modprobe -q dm-log-writes 2>/dev/null
	modprobe -q dm-snapshot 2>/dev/null
	rm -rf "$lw"
	mkdir -p "$lw" "$mnt" "$inner"
	if ! truncate -s 512M "$lw/data" "$lw/replica" || ! truncate -s 1G "$lw/log" "$lw/cow"; then
		t_fail "$name: scratch files"
		return 1
	fi
	if ! data=$(losetup -f --show "$lw/data") || ! logd=$(losetup -f --show "$lw/log"); then
		t_fail "$name: losetup"
		return 1
	fi
	if ! run dmsetup create --noudevsync crashlw --table \
		"0 $(blockdev --getsz "$data") log-writes $data $logd"; then
		t_fail "$name: dm-log-writes target"
		losetup -d "$data" "$logd"
		return 1
	fi
	dm=/dev/$(dmsetup info -c --noheadings -o blkdevname crashlw | tr -d ' ')
	run mkfs.ext4 -q -E nodiscard "$dm" && run mount -t ext4 "$dm" "$mnt" || ok=0
	case $kind in
	c4) cs=4096 ;;
	# A small journal (transactions committed in parts) under an inner
	# ext4 that discards what it deletes (frees in those transactions).
	js) jopt=(--journal=on --journal-size=128K) mopt=(-o discard) ;;
	grow | jgrow)
		cs=1024 gsize=$ROFF
		[ "$kind" = jgrow ] && jopt=(--journal=on) xo=,refcount_bits=64
		;;
	j*) jopt=(--journal=on) ;;
	ovl | xovl)
		# The backing file is not written to: it lives outside.
		[ "$kind" = xovl ] && cs=524288 xo=,extended_l2=on
		bopt=(-B $((seed + 1000000)))
		run truncate -s "$RSIZE" "$lw/base.raw" &&
			run "$REC" fill -o "$ROFF" "$lw/base.raw" $((seed + 1000000)) &&
			run qemu-img convert -O qcow2 "$lw/base.raw" "$lw/base.qcow2" || ok=0
		rm -f "$lw/base.raw"
		bk=(-b "$lw/base.qcow2" -F qcow2)
		;;
	esac
	# One small image (every point reads its raw half back): the inner
	# ext4 on the first half, block records from ROFF on.
	[ $ok = 1 ] && run "$QIMGCTL" create -o cluster_size=$cs$xo "${bk[@]}" "$img" \
		"${gsize:-$RSIZE}" &&
		attach "${jopt[@]}" "$img" && idev=$DEV &&
		run mkfs.ext4 -q -E nodiscard "$idev" $((ROFF / 1024))k &&
		run mount -t ext4 "${mopt[@]}" "$idev" "$inner" &&
		mkdir "$inner/d" && touch "$mnt/raw.log" "$mnt/fs.log" "$mnt/grow.log" || ok=0
	if [ $ok = 1 ]; then
		# Everything so far durable: the points start from here.
		sync
		run dmsetup message crashlw 0 mark start
		local wcmd=("$REC" write -t 4 -n "${QIMG_CRASH_REPLAY_GENS:-12}" -o "$ROFF"
			"$idev" "$seed" "$mnt/raw.log")
		if [ -n "$gsize" ]; then
			# The grow 0 to 0.9 s into the file workload.
			local gd=$((seed % 10))
			(
				sleep "$((gd / 10)).$((gd % 10))"
				dmsetup message crashlw 0 mark grow || exit 1
				"$QIMGCTL" resize "$idev" "$RSIZE" || exit 1
				echo grown >>"$mnt/grow.log" && sync "$mnt/grow.log" || exit 1
				dmsetup message crashlw 0 mark grown || exit 1
				exec "${wcmd[@]}"
			) >"$lw/raw.out" 2>&1 &
		else
			"${wcmd[@]}" >"$lw/raw.out" 2>&1 &
		fi
		local wpid=$!
		run "$REC" fswrite -n "${QIMG_CRASH_REPLAY_OPS:-40}" "$inner/d" "$seed" "$mnt/fs.log" || ok=0
		wait $wpid || { ok=0; sed 's/^/#   raw writer: /' "$lw/raw.out"; }
		run umount "$inner" || ok=0
		run "$QIMGCTL" detach "$idev" || ok=0
		run dmsetup message crashlw 0 mark end
	fi
	umount "$mnt" 2>/dev/null
	run dmsetup remove --noudevsync crashlw
	losetup -d "$data" "$logd"
	rm -f "$lw/data"
	if [ $ok = 0 ]; then
		t_fail "$name: could not run the writers on dm-log-writes"
		return 1
	fi
	list=$("$REC" replay -l "$lw/log") || { t_fail "$name: read the write log"; return 1; }
	first=$(printf '%s\n' "$list" | awk '$2 == "mark" && $3 == "start" {print $1}')
	last=$(printf '%s\n' "$list" | awk '$2 == "mark" && $3 == "end" {print $1}')
	if [ -z "$first" ] || [ -z "$last" ]; then
		t_fail "$name: no start or end mark in the write log"
		return 1
	fi
	# FLUSH and FUA entries while writing: "ENTRY OFFSET", and the flushes
	# alone.  (No process substitution: the guest has no /dev/fd.)
	local durable=() flushes=() nd
	mapfile -t durable <<<"$(printf '%s\n' "$list" | awk -v f="$first" -v l="$last" \
		'($2 == "flush" || $2 == "fua") && $1 > f && $1 < l {print $1, $3}')"
	[ -n "${durable[0]}" ] || durable=()
	mapfile -t flushes <<<"$(printf '%s\n' "$list" | awk -v f="$first" -v l="$last" \
		'$2 == "flush" && $1 > f && $1 < l {print $1, $3}')"
	[ -n "${flushes[0]}" ] || flushes=()
	nd=${#durable[@]}
	if [ ${#flushes[@]} -eq 0 ]; then
		t_fail "$name: no flush in the write log while writing ($(printf '%s\n' "$list" | awk '$1 == "entries" {print $2}') entries)"
		return 1
	fi
	echo "# $name: $(printf '%s\n' "$list" | awk '$1 == "entries" {print $2}') entries logged, $nd FLUSH/FUA entries (${#flushes[@]} flushes) while writing"

	# The points, "ENTRY MODE" sorted by entry: prefix points at
	# FLUSH/FUA entries, the rest random (lost writes after the last
	# flush).
	local np nr i pts=() p g0 g1 gfl=() ng
	RANDOM=$seed
	if [ -n "$gsize" ]; then
		# The grow first: every FLUSH/FUA entry while it ran (at most
		# a third of the points, evenly spread) and two random points
		# in it.
		g0=$(printf '%s\n' "$list" | awk '$2 == "mark" && $3 == "grow" {print $1}')
		g1=$(printf '%s\n' "$list" | awk '$2 == "mark" && $3 == "grown" {print $1}')
		if [ -z "$g0" ] || [ -z "$g1" ]; then
			t_fail "$name: no grow marks in the write log"
			return 1
		fi
		mapfile -t gfl <<<"$(printf '%s\n' "${durable[@]}" | awk -v f="$g0" -v l="$g1" \
			'$1 > f && $1 < l {print $1}')"
		[ -n "${gfl[0]}" ] || gfl=()
		echo "# $name: the grow is entries $g0 to $g1, ${#gfl[@]} FLUSH/FUA entries"
		ng=${#gfl[@]}
		[ "$ng" -gt $((points / 3)) ] && ng=$((points / 3))
		for ((i = 0; i < ng; i++)); do
			pts+=("${gfl[$((i * ${#gfl[@]} / ng))]} prefix")
		done
		for ((i = 0; i < 2 && g1 - g0 > 1; i++)); do
			pts+=("$((g0 + 1 + RANDOM % (g1 - g0 - 1))) random")
		done
		points=$((points - ${#pts[@]}))
	fi
	# Every FLUSH/FUA entry if they fit in 3/4 of the points, else half
	# the points on them, evenly spread.
	np=$nd
	[ "$nd" -gt $((points * 3 / 4)) ] && np=$((points - points / 2))
	nr=$((points - np))
	for ((i = 0; i < np; i++)); do
		pts+=("${durable[$((i * nd / np))]%% *} prefix")
	done
	for ((i = 0; i < nr; i++)); do
		pts+=("$((first + 1 + (RANDOM * 32768 + RANDOM) % (last - first - 1))) random")
	done
	mapfile -t pts <<<"$(printf '%s\n' "${pts[@]}" | sort -u -k1,1n -k2,2)"
	points=${#pts[@]}

	# The replica (the base of every point's snapshot) holds entries
	# 0..NEXT-1; NOFF is the byte offset of entry NEXT in the log.  JOBS
	# points at a time, each on a snapshot of its own (the guest has two
	# CPUs); a point past the replica gets the rest on its snapshot.
	local next=0 noff=0 rb out rbsz jobs=${QIMG_CRASH_REPLAY_JOBS:-2} cws=() j
	[[ $jobs =~ ^[1-8]$ ]] || jobs=2
	if ! rb=$(losetup -f --show -r "$lw/replica") || ! rbsz=$(blockdev --getsz "$rb"); then
		t_fail "$name: losetup replica"
		return 1
	fi
	for ((j = 0; j < jobs; j++)); do
		truncate -s 1G "$lw/cow.$j"
		cws[j]=$(losetup -f --show "$lw/cow.$j") || { t_fail "$name: losetup cow"; return 1; }
	done
	local pn i ft pids=() res what
	for ((i = 0; i < ${#pts[@]}; i += jobs)); do
		# The replica up to what the first point of the batch keeps.
		ft=$(full_to "${pts[$i]}")
		if [ "$ft" -ge "$next" ]; then
			if out=$("$REC" replay -f "$next:$noff" "$lw/log" "$lw/replica" "$ft"); then
				next=$((ft + 1))
				noff=${out##* }
			else
				t_fail "$name: replay to entry $ft: $out"
				ok=0
				break
			fi
		fi
		for ((j = 0; j < jobs && i + j < ${#pts[@]}; j++)); do
			replay_point "$kind" "$seed" "${pts[$((i + j))]}" $((i + j + 1)) "$j" \
				>"$lw/res.$j" 2>&1 &
			pids[j]=$!
		done
		for ((j = 0; j < jobs && i + j < ${#pts[@]}; j++)); do
			wait "${pids[$j]}"
			rc=$?
			pn=$((i + j + 1))
			res=$lw/res.$j
			p=${pts[$((i + j))]}
			what="crash point $pn/$points: $name: entry ${p%% *} (${p#* }"
			what+="$(sed -n 's/^KEPT //p' "$res" | tr -d '\n'))"
			grep '^# ' "$res"
			if [ $rc = 0 ]; then
				t_pass "$what: $(sed -n 's/^MSG //p' "$res" | tr '\n' ' ')"
			else
				t_fail "$what"
				sed -n 's/^MSG /#   /p' "$res"
				grep -vE '^(MSG|KEPT|BASE|# ) ?' "$res" | head -n 20 | sed 's/^/#   | /'
				ok=0
				mkdir -p "$OUT"
				[ -f "$OUT/replay-$kind-$seed.dmlog" ] ||
					cp --sparse=always "$lw/log" "$OUT/replay-$kind-$seed.dmlog" 2>/dev/null
				local base
				base=$(sed -n 's/^BASE //p' "$res")
				if [ "${p#* }" = random ]; then
					echo "#   rebuild: qimg-crashrec replay LOG DISK $base; qimg-crashrec replay -s $((seed + pn)) -f $((base + 1)) LOG DISK ${p%% *} (LOG: $OUT/replay-$kind-$seed.dmlog, DISK: a 512M file)"
				else
					echo "#   rebuild: qimg-crashrec replay LOG DISK ${p%% *} (LOG: $OUT/replay-$kind-$seed.dmlog, DISK: a 512M file)"
				fi
			fi
		done
	done
	losetup -d "$rb" "${cws[@]}"
	[ $ok = 1 ] && rm -rf "$lw"
	[ $ok = 1 ]
}

# full_to "ENTRY MODE": the last entry of the log a point keeps for sure:
# itself (a prefix point), or the last flush before it (a random one; -1:
# none).  Reads flushes[].
full_to() {
	local e=${1%% *} f fl=-1
	if [ "${1#* }" = prefix ]; then
		echo "$e"
		return
	fi
	for f in "${flushes[@]}"; do
		[ "${f%% *}" -lt "$e" ] || break
		fl=${f%% *}
	done
	echo "$fl"
}

# tick WHAT: with QIMG_CRASH_PROFILE=1, the time since the last tick is
# added to PROF (printed after each point).
tick() {
	[ "${QIMG_CRASH_PROFILE:-0}" = 1 ] || return 0
	local now=$EPOCHREALTIME
	PROF+=" $1 $(awk -v a="$TICK" -v b="$now" 'BEGIN { printf "%.2f", b - a }')"
	TICK=$now
}

# replay_point KIND SEED "ENTRY MODE" N SLOT: one crash state on a
# snapshot of the replica ($rb, copy-on-write to cws[SLOT]), the entries
# past the replica (NEXT on, byte NOFF) applied to the snapshot.  Prints
# "MSG finding" lines, "KEPT , K of M kept after entry B" for a random
# point, "BASE B" (every write up to entry B kept), and profile comments;
# status 0 if the point passed.
replay_point() {
	local kind=$1 seed=$2 e=${3%% *} mode=${3#* } pn=$4 slot=$5 snap sdev out rc qrc
	local mnt=/mnt/crash-lw$slot inner=/mnt/crash-in$slot img ft n2=$next o2=$noff
	local pok=1 msgs=() t0=$EPOCHREALTIME
	img=$mnt/img.qcow2
	mkdir -p "$mnt" "$inner"
	snap=crashsnap$slot
	PROF='' TICK=$EPOCHREALTIME
	# (Without udev, dmsetup makes the /dev/mapper node itself.)
	sdev=/dev/mapper/$snap
	if ! run dmsetup create --noudevsync "$snap" --table "0 $rbsz snapshot $rb ${cws[$slot]} N 8" ||
		! [ -b "$sdev" ]; then
		echo "MSG dm-snapshot of the replica failed"
		return 1
	fi
	tick snap
	ft=$(full_to "$3")
	if [ "$ft" -ge "$n2" ]; then
		if out=$("$REC" replay -f "$n2:$o2" "$lw/log" "$sdev" "$ft"); then
			n2=$((ft + 1))
			o2=${out##* }
		else
			msgs+=("replay to entry $ft failed: $out")
			pok=0
		fi
	fi
	echo "BASE $((n2 - 1))"
	if [ "$mode" = random ] && [ "$e" -ge "$n2" ] && [ $pok = 1 ]; then
		if out=$("$REC" replay -s $((seed + pn)) -f "$n2:$o2" "$lw/log" "$sdev" "$e"); then
			echo "KEPT , ${out%%;*} after entry $((n2 - 1))"
		else
			msgs+=("random replay to entry $e failed: $out")
			pok=0
		fi
	fi
	tick tail
	if [ $pok = 1 ] && run mount -t ext4 "$sdev" "$mnt"; then
		tick mount
		if [ ! -f "$img" ]; then
			pok=0
			msgs+=("no image")
		elif ! attach "$img"; then
			pok=0
			msgs+=("read-write attach (journal replay) failed")
		else
			tick attach
			local dsz
			dsz=$(blockdev --getsize64 "$DEV")
			if [ -n "$gsize" ] && [ "$dsz" = "$gsize" ]; then
				# Not grown: nothing past the old end was durable.
				if grep -q '^grown' "$mnt/grow.log"; then
					pok=0
					msgs+=("size: $dsz bytes, but the online grow to $RSIZE was durable")
				elif grep -q '^durable' "$mnt/raw.log"; then
					pok=0
					msgs+=("size: $dsz bytes, but block records past it were durable")
				else
					msgs+=("raw: not grown yet ($dsz bytes);")
				fi
			elif [ -n "$gsize" ] && [ "$dsz" != $((${RSIZE%M} << 20)) ]; then
				pok=0
				msgs+=("size: $dsz bytes, neither $gsize nor $RSIZE")
			elif out=$("$REC" verify "${bopt[@]}" -o "$ROFF" "$DEV" "$seed" "$mnt/raw.log" 2>&1); then
				msgs+=("raw: ${out#*: };")
			else
				pok=0
				msgs+=("raw: $(printf '%s' "$out" | head -n 8)")
			fi
			tick verify
			if run mount -t ext4 "$DEV" "$inner"; then
				if out=$("$REC" fsverify "$inner/d" "$seed" "$mnt/fs.log" 2>&1); then
					msgs+=("fs: ${out#*: };")
				else
					pok=0
					msgs+=("fs: $(printf '%s' "$out" | head -n 8)")
				fi
				tick fsverify
				run umount "$inner" || pok=0
				tick umount-in
				out=$(e2fsck -fn "$DEV" 2>&1) || {
					pok=0
					msgs+=("fs: e2fsck -fn: $(printf '%s' "$out" | head -n 12)")
				}
			else
				pok=0
				msgs+=("fs: mount of the inner ext4 failed")
			fi
			tick e2fsck
			run "$QIMGCTL" detach "$DEV" || pok=0
			tick detach
			check_rc qemu-img check "$img"
			qrc=$?
			if [ $qrc = 0 ] || { [ $qrc = 3 ] && [[ $kind != j* ]]; }; then
				[ $qrc = 0 ] || msgs+=("$(printf '%s\n' "$CHECK_OUT" | grep -o '[0-9]* leaked clusters');")
			else
				pok=0
				msgs+=("qemu-img check status $qrc: $(printf '%s' "$CHECK_OUT" | head -n 5 | tr '\n' ' ')")
			fi
			tick qemu-img
		fi
		run umount "$mnt" || pok=0
	elif [ $pok = 1 ]; then
		pok=0
		msgs+=("mount of the outer ext4 failed")
	fi
	rc=0
	run dmsetup remove --noudevsync "$snap" || rc=1
	tick umount-remove
	[ -n "$PROF" ] && echo "# profile:$PROF"
	[ ${#msgs[@]} -gt 0 ] && printf 'MSG %s\n' "${msgs[@]}"
	echo "KEPT , $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
	[ $pok = 1 ] && [ $rc = 0 ] || return 1
}

if [ -n "${QIMG_CRASH_VERIFY:-}" ]; then
	# shellcheck disable=SC2086
	verify $QIMG_CRASH_VERIFY
fi
if [ -n "${QIMG_CRASH_REPLAY:-}" ]; then
	IFS=, read -r -a reps <<<"$QIMG_CRASH_REPLAY"
	for r in "${reps[@]}"; do
		# shellcheck disable=SC2086
		replay $r
	done
fi
if [ -n "${QIMG_CRASH_START:-}" ]; then
	# shellcheck disable=SC2086
	start $QIMG_CRASH_START
fi
t_done
