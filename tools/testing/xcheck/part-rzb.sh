# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
#
# xcheck part "rzb": the offline `resize` of a qcow2 image over a backing
# file longer than its old size, against qemu-img 7.2 resize.  qemu makes
# the new space read zeroes there (zero clusters from the old size
# rounded up to a (sub)cluster, the cluster holding the old end written);
# version 2 images have no zero flag and fail ("Failed to zero out new
# clusters"), a missing backing file fails, and where the backing file is
# not longer (also a short image in between over a long base) nothing is
# zeroed.  Each case makes a chain once (rz/src), copies it twice, resizes
# t.qcow2 of one copy with qemu-img and of the other with qimgctl, and
# wants: qemu-img's exit status and stdout; then, after success, qemu-img
# check clean on qimgctl's image, qemu-img compare identical to qemu-img's
# result, qemu-img map --output=json equal (host offsets too, unless
# RZ_NO_OFFSETS: there qemu reuses a freed cluster where qimgctl takes a
# new one); after a failure one line on stderr naming RZ_WORD, and the
# image byte for byte as qemu-img left its copy.  The backing files are
# never changed.  Sourced by run; uses its helpers.  Cases rzb/...

# rz_mk BACKING TOPOPTS OLD: the chain in the current directory, top
# t.qcow2 of virtual size OLD (qemu-img create options TOPOPTS, "-" for
# none) over BACKING:
#   qN      a qcow2 file b.qcow2 of size N, all 0x11
#   dN      a QED file b.qed of size N, all 0x11
#   rN      a raw file b.raw of N bytes, all 0x11
#   mM:N    a qcow2 m.qcow2 of size M (0x31 in its first 64k, 0x32 in
#           its last) over a
#           qcow2 b.qcow2 of size N (all 0x11)
#   missing a backing file name that does not exist
# The top holds 0x22 at 512k (64k); RZ_TOPW: more qemu-io commands for it
# (one per word, "_" for a blank), run after RZ_PRE (a shell command).
rz_mk() {
	local bk=$1 o=$2 old=$3 c
	local -a to=() w=(-c "write -P 0x22 512k 64k")
	[ "$o" != - ] && to=(-o "$o")
	for c in ${RZ_TOPW:-}; do
		w+=(-c "${c//_/ }")
	done
	case $bk in
	missing)
		qemu-img create -q -f qcow2 "${to[@]}" -u -b nope.qcow2 \
			-F qcow2 t.qcow2 "$old"
		return
		;;
	q*)
		qemu-img create -q -f qcow2 b.qcow2 "${bk#q}" &&
			qemu-io -f qcow2 -c "write -P 0x11 0 ${bk#q}" b.qcow2 &&
			qemu-img create -q -f qcow2 "${to[@]}" -b b.qcow2 \
				-F qcow2 t.qcow2 "$old"
		;;
	d*)
		qemu-img create -q -f qed b.qed "${bk#d}" &&
			qemu-io -f qed -c "write -P 0x11 0 ${bk#d}" b.qed &&
			qemu-img create -q -f qcow2 "${to[@]}" -b b.qed -F qed \
				t.qcow2 "$old"
		;;
	r*)
		head -c "${bk#r}" /dev/zero | tr '\0' '\021' >b.raw &&
			qemu-img create -q -f qcow2 "${to[@]}" -b b.raw -F raw \
				t.qcow2 "$old"
		;;
	m*)
		local ms=${bk#m}
		ms=${ms%%:*}
		qemu-img create -q -f qcow2 b.qcow2 "${bk#*:}" &&
			qemu-io -f qcow2 -c "write -P 0x11 0 ${bk#*:}" b.qcow2 &&
			qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 \
				m.qcow2 "$ms" &&
			qemu-io -f qcow2 -c "write -P 0x31 0 64k" \
				-c "write -P 0x32 $(($(bytes "$ms") - 65536)) 64k" \
				m.qcow2 &&
			qemu-img create -q -f qcow2 "${to[@]}" -b m.qcow2 \
				-F qcow2 t.qcow2 "$old"
		;;
	*)
		return 1
		;;
	esac && qemu-io -f qcow2 "${w[@]}" t.qcow2 &&
		eval "${RZ_PRE:-true}"
}

# rz_sum DIR: the checksum of every file of DIR but t.qcow2.
rz_sum() {
	local f
	for f in "$1"/*; do
		[ "${f##*/}" = t.qcow2 ] || md5sum <"$f"
	done
}

