# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
#
# xcheck part: the commands built on qimgctl's qcow2 writer (image_rw.c),
# against qemu-img 7.2.  Sourced by run; uses its helpers (want, qx, show,
# jcmp, err_case, lk_case, hold_start, N_CMP, ...).
#
#   convert: a matrix of qemu-made sources (raw, qcow2 v2/v3, compressed
#     zlib/zstd, backing chains, extended L2, 512 B and 2 MiB clusters,
#     refcount widths) and of output options; each DST must be identical
#     to SRC (qemu-img compare), clean (qemu-img check), have the info and
#     the allocation map of qemu-img convert's twin, and the twin must read
#     back through qimgctl convert identical to SRC.
#   resize: qcow2 (64k and 512 B clusters) and raw, grow and shrink, the
#     same status, output, info, guest data (and file size) as qemu-img
#     resize of a copy.
#   amend: compat up/down (zero clusters, backing file, lazy refcounts),
#     lazy_refcounts, refcount_bits (1..64, grown and narrowed), refused
#     options: the same status, guest data and info as qemu-img amend.
#   crash: resize, amend and convert stopped before each of their writes
#     and fsyncs (crashw.c): never a corrupt image, guest data kept.
#   errors: bad command lines and images, with qemu-img's exit status.

# cv_map IMG FMT: qemu-img map's extents as "start length data zero"
# lines, neighbours with the same flags merged (offsets differ by layout).
cv_map() {
	# qemu-img 7.2 prints one extent per line; no python start-up here.
	qemu-img map -f "$2" --output=json "$1" 2>/dev/null |
		sed -n 's/.*"start": \([0-9]*\), "length": \([0-9]*\),.*"zero": \([a-z]*\), "data": \([a-z]*\).*/\1 \2 \4 \3/p' |
		awk '$1 == s + l && $3 " " $4 == k { l += $2; next }
			{ if (NR > 1) print s, l, k; s = $1; l = $2; k = $3 " " $4 }
			END { if (NR) print s, l, k }'
}

