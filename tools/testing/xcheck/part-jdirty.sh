# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# xcheck part: every qimgctl command but check, info and attach refuses an
# image whose metadata journal is dirty (its L1/L2/refcount tables are
# stale until the journal is replayed), the image as it was; info shows
# the journal; after `qimgctl check -r all` everything works again and
# qemu-img agrees; create -b of such an image (or one with an unknown
# incompatible bit) is refused as qemu-img refuses it, unless -u, and so
# are rebase -b (unless -u) and convert -B (newb-*); the commands that
# open a chain (or a second image) with it in it exit as qemu-img does
# (chain-*); on an overlay whose backing file is dirty, missing or held by
# a writer, snapshot, amend, check, resize, map and measure refuse as
# qemu-img does and info and bitmap work (ov-dirty/, ov-missing/,
# ov-locked/).  Images come from mkjournal.py (part-jfmt.sh).  Sourced
# by run; uses its helpers.  Cases jdirty/...

# shellcheck disable=SC2154 # here: set by run, which sources this file
JD_MK=$here/mkjournal.py
JD_MSG="the metadata journal holds 3 committed transactions that are not checkpointed; run 'qimgctl check -r all jd.qcow2'"

# jd_make IMG SCENARIO: a 1 MiB image whose journal (mkjournal.py
# SCENARIO) changes guest clusters 0 and 1, and jd-base.qcow2, a plain one.
jd_make() {
	rm -f "$1"
	qemu-img create -q -f qcow2 jd-base.qcow2 1M >out/jd.log 2>&1 &&
		qemu-img create -q -f qcow2 "$1" 1M >>out/jd.log 2>&1 &&
		qemu-io -f qcow2 -c 'write -P 0x11 0 128k' "$1" >>out/jd.log 2>&1 &&
		python3 "$JD_MK" "$1" --scenario "$2" >out/jd.exp 2>>out/jd.log
}

# jd_new CASE IMG SCENARIO: jd_make, counted, or a failed CASE.
jd_new() {
	if ! jd_make "$2" "$3"; then
		t_fail "jdirty/$1: could not make the image"
		show out/jd.log 3
		return 1
	fi
	N_IMAGES=$((N_IMAGES + 1))
}

# jd_refuse NAME RC PATTERN IMG ARGS...: qimgctl ARGS exits RC, stderr
# has PATTERN (fixed string; empty: anything), IMG is byte-identical to its copy IMG.orig.
jd_refuse() {
	local name="jdirty/$1" want_rc=$2 pat=$3 img=$4
	shift 4
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	qx out/jd.out out/jd.err "$@"
	if crashed "$QX_RC" out/jd.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/jd.err 8
	elif [ "$QX_RC" -ne "$want_rc" ]; then
		t_fail "$name: exit status $QX_RC, expected $want_rc"
		show out/jd.err 3
	elif [ -n "$pat" ] && ! grep -qF -- "$pat" out/jd.err; then
		t_fail "$name: stderr does not say '$pat'"
		show out/jd.err 3
	elif ! cmp -s "$img" "$img.orig"; then
		t_fail "$name: the image changed"
		cp "$img.orig" "$img"
	else
		t_pass "$name"
	fi
}

# jd_ok NAME ARGS...: qimgctl ARGS exits 0 (after the replay).
jd_ok() {
	local name="jdirty/$1"
	shift
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	qx out/jd.out out/jd.err "$@"
	if crashed "$QX_RC" out/jd.err || [ "$QX_RC" -ne 0 ]; then
		t_fail "$name: exit status $QX_RC"
		show out/jd.err 3
	else
		t_pass "$name"
	fi
}

# The commands, each once refused (REFUSE=1) and once after the replay.
jd_commands() {
	local f=$1 img=jd.qcow2
	$f map 1 "$img" map "$img"
	$f map-json 1 "$img" map --output=json "$img"
	# compare exits 2 on errors (1 means "images differ"), as qemu-img.
	$f compare 2 "$img" compare "$img" "$img"
	$f convert 1 "$img" convert -O qcow2 "$img" jd-conv.qcow2
	$f measure 1 "$img" measure -O qcow2 "$img"
	$f rebase-u 1 "$img" rebase -u -b jd-base.qcow2 -F qcow2 "$img"
	$f resize 1 "$img" resize "$img" 2M
	$f amend 1 "$img" amend -o lazy_refcounts=on "$img"
	# commit writes its base: jd-ov.qcow2's backing file is the image.
	$f commit 1 "$img" commit jd-ov.qcow2
	$f snapshot-l 1 "$img" snapshot -l "$img"
	$f snapshot-c 1 "$img" snapshot -c s0 "$img"
	$f bitmap-add 1 "$img" bitmap --add "$img" bm0
}