# rz_case NAME BACKING TOPOPTS OLD NEW [OPTS...]: `resize OPTS t.qcow2
# NEW` of that chain by both tools.  RZ_WORD set: qemu-img must fail and
# qimgctl's message name RZ_WORD.
rz_case() {
	local name=rzb/$1 bk=$2 o=$3 old=$4 new=$5 qrc side sum
	shift 5
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	rm -rf rz/src
	mkdir -p rz/src
	if ! (cd rz/src && rz_mk "$bk" "$o" "$old") >out/rz.log 2>&1; then
		t_fail "$name: could not make the images"
		show out/rz.log 3
		return
	fi
	N_IMAGES=$((N_IMAGES + 1))
	sum=$(rz_sum rz/src)
	for side in q x; do
		rm -rf "rz/$side"
		cp -a rz/src "rz/$side"
	done
	(cd rz/q && qemu-img resize "$@" t.qcow2 "$new" >../../out/q.out \
		2>../../out/q.err </dev/null)
	qrc=$?
	(cd rz/x && qx ../../out/x.out ../../out/x.err resize "$@" t.qcow2 \
		"$new"; exit "$QX_RC")
	QX_RC=$?
	if crashed "$QX_RC" out/x.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/x.err 8
	elif [ "$QX_RC" -ne "$qrc" ]; then
		t_fail "$name: exit status $QX_RC, qemu-img $qrc"
		show out/x.err 2
		show out/q.err 2
	elif [ -n "${RZ_WORD:-}" ] && [ "$qrc" -eq 0 ]; then
		t_fail "$name: qemu-img resize succeeds here"
	elif [ -z "${RZ_WORD:-}" ] && [ "$qrc" -ne 0 ]; then
		t_fail "$name: qemu-img resize fails here (status $qrc)"
		show out/q.err 2
	elif ! cmp -s out/q.out out/x.out; then
		t_fail "$name: stdout differs from qemu-img's"
		diff out/q.out out/x.out | show /dev/stdin 4
	elif [ "$(rz_sum rz/x)" != "$sum" ]; then
		t_fail "$name: a backing file was changed"
	elif [ "$qrc" -ne 0 ]; then
		if [ "$(grep -c . out/x.err)" -ne 1 ]; then
			t_fail "$name: $(grep -c . out/x.err) lines on stderr, expected one"
			show out/x.err 4
		elif ! grep -qF -- "$RZ_WORD" out/x.err; then
			t_fail "$name: stderr does not say '$RZ_WORD'"
			show out/x.err 2
		elif [ -z "${RZ_LAYOUT:-}" ] &&
			! cmp -s rz/q/t.qcow2 rz/x/t.qcow2; then
			t_fail "$name: the image is not left as qemu-img leaves it"
			cmp rz/q/t.qcow2 rz/x/t.qcow2 2>&1 | show /dev/stdin 2
		elif [ -n "${RZ_LAYOUT:-}" ] && ! rz_left "$name"; then
			:
		else
			t_pass "$name"
		fi
	elif [ -s out/x.err ]; then
		t_fail "$name: qimgctl wrote to stderr"
		show out/x.err 3
	elif ! qemu-img check -q rz/x/t.qcow2 >out/chk 2>&1; then
		t_fail "$name: qemu-img check of qimgctl's image is not clean"
		show out/chk 4
	elif ! qemu-img compare -q rz/q/t.qcow2 rz/x/t.qcow2 >out/cmp 2>&1; then
		t_fail "$name: guest data differs from qemu-img resize's"
		qemu-img compare rz/q/t.qcow2 rz/x/t.qcow2 2>&1 | show /dev/stdin 2
	elif ! rz_map rz/q/t.qcow2 >out/q.map || ! rz_map rz/x/t.qcow2 >out/x.map ||
		! cmp -s out/q.map out/x.map; then
		t_fail "$name: qemu-img map differs from qemu-img resize's result"
		diff out/q.map out/x.map | show /dev/stdin 4
	else
		t_pass "$name"
	fi
}

