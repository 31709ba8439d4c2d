# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
#
# xcheck part (sourced by run): snapshot, bitmap and rebase, against qemu-img
# 7.2 in both directions.  A twin image gets every step from qemu-img
# alone; the image under test gets it from qimgctl (or, in the mixed
# sequences, from qimgctl and qemu-img in turn, each working on what the
# other wrote).  After every step: qemu-img check exits 0 on it, qemu-img
# compare finds it identical to the twin, and the snapshot list (or the
# bitmap list of qemu-img info) agrees with the twin's.  Uses run's
# helpers (want, qx, t_pass, t_fail, show, jcmp, N_CMP, N_IMAGES).

# run sets these before it sources the part.
: "${here:?}" "${top:?}"
SNAPTAB=$here/snaptab.py

# is_verify NAME: the checks after one step on is/x.qcow2 and its twin
# is/q.qcow2 (snapshot IDs, names and sizes compared; dates differ).
is_verify() {
	local name=$1 rc
	qemu-img check -q is/x.qcow2 >out/c.out 2>&1
	rc=$?
	if [ $rc -ne 0 ]; then
		t_fail "$name: qemu-img check exits $rc"
		show out/c.out 4
		return 1
	fi
	if ! qemu-img compare -q is/x.qcow2 is/q.qcow2 >out/c.out 2>&1; then
		t_fail "$name: qemu-img compare: not identical to qemu-img's twin"
		show out/c.out 2
		return 1
	fi
	qemu-img snapshot -l is/q.qcow2 | cut -c1-37 >out/q.l
	qemu-img snapshot -l is/x.qcow2 | cut -c1-37 >out/x.l
	if ! cmp -s out/q.l out/x.l; then
		t_fail "$name: snapshot list differs from the twin's"
		diff out/q.l out/x.l | show /dev/stdin 4
		return 1
	fi
	# Our listing of our image, byte for byte as qemu-img lists it.
	qemu-img snapshot -l is/x.qcow2 >out/q.l 2>&1
	qx out/x.l out/x.err snapshot -l is/x.qcow2
	if ! cmp -s out/q.l out/x.l; then
		t_fail "$name: qimgctl snapshot -l differs from qemu-img's"
		diff out/q.l out/x.l | show /dev/stdin 4
		return 1
	fi
	return 0
}

# is_step NAME WHO ARGS...: one snapshot step; WHO (x or q) says which
# tool changes is/x.qcow2, qemu-img always changes the twin.  "io CMD"
# writes with qemu-io into both.
is_step() {
	local name=$1 who=$2 qrc
	shift 2
	N_CMP=$((N_CMP + 1))
	if [ "$1" = io ]; then
		qemu-io -f qcow2 -c "$2" is/x.qcow2 >/dev/null 2>&1 &&
			qemu-io -f qcow2 -c "$2" is/q.qcow2 >/dev/null 2>&1
		is_verify "$name" && t_pass "$name"
		return
	fi
	qemu-img snapshot "$@" is/q.qcow2 >out/q.out 2>&1
	qrc=$?
	if [ "$who" = x ]; then
		qx out/x.out out/x.err snapshot "$@" is/x.qcow2
	else
		qemu-img snapshot "$@" is/x.qcow2 >out/x.out 2>out/x.err
		QX_RC=$?
	fi
	if crashed "$QX_RC" out/x.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/x.err 8
	elif [ "$QX_RC" -ne "$qrc" ]; then
		t_fail "$name: exit status $QX_RC, qemu-img $qrc"
		show out/x.err 2
	elif is_verify "$name"; then
		t_pass "$name"
	fi
}

# is_seq NAME MIX CREATE-OPTS [BACKING]: a sequence of creates, writes,
# applies and deletes.  MIX=x: qimgctl does every step on x.qcow2;
# MIX=mixed: qimgctl and qemu-img take turns.
is_seq() {
	local name=imgs/snapshot/$1 mix=$2 o=$3 back=${4:-} i=0 who step
	want "$name/" || return 0
	N_IMAGES=$((N_IMAGES + 2))
	rm -f is/x.qcow2 is/q.qcow2
	# shellcheck disable=SC2086
	if ! { qemu-img create -q -f qcow2 -o "$o" $back is/x.qcow2 16M &&
		qemu-io -f qcow2 -c "write -P 1 0 64k" -c "write -P 2 1M 3k" \
			-c "write -c -P 3 4M 64k" -c "write -z 6M 128k" \
			is/x.qcow2 && cp is/x.qcow2 is/q.qcow2; } >out/is.log 2>&1; then
		t_fail "$name: could not make the image"
		show out/is.log 3
		return
	fi
	local -a steps=("-c s1" "io write -P 9 0 128k" "-c s2" "-c s1"
		"io write -P 8 64k 192k" "-a s1" "io write -P 7 1M 4k"
		"-d s1" "-a 2" "-c s4" "-d s2" "-a s1" "-d s1" "-d s4"
		"io write -P 6 2M 64k")
	for step in "${steps[@]}"; do
		i=$((i + 1))
		who=x
		[ "$mix" = mixed ] && [ $((i % 2)) = 0 ] && who=q
		# shellcheck disable=SC2086
		case $step in
		io*) is_step "$name/$i-${step// /_}" x io "${step#io }" ;;
		*) is_step "$name/$i-$who${step// /}" "$who" $step ;;
		esac
	done
}

