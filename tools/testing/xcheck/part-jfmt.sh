# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# xcheck part: `qimgctl check` on images with a dirty qimg metadata
# journal.  mkjournal.py writes the journal from the specification alone
# (its own CRC-32C and encoders), so these cases also check that the shared
# scan in qimg_journal_fmt.c reads what section 5.1 describes.  qemu-img
# 7.2 must refuse every such image (incompatible bit 32); qimgctl check
# must report what replay would find, count a damaged journal as a
# corruption, and never write.  Sourced by run; uses its helpers.

# shellcheck disable=SC2154 # here: set by run, which sources this file
MKJOURNAL=$here/mkjournal.py

# jf_image NAME NTX SYNCED [DAMAGE]: a 1 MiB qemu-img image with a journal.
jf_image() {
	qemu-img create -q -f qcow2 "$1" 1M >out/jf.log 2>&1 &&
		python3 "$MKJOURNAL" "$1" "$2" "$3" ${4:+"$4"} >>out/jf.log 2>&1
}

# jf_case NAME RC PATTERN IMAGE ARGS...: qimgctl ARGS exits RC, says
# PATTERN (a fixed string) on stderr and leaves IMAGE as it was.
jf_case() {
	local name="jfmt/$1" want_rc=$2 pat=$3 img=$4 sum
	shift 4
	want "$name" || return 0
	N_CMP=$((N_CMP + 1))
	sum=$(sha256sum <"$img")
	qx out/jf.out out/jf.err "$@"
	if crashed "$QX_RC" out/jf.err; then
		t_fail "$name: qimgctl crashed (status $QX_RC)"
		show out/jf.err 8
	elif [ "$QX_RC" -ne "$want_rc" ]; then
		t_fail "$name: exit status $QX_RC, expected $want_rc"
		show out/jf.err 3
	elif ! grep -qF -- "$pat" out/jf.err; then
		t_fail "$name: stderr does not say '$pat'"
		show out/jf.err 3
	elif [ "$(sha256sum <"$img")" != "$sum" ]; then
		t_fail "$name: the image changed"
	else
		t_pass "$name"
	fi
}

part_jfmt() {
	local i
	want 'jfmt/' || return 0
	if ! jf_image jf-dirty.qcow2 3 0x100000000 ||
		! jf_image jf-torn.qcow2 3 5 torn ||
		! jf_image jf-bad.qcow2 3 5 middle ||
		! jf_image jf-empty.qcow2 0 7; then
		t_fail "jfmt: could not make the journal images"
		show out/jf.log 4
		return
	fi
	N_IMAGES=$((N_IMAGES + 4))

	# QEMU must not open what it cannot replay.
	for i in dirty torn bad empty; do
		want "jfmt/qemu-img-refuses-$i" || continue
		N_CMP=$((N_CMP + 1))
		if qemu-img check "jf-$i.qcow2" >out/jf.out 2>out/jf.err; then
			t_fail "jfmt/qemu-img-refuses-$i: qemu-img check accepted it"
		elif ! grep -qF 'Unsupported qcow2 feature(s): journal dirty' out/jf.err; then
			t_fail "jfmt/qemu-img-refuses-$i: qemu-img refused it for another reason"
			show out/jf.err 2
		else
			t_pass "jfmt/qemu-img-refuses-$i"
		fi
	done

	# Sequence numbers above 2^32 come through whole.
	jf_case check-dirty 0 \
		'3 committed transactions (sequence 4294967297 to 4294967299) not yet written in place' \
		jf-dirty.qcow2 check jf-dirty.qcow2
	jf_case check-dirty-json 0 '3 committed transactions' \
		jf-dirty.qcow2 check --output=json jf-dirty.qcow2
	# A torn last commit is the end of the log, not damage.
	jf_case check-torn 0 \
		'2 committed transactions (sequence 6 to 7) not yet written in place, then a torn one' \
		jf-torn.qcow2 check jf-torn.qcow2
	# Damage followed by a valid transaction is corruption.
	jf_case check-damaged 2 'transaction 7 follows' \
		jf-bad.qcow2 check jf-bad.qcow2
	jf_case check-empty 0 'holds no committed transaction' \
		jf-empty.qcow2 check jf-empty.qcow2
	# A damaged journal is not replayed, and nothing is written.
	jf_case repair-damaged 2 'the metadata journal is damaged' \
		jf-bad.qcow2 check -r all jf-bad.qcow2
	jf_case repair-damaged-leaks 2 'not replayed, nothing written' \
		jf-bad.qcow2 check -r leaks jf-bad.qcow2

	jf_replay
	jf_idle
	jf_request
}