# rz_left: under RZ_LAYOUT, a failed resize left qimgctl's image as
# qemu-img left its own but for where the clusters are (qemu moves a
# growing L1 table even into a cluster it fits in; qimgctl grows it in
# place then): the same size and L1 table size in the header, qemu-img
# check clean, the same guest data.
rz_left() {
	local name=$1
	if [ "$(od -An -tx1 -j24 -N16 rz/q/t.qcow2)" != \
		"$(od -An -tx1 -j24 -N16 rz/x/t.qcow2)" ]; then
		t_fail "$name: size or L1 table size not as qemu-img leaves them"
	elif [ "$(od -An -tx1 -j24 -N8 rz/x/t.qcow2)" != \
		"$(od -An -tx1 -j24 -N8 rz/src/t.qcow2)" ]; then
		t_fail "$name: the size was changed"
	elif ! qemu-img check -q rz/x/t.qcow2 >out/chk 2>&1; then
		t_fail "$name: qemu-img check of qimgctl's image is not clean"
		show out/chk 4
	elif ! qemu-img compare -q rz/q/t.qcow2 rz/x/t.qcow2 >out/cmp 2>&1; then
		t_fail "$name: guest data differs from what qemu-img leaves"
	else
		return 0
	fi
	return 1
}

# rz_map IMG: qemu-img map --output=json, without host offsets under
# RZ_NO_OFFSETS.
rz_map() {
	if [ -n "${RZ_NO_OFFSETS:-}" ]; then
		qemu-img map --output=json "$1" | sed 's/, "offset": [0-9]*//'
	else
		qemu-img map --output=json "$1"
	fi
}

