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
		elif ! grep -qi 'incompatible feature' out/jf.err; then
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
	# No repair over an unreplayed journal.
	jf_case repair-refused 0 'attach the image once to replay it' \
		jf-dirty.qcow2 check -r all jf-dirty.qcow2
}