jd_refuse_cmd() {
	local name=$1 rc=$2 img=$3
	shift 3
	jd_refuse "refuse-$name" "$rc" "$JD_MSG" "$img" "$@"
}

jd_ok_cmd() {
	local name=$1
	shift 3
	jd_ok "after-replay-$name" "$@"
}

# info on a dirty image: shown, the journal in both outputs.
jd_info() {
	want 'jdirty/info-' || return 0
	N_CMP=$((N_CMP + 2))
	qx out/jd.out out/jd.err info jd.qcow2
	if [ "$QX_RC" -ne 0 ] ||
		! grep -qxF '    journal: 65536 bytes, dirty, 3 transactions (sequence 6..8) not checkpointed' out/jd.out; then
		t_fail "jdirty/info-human: exit $QX_RC or no journal line"
		show out/jd.out 3
		show out/jd.err 3
	else
		t_pass "jdirty/info-human"
	fi
	qx out/jd.out out/jd.err info --output=json jd.qcow2
	if [ "$QX_RC" -ne 0 ] || ! python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["format-specific"]["data"]["journal"]
want = {"size": 65536, "valid": True, "dirty": True, "transactions": 3,
        "first-sequence": 6, "last-sequence": 8, "torn": False}
sys.exit(j != want)' out/jd.out 2>out/jd.py; then
		t_fail "jdirty/info-json: exit $QX_RC or a wrong journal object"
		show out/jd.py 3
	else
		t_pass "jdirty/info-json"
	fi
	jd_refuse info-unchanged 0 "" jd.qcow2 info jd.qcow2
}

# jd_create NAME WORD BACKING ARGS...: qimgctl create -f qcow2 -b BACKING
# -F qcow2 NEW ARGS does what qemu-img create does: the same exit status,
# NEW made or not alike (and then alike in qemu-img info), a refusal in one
# line that says WORD; BACKING unchanged.
jd_create() {
	local name="jdirty/$1" word=$2 back=$3 qrc qmade xmade
	shift 3
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	rm -f jd-newq.qcow2 jd-newx.qcow2
	cp "$back" out/jd.back
	qemu-img create -f qcow2 -b "$back" -F qcow2 jd-newq.qcow2 "$@" \
		>out/jd.qout 2>out/jd.qerr </dev/null
	qrc=$?
	qx out/jd.out out/jd.err create -f qcow2 -b "$back" -F qcow2 \
		jd-newx.qcow2 "$@"
	qmade=$([ -e jd-newq.qcow2 ] && echo made || echo "not made")
	xmade=$([ -e jd-newx.qcow2 ] && echo made || echo "not made")
	if [ "$qrc" -ge 128 ]; then
		t_fail "$name: qemu-img died (status $qrc): no reference"
	elif crashed "$QX_RC" out/jd.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/jd.err 8
	elif [ "$QX_RC" -ne "$qrc" ] || [ "$qmade" != "$xmade" ]; then
		t_fail "$name: exit status $QX_RC and the image $xmade, qemu-img $qrc and $qmade"
		show out/jd.qerr 2
		show out/jd.err 2
	elif [ "$qrc" -ne 0 ] && { [ "$(grep -c . out/jd.err)" -ne 1 ] ||
		! grep -qF -- "$word" out/jd.err; }; then
		t_fail "$name: not one line saying '$word'"
		show out/jd.err 3
	elif [ "$qrc" -eq 0 ] &&
		! diff <(qemu-img info jd-newq.qcow2 2>&1 | grep -vE "^(image|disk size):") \
			<(qemu-img info jd-newx.qcow2 2>&1 | grep -vE "^(image|disk size):") >out/jd.diff; then
		t_fail "$name: qemu-img info differs from the twin's"
		show out/jd.diff 4
	elif ! cmp -s "$back" out/jd.back; then
		t_fail "$name: the backing file changed"
	else
		t_pass "$name"
	fi
	rm -f jd-newq.qcow2 jd-newx.qcow2
}