# The sources: cv-NAME.img and its format in CV_FMT[NAME].
declare -A CV_FMT
cv_sources() {
	local id o
	CV_FMT=()
	cp bk-raw.raw cv-raw.img && CV_FMT[raw]=raw
	for id in v3:compat=1.1 v2:compat=0.10 c512:cluster_size=512 \
		c2m:cluster_size=2M rb1:refcount_bits=1 \
		rb64:refcount_bits=64 extl2:extended_l2=on; do
		o=${id#*:}
		id=${id%%:*}
		qemu-img create -q -f qcow2 -o "$o" "cv-$id.img" 32M &&
			qemu_io_pattern "cv-$id.img" 65536 32M >/dev/null &&
			CV_FMT[$id]=qcow2
	done
	qemu-img convert -c -O qcow2 cv-v3.img cv-comp.img &&
		qemu-io -f qcow2 -c "write -P 0xb1 64k 4k" cv-comp.img \
			>/dev/null && CV_FMT[comp]=qcow2
	qemu-img convert -c -O qcow2 -o compression_type=zstd cv-v3.img \
		cv-zstd.img && CV_FMT[zstd]=qcow2
	qemu-img create -q -f qcow2 -b bk-c2.qcow2 -F qcow2 cv-chain.img &&
		qemu-io -f qcow2 -c "write -P 0xc1 1M 4k" \
			-c "write -z 7M 4k" -c "write -P 0xc2 3M 64k" \
			cv-chain.img >/dev/null && CV_FMT[chain]=qcow2
	qemu-img create -q -f qcow2 -o cluster_size=4k -b bk-q.qcow2 \
		-F qcow2 cv-backq.img &&
		qemu-io -f qcow2 -c "write -P 0xd1 100k 8k" \
			-c "write -z 0 4k" -c "write -P 0xd2 7M 4k" \
			cv-backq.img >/dev/null && CV_FMT[backq]=qcow2
	# Internal snapshots and bitmaps stay behind (qemu-img convert without
	# --bitmaps): only the active guest data is copied.
	cp cv-v3.img cv-snap.img && qemu-img snapshot -c s1 cv-snap.img &&
		qemu-io -f qcow2 -c "write -P 0xe1 0 128k" cv-snap.img \
			>/dev/null && qemu-img bitmap --add cv-snap.img b0 &&
		CV_FMT[snap]=qcow2
}

# cv_case SRC VARIANT ARGS...: convert cv-SRC.img with ARGS by both tools.
cv_case() {
	local src=$1 id="convert/$1/$2" fmt x q ofmt=raw a
	shift 2
	want "$id: convert" "$id: compare" "$id: check" "$id: twin info" \
		"$id: twin map" "$id: read back" || return 0
	fmt=${CV_FMT[$src]:-}
	if [ -z "$fmt" ]; then
		t_fail "$id: convert: could not make the source"
		return
	fi
	for a in "$@"; do
		[ "$a" = qcow2 ] && ofmt=qcow2
	done
	x=cvx-$N_IMAGES.img
	q=cvq-$N_IMAGES.img
	N_IMAGES=$((N_IMAGES + 1))

	N_CMP=$((N_CMP + 1))
	qx out/c.out out/c.err convert -f "$fmt" "$@" "cv-$src.img" "$x"
	if crashed "$QX_RC" out/c.err; then
		t_fail "$id: convert: qimgctl crashed (status $QX_RC)"
		show out/c.err 8
		return
	fi
	if ! qemu-img convert -f "$fmt" "$@" "cv-$src.img" "$q" \
		>out/q.out 2>&1; then
		t_fail "$id: convert: qemu-img convert fails"
		show out/q.out 3
		return
	fi
	if [ "$QX_RC" -ne 0 ] || [ -s out/c.out ] || [ -s out/c.err ]; then
		t_fail "$id: convert: exit status $QX_RC (qemu-img 0) or output"
		show out/c.err 3
		return
	fi
	t_pass "$id: convert"

	N_CMP=$((N_CMP + 1))
	if qemu-img compare -f "$fmt" -F "$ofmt" "cv-$src.img" "$x" \
		>out/cmp 2>&1; then
		t_pass "$id: compare"
	else
		t_fail "$id: compare: DST differs from SRC"
		show out/cmp 3
	fi

	if [ "$ofmt" = qcow2 ]; then
		N_CMP=$((N_CMP + 1))
		if qemu-img check -f qcow2 "$x" >out/chk 2>&1; then
			t_pass "$id: check"
		else
			t_fail "$id: check: qemu-img check not clean"
			show out/chk 6
		fi
		N_CMP=$((N_CMP + 1))
		qemu-img info -f qcow2 --output=json "$q" >out/q.json 2>&1
		qemu-img info -f qcow2 --output=json "$x" >out/x.json 2>&1
		if jcmp twin out/q.json out/x.json; then
			t_pass "$id: twin info"
		else
			t_fail "$id: twin info: qemu-img info differs from qemu-img convert's image"
			show out/diff 8
		fi
	fi

	N_CMP=$((N_CMP + 1))
	cv_map "$q" "$ofmt" >out/q.map
	cv_map "$x" "$ofmt" >out/x.map
	if [ -s out/q.map ] && cmp -s out/q.map out/x.map; then
		t_pass "$id: twin map"
	else
		t_fail "$id: twin map: allocation differs from qemu-img convert's image"
		diff out/q.map out/x.map >out/diff
		show out/diff 8
	fi

	# The other direction: qimgctl reads what qemu-img wrote.
	N_CMP=$((N_CMP + 1))
	rm -f "$x"
	qx out/r.out out/r.err convert -f "$ofmt" -O raw "$q" "$x"
	if crashed "$QX_RC" out/r.err; then
		t_fail "$id: read back: qimgctl crashed (status $QX_RC)"
		show out/r.err 8
	elif [ "$QX_RC" -ne 0 ]; then
		t_fail "$id: read back: exit status $QX_RC"
		show out/r.err 3
	elif ! qemu-img compare -f "$fmt" -F raw "cv-$src.img" "$x" \
		>out/cmp 2>&1; then
		t_fail "$id: read back: qemu-img's DST read by qimgctl differs from SRC"
		show out/cmp 3
	else
		t_pass "$id: read back"
	fi
	rm -f "$x" "$q"
}

# create -p (qimgctl's own): the image and the output are those without
# it, and a meter shows the zero-filling of preallocation=full on a
# terminal.
cr_progress() {
	want "create/progress" || return 0
	N_CMP=$((N_CMP + 1))
	rm -f crp0.img crp1.img crp2.img
	qx out/c0.out out/c0.err create -o preallocation=full crp0.img 32M
	qx out/p.out out/p.err create -p -o preallocation=full crp1.img 32M
	sed -i 's/crp1/crp0/' out/p.out
	if [ "$QX_RC" -ne 0 ] || ! cmp -s out/c0.out out/p.out ||
		[ -s out/p.err ] || ! cmp -s crp0.img crp1.img; then
		t_fail "create/progress: -p changed the image, the output or the status without a terminal"
	elif ! command -v script >/dev/null; then
		t_skip "create/progress" "script(1) is not installed"
	elif script -qec "$(printf '%q ' "$QIMGCTL" create -p -o preallocation=full crp2.img 32M)" \
		/dev/null >out/p.tty 2>&1 </dev/null &&
		grep -qF '(100.00/100%)' out/p.tty && cmp -s crp0.img crp2.img; then
		t_pass "create/progress"
	else
		t_fail "create/progress: no progress on a terminal, or another image"
		show out/p.tty 3
	fi
	rm -f crp0.img crp1.img crp2.img
}

# check -p (qimgctl's own): the same output and status as without it,
# and the meter only on a terminal.
ck_progress() {
	want "check/progress" || return 0
	N_CMP=$((N_CMP + 1))
	qx out/c0.out out/c0.err check cv-v3.img
	local rc0=$QX_RC
	qx out/p.out out/p.err check -p cv-v3.img
	if [ "$QX_RC" -ne "$rc0" ] || ! cmp -s out/c0.out out/p.out ||
		[ -s out/p.err ]; then
		t_fail "check/progress: -p changed the output or status without a terminal"
	elif ! command -v script >/dev/null; then
		t_skip "check/progress" "script(1) is not installed"
	elif script -qec "$(printf '%q ' "$QIMGCTL" check -p cv-v3.img)" \
		/dev/null >out/p.tty 2>&1 </dev/null &&
		grep -qF '(100.00/100%)' out/p.tty &&
		grep -qF 'No errors were found' out/p.tty; then
		t_pass "check/progress"
	else
		t_fail "check/progress: no progress on a terminal"
		show out/p.tty 3
	fi
}

# -p: nothing when stderr is not a terminal; qemu-img's "(100.00/100%)"
# at the end when it is (script(1) gives it one).
cv_progress() {
	if want "convert/progress/not-a-tty"; then
		N_CMP=$((N_CMP + 1))
		rm -f cvp.img
		qx out/p.out out/p.err convert -p -f qcow2 -O qcow2 cv-v3.img cvp.img
		if [ "$QX_RC" -eq 0 ] && [ ! -s out/p.err ] && [ ! -s out/p.out ]; then
			t_pass "convert/progress/not-a-tty"
		else
			t_fail "convert/progress/not-a-tty: status $QX_RC or output"
			show out/p.err 3
		fi
	fi
	if want "convert/progress/tty"; then
		N_CMP=$((N_CMP + 1))
		rm -f cvp.img
		if ! command -v script >/dev/null; then
			t_skip "convert/progress/tty" "script(1) is not installed"
		elif script -qec "$(printf '%q ' "$QIMGCTL" convert -p -f qcow2 \
			-O qcow2 cv-v3.img cvp.img)" /dev/null >out/p.tty \
			2>&1 </dev/null && grep -qF '(100.00/100%)' out/p.tty &&
			qemu-img compare -q cv-v3.img cvp.img; then
			t_pass "convert/progress/tty"
		else
			t_fail "convert/progress/tty: no progress on a terminal"
			show out/p.tty 3
		fi
	fi
	rm -f cvp.img
}

# tw_case CMD ID FMT CREATE-OPTS SIZE ARGS...: twins made by qemu-img, one
# changed by qemu-img CMD ARGS, the other by qimgctl CMD ARGS.
tw_case() {
	local cmd=$1 id="$1/$2" fmt=$3 o=$4 size=$5 qrc
	shift 5
	want "$id: $cmd" "$id: compare" "$id: check" "$id: twin info" ||
		return 0
	if [ "$fmt" = raw ]; then
		qemu-img create -q -f raw rs-q.img "$size" &&
			qemu-io -f raw -c "write -P 0x11 0 64k" \
				-c "write -P 0x12 1M 4k" rs-q.img >/dev/null
	else
		qemu-img create -q -f qcow2 -o "$o" rs-q.img "$size" &&
			qemu-io -f qcow2 -c "write -P 0x11 0 64k" \
				-c "write -P 0x12 1M 4k" -c "write -z 2M 64k" \
				-c "write -P 0x13 20M 64k" rs-q.img >/dev/null
	fi || {
		t_fail "$id: $cmd: could not make the image"
		return
	}
	cp rs-q.img rs-x.img
	N_CMP=$((N_CMP + 1))
	qemu-img "$cmd" -f "$fmt" rs-q.img "$@" >out/q.out 2>out/q.err
	qrc=$?
	qx out/x.out out/x.err "$cmd" -f "$fmt" rs-x.img "$@"
	if crashed "$QX_RC" out/x.err; then
		t_fail "$id: $cmd: qimgctl crashed (status $QX_RC)"
		show out/x.err 8
		return
	elif [ "$QX_RC" -ne "$qrc" ]; then
		t_fail "$id: $cmd: exit status $QX_RC, qemu-img $qrc"
		show out/x.err 2
		show out/q.err 2
		return
	elif ! cmp -s out/q.out out/x.out; then
		t_fail "$id: $cmd: stdout differs from qemu-img's"
		show out/x.out 2
		return
	elif [ "$qrc" -ne 0 ] && [ "$(grep -c . out/x.err)" -ne 1 ]; then
		t_fail "$id: $cmd: not one line on stderr"
		show out/x.err 3
		return
	fi
	t_pass "$id: $cmd"
	N_CMP=$((N_CMP + 1))
	if qemu-img compare -f "$fmt" -F "$fmt" rs-q.img rs-x.img \
		>out/cmp 2>&1; then
		t_pass "$id: compare"
	else
		t_fail "$id: compare: guest data differs from qemu-img $cmd's"
		show out/cmp 3
	fi
	[ "$fmt" = raw ] || {
		N_CMP=$((N_CMP + 1))
		if qemu-img check -f qcow2 rs-x.img >out/chk 2>&1; then
			t_pass "$id: check"
		else
			t_fail "$id: check: qemu-img check not clean"
			show out/chk 6
		fi
	}
	N_CMP=$((N_CMP + 1))
	qemu-img info -f "$fmt" --output=json rs-q.img >out/q.json 2>&1
	qemu-img info -f "$fmt" --output=json rs-x.img >out/x.json 2>&1
	if jcmp twin out/q.json out/x.json; then
		t_pass "$id: twin info"
	else
		t_fail "$id: twin info: qemu-img info differs from qemu-img $cmd's"
		show out/diff 8
	fi
	if [ "$(stat -c %s rs-q.img)" != "$(stat -c %s rs-x.img)" ]; then
		echo "#   note: file size $(stat -c %s rs-x.img), qemu-img's $(stat -c %s rs-q.img)"
	fi
	rm -f rs-q.img rs-x.img
}

# The crash simulator (crashw.c, LD_PRELOAD); empty if it cannot be built.
CRASHW=
# (work and here are run's)
# shellcheck disable=SC2154
crashw_lib() {
	[ -n "$CRASHW" ] && return 0
	${CC:-cc} -std=c11 -D_GNU_SOURCE -O1 -shared -fPIC \
		-o "$work/crashw.so" "$here/crashw.c" -ldl \
		>out/crashw.log 2>&1 && CRASHW=$work/crashw.so
}

# crashed_at N ARGS...: qimgctl ARGS, killed before its Nth write or fsync.
crash_run() {
	local n=$1
	shift
	ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0:abort_on_error=1 \
		QIMG_CRASH_AT=$n QIMG_CRASH_COUNT=$work/out/crash.count \
		LD_PRELOAD=$CRASHW "$QIMGCTL" "$@" >/dev/null 2>out/cr.err \
		</dev/null
}

# cr_case NAME DATA IMG ARGS...: qimgctl ARGS (which change IMG) stopped
# at every write or fsync (a sample of them for long runs): each time
# qemu-img check must find IMG clean or only leaking, and with DATA=same
# its guest data must still be what it was (qemu-img compare).  DATA=new:
# IMG is made by ARGS (convert); the first 4 points are create's (header,
# refcount table and block, fsync), where IMG is not an image yet.
cr_case() {
	local name="crash/$1" data=$2 img=$3 total n bad='' first=1
	shift 3
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	if ! crashw_lib; then
		t_skip "$name" "cannot build the crash simulator"
		return
	fi
	cr_reset() {
		if [ "$data" = new ]; then
			rm -f "$img"
		else
			cp cr-orig.img "$img"
		fi
	}
	[ "$data" = new ] && first=5
	[ "$data" = new ] || cp "$img" cr-orig.img
	crash_run 0 "$@"
	total=$(cat out/crash.count 2>/dev/null || echo 0)
	cr_reset
	if [ "$total" -lt 2 ]; then
		t_fail "$name: the command made $total writes"
		return
	fi
	local -a pts=()
	if [ "$total" -le 40 ]; then
		mapfile -t pts < <(seq "$first" "$total")
	else
		mapfile -t pts < <({ seq "$first" 12
			seq $((total - 12)) "$total"
			seq 13 $(((total - 25) / 12 + 1)) $((total - 13)); } |
			sort -nu)
	fi
	for n in "${pts[@]}"; do
		cr_reset
		crash_run "$n" "$@"
		if crashed 0 out/cr.err; then
			bad="qimgctl crashed at write $n"
			show out/cr.err 6
			break
		fi
		qemu-img check -f qcow2 "$img" >out/chk 2>&1
		case $? in
		0 | 3) ;;
		*)
			bad="stopped at write $n of $total: qemu-img check finds corruption"
			show out/chk 6
			break
			;;
		esac
		if [ "$data" = same ] &&
			! qemu-img compare -q -f qcow2 -F qcow2 cr-orig.img \
				"$img" >out/cmp 2>&1; then
			bad="stopped at write $n of $total: guest data changed"
			show out/cmp 3
			break
		fi
	done
	if [ -n "$bad" ]; then
		t_fail "$name: $bad"
	else
		t_pass "$name (${#pts[@]} of $total points)"
	fi
	rm -f cr-orig.img "$img"
}

