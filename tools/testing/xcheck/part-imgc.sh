# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
#
# xcheck part (sourced by run): commit, against qemu-img 7.2 commit.
# Each case makes a backing chain once (ic/src: qemu-img and qemu-io, or
# qimgctl create for the "ours" chains), copies it twice, commits one copy
# with qemu-img and the other with qimgctl, and then wants for every file
# of the chain: the same exit status and stdout; qemu-img check exits 0
# on qimgctl's file; qemu-img compare finds it identical to qemu-img's;
# qemu-img map of both shows the same guest layout (host offsets left
# out: where clusters land in the file may differ); a file qemu-img left
# untouched (-d, -b, the images in between) is untouched by qimgctl too;
# and after a qemu-io write into both top images they still compare
# equal and check clean.  The error cases want qemu-img's exit status,
# one line on stderr and the files unchanged.  Uses run's helpers (want,
# qx, t_pass, t_fail, show, jcmp, crashed, hold_start, lk_case, N_CMP,
# N_IMAGES).

# ic_fmt FILE: the format a chain file has (by its name).
ic_fmt() {
	case $1 in *.raw) echo raw ;; *) echo qcow2 ;; esac
}

# ic_mk: the chains, made in the current directory (IC_KIND says which).
# Every chain's top image is t.qcow2.
ic_mk() {
	local -a w=(-c "write -P 0x21 64k 64k" -c "write -z 256k 128k"
		-c "write -z -u 448k 64k" -c "write -c -P 0x23 2M 64k"
		-c "write -P 0x24 3M 4k" -c "discard 576k 64k"
		-c "write -P 0x25 1000 3000")
	case $IC_KIND in
	v3 | v2 | v3-on-v2 | c4k-on-c64k | base-c2m | base-c512 | \
		base-extl2 | top-extl2 | top-prealloc | zstd | snap-top | \
		snap-top-v2 | bitmap-top | snap-bitmap-top | snap-base | \
		bitmap-base | snap-bitmap-base | snap-base-c512)
		local bo=compat=1.1 to=compat=1.1
		case $IC_KIND in
		v2 | snap-top-v2) bo=compat=0.10 to=compat=0.10 ;;
		v3-on-v2) bo=compat=0.10 ;;
		c4k-on-c64k) to=cluster_size=4k ;;
		base-c2m) bo=cluster_size=2M ;;
		base-c512 | snap-base-c512) bo=cluster_size=512 ;;
		base-extl2) bo=extended_l2=on,cluster_size=128k ;;
		top-extl2) to=extended_l2=on ;;
		top-prealloc)
			# Every cluster allocated: no compressed writes.
			to=extended_l2=on,preallocation=metadata
			w=(-c "write -P 0x21 64k 64k" -c "write -z 256k 128k"
				-c "write -z -u 448k 64k" -c "write -P 0x24 3M 4k"
				-c "discard 576k 64k" -c "write -P 0x25 1000 3000")
			;;
		zstd) to=compression_type=zstd ;;
		esac
		qemu-img create -q -f qcow2 -o "$bo" b.qcow2 4M &&
			qemu-io -f qcow2 -c "write -P 0x11 0 1M" \
				-c "write -P 0x12 3M 64k" b.qcow2 || return 1
		# The base with an internal snapshot and/or bitmaps: the
		# commit writes into clusters and tables shared with s0, the
		# enabled bitmap bm1 marks them, the disabled bm2 does not.
		case $IC_KIND in
		snap-base | snap-base-c512) qemu-img snapshot -c s0 b.qcow2 ;;
		bitmap-base | snap-bitmap-base)
			qemu-img bitmap --add b.qcow2 bm1 &&
				qemu-img bitmap --add --disable b.qcow2 bm2 || return 1
			[ "$IC_KIND" = bitmap-base ] ||
				qemu-img snapshot -c s0 b.qcow2
			;;
		esac || return 1
		qemu-img create -q -f qcow2 -o "$to" -b b.qcow2 \
				-F qcow2 t.qcow2 &&
			qemu-io -f qcow2 "${w[@]}" t.qcow2 || return 1
		case $IC_KIND in
		base-c512 | base-c2m | base-extl2 | snap-base-c512) return 0 ;;
		esac
		# A compressed cluster in the base, partly overwritten above.
		qemu-io -f qcow2 -c "write -c -P 0x13 1M 64k" b.qcow2 &&
			qemu-io -f qcow2 -c "write -P 0x26 1M 4k" t.qcow2 || return 1
		case $IC_KIND in
		snap-top | snap-top-v2) qemu-img snapshot -c s1 t.qcow2 ;;
		bitmap-top) qemu-img bitmap --add t.qcow2 bm0 ;;
		snap-bitmap-top)
			# Written after the snapshot: clusters of its own that
			# the emptying frees (and qemu uses again for L2 tables).
			qemu-img bitmap --add t.qcow2 bm0 &&
				qemu-img snapshot -c s1 t.qcow2 &&
				qemu-io -f qcow2 -c "write -P 0x27 64k 128k" t.qcow2
			;;
		esac
		;;
	snap-big)
		# Several L1 entries, some without an L2 table; a snapshot
		# shares some clusters, others are written after it.
		qemu-img create -q -f qcow2 b.qcow2 1536M &&
			qemu-io -f qcow2 -c "write -P 0x11 0 1M" b.qcow2 &&
			qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 t.qcow2 &&
			qemu-io -f qcow2 -c "write -P 0x21 0 128k" \
				-c "write -P 0x22 1G 64k" -c "write -z 1M 64k" t.qcow2 &&
			qemu-img snapshot -c s1 t.qcow2 &&
			qemu-io -f qcow2 -c "write -P 0x23 64k 64k" \
				-c "write -P 0x24 1100M 64k" t.qcow2
		;;
	raw)
		qemu-img create -q -f raw b.raw 4M &&
			qemu-io -f raw -c "write -P 0x11 0 1M" -c "write -P 0x12 3M 64k" b.raw &&
			qemu-img create -q -f qcow2 -b b.raw -F raw t.qcow2 &&
			qemu-io -f qcow2 "${w[@]}" t.qcow2
		;;
	grow | grow-raw)
		if [ "$IC_KIND" = grow ]; then
			qemu-img create -q -f qcow2 b.qcow2 1M &&
				qemu-io -f qcow2 -c "write -P 0x11 0 1M" b.qcow2 &&
				qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 t.qcow2 5M
		else
			qemu-img create -q -f raw b.raw 1000k &&
				qemu-io -f raw -c "write -P 0x11 0 1000k" b.raw &&
				qemu-img create -q -f qcow2 -b b.raw -F raw t.qcow2 5M
		fi && qemu-io -f qcow2 -c "write -P 0x21 512k 64k" \
			-c "write -P 0x22 3M 128k" -c "write -z 4M 64k" \
			-c "write -P 0x23 $((5 * 1048576 - 512)) 512" t.qcow2
		;;
	chain3 | chain3-v2mid)
		local mo=compat=1.1
		[ "$IC_KIND" = chain3-v2mid ] && mo=compat=0.10
		qemu-img create -q -f qcow2 b.qcow2 4M &&
			qemu-io -f qcow2 -c "write -P 0x11 0 2M" b.qcow2 &&
			qemu-img create -q -f qcow2 -o "$mo" -b b.qcow2 -F qcow2 m.qcow2 &&
			qemu-io -f qcow2 -c "write -P 0x31 512k 128k" \
				-c "write -z 1M 64k" -c "write -c -P 0x32 3M 64k" m.qcow2 &&
			qemu-img create -q -f qcow2 -b m.qcow2 -F qcow2 t.qcow2 &&
			qemu-io -f qcow2 -c "write -P 0x21 64k 64k" \
				-c "write -z 576k 64k" -c "write -P 0x22 1M 4k" \
				-c "write -z 1536k 128k" t.qcow2
		;;
	top-smaller)
		qemu-img create -q -f qcow2 b.qcow2 4M &&
			qemu-io -f qcow2 -c "write -P 0x11 0 4M" b.qcow2 &&
			qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 t.qcow2 2M &&
			qemu-io -f qcow2 -c "write -P 0x21 64k 64k" \
				-c "write -z 1M 128k" -c "write -P 0x22 $((2 * 1048576 - 512)) 512" t.qcow2
		;;
	short-mid | short-mid-v2)
		# The image in between ends early: the top reads zeroes there
		# (and committed into it, it must keep them over its backing).
		local mo=compat=1.1
		[ "$IC_KIND" = short-mid-v2 ] && mo=compat=0.10
		qemu-img create -q -f qcow2 b.qcow2 4M &&
			qemu-io -f qcow2 -c "write -P 0x11 0 4M" b.qcow2 &&
			qemu-img create -q -f qcow2 -o "$mo" -b b.qcow2 -F qcow2 m.qcow2 1000k &&
			qemu-io -f qcow2 -c "write -P 0x31 512k 64k" m.qcow2 &&
			qemu-img create -q -f qcow2 -b m.qcow2 -F qcow2 t.qcow2 4M &&
			qemu-io -f qcow2 -c "write -P 0x21 64k 64k" \
				-c "write -P 0x22 2M 64k" t.qcow2
		;;
	zero-only)
		qemu-img create -q -f qcow2 b.qcow2 2M &&
			qemu-io -f qcow2 -c "write -P 0x11 0 2M" b.qcow2 &&
			qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 t.qcow2 &&
			qemu-io -f qcow2 -c "write -z 0 256k" -c "write -z -u 1M 512k" t.qcow2
		;;
	empty-top)
		qemu-img create -q -f qcow2 b.qcow2 2M &&
			qemu-io -f qcow2 -c "write -P 0x11 0 1M" b.qcow2 &&
			qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 t.qcow2
		;;
	v3-discard)
		# An L1 table too large for one refcount block's worth of
		# clusters: qemu frees cluster by cluster instead of rebuilding.
		qemu-img create -q -f qcow2 b.qcow2 1M &&
			qemu-io -f qcow2 -c "write -P 0x11 0 1M" b.qcow2 &&
			qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=64 \
				-b b.qcow2 -F qcow2 t.qcow2 128M &&
			qemu-io -f qcow2 -c "write -P 0x21 4k 8k" -c "write -z 64k 4k" \
				-c "write -P 0x22 100M 4k" t.qcow2
		;;
	ours | ours-raw)
		# The chain made by qimgctl (create, convert), written by qemu-io.
		if [ "$IC_KIND" = ours ]; then
			"$QIMGCTL" create -q -f qcow2 b.qcow2 4M &&
				qemu-io -f qcow2 -c "write -P 0x11 0 1M" b.qcow2 &&
				"$QIMGCTL" create -q -b b.qcow2 -F qcow2 t.qcow2
		else
			qemu-img create -q -f qcow2 src.qcow2 4M &&
				qemu-io -f qcow2 -c "write -P 0x11 0 1M" src.qcow2 &&
				"$QIMGCTL" convert -O raw src.qcow2 b.raw &&
				rm -f src.qcow2 &&
				"$QIMGCTL" create -q -b b.raw -F raw t.qcow2
		fi && qemu-io -f qcow2 "${w[@]}" t.qcow2
		;;
	*)
		echo "ic_mk: unknown kind $IC_KIND"
		return 1
		;;
	esac
}