# Overlays of a journal-dirty image (or one with a bit QEMU does not
# know): qemu-img cannot open it, so it refuses unless -u.
jd_creates() {
	local w="journal dirty"
	want 'jdirty/create-' || return 0
	jd_create create-b "$w" jd.qcow2
	jd_create create-b-size "$w" jd.qcow2 2M
	jd_create create-b-u-size "$w" jd.qcow2 -u 2M
	jd_create create-b-u-nosize "size" jd.qcow2 -u
	jd_create create-b-deep "$w" jd-ov.qcow2
	jd_create create-b-deep-size "$w" jd-ov.qcow2 2M
	jd_create create-b-deep-u-size "$w" jd-ov.qcow2 -u 2M
	rm -f jd-unk.qcow2 jd-unn.qcow2
	if ! { qemu-img create -q -f qcow2 jd-unk.qcow2 1M &&
		python3 "$QHDR" incompat jd-unk.qcow2 40 "future thing" &&
		qemu-img create -q -f qcow2 jd-unn.qcow2 1M &&
		python3 "$QHDR" incompat jd-unn.qcow2 41 ""; } >out/jd.log 2>&1; then
		t_fail "jdirty/create-b-unknown: could not make the images"
		show out/jd.log 3
		return
	fi
	N_IMAGES=$((N_IMAGES + 2))
	jd_create create-b-unknown-bit "future thing" jd-unk.qcow2
	jd_create create-b-unknown-bit-size "future thing" jd-unk.qcow2 2M
	jd_create create-b-unknown-bit-u-size "" jd-unk.qcow2 -u 2M
	jd_create create-b-unnamed-bit "41" jd-unn.qcow2 2M
	jd_create create-b-unnamed-bit-u-size "" jd-unn.qcow2 -u 2M
	rm -f jd-unk.qcow2 jd-unn.qcow2
}

# jd_twin NAME RC WORD FILE ARGS...: qemu-img ARGS and qimgctl ARGS, each
# on FILE as it was (restored in between), exit RC and agree; a refusal is
# one line that says WORD (fixed string; empty: anything) and leaves FILE
# and the dirty image as they were; a success gives FILE the backing file
# qemu-img's run gave it.  JD_NOT: a string the refusal must not say.
# JD_OUT: an output file qimgctl must not leave behind when it refuses
# (qemu-img convert leaves the one it created before it failed to open it).
jd_twin() {
	local name="jdirty/$1" want_rc=$2 word=$3 file=$4 qrc
	shift 4
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	cp "$file" out/jd.before
	[ -n "${JD_OUT:-}" ] && rm -f "$JD_OUT"
	qemu-img "$@" >out/jd.qout 2>out/jd.qerr </dev/null
	qrc=$?
	cp "$file" out/jd.qres
	cp out/jd.before "$file"
	[ -n "${JD_OUT:-}" ] && rm -f "$JD_OUT"
	qx out/jd.out out/jd.err "$@"
	if [ "$qrc" -ne "$want_rc" ]; then
		t_fail "$name: qemu-img exits $qrc, expected $want_rc: no reference"
		show out/jd.qerr 2
	elif crashed "$QX_RC" out/jd.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/jd.err 8
	elif [ "$QX_RC" -ne "$qrc" ]; then
		t_fail "$name: exit status $QX_RC, qemu-img $qrc"
		show out/jd.qerr 2
		show out/jd.err 2
	elif [ "$qrc" -ne 0 ] && { [ "$(grep -c . out/jd.err)" -ne 1 ] ||
		! grep -qF -- "$word" out/jd.err; }; then
		t_fail "$name: not one line saying '$word'"
		show out/jd.qerr 2
		show out/jd.err 3
	elif [ "$qrc" -ne 0 ] && [ -n "${JD_NOT:-}" ] &&
		grep -qF -- "$JD_NOT" out/jd.err; then
		t_fail "$name: the refusal says '$JD_NOT'"
		show out/jd.err 3
	elif [ "$qrc" -ne 0 ] && ! cmp -s "$file" out/jd.before; then
		t_fail "$name: $file changed"
	elif [ "$qrc" -ne 0 ] && [ -n "${JD_OUT:-}" ] && [ -e "$JD_OUT" ]; then
		t_fail "$name: qimgctl left $JD_OUT behind"
	elif [ "$qrc" -eq 0 ] &&
		[ "$(qemu-img info -U "$file" 2>&1 | grep '^backing')" != \
		  "$(qemu-img info -U out/jd.qres 2>&1 | grep '^backing' |
		     sed 's/ (actual path: .*)$//')" ]; then
		t_fail "$name: the backing file differs from qemu-img's"
		show out/jd.err 2
	elif ! cmp -s jd.qcow2 jd.qcow2.orig; then
		t_fail "$name: the journal-dirty image changed"
		cp jd.qcow2.orig jd.qcow2
	else
		t_pass "$name"
	fi
	cp out/jd.before "$file"
	[ -n "${JD_OUT:-}" ] && rm -f "$JD_OUT"
	return 0
}