# is_content: the data of snapshots qimgctl made, read by qemu-img itself
# (convert -l), equal to the twin's, and qemu-img info's view of them
# equal to qimgctl info's.
is_content() {
	local name=imgs/snapshot/content s
	want "$name" "$name/" || return 0
	N_IMAGES=$((N_IMAGES + 2))
	rm -f is/x.qcow2 is/q.qcow2
	{
		qemu-img create -q -f qcow2 is/x.qcow2 8M &&
		qemu-io -f qcow2 -c "write -P 1 0 128k" is/x.qcow2 &&
		cp is/x.qcow2 is/q.qcow2 &&
		"$QIMGCTL" snapshot -c one is/x.qcow2 &&
		qemu-img snapshot -c one is/q.qcow2 &&
		qemu-io -f qcow2 -c "write -P 2 64k 128k" is/x.qcow2 &&
		qemu-io -f qcow2 -c "write -P 2 64k 128k" is/q.qcow2 &&
		"$QIMGCTL" snapshot -c two is/x.qcow2 &&
		qemu-img snapshot -c two is/q.qcow2 &&
		qemu-img resize -q is/x.qcow2 12M &&
		qemu-img resize -q is/q.qcow2 12M &&
		qemu-io -f qcow2 -c "write -P 3 10M 64k" is/x.qcow2 &&
		qemu-io -f qcow2 -c "write -P 3 10M 64k" is/q.qcow2
	} >out/is.log 2>&1 || {
		t_fail "$name: could not make the images"
		show out/is.log 3
		return
	}
	for s in one two; do
		N_CMP=$((N_CMP + 1))
		rm -f is/xs.raw is/qs.raw
		if ! qemu-img convert -l "snapshot.name=$s" -O raw is/x.qcow2 is/xs.raw ||
			! qemu-img convert -l "snapshot.name=$s" -O raw is/q.qcow2 is/qs.raw; then
			t_fail "$name/$s: qemu-img convert -l failed"
		elif ! cmp -s is/xs.raw is/qs.raw; then
			t_fail "$name/$s: snapshot data differs from qemu-img's"
		else
			t_pass "$name/$s"
		fi
	done
	N_CMP=$((N_CMP + 1))
	qemu-img info --output=json is/x.qcow2 >out/q.json 2>&1
	qx out/x.json out/x.err info --json is/x.qcow2
	if ! jcmp info out/q.json out/x.json; then
		t_fail "$name/info: qimgctl info differs from qemu-img info"
		show out/diff 4
	else
		t_pass "$name/info"
	fi
	# Applying the snapshot taken at 8M shrinks the image back, as in
	# qemu-img; then deleting everything leaves what qemu-img leaves.
	is_step "$name/apply-smaller" x -a one
	is_step "$name/delete-1" x -d one
	is_step "$name/delete-2" x -d two
	N_CMP=$((N_CMP + 1))
	if [ "$(qhdr is/x.qcow2 60 12)" = "$(qhdr is/q.qcow2 60 12)" ]; then
		t_pass "$name/header-empty-table"
	else
		t_fail "$name/header-empty-table: nb_snapshots/snapshots_offset $(qhdr is/x.qcow2 60 12), qemu-img $(qhdr is/q.qcow2 60 12)"
	fi
}

# qhdr FILE OFF LEN: bytes of a file in hex.
qhdr() {
	od -A n -t x1 -j "$2" -N "$3" "$1" | tr -d ' \n'
}

# is_list: a table with what qemu-img never writes (VM clock over 99 h,
# VM state sizes, icount absent and negative, short extra data, a long
# ID, dates at both ends of the range), listed in three time zones.
is_list() {
	local name=imgs/snapshot/list tz n
	want "$name/" || return 0
	N_IMAGES=$((N_IMAGES + 1))
	rm -f is/l.qcow2
	{
		qemu-img create -q -f qcow2 is/l.qcow2 1M &&
		for n in a bb nnnnnnnnnnnnnnnnnnnnnnnnnn x y "with space"; do
			qemu-img snapshot -c "$n" is/l.qcow2 || exit 1
		done &&
		python3 "$SNAPTAB" is/l.qcow2 0 clock=360000123456789 vmstate=1610612736 date=0 &&
		python3 "$SNAPTAB" is/l.qcow2 1 icount=-1 clock=59999999999 vmstate=5000000000 &&
		python3 "$SNAPTAB" is/l.qcow2 2 extra=16 id=123456789012345 &&
		python3 "$SNAPTAB" is/l.qcow2 3 extra=8 icount=77 vmstate=1023 &&
		python3 "$SNAPTAB" is/l.qcow2 4 icount=-5 date=4294967295
	} >out/is.log 2>&1 || {
		t_fail "$name: could not make the image"
		show out/is.log 3
		return
	}
	for tz in UTC America/New_York Asia/Kolkata; do
		TZ=$tz ia_same_in is "$name/$tz" snapshot -l l.qcow2
	done
	ia_same_in is "$name/force-share" snapshot -l -U l.qcow2
}

# ia_same_in DIR NAME ARGS...: ia_same in another directory.
ia_same_in() {
	local dir=$1 name=$2 qrc
	shift 2
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	(cd "$dir" && qemu-img "$@" >../out/q.out 2>../out/q.err)
	qrc=$?
	(cd "$dir" && qx ../out/x.out ../out/x.err "$@"; exit "$QX_RC")
	QX_RC=$?
	if crashed "$QX_RC" out/x.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/x.err 8
	elif [ "$qrc" -ne "$QX_RC" ]; then
		t_fail "$name: exit status $QX_RC, qemu-img $qrc"
		show out/x.err 2
	elif ! cmp -s out/q.out out/x.out; then
		t_fail "$name: output differs from qemu-img's"
		diff out/q.out out/x.out | show /dev/stdin 6
	elif [ "$qrc" -ne 0 ] && [ "$(grep -c . out/x.err)" -ne 1 ]; then
		t_fail "$name: $(grep -c . out/x.err) lines on stderr, expected one"
		show out/x.err 4
	else
		t_pass "$name"
	fi
}