# rz_held NAME FILE: while a qemu-io writes FILE (the backing file) of
# a q8M chain, resize 16M of its 1M top fails for both tools, qimgctl's
# one line naming the lock, and nothing changes.
rz_held() {
	local name=rzb/$1 hf=$2 qrc sum
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	rm -rf rz/src
	mkdir -p rz/src
	if ! (cd rz/src && rz_mk q8M - 1M) >out/rz.log 2>&1; then
		t_fail "$name: could not make the images"
		show out/rz.log 3
		return
	fi
	sum=$(cat rz/src/* | md5sum)
	if ! hold_start qemu-io -f qcow2 "rz/src/$hf"; then
		t_fail "$name: could not start qemu-io"
		return
	fi
	(cd rz/src && qemu-img resize t.qcow2 16M >../../out/q.out \
		2>../../out/q.err </dev/null)
	qrc=$?
	(cd rz/src && qx ../../out/x.out ../../out/x.err resize t.qcow2 16M
	 exit "$QX_RC")
	QX_RC=$?
	hold_stop
	if crashed "$QX_RC" out/x.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/x.err 8
	elif [ "$qrc" -eq 0 ]; then
		t_fail "$name: qemu-img resize succeeds here"
	elif [ "$QX_RC" -ne "$qrc" ]; then
		t_fail "$name: exit status $QX_RC, qemu-img $qrc"
		show out/x.err 2
	elif [ "$(grep -c . out/x.err)" -ne 1 ] || ! grep -q lock out/x.err; then
		t_fail "$name: not one line on stderr naming the lock"
		show out/x.err 3
	elif [ "$(cat rz/src/* | md5sum)" != "$sum" ]; then
		t_fail "$name: a file was changed"
	else
		t_pass "$name"
	fi
}

part_rzb() {
	local u=$((1048576 + 512))

	want rzb/ || return 0
	# 64k clusters, the old end cluster aligned or not, the new end
	# inside the backing file's length or past it.
	rz_case v3-aligned-inside q8M - 1M 4M
	rz_case v3-aligned-past q8M - 1M 16M
	rz_case v3-unaligned-inside q8M - "$u" 4M
	rz_case v3-unaligned-past q8M - "$u" 16M
	rz_case v3-unaligned-rel q8M - "$u" +15M
	# The new end inside the cluster holding the old one: no zero
	# cluster, only that cluster written.
	rz_case v3-head-only q8M - "$u" $((1048576 + 4096))
	rz_case v3-head-full q8M - "$u" $((1048576 + 65536))
	# The image has data of its own in the cluster of the old end.
	RZ_TOPW="write_-P_0x23_1M_512" rz_case v3-head-allocated q8M - \
		"$u" 16M
	# A compressed cluster there: written anew.
	RZ_TOPW="write_-c_-P_0x24_1M_64k" \
		RZ_PRE="qemu-img resize -q --shrink t.qcow2 $u" \
		rz_case v3-head-compressed q8M - 2M 16M
	# The backing file ends inside the new cluster of the old end.
	rz_case v3-backing-ends-in-head q$((1048576 + 4096)) - "$u" 16M
	rz_case v3-lazy q8M lazy_refcounts=on "$u" 16M
	rz_case c512 q8M cluster_size=512 1M 16M
	rz_case c512-unaligned q8M cluster_size=512 $((1048576 + 1536)) 16M
	rz_case c2m q8M cluster_size=2M "$u" 16M
	rz_case c2m-inside q8M cluster_size=2M "$u" 6M
	# Bigger than one L2 table of 4k clusters and than the first
	# refcount block: the L1 table moves (qemu takes the freed old one
	# again for a new table: host offsets differ).
	RZ_NO_OFFSETS=1 rz_case c4k-l1-moves q8M cluster_size=4k "$u" 2G
	# Extended L2: zero subclusters from the old end up.
	rz_case extl2-unaligned q8M extended_l2=on "$u" 16M
	rz_case extl2-sub-aligned q8M extended_l2=on $((1048576 + 2048)) 16M
	rz_case extl2-inside q8M extended_l2=on $((1048576 + 4608)) 1100k
	rz_case extl2-head-only q8M extended_l2=on "$u" $((1048576 + 1024))
	rz_case extl2-last-sub q8M extended_l2=on $((1048576 + 63488 + 512)) 16M
	RZ_TOPW="write_-P_0x23_1M_512" rz_case extl2-head-allocated q8M \
		extended_l2=on "$u" 16M
	# A compressed cluster cannot get zero subclusters: qemu fails.
	RZ_TOPW="write_-c_-P_0x24_1M_64k" \
		RZ_PRE="qemu-img resize -q --shrink t.qcow2 $u" \
		RZ_WORD="Failed to zero out new clusters" \
		rz_case extl2-head-compressed q8M extended_l2=on 2M 16M
	# ... unless no subcluster of it is to be zeroed: then it is
	# written anew, all of it.
	RZ_TOPW="write_-c_-P_0x24_1M_64k" \
		RZ_PRE="qemu-img resize -q --shrink t.qcow2 $((1048576 + 64000))" \
		rz_case extl2-head-compressed-last-sub q8M extended_l2=on 2M 16M
	# Only the image's own backing file counts: a short one over a long
	# base hides nothing (it reads zeroes past its end), a long one
	# over a short base does.
	rz_case chain-short-mid m1M:8M - 2M 16M
	rz_case chain-short-mid-v2 m1M:8M compat=0.10 2M 16M
	rz_case chain-long-mid m8M:1M - "$u" 16M
	# Raw backing files (a length not a multiple of 512 counts whole
	# sectors).
	rz_case raw-backing r8388608 - "$u" 16M
	rz_case raw-backing-odd r1049000 - 1M 16M
	rz_case raw-backing-short r1048576 - 1M 16M
	rz_case qed-backing d8M - "$u" 16M
	# Version 2: no zero flag, so qemu fails, the image unchanged ...
	RZ_WORD="Failed to zero out new clusters" \
		rz_case v2-refused q8M compat=0.10 "$u" 16M
	RZ_WORD="Failed to zero out new clusters" \
		rz_case v2-refused-aligned q8M compat=0.10 1M 2M
	# ... but for the L1 table, grown before it fails.
	RZ_LAYOUT=1 RZ_WORD="Failed to zero out new clusters" \
		rz_case v2-refused-l1-grown q8M compat=0.10,cluster_size=512 1M 2M
	# Nothing past the cluster of the old end: only that written.
	rz_case v2-head-only q8M compat=0.10 "$u" $((1048576 + 65536))
	# The backing file not longer: nothing to hide.
	rz_case v2-backing-shorter q1M compat=0.10 1M 16M
	rz_case v2-backing-equal q2M compat=0.10 2M 16M
	# A missing backing file fails, as in qemu-img, whatever the size.
	RZ_WORD="could not open backing file" \
		rz_case missing-backing missing - 1M 16M
	RZ_WORD="could not open backing file" \
		rz_case missing-backing-shrink missing - 1M 512k --shrink
	# The backing file is locked for reading, as qemu-img locks it.
	rz_held backing-locked b.qcow2
	# With internal snapshots: resize/snapshot-grow-backing/* (part-imgw).
	# Shrinking over a longer backing file hides nothing.
	rz_case shrink q8M - 4M $u --shrink
	rz_case shrink-c512 q8M cluster_size=512 4M 1M --shrink
	RZ_WORD="Use the --shrink option" \
		rz_case shrink-no-flag q8M - 4M 1M
	# Same size: nothing to do.
	rz_case same-size q8M - "$u" "$u"
}