# ic_make KIND: ic/src holds that chain (made once per kind).
IC_MADE=
ic_make() {
	[ "$IC_MADE" = "$1" ] && return 0
	IC_MADE=
	rm -rf ic/src
	mkdir -p ic/src
	if ! (cd ic/src && IC_KIND=$1 ic_mk) >out/ic.log 2>&1; then
		return 1
	fi
	IC_MADE=$1
	N_IMAGES=$((N_IMAGES + $(find ic/src -type f | wc -l)))
}

# ic_verify NAME: qimgctl's ic/x against qemu-img's ic/q, file by file.
ic_verify() {
	local name=$1 f fx fmt rc
	for f in ic/src/*; do
		f=${f##*/}
		fmt=$(ic_fmt "$f")
		if cmp -s "ic/q/$f" "ic/src/$f" && ! cmp -s "ic/x/$f" "ic/src/$f"; then
			t_fail "$name: qimgctl changed $f, qemu-img did not"
			return 1
		fi
		if [ "$fmt" = qcow2 ]; then
			qemu-img check -q "ic/x/$f" >out/c.out 2>&1
			rc=$?
			if [ $rc -ne 0 ]; then
				t_fail "$name: qemu-img check of $f exits $rc"
				show out/c.out 3
				return 1
			fi
		fi
		if ! qemu-img compare -q -f "$fmt" -F "$fmt" "ic/q/$f" "ic/x/$f" >out/c.out 2>&1; then
			t_fail "$name: $f: qemu-img compare: not what qemu-img's commit left"
			show out/c.out 2
			return 1
		fi
		qemu-img map -f "$fmt" --output=json "ic/q/$f" >out/q.map 2>&1
		qemu-img map -f "$fmt" --output=json "ic/x/$f" >out/x.map 2>&1
		if ! jcmp layout out/q.map out/x.map; then
			t_fail "$name: $f: qemu-img map differs from qemu-img's commit's"
			show out/diff 4
			return 1
		fi
	done
	# QEMU goes on using the top image: the same write into both.
	for fx in ic/q/t.qcow2 ic/x/t.qcow2; do
		qemu-io -f qcow2 -c "write -P 0x5a 60k 200k" "$fx" >out/c.out 2>&1 || {
			t_fail "$name: qemu-io cannot write $fx after the commit"
			show out/c.out 2
			return 1
		}
	done
	if ! qemu-img check -q ic/x/t.qcow2 >out/c.out 2>&1 ||
		! qemu-img compare -q ic/q/t.qcow2 ic/x/t.qcow2 >>out/c.out 2>&1; then
		t_fail "$name: after a qemu-io write the top differs from qemu-img's (or check fails)"
		show out/c.out 2
		return 1
	fi
	return 0
}