# is_errors: bad command lines and images, exit status and stdout as
# qemu-img's, one line on stderr, the image unchanged.
is_errors() {
	local sum
	want imgs/snapshot/err/ || return 0
	rm -f is/e.qcow2 is/e.raw
	qemu-img create -q -f qcow2 is/e.qcow2 1M >/dev/null &&
		qemu-img snapshot -c one is/e.qcow2 &&
		qemu-img snapshot -c two is/e.qcow2 &&
		qemu-img create -q -f raw is/e.raw 1M >/dev/null
	N_IMAGES=$((N_IMAGES + 2))
	sum=$(md5sum <is/e.qcow2)
	ia_same_in is imgs/snapshot/err/apply-missing snapshot -a nope e.qcow2
	ia_same_in is imgs/snapshot/err/delete-missing snapshot -d nope e.qcow2
	ia_same_in is imgs/snapshot/err/delete-by-id snapshot -d 1 e.qcow2
	ia_same_in is imgs/snapshot/err/no-file snapshot -c x
	ia_same_in is imgs/snapshot/err/two-files snapshot -l e.qcow2 e.qcow2
	ia_same_in is imgs/snapshot/err/mixed-ops snapshot -l -c x e.qcow2
	ia_same_in is imgs/snapshot/err/no-arg snapshot e.qcow2 -c
	ia_same_in is imgs/snapshot/err/bad-option snapshot -x e.qcow2
	ia_same_in is imgs/snapshot/err/share-write snapshot -U -c x e.qcow2
	ia_same_in is imgs/snapshot/err/missing-file snapshot -c x nope.qcow2
	ia_same_in is imgs/snapshot/err/missing-list snapshot -l nope.qcow2
	ia_same_in is imgs/snapshot/err/raw-create snapshot -c x e.raw
	ia_same_in is imgs/snapshot/err/raw-list snapshot -l e.raw
	ia_same_in is imgs/snapshot/err/no-op snapshot e.qcow2
	N_CMP=$((N_CMP + 1))
	if [ "$(md5sum <is/e.qcow2)" = "$sum" ]; then
		t_pass imgs/snapshot/err/unchanged
	else
		t_fail "imgs/snapshot/err/unchanged: a failed command changed the image"
	fi
	# Persistent bitmaps: qemu-img refuses every apply, before it looks
	# the snapshot up; creating and deleting snapshots still work.
	rm -f is/bm.qcow2
	qemu-img create -q -f qcow2 is/bm.qcow2 1M >/dev/null &&
		qemu-img snapshot -c one is/bm.qcow2 &&
		qemu-img bitmap --add is/bm.qcow2 b0
	N_IMAGES=$((N_IMAGES + 1))
	ia_same_in is imgs/snapshot/err/bitmaps-apply snapshot -a one bm.qcow2
	if want imgs/snapshot/err/bitmaps-apply-message; then
		# (qemu-img rewrites the bitmap directory even when it refuses.)
		N_CMP=$((N_CMP + 1))
		sum=$(md5sum <is/bm.qcow2)
		qx out/x.out out/x.err snapshot -a one is/bm.qcow2
		if grep -q "Could not apply snapshot 'one': Device has active dirty bitmaps" out/x.err &&
			[ "$(md5sum <is/bm.qcow2)" = "$sum" ]; then
			t_pass imgs/snapshot/err/bitmaps-apply-message
		else
			t_fail "imgs/snapshot/err/bitmaps-apply-message: not qemu-img's refusal, or the image changed"
			show out/x.err 2
		fi
	fi
	ia_same_in is imgs/snapshot/err/bitmaps-apply-missing snapshot -a nope bm.qcow2
	# A refcount that cannot go higher (refcount_bits=1): both refuse
	# (qemu-img leaks a cluster doing so), ours stays clean.
	rm -f is/r1.qcow2
	qemu-img create -q -f qcow2 -o refcount_bits=1 is/r1.qcow2 1M >/dev/null &&
		qemu-io -f qcow2 -c "write 0 64k" is/r1.qcow2 >/dev/null &&
		cp is/r1.qcow2 is/r1q.qcow2
	if want imgs/snapshot/err/refcount-overflow; then
		N_CMP=$((N_CMP + 1))
		qemu-img snapshot -c x is/r1q.qcow2 >/dev/null 2>&1
		local qrc=$?
		qx out/x.out out/x.err snapshot -c x is/r1.qcow2
		if [ "$QX_RC" -ne "$qrc" ] || [ "$(grep -c . out/x.err)" -ne 1 ]; then
			t_fail "imgs/snapshot/err/refcount-overflow: exit status $QX_RC, qemu-img $qrc"
			show out/x.err 2
		elif ! qemu-img check -q is/r1.qcow2 >/dev/null 2>&1; then
			t_fail "imgs/snapshot/err/refcount-overflow: qemu-img check fails afterwards"
		else
			t_pass imgs/snapshot/err/refcount-overflow
		fi
	fi
	# Images in use: qemu-io holding is/e.qcow2 read-write.
	if hold_start qemu-io -f qcow2 is/e.qcow2; then
		ia_same_in is imgs/snapshot/err/locked-create snapshot -c x e.qcow2
		ia_same_in is imgs/snapshot/err/locked-delete snapshot -d one e.qcow2
		ia_same_in is imgs/snapshot/err/locked-apply snapshot -a one e.qcow2
		ia_same_in is imgs/snapshot/err/locked-list snapshot -l e.qcow2
		ia_same_in is imgs/snapshot/err/locked-list-U snapshot -l -U e.qcow2
		hold_stop
	else
		t_fail "imgs/snapshot/err/locked: could not start qemu-io"
	fi
}