# The commands that take a new backing file, given the dirty image (or
# jd-ov.qcow2, an overlay of it): qemu-img opens that chain and refuses,
# unless it does not open it (rebase -u); amend changes no backing file
# in either.  Then the commands that open a chain below the image named
# (or a second image) with the dirty one in it, against qemu-img.
jd_backings() {
	local w="journal dirty" nb="Could not open new backing file"
	want 'jdirty/newb-' 'jdirty/chain-' || return 0
	rm -f jd-top.qcow2
	if ! qemu-img create -q -f qcow2 -b jd-base.qcow2 -F qcow2 \
		jd-top.qcow2 >out/jd.log 2>&1; then
		t_fail "jdirty/newb-: could not make the overlay"
		show out/jd.log 3
		return
	fi
	N_IMAGES=$((N_IMAGES + 1))
	jd_twin newb-rebase 1 "$nb 'jd.qcow2': Unsupported qcow2 feature(s): $w" \
		jd-top.qcow2 rebase -b jd.qcow2 -F qcow2 jd-top.qcow2
	jd_twin newb-rebase-deep 1 "$nb 'jd-ov.qcow2': Could not open backing file jd.qcow2: Unsupported qcow2 feature(s): $w" \
		jd-top.qcow2 rebase -b jd-ov.qcow2 -F qcow2 jd-top.qcow2
	jd_twin newb-rebase-u 0 "" \
		jd-top.qcow2 rebase -u -b jd.qcow2 -F qcow2 jd-top.qcow2
	jd_twin newb-rebase-u-deep 0 "" \
		jd-top.qcow2 rebase -u -b jd-ov.qcow2 -F qcow2 jd-top.qcow2
	jd_twin newb-rebase-u-nofmt 1 "backing format must be specified" \
		jd-top.qcow2 rebase -u -b jd.qcow2 jd-top.qcow2
	jd_twin newb-amend 1 "backing" \
		jd-top.qcow2 amend -o backing_file=jd.qcow2,backing_fmt=qcow2 jd-top.qcow2
	jd_twin newb-amend-file 1 "backing" \
		jd-top.qcow2 amend -o backing_file=jd.qcow2 jd-top.qcow2
	JD_OUT=jd-cv.qcow2 JD_NOT="with -u" jd_twin newb-convert 1 \
		"jd-cv.qcow2: Could not open backing image 'jd.qcow2': Unsupported qcow2 feature(s): $w" \
		jd-base.qcow2 convert -O qcow2 -B jd.qcow2 -F qcow2 jd-base.qcow2 jd-cv.qcow2
	JD_OUT=jd-cv.qcow2 JD_NOT="with -u" jd_twin newb-convert-deep 1 \
		"Could not open backing file jd.qcow2: Unsupported qcow2 feature(s): $w" \
		jd-base.qcow2 convert -O qcow2 -B jd-ov.qcow2 -F qcow2 jd-base.qcow2 jd-cv.qcow2
	JD_OUT=jd-cv.qcow2 JD_NOT="with -u" jd_twin newb-convert-o 1 "$w" \
		jd-base.qcow2 convert -O qcow2 -o backing_file=jd.qcow2,backing_fmt=qcow2 \
		jd-base.qcow2 jd-cv.qcow2
	# commit -b names the dirty image as the base: the chain it is in.
	jd_twin chain-commit-b 1 "$JD_MSG" \
		jd-ov.qcow2 commit -b jd.qcow2 jd-ov.qcow2
	jd_twin chain-compare-second 2 "$JD_MSG" \
		jd-base.qcow2 compare jd-base.qcow2 jd.qcow2
	jd_twin chain-compare-second-chain 2 "$JD_MSG" \
		jd-base.qcow2 compare jd-base.qcow2 jd-ov.qcow2
	jd_twin chain-measure 1 "$JD_MSG" \
		jd-ov.qcow2 measure -O qcow2 jd-ov.qcow2
	jd_twin chain-map 1 "$JD_MSG" jd-ov.qcow2 map jd-ov.qcow2
	jd_twin chain-map-json 1 "$JD_MSG" \
		jd-ov.qcow2 map --output=json jd-ov.qcow2
	jd_twin chain-rebase-old 1 "$JD_MSG" \
		jd-ov.qcow2 rebase -b jd-base.qcow2 -F qcow2 jd-ov.qcow2
	jd_twin chain-rebase-old-u 0 "" \
		jd-ov.qcow2 rebase -u -b jd-base.qcow2 -F qcow2 jd-ov.qcow2
	rm -f jd-top.qcow2 jd-cv.qcow2
}