# ic_case NAME KIND ARGS...: commit ARGS on chain KIND, both tools.
# "@DIR@" in ARGS stands for the absolute directory of the copy.
# IC_NO_STDOUT=1: stdout is not compared (qemu-img -p prints there).
ic_case() {
	local name=imgc/$1 kind=$2 qrc a side
	shift 2
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	if ! ic_make "$kind"; then
		t_fail "$name: could not make the images"
		show out/ic.log 3
		return
	fi
	for side in q x; do
		rm -rf "ic/$side"
		cp -a ic/src "ic/$side"
		local -a args=()
		for a in "$@"; do
			args+=("${a//@DIR@/$PWD/ic/$side}")
		done
		if [ $side = q ]; then
			(cd ic/q && qemu-img commit "${args[@]}" t.qcow2 \
				>../../out/q.out 2>../../out/q.err </dev/null)
			qrc=$?
		else
			(cd ic/x && qx ../../out/x.out ../../out/x.err commit \
				"${args[@]}" t.qcow2; exit "$QX_RC")
			QX_RC=$?
		fi
	done
	if crashed "$QX_RC" out/x.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/x.err 8
	elif [ "$QX_RC" -ne "$qrc" ]; then
		t_fail "$name: exit status $QX_RC, qemu-img $qrc"
		show out/x.err 2
		show out/q.err 2
	elif [ "$qrc" -ne 0 ]; then
		t_fail "$name: qemu-img commit fails here (status $qrc)"
		show out/q.err 2
	elif [ -z "${IC_NO_STDOUT:-}" ] && ! cmp -s out/q.out out/x.out; then
		t_fail "$name: stdout differs from qemu-img's"
		diff out/q.out out/x.out | show /dev/stdin 4
	elif [ -s out/x.err ]; then
		t_fail "$name: qimgctl wrote to stderr"
		show out/x.err 3
	elif [ -n "${IC_SAME_BYTES:-}" ] && ! cmp -s ic/q/t.qcow2 ic/x/t.qcow2; then
		t_fail "$name: the emptied top is not byte for byte qemu-img's"
		cmp ic/q/t.qcow2 ic/x/t.qcow2 2>&1 | show /dev/stdin 2
	elif ic_verify "$name" && ic_snap_verify "$name" &&
		ic_base_verify "$name"; then
		t_pass "$name"
	fi
}