# ---------------------------------------------------------------------------
# bitmap

# ib_list IMG: qemu-img info's bitmap list (names, flags, granularity).
ib_list() {
	qemu-img info "$1" 2>&1 | sed -n '/bitmaps:/,/refcount bits:/p'
}

# ib_nbd IMG TAG BITMAP...: the dirty extents of each bitmap as qemu
# reads them (one qemu-nbd exports them all; qemu-img map over NBD says
# "data": false where a bitmap is dirty), one "offset length" per line
# in out/TAG.BITMAP.
ib_nbd() {
	local img=$1 tag=$2 sock=$PWD/out/nbd.sock pid i b
	shift 2
	local -a bs=()
	for b in "$@"; do
		bs+=(-B "$b")
	done
	rm -f "$sock"
	qemu-nbd -r -t -f qcow2 "${bs[@]}" --socket="$sock" "$img" >out/nbd.log 2>&1 &
	pid=$!
	for ((i = 0; i < 200; i++)); do
		[ -S "$sock" ] && break
		sleep 0.01
	done
	for b in "$@"; do
		qemu-img map --output=json --image-opts \
			"driver=nbd,server.type=unix,server.path=$sock,x-dirty-bitmap=qemu:dirty-bitmap:$b" 2>&1 |
			grep '"data": false' |
			sed -E 's/.*"start": ([0-9]+), "length": ([0-9]+).*/\1 \2/' >"out/$tag.$b"
	done
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	rm -f "$sock"
}

# ib_ours IMG NAME: qimgctl bitmap --export, the same way.
ib_ours() {
	"$QIMGCTL" bitmap --export "$2" "$1" 2>&1 |
		sed -E -n 's/.*"offset": ([0-9]+), "length": ([0-9]+).*/\1 \2/p'
}

# ib_verify NAME: qemu-img check exits 0 on ib/x.qcow2 and its bitmap
# list is the twin's.
ib_verify() {
	local name=$1 rc
	qemu-img check -q ib/x.qcow2 >out/c.out 2>&1
	rc=$?
	if [ $rc -ne 0 ]; then
		t_fail "$name: qemu-img check exits $rc"
		show out/c.out 4
		return 1
	fi
	ib_list ib/q.qcow2 >out/q.l
	ib_list ib/x.qcow2 >out/x.l
	if ! cmp -s out/q.l out/x.l; then
		t_fail "$name: qemu-img info's bitmaps differ from the twin's"
		diff out/q.l out/x.l | show /dev/stdin 6
		return 1
	fi
	return 0
}

# ib_step NAME WHO ARGS...: as is_step, for qemu-img bitmap (FILE is
# written "@").
ib_step() {
	local name=$1 who=$2 qrc a
	shift 2
	N_CMP=$((N_CMP + 1))
	if [ "$1" = io ]; then
		qemu-io -f qcow2 -c "$2" ib/x.qcow2 >/dev/null 2>&1 &&
			qemu-io -f qcow2 -c "$2" ib/q.qcow2 >/dev/null 2>&1
		ib_verify "$name" && t_pass "$name"
		return
	fi
	local -a qa=() xa=()
	for a in "$@"; do
		if [ "$a" = @ ]; then
			qa+=(ib/q.qcow2)
			xa+=(ib/x.qcow2)
		else
			qa+=("$a")
			xa+=("$a")
		fi
	done
	qemu-img bitmap "${qa[@]}" >out/q.out 2>&1
	qrc=$?
	if [ "$who" = x ]; then
		qx out/x.out out/x.err bitmap "${xa[@]}"
	else
		qemu-img bitmap "${xa[@]}" >out/x.out 2>out/x.err
		QX_RC=$?
	fi
	if crashed "$QX_RC" out/x.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/x.err 8
	elif [ "$QX_RC" -ne "$qrc" ]; then
		t_fail "$name: exit status $QX_RC, qemu-img $qrc"
		show out/x.err 2
	elif ib_verify "$name"; then
		t_pass "$name"
	fi
}

# ib_export NAME BITMAP...: for each bitmap, qimgctl --export of x equals
# what qemu reads from the twin, and what qemu reads from x.
ib_export() {
	local name=$1 b
	shift
	ib_nbd ib/q.qcow2 q "$@"
	ib_nbd ib/x.qcow2 x "$@"
	for b in "$@"; do
		N_CMP=$((N_CMP + 1))
		ib_ours ib/x.qcow2 "$b" >out/o.e
		if ! cmp -s "out/q.$b" "out/x.$b"; then
			t_fail "$name/$b: qemu reads other dirty extents from qimgctl's image than from qemu-img's"
			diff "out/q.$b" "out/x.$b" | show /dev/stdin 4
		elif ! cmp -s "out/q.$b" out/o.e; then
			t_fail "$name/$b: qimgctl --export differs from qemu's dirty extents"
			diff "out/q.$b" out/o.e | show /dev/stdin 4
		else
			t_pass "$name/$b"
		fi
	done
}