# sn_twin_verdict NAME P RESIZE-ARGS...: qemu-img resize on P-q.qcow2,
# qimgctl resize on its copy P-x.qcow2 (both with a snapshot "snap"): the
# same status and info, ours clean, the same data, and the same data and
# a clean image again once the snapshot is applied.  Removes both.
sn_twin_verdict() {
	local name=$1 q=$2-q.qcow2 x=$2-x.qcow2 qrc bad=''
	shift 2
	qemu-img resize -f qcow2 "${@:1:$#-1}" "$q" "${@: -1}" >/dev/null 2>&1
	qrc=$?
	qx out/x.out out/x.err resize -f qcow2 "${@:1:$#-1}" "$x" "${@: -1}"
	if crashed "$QX_RC" out/x.err; then
		bad="qimgctl crashed (status $QX_RC)"
	elif [ "$QX_RC" -ne "$qrc" ]; then
		bad="exit status $QX_RC, qemu-img $qrc"
	elif ! qemu-img check -q "$x" >out/chk 2>&1; then
		bad="qemu-img check finds fault with the result"
		show out/chk 4
	elif ! diff <(qemu-img info "$q" | grep -vE '^(image|disk size):') \
		<(qemu-img info "$x" | grep -vE '^(image|disk size):') >out/d 2>&1; then
		bad="qemu-img info differs"
		show out/d 6
	elif ! qemu-img compare -q "$q" "$x" >/dev/null 2>&1; then
		bad="guest data differs"
	elif ! qemu-img snapshot -a snap "$q" || ! qemu-img snapshot -a snap "$x" ||
		! qemu-img compare -q "$q" "$x" >/dev/null 2>&1; then
		bad="the snapshot's data differs (or did not apply)"
	elif ! qemu-img check -q "$x" >out/chk 2>&1; then
		bad="qemu-img check finds fault once the snapshot is applied"
		show out/chk 4
	fi
	if [ -n "$bad" ]; then
		t_fail "$name: $bad"
		show out/x.err 2
	else
		t_pass "$name"
	fi
	rm -f "$q" "$x"
}