# ic_base_verify NAME: a base with bitmaps bm1, bm2 shows qemu-img's dirty
# extents in both; one with snapshot s0, reverted to it (bitmaps removed
# first), shows what qemu-img's does and checks clean.
ic_base_verify() {
	local name=$1 b
	[ -f ic/src/b.qcow2 ] || return 0
	for b in bm1 bm2; do
		qemu-img info ic/src/b.qcow2 2>/dev/null | grep -q "name: $b" ||
			continue
		qx out/bq.out out/bq.err bitmap --export "$b" ic/q/b.qcow2
		qx out/bx.out out/bx.err bitmap --export "$b" ic/x/b.qcow2
		if ! cmp -s out/bq.out out/bx.out; then
			t_fail "$name: the base's bitmap $b differs from qemu-img's commit's"
			show out/bx.out 2
			return 1
		fi
	done
	for b in bm1 bm2; do
		qemu-img bitmap --remove ic/q/b.qcow2 "$b" >/dev/null 2>&1
		qemu-img bitmap --remove ic/x/b.qcow2 "$b" >/dev/null 2>&1
	done
	ic_revert_same "$name" b.qcow2 s0
}

# ic_revert_same NAME FILE SNAP: if ic/src/FILE has snapshot SNAP, both
# sides' FILE reverted to it (bitmaps already removed: qemu reverts no
# image with bitmaps) check clean and show the same data.
ic_revert_same() {
	local name=$1 f=$2 sn=$3 side
	qemu-img snapshot -l "ic/src/$f" 2>/dev/null | grep -q " $sn " ||
		return 0
	for side in q x; do
		if ! qemu-img snapshot -a "$sn" "ic/$side/$f" >out/c.out 2>&1 ||
			! qemu-img check -q "ic/$side/$f" >>out/c.out 2>&1; then
			t_fail "$name: ic/$side: snapshot -a $sn of $f or check after it fails"
			show out/c.out 3
			return 1
		fi
	done
	if ! qemu-img compare -q "ic/q/$f" "ic/x/$f" >out/c.out 2>&1; then
		t_fail "$name: $f reverted to $sn differs from qemu-img's"
		show out/c.out 2
		return 1
	fi
	return 0
}