# jd_ovmake NAME BACKING SNAP BITMAPS: NAME, a 1M overlay with data of its
# own (and an internal snapshot s0 if SNAP, bitmaps bm0 and bm1 if
# BITMAPS), made over a clean file, then given BACKING (-u: it may be
# dirty or missing).
jd_ovmake() {
	rm -f "$1" jd-tmpb.qcow2
	qemu-img create -q -f qcow2 jd-tmpb.qcow2 1M &&
		qemu-img create -q -f qcow2 -b jd-tmpb.qcow2 -F qcow2 "$1" &&
		qemu-io -f qcow2 -c 'write -P 0x22 64k 64k' "$1" &&
		{ [ "$3" = 0 ] || qemu-img snapshot -c s0 "$1"; } &&
		{ [ "$4" = 0 ] || { qemu-img bitmap --add "$1" bm0 &&
			qemu-img bitmap --add "$1" bm1; }; } &&
		qemu-img rebase -u -b "$2" -F qcow2 "$1" &&
		rm -f jd-tmpb.qcow2
}

# jd_ovcmds TAG WORD URC: every command on an overlay whose backing file
# qemu-img cannot open (TAG: why), against qemu-img: the ones that open
# the chain (snapshot, amend, check, resize, map, measure) refuse in one
# line saying WORD, the overlay as it was; info and bitmap (no chain)
# work.  URC: the status of the -U (force-share) runs.
jd_ovcmds() {
	local w=$2 urc=$3 s=jd-ovs.qcow2 p=jd-ovp.qcow2 b=jd-ovb.qcow2
	jd_twin "ov-$1/snapshot-c" 1 "$w" $s snapshot -c s1 $s
	jd_twin "ov-$1/snapshot-l" 1 "$w" $s snapshot -l $s
	jd_twin "ov-$1/snapshot-l-U" "$urc" "$w" $s snapshot -l -U $s
	jd_twin "ov-$1/snapshot-a" 1 "$w" $s snapshot -a s0 $s
	jd_twin "ov-$1/snapshot-d" 1 "$w" $s snapshot -d s0 $s
	jd_twin "ov-$1/snapshot-noop" 1 "$w" $s snapshot $s
	jd_twin "ov-$1/amend-lazy" 1 "$w" $s amend -o lazy_refcounts=on $s
	jd_twin "ov-$1/amend-refcount" 1 "$w" $s amend -o refcount_bits=32 $s
	jd_twin "ov-$1/amend-compat-up" 1 "$w" $s amend -o compat=1.1 $s
	jd_twin "ov-$1/amend-compat-down" 1 "$w" $p amend -o compat=0.10 $p
	# qemu-img opens before it looks at the options; qimgctl refuses
	# the ones it does not take first (the same status).
	jd_twin "ov-$1/amend-size" 1 "" $s amend -o size=2M $s
	jd_twin "ov-$1/check" 1 "$w" $s check $s
	jd_twin "ov-$1/check-U" "$urc" "$w" $s check -U $s
	jd_twin "ov-$1/check-r" 1 "$w" $s check -r all $s
	jd_twin "ov-$1/check-json" 1 "$w" $s check --output=json $s
	jd_twin "ov-$1/resize-grow" 1 "$w" $p resize $p 2M
	jd_twin "ov-$1/resize-shrink" 1 "$w" $p resize --shrink $p 512K
	jd_twin "ov-$1/map" 1 "$w" $s map $s
	jd_twin "ov-$1/measure" 1 "$w" $s measure -O qcow2 $s
	jd_twin "ov-$1/info" 0 "" $s info $s
	jd_twin "ov-$1/info-json" 0 "" $s info --output=json $s
	jd_twin "ov-$1/bitmap-add" 0 "" $b bitmap --add $b bmx
	jd_twin "ov-$1/bitmap-remove" 0 "" $b bitmap --remove $b bm0
	jd_twin "ov-$1/bitmap-clear" 0 "" $b bitmap --clear $b bm0
	jd_twin "ov-$1/bitmap-disable" 0 "" $b bitmap --disable $b bm0
	jd_twin "ov-$1/bitmap-enable" 0 "" $b bitmap --enable $b bm0
	jd_twin "ov-$1/bitmap-merge" 0 "" $b bitmap --merge bm1 $b bm0
}

