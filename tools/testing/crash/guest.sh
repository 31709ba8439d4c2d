#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the power-cut suite (run by ./run through qimg-vm, with
# qimg.ko loaded and a scratch disk that survives from one boot to the
# next).  One boot does, in this order:
#
#   verify (QIMG_CRASH_VERIFY="ITER KIND SEED"): the previous boot was cut
#     off while iteration ITER was writing.  The scratch ext4 was e2fsck'ed
#     by the guest's init (QIMG_SCRATCH_FSCK); now qemu-img check and
#     qimgctl check must find the image consistent (leaks allowed) and
#     agree, every record made durable before the cut must read back intact
#     (qimg-crashrec verify, through the driver and through QEMU), and after
#     qimgctl check -r leaks both checkers must find it clean.
#   start (QIMG_CRASH_START="ITER KIND SEED"): create an image of KIND,
#     attach it, run qimg-crashrec write on it, and once a few generations
#     are durable, after a random delay, reset the machine with sysrq-b:
#     no sync, no unmount, writes in flight.  This never returns.
#
# KIND: c64 (64 KiB clusters, O_DIRECT writers), c4 (4 KiB clusters,
# buffered writers), ovl (64 KiB-cluster overlay over a qcow2 backing file
# full of records).
#
# Env: QIMGCTL, QIMG_CRASH_REC (the qimg-crashrec binary), QIMG_CRASH_OUT
# (a directory on the read-write share: failing images are copied there),
# QIMG_CRASH_MIN_GENS (default 3) durable generations before the cut may
# come, QIMG_CRASH_MAX_DELAY (default 4) seconds of random delay after that.
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
. "$REPO/tools/testing/lib.sh"
# shellcheck source=../vm/klog.sh
. "$REPO/tools/testing/vm/klog.sh"