# ic_snap_verify NAME: a top with snapshot s1 kept the snapshot's
# clusters: reverted to it (bitmap bm0 removed first, as qemu wants),
# qimgctl's top shows what qemu-img's does and both check clean (no leaks
# either: status 0).
ic_snap_verify() {
	local name=$1 side
	qemu-img snapshot -l ic/src/t.qcow2 2>/dev/null | grep -q ' s1 ' ||
		return 0
	for side in q x; do
		# qemu reverts no image with bitmaps: drop bm0 first.
		if qemu-img info "ic/$side/t.qcow2" 2>/dev/null | grep -q 'name: bm0' &&
			! qemu-img bitmap --remove "ic/$side/t.qcow2" bm0 >out/c.out 2>&1; then
			t_fail "$name: ic/$side: bitmap --remove bm0 fails"
			show out/c.out 2
			return 1
		fi
	done
	ic_revert_same "$name" t.qcow2 s1
}

# ic_err NAME KIND ARGS...: a commit both tools refuse: qemu-img's exit
# status, nothing on stdout, one line on stderr, every file unchanged.
# IC_FILE: the image named (default t.qcow2; "-" for none).
ic_err() {
	local name=imgc/err/$1 kind=$2 qrc sum file=${IC_FILE:-t.qcow2}
	shift 2
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	if ! ic_make "$kind"; then
		t_fail "$name: could not make the images"
		show out/ic.log 3
		return
	fi
	local -a f=()
	[ "$file" != - ] && f=("$file")
	if [ -z "${IC_HELD:-}" ]; then
		rm -rf ic/e
		cp -a ic/src ic/e
	fi
	sum=$(cat ic/e/* | md5sum)
	(cd ic/e && qemu-img commit "$@" "${f[@]}" >../../out/q.out \
		2>../../out/q.err </dev/null)
	qrc=$?
	(cd ic/e && qx ../../out/x.out ../../out/x.err commit "$@" "${f[@]}"
	 exit "$QX_RC")
	QX_RC=$?
	if crashed "$QX_RC" out/x.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/x.err 8
	elif [ "$qrc" -eq 0 ]; then
		t_fail "$name: qemu-img commit succeeds here"
	elif [ "$QX_RC" -ne "$qrc" ]; then
		t_fail "$name: exit status $QX_RC, qemu-img $qrc"
		show out/x.err 2
	elif [ -s out/x.out ]; then
		t_fail "$name: qimgctl printed on stdout"
		show out/x.out 2
	elif [ "$(grep -c . out/x.err)" -ne 1 ]; then
		t_fail "$name: $(grep -c . out/x.err) lines on stderr, expected one"
		show out/x.err 4
	elif [ -n "${ERR_WORD:-}" ] && ! grep -qF -- "$ERR_WORD" out/x.err; then
		t_fail "$name: stderr does not name '$ERR_WORD'"
		show out/x.err 2
	elif [ "$(cat ic/e/* | md5sum)" != "$sum" ]; then
		t_fail "$name: a file of the chain was changed"
	else
		t_pass "$name"
	fi
}

# ic_held NAME KIND HOLDER-FILE [HOLDER-OPTS] -- ARGS...: ic_err while a
# qemu-io holds HOLDER-FILE of the chain (HOLDER-OPTS "lockhold": qimgctl's
# lock module holds it for writing, that file alone).
ic_held() {
	local name=$1 kind=$2 hf=$3
	shift 3
	local -a ho=()
	while [ "$1" != -- ]; do
		ho+=("$1")
		shift
	done
	shift
	want "imgc/err/$name" || return 0
	if ! ic_make "$kind"; then
		t_fail "imgc/err/$name: could not make the images"
		return
	fi
	rm -rf ic/e
	cp -a ic/src ic/e
	local -a holder=(qemu-io "${ho[@]}" "ic/e/$hf")
	if [ "${ho[0]:-}" = lockhold ]; then
		if ! lockhold_bin; then
			t_fail "imgc/err/$name: could not build qimg-lockhold"
			return
		fi
		holder=("$LOCKHOLD" write "ic/e/$hf")
	fi
	if hold_start "${holder[@]}"; then
		IC_HELD=1 ERR_WORD=lock ic_err "$name" "$kind" "$@"
		hold_stop
	else
		t_fail "imgc/err/$name: could not start qemu-io"
	fi
}

# ic_tty: -p on a terminal (script(1) gives it one) prints the progress
# line up to 100%, and the commit is the same as without -p.
ic_tty() {
	local name=imgc/progress-on-a-tty
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	if ! command -v script >/dev/null; then
		t_skip "$name" "script(1) is not installed"
		return
	fi
	if ! ic_make v3; then
		t_fail "$name: could not make the images"
		return
	fi
	rm -rf ic/q ic/x
	cp -a ic/src ic/q
	cp -a ic/src ic/x
	(cd ic/q && qemu-img commit -q t.qcow2) >/dev/null 2>&1
	(cd ic/x && script -qec "$(printf '%q' "$QIMGCTL") commit -p t.qcow2" \
		/dev/null) >out/tty.out 2>&1 </dev/null
	if crashed 0 out/tty.out; then
		t_fail "$name: qimgctl crashed"
		show out/tty.out 8
	elif ! grep -q '(100.00/100%)' out/tty.out; then
		t_fail "$name: no progress line up to 100%"
		show out/tty.out 3
	elif ! grep -q 'Image committed.' out/tty.out; then
		t_fail "$name: no 'Image committed.'"
		show out/tty.out 3
	elif ! qemu-img compare -q ic/q/b.qcow2 ic/x/b.qcow2 ||
		! qemu-img compare -q ic/q/t.qcow2 ic/x/t.qcow2; then
		t_fail "$name: the result differs from qemu-img's"
	else
		t_pass "$name"
	fi
}

# ic_crash NAME KIND ARGS...: qimgctl commit ARGS stopped at every write
# or fsync (crashw.c; a sample of them for long runs): each time the top
# image must still show the guest what it showed before (qemu-img
# compare), and qemu-img check must find every file clean or only
# leaking -- except a top stopped while it was rebuilt, which carries the
# dirty bit: qemu-img check -r all must then repair it, and it must show
# the same.  Then the commit run again (after qimgctl check -r all of a
# dirty top) must finish and the top still show the same.
ic_crash() {
	local name=imgc/crash/$1 kind=$2 total n f bad='' rc
	shift 2
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	if ! crashw_lib; then
		t_skip "$name" "cannot build the crash simulator"
		return
	fi
	if ! ic_make "$kind"; then
		t_fail "$name: could not make the images"
		return
	fi
	rm -rf ic/c
	cp -a ic/src ic/c
	crash_run 0 commit "$@" ic/c/t.qcow2
	total=$(cat out/crash.count 2>/dev/null || echo 0)
	if [ "$total" -lt 4 ]; then
		t_fail "$name: the commit made $total writes"
		return
	fi
	local -a pts=()
	if [ "$total" -le 60 ]; then
		mapfile -t pts < <(seq 1 "$total")
	else
		mapfile -t pts < <({ seq 1 20; seq $((total - 20)) "$total"
			seq 21 $(((total - 40) / 20 + 1)) $((total - 21)); } |
			sort -nu)
	fi
	for n in "${pts[@]}"; do
		rm -rf ic/c
		cp -a ic/src ic/c
		crash_run "$n" commit "$@" ic/c/t.qcow2
		if crashed 0 out/cr.err; then
			bad="qimgctl crashed at write $n"
			show out/cr.err 6
			break
		fi
		for f in ic/c/*; do
			[ "$(ic_fmt "$f")" = qcow2 ] || continue
			qemu-img check -q "$f" >out/chk 2>&1
			rc=$?
			[ $rc -eq 0 ] || [ $rc -eq 3 ] && continue
			if [ "$f" = ic/c/t.qcow2 ] &&
				qemu-img info --output=json "$f" 2>/dev/null |
				grep -q '"dirty-flag": true' &&
				qemu-img check -q -r all "$f" >out/chk 2>&1 &&
				qemu-img check -q "$f" >out/chk 2>&1; then
				continue
			fi
			bad="stopped at write $n of $total: qemu-img check of ${f##*/} exits $rc"
			show out/chk 4
			break 2
		done
		if ! qemu-img compare -q ic/src/t.qcow2 ic/c/t.qcow2 >out/cmp 2>&1; then
			bad="stopped at write $n of $total: the top shows other data"
			show out/cmp 3
			break
		fi
		# A top stopped while it was rebuilt needs the repair first
		# (qimgctl's own this time); then the commit goes through.
		if qemu-img info --output=json ic/c/t.qcow2 2>/dev/null |
			grep -q '"dirty-flag": true' &&
			! "$QIMGCTL" check -q -r all ic/c/t.qcow2 >out/cmp 2>&1; then
			bad="stopped at write $n of $total: qimgctl check -r all of the dirty top fails"
			show out/cmp 3
			break
		fi
		if ! (cd ic/c && "$QIMGCTL" commit -q "$@" t.qcow2) >out/cmp 2>&1 ||
			! qemu-img compare -q ic/src/t.qcow2 ic/c/t.qcow2 >>out/cmp 2>&1; then
			bad="stopped at write $n of $total: the commit run again fails or changes the data"
			show out/cmp 3
			break
		fi
	done
	if [ -n "$bad" ]; then
		t_fail "$name: $bad"
	else
		t_pass "$name (${#pts[@]} of $total points)"
	fi
}