# ss_case NAME OPTS BEFORE AFTER NEWSIZE: an image (16M) written with the
# qemu-io commands BEFORE (';'-separated), an internal snapshot, then
# AFTER; qemu-img resize --shrink and qimgctl resize --shrink of copies:
# same status and info, ours clean, the same data, and the same data and
# a clean image again once the snapshot is applied.
ss_case() {
	local name=resize/snapshot-shrink/$1 c
	local -a pre=() post=()
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	N_IMAGES=$((N_IMAGES + 1))
	IFS=';' read -r -a pre <<<"$3"
	IFS=';' read -r -a post <<<"$4"
	rm -f ss-q.qcow2 ss-x.qcow2
	qemu-img create -q -f qcow2 -o "$2" ss-q.qcow2 16M
	for c in "${pre[@]}"; do qemu-io -f qcow2 -c "$c" ss-q.qcow2 >/dev/null; done
	qemu-img snapshot -c snap ss-q.qcow2
	for c in "${post[@]}"; do qemu-io -f qcow2 -c "$c" ss-q.qcow2 >/dev/null; done
	cp ss-q.qcow2 ss-x.qcow2
	sn_twin_verdict "$name" ss --shrink "$5"
}

# gs_case NAME OPTS OLD NEW: an overlay of OLD bytes (k) over a 64M
# backing file, written at both ends, a snapshot, one more write; qemu-img
# and qimgctl grow copies to NEW: the new space reads zeros (zero clusters
# over the backing data, the head cluster copied on write), and nothing
# the snapshot reaches changes.
gs_case() {
	local name=resize/snapshot-grow-backing/$1 old=$3
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	N_IMAGES=$((N_IMAGES + 1))
	rm -f gs-q.qcow2 gs-x.qcow2
	if [ ! -f gs-base.qcow2 ]; then
		qemu-img create -q -f qcow2 gs-base.qcow2 64M
		qemu-io -f qcow2 -c "write -P 0x33 0 64M" gs-base.qcow2 >/dev/null
	fi
	qemu-img create -q -f qcow2 -o "$2" -b gs-base.qcow2 -F qcow2 \
		gs-q.qcow2 "${old}k"
	qemu-io -f qcow2 -c "write -P 1 0 64k" -c "write -P 2 $((old - 8))k 8k" \
		gs-q.qcow2 >/dev/null
	qemu-img snapshot -c snap gs-q.qcow2
	qemu-io -f qcow2 -c "write -P 3 4k 4k" gs-q.qcow2 >/dev/null
	cp gs-q.qcow2 gs-x.qcow2
	sn_twin_verdict "$name" gs "$4"
}