# Overlays of the dirty image, of a missing file and of a file another
# process writes (qimg-lockhold holds it as a writer does).
jd_overlays() {
	local f mk=ok
	want 'jdirty/ov-' || return 0
	for f in dirty:jd.qcow2 missing:jd-nope.qcow2 locked:jd-base.qcow2; do
		jd_ovmake jd-ovs-${f%%:*}.qcow2 "${f#*:}" 1 0 &&
			jd_ovmake jd-ovp-${f%%:*}.qcow2 "${f#*:}" 0 0 &&
			jd_ovmake jd-ovb-${f%%:*}.qcow2 "${f#*:}" 0 1 ||
			mk=
	done >out/jd.log 2>&1
	rm -f jd-nope.qcow2
	if [ -z "$mk" ]; then
		t_fail "jdirty/ov-: could not make the overlays"
		show out/jd.log 3
		return
	fi
	N_IMAGES=$((N_IMAGES + 9))
	for f in dirty missing locked; do
		mv jd-ovs-$f.qcow2 jd-ovs.qcow2
		mv jd-ovp-$f.qcow2 jd-ovp.qcow2
		mv jd-ovb-$f.qcow2 jd-ovb.qcow2
		case $f in
		dirty)
			jd_ovcmds dirty journal 1
			# The refusal names the file and the remedy.
			jd_twin ov-dirty/message 1 "Could not open 'jd-ovs.qcow2': Could not open backing file jd.qcow2: Unsupported qcow2 feature(s): journal dirty (replay it with 'qimgctl check -r all jd.qcow2')" \
				jd-ovs.qcow2 snapshot -c s1 jd-ovs.qcow2
			;;
		missing)
			jd_ovcmds missing "jd-nope.qcow2" 1
			;;
		locked)
			if ! want 'jdirty/ov-locked/'; then
				:
			elif ! lockhold_bin; then
				t_fail "jdirty/ov-locked: could not build qimg-lockhold"
				show out/lockhold.log 3
			elif ! hold_start "$LOCKHOLD" write jd-base.qcow2; then
				t_fail "jdirty/ov-locked: could not hold jd-base.qcow2"
			else
				jd_ovcmds locked 'Failed to get shared "write" lock' 0
				hold_stop
			fi
			;;
		esac
		rm -f jd-ovs.qcow2 jd-ovp.qcow2 jd-ovb.qcow2
	done
}

# The replayed image: qemu-img opens and checks it, every command works.
jd_after() {
	N_CMP=$((N_CMP + 1))
	qx out/jd.out out/jd.err check -r all jd.qcow2
	if [ "$QX_RC" -ne 0 ] || ! grep -qF 'Replayed 3 transaction' out/jd.err; then
		t_fail "jdirty/replay: check -r all exit $QX_RC"
		show out/jd.err 3
		return
	fi
	t_pass "jdirty/replay"
	N_CMP=$((N_CMP + 1))
	if ! qemu-img info jd.qcow2 >out/jd.qi 2>&1 ||
		! qemu-img check jd.qcow2 >out/jd.qc 2>&1; then
		t_fail "jdirty/qemu-img-after-replay: qemu-img info/check not clean"
		show out/jd.qi 2
		show out/jd.qc 2
	else
		t_pass "jdirty/qemu-img-after-replay"
	fi
	N_CMP=$((N_CMP + 1))
	qx out/jd.out out/jd.err info jd.qcow2
	if [ "$QX_RC" -ne 0 ] || ! cmp -s out/jd.qi out/jd.out; then
		t_fail "jdirty/info-after-replay: qimgctl info differs from qemu-img info"
		diff out/jd.qi out/jd.out | show /dev/stdin 4
	else
		t_pass "jdirty/info-after-replay"
	fi
	rm -f jd-conv.qcow2
	jd_commands jd_ok_cmd
	N_CMP=$((N_CMP + 1))
	if ! qemu-img check jd.qcow2 >out/jd.qc 2>&1 ||
		! qemu-img check jd-base.qcow2 >>out/jd.qc 2>&1; then
		t_fail "jdirty/qemu-img-after-commands: qemu-img check not clean"
		show out/jd.qc 3
	else
		t_pass "jdirty/qemu-img-after-commands"
	fi
}