# An allocated journal area without journal dirty: in use while journal
# valid vouches for it (qemu-img, which does not know it, sees leaks);
# without journal valid, leaks for both.  A named area whose clusters are
# free (released: an attach or detach cut short) is no leak for either,
# dirty or not (qemu-img refuses the dirty one).  check -r releases the
# area in every case.
jf_idle() {
	local sc img qrc want qwant
	for sc in idle stale released released-dirty; do
		want "jfmt/$sc-" || continue
		img=jr-$sc.qcow2
		rm -f "$img"
		if ! qemu-img create -q -f qcow2 "$img" 1M >out/jf.log 2>&1 ||
			! qemu-io -f qcow2 -c 'write -P 0x11 0 128k' "$img" >>out/jf.log 2>&1 ||
			! python3 "$MKJOURNAL" "$img" --scenario "$sc" >out/jr.exp 2>>out/jf.log; then
			t_fail "jfmt/$sc: could not make the image"
			show out/jf.log 3
			continue
		fi
		N_IMAGES=$((N_IMAGES + 1))
		case $sc in
		idle) want=0 qwant=3 ;;
		stale) want=3 qwant=3 ;;
		released) want=0 qwant=0 ;;
		*) want=0 qwant=1 ;;
		esac
		N_CMP=$((N_CMP + 1))
		qemu-img check "$img" >/dev/null 2>&1
		qrc=$?
		qx out/jf.out out/jf.err check "$img"
		if [ "$qrc" -ne "$qwant" ] || [ "$QX_RC" -ne "$want" ]; then
			t_fail "jfmt/$sc-check: qemu-img check exit $qrc (want $qwant), qimgctl check $QX_RC (want $want)"
			show out/jf.err 3
		elif [ "$sc" = released ] && ! grep -qx 'No errors were found on the image.' out/jf.out; then
			t_fail "jfmt/$sc-check: qimgctl check does not say the image is clean"
			show out/jf.out 3
		else
			t_pass "jfmt/$sc-check"
		fi
		N_CMP=$((N_CMP + 1))
		qx out/jf.out out/jf.err check -r leaks "$img"
		if [ "$QX_RC" -ne 0 ] ||
			{ [ "$sc" != released-dirty ] && grep -q Replayed out/jf.err; } ||
			! grep -qF 'Released the metadata journal area' out/jf.err ||
			! qemu-img check "$img" >/dev/null 2>&1 ||
			! jf_verify "$img" out/jr.exp ||
			[ "$(python3 "$here/qhdr.py" journal "$img")" != "0 65536 0 0" ]; then
			t_fail "jfmt/$sc-repair: check -r leaks exit $QX_RC, or the image is not clean and journal-free after it"
			show out/jf.err 3
		else
			t_pass "jfmt/$sc-repair"
		fi
	done
}

# jf_reads EXPECTED: qemu-io read commands for the ranges in EXPECTED
# ("OFFSET LENGTH BYTE" lines) and 0x11 for the rest of guest clusters 0-1.
jf_reads() {
	python3 - "$1" <<'PY'
import sys
rs = sorted((int(o), int(n), b) for o, n, b in
            (l.split() for l in open(sys.argv[1]) if l.strip()))
pos = 0
for off, n, b in rs + [(131072, 0, None)]:
    if off > pos:
        print('read -P 0x11 %d %d' % (pos, off - pos))
    if b:
        print('read -P %s %d %d' % (b, off, n))
    pos = max(pos, off + n)
PY
}

# jf_verify IMAGE EXPECTED: guest clusters 0-1 read (through qemu-io) as
# EXPECTED says.
jf_verify() {
	local args=() c
	while IFS= read -r c; do
		args+=(-c "$c")
	done < <(jf_reads "$2")
	qemu-io -r -f qcow2 "${args[@]}" "$1" >out/jf.io 2>&1 &&
		! grep -qi 'verification failed\|error' out/jf.io
}