part_imgc() {
	# Each case checks the filter itself.
	mkdir -p ic
	ic_case v3 v3
	ic_case v3-quiet v3 -q
	IC_NO_STDOUT=1 ic_case v3-progress-not-a-tty v3 -p
	ic_case v3-cache-rate v3 -t none -r 100M
	ic_case v3-keep v3 -d
	ic_case v2 v2
	ic_case v3-on-v2 v3-on-v2
	ic_case raw-base raw
	ic_case raw-base-keep raw -d
	ic_case grow grow
	ic_case grow-raw grow-raw
	ic_case chain3-into-mid chain3
	ic_case chain3-b-base chain3 -b b.qcow2
	ic_case chain3-b-mid chain3 -b m.qcow2
	ic_case chain3-b-absolute chain3 -b @DIR@/b.qcow2
	ic_case chain3-into-v2-mid chain3-v2mid
	ic_case top-smaller top-smaller
	ic_case short-mid-into-mid short-mid
	ic_case short-mid-b-base short-mid -b b.qcow2
	ic_case short-mid-v2-b-base short-mid-v2 -b b.qcow2
	ic_case chain3-v2mid-b-base chain3-v2mid -b b.qcow2
	ic_case c4k-on-c64k c4k-on-c64k
	ic_case base-c2m base-c2m
	ic_case base-c512 base-c512
	ic_case base-extl2 base-extl2
	ic_case top-extl2 top-extl2
	ic_case top-prealloc top-prealloc
	ic_case zstd zstd
	ic_case zero-only zero-only
	ic_case empty-top empty-top
	ic_case v3-discard v3-discard
	ic_case snap-top-keep snap-top -d
	# A top with snapshots or bitmaps: emptied cluster by cluster, as
	# qemu does (byte for byte where qemu's result does not depend on
	# how it stores bitmaps again).
	IC_SAME_BYTES=1 ic_case snap-top snap-top
	IC_SAME_BYTES=1 ic_case snap-top-v2 snap-top-v2
	IC_SAME_BYTES=1 ic_case snap-big snap-big
	ic_case bitmap-top bitmap-top
	ic_case snap-bitmap-top snap-bitmap-top
	# Into a base with snapshots and bitmaps, as qemu writes it.
	ic_case snap-base snap-base
	ic_case snap-base-c512 snap-base-c512
	ic_case bitmap-base bitmap-base
	ic_case snap-bitmap-base snap-bitmap-base
	ic_case ours ours
	ic_case ours-raw ours-raw
	ic_tty
	ic_crash v3 v3
	ic_crash v2 v2
	ic_crash snap-big snap-big
	ic_crash raw-base raw
	ic_crash chain3-b-base chain3 -b b.qcow2
	if want imgc/cli-help; then
		N_CMP=$((N_CMP + 1))
		qx out/h.out out/h.err commit --help
		if [ "$QX_RC" -ne 0 ] || [ -s out/h.err ] ||
			! head -n 1 out/h.out | grep -q "^usage: qimgctl commit "; then
			t_fail "imgc/cli-help: status $QX_RC, $(head -n 1 out/h.out out/h.err | tr '\n' ' ' | cut -c1-120)"
		else
			t_pass imgc/cli-help
		fi
	fi

	IC_FILE=nope.qcow2 ic_err missing-file v3
	ERR_WORD="does not have a backing file" IC_FILE=b.qcow2 \
		ic_err no-backing v3
	ERR_WORD="Did not find" ic_err base-not-in-chain chain3 -b nope.qcow2
	ERR_WORD="Did not find" ic_err base-is-top chain3 -b t.qcow2
	IC_FILE=- ic_err no-file v3
	ic_err bad-option v3 -x
	ERR_WORD="Invalid cache option" ic_err bad-cache v3 -t bogus
	ERR_WORD="rate limit" ic_err bad-rate v3 -r abc
	if want imgc/err/encrypted; then
		if ic_make v3 && qemu-img create -q -f qcow2 \
			--object secret,id=s0,data=xcheck \
			-o encrypt.format=aes,encrypt.key-secret=s0 \
			-b b.qcow2 -F qcow2 ic/src/enc.qcow2 >out/ic.log 2>&1; then
			ERR_WORD=encrypt IC_FILE=enc.qcow2 ic_err encrypted v3
			rm -f ic/src/enc.qcow2
		else
			t_fail "imgc/err/encrypted: could not make the image"
		fi
	fi
	ic_held top-locked v3 t.qcow2 -f qcow2 --
	ic_held base-locked v3 b.qcow2 -f qcow2 --
	ic_held mid-locked-b chain3 m.qcow2 -f qcow2 -- -b b.qcow2
	# Only the image in between is held: its own read lock must refuse.
	ic_held mid-only-locked-b chain3 m.qcow2 lockhold -- -b b.qcow2
	ic_held base-only-locked chain3 m.qcow2 lockhold --
	ic_held top-only-locked chain3 t.qcow2 lockhold -- -d
	ic_held raw-base-locked raw b.raw lockhold --
	# qemu cannot grow a v2 image over a longer backing file: the job
	# fails (Operation not supported), and qimgctl refuses up front.
	ERR_WORD="version 2" ic_err short-mid-v2-grow short-mid-v2
}