# Shrinking an image with internal snapshots, as qemu does: what only the
# snapshot reaches stays, tables shared with it are never written.
ss_cases() {
	ss_case shared-tail cluster_size=64k "write -P 1 0 4M;write -P 2 6M 2M" \
		"write -P 3 1M 1M;write -P 4 7M 1M" 5M
	ss_case 512-aligned cluster_size=512 "write -P 2 6M 2M" \
		"write -P 5 10M 1M" 5M
	ss_case 512-partial cluster_size=512 "write -P 2 4M 2M" \
		"write -P 5 4200k 1M" 5000k
	ss_case 512-compressed cluster_size=512 "write -c -P 7 9M 64k;write -P 2 4M 2M" \
		"write -P 5 10M 1M" 5000k
	ss_case 4k-compressed-partial cluster_size=4k "write -c -P 2 4M 2M" \
		"write -P 5 4200k 1M" 5000k
	ss_case rb1 cluster_size=4k,refcount_bits=2 "write -P 2 4M 2M" \
		"write -P 5 4200k 1M" 3M
	ss_case extl2 cluster_size=64k,extended_l2=on "write -P 2 4M 2M" \
		"write -P 5 4200k 64k" 5000k
	ss_case to-zero cluster_size=64k "write -P 2 0 2M" "write -P 5 1M 64k" 0
	gs_case unaligned cluster_size=64k 16388 40M
	gs_case aligned cluster_size=64k 16384 40M
	gs_case 512 cluster_size=512 16388 40M
	gs_case extl2 cluster_size=64k,extended_l2=on 16388 40M
	gs_case extl2-unaligned cluster_size=64k,extended_l2=on 16387 40M
	rm -f gs-base.qcow2
	if want errors/resize-v2-snapshots; then
		N_CMP=$((N_CMP + 1))
		N_IMAGES=$((N_IMAGES + 1))
		qemu-img create -q -f qcow2 -o compat=0.10 ss-2.qcow2 16M &&
			qemu-img snapshot -c snap ss-2.qcow2
		local sum q1 q2
		sum=$(md5sum <ss-2.qcow2)
		qemu-img resize -f qcow2 ss-2.qcow2 32M >/dev/null 2>&1
		q1=$?
		qx out/x.out out/x.err resize -f qcow2 ss-2.qcow2 32M
		q2=$QX_RC
		qx out/x2.out out/x2.err resize -f qcow2 --shrink ss-2.qcow2 8M
		if [ "$q2" = "$q1" ] && [ "$QX_RC" = 1 ] &&
			grep -q "Can't resize a v2 image which has snapshots" out/x.err &&
			[ "$(md5sum <ss-2.qcow2)" = "$sum" ]; then
			t_pass errors/resize-v2-snapshots
		else
			t_fail "errors/resize-v2-snapshots: exit status $q2 and $QX_RC, qemu-img $q1, or the image changed"
			show out/x.err 2
		fi
		rm -f ss-2.qcow2
	fi
}

# rb_img FILE OPTS SIZE GRAN: an image with two bitmaps, b0 (enabled, the
# default granularity) and b1 (granularity GRAN, disabled for some of the
# writes), and guest writes spread over it.
rb_img() {
	local f=$1 size=$3
	qemu-img create -q -f qcow2 -o "$2" "$f" "$size" &&
		qemu-img bitmap --add "$f" b0 &&
		qemu-img bitmap --add --disable -g "$4" "$f" b1 &&
		qemu-io -f qcow2 -c "write 0 64k" -c "write $((${size%M} - 1))M 1M" \
			"$f" >/dev/null &&
		qemu-img bitmap --enable "$f" b1 &&
		qemu-io -f qcow2 -c "write 1M 4k" -c "write $((${size%M} / 2))M 8k" \
			"$f" >/dev/null
}

# rb_case NAME OPTS SIZE GRAN [--disable] RESIZE-ARGS...: qemu-img resize
# and qimgctl resize of copies of one image with bitmaps: same exit
# status, same qemu-img info, ours clean, the same guest data and the
# same dirty extents in every bitmap.
rb_case() {
	local name=resize/bitmaps/$1 opts=$2 size=$3 gran=$4 qrc b bad=''
	shift 4
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	N_IMAGES=$((N_IMAGES + 1))
	rm -f rb-q.qcow2 rb-x.qcow2
	if ! rb_img rb-q.qcow2 "$opts" "$size" "$gran"; then
		t_fail "$name: could not make the image"
		return
	fi
	if [ "${1:-}" = --disable ]; then
		shift
		qemu-img bitmap --disable rb-q.qcow2 b0
	fi
	cp rb-q.qcow2 rb-x.qcow2
	qemu-img resize -f qcow2 rb-q.qcow2 "$@" >/dev/null 2>&1
	qrc=$?
	qx out/x.out out/x.err resize -f qcow2 rb-x.qcow2 "$@"
	if crashed "$QX_RC" out/x.err; then
		bad="qimgctl crashed (status $QX_RC)"
	elif [ "$QX_RC" -ne "$qrc" ]; then
		bad="exit status $QX_RC, qemu-img $qrc"
	elif ! qemu-img check -q rb-x.qcow2 >out/chk 2>&1; then
		bad="qemu-img check finds fault with the result"
		show out/chk 4
	elif ! diff <(qemu-img info rb-q.qcow2 | grep -vE '^(image|disk size):') \
		<(qemu-img info rb-x.qcow2 | grep -vE '^(image|disk size):') >out/d 2>&1; then
		bad="qemu-img info differs"
		show out/d 6
	elif ! qemu-img compare -q rb-q.qcow2 rb-x.qcow2 >/dev/null 2>&1; then
		bad="guest data differs"
	fi
	for b in b0 b1; do
		[ -z "$bad" ] || break
		qx out/bq.out out/bq.err bitmap --export "$b" rb-q.qcow2
		qx out/bx.out out/bx.err bitmap --export "$b" rb-x.qcow2
		cmp -s out/bq.out out/bx.out || bad="bitmap $b: dirty extents differ"
	done
	if [ -n "$bad" ]; then
		t_fail "$name: $bad"
		show out/x.err 2
	else
		t_pass "$name"
	fi
	rm -f rb-q.qcow2 rb-x.qcow2
}