# Offline replay: images whose journal changes guest data that QEMU then
# reads back, refused by qemu-img before and clean after `check -r all`.
jf_replay() {
	local sc ntx rc
	want 'jfmt/replay-' 'jfmt/qemu-img-refuses-' || return 0
	for sc in several:3 torn:2 wrapped:3 revoke:3 clean:0 grow:3; do
		ntx=${sc#*:} sc=${sc%:*}
		want "jfmt/replay-$sc" "jfmt/qemu-img-refuses-$sc" || continue
		rm -f "jr-$sc.qcow2"
		if ! qemu-img create -q -f qcow2 "jr-$sc.qcow2" 1M >out/jf.log 2>&1 ||
			! qemu-io -f qcow2 -c 'write -P 0x11 0 128k' "jr-$sc.qcow2" >>out/jf.log 2>&1 ||
			! python3 "$MKJOURNAL" "jr-$sc.qcow2" --scenario "$sc" \
				>"out/jr-$sc.exp" 2>>out/jf.log; then
			t_fail "jfmt/replay-$sc: could not make the image"
			show out/jf.log 3
			continue
		fi
		N_IMAGES=$((N_IMAGES + 1))
		cp "jr-$sc.qcow2" "jr-$sc-2.qcow2"

		N_CMP=$((N_CMP + 1))
		qemu-img info "jr-$sc.qcow2" >out/jf.out 2>out/jf.err
		rc=$?
		if [ "$rc" -ne 1 ] || ! grep -qF 'Unsupported qcow2 feature(s): journal dirty' out/jf.err; then
			t_fail "jfmt/qemu-img-refuses-$sc: qemu-img info exit $rc, not 1 naming 'journal dirty'"
			show out/jf.err 2
		else
			t_pass "jfmt/qemu-img-refuses-$sc"
		fi

		N_CMP=$((N_CMP + 1))
		qx out/jf.out out/jf.err check -r all "jr-$sc.qcow2"
		if crashed "$QX_RC" out/jf.err; then
			t_fail "jfmt/replay-$sc: qimgctl crashed (status $QX_RC)"
			show out/jf.err 8
		elif [ "$QX_RC" -ne 0 ] ||
			! grep -qF "Replayed $ntx transaction" out/jf.err; then
			t_fail "jfmt/replay-$sc: check -r all exit $QX_RC, or no 'Replayed $ntx transaction'"
			show out/jf.err 4
		elif grep -q 'leaked clusters' out/jf.out || grep -q '^Repairing cluster' out/jf.err ||
			! grep -qE '^Freed the [1-9][0-9]* clusters of the released journal area$' out/jf.err; then
			t_fail "jfmt/replay-$sc: the released area's clusters are reported as leaks, not as the area freed"
			show out/jf.out 4
			show out/jf.err 4
		elif ! qemu-img check "jr-$sc.qcow2" >out/jf.qc 2>&1; then
			t_fail "jfmt/replay-$sc: qemu-img check after the replay is not clean"
			show out/jf.qc 4
		elif ! jf_verify "jr-$sc.qcow2" "out/jr-$sc.exp"; then
			t_fail "jfmt/replay-$sc: the guest data is not what the journal says"
			show out/jf.io 4
		elif [ "$(python3 "$here/qhdr.py" journal "jr-$sc.qcow2")" != "0 65536 0 0" ]; then
			t_fail "jfmt/replay-$sc: journal extension/bits after the replay: $(python3 "$here/qhdr.py" journal "jr-$sc.qcow2")"
		elif [ "$sc" = grow ] && ! qemu-img info --output=json "jr-$sc.qcow2" |
			grep -q '"virtual-size": 2097152,'; then
			t_fail "jfmt/replay-$sc: the replayed header's size is not the image's size after check -r"
			qemu-img info "jr-$sc.qcow2" | sed 's/^/#   /' | head -n 4
		else
			t_pass "jfmt/replay-$sc"
		fi

		# Twice gives the image once does; the second run has nothing to do.
		N_CMP=$((N_CMP + 1))
		qx out/jf.out out/jf.err check -r all "jr-$sc-2.qcow2"
		qx out/jf.out out/jf.err check -r all "jr-$sc-2.qcow2"
		if [ "$QX_RC" -ne 0 ] || grep -q Replayed out/jf.err ||
			! cmp -s "jr-$sc.qcow2" "jr-$sc-2.qcow2"; then
			t_fail "jfmt/replay-twice-$sc: a second check -r all changed the image or exited $QX_RC"
			show out/jf.err 3
		else
			t_pass "jfmt/replay-twice-$sc"
		fi
		rm -f "jr-$sc-2.qcow2"
	done
}

# qimgctl create -o journal=on (a journal asked for, offset 0): qemu-img
# opens, checks and keeps it; the option errors.
jf_request() {
	local img=jq.qcow2 got
	want 'jfmt/request-' || return 0
	if ! "$QIMGCTL" create -q -o journal=on,journal_size=1M "$img" 64M \
		>out/jf.log 2>&1; then
		t_fail "jfmt/request: qimgctl create -o journal=on failed"
		show out/jf.log 2
		return
	fi
	N_IMAGES=$((N_IMAGES + 1))
	N_CMP=$((N_CMP + 2))
	qemu-img info "$img" >out/jq.want 2>&1
	qx out/jq.got out/jf.err info "$img"
	if [ "$QX_RC" -ne 0 ] || ! cmp -s out/jq.want out/jq.got; then
		t_fail "jfmt/request-info: qimgctl info differs from qemu-img info"
		diff out/jq.want out/jq.got | show /dev/stdin 4
	else
		t_pass "jfmt/request-info"
	fi
	qemu-img info --output=json "$img" >out/jq.want 2>&1
	qx out/jq.got out/jf.err info --output=json "$img"
	if [ "$QX_RC" -ne 0 ] || ! cmp -s out/jq.want out/jq.got; then
		t_fail "jfmt/request-info-json: qimgctl info --output=json differs from qemu-img's"
		diff out/jq.want out/jq.got | show /dev/stdin 4
	else
		t_pass "jfmt/request-info-json"
	fi
	N_CMP=$((N_CMP + 1))
	if ! qemu-img check "$img" >out/jf.qc 2>&1; then
		t_fail "jfmt/request-check: qemu-img check is not clean"
		show out/jf.qc 3
	elif ! qx out/jf.out out/jf.err check "$img" || [ "$QX_RC" -ne 0 ] ||
		! cmp -s out/jf.qc out/jf.out; then
		t_fail "jfmt/request-check: qimgctl check exit $QX_RC or differs from qemu-img"
		show out/jf.err 2
	else
		t_pass "jfmt/request-check"
	fi
	# QEMU keeps the extension (it moves behind the feature table when
	# QEMU rewrites the header); qimgctl's own writers keep it too.
	for op in "qemu-img amend -f qcow2 -o lazy_refcounts=on" \
		"qemu-img resize -q" "$QIMGCTL resize -q" \
		"$QIMGCTL amend -o lazy_refcounts=off"; do
		N_CMP=$((N_CMP + 1))
		case $op in
		*resize*) $op "$img" +1M >out/jf.log 2>&1 ;;
		*) $op "$img" >out/jf.log 2>&1 ;;
		esac
		got=$(python3 "$here/qhdr.py" journal "$img")
		if [ "$got" != "0 1048576 0 0" ]; then
			t_fail "jfmt/request-keep: after '${op##*/}' the journal extension is '$got'"
			show out/jf.log 2
		elif ! qemu-img check "$img" >/dev/null 2>&1; then
			t_fail "jfmt/request-keep: qemu-img check after '${op##*/}' is not clean"
		else
			t_pass "jfmt/request-keep: ${op##*/}"
		fi
	done
	jf_case request-no-size 1 "Parameter 'journal_size' needs journal=on" \
		"$img" create -o journal_size=1M jq-x.qcow2 1M
	jf_case request-small 1 "is below the minimum of 4096 bytes (8 journal blocks of 512 bytes)" \
		"$img" create -o journal=on,cluster_size=512,journal_size=1k jq-x.qcow2 1M
	jf_case request-unaligned 1 "not a multiple of the cluster size" \
		"$img" create -o journal=on,journal_size=100k jq-x.qcow2 1M
	jf_case request-v2 1 "compatibility level 1.1" \
		"$img" create -o journal=on,compat=0.10 jq-x.qcow2 1M
	jf_case request-attach-size 1 "--journal-size needs --journal=on" \
		"$img" attach --journal-size=1M "$img"
}