# ib_seq NAME MIX CREATE-OPTS: adds, writes (qemu-io marks the enabled
# bitmaps dirty), disables, merges, clears and removes.
ib_seq() {
	local name=imgs/bitmap/$1 mix=$2 o=$3 i=0 who step
	want "$name/" || return 0
	command -v qemu-nbd >/dev/null || {
		t_skip "$name" "qemu-nbd is not installed"
		return
	}
	N_IMAGES=$((N_IMAGES + 2))
	mkdir -p ib
	rm -f ib/x.qcow2 ib/q.qcow2
	if ! { qemu-img create -q -f qcow2 -o "$o" ib/x.qcow2 16M &&
		cp ib/x.qcow2 ib/q.qcow2; } >out/ib.log 2>&1; then
		t_fail "$name: could not make the image"
		show out/ib.log 3
		return
	fi
	local -a steps=("--add @ b1" "--add -g 4k @ b2" "io write 100k 8k"
		"--disable @ b2" "io write 5M 1M" "--add -g 512 @ b3"
		"io write 3M 1000" "export b1 b2 b3" "--merge b1 @ b3"
		"--add --merge b2 @ b4" "--enable @ b2" "io write 7M 64k"
		"--clear @ b1" "--add -g 2M --disable @ b5"
		"export b1 b2 b3 b4 b5" "--remove @ b2" "--remove @ b1"
		"--remove --add @ b3" "--remove @ b3"
		"--remove @ b4" "--remove @ b5")
	for step in "${steps[@]}"; do
		i=$((i + 1))
		who=x
		[ "$mix" = mixed ] && [ $((i % 2)) = 0 ] && who=q
		# shellcheck disable=SC2086
		case $step in
		io*) ib_step "$name/$i-${step// /_}" x io "${step#io }" ;;
		export*) ib_export "$name/$i-export" ${step#export } ;;
		*) ib_step "$name/$i-$who${step// /}" "$who" $step ;;
		esac
	done
	# No bitmaps left: no extension, no autoclear bit, as qemu-img.
	N_CMP=$((N_CMP + 1))
	if [ "$(qhdr ib/x.qcow2 88 8)" = "$(qhdr ib/q.qcow2 88 8)" ] &&
		! qemu-img info ib/x.qcow2 | grep -q bitmaps; then
		t_pass "$name/empty-header"
	else
		t_fail "$name/empty-header: autoclear $(qhdr ib/x.qcow2 88 8), qemu-img $(qhdr ib/q.qcow2 88 8)"
	fi
}