# A clean journal-valid image (mkjournal.py idle) is readable; info has
# qemu-img's lines and the journal line; writers refuse it as before.
jd_clean() {
	want 'jdirty/clean-' || return 0
	jd_new clean jdc.qcow2 idle || return
	N_CMP=$((N_CMP + 1))
	qemu-img info jdc.qcow2 >out/jd.qi 2>&1
	qx out/jd.out out/jd.err info jdc.qcow2
	if [ "$QX_RC" -ne 0 ] ||
		! grep -qxF '    journal: 65536 bytes, clean' out/jd.out ||
		! grep -vxF '    journal: 65536 bytes, clean' out/jd.out |
		cmp -s out/jd.qi -; then
		t_fail "jdirty/clean-info: exit $QX_RC, no clean journal line or other lines differ from qemu-img"
		diff out/jd.qi out/jd.out | show /dev/stdin 4
	else
		t_pass "jdirty/clean-info"
	fi
	jd_ok clean-map map jdc.qcow2
	jd_ok clean-compare compare jdc.qcow2 jdc.qcow2
	jd_ok clean-convert convert -O raw jdc.qcow2 jdc.raw
	jd_ok clean-snapshot-l snapshot -l jdc.qcow2
	# Writers still refuse an allocated journal area, clean or not: they
	# do not keep it (check -r all releases it).
	cp jdc.qcow2 jdc.qcow2.orig
	jd_refuse clean-resize 1 "writing images with a qimg journal" \
		jdc.qcow2 resize jdc.qcow2 2M
	jd_refuse clean-amend 1 "writing images with a qimg journal" \
		jdc.qcow2 amend -o lazy_refcounts=on jdc.qcow2
	jd_refuse clean-snapshot-c 1 "writing images with a qimg journal" \
		jdc.qcow2 snapshot -c s0 jdc.qcow2
	rm -f jdc.qcow2 jdc.qcow2.orig jdc.raw
}

part_jdirty() {
	want 'jdirty/' || return 0
	jd_new dirty jd.qcow2 several || return
	cp jd.qcow2 jd.qcow2.orig
	# An overlay whose backing file is dirty.
	rm -f jd-ov.qcow2
	qemu-img create -q -f qcow2 -u -b jd.qcow2 -F qcow2 jd-ov.qcow2 1M \
		>>out/jd.log 2>&1
	cp jd-ov.qcow2 jd-ov.qcow2.orig
	jd_info
	jd_creates
	jd_backings
	jd_overlays
	jd_commands jd_refuse_cmd
	jd_refuse backing-map 1 "$JD_MSG" jd.qcow2 map jd-ov.qcow2
	jd_refuse backing-map-top 1 "$JD_MSG" jd-ov.qcow2 map jd-ov.qcow2
	jd_refuse backing-convert 1 "$JD_MSG" jd.qcow2 convert -O raw jd-ov.qcow2 jd-ov.raw
	jd_refuse backing-compare 2 "$JD_MSG" jd-ov.qcow2 compare jd-ov.qcow2 jd-ov.qcow2
	jd_refuse backing-info-chain 0 "" jd.qcow2 info --backing-chain jd-ov.qcow2
	rm -f jd-ov.raw
	jd_after
	rm -f jd.qcow2 jd.qcow2.orig jd-base.qcow2 jd-conv.qcow2 \
		jd-ov.qcow2 jd-ov.qcow2.orig
	jd_clean
}