# Persistent bitmaps follow the size, as in qemu: grown bits clean, bits
# past a shrunk end gone; in-use bitmaps refused; marked in use on disk
# while the size changes (crash/resize-bitmaps-*).
rb_cases() {
	rb_case grow cluster_size=64k 16M 4096 32M
	rb_case grow-rel cluster_size=64k 16M 4096 +1G
	rb_case shrink cluster_size=64k 16M 4096 --shrink 8M
	rb_case shrink-unaligned cluster_size=64k 16M 4096 --shrink 12345k
	rb_case grow-512 cluster_size=512 16M 512 64M
	rb_case shrink-512 cluster_size=512 16M 512 --shrink 2M
	rb_case disabled cluster_size=64k 16M 65536 --disable 48M
	if want "resize/bitmaps/backing-longer"; then
		# Over a longer backing file: the grown part reads zeros.
		qemu-img create -q -f qcow2 rb-base.qcow2 64M &&
			qemu-io -f qcow2 -c "write -P 0x33 0 64M" rb-base.qcow2 >/dev/null &&
			qemu-img create -q -f qcow2 -b rb-base.qcow2 -F qcow2 rb-o.qcow2 16M &&
			qemu-img bitmap --add rb-o.qcow2 b0 &&
			qemu-io -f qcow2 -c "write 8M 4k" rb-o.qcow2 >/dev/null &&
			cp rb-o.qcow2 rb-o2.qcow2
		N_CMP=$((N_CMP + 1))
		N_IMAGES=$((N_IMAGES + 2))
		qemu-img resize rb-o.qcow2 40M >/dev/null 2>&1
		qx out/x.out out/x.err resize rb-o2.qcow2 40M
		qx out/bq.out out/bq.err bitmap --export b0 rb-o.qcow2
		qx out/bx.out out/bx.err bitmap --export b0 rb-o2.qcow2
		if [ "$QX_RC" = 0 ] && qemu-img check -q rb-o2.qcow2 >/dev/null 2>&1 &&
			qemu-img compare -q rb-o.qcow2 rb-o2.qcow2 >/dev/null 2>&1 &&
			cmp -s out/bq.out out/bx.out; then
			t_pass "resize/bitmaps/backing-longer"
		else
			t_fail "resize/bitmaps/backing-longer: status $QX_RC, or not clean, or data or bits differ"
			show out/x.err 2
		fi
		rm -f rb-base.qcow2 rb-o.qcow2 rb-o2.qcow2
	fi
	if want "errors/resize-bitmap-x"; then
		N_IMAGES=$((N_IMAGES + 2))
		rb_img rb-iu.qcow2 cluster_size=64k 16M 4096
		python3 "$here/bmhack.py" rb-iu.qcow2 0.flags=3 >/dev/null
		qemu-img create -q -f qcow2 rb-big.qcow2 1M &&
			qemu-img bitmap --add -g 512 rb-big.qcow2 b0
	fi
	# qemu-img refuses the in-use bitmap at open (two lines, exit 1).
	lk_case errors/resize-bitmap-in-use 1 "is inconsistent" rb-iu.qcow2 \
		resize rb-iu.qcow2 32M
	# Documented difference: qemu-img resizes and then fails to store the
	# bitmap (exit 0, the bitmap left in use); qimgctl refuses first.
	lk_case errors/resize-bitmap-too-big 1 "too big" rb-big.qcow2 \
		resize rb-big.qcow2 3T
	rm -f rb-iu.qcow2 rb-big.qcow2
}

cr_cases() {
	want "crash/x" || return 0
	if ! qemu-img create -q -f qcow2 -o cluster_size=512 cr-a.img 32M ||
		! qemu_io_pattern cr-a.img 512 32M >/dev/null; then
		t_fail "crash/setup: could not make the image"
		return
	fi
	cp cr-a.img cr.img
	cr_case resize-grow-512 same cr.img resize -f qcow2 cr.img 2G
	cp cr-a.img cr.img
	cr_case resize-shrink-512 - cr.img resize -f qcow2 --shrink cr.img 6M
	# With bitmaps: at every point QEMU opens the image (in-use bitmaps
	# at worst), never tables that do not fit the size.
	cp cr-a.img cr.img
	qemu-img bitmap --add -g 4096 cr.img b0
	cr_case resize-bitmaps-grow same cr.img resize -f qcow2 cr.img 64M
	cp cr-a.img cr.img
	qemu-img bitmap --add -g 4096 cr.img b0
	cr_case resize-bitmaps-shrink - cr.img resize -f qcow2 --shrink cr.img 6M
	cp cr-a.img cr.img
	qemu-img snapshot -c snap cr.img
	qemu-io -f qcow2 -c "write -P 0x77 5M 2M" cr.img >/dev/null
	cr_case resize-shrink-snapshot - cr.img resize -f qcow2 --shrink cr.img 6000k
	cp cr-a.img cr.img
	cr_case amend-rb64 same cr.img amend -o refcount_bits=64 cr.img
	cp cr-a.img cr.img
	cr_case amend-v2 same cr.img amend -o compat=0.10 cr.img
	rm -f cr.img
	cr_case convert-512 new cr.img convert -f qcow2 -O qcow2 \
		-o cluster_size=512,refcount_bits=2 cr-a.img cr.img
	cr_case convert-c new cr.img convert -f qcow2 -O qcow2 -c \
		-o cluster_size=4k cr-a.img cr.img
	rm -f cr-a.img cr.img
}