QIMGCTL=${QIMGCTL:-${QIMG_BUILD:-$REPO/build}/san/qimgctl}
REC=${QIMG_CRASH_REC:?}
OUT=${QIMG_CRASH_OUT:?}
MIN_GENS=${QIMG_CRASH_MIN_GENS:-3}
MAX_DELAY=${QIMG_CRASH_MAX_DELAY:-4}
SIZE=64M
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
	local iter=$1 kind=$2 seed=$3 dir name qrc crc rc3 ok=1 bopt=() raw out
	dir=$ROOT/$iter
	name="iter $iter ($kind, seed $seed)"
	[ "$kind" = ovl ] && bopt=(-B $((seed + 1000000)))

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
	local iter=$1 kind=$2 seed=$3 dir name wopts=() cs=65536 bk=() n delay i
	local jopt=()
	dir=$ROOT/$iter
	name="iter $iter ($kind, seed $seed)"
	rm -rf "$dir"
	mkdir -p "$dir"
	case $kind in
	c64) wopts=(-t 4) ;;
	j64) wopts=(-t 4) jopt=(--journal=on) ;;
	c4) cs=4096 wopts=(-t 2 -b) ;;
	ovl)
		wopts=(-t 4)
		run truncate -s $SIZE "$dir/base.raw" &&
			run "$REC" fill "$dir/base.raw" $((seed + 1000000)) &&
			run qemu-img convert -O qcow2 -o cluster_size=65536 \
				"$dir/base.raw" "$dir/base.qcow2" || {
			t_fail "$name: make the backing file"
			return 1
		}
		rm -f "$dir/base.raw"
		bk=(-b "$dir/base.qcow2" -F qcow2)
		;;
	*) t_fail "$name: unknown kind"; return 1 ;;
	esac
	if ! run "$QIMGCTL" create -o cluster_size=$cs "${bk[@]}" "$dir/img.qcow2" $SIZE; then
		t_fail "$name: qimgctl create"
		return 1
	fi
	# Everything made so far must survive the cut (qemu-img does not
	# fsync what it writes; a backing file lost with the power would
	# look like lost data in the overlay).
	sync "$dir"/* "$dir"
	attach "${jopt[@]}" "$dir/img.qcow2" || { t_fail "$name: attach"; return 1; }

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
	else
		t_pass "$name: $n generations durable, power cut $((delay / 10)).$((delay % 10)) s later"
	fi
	# This boot never reaches the guest's own log dump: send it now, in
	# qimg-vm's markers, so the host scans it like any other guest's.
	echo "QIMG-VM-DMESG-BEGIN"
	cat "$ROOT/dmesg.$iter"
	echo "QIMG-VM-DMESG-END"
	rm -f "$ROOT/dmesg.$iter"
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
# given).  The ext4 holding the image sits on dm-log-writes, which records
# every write and flush in completion order; the writer runs to the end;
# then for POINTS flush points, a replica disk is rebuilt as it would be
# after a power cut right after that flush with a random part of the
# writes that followed it lost (qimg-crashrec replay), and checked like a
# cut boot: e2fsck, both image checkers, the durable records.
replay() {
	local kind=$1 seed=$2 points=$3 name lw=$ROOT/lw dm data logd rep
	local cs=65536 bopt=() bk=() list nflush first p e ok=1 out flushes
	local mnt=/mnt/crash-lw img rc qrc crc jopt=() jout
	name="replay ($kind, seed $seed)"
	export DM_DISABLE_UDEV=1
	modprobe -q dm-log-writes 2>/dev/null
	rm -rf "$lw"
	mkdir -p "$lw" "$mnt"
	truncate -s 512M "$lw/data" "$lw/replica" && truncate -s 1G "$lw/log" || {
		t_fail "$name: scratch files"
		return 1
	}
	data=$(losetup -f --show "$lw/data") && logd=$(losetup -f --show "$lw/log") || {
		t_fail "$name: losetup"
		return 1
	}
	if ! run dmsetup create --noudevsync crashlw --table \
		"0 $(blockdev --getsz "$data") log-writes $data $logd"; then
		t_fail "$name: dm-log-writes target"
		losetup -d "$data" "$logd"
		return 1
	fi
	dm=/dev/$(dmsetup info -c --noheadings -o blkdevname crashlw | tr -d ' ')
	img=$mnt/img.qcow2
	run mkfs.ext4 -q -E nodiscard "$dm" && run mount -t ext4 "$dm" "$mnt" || ok=0
	case $kind in
	c4) cs=4096 ;;
	j64) jopt=(--journal=on) ;;
	ovl)
		# The backing file is not written to: it lives outside.
		bopt=(-B $((seed + 1000000)))
		run truncate -s $SIZE "$lw/base.raw" &&
			run "$REC" fill "$lw/base.raw" $((seed + 1000000)) &&
			run qemu-img convert -O qcow2 "$lw/base.raw" "$lw/base.qcow2" || ok=0
		rm -f "$lw/base.raw"
		bk=(-b "$lw/base.qcow2" -F qcow2)
		;;
	esac
	[ $ok = 1 ] && run "$QIMGCTL" create -o cluster_size=$cs "${bk[@]}" "$img" $SIZE &&
		run sync -f "$mnt" && attach "${jopt[@]}" "$img" || ok=0
	if [ $ok = 1 ]; then
		run dmsetup message crashlw 0 mark start
		run "$REC" write -t 4 -n "${QIMG_CRASH_REPLAY_GENS:-12}" "$DEV" "$seed" "$mnt/log" || ok=0
		run "$QIMGCTL" detach "$DEV" || ok=0
	fi
	umount "$mnt" 2>/dev/null
	run dmsetup message crashlw 0 mark end
	run dmsetup remove --noudevsync crashlw
	losetup -d "$data" "$logd"
	if [ $ok = 0 ]; then
		t_fail "$name: could not run the writer on dm-log-writes"
		return 1
	fi
	list=$("$REC" replay -l "$lw/log") || { t_fail "$name: read the write log"; return 1; }
	first=$(printf '%s\n' "$list" | awk '$2 == "mark" && $3 == "start" {print $1}')
	# Flush points after the writer started (the image exists there).
	# (No process substitution: the guest has no /dev/fd.)
	mapfile -t flushes <<<"$(printf '%s\n' "$list" | awk -v f="$first" '$2 == "flush" && $1 > f {print $1}')"
	[ -n "${flushes[0]}" ] || flushes=()
	nflush=${#flushes[@]}
	# No flush point: nothing to replay, and a writer that never flushed
	# is a failure of its own (the data it wrote was never made durable).
	if [ "$nflush" -eq 0 ]; then
		t_fail "$name: no flush point in the write log after the writer started ($(printf '%s\n' "$list" | awk '$1 == "entries" {print $2}') writes logged)"
		return 1
	fi
	t_pass "$name: $(printf '%s\n' "$list" | awk '$1 == "entries" {print $2}') writes logged, $nflush flushes while writing"
	RANDOM=$seed
	for ((p = 0; p < points; p++)); do
		e=${flushes[$((p * nflush / points + RANDOM % (nflush / points + 1)))]:-${flushes[$((nflush - 1))]}}
		rm -f "$lw/replica"
		truncate -s 512M "$lw/replica"
		if ! run "$REC" replay -s $((seed + p)) "$lw/log" "$lw/replica" "$e"; then
			t_fail "$name: replay to entry $e"
			continue
		fi
		rep=$(losetup -f --show "$lw/replica") || { t_fail "$name: losetup replica"; continue; }
		out=$(e2fsck -fy "$rep" 2>&1)
		rc=$?
		local what="cut after write $e (flush), lost-write seed $((seed + p))"
		local pok=1 msgs=()
		[ $rc -le 1 ] || { pok=0; msgs+=("e2fsck status $rc"); }
		if [ $pok = 1 ] && run mount -t ext4 "$rep" "$mnt"; then
			if [ -f "$img" ] && [[ $kind == j* ]] && ! jout=$(jreplay "$name" "$img" 2>&1); then
				pok=0
				msgs+=("journal: $jout")
			elif [ -f "$img" ]; then
				[[ $kind == j* ]] && msgs+=("journal: $jout;")
				check_rc qemu-img check "$img"
				qrc=$?
				[ $qrc = 0 ] || [ $qrc = 3 ] || { pok=0; msgs+=("qemu-img check status $qrc: $(printf '%s' "$CHECK_OUT" | head -n 5 | tr '\n' ' ')"); }
				check_rc "$QIMGCTL" check "$img"
				crc=$?
				[ $crc = $qrc ] || { pok=0; msgs+=("qimgctl check status $crc vs qemu-img $qrc"); }
				local lg=$mnt/log
				[ -f "$lg" ] || lg=/dev/null
				if [ $pok = 1 ] && attach -r "$img"; then
					if out=$("$REC" verify "${bopt[@]}" "$DEV" "$seed" "$lg" 2>&1); then
						msgs+=("${out#*: }")
					else
						pok=0
						msgs+=("$(printf '%s' "$out" | head -n 8)")
					fi
					run "$QIMGCTL" detach "$DEV"
				elif [ $pok = 1 ]; then
					pok=0
					msgs+=("attach -r failed")
				fi
				if [ $pok = 1 ]; then
					check_rc "$QIMGCTL" check -r leaks "$img"
					crc=$?
					check_rc qemu-img check "$img"
					qrc=$?
					[ $crc = 0 ] && [ $qrc = 0 ] || { pok=0; msgs+=("not clean after check -r leaks ($crc, $qrc)"); }
				fi
			else
				# The image was created and synced before the
				# writer started: every flush point has it.
				pok=0
				msgs+=("no image at a flush point after the writer started")
			fi
			umount "$mnt"
		else
			pok=0
			msgs+=("mount failed")
		fi
		losetup -d "$rep"
		if [ $pok = 1 ]; then
			t_pass "$name: $what: ${msgs[*]}"
		else
			t_fail "$name: $what"
			printf '%s\n' "${msgs[@]}" | sed 's/^/#   /'
			ok=0
			mkdir -p "$OUT"
			cp --sparse=always "$lw/log" "$OUT/replay-$kind-$seed.dmlog" 2>/dev/null &&
				echo "#   write log kept: $OUT/replay-$kind-$seed.dmlog (qimg-crashrec replay -s $((seed + p)) LOG DISK $e)"
		fi
	done
	[ $ok = 1 ] && rm -rf "$lw"
	[ $ok = 1 ]
}

if [ -n "${QIMG_CRASH_VERIFY:-}" ]; then
	# shellcheck disable=SC2086
	verify $QIMG_CRASH_VERIFY
fi
if [ -n "${QIMG_CRASH_REPLAY:-}" ]; then
	# shellcheck disable=SC2086
	replay $QIMG_CRASH_REPLAY
fi
if [ -n "${QIMG_CRASH_START:-}" ]; then
	# shellcheck disable=SC2086
	start $QIMG_CRASH_START
fi
t_done
