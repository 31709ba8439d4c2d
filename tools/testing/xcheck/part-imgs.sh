# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
#
# xcheck part (sourced by run): snapshot and bitmap, each against qemu-img
# 7.2 in both directions.  A twin image gets every step from qemu-img
# alone; the image under test gets it from qimgctl (or, in the mixed
# sequences, from qimgctl and qemu-img in turn, each working on what the
# other wrote).  After every step: qemu-img check exits 0 on it, qemu-img
# compare finds it identical to the twin, and the snapshot list (or the
# bitmap list of qemu-img info) agrees with the twin's.  Uses run's
# helpers (want, qx, t_pass, t_fail, show, jcmp, N_CMP, N_IMAGES).

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

part_imgs() {
	want imgs/ || return 0
	mkdir -p is
	is_seq default x compat=1.1
	is_seq v2-mixed mixed compat=0.10
	is_seq c512 x cluster_size=512
	is_seq extl2-mixed mixed extended_l2=on
	is_seq rb64-c4k x cluster_size=4k,refcount_bits=64
	is_seq overlay-mixed mixed compat=1.1 "-b $PWD/bk-q.qcow2 -F qcow2"
	is_content
	is_list
	is_errors
}