# ib_other: --merge -b SOURCE_FILE, in-use bitmaps, bad input.
ib_other() {
	local name=imgs/bitmap/other
	want "$name/" || return 0
	mkdir -p ib
	rm -f ib/s.qcow2 ib/x.qcow2 ib/q.qcow2 ib/u.qcow2
	{
		qemu-img create -q -f qcow2 ib/s.qcow2 16M &&
		qemu-img bitmap --add -g 4k ib/s.qcow2 src &&
		qemu-io -f qcow2 -c "write 1M 12k" -c "write 9M 100k" ib/s.qcow2 &&
		qemu-img create -q -f qcow2 ib/x.qcow2 16M &&
		qemu-img bitmap --add ib/x.qcow2 d &&
		cp ib/x.qcow2 ib/q.qcow2 &&
		qemu-img create -q -f qcow2 ib/small.qcow2 8M &&
		qemu-img create -q -f qcow2 -o compat=0.10 ib/v2.qcow2 1M &&
		qemu-img create -q -f qcow2 ib/u.qcow2 16M &&
		qemu-img bitmap --add ib/u.qcow2 iu &&
		qemu-img bitmap --add ib/u.qcow2 ok &&
		python3 - ib/u.qcow2 <<'PY'
import struct, sys
with open(sys.argv[1], 'r+b') as f:
    d = f.read(65536)
    p = struct.unpack('>I', d[100:104])[0]
    while True:
        t, n = struct.unpack('>II', d[p:p + 8])
        if t == 0x23852875:
            do = struct.unpack('>Q', d[p + 24:p + 32])[0]
            break
        p += 8 + ((n + 7) & ~7)
    f.seek(do + 12)
    fl = struct.unpack('>I', f.read(4))[0]
    f.seek(do + 12)
    f.write(struct.pack('>I', fl | 1))
PY
	} >out/ib.log 2>&1 || {
		t_fail "$name: could not make the images"
		show out/ib.log 3
		return
	}
	N_IMAGES=$((N_IMAGES + 6))
	ib_step "$name/merge-file" x --merge src -b ib/s.qcow2 -F qcow2 @ d
	ib_export "$name/merge-file" d
	# The export is JSON.
	N_CMP=$((N_CMP + 1))
	if "$QIMGCTL" bitmap --export d ib/x.qcow2 | python3 -c 'import json, sys; a = json.load(sys.stdin); assert a and all(set(e) == {"offset", "length"} for e in a)' 2>out/x.err; then
		t_pass "$name/export-json"
	else
		t_fail "$name/export-json: not a JSON list of offset/length objects"
		show out/x.err 2
	fi
	ia_same_in ib "$name/merge-size" bitmap --merge src -b s.qcow2 small.qcow2 x
	ia_same_in ib "$name/in-use-clear" bitmap --clear u.qcow2 iu
	ia_same_in ib "$name/in-use-merge" bitmap --merge iu u.qcow2 ok
	ia_same_in ib "$name/in-use-disable" bitmap --disable u.qcow2 iu
	ia_same_in ib "$name/exists" bitmap --add x.qcow2 d
	ia_same_in ib "$name/add-add" bitmap --add --add x.qcow2 e2
	ia_same_in ib "$name/missing-remove" bitmap --remove x.qcow2 nope
	ia_same_in ib "$name/missing-clear" bitmap --clear x.qcow2 nope
	ia_same_in ib "$name/missing-enable" bitmap --enable x.qcow2 nope
	ia_same_in ib "$name/missing-disable" bitmap --disable x.qcow2 nope
	ia_same_in ib "$name/missing-merge" bitmap --merge nope x.qcow2 d
	ia_same_in ib "$name/bad-gran-3000" bitmap --add -g 3000 x.qcow2 g
	ia_same_in ib "$name/bad-gran-256" bitmap --add -g 256 x.qcow2 g
	ia_same_in ib "$name/bad-gran-4G" bitmap --add -g 4G x.qcow2 g
	ia_same_in ib "$name/empty-name" bitmap --add x.qcow2 ''
	ia_same_in ib "$name/long-name" bitmap --add x.qcow2 "$(printf 'n%.0s' {1..1100})"
	ia_same_in ib "$name/v2" bitmap --add v2.qcow2 x
	ia_same_in ib "$name/no-action" bitmap x.qcow2 d
	ia_same_in ib "$name/no-name" bitmap --add x.qcow2
	ia_same_in ib "$name/three" bitmap --add x.qcow2 a b
	ia_same_in ib "$name/b-without-merge" bitmap --add -b s.qcow2 x.qcow2 y
	ia_same_in ib "$name/missing-file" bitmap --add nope.qcow2 y
	ia_same_in ib "$name/missing-source" bitmap --merge src -b nope.qcow2 x.qcow2 d
	err_case bitmap-export-missing 1 bitmap --export nope ib/x.qcow2
	err_case bitmap-export-no-file 1 bitmap --export d
	err_case bitmap-export-in-use 1 bitmap --export iu ib/u.qcow2
	# An in-use bitmap can still be removed.
	cp ib/u.qcow2 ib/x.qcow2 && cp ib/u.qcow2 ib/q.qcow2
	ib_step "$name/in-use-remove" x --remove @ iu
	if hold_start qemu-io -f qcow2 ib/x.qcow2; then
		ia_same_in ib "$name/locked-add" bitmap --add x.qcow2 l
		lk_case "$name/locked-export" 1 write - bitmap --export ok ib/x.qcow2
		# A QEMU writing the image has the bitmap in use.
		lk_case "$name/locked-export-U" 1 inconsistent - bitmap --export ok -U ib/x.qcow2
		hold_stop
	else
		t_fail "$name/locked: could not start qemu-io"
	fi
	# A virtual size that is no multiple of the granularity: the last
	# extent ends at the end of the disk, as qemu reports it.
	rm -f ib/x.qcow2 ib/q.qcow2
	if qemu-img create -q -f qcow2 ib/x.qcow2 1000448 >out/ib.log 2>&1 &&
		qemu-img bitmap --add ib/x.qcow2 b &&
		qemu-img bitmap --add -g 1M ib/x.qcow2 big &&
		qemu-io -f qcow2 -c "write 990000 10000" -c "write 0 512" \
			ib/x.qcow2 >>out/ib.log 2>&1 &&
		cp ib/x.qcow2 ib/q.qcow2; then
		ib_export "$name/odd-size" b big
	else
		t_fail "$name/odd-size: could not make the image"
	fi
}

# is_cli: --help of the three commands; every command of `qimgctl --help` is
# one the bash completion offers and one the man page describes.
is_cli() {
	local c cmds
	for c in snapshot bitmap rebase; do
		want "imgs/cli/$c-help" || continue
		N_CMP=$((N_CMP + 1))
		qx out/h.out out/h.err "$c" --help
		if [ "$QX_RC" -ne 0 ] || [ -s out/h.err ] ||
			! head -n 1 out/h.out | grep -q "^usage: qimgctl $c "; then
			t_fail "imgs/cli/$c-help: status $QX_RC, $(head -n 1 out/h.out out/h.err | tr '\n' ' ' | cut -c1-120)"
		else
			t_pass "imgs/cli/$c-help"
		fi
	done
	want imgs/cli/docs || return 0
	N_CMP=$((N_CMP + 1))
	cmds=$("$QIMGCTL" --help | sed -n 's/^  \([a-z]*\) .*/\1/p;s/^  \([a-z]*\)$/\1/p' | sort -u)
	for c in $cmds; do
		if ! grep -q "local cmds=.*\b$c\b" "$top/tools/completion/qimgctl"; then
			t_fail "imgs/cli/docs: bash completion lacks '$c'"
			return
		fi
		if ! grep -q "^\.SS $c\$" "$top/Documentation/man/qimgctl.8"; then
			t_fail "imgs/cli/docs: qimgctl.8 has no section '$c'"
			return
		fi
	done
	t_pass imgs/cli/docs
}

# ---------------------------------------------------------------------------
# rebase