# qerr_case NAME ARGS...: qimgctl ARGS must fail as qemu-img ARGS does.
qerr_case() {
	local name=$1 rc
	shift
	want "errors/$name" || return 0
	qemu-img "$@" >/dev/null 2>&1 </dev/null
	rc=$?
	if [ "$rc" -eq 0 ]; then
		t_fail "errors/$name: qemu-img $1 succeeds"
		return
	fi
	err_case "$name" "$rc" "$@"
}

part_imgw() {
	local s v
	if want "convert/x"; then
		if ! cv_sources >out/cv.log 2>&1; then
			show out/cv.log 4
		fi
		for s in raw v3 v2 c512 c2m rb1 rb64 extl2 comp zstd chain \
			backq snap; do
			cv_case "$s" qcow2 -O qcow2
		done
		for s in raw v3 v2 c2m extl2 comp zstd chain backq snap; do
			cv_case "$s" raw -O raw
		done
		cv_case v3 zlib -O qcow2 -c
		cv_case chain zlib -O qcow2 -c
		cv_case v3 zstd -O qcow2 -c -o compression_type=zstd
		cv_case c512 zstd -O qcow2 -c -o compression_type=zstd
		for v in backq:v2:compat=0.10 v3:c512:cluster_size=512 \
			comp:c512:cluster_size=512 backq:c2m:cluster_size=2M \
			v3:rb1:refcount_bits=1 \
			comp:rb64:refcount_bits=64,cluster_size=4k \
			v3:extl2:extended_l2=on backq:extl2:extended_l2=on \
			v3:lazy:lazy_refcounts=on; do
			s=${v%%:*}
			v=${v#*:}
			cv_case "$s" "${v%%:*}" -O qcow2 -o "${v#*:}"
		done
		cv_case c512 c512-rb1-c -O qcow2 \
			-o cluster_size=512,refcount_bits=1 -c
		cv_case extl2 extl2-c -O qcow2 -o extended_l2=on -c
		cv_case chain B -O qcow2 -B bk-c2.qcow2 -F qcow2
		cv_case chain B-c -O qcow2 -c -B bk-c2.qcow2 -F qcow2
		cv_case backq B -O qcow2 -B bk-q.qcow2 -F qcow2
		cv_case backq B-v2 -O qcow2 -o compat=0.10 -B bk-q.qcow2 \
			-F qcow2
		cv_progress
		ck_progress
		cr_progress
	fi

	tw_case resize grow qcow2 cluster_size=65536 32M 64M
	tw_case resize grow-rel qcow2 cluster_size=65536 32M +100G
	tw_case resize grow-512 qcow2 cluster_size=512 32M 1G
	tw_case resize grow-512-l1-moves qcow2 cluster_size=512,refcount_bits=1 32M +64M
	tw_case resize grow-v2 qcow2 compat=0.10 32M 3G
	tw_case resize grow-extl2 qcow2 extended_l2=on 32M 10G
	tw_case resize shrink-no-flag qcow2 cluster_size=65536 32M 16M
	tw_case resize shrink qcow2 cluster_size=65536 32M --shrink 16M
	tw_case resize shrink-rel qcow2 cluster_size=65536 32M --shrink -12M
	tw_case resize shrink-512 qcow2 cluster_size=512 32M --shrink 1536k
	tw_case resize shrink-512-rb64 qcow2 cluster_size=512,refcount_bits=64 32M --shrink 2M
	tw_case resize shrink-unaligned qcow2 cluster_size=65536 32M --shrink 1000
	tw_case resize shrink-to-zero qcow2 cluster_size=65536 32M --shrink -- -32M
	tw_case resize same qcow2 cluster_size=65536 32M 32M
	tw_case resize quiet qcow2 cluster_size=65536 32M -q 48M
	tw_case resize raw-grow raw - 2M +3M
	tw_case resize raw-shrink raw - 2M --shrink 1000
	tw_case resize raw-shrink-no-flag raw - 2M 1M

	tw_case amend v3-to-v2 qcow2 compat=1.1 32M -o compat=0.10
	tw_case amend v3-to-v2-backing qcow2 \
		backing_file=bk-q.qcow2,backing_fmt=qcow2 32M -o compat=0.10
	tw_case amend v3-to-v2-lazy qcow2 lazy_refcounts=on 32M -o compat=0.10
	tw_case amend v3-to-v2-rb8 qcow2 refcount_bits=8 32M -o compat=0.10
	tw_case amend v3-to-v2-extl2 qcow2 extended_l2=on 32M -o compat=0.10
	tw_case amend v2-to-v3 qcow2 compat=0.10 32M -o compat=1.1
	tw_case amend v2-to-v3-lazy qcow2 compat=0.10 32M \
		-o compat=v3,lazy_refcounts=on
	tw_case amend v2-lazy qcow2 compat=0.10 32M -o lazy_refcounts=on
	tw_case amend lazy-on qcow2 compat=1.1 32M -o lazy_refcounts=on
	tw_case amend lazy-off qcow2 lazy_refcounts=on 32M -o lazy_refcounts=off
	tw_case amend rb1 qcow2 compat=1.1 32M -o refcount_bits=1
	tw_case amend rb8 qcow2 compat=1.1 32M -o refcount_bits=8
	tw_case amend rb64 qcow2 compat=1.1 32M -o refcount_bits=64
	tw_case amend rb64-to-16-c512 qcow2 cluster_size=512,refcount_bits=64 \
		32M -o refcount_bits=16
	tw_case amend rb2-c512 qcow2 cluster_size=512 32M -o refcount_bits=2
	tw_case amend v2-to-v3-rb4 qcow2 compat=0.10 32M \
		-o compat=1.1,refcount_bits=4
	tw_case amend rb3 qcow2 compat=1.1 32M -o refcount_bits=3
	tw_case amend cluster-size qcow2 compat=1.1 32M -o cluster_size=4k
	# size= resizes as resize does, shrinking without --shrink (qemu's).
	tw_case amend size-grow qcow2 compat=1.1 32M -o size=48M
	tw_case amend size-shrink qcow2 compat=1.1 32M -o size=1536k
	tw_case amend size-unaligned qcow2 compat=1.1 32M -o size=1000
	tw_case amend size-v2 qcow2 compat=1.1 32M -o size=8M,compat=0.10
	tw_case amend size-rb4 qcow2 compat=1.1 32M -o size=64M,refcount_bits=4
	tw_case amend size-c512 qcow2 cluster_size=512 32M -o size=3M
	tw_case amend backing-file qcow2 compat=1.1 32M -o backing_file=x.qcow2
	tw_case amend backing-fmt qcow2 compat=1.1 32M -o backing_fmt=raw
	tw_case amend data-file qcow2 compat=1.1 32M -o data_file=x.raw
	tw_case amend unknown qcow2 compat=1.1 32M -o no_such=on
	tw_case amend no-options qcow2 compat=1.1 32M
	if want "amend/compressed-rb1: amend"; then
		qemu-img create -q -f qcow2 am-s.qcow2 32M
		qemu_io_pattern am-s.qcow2 65536 32M >/dev/null
		qemu-img convert -c -O qcow2 am-s.qcow2 am-c.qcow2
		cp am-c.qcow2 am-c2.qcow2
		lk_case amend/compressed-rb1 1 "refcount of" am-c.qcow2 amend \
			-o refcount_bits=1 am-c.qcow2
		qx out/x.out out/x.err amend -o refcount_bits=4 am-c2.qcow2
		if qemu-img check -q am-c2.qcow2 &&
			qemu-img compare -q am-c.qcow2 am-c2.qcow2; then
			t_pass "amend/compressed-rb4: amend"
		else
			t_fail "amend/compressed-rb4: amend: not clean or differs"
		fi
		rm -f am-s.qcow2 am-c.qcow2 am-c2.qcow2
	fi

	if want "resize/snapshot-grow: resize" "errors/resize-x"; then
		qemu-img create -q -f qcow2 rs-s.qcow2 32M &&
			qemu-io -f qcow2 -c "write -P 0x21 0 1M" rs-s.qcow2 \
				>/dev/null && qemu-img snapshot -c s1 rs-s.qcow2
		lk_case "resize/snapshot-grow: resize" 0 - - resize rs-s.qcow2 2G
		if qemu-img check -q rs-s.qcow2 &&
			qemu-img snapshot -l rs-s.qcow2 | grep -q s1; then
			t_pass "resize/snapshot-grow: check"
		else
			t_fail "resize/snapshot-grow: check: not clean or snapshot lost"
		fi
		rm -f rs-s.qcow2 rs-s2.qcow2
	fi
	ss_cases
	rb_cases
	cr_cases

	if want "errors/convert-x" "errors/resize-x"; then
		qemu-img create -q -f qcow2 ie.qcow2 4M
		qemu-img create -q -f raw ie.raw 4M
	fi
	qerr_case convert-nonexistent convert -O qcow2 no-such.img ce.img
	qerr_case convert-bad-output-format convert -O bogus ie.qcow2 ce.img
	qerr_case convert-raw-compressed convert -O raw -c ie.qcow2 ce.img
	qerr_case convert-backing-without-format convert -O qcow2 -B ie.qcow2 \
		ie.raw ce.img
	qerr_case convert-bad-option convert -O qcow2 -o no_such=1 ie.qcow2 \
		ce.img
	qerr_case convert-bad-cluster-size convert -O qcow2 \
		-o cluster_size=1000 ie.qcow2 ce.img
	qerr_case convert-v2-zstd convert -O qcow2 \
		-o compat=0.10,compression_type=zstd ie.qcow2 ce.img
	qerr_case convert-raw-not-qcow2 convert -f qcow2 -O raw ie.raw ce.img
	qerr_case convert-one-file convert -O qcow2 ie.qcow2
	qerr_case resize-nonexistent resize no-such.img 1G
	qerr_case resize-bad-size resize ie.qcow2 12abc
	qerr_case resize-not-512 resize ie.qcow2 5000000
	qerr_case resize-negative resize --shrink ie.qcow2 -- -8M
	qerr_case resize-no-size resize ie.qcow2
	qerr_case resize-too-big resize ie.qcow2 100P
	if want "errors/convert-locked" "errors/resize-locked" \
		"errors/convert-locked-U"; then
		if hold_start qemu-io -f qcow2 ie.qcow2; then
			lk_case errors/convert-locked 1 lock - convert -O raw \
				ie.qcow2 ce.img
			lk_case errors/convert-locked-U 0 - - convert -U -O raw \
				ie.qcow2 ce.img
			lk_case errors/resize-locked 1 lock ie.qcow2 resize \
				ie.qcow2 8M
			hold_stop
		else
			t_fail "errors/convert-locked: could not start qemu-io"
		fi
	fi
	if want "errors/convert-onto-source"; then
		cp ie.qcow2 ie2.qcow2
		lk_case errors/convert-onto-source 1 source ie2.qcow2 convert -U \
			-O qcow2 ie2.qcow2 ie2.qcow2
	fi
	rm -f ie.qcow2 ie.raw ie2.qcow2 ce.img
}