# ir_step NAME ARGS...: qimgctl rebase ARGS on ir/x.qcow2, qemu-img rebase
# on its twin ir/q.qcow2: the same exit status, qemu-img check clean,
# the guest sees what it saw before (unless -u), the twin's contents and
# the twin's backing file in qemu-img info.
ir_step() {
	local name=$1 qrc
	shift
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	cp ir/x.qcow2 ir/before.qcow2
	(cd ir && qemu-img rebase "$@" q.qcow2 >../out/q.out 2>&1)
	qrc=$?
	(cd ir && qx ../out/x.out ../out/x.err rebase "$@" x.qcow2; exit "$QX_RC")
	QX_RC=$?
	if crashed "$QX_RC" out/x.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/x.err 8
	elif [ "$QX_RC" -ne "$qrc" ]; then
		t_fail "$name: exit status $QX_RC, qemu-img $qrc"
		show out/x.err 2
	elif [ "$qrc" -ne 0 ] && [ "$(grep -c . out/x.err)" -ne 1 ]; then
		t_fail "$name: $(grep -c . out/x.err) lines on stderr, expected one"
		show out/x.err 3
	elif [ -n "${IR_NO_BACKING:-}" ]; then
		# The backing file does not exist: only the header can compare.
		if [ "$(qemu-img info ir/x.qcow2 | grep '^backing')" = "$(qemu-img info ir/q.qcow2 | grep '^backing')" ]; then
			t_pass "$name"
		else
			t_fail "$name: backing file differs from qemu-img's"
		fi
	elif ! qemu-img check -q ir/x.qcow2 >out/c.out 2>&1; then
		t_fail "$name: qemu-img check fails"
		show out/c.out 3
	elif [ "$1" != -u ] && ! (cd ir && qemu-img compare -q x.qcow2 before.qcow2); then
		t_fail "$name: the guest sees other data after the rebase"
	elif ! (cd ir && qemu-img compare -q x.qcow2 q.qcow2); then
		t_fail "$name: not identical to qemu-img's rebase"
	elif [ "$(qemu-img info ir/x.qcow2 | grep '^backing')" != "$(qemu-img info ir/q.qcow2 | grep '^backing')" ]; then
		t_fail "$name: backing file differs from qemu-img's"
	elif [ -n "${IR_BITMAPS:-}" ] && ! ir_same_bitmaps; then
		t_fail "$name: the bitmaps' dirty extents differ from qemu-img's"
	else
		t_pass "$name"
	fi
}

# The dirty extents of bitmaps b0 (enabled) and b1 (disabled) of the two.
ir_same_bitmaps() {
	local b
	for b in b0 b1; do
		(cd ir && qx ../out/bq.out ../out/bq.err bitmap --export "$b" q.qcow2 &&
			qx ../out/bx.out ../out/bx.err bitmap --export "$b" x.qcow2)
		cmp -s out/bq.out out/bx.out || return 1
	done
}

# ir_shared NAME OPTS: ir_seq's first steps on an overlay with an internal
# snapshot taken after its writes and two bitmaps: clusters shared with
# the snapshot are copied, the copied clusters dirty in the enabled one.
ir_shared() {
	local name=imgs/rebase/$1 o=$2
	want "$name/" || return 0
	mkdir -p ir
	rm -f ir/*
	if ! (cd ir && qemu-img create -q -f qcow2 b1.qcow2 4M &&
		qemu-io -f qcow2 -c "write -P 1 0 1M" -c "write -P 5 3M 100k" b1.qcow2 &&
		qemu-img create -q -f qcow2 b2.qcow2 3M &&
		qemu-io -f qcow2 -c "write -P 1 0 512k" -c "write -P 2 2M 64k" b2.qcow2 &&
		qemu-img create -q -f qcow2 -o "$o" -b b1.qcow2 -F qcow2 x.qcow2 &&
		qemu-io -f qcow2 -c "write -P 3 128k 64k" -c "write -P 4 3M 8k" x.qcow2 &&
		qemu-img snapshot -c one x.qcow2 &&
		qemu-img bitmap --add x.qcow2 b0 &&
		qemu-img bitmap --add --disable x.qcow2 b1 &&
		cp x.qcow2 q.qcow2) >out/ir.log 2>&1; then
		t_fail "$name: could not make the images"
		show out/ir.log 3
		return
	fi
	N_IMAGES=$((N_IMAGES + 3))
	IR_BITMAPS=1 ir_step "$name/to-shorter-qcow2" -b b2.qcow2 -F qcow2
	IR_BITMAPS=1 ir_step "$name/flatten" -b ""
	if want "$name/snapshot-kept"; then
		N_CMP=$((N_CMP + 1))
		if qemu-img snapshot -l ir/x.qcow2 | grep -q one &&
			(cd ir && qemu-img bitmap --remove q.qcow2 b0 &&
			qemu-img bitmap --remove q.qcow2 b1 &&
			qemu-img bitmap --remove x.qcow2 b0 &&
			qemu-img bitmap --remove x.qcow2 b1 &&
			qemu-img snapshot -a one q.qcow2 &&
			qemu-img snapshot -a one x.qcow2 &&
			qemu-img compare -q q.qcow2 x.qcow2 &&
			qemu-img check -q x.qcow2) >out/ir.log 2>&1; then
			t_pass "$name/snapshot-kept"
		else
			t_fail "$name/snapshot-kept: the snapshot's data differs from qemu-img's"
			show out/ir.log 3
		fi
	fi
}

# ir_seq NAME OPTS: an overlay of a qcow2 base moved to a shorter qcow2
# base, a raw one, back (-u), then flattened (-b "").
ir_seq() {
	local name=imgs/rebase/$1 o=$2
	want "$name/" || return 0
	mkdir -p ir
	rm -f ir/*
	if ! (cd ir && qemu-img create -q -f qcow2 -o "$o" b1.qcow2 4M &&
		qemu-io -f qcow2 -c "write -P 1 0 1M" -c "write -P 5 3M 100k" b1.qcow2 &&
		qemu-img create -q -f qcow2 b2.qcow2 3M &&
		qemu-io -f qcow2 -c "write -P 1 0 512k" -c "write -P 2 2M 64k" b2.qcow2 &&
		qemu-img create -q -f raw b3.raw 4M &&
		qemu-io -f raw -c "write -P 1 0 1M" -c "write -P 5 3M 1000" b3.raw &&
		qemu-img create -q -f qcow2 -o "$o" -b b1.qcow2 -F qcow2 x.qcow2 &&
		qemu-io -f qcow2 -c "write -P 3 128k 64k" -c "write -P 4 3M 8k" x.qcow2 &&
		cp x.qcow2 q.qcow2) >out/ir.log 2>&1; then
		t_fail "$name: could not make the images"
		show out/ir.log 3
		return
	fi
	N_IMAGES=$((N_IMAGES + 5))
	ir_step "$name/to-shorter-qcow2" -b b2.qcow2 -F qcow2
	ir_step "$name/to-raw" -b b3.raw -F raw
	ir_step "$name/unsafe-back" -u -b b1.qcow2 -F qcow2
	ir_step "$name/flatten" -b ""
	IR_NO_BACKING=1 ir_step "$name/unsafe-missing" -u -b nope.qcow2 -F qcow2
	ir_step "$name/unsafe-none" -u
}

ir_errors() {
	local name=imgs/rebase/err
	want "$name/" || return 0
	mkdir -p ir
	rm -f ir/*
	(cd ir && qemu-img create -q -f qcow2 b.qcow2 1M &&
		qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 x.qcow2 &&
		qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 s.qcow2 &&
		qemu-io -f qcow2 -c "write -P 7 0 64k" b.qcow2 &&
		qemu-img snapshot -c one s.qcow2 &&
		cp x.qcow2 q.qcow2) >out/ir.log 2>&1
	N_IMAGES=$((N_IMAGES + 3))
	ia_same_in ir "$name/no-b" rebase x.qcow2
	ia_same_in ir "$name/no-F" rebase -b b.qcow2 x.qcow2
	ia_same_in ir "$name/missing-backing" rebase -b nope.qcow2 -F qcow2 x.qcow2
	ia_same_in ir "$name/missing-file" rebase -b b.qcow2 -F qcow2 nope.qcow2
	ia_same_in ir "$name/no-file" rebase -b b.qcow2 -F qcow2
	ia_same_in ir "$name/bad-option" rebase -x x.qcow2
	if hold_start qemu-io -f qcow2 ir/x.qcow2; then
		ia_same_in ir "$name/locked" rebase -u -b b.qcow2 -F qcow2 x.qcow2
		hold_stop
	else
		t_fail "$name/locked: could not start qemu-io"
	fi
	# -p: qemu-img's meter on a terminal (script(1) gives it one), nothing
	# otherwise.
	if want "$name/progress"; then
		N_CMP=$((N_CMP + 1))
		(cd ir && cp x.qcow2 p.qcow2 && qx ../out/p.out ../out/p.err \
			rebase -p -b "" p.qcow2; exit "$QX_RC")
		QX_RC=$?
		cp ir/x.qcow2 ir/p.qcow2
		if [ "$QX_RC" -ne 0 ] || [ -s out/p.err ] || [ -s out/p.out ]; then
			t_fail "$name/progress: status $QX_RC or output without a terminal"
		elif ! command -v script >/dev/null; then
			t_skip "$name/progress" "script(1) is not installed"
		elif (cd ir && script -qec "$(printf '%q ' "$QIMGCTL" rebase -p -b "" p.qcow2)" \
			/dev/null) >out/p.tty 2>&1 </dev/null &&
			grep -qF '(100.00/100%)' out/p.tty &&
			(cd ir && qemu-img compare -q x.qcow2 p.qcow2); then
			t_pass "$name/progress"
		else
			t_fail "$name/progress: no progress on a terminal, or the data changed"
			show out/p.tty 3
		fi
		rm -f ir/p.qcow2
	fi
	# Internal snapshots with -u (with copying: ir_shared).
	lk_case "$name/snapshots-unsafe" 0 - - rebase -u -b "" ir/s.qcow2
	# An in-use bitmap: qemu-img cannot open the image for writing.
	if (cd ir && qemu-img bitmap --add x.qcow2 b0 &&
		python3 "$here/bmhack.py" x.qcow2 0.flags=3) >out/ir.log 2>&1; then
		ia_same_in ir "$name/bitmap-in-use" rebase -b "" x.qcow2
	else
		t_fail "$name/bitmap-in-use: could not make the image"
	fi
}

part_imgs() {
	# Each group checks the filter itself (names are built per step).
	mkdir -p is
	is_cli
	is_seq default x compat=1.1
	is_seq v2-mixed mixed compat=0.10
	is_seq c512 x cluster_size=512
	is_seq extl2-mixed mixed extended_l2=on
	is_seq rb64-c4k x cluster_size=4k,refcount_bits=64
	is_seq overlay-mixed mixed compat=1.1 "-b $PWD/bk-q.qcow2 -F qcow2"
	is_content
	is_list
	is_errors
	ib_seq default x compat=1.1
	ib_seq c512-mixed mixed cluster_size=512
	ib_seq extl2-mixed mixed extended_l2=on
	ib_other
	ir_seq default compat=1.1
	ir_seq c4k-v2 compat=0.10,cluster_size=4k
	ir_shared shared compat=1.1
	ir_shared shared-c512 cluster_size=512
	ir_seq extl2 extended_l2=on
	ir_seq extl2-c128k extended_l2=on,cluster_size=128k
	ir_shared shared-extl2 extended_l2=on
	ir_errors
}
